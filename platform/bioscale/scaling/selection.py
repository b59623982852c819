"""Which law for a curve. ``choose_law`` (``--law auto``) picks, per curve, the law with the best
backtest on the curve's own points (see its docstring), from every candidate's ``own_backtest``
(``law_backtests``, which ``predict.average_laws`` also uses to weight the candidates in the
prediction band); ``law_check`` says whether ``log_linear`` fits as well as ``power``.

Power law or straight line in log x? Per curve, whether ``log_linear`` (err = a + b·log10 x, the
curve Pheno-CA compared its power laws against, arXiv 2309.16773) fits as well as ``power``
(err = E + A·x^−α), so a report says when the data cannot tell the two apart.

Criterion: the small-sample Akaike information criterion (AICc; Hurvich & Tsai 1989) of a Gaussian
likelihood of the log residuals log err − log ŷ, the residual scale both fits use (``power``: a
Huber loss on log residuals; ``log_linear``: least squares weighted by 1/err², to first order the
same), with k = P + 1 parameters (the noise variance counts) and n the runs (every seed). ΔAICc =
AICc(log_linear) − AICc(power): |ΔAICc| ≤ ``AICC_MARGIN`` = 2 reads "fits as well" (both models
have substantial support; Burnham & Anderson 2002, §2.6), below −2 the straight line fits better,
above 2 the power law does (``as_well`` holds for both of the first two: the power law's extra
parameter does not pay for itself). The power fit's Huber loss is not the least-squares optimum of
these residuals, so if anything the criterion leans toward the line: "power fits better" is said
only where the bend toward a floor is clear. A line at or below 0 in error at an observed scale
has AICc +∞. Both
fits' backtest errors (refit without the largest scale, predict it) are reported beside, for
information, not for the verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bioscale.errors import BioscaleError
from bioscale.scaling.fit import FitResult, fit_law
from bioscale.scaling.laws import LAWS, as_log_axes
from bioscale.scaling.trust import backtest

POWER = "power"
LINE = "log_linear"
#: |ΔAICc| at or below this: the data cannot tell the two laws apart
AICC_MARGIN = 2.0
#: the residual variance is clipped here (in log error², a curve through every point) so that
#: ln σ² stays finite
MIN_VARIANCE = 1e-12
#: runs the power law's AICc needs: n > k + 1 with k = 3 parameters + the noise variance
POWER_MIN_RUNS = 6


def aicc(fit: FitResult) -> float | None:
    """AICc of the fit's Gaussian log-residual likelihood; None without a fit or with n ≤ k + 1
    runs (k = parameters + 1); +∞ where the curve is at or below 0 at an observed run."""
    if fit.params is None:
        return None
    spec = fit.spec
    n, k = fit.n_points, spec.n_params + 1
    if n <= k + 1:
        return None
    err = 1.0 - fit.y if fit.direction == "higher" else fit.y
    theta, logX = spec.to_theta(fit.params), as_log_axes(fit.x, spec.axes)
    if spec.design is not None and np.any(spec.design(logX) @ theta <= 0):
        return float("inf")  # a line at or below 0 in error where a run was observed
    resid = np.log(err) - spec.log_predict(theta, logX)
    var = max(float(np.mean(resid**2)), MIN_VARIANCE)
    return float(n * (np.log(2.0 * np.pi * var) + 1.0) + 2.0 * k + 2.0 * k * (k + 1) / (n - k - 1))


def refit(fit: FitResult, law: str, **bootstrap: Any) -> FitResult:
    """The same points (and seeds, direction, group) under ``law``; ``bootstrap``: ``n_boot``,
    ``boot_seed``, ``bootstrap_scheme`` (default a point fit: AICc and a point backtest need no
    intervals)."""
    return fit_law(
        fit.x,
        fit.y,
        law=law,
        direction=fit.direction,
        metric=fit.metric,
        axis=fit.axis,
        group=fit.group,
        seeds=fit.seeds,
        **({"n_boot": 0} | bootstrap),
    )


def _backtest_error(fit: FitResult) -> float | None:
    bt = fit.backtest if fit.backtest is not None else backtest(fit, n_boot=0)
    return None if bt is None else float(bt["mean_abs_error"])


def law_check(fit: FitResult, *, margin: float = AICC_MARGIN) -> dict[str, Any] | None:
    """Whether ``log_linear`` fits ``fit``'s points as well as ``power`` (see the module
    docstring); the law the fit does not use is fitted to the same points.

    Returns:
        None for a multi-axis fit; else ``{"group", "axis", "n_points", "aicc_power",
        "aicc_log_linear", "delta_aicc", "margin", "as_well", "verdict",
        "backtest_abs_error_power", "backtest_abs_error_log_linear"}``: ``delta_aicc`` is
        AICc(log_linear) − AICc(power); ``as_well`` is ``delta_aicc ≤ margin`` (True also when the
        line fits better), None when there is no verdict; ``verdict`` one of ``power fits
        better``, ``as well``, ``log_linear fits better`` or ``no verdict: <why>``.
    """
    if len(fit.axis) != 1:
        return None
    power = fit if fit.law == POWER else refit(fit, POWER)
    line = fit if fit.law == LINE else refit(fit, LINE)
    a_power, a_line = aicc(power), aicc(line)
    out: dict[str, Any] = {
        "group": fit.group,
        "axis": fit.axis,
        "n_points": fit.n_points,
        "aicc_power": a_power,
        "aicc_log_linear": a_line,
        "delta_aicc": None,
        "margin": margin,
        "as_well": None,
        "backtest_abs_error_power": _backtest_error(power) if power.params else None,
        "backtest_abs_error_log_linear": _backtest_error(line) if line.params else None,
    }
    if a_power is None or a_line is None:
        missing = power if power.params is None else line if line.params is None else None
        why = (
            f"no {missing.law} fit ({missing.note})"
            if missing is not None
            else f"AICc needs at least {POWER_MIN_RUNS} runs, has {fit.n_points}"
        )
        return {**out, "verdict": f"no verdict: {why}"}
    delta = a_line - a_power
    out["delta_aicc"] = delta
    out["as_well"] = bool(delta <= margin)
    if delta < -margin:
        out["verdict"] = "log_linear fits better"
    elif delta <= margin:
        out["verdict"] = "as well"
    else:
        out["verdict"] = "power fits better"
    return out


def describe_law_check(check: dict[str, Any]) -> str:
    """One plain sentence on a ``law_check``."""
    name = ", ".join(str(v) for v in check["group"].values()) or "all trials"
    axis = check["axis"][-1]
    verdict = check["verdict"]
    if check["delta_aicc"] is None:
        return f"{name}: power law or straight line in log {axis}: {verdict}."
    delta = check["delta_aicc"]
    d = "+∞" if not np.isfinite(delta) else f"{delta:+.1f}"
    head = f"{name}: ΔAICc (log_linear − power) = {d}"
    if verdict == "as well":
        return (
            f"{head}, within ±{check['margin']:g}: a straight line in log10 {axis} fits as well "
            f"as the power law, so these points cannot tell a power law from log-linear growth; "
            "do not read the fitted floor or exponent as evidence of a power law."
        )
    if verdict == "log_linear fits better":
        return (
            f"{head}: a straight line in log10 {axis} fits better than the power law (its extra "
            "parameter does not pay for itself): these points show no power-law bend toward a "
            "floor; do not read the fitted floor or exponent as evidence of a power law."
        )
    return f"{head}: the power law fits better than a straight line in log10 {axis}."


# law auto: per curve, the law with the best backtest on the curve's own points ----------------

#: the laws ``auto`` chooses among, by the number of axes of the fit, simplest first
AUTO_LAWS: dict[int, tuple[str, ...]] = {
    1: ("pure_power", "log_linear", "power", "m4"),
    2: ("chinchilla",),
}
#: a law with more parameters is chosen only if its backtest error beats every simpler
#: candidate's by more than one standard error of their paired per-scale difference (the
#: one-standard-error rule, Hastie et al. 2009 §7.10): a nested law, e.g. m4 ⊃ power at α = 0,
#: otherwise wins by noise
AUTO_SE = 1.0
#: the backtest folds: each holds out this fraction of the curve's distinct scales (its largest,
#: at least one), refits the rest and predicts them
AUTO_HOLDOUTS = (0.15, 0.3)
AUTO = "auto"
#: the law ``auto`` falls back to where no candidate can be backtested (too few scales)
AUTO_FALLBACK = {1: "power", 2: "chinchilla"}


def _fold_sizes(n_scales: int, need: int) -> list[int]:
    sizes = sorted({max(1, round(f * n_scales)) for f in AUTO_HOLDOUTS})
    return [h for h in sizes if n_scales - h >= need]


def own_backtest(
    x: np.ndarray, y: np.ndarray, law: str, *, direction: str, axis: list[str]
) -> dict[str, Any] | None:
    """Rolling-origin backtest of ``law`` on the points (x (n, K), y (n,)) only: per fold
    (``AUTO_HOLDOUTS``), refit without the largest scales (by ∏x, a compute proxy) and predict
    them.

    Returns:
        ``{"score", "holdouts", "fold_errors", "scale_errors", "log_residuals", "log_predicted",
        "fold_runs"}``: the score is the mean over folds of the mean |error| in the metric's terms
        at the held-out scales (each a mean over its runs; ``scale_errors`` lists them, fold by
        fold); ``log_residuals`` are log error − log predicted error of every held-out run, fold
        by fold, ``log_predicted`` the log predicted error of each, and ``fold_runs`` the number
        of held-out runs per fold (so the residuals split back into folds).
        None when no fold leaves the law enough scales or a refit fails.
    """
    spec = LAWS.get(law)
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    y = np.asarray(y, dtype=float)
    size = np.prod(x, axis=1)
    sizes = np.unique(size)
    folds = _fold_sizes(len(sizes), spec.min_scales)
    errors, log_resid, log_pred, scale_errors, fold_runs = [], [], [], [], []
    for h in folds:
        held = size >= sizes[-h]
        fit = fit_law(x[~held], y[~held], law=law, direction=direction, axis=axis, n_boot=0)
        if fit.params is None:
            return None
        scales = np.unique(x[held], axis=0)
        observed = np.array([y[held & np.all(x == s, axis=1)].mean() for s in scales])
        pred = fit.predict(scales)
        if not np.all(np.isfinite(pred)):
            return None
        errors.append(float(np.mean(np.abs(pred - observed))))
        scale_errors.extend(np.abs(pred - observed).tolist())
        err_held = 1.0 - y[held] if direction == "higher" else y[held]
        err_pred = 1.0 - fit.predict(x[held]) if direction == "higher" else fit.predict(x[held])
        with np.errstate(divide="ignore", invalid="ignore"):
            log_resid.extend((np.log(err_held) - np.log(err_pred)).tolist())
            log_pred.extend(np.log(err_pred).tolist())
        fold_runs.append(int(held.sum()))
    if not errors:
        return None
    return {
        "score": float(np.mean(errors)),
        "holdouts": folds,
        "fold_errors": errors,
        "scale_errors": scale_errors,
        "log_residuals": log_resid,
        "log_predicted": log_pred,
        "fold_runs": fold_runs,
    }


def _pool(axis: list[str], candidates: tuple[str, ...] | None) -> tuple[str, ...]:
    pool = candidates if candidates is not None else AUTO_LAWS.get(len(axis))
    if not pool:
        raise BioscaleError(
            f"--law auto has no candidate law for {len(axis)} axes ({','.join(axis)}); "
            f"give one axis or N,D, or name a law"
        )
    return pool


def law_backtests(
    x: np.ndarray,
    y: np.ndarray,
    *,
    direction: str = "lower",
    axis: list[str] | tuple[str, ...] = ("D",),
    candidates: tuple[str, ...] | None = None,
) -> dict[str, dict[str, Any] | None]:
    """``own_backtest`` of every ``--law auto`` candidate (default ``AUTO_LAWS`` for the number
    of axes) on these points: ``{law: backtest | None}``, in candidate order. ``choose_law``
    ranks them; ``predict.average_laws`` weights the candidates' prediction bands by them."""
    axis = list(axis)
    return {
        law: own_backtest(x, y, law, direction=direction, axis=axis)
        for law in _pool(axis, candidates)
    }


