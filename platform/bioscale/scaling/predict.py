"""Predictions at new scales, with two intervals (ARCHITECTURE's prediction JSON):

- ``ci95``: where the fitted *mean curve* lies, the percentile interval of the bootstrap refits
  (``FitResult.boot``) at the point;
- ``pi95``: where *a new run's value* lies: each bootstrap curve plus a draw of seed-to-seed
  noise, so it is the wider one.

Seed noise lives where the fits live, on the log error. It is estimated from the seeds a study
has, pooled across scales as a function of the metric's level (Porian et al. 2024 pool seed
variation across scales as a function of the loss): at each scale with m ≥ 2 runs the sample
variance s² of log error (k = m − 1 degrees of freedom), then log σ = a + b·log err
(``_level_slope``: weighted least squares of the bias-corrected log s², whose mean is
log σ² + ψ(k/2) − log(k/2) and variance ψ′(k/2)). With fewer than ``MIN_SCALES_SLOPE`` scales
with repeats, a level range narrower than ``MIN_LEVEL_SPAN``, or a slope within two standard
errors of 0, σ is the pooled constant (Σ k·s² / Σ k).

A study with one run per scale has no seed spread: σ then falls back to the fit residuals,
√(Σ r²/(n − P)) of the P-parameter fit (which also absorbs any lack of fit), or, where larger,
the RMS of the out-of-sample log residuals of the curve's own rolling backtest
(``selection.own_backtest``: refit without the largest scales, predict them), because the points
of one training curve share their deviations and in-sample residuals understate a new run's.
Every prediction says which (``noise.source``, ``note``). New-run draws are Student-t with the
noise estimate's degrees of freedom, so a σ from few runs widens the interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import digamma, polygamma

from bioscale.errors import BioscaleError
from bioscale.scaling.fit import FitResult
from bioscale.scaling.laws import as_log_axes
from bioscale.scaling.selection import own_backtest

#: scales with repeated runs needed to fit how seed noise changes with the level
MIN_SCALES_SLOPE = 3
#: a slope also needs the level (log error) of those scales to span at least this much
MIN_LEVEL_SPAN = 0.1
#: noise draws per bootstrap curve for ``pi95`` (B × K Monte-Carlo samples per point)
DRAWS_PER_CURVE = 25
#: σ of log error never falls below this (a curve through every point)
MIN_SD = 1e-9

SEEDS = "seeds"
RESIDUALS = "residuals"


@dataclass(frozen=True, kw_only=True)
class SeedNoise:
    """σ of a new run's log error around the mean curve: log σ = ``intercept`` + ``slope``·log err.

    Attributes:
        source: ``seeds`` (repeated runs at ``n_scales`` scales) or ``residuals`` (the fit's
            residuals: one run per scale).
        dof: degrees of freedom of the estimate (Student-t draws).
        n_scales: scales the estimate pooled (with repeats, for ``seeds``).
    """

    source: str
    intercept: float
    slope: float
    dof: int
    n_scales: int
    out_of_sample: bool = False

    def sd(self, log_err: np.ndarray) -> np.ndarray:
        return np.maximum(np.exp(self.intercept + self.slope * np.asarray(log_err)), MIN_SD)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "log_sd_intercept": self.intercept,
            "log_sd_slope": self.slope,
            "dof": self.dof,
            "n_scales": self.n_scales,
            "out_of_sample": self.out_of_sample,
        }

    def describe(self) -> str:
        if self.source == SEEDS:
            how = f"σ ∝ err^{self.slope:.2f}" if self.slope else f"σ = {np.exp(self.intercept):.3g}"
            return (
                f"seed noise from repeated runs at {self.n_scales} scale(s), pooled by level "
                f"({how} in log error, {self.dof} degrees of freedom)"
            )
        which = (
            "the out-of-sample residuals of its own rolling backtest, larger than the in-sample "
            "ones"
            if self.out_of_sample
            else "the fit residuals"
        )
        return (
            f"one run per scale: seed noise estimated from {which} instead "
            f"(σ = {np.exp(self.intercept):.3g} in log error, {self.dof} degrees of freedom; "
            "it includes any lack of fit); run repeated seeds for a direct estimate"
        )


def _log_err(fit: FitResult) -> np.ndarray:
    return np.log(1.0 - fit.y if fit.direction == "higher" else fit.y)


def _level_slope(levels: np.ndarray, variances: np.ndarray, dofs: np.ndarray) -> float:
    """b in log σ = a + b·log err, from per-scale sample variances of log error; 0 unless the
    data show it (≥ ``MIN_SCALES_SLOPE`` scales spanning ``MIN_LEVEL_SPAN``, |2b| > 2 standard
    errors). log s² of k degrees of freedom has mean log σ² + ψ(k/2) − log(k/2) and variance
    ψ′(k/2), so the fit is weighted least squares with those known variances."""
    if len(levels) < MIN_SCALES_SLOPE or np.ptp(levels) < MIN_LEVEL_SPAN:
        return 0.0
    y = np.log(variances) - (digamma(dofs / 2) - np.log(dofs / 2))
    w = 1.0 / polygamma(1, dofs / 2)
    X = np.column_stack([np.ones_like(levels), levels])
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    coef = cov @ X.T @ (w * y)
    return float(coef[1] / 2.0) if abs(coef[1]) > 2.0 * np.sqrt(cov[1, 1]) else 0.0


def seed_noise(fit: FitResult) -> SeedNoise:
    """The fit's seed-noise model (see the module docstring).

    Raises:
        BioscaleError: the fit has no parameters, or too few points for residual degrees of
            freedom.
    """
    if fit.params is None:
        raise BioscaleError(f"no {fit.law} fit to predict from: {fit.note}")
    spec = fit.spec
    le = _log_err(fit)
    logX = as_log_axes(fit.x, spec.axes)
    _, ids = np.unique(np.round(logX.T, 9), axis=0, return_inverse=True)
    ids = ids.reshape(-1)
    levels, variances, dofs = [], [], []
    for sc in np.unique(ids):
        v = le[ids == sc]
        if len(v) >= 2 and np.var(v) > 0:
            levels.append(float(v.mean()))
            variances.append(float(np.var(v, ddof=1)))
            dofs.append(len(v) - 1)
    if levels:
        lv, var, k = np.array(levels), np.array(variances), np.array(dofs, dtype=float)
        slope = _level_slope(lv, var, k)
        # pooled at the mean level: Σ k·s²/level^2b / Σ k (the classic pooled variance at b = 0)
        pooled = float(np.sum(k * var * np.exp(-2.0 * slope * lv)) / np.sum(k))
        return SeedNoise(
            source=SEEDS,
            intercept=0.5 * float(np.log(max(pooled, MIN_SD**2))),
            slope=slope,
            dof=int(k.sum()),
            n_scales=len(lv),
        )
    theta = spec.to_theta(fit.params)
    resid = le - spec.log_predict(theta, logX)
    dof = len(le) - spec.n_params
    if dof < 1:
        raise BioscaleError(
            f"{fit.law} fit with {len(le)} runs and {spec.n_params} parameters leaves no residual "
            "degrees of freedom to estimate a new run's noise: add scales or repeated seeds"
        )
    sd = float(np.sqrt(np.sum(resid**2) / dof))
    # the points of one run per scale are often one smooth training curve, whose neighbours
    # share their deviation: in-sample residuals then understate a new run's; the residuals of
    # the curve's own rolling backtest (refit without the largest scales) do not
    bt = own_backtest(fit.x, fit.y, fit.law, direction=fit.direction, axis=fit.axis)
    oos = np.asarray(bt["log_residuals"] if bt else [], dtype=float)
    oos = oos[np.isfinite(oos)]
    out_of_sample = len(oos) >= 2 and float(np.sqrt(np.mean(oos**2))) > sd
    if out_of_sample:
        # a fold's held-out residuals share that refit's error: one degree of freedom per fold
        sd, dof = float(np.sqrt(np.mean(oos**2))), len(bt["holdouts"])
    return SeedNoise(
        source=RESIDUALS,
        intercept=float(np.log(max(sd, MIN_SD))),
        slope=0.0,
        dof=dof,
        n_scales=fit.n_scales,
        out_of_sample=out_of_sample,
    )


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One point of ARCHITECTURE's prediction JSON (plus ``law``, ``metric``, ``noise`` and
    ``note``, which readers may ignore); values and intervals in the metric's own terms."""

    group: dict[str, Any]
    at: dict[str, float]
    value: float | None
    ci95: list[float] | None
    pi95: list[float] | None
    law: str
    metric: str = ""
    noise: dict[str, Any] | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "at": self.at,
            "value": self.value,
            "ci95": self.ci95,
            "pi95": self.pi95,
            "law": self.law,
            "metric": self.metric,
            "noise": self.noise,
            "note": self.note,
        }


