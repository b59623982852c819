"""Accuracy beside biological alignment across scale: which alignment metrics a study's trials
logged, one figure per objective (probe accuracy against each alignment metric, one panel per
metric, points coloured by model size N) and one sentence per objective on whether each metric
rises or falls with N (Spearman ρ over the trials, with n).

Reads a trial table (``bioscale.scaling.runs.runs_table`` rows); nothing here knows how the
metrics were computed (``bioscale.eval.trial_alignment``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: headline alignment metrics, as patterns over the frozen names (counts and timings left out)
HEADLINE = (
    r"align/spearman",
    r"align/score",
    r"adv/alignment/mean",
    r"adv/min_eps_l2/median",
    r"neural/[^/]+/score",
    r"probe/3dpc_[^/]+/test/acc",
)
#: |ρ| below this reads as no clear trend
FLAT_RHO = 0.2


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def alignment_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The headline alignment metrics some trial has a finite value of, in ``HEADLINE`` order."""
    present = {k for r in rows for k, v in r.items() if _finite(v)}
    out: list[str] = []
    for pattern in HEADLINE:
        out.extend(sorted(k for k in present if re.fullmatch(pattern, k)))
    return out


def accuracy_column(rows: Sequence[dict[str, Any]], metric: str) -> str | None:
    """The probe accuracy to set against alignment: the study's metric, or — when no trial with
    alignment metrics has it (e.g. natural images without novel classes) — its ``seen_compounds``
    split; ``None`` when neither is there."""
    aligned = [r for r in rows if any(_finite(r.get(c)) for c in alignment_columns([r]))]
    for column in dict.fromkeys([metric, metric.replace("novel_compounds", "seen_compounds")]):
        if any(_finite(r.get(column)) for r in aligned):
            return column
    return None


def _objectives(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row.get("objective", "all")), []).append(row)
    return out


def size_trend(rows: Sequence[dict[str, Any]], column: str) -> tuple[float, int, int, float]:
    """(Spearman ρ of ``column`` against N, trials, distinct N, p-value) over the trials that
    have both; ρ and p are NaN with fewer than three trials or a single N."""
    from scipy.stats import spearmanr

    pairs = [(float(r["N"]), float(r[column])) for r in rows if _finite(r.get(column)) and "N" in r]
    sizes = len({n for n, _ in pairs})
    if len(pairs) < 3 or sizes < 2:
        return float("nan"), len(pairs), sizes, float("nan")
    result = spearmanr([n for n, _ in pairs], [v for _, v in pairs])
    return float(result.statistic), len(pairs), sizes, float(result.pvalue)


def describe_trends(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """One sentence per objective: does each alignment metric rise or fall with N?"""
    sentences = []
    for objective, group in _objectives(rows).items():
        parts = []
        for column in columns:
            rho, n, sizes, p = size_trend(group, column)
            if n == 0:
                continue
            if math.isnan(rho):
                parts.append(f"{column} cannot be read (n = {n} trials, {sizes} size(s))")
                continue
            verb = (
                "shows no clear trend" if abs(rho) < FLAT_RHO else ("rises" if rho > 0 else "falls")
            )
            parts.append(
                f"{column} {verb} (Spearman ρ = {rho:+.2f}, p = {p:.2g}, n = {n}, {sizes} sizes)"
            )
        if parts:
            sentences.append(f"{objective}: as N grows, " + "; ".join(parts) + ".")
    return sentences


def plot_alignment(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, *, metric: str, title: str
) -> list[Path]:
    """Per objective, ``alignment_<objective>.png``: one panel per alignment metric, the metric on
    x and the probe accuracy on y, each trial a point coloured by log N, a line through the mean
    of each N (ordered by N). ``[]`` when no trial has alignment metrics or the accuracy."""
    columns = alignment_columns(rows)
    accuracy = accuracy_column(rows, metric)
    if not columns or accuracy is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    sizes = [float(r["N"]) for r in rows if _finite(r.get("N"))]
    norm = LogNorm(vmin=min(sizes), vmax=max(sizes) * (1.0001 if len(set(sizes)) == 1 else 1))
    cmap = plt.get_cmap("viridis")
    paths = []
    for objective, group in _objectives(rows).items():
        panels = [c for c in columns if any(_finite(r.get(c)) for r in group)]
        if not panels:
            continue
        fig, axes = plt.subplots(
            1,
            len(panels),
            figsize=(1.6 + 3.2 * len(panels), 3.8),
            dpi=120,
            squeeze=False,
            sharey=True,
            layout="constrained",
        )
        axes[0][0].set_ylabel(accuracy, fontsize=8)
        for ax, column in zip(axes[0], panels, strict=True):
            pts = [
                (float(r["N"]), float(r[column]), float(r[accuracy]))
                for r in group
                if _finite(r.get(column)) and _finite(r.get(accuracy)) and _finite(r.get("N"))
            ]
            if not pts:
                ax.set_title(f"{column}\n(no trial has both)", fontsize=8)
                continue
            n, x, y = (np.array(v) for v in zip(*pts, strict=True))
            ax.scatter(x, y, c=n, cmap=cmap, norm=norm, s=22, zorder=3, edgecolors="k", lw=0.3)
            by_n = sorted(set(n))
            ax.plot(
                [x[n == s].mean() for s in by_n],
                [y[n == s].mean() for s in by_n],
                color="grey",
                lw=1,
                zorder=2,
            )
            rho, count, _, _ = size_trend(group, column)
            trend = f"ρ(N) = {rho:+.2f}, n = {count}" if not math.isnan(rho) else f"n = {count}"
            ax.set_title(f"{column}\n{trend}", fontsize=8)
            ax.set_xlabel(column, fontsize=8)
            ax.grid(True, alpha=0.3)
        fig.colorbar(
            plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[0].tolist(), label="N (parameters)"
        )
        fig.suptitle(f"{title}: accuracy vs alignment, {objective}", fontsize=10)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", objective).strip("_") or "objective"
        path = Path(out_dir) / f"alignment_{slug}.png"
        if path in paths:  # objectives whose labels differ only in punctuation
            path = path.with_name(f"alignment_{slug}_{len(paths)}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
