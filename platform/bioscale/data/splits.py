"""Fixed per-sample roles: probe sets, early-stopping validation, and the trainable pool.

Every role is a pure function of the manifest (a stable hash of plate/well/site with a fixed
salt), so the probe sets are identical for every diet, seed and objective, and disjoint from
everything an objective trains or early-stops on (ARCHITECTURE "Probe sets").

Per ``seen`` compound the samples are ranked and the first ``probe_test`` become ``probe_test``,
the next ``probe_val`` ``probe_val``, the next ``probe_train`` ``probe_train``, the next
``early_stop_val`` ``es_val``; the rest are the ``pool`` diets draw from. At least one sample of a
compound always stays in the pool (the reservation shrinks, train/val before test, when a
compound has few replicates). ``novel`` samples are all ``novel_test``; ``extra`` and ``control``
samples give ``early_stop_val`` to ``es_val`` and the rest to the pool.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from bioscale.data.hashing import rank_key, sample_key

ROLE_SALT = "bioscale-roles-v1"
ROLES = ("probe_train", "probe_val", "probe_test", "novel_test", "es_val", "pool")


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """How many samples per ``seen`` compound each fixed set reserves."""

    probe_train: int = 2
    probe_val: int = 1
    probe_test: int = 2
    early_stop_val: int = 1

    def __post_init__(self) -> None:
        for name in ("probe_train", "probe_val", "probe_test", "early_stop_val"):
            if getattr(self, name) < 0:
                raise ValueError(f"splits.{name} must be >= 0")


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
        roles = _assign_roles(keys, col["perturbation_id"], col["group"], splits)
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
        )

    def __len__(self) -> int:
        return len(self.sample_id)

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


def _assign_roles(
    keys: np.ndarray, compounds: np.ndarray, groups: np.ndarray, splits: SplitConfig
) -> np.ndarray:
    roles = np.full(len(keys), "pool", dtype=object)
    by_compound: dict[str, list[int]] = defaultdict(list)
    for i, compound in enumerate(compounds):
        by_compound[compound].append(i)
    for rows in by_compound.values():
        group = groups[rows[0]]
        if group == "novel":
            roles[rows] = "novel_test"
            continue
        ranked = sorted(rows, key=lambda i: rank_key(keys[i], ROLE_SALT))
        if group == "seen":
            wanted = [
                ("probe_test", splits.probe_test),
                ("probe_val", splits.probe_val),
                ("probe_train", splits.probe_train),
                ("es_val", splits.early_stop_val),
            ]
        else:
            wanted = [("es_val", splits.early_stop_val)]
        budget = max(len(ranked) - 1, 0)  # keep one sample for training
        pos = 0
        for role, count in wanted:
            take = min(count, budget)
            roles[ranked[pos : pos + take]] = role
            pos += take
            budget -= take
    return roles
