"""IBP, the inverse biological process (Pheno-CA, arXiv 2309.16773; SEEDS §1).

Predict *which compound caused* a phenotype: softmax cross-entropy over compound identity from one
sample. IBP needs no task label, so it can train on ``extra`` compounds too (the extra-compound
diet axis); when a diet turns controls on, the controls are one more class.

Optional batch invariance (``invariance: [source, batch, plate]``): for each factor an adversarial
head is trained on the *true* factor labels through a gradient-reversal layer (Ganin & Lempitsky
2015), so the head learns to read the factor while the backbone is pushed to remove it. Its CE is
the ``invariance`` term and its accuracy is logged as ``leakage_<factor>``. (The released code
trained heads toward a uniform target instead, which is degenerate: a head outputs uniform by
shrinking its weights and the backbone learns nothing; SEEDS §1.)

Early stopping selects on the compound CE of the early-stopping wells (``selection_term``): the
total ``ce + invariance`` would reward the epoch whose adversaries read the factors best (a low
``invariance`` is leakage, since the backbone's objective is ``ce − λ·invariance``). The
invariance terms and leakage of those wells are logged beside it as ``val/<term>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bioscale.objectives.base import Objective
from bioscale.objectives.registry import register

Factor = Literal["source", "batch", "plate"]


def gradient_reversal(x, weight: float):
    """Identity forward; multiplies the gradient by −``weight`` on the way back."""
    import torch

    class _Reverse(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp.view_as(inp)

        @staticmethod
        def backward(ctx, grad):
            return -weight * grad

    return _Reverse.apply(x)


def _reversal_head(embed_dim: int, n_classes: int, weight: float):
    from torch import nn

    class ReversalHead(nn.Module):
        """Gradient reversal → Linear: an adversary of the backbone."""

        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(embed_dim, n_classes)

        def forward(self, emb):
            return self.linear(gradient_reversal(emb, weight))

    return ReversalHead()


@dataclass(frozen=True, kw_only=True)
class IBPParams:
    label_smoothing: float = 0.0
    invariance: list[Factor] = field(default_factory=list)
    invariance_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        if len(set(self.invariance)) != len(self.invariance):
            raise ValueError("invariance lists a factor twice")
        if self.invariance_weight < 0:
            raise ValueError("invariance_weight must be >= 0")


@register
class IBP(Objective):
    """CE(model(x), compound id) over ``seen`` and ``extra`` compounds (+ adversarial heads)."""

    name = "ibp"
    Params = IBPParams

    def train_groups(self) -> frozenset[str]:
        return frozenset({"seen", "extra"})

    def uses_controls(self) -> bool:
        return True

    def selection_term(self) -> str:
        return "ce"

    def raw_labels(self, index) -> dict[str, np.ndarray]:
        labels = {"y": index.perturbation_id}
        for factor in self.params.invariance:
            labels[factor] = getattr(index, factor)
        return labels

    def build_heads(self, embed_dim: int, labels: dict[str, int]):
        from torch import nn

        heads = {"y": nn.Linear(embed_dim, labels["y"])}
        for factor in self.params.invariance:
            heads[factor] = _reversal_head(embed_dim, labels[factor], self.params.invariance_weight)
        return nn.ModuleDict(heads)

    def loss_terms(self, model, batch):
        import torch.nn.functional as F

        _, logits = model(batch["x"])
        ce = F.cross_entropy(logits["y"], batch["y"], label_smoothing=self.params.label_smoothing)
        terms = {"ce": ce}
        total = ce
        if self.params.invariance:
            inv = 0.0
            for factor in self.params.invariance:
                inv = inv + F.cross_entropy(logits[factor], batch[factor])
                hits = (logits[factor].argmax(dim=1) == batch[factor]).float().mean()
                terms[f"leakage_{factor}"] = hits.detach()
            terms["invariance"] = inv
            total = total + inv  # the reversal layer turns this into an adversarial signal
        terms["loss"] = total
        return terms
