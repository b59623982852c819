"""Robust scaling-law fits: Huber loss (δ = 1e-3) on log residuals, minimised from a grid of
starts, with bootstrap 95% intervals.

As in Hoffmann et al. 2022 (approach 3) and the Epoch replication (Besiroglu et al. 2024, which
sums rather than averages the Huber terms; so does bioscale). The search is a vectorised coarse
grid (every start's loss in one array operation), a batched Levenberg–Marquardt refinement of the
``N_REFINE`` best starts (``optim``), L-BFGS-B with analytic gradients to finish the best distinct
optima, then bootstrap refits (``bootstrap``) that each start from θ̂, the other optima and the
best grid starts.

A law linear in its parameters (``Law.design``: ``log_linear``) skips the search: the fit and
every bootstrap refit are closed-form weighted least squares (``optim.linear_lstsq``), and its
``loss`` is the same summed Huber loss of log residuals, evaluated at that θ, so losses compare
across laws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from bioscale.errors import BioscaleError
from bioscale.scaling.bootstrap import (
    SCHEMES,
    bootstrap_thetas,
    percentile_interval,
)
from bioscale.scaling.laws import LAWS, Law, as_log_axes
from bioscale.scaling.noise import scale_ids
from bioscale.scaling.optim import (
    HUBER_DELTA,
    distinct,
    huber,
    huber_grad,
    linear_lstsq,
    lm_batch,
    losses,
    polish,
)

__all__ = ["HUBER_DELTA", "FitResult", "Search", "fit_law", "huber", "huber_grad", "search"]

MIN_SCALES = 4
#: intervals and backtests need one scale more than a point fit
MIN_SCALES_INTERVALS = 5
N_BOOT = 200
#: grid starts (the best by coarse loss) refined by the batched Levenberg–Marquardt search
N_REFINE = 64
#: distinct optima of that search finished with L-BFGS-B
N_POLISH = 3
#: each bootstrap refit starts from θ̂ and from up to this many other distinct optima that the
#: refined grid starts reached, so a replicate can leave θ̂'s basin
N_BOOT_OPTIMA = 4


@dataclass(frozen=True, kw_only=True)
class FitResult:
    """One fitted curve, serialised exactly as ARCHITECTURE's fit JSON (plus ``metric``, ``note``,
    ``plateau`` and ``bootstrap``, which readers may ignore).

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
    bootstrap: dict[str, Any] | None = None
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
            "bootstrap": self.bootstrap,
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


@dataclass(frozen=True, kw_only=True)
class Search:
    """A multi-start search: the optimum and the distinct optima the refined starts reached
    (M, P), best first (``optima[0]`` is ``theta``)."""

    theta: np.ndarray
    loss: float
    optima: np.ndarray


def search(
    spec: Law, logX: np.ndarray, logy: np.ndarray, starts: np.ndarray, n_refine: int = N_REFINE
) -> Search:
    """Best θ from a grid of starts: the coarse loss of every start in one vectorised pass, the
    ``n_refine`` best refined together by Levenberg–Marquardt (``optim.lm_batch``), and the best
    ``N_POLISH`` distinct optima finished with L-BFGS-B."""
    starts = np.atleast_2d(np.asarray(starts, dtype=float))
    coarse = losses(spec, logX, logy, starts)
    order = np.argsort(coarse, kind="stable")
    order = order[np.isfinite(coarse[order])][:n_refine]
    if not len(order):
        raise BioscaleError(f"{spec.name}: no start gives a finite loss on these points")
    refined, rl = lm_batch(spec, logX, logy, starts[order])
    idx = distinct(refined, rl)
    optima, opt_loss = refined[idx].copy(), rl[idx].copy()
    for i in range(min(N_POLISH, len(idx))):
        theta, loss = polish(spec, logX, logy, optima[i])
        if loss <= opt_loss[i]:
            optima[i], opt_loss[i] = theta, loss
    keep = distinct(optima, opt_loss)
    optima, opt_loss = optima[keep], opt_loss[keep]
    return Search(theta=optima[0], loss=float(opt_loss[0]), optima=optima)