def bands(
    fit: FitResult,
    x: np.ndarray,
    *,
    level: float = 0.95,
    noise: SeedNoise | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None, tuple[np.ndarray, np.ndarray]]:
    """The mean curve, its confidence band and the new-run prediction band at scales ``x``, all
    in the metric's terms.

    Args:
        fit: a fit with parameters (with ``boot`` for the confidence band).
        x: scales (n,) or (n, K).
        noise: the seed-noise model (default ``seed_noise(fit)``).
        seed: the random seed of the noise draws (results are reproducible).

    Returns:
        (value (n,), (ci lo, ci hi) or None without bootstrap refits, (pi lo, pi hi)).
    """
    noise = noise or seed_noise(fit)
    spec = fit.spec
    logX = as_log_axes(x, spec.axes)
    theta = spec.to_theta(fit.params)
    value = fit.to_metric(np.exp(spec.log_predict(theta, logX)))
    q = (1.0 - level) / 2.0
    ci = fit.band(x, level) if fit.boot is not None else None
    if fit.boot is None:
        lp = spec.log_predict(theta, logX)  # (n,)
        half = stats.t.ppf(1.0 - q, noise.dof) * noise.sd(lp)
        lo, hi = fit.to_metric(np.exp(lp - half)), fit.to_metric(np.exp(lp + half))
    else:
        lp = spec.log_predict(fit.boot, logX)  # (B, n)
        rng = np.random.default_rng(seed)
        draws = stats.t.rvs(noise.dof, size=(len(lp), DRAWS_PER_CURVE, 1), random_state=rng)
        sampled = lp[:, None, :] + draws * noise.sd(lp)[:, None, :]  # (B, K, n)
        metric = fit.to_metric(np.exp(sampled.reshape(-1, lp.shape[-1])))
        lo, hi = np.quantile(metric, [q, 1.0 - q], axis=0)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    return value, ci, (lo, hi)