def choose_law(
    x: np.ndarray,
    y: np.ndarray,
    *,
    direction: str = "lower",
    axis: list[str] | tuple[str, ...] = ("D",),
    group: dict[str, Any] | None = None,
    candidates: tuple[str, ...] | None = None,
    backtests: dict[str, dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """``--law auto``: the candidate law with the lowest ``own_backtest`` score on these points
    (never on points held out from the curve), preferring the simpler: the simplest candidate
    (fewest parameters, then ``AUTO_LAWS`` order) whose score is within one standard error of
    the best's (``AUTO_SE``; of the paired difference of their per-scale errors).

    Args:
        backtests: ``law_backtests`` of these points, if already computed (its laws are the
            candidates); default: computed here.

    Returns:
        ``{"group", "law", "candidates": {law: score | None}, "holdouts": {law: [..]},
        "criterion", "note"}``; where no candidate can be backtested (too few scales), ``law`` is
        ``AUTO_FALLBACK``'s (or the first candidate) and ``note`` says so.
    """
    axis = list(axis)
    if backtests is None:
        backtests = law_backtests(x, y, direction=direction, axis=axis, candidates=candidates)
    pool = tuple(backtests)
    scores: dict[str, float | None] = {}
    holdouts: dict[str, list[int]] = {}
    per_scale: dict[str, np.ndarray] = {}
    for law in pool:
        bt = backtests[law]
        scores[law] = None if bt is None else bt["score"]
        if bt is not None:
            holdouts[law] = bt["holdouts"]
            per_scale[law] = np.array(bt["scale_errors"])
    scored = [law for law in pool if scores[law] is not None]
    criterion = (
        "mean |error| at the largest scales of the curve's own points, each law refitted without "
        f"them (folds holding out {', '.join(f'{f:.0%}' for f in AUTO_HOLDOUTS)} of the scales); "
        "the simplest law within one standard error of the best"
    )
    if scored:
        best = min(scored, key=lambda k: scores[k])

        def close(k: str) -> bool:
            if k == best:
                return True
            diff = per_scale[k] - per_scale[best]
            if holdouts[k] != holdouts[best] or len(diff) < 2:
                return False
            return float(diff.mean()) <= AUTO_SE * float(diff.std(ddof=1) / np.sqrt(len(diff)))

        within = [k for k in scored if close(k)]
        law = min(within, key=lambda k: (LAWS.get(k).n_params, pool.index(k)))
        ranked = ", ".join(f"{k} {scores[k]:.3g}" for k in sorted(scored, key=lambda k: scores[k]))
        note = f"law auto chose {law} (backtest mean |error|: {ranked})"
    else:
        law = AUTO_FALLBACK.get(len(axis), pool[0])
        law = law if law in pool else pool[0]
        note = f"law auto: too few scales to backtest any of {', '.join(pool)}; using {law}"
    return {
        "group": group or {},
        "law": law,
        "candidates": scores,
        "holdouts": holdouts,
        "criterion": criterion,
        "note": note,
    }


def describe_choice(choice: dict[str, Any]) -> str:
    """One plain sentence on a ``choose_law`` result."""
    name = ", ".join(str(v) for v in choice["group"].values()) or "all trials"
    return f"{name}: {choice['note']}."
