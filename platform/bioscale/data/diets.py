"""Data diets: nested, hash-ranked subsets of the trainable pool (ARCHITECTURE "Diet").

Per compound, pool samples are ranked by hash(sample key, diet_seed) and the first
max(1, ⌈f·n⌉) are kept; extra compounds are ranked by hash(compound, diet_seed) and the first k
kept. Because the ranking never depends on f or k, every smaller diet is a subset of every larger
one with the same ``diet_seed``, on every machine. Diets draw only from the ``pool`` role, which
holds whole wells (``bioscale.data.splits``): a diet never takes a site of a probe,
early-stopping or evaluation-control well.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from bioscale.data.hashing import rank_key
from bioscale.data.splits import SampleIndex


@dataclass(frozen=True, kw_only=True)
class Diet:
    """A frozen, hashable description of what a trial may train on.

    Attributes:
        replicates: fraction of each compound's pool samples kept, in (0, 1].
        extra: number of ``extra`` compounds (IBP only) kept, or ``"all"``.
        plates: restrict to these plates (``None``: all).
        sources: restrict to these sources (``None``: all).
        controls: whether negative-control samples are trained on (IBP: as one more class).
        diet_seed: seed of the hash ranking, separate from the training seed.
    """

    replicates: float = 1.0
    extra: int | Literal["all"] = 0
    plates: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    controls: bool = False
    diet_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.replicates <= 1.0:
            raise ValueError(f"diet.replicates must be in (0, 1], got {self.replicates}")
        if self.extra != "all" and (not isinstance(self.extra, int) or self.extra < 0):
            raise ValueError(f"diet.extra must be a count >= 0 or 'all', got {self.extra!r}")
        for name in ("plates", "sources"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(sorted(value)))

    def label(self) -> str:
        """A short, canonical name, logged as the ``diet`` param (seed logged separately)."""
        parts = [f"rep={self.replicates:g}", f"extra={self.extra}"]
        if self.plates:
            parts.append(f"plates={'+'.join(self.plates)}")
        if self.sources:
            parts.append(f"sources={'+'.join(self.sources)}")
        parts.append(f"controls={'on' if self.controls else 'off'}")
        return ",".join(parts)

    def canonical(self) -> str:
        """Canonical JSON, part of the trial key."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """The rows a trial trains on and what they count."""

    rows: np.ndarray
    D_samples: int
    D_compounds: int


def select(index: SampleIndex, diet: Diet, groups: frozenset[str]) -> Selection:
    """Apply ``diet`` to the pool, restricted to the compound ``groups`` an objective trains on."""
    if diet.controls:
        groups = groups | {"control"}
    eligible = index.where(role="pool", groups=groups)
    if diet.plates is not None:
        eligible = eligible[np.isin(index.plate[eligible], list(diet.plates))]
    if diet.sources is not None:
        eligible = eligible[np.isin(index.source[eligible], list(diet.sources))]

    by_compound: dict[str, list[int]] = defaultdict(list)
    for i in eligible:
        by_compound[index.perturbation_id[i]].append(int(i))

    extra = sorted(
        (c for c, rows in by_compound.items() if index.group[rows[0]] == "extra"),
        key=lambda c: rank_key(c, diet.diet_seed),
    )
    keep_extra = set(extra if diet.extra == "all" else extra[: diet.extra])

    kept: list[int] = []
    for compound, rows in by_compound.items():
        if index.group[rows[0]] == "extra" and compound not in keep_extra:
            continue
        ranked = sorted(rows, key=lambda i: rank_key(index.key[i], diet.diet_seed))
        kept.extend(ranked[: max(1, math.ceil(diet.replicates * len(ranked)))])
    rows = np.array(sorted(kept), dtype=np.int64)
    return Selection(
        rows=rows, D_samples=len(rows), D_compounds=len(set(index.perturbation_id[rows]))
    )
