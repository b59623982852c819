"""Tracking: does the object that started on the start marker end on the end marker?

FeatureTracker (arXiv 2410.02094; SEEDS §3) trains a video network on that binary question with
binary cross-entropy on one logit (``bce``). A backbone that carries auxiliary loss terms of its
own sets them after each forward as ``aux_terms`` (the CV-RNN's phase-synchrony term,
``bioscale.models.video``, which reads the ground-truth groups of every frame: the batch's
``mask``); each is added to the loss with its weight from ``aux_weights``
(default 1.0) and logged as its own ``train/<term>`` and ``val/<term>``. Early stopping selects on
``bce``: how well the video is answered, not how well an auxiliary term is met.

Only data that carries tracking labels (``bioscale.data.kinds`` ``provides`` ``tracks``: the
``video`` kind) can train it, and only video rungs (``model_families``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bioscale.objectives.base import LabelSpace, Objective
from bioscale.objectives.registry import register


def group_masks(mask):
    """Per-pixel group codes (B, T, H, W) (``bioscale.data.featuretracker.MASK_CODES``: 0
    background, 1 marker, 2 distractor, 3 target) → (B, T, 3, H, W) float one-hot channels
    markers / distractors / target, the layout of the published mask frames."""
    import torch.nn.functional as F

    return F.one_hot(mask.long(), 4)[..., 1:].permute(0, 1, 4, 2, 3).float()


#: The label that answers "yes, the target ends on the end marker" (class 1 of the ``y`` head).
POSITIVE = "positive"
NEGATIVE = "negative"


@dataclass(frozen=True, kw_only=True)
class TrackingParams:
    #: weight of each auxiliary term a backbone reports (``synchrony``: the CV-RNN's)
    aux_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.aux_weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"aux_weights must be >= 0, got {bad}")


@register
class Tracking(Objective):
    """BCE(model(video), ends-on-marker) + Σ weight · auxiliary term of the backbone."""

    name = "tracking"
    Params = TrackingParams
    needs = frozenset({"tracks"})
    model_families = frozenset({"cvrnn", "r3d"})

    def train_groups(self) -> frozenset[str]:
        return frozenset({"seen"})

    def selection_term(self) -> str:
        return "bce"

    def raw_labels(self, index) -> dict[str, np.ndarray]:
        return {"y": index.moa}

    def label_space(self, index, rows: np.ndarray) -> LabelSpace:
        # fixed, whatever the diet holds: class 1 is always "positive" (the logit's sign)
        return LabelSpace(classes={"y": [NEGATIVE, POSITIVE]})

    def build_heads(self, embed_dim: int, labels: dict[str, int]):
        from torch import nn

        return nn.ModuleDict({"y": nn.Linear(embed_dim, 1)})

    def extra_inputs(self, input_shape, n: int, generator) -> dict:
        """A measurement batch's ground-truth groups (``mask``), so a step's FLOPs include the
        auxiliary terms that read them."""
        import torch

        frames, _, height, width = input_shape
        return {"mask": torch.randint(0, 4, (n, frames, height, width), generator=generator)}

    def loss_terms(self, model, batch):
        import torch.nn.functional as F

        inputs = {}
        backbone = getattr(model, "module", model).backbone
        if "masks" in getattr(backbone, "aux_inputs", ()) and "mask" in batch:
            inputs["masks"] = group_masks(batch["mask"])
        _, logits = model(batch["x"], **inputs)
        bce = F.binary_cross_entropy_with_logits(
            logits["y"].reshape(-1).float(), batch["y"].float()
        )
        terms = {"bce": bce}
        total = bce
        for name, term in getattr(backbone, "aux_terms", {}).items():
            weight = self.params.aux_weights.get(name, 1.0)
            terms[name] = term
            total = total + weight * term
        terms["loss"] = total
        return terms