def check_law_axes(law: str, axes: str | list[str] | tuple[str, ...]) -> Law:
    """The law, if it takes as many axes as given; else a ``BioscaleError`` naming the fix."""
    spec = LAWS.get(law)
    axes = [axes] if isinstance(axes, str) else list(axes)
    if len(axes) != spec.axes:
        if spec.axes == 1:
            fix = f"give one axis (e.g. --axis {axes[-1]}) or a two-axis law (chinchilla)"
        else:
            fix = "give --axis N,D (model size, then data)"
        raise BioscaleError(
            f"law {law!r} takes {spec.axes} axis(es), got {len(axes)} ({','.join(axes)}): {fix}"
        )
    return spec


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
    bootstrap_scheme: str = "seeds",
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
            resampled as seeds either way).
        n_boot: bootstrap replicates (0: point fit only).
        boot_seed: the bootstrap's random seed.
        bootstrap_scheme: ``seeds`` (each scale's mean plus pooled seed deviations, residuals
            where a scale has one run) or ``cases`` (resample points); see ``scaling.bootstrap``.

    Returns:
        The fit. With fewer than ``max(4, P)`` distinct scales ``params`` is None; with fewer than
        one more than that, ``ci95`` values are None; ``note`` says why, and which points were
        dropped.
    """
    from bioscale.scaling import constrained

    if law == constrained.LAW_NAME:  # R* needs trials that differ in epochs
        xs = np.asarray(x, dtype=float)
        if xs.ndim == 2 and xs.shape[1] == 3 and len(xs):
            constrained.check_epochs_vary(xs, group or {})
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
            bootstrap_scheme=bootstrap_scheme,
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
    bootstrap_scheme: str,
) -> FitResult:
    spec = check_law_axes(law, axis)
    if bootstrap_scheme not in SCHEMES:
        raise BioscaleError(
            f"unknown bootstrap scheme {bootstrap_scheme!r}; known: {', '.join(SCHEMES)}"
        )
    if n_boot < 0:
        raise BioscaleError(f"bootstrap replicates must be ≥ 0 (0: no intervals), got {n_boot}")
    axes = [axis] if isinstance(axis, str) else list(axis)
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    if x.shape[1] != spec.axes:
        raise BioscaleError(
            f"law {law!r} takes {spec.axes} axis(es); the points have {x.shape[1]} column(s)"
        )
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
    design = spec.design(logX) if spec.design is not None else None
    if design is not None:
        theta = linear_lstsq(design, err)[0]
        loss = float(losses(spec, logX, logy, theta[None, :])[0])
        starts = theta[None, :]
    else:
        found = search(spec, logX, logy, spec.init_grid(logX, logy))
        theta, loss = found.theta, found.loss
        starts = found.optima[: 1 + N_BOOT_OPTIMA]
    params = spec.to_params(theta)
    fitted = spec.log_predict(theta, logX)
    boot = None
    if n_scales < need + 1:
        notes.insert(0, f"95% intervals need at least {need + 1} distinct scales, has {n_scales}")
    elif n_boot > 0 and design is not None and np.any(design @ theta <= 0):
        notes.insert(0, "no 95% intervals: the fitted error is at or below 0 at an observed scale")
    elif n_boot > 0:

        def refit(Y: np.ndarray, W: np.ndarray | None) -> np.ndarray:
            if design is not None:
                return linear_lstsq(design, np.exp(Y), W)
            B, S = len(Y), len(starts)
            thetas, ls = lm_batch(
                spec,
                logX,
                np.repeat(Y, S, axis=0),
                np.tile(starts, (B, 1)),
                None if W is None else np.repeat(W, S, axis=0),
            )
            best = np.argmin(ls.reshape(B, S), axis=1)
            return thetas.reshape(B, S, -1)[np.arange(B), best]

        boot = bootstrap_thetas(
            refit,
            theta,
            logy,
            fitted,
            scale_ids(logX),
            n_boot=n_boot,
            seed=boot_seed,
            scheme=bootstrap_scheme,
            min_scales=need,
        )
        values = spec.params_array(boot)
        base["ci95"] = {k: percentile_interval(values[:, i]) for i, k in enumerate(params)}
        base["bootstrap"] = {
            "scheme": bootstrap_scheme,
            "replicates": n_boot,
            "starts": len(starts),
        }
    return FitResult(params=params, loss=loss, note="; ".join(notes), boot=boot, **base)
