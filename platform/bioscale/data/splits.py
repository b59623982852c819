"""Fixed per-sample roles: probe sets, early-stopping validation, evaluation controls, the pool.

Roles are assigned to whole wells (ARCHITECTURE "Probe sets"): every site of a well has its well's
role, so no objective ever trains on a site of a well that is probed or early-stopped on. Every
role is a pure function of the manifest (a stable hash of plate/well with a fixed salt), so the
probe sets are identical for every diet, seed and objective.

Per ``seen`` compound the wells are ranked and the first ``probe_test`` become ``probe_test``,
the next ``probe_val`` ``probe_val``, the next ``probe_train`` ``probe_train``, the next
``early_stop_val`` ``es_val``; the rest are the ``pool`` diets draw from. At least one well of a
compound always stays in the pool (the reservation shrinks, train/val before test, when a
compound has few wells). ``novel`` samples are all ``novel_test``. Per plate and negative
control, a share ``eval_controls`` of its wells becomes ``eval_control``: the reference of
normalisation and the retrieval negatives, which no diet trains on (at least one of them stays in
the pool). Of the other ``control`` wells and of each ``extra`` compound's wells, ``early_stop_val``
are ``es_val`` and the rest are the pool.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa

from bioscale.data.hashing import rank_key, sample_key
from bioscale.errors import ConfigError, ManifestError

#: Salt of the well ranking. Unchanged since v1: wells with one sample (profiles, natural images)
#: keep the ranks, and so the probe sets, they had when sites were ranked.
ROLE_SALT = "bioscale-roles-v1"
#: Salt of the per-plate ranking of control wells into ``eval_control``.
EVAL_CONTROL_SALT = "bioscale-eval-controls-v1"
#: Version of the role assignment, part of every trial key (``bioscale.study.plan.resolve``).
#: v1 ranked plate/well/site keys; v2 assigns whole wells and reserves evaluation control wells.
ROLES_VERSION = 2
ROLES = ("probe_train", "probe_val", "probe_test", "novel_test", "es_val", "eval_control", "pool")


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """How many wells per ``seen`` compound each fixed set reserves, and the share of each plate's
    negative-control wells reserved for evaluation (``eval_control``)."""

    probe_train: int = 2
    probe_val: int = 1
    probe_test: int = 2
    early_stop_val: int = 1
    #: ⌈eval_controls · n⌉ of the n wells of a negative control on a plate, at most n − 1
    eval_controls: float = 0.5

    def __post_init__(self) -> None:
        for name in ("probe_train", "probe_val", "probe_test", "early_stop_val"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.splits.{name} is a number of wells, >= 0")
        if not 0.0 <= self.eval_controls <= 1.0:
            raise ConfigError(
                "data.splits.eval_controls is the share of each plate's control wells reserved "
                f"for evaluation, in [0, 1]; got {self.eval_controls}"
            )


@dataclass(frozen=True)
class SampleIndex:
    """The manifest's metadata as arrays (no features), plus each sample's fixed role."""

    sample_id: np.ndarray
    key: np.ndarray
    source: np.ndarray
    batch: np.ndarray
    plate: np.ndarray
    perturbation_id: np.ndarray
    group: np.ndarray
    moa: np.ndarray
    target: np.ndarray
    role: np.ndarray
    #: ``compound | orf | crispr | control`` (natural images: ``image``)
    perturbation_type: np.ndarray | None = None
    #: the manifest's ``concentration`` (float or ``None`` per sample; ``None``: no such column)
    concentration: np.ndarray | None = None

    @classmethod
    def from_table(cls, table: pa.Table, splits: SplitConfig) -> SampleIndex:
        col = {
            c: np.asarray(table.column(c).to_pylist(), dtype=object)
            for c in (
                "sample_id",
                "source",
                "batch",
                "plate",
                "well",
                "site",
                "perturbation_id",
                "group",
                "moa",
                "target",
                "perturbation_type",
            )
        }
        keys = np.array(
            [
                sample_key(p, w, s)
                for p, w, s in zip(col["plate"], col["well"], col["site"], strict=True)
            ],
            dtype=object,
        )
        roles = _assign_roles(
            col["plate"], col["well"], col["perturbation_id"], col["group"], splits
        )
        return cls(
            sample_id=col["sample_id"],
            key=keys,
            source=col["source"],
            batch=col["batch"],
            plate=col["plate"],
            perturbation_id=col["perturbation_id"],
            group=col["group"],
            moa=col["moa"],
            target=col["target"],
            role=roles,
            perturbation_type=col["perturbation_type"],
            concentration=(
                np.asarray(table.column("concentration").to_pylist(), dtype=object)
                if "concentration" in table.column_names
                else None
            ),
        )

    def __len__(self) -> int:
        return len(self.sample_id)

    @cached_property
    def samples_per_well(self) -> int:
        """The most samples one well has: 1 for profiles and natural images, more with sites."""
        wells = Counter(k.rsplit("/", 1)[0] for k in self.key)  # plate/well of plate/well/site
        return max(wells.values(), default=0)

    def where(
        self, *, role: str | tuple[str, ...] | None = None, groups: frozenset[str] | None = None
    ) -> np.ndarray:
        """Row indices with the given role(s) and group(s)."""
        mask = np.ones(len(self), dtype=bool)
        if role is not None:
            mask &= np.isin(self.role, [role] if isinstance(role, str) else list(role))
        if groups is not None:
            mask &= np.isin(self.group, sorted(groups))
        return np.flatnonzero(mask)


def _well_rank(well: tuple[str, str], salt: str) -> int:
    # a well ranks by the key of its site 0: one-sample wells keep their v1 (per-site) rank
    return rank_key(sample_key(well[0], well[1], None), salt)


def _assign_roles(
    plates: np.ndarray,
    wells: np.ndarray,
    compounds: np.ndarray,
    groups: np.ndarray,
    splits: SplitConfig,
) -> np.ndarray:
    """(n,) roles of the module docstring, one per sample, equal for every sample of a well."""
    rows_of: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, well in enumerate(zip(plates, wells, strict=True)):
        rows_of[well].append(i)
    wells_of: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for well, rows in rows_of.items():
        treated = {compounds[i] for i in rows}
        if len(treated) > 1:
            raise ManifestError(
                f"well {well[0]}/{well[1]} holds samples of several perturbations "
                f"({', '.join(sorted(map(str, treated)))}); a well is one treatment: fix the "
                "manifest's perturbation_id (or its plate/well) for these samples"
            )
        wells_of[compounds[rows[0]]].append(well)

    role_of: dict[tuple[str, str], str] = {}
    for cwells in wells_of.values():
        group = groups[rows_of[cwells[0]][0]]
        if group == "novel":
            role_of.update(dict.fromkeys(cwells, "novel_test"))
            continue
        ranked = sorted(cwells, key=lambda w: _well_rank(w, ROLE_SALT))
        if group == "control":
            reserved = _eval_controls(ranked, splits.eval_controls)
            role_of.update(dict.fromkeys(reserved, "eval_control"))
            ranked = [w for w in ranked if w not in reserved]
        if group == "seen":
            wanted = [
                ("probe_test", splits.probe_test),
                ("probe_val", splits.probe_val),
                ("probe_train", splits.probe_train),
                ("es_val", splits.early_stop_val),
            ]
        else:
            wanted = [("es_val", splits.early_stop_val)]
        budget = max(len(ranked) - 1, 0)  # keep one well for training
        pos = 0
        for role, count in wanted:
            take = min(count, budget)
            role_of.update(dict.fromkeys(ranked[pos : pos + take], role))
            pos += take
            budget -= take
        role_of.update(dict.fromkeys(ranked[pos:], "pool"))

    roles = np.full(len(plates), "pool", dtype=object)
    for well, rows in rows_of.items():
        roles[rows] = role_of[well]
    return roles


def _eval_controls(ranked: list[tuple[str, str]], share: float) -> set[tuple[str, str]]:
    """Per plate, the first ⌈share · n⌉ (at most n − 1) of one control's n wells there."""
    by_plate: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for well in ranked:
        by_plate[well[0]].append(well)
    reserved: set[tuple[str, str]] = set()
    for plate_wells in by_plate.values():
        order = sorted(plate_wells, key=lambda w: _well_rank(w, EVAL_CONTROL_SALT))
        reserved.update(order[: min(math.ceil(share * len(order)), len(order) - 1)])
    return reserved
