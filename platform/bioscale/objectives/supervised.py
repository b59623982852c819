"""Task supervision: cross-entropy on a Pheno-CA task label (MoA or target) of ``seen`` compounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bioscale.objectives.base import Objective
from bioscale.objectives.registry import register


@dataclass(frozen=True, kw_only=True)
class SupervisedParams:
    task: Literal["moa", "target"] = "moa"  # natural images keep their class in ``moa``
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")


@register
class Supervised(Objective):
    """CE(model(x), task label); trains only on ``seen`` compounds (the others have no label or
    are held out)."""

    name = "supervised"
    Params = SupervisedParams

    def train_groups(self) -> frozenset[str]:
        return frozenset({"seen"})

    def raw_labels(self, index) -> dict[str, np.ndarray]:
        return {"y": getattr(index, self.params.task)}

    def loss_terms(self, model, batch):
        import torch.nn.functional as F

        _, logits = model(batch["x"])
        ce = F.cross_entropy(logits["y"], batch["y"], label_smoothing=self.params.label_smoothing)
        return {"loss": ce, "ce": ce}
