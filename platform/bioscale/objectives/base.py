"""The objective contract: which compounds it trains on, its labels, its heads, its loss terms.

An objective returns a dict of named loss terms with ``loss`` the total; the training loop owns
backward, the optimiser, AMP and the schedule (ARCHITECTURE "Objective"). Label vocabularies are
built once in the driver from the trial's training rows, so every worker agrees on class indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bioscale.data.splits import SampleIndex

#: How the loop applies weight decay wd to the decayed parameter group:
#: ``coupled``: an L2 penalty wd·Σ½‖w‖² on the loss, so its gradient wd·w joins the loss gradient
#: before the optimiser (Adam's moments see it), as the harmonizer release's loss did (SEEDS §2);
#: ``decoupled``: AdamW's decay (Loshchilov & Hutter 2019), w ← w − lr·wd·w each step, outside the
#: moments (Pheno-CA's AdamW, SEEDS §1). Adam divides the coupled gradient by the running gradient
#: scale √v, so it shrinks a weight by ≈ lr·wd·w/√v per step against the decoupled lr·wd·w: with
#: gradients of order 1e-4 the same wd is ~10⁴× stronger coupled.
WeightDecayMode = Literal["coupled", "decoupled"]


@dataclass(frozen=True, kw_only=True)
class Targets:
    """Integer labels for a set of rows: ``columns[name][i]`` is row ``rows[i]``'s class index."""

    rows: np.ndarray
    columns: dict[str, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class LabelSpace:
    """Class vocabularies, one per label column (``y`` for the main head)."""

    classes: dict[str, list[str]] = field(default_factory=dict)

    def num_classes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.classes.items()}

    def encode(
        self, index: SampleIndex, rows: np.ndarray, sources: dict[str, np.ndarray]
    ) -> Targets:
        """Encode rows, dropping those whose label is outside the vocabulary (e.g. a val compound
        absent from a small diet). ``sources[col]`` holds each manifest row's raw label."""
        keep = np.ones(len(rows), dtype=bool)
        coded: dict[str, np.ndarray] = {}
        for col, vocab in self.classes.items():
            lookup = {c: i for i, c in enumerate(vocab)}
            codes = np.array([lookup.get(v, -1) for v in sources[col][rows]], dtype=np.int64)
            keep &= codes >= 0
            coded[col] = codes
        return Targets(rows=rows[keep], columns={k: v[keep] for k, v in coded.items()})


class Objective:
    """Base class; subclasses set ``name``, ``Params`` and implement the hooks below."""

    name: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, params: Any) -> None:
        self.params = params

    def train_groups(self) -> frozenset[str]:
        """Compound groups this objective may train on (``extra`` only for IBP-like objectives)."""
        raise NotImplementedError

    #: Whether the objective needs human importance maps (``map``/``has_map`` in its batches).
    needs_maps: ClassVar[bool] = False

    #: What of the data the objective (and the evaluation of what it learns) reads, matched
    #: against the data kind's ``provides`` at load: ``labels`` (compound or class labels, which
    #: the probes read: every objective of profiles and images), ``tracks`` (video tracking labels)
    needs: ClassVar[frozenset[str]] = frozenset({"labels"})

    #: The rung families (``mlp``, ``vit``, ...) the objective can train; ``None``: every family.
    model_families: ClassVar[frozenset[str] | None] = None

    @classmethod
    def rung_refusal(cls, rung: str) -> str | None:
        """Why this objective cannot train ``rung`` (naming the rungs it can), or ``None``."""
        if cls.model_families is None:
            return None
        from bioscale.models.ladder import get_rung, rung_names

        family = get_rung(rung).family
        if family in cls.model_families:
            return None
        by_family: dict[str, list[str]] = {}
        for name in rung_names():
            if get_rung(name).family in cls.model_families:
                by_family.setdefault(get_rung(name).family, []).append(name)
        listed = "; ".join(f"{fam}: {', '.join(names)}" for fam, names in sorted(by_family.items()))
        return f"{cls.name} cannot train the {family} rung {rung}; rungs that support it: {listed}"

    def weight_decay(self, default: float) -> float:
        """The weight decay the loop applies (the study's unless the objective's method
        prescribes its own); applied once, through the loop's parameter groups."""
        return default

    def weight_decay_mode(self, default: WeightDecayMode) -> WeightDecayMode:
        """How the loop applies ``weight_decay`` (the study's unless the method prescribes one)."""
        return default

    def selection_term(self) -> str:
        """The validation loss term early stopping minimises (logged as ``val/loss``; the other
        terms as ``val/<term>``): the total ``loss`` unless a term of it must not be rewarded."""
        return "loss"

    def prepare_backbone(self, backbone: nn.Module) -> nn.Module:
        """Adapt a freshly built backbone to the objective's needs (default: unchanged)."""
        return backbone

    def uses_controls(self) -> bool:
        """Whether a diet's ``controls: true`` adds anything for this objective."""
        return False

    def raw_labels(self, index: SampleIndex) -> dict[str, np.ndarray]:
        """Per manifest row, the raw label of every head (strings; None where unlabelled)."""
        raise NotImplementedError

    def label_space(self, index: SampleIndex, rows: np.ndarray) -> LabelSpace:
        """Vocabularies from the training rows (sorted, so stable across runs)."""
        raw = self.raw_labels(index)
        return LabelSpace(
            classes={
                col: sorted({str(v) for v in values[rows] if v is not None})
                for col, values in raw.items()
            }
        )

    def build_heads(self, embed_dim: int, labels: dict[str, int]) -> nn.ModuleDict:
        """One linear head per label column."""
        from torch import nn

        return nn.ModuleDict({col: nn.Linear(embed_dim, n) for col, n in labels.items()})

    def extra_inputs(
        self, input_shape: tuple[int, ...], n: int, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Batch columns beyond ``x`` and the labels that ``loss_terms`` reads, random, for a
        measurement batch of ``n`` samples (FLOPs of one step); default none."""
        return {}

    def loss_terms(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Named loss terms; ``loss`` is the total the loop backpropagates."""
        raise NotImplementedError
