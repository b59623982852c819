"""What one trial's workers run, as plain typed data: ``LoopConfig``.

No torch here: the study's plan and the Tune driver build and key loop configs without importing
it (``bioscale study plan`` stays light). The loop that runs a config is ``bioscale.train.loop``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bioscale.objectives.base import WeightDecayMode
from bioscale.train.rules import EarlyStopping

#: ``train.precision``: ``auto`` resolves to bf16 where the device computes it natively
#: (``bioscale.train.precision.resolve_precision``).
Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Everything one trial's workers need to train, fully resolved by the driver (plain data,
    picklable). What the trial evaluates at the end is the final-evaluation hook's own config
    (``bioscale.eval.final.FinalConfig``), bound by the study."""

    rung: str
    input_shape: tuple[int, ...]  # one sample: (F,) profile features or (C, H, W) image crops
    objective: str
    objective_params: dict[str, Any] = field(default_factory=dict)
    num_classes: dict[str, int]
    max_epochs: int
    max_samples: int | None = None
    lr: float
    weight_decay: float
    weight_decay_mode: WeightDecayMode = "decoupled"
    batch_size: int
    seed: int
    early_stopping: EarlyStopping | None = None
    checkpoint_every: int = 5
    report_interval_s: float = 10.0
    flops_per_sample: float = 0.0
    precision: Precision = "auto"
    channels_last: bool = True
    compile: bool = False
