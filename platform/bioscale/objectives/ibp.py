"""IBP, the inverse biological process (Pheno-CA, arXiv 2309.16773; SEEDS §1).

Predict *which compound caused* a phenotype: softmax cross-entropy over compound identity from one
sample. IBP needs no task label, so it can train on ``extra`` compounds too (the extra-compound
diet axis); when a diet turns controls on, the controls are one more class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bioscale.objectives.base import Objective
from bioscale.objectives.registry import register


@dataclass(frozen=True, kw_only=True)
class IBPParams:
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")


@register
class IBP(Objective):
    """CE(model(x), compound id) over ``seen`` and ``extra`` compounds."""

    name = "ibp"
    Params = IBPParams

    def train_groups(self) -> frozenset[str]:
        return frozenset({"seen", "extra"})

    def uses_controls(self) -> bool:
        return True

    def raw_labels(self, index) -> dict[str, np.ndarray]:
        return {"y": index.perturbation_id}

    def loss_terms(self, model, batch):
        import torch.nn.functional as F

        _, logits = model(batch["x"])
        ce = F.cross_entropy(logits["y"], batch["y"], label_smoothing=self.params.label_smoothing)
        return {"loss": ce, "ce": ce}