def predict(fit: FitResult, points: list[dict[str, float]], *, seed: int = 0) -> list[Prediction]:
    """One ``Prediction`` per point (``{axis: value}``, every axis of the fit) for ``fit``.

    Raises:
        BioscaleError: a point lacks one of the fit's axes, names another, or is not positive.
    """
    if fit.params is None:
        return [
            Prediction(
                group=fit.group,
                at=dict(p),
                value=None,
                ci95=None,
                pi95=None,
                law=fit.law,
                metric=fit.metric,
                note=f"no fit: {fit.note}",
            )
            for p in points
        ]
    for p in points:
        missing = [a for a in fit.axis if a not in p]
        extra = sorted(set(p) - set(fit.axis))
        if missing or extra:
            raise BioscaleError(
                f"prediction point {p}: the fit's axes are {','.join(fit.axis)}; give each once, "
                f"e.g. --at {','.join(f'{a}=1e6' for a in fit.axis)}"
            )
        bad = [a for a in fit.axis if not (np.isfinite(p[a]) and p[a] > 0)]
        if bad:
            raise BioscaleError(f"prediction point {p}: {', '.join(bad)} must be a positive number")
    x = np.array([[float(p[a]) for a in fit.axis] for p in points], dtype=float)
    try:
        noise: SeedNoise | None = seed_noise(fit)
    except BioscaleError as err:  # no residual degrees of freedom: no pi95, and say why
        noise = None
        value, ci, pi = fit.predict(x), fit.band(x), None
        notes = [f"no pi95: {err}"]
    else:
        value, ci, pi = bands(fit, x, noise=noise, seed=seed)
        notes = [noise.describe()]
    if ci is None:
        why = f" ({fit.note})" if fit.note else ""
        notes.append(f"no bootstrap refits, so no ci95{why}")
    if fit.plateau and (fit.plateau["plateau"] or fit.plateau["non_monotonic"]):
        notes.append(f"the curve is flagged ({fit.plateau['reason']}): do not trust extrapolation")
    return [
        Prediction(
            group=fit.group,
            at={a: float(v) for a, v in zip(fit.axis, x[i], strict=True)},
            value=float(value[i]),
            ci95=None if ci is None else [float(ci[0][i]), float(ci[1][i])],
            pi95=None if pi is None else [float(pi[0][i]), float(pi[1][i])],
            law=fit.law,
            metric=fit.metric,
            noise=None if noise is None else noise.to_json(),
            note="; ".join(notes),
        )
        for i in range(len(x))
    ]
