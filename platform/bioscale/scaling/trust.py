"""Whether a fit can be trusted: backtests (fit the smaller scales, predict the largest held-out
ones; SEEDS §4) and plateau / non-monotonic detection (a curve that stops improving, e.g. a
task-supervised objective on Pheno-CA, must not be extrapolated as a power law)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from bioscale.scaling.fit import MIN_SCALES_INTERVALS, N_BOOT, FitResult, fit_law

#: no improvement over the last k scales flags a plateau
PLATEAU_K = 2
#: improvements smaller than this fraction of the error count as none (when seeds cannot tell)
PLATEAU_REL_TOL = 0.01


def _scale_stats(fit: FitResult) -> list[tuple[float, np.ndarray, list[Any] | None]]:
    """Per distinct scale along a one-axis fit: (x, errors (m,), seeds), ascending in x."""
    x, err = fit.x[:, 0], 1.0 - fit.y if fit.direction == "higher" else fit.y
    out = []
    for xv in np.unique(x):
        idx = np.flatnonzero(x == xv)
        seeds = [fit.seeds[i] for i in idx] if fit.seeds is not None else None
        out.append((float(xv), err[idx], seeds))
    return out


def detect_plateau(
    fit: FitResult, *, k: int = PLATEAU_K, rel_tol: float = PLATEAU_REL_TOL
) -> dict[str, Any] | None:
    """Flag a curve whose error stops improving over its last ``k`` scales.

    Each of the last k scales is compared with the scale before them: the improvement is the mean
    over paired seeds (seeds present at both scales) of err(before) − err(after), or the
    difference of means without pairs. It counts only if larger than the noise: twice the standard
    error of the paired differences (≥ 2 pairs), and at least ``rel_tol`` × err(before).
    ``non_monotonic`` means the largest scale is worse than the best earlier one by more than that.

    Returns:
        ``{"plateau", "non_monotonic", "k", "improvements", "tolerance", "level",
        "level_ci95", "reason"}`` (``level`` in the metric's terms: the best mean among the last
        k + 1 scales, with a seed-noise interval), or None for multi-axis fits or too few scales.
    """
    if len(fit.axis) != 1 or fit.n_scales < k + 1 or not fit.points:
        return None
    stats = _scale_stats(fit)
    ref_x, ref_err, ref_seeds = stats[-(k + 1)]
    improvements, tols = [], []
    for _, err, seeds in stats[-k:]:
        diffs = _paired(ref_err, ref_seeds, err, seeds)
        if diffs is not None and len(diffs) >= 2:
            gain, se = float(np.mean(diffs)), float(np.std(diffs, ddof=1) / np.sqrt(len(diffs)))
        else:
            gain, se = float(ref_err.mean() - err.mean()), 0.0
        improvements.append(gain)
        tols.append(max(2.0 * se, rel_tol * float(ref_err.mean())))
    plateau = all(g <= t for g, t in zip(improvements, tols, strict=True))
    tail = stats[-(k + 1) :]
    means = [float(e.mean()) for _, e, _ in tail]
    best = int(np.argmin(means))
    earlier_best = min(float(e.mean()) for _, e, _ in stats[:-1])
    non_monotonic = float(stats[-1][1].mean()) - earlier_best > max(tols)
    level_err = tail[best][1]
    half = (
        1.96 * float(np.std(level_err, ddof=1) / np.sqrt(len(level_err)))
        if len(level_err) >= 2
        else 0.0
    )
    lo, hi = means[best] - half, means[best] + half
    level, level_ci = means[best], [lo, hi]
    if fit.direction == "higher":
        level, level_ci = 1.0 - level, [1.0 - hi, 1.0 - lo]
    reason = ""
    if plateau:
        reason = (
            f"no improvement beyond the noise over the last {k} scales after {ref_x:,.4g} "
            f"(tolerance {max(tols):.3g} in error)"
        )
    if non_monotonic:
        reason = (reason + "; " if reason else "") + (
            "the largest scale is worse than a smaller one (non-monotonic)"
        )
    return {
        "plateau": bool(plateau),
        "non_monotonic": bool(non_monotonic),
        "k": k,
        "improvements": improvements,
        "tolerance": max(tols),
        "level": level,
        "level_ci95": level_ci,
        "reason": reason,
    }


def _paired(
    a: np.ndarray, seeds_a: list[Any] | None, b: np.ndarray, seeds_b: list[Any] | None
) -> np.ndarray | None:
    if seeds_a is None or seeds_b is None:
        return None
    by_a = dict(zip(seeds_a, a, strict=True))
    common = [(by_a[s], v) for s, v in zip(seeds_b, b, strict=True) if s in by_a]
    return np.array([x - y for x, y in common]) if common else None


def backtest(fit: FitResult, *, holdout: int = 1, n_boot: int = N_BOOT) -> dict[str, Any] | None:
    """Refit without the ``holdout`` largest scales and predict them.

    For a two-axis law the largest scales are the largest N·D (a compute proxy). Needs at least
    5 distinct scales and a point-fittable remainder; otherwise None.

    Returns:
        ``{"held_out", "n_train_scales", "observed", "predicted", "ci95", "abs_error",
        "rel_error", "in_interval", "mean_abs_error", "mean_rel_error", "coverage"}``: per held-out
        scale, the observed mean over seeds and the forecast in the metric's terms, and whether
        the observed mean falls in the forecast's 95% interval.
    """
    if fit.params is None or fit.n_scales < MIN_SCALES_INTERVALS:
        return None
    x, y = fit.x, fit.y
    size = np.prod(x, axis=1)
    held_sizes = np.unique(size)[-holdout:]
    held = np.isin(size, held_sizes)
    train = fit_law(
        x[~held],
        y[~held],
        law=fit.law,
        direction=fit.direction,
        metric=fit.metric,
        axis=fit.axis,
        group=fit.group,
        seeds=[s for s, h in zip(fit.seeds, held, strict=True) if not h] if fit.seeds else None,
        n_boot=n_boot,
        bootstrap_scheme=(fit.bootstrap or {}).get("scheme", "seeds"),
    )
    if train.params is None:
        return None
    scales = np.unique(x[held], axis=0)
    observed = np.array([y[held & np.all(x == s, axis=1)].mean() for s in scales])
    predicted = train.predict(scales)
    band = train.band(scales)
    ci = [[float(lo), float(hi)] for lo, hi in zip(*band, strict=True)] if band else None
    inside = [bool(lo <= o <= hi) for o, (lo, hi) in zip(observed, ci, strict=True)] if ci else None
    abs_err = np.abs(predicted - observed)
    rel_err = abs_err / np.maximum(np.abs(observed), 1e-12)
    return {
        "held_out": scales.tolist(),
        "n_train_scales": train.n_scales,
        "observed": observed.tolist(),
        "predicted": predicted.tolist(),
        "ci95": ci,
        "abs_error": abs_err.tolist(),
        "rel_error": rel_err.tolist(),
        "in_interval": inside,
        "mean_abs_error": float(abs_err.mean()),
        "mean_rel_error": float(rel_err.mean()),
        "coverage": (sum(inside) / len(inside)) if inside else None,
    }


def with_trust(
    fit: FitResult,
    *,
    holdout: int = 1,
    plateau_k: int = PLATEAU_K,
    n_boot: int = N_BOOT,
) -> FitResult:
    """The fit with its backtest and plateau check attached (and a note when there is none)."""
    bt = backtest(fit, holdout=holdout, n_boot=n_boot)
    pl = detect_plateau(fit, k=plateau_k)
    note = fit.note
    if bt is None and fit.params is not None:
        why = (
            f"backtest needs at least {MIN_SCALES_INTERVALS} distinct scales, has {fit.n_scales}"
            if fit.n_scales < MIN_SCALES_INTERVALS
            else "backtest: too few scales remain after holding out the largest"
        )
        note = f"{note}; {why}" if note else why
    if pl and (pl["plateau"] or pl["non_monotonic"]):
        note = f"{note}; flagged: {pl['reason']}" if note else f"flagged: {pl['reason']}"
    return replace(fit, backtest=bt, plateau=pl, note=note)
