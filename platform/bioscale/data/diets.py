"""Data diets: nested, hash-ranked subsets of the trainable pool (ARCHITECTURE "Diet").

Per compound, pool samples are ranked by hash(sample key, diet_seed) and the first
max(1, ⌈f·n⌉) are kept; extra compounds are ranked by hash(compound, diet_seed) and the first k
kept, k a count or ⌈x·n_extra⌉ for a fraction x. Because the ranking never depends on f, k or x,
every smaller diet is a subset of every larger one with the same ``diet_seed``, on every machine. Diets draw only from the ``pool`` role, which
holds whole wells (``bioscale.data.splits``): a diet never takes a site of a probe,
early-stopping or evaluation-control well.
"""

from __future__ import annotations

import json
import math
import numbers
from collections import defaultdict
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import NewType

import numpy as np

from bioscale.data.hashing import rank_key
from bioscale.data.splits import SampleIndex

#: ``Diet.extra``: a count (``int`` >= 0), a fraction (``float`` in (0, 1]) or ``"all"``. The type
#: tells a count from a fraction: ``extra: 1`` is one compound, ``extra: 1.0`` every compound (read
#: as ``"all"``), ``extra: 24.0`` an error. A NewType, so ``bioscale.config.from_mapping`` hands the
#: YAML value over unchanged (its ``int`` coercion would read 1.0 as the count 1);
#: ``Diet.__post_init__`` validates it.
ExtraCompounds = NewType("ExtraCompounds", object)


@dataclass(frozen=True, kw_only=True)
class Diet:
    """A frozen, hashable description of what a trial may train on.

    Attributes:
        replicates: fraction of each compound's pool samples kept, in (0, 1].
        extra: the ``extra`` compounds (label-free objectives only) kept: a count, a fraction
            in (0, 1] of them (the first ⌈x·n_extra⌉ in the same ranking as counts, so a fraction
            keeps what the count ⌈x·n_extra⌉ keeps), or ``"all"``. A fraction of 1.0 is
            ``"all"`` (same label and trial key); see ``ExtraCompounds``.
        plates: restrict to these plates (``None``: all).
        sources: restrict to these sources (``None``: all).
        controls: whether negative-control samples are trained on (IBP: as one more class).
        diet_seed: seed of the hash ranking, separate from the training seed.
    """

    replicates: float = 1.0
    extra: ExtraCompounds = 0
    plates: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    controls: bool = False
    diet_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.replicates <= 1.0:
            raise ValueError(f"diet.replicates must be in (0, 1], got {self.replicates}")
        object.__setattr__(self, "extra", _extra(self.extra))
        for name in ("plates", "sources"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(sorted(value)))

    def label(self) -> str:
        """A short, canonical name, logged as the ``diet`` param (seed logged separately)."""
        # a count prints as ``24``, a fraction as its shortest repr (``0.5``, never ``:g``)
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


def _extra(value: object) -> int | float | str:
    """``Diet.extra`` validated: an ``int`` count, a ``float`` fraction in (0, 1) or ``"all"``."""
    if isinstance(value, str) and value == "all":
        return "all"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        if number == 1.0:  # every extra compound
            return "all"
        if 0.0 < number < 1.0:
            return number
        if number.is_integer() and number > 1.0:
            raise ValueError(
                f"diet.extra is {value!r}, a fraction above 1: write {int(number)} (no decimal "
                "point) for a count of extra compounds, or a fraction in (0, 1]"
            )
    raise ValueError(
        f"diet.extra must be a count >= 0 (e.g. 24), a fraction in (0, 1] (e.g. 0.25) or 'all', "
        f"got {value!r}"
    )


def n_extra_kept(extra: int | float | str, n_extra: int) -> int:
    """How many of ``n_extra`` hash-ranked extra compounds a diet keeps (``Diet.extra``).

    A fraction x keeps ⌈x·n_extra⌉, computed on x's decimal value (0.07 of 100 is 7, where the
    float product 0.07·100 = 7.000000000000001 would give 8); a count k keeps min(k, n_extra).
    """
    if extra == "all":
        return n_extra
    if isinstance(extra, float):
        return min(n_extra, math.ceil(Fraction(repr(extra)) * n_extra))
    return min(int(extra), n_extra)


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
    keep_extra = set(extra[: n_extra_kept(diet.extra, len(extra))])

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
