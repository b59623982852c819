"""Power law or straight line in log x? Per curve, whether ``log_linear`` (err = a + b·log10 x, the
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

from bioscale.scaling.fit import FitResult, fit_law
from bioscale.scaling.laws import as_log_axes
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


def _refit(fit: FitResult, law: str) -> FitResult:
    """The same points under ``law``, point fit only (AICc and a point backtest need no
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
        n_boot=0,
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
    power = fit if fit.law == POWER else _refit(fit, POWER)
    line = fit if fit.law == LINE else _refit(fit, LINE)
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
