"""Compound groups (ARCHITECTURE): ``seen``, ``novel``, ``extra`` and ``control``.

Assigned once per dataset, deterministically, stratified by MoA: within each MoA the compounds
are ranked by a stable hash and the first ``round(novel_fraction · n)`` become ``novel`` (always
leaving at least one ``seen`` compound per MoA, so a probe fit on ``seen`` knows every class).
Compounds without a task label are ``extra`` (usable only by IBP); negative controls are ``control``.
"""

from __future__ import annotations

from collections import defaultdict

from bioscale.data.hashing import rank_key

GROUP_SALT = "bioscale-groups-v1"


def assign_groups(
    moa_by_compound: dict[str, str | None],
    controls: set[str],
    novel_fraction: float,
) -> dict[str, str]:
    """Return ``{compound_id: group}``.

    Args:
        moa_by_compound: every perturbation id with its MoA label (``None`` if unlabelled).
        controls: the perturbation ids that are negative controls.
        novel_fraction: share of each MoA's compounds held out as ``novel``, in [0, 1).
    """
    if not 0.0 <= novel_fraction < 1.0:
        raise ValueError(f"novel_fraction must be in [0, 1), got {novel_fraction}")
    by_moa: dict[str, list[str]] = defaultdict(list)
    groups: dict[str, str] = {}
    for compound, moa in moa_by_compound.items():
        if compound in controls:
            groups[compound] = "control"
        elif moa is None or moa == "":
            groups[compound] = "extra"
        else:
            by_moa[moa].append(compound)
    for compounds in by_moa.values():
        ranked = sorted(compounds, key=lambda c: rank_key(c, GROUP_SALT))
        n_novel = min(round(novel_fraction * len(ranked)), len(ranked) - 1)
        for i, compound in enumerate(ranked):
            groups[compound] = "novel" if i < n_novel else "seen"
    return groups
