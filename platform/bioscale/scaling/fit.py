"""Robust scaling-law fits: Huber loss (δ = 1e-3) on log residuals, L-BFGS from a grid of starts,
bootstrap 95% intervals.

As in Hoffmann et al. 2022 (approach 3) and the Epoch replication (Besiroglu et al. 2024, which
sums rather than averages the Huber terms; so does bioscale). The search is a vectorised coarse
grid (every start's loss in one array operation), L-BFGS-B with analytic gradients from the best
few starts, then bootstrap refits warm-started at the optimum (``bootstrap``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from bioscale.scaling.bootstrap import bootstrap_thetas, percentile_interval, scale_ids
from bioscale.scaling.laws import LAWS, Law, as_log_axes

HUBER_DELTA = 1e-3
MIN_SCALES = 4
#: intervals and backtests need one scale more than a point fit
MIN_SCALES_INTERVALS = 5
N_BOOT = 200
N_REFINE = 4
#: tight tolerances: the Huber loss of a good fit is ~1e-6, and a refit that stops at scipy's
#: default relative tolerance leaves bootstrap replicates at their warm start (too-narrow CIs)
LBFGS_OPTIONS = {"ftol": 1e-14, "gtol": 1e-10, "maxiter": 2000}


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    return np.clip(r, -delta, delta)


@dataclass(frozen=True, kw_only=True)
class FitResult:
    """One fitted curve, serialised exactly as ARCHITECTURE's fit JSON (plus ``metric``, ``note``
    and ``plateau``, which readers may ignore).

    ``points`` are (x_1, …, x_K, y) with y in the metric's own terms; ``boot`` holds the bootstrap
    refits (B, P) in the law's θ space (not serialised), which forecasts and bands reuse.
    """

    group: dict[str, Any]
    law: str
    axis: list[str]
    direction: Literal["lower", "higher"]
    metric: str
    params: dict[str, float] | None
    ci95: dict[str, list[float | None] | None]
    n_points: int
    n_scales: int
    loss: float | None
    backtest: dict[str, Any] | None = None
    plateau: dict[str, Any] | None = None
    note: str = ""
    points: list[tuple[float, ...]] = field(default_factory=list)
    seeds: list[Any] | None = None
    boot: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "law": self.law,
            "axis": self.axis,
            "direction": self.direction,
            "metric": self.metric,
            "params": self.params,
            "ci95": self.ci95,
            "n_points": self.n_points,
            "n_scales": self.n_scales,
            "loss": self.loss,
            "backtest": self.backtest,
            "plateau": self.plateau,
            "note": self.note,
        }

    @property
    def spec(self) -> Law:
        return LAWS.get(self.law)

    @property
    def x(self) -> np.ndarray:
        """Observed scales (n, K)."""
        return np.array([p[:-1] for p in self.points], dtype=float).reshape(-1, len(self.axis))

    @property
    def y(self) -> np.ndarray:
        """Observed metric values (n,)."""
        return np.array([p[-1] for p in self.points], dtype=float)

    def to_metric(self, err: np.ndarray) -> np.ndarray:
        return 1.0 - err if self.direction == "higher" else err

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The fitted curve in the metric's own terms (accuracy for ``direction: higher``)."""
        spec = self.spec
        return self.to_metric(spec.predict(spec.to_theta(self.params), x))

    def band(self, x: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise bootstrap interval of the curve at ``x`` in the metric's terms, or None."""
        if self.boot is None:
            return None
        spec = self.spec
        err = np.exp(spec.log_predict(self.boot, as_log_axes(x, spec.axes)))  # (B, n)
        q = (1.0 - level) / 2.0
        lo, hi = np.quantile(self.to_metric(err), [q, 1.0 - q], axis=0)
        return lo, hi


def minimise(
    spec: Law, logX: np.ndarray, logy: np.ndarray, starts: np.ndarray, n_refine: int = N_REFINE
) -> tuple[np.ndarray, float]:
    """Best θ from a coarse grid: the loss of every start in one vectorised pass, then L-BFGS-B
    (analytic gradient) from the ``n_refine`` best. Returns (θ (P,), summed Huber loss)."""
    starts = np.atleast_2d(starts)
    if len(starts) > n_refine:
        coarse = huber(spec.log_predict(starts, logX) - logy).sum(axis=-1)  # (S,)
        coarse = np.where(np.isfinite(coarse), coarse, np.inf)
        starts = starts[np.argsort(coarse)[:n_refine]]
    bounds = spec.bounds(logX)
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        lp, J = spec.jac(theta, logX)
        r = lp - logy
        return float(huber(r).sum()), J @ huber_grad(r)

    best_theta, best_loss = starts[0], np.inf
    for start in starts:
        res = minimize(
            loss_grad,
            np.clip(start, lo, hi),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options=LBFGS_OPTIONS,
        )
        if res.fun < best_loss:
            best_theta, best_loss = res.x, float(res.fun)
    return np.asarray(best_theta, dtype=float), best_loss


def clean_points(
    x: np.ndarray, y: np.ndarray, direction: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Keep points a log-space fit can use; say what was dropped and why.

    Returns (x (n, K), error (n,), kept mask over the input, reasons).
    """
    err = 1.0 - y if direction == "higher" else y
    reasons = []
    bad_x = ~np.all(np.isfinite(x) & (x > 0), axis=1)
    bad_y = ~np.isfinite(err)
    bad_sign = np.isfinite(err) & (err <= 0) & ~bad_x
    if bad_x.any():
        reasons.append(f"{int(bad_x.sum())} with a missing, non-finite or non-positive scale")
    if (bad_y & ~bad_x).any():
        reasons.append(f"{int((bad_y & ~bad_x).sum())} with a missing or non-finite metric")
    if bad_sign.any():
        what = "1 − metric ≤ 0 (a perfect score)" if direction == "higher" else "metric ≤ 0"
        reasons.append(f"{int(bad_sign.sum())} with {what}, which a log-space law cannot fit")
    keep = ~(bad_x | bad_y | bad_sign)
    return x[keep], err[keep], keep, reasons


def fit_law(
    x: np.ndarray,
    y: np.ndarray,
    *,
    law: str = "power",
    direction: str = "lower",
    metric: str = "",
    axis: str | list[str] = "D",
    group: dict[str, Any] | None = None,
    seeds: list[Any] | None = None,
    n_boot: int = N_BOOT,
    boot_seed: int = 0,
) -> FitResult:
    """Fit ``law`` to points ``(x, y)``, with bootstrap 95% intervals.

    Args:
        x: scales (samples, parameters, FLOPs), > 0: (n,) or (n, K) for a K-axis law.
        y: metric values; lower-is-better unless ``direction="higher"``, in which case the law is
            fitted to the error 1 − y (accuracy bounded by 1) and reported in the metric's terms.
        law: a ``LAWS`` name.
        direction: ``lower`` or ``higher``.
        metric: the metric's name, for the record.
        axis: the axis name(s) (``D``, ``N``, ``["N", "D"]``), for the record.
        group: the group the points belong to (``{"objective": "ibp"}``).
        seeds: each point's training seed (for the record; scales with several points are
            resampled within the scale either way).
        n_boot: bootstrap replicates (0: point fit only).
        boot_seed: the bootstrap's random seed.

    Returns:
        The fit. With fewer than ``max(4, P)`` distinct scales ``params`` is None; with fewer than
        one more than that, ``ci95`` values are None; ``note`` says why, and which points were
        dropped.
    """
    # tiny BLAS calls inside L-BFGS-B are ~10× slower with a multi-threaded OpenBLAS
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_law(
            x,
            y,
            law=law,
            direction=direction,
            metric=metric,
            axis=axis,
            group=group,
            seeds=seeds,
            n_boot=n_boot,
            boot_seed=boot_seed,
        )


def _fit_law(
    x: np.ndarray,
    y: np.ndarray,
    *,
    law: str,
    direction: str,
    metric: str,
    axis: str | list[str],
    group: dict[str, Any] | None,
    seeds: list[Any] | None,
    n_boot: int,
    boot_seed: int,
) -> FitResult:
    spec = LAWS.get(law)
    axes = [axis] if isinstance(axis, str) else list(axis)
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    y = np.asarray(y, dtype=float)
    x, err, keep, dropped = clean_points(x, y, direction)
    kept_seeds = [s for s, k in zip(seeds, keep, strict=True) if k] if seeds is not None else None
    logX = np.log(x).T  # (K, n)
    n_scales = len(np.unique(np.round(logX.T, 9), axis=0)) if len(err) else 0
    notes = [f"dropped {'; '.join(dropped)}"] if dropped else []
    ys = 1.0 - err if direction == "higher" else err
    base: dict[str, Any] = {
        "group": group or {},
        "law": law,
        "axis": axes,
        "direction": direction,
        "metric": metric,
        "n_points": len(err),
        "n_scales": n_scales,
        "points": [(*xi, yi) for xi, yi in zip(x.tolist(), ys.tolist(), strict=True)],
        "seeds": kept_seeds,
        "ci95": {k: None for k in spec.param_names},
    }
    need = max(MIN_SCALES, spec.min_scales)
    if n_scales < need:
        notes.insert(0, f"needs at least {need} distinct scales, has {n_scales}")
        return FitResult(params=None, loss=None, note="; ".join(notes), **base)
    logy = np.log(err)
    theta, loss = minimise(spec, logX, logy, spec.init_grid(logX, logy))
    params = spec.to_params(theta)
    boot = None
    if n_scales < need + 1:
        notes.insert(0, f"95% intervals need at least {need + 1} distinct scales, has {n_scales}")
    elif n_boot > 0:
        fitted = spec.log_predict(theta, logX)
        boot = bootstrap_thetas(
            lambda yb, start: minimise(spec, logX, yb, start[None, :])[0],
            theta,
            logy,
            fitted,
            scale_ids(logX),
            n_boot=n_boot,
            seed=boot_seed,
        )
        values = spec.params_array(boot)
        base["ci95"] = {k: percentile_interval(values[:, i]) for i, k in enumerate(params)}
    return FitResult(params=params, loss=loss, note="; ".join(notes), boot=boot, **base)
