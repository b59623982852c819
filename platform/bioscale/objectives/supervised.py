"""Task supervision: cross-entropy on a Pheno-CA task label (MoA or target) of ``seen`` compounds.

``task: target`` splits a compound's ``target`` the way the target probes do
(``bioscale.eval.probe_sets.split_targets``: ``"EGFR|ERBB2"`` is two targets, not one class) and
trains on every (sample, target) pair: the loss is the mean softmax cross-entropy over the pairs,
the same expansion the target probes are fit with (``bioscale.eval.readout.expand_labels``). A
sample's targets travel as the label column ``y`` (its first target) and ``y_1..y_{K-1}`` (the
others, -1 padding), so the head and the FLOPs are those of one ``y`` head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bioscale.objectives.base import LabelSpace, Objective, Targets
from bioscale.objectives.registry import register

#: Label columns of a sample's further targets: ``y_1``, ``y_2``, … (-1: none).
EXTRA_TARGET_PREFIX = "y_"


@dataclass(frozen=True, kw_only=True)
class SupervisedParams:
    task: Literal["moa", "target"] = "moa"  # natural images keep their class in ``moa``
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class TargetLabelSpace(LabelSpace):
    """The ``y`` vocabulary of single targets; rows encode to every target they have."""

    def encode(self, index, rows: np.ndarray, sources: dict[str, np.ndarray]) -> Targets:
        """Rows with at least one target in the vocabulary; columns ``y`` and ``y_1..``
        (targets outside the vocabulary, e.g. of a val compound absent from a small diet, are
        dropped)."""
        from bioscale.eval.probe_sets import split_targets

        lookup = {t: i for i, t in enumerate(self.classes["y"])}
        codes = [[lookup[t] for t in split_targets(v) if t in lookup] for v in sources["y"][rows]]
        keep = np.array([bool(c) for c in codes], dtype=bool)
        codes = [c for c, k in zip(codes, keep, strict=True) if k]
        width = max((len(c) for c in codes), default=1)
        table = np.full((len(codes), width), -1, dtype=np.int64)
        for r, c in enumerate(codes):
            table[r, : len(c)] = c
        columns = {"y": table[:, 0]}
        columns |= {f"{EXTRA_TARGET_PREFIX}{j}": table[:, j] for j in range(1, width)}
        return Targets(rows=np.asarray(rows)[keep], columns=columns)


@register
class Supervised(Objective):
    """CE(model(x), task label); trains only on ``seen`` compounds (the others have no label or
    are held out). With ``task: target``, one CE term per target of a sample (module docstring)."""

    name = "supervised"
    Params = SupervisedParams

    def train_groups(self) -> frozenset[str]:
        return frozenset({"seen"})

    def raw_labels(self, index) -> dict[str, np.ndarray]:
        return {"y": getattr(index, self.params.task)}

    def label_space(self, index, rows: np.ndarray) -> LabelSpace:
        if self.params.task != "target":
            return super().label_space(index, rows)
        from bioscale.eval.probe_sets import split_targets

        vocab = sorted({t for v in index.target[rows] for t in split_targets(v)})
        return TargetLabelSpace(classes={"y": vocab})

    def loss_terms(self, model, batch):
        import torch
        import torch.nn.functional as F

        _, logits = model(batch["x"])
        extra = sorted(
            (k for k in batch if k.startswith(EXTRA_TARGET_PREFIX)),
            key=lambda k: int(k[len(EXTRA_TARGET_PREFIX) :]),
        )
        if not extra:
            ce = F.cross_entropy(
                logits["y"], batch["y"], label_smoothing=self.params.label_smoothing
            )
            return {"loss": ce, "ce": ce}
        targets = torch.stack([batch["y"], *(batch[k] for k in extra)], dim=1)  # (B, K)
        k = targets.shape[1]
        pairs = logits["y"].unsqueeze(1).expand(-1, k, -1).reshape(-1, logits["y"].shape[1])
        # mean over the valid (sample, target) pairs; -1 pads a sample with fewer targets
        ce = F.cross_entropy(
            pairs,
            targets.reshape(-1),
            ignore_index=-1,
            label_smoothing=self.params.label_smoothing,
        )
        return {"loss": ce, "ce": ce}
