"""Forecasts: the scale at which a fitted metric reaches a target, with a bootstrap interval, and a
status that says when it cannot be reached (ARCHITECTURE's forecast JSON).

- ``unreachable``: the target lies beyond the floor's 95% interval, or, for a fit without
  intervals, beyond the floor's point estimate (``reachable: false``);
- ``uncertain``: the floor's interval contains the target, or the fit has no intervals and the
  target is above its floor (``reachable: null``);
- ``beyond_range``: reachable, but more than 100× the largest observed scale;
- ``reachable`` otherwise.

A law without a floor (``pure_power``, ``log_linear``) reports ``floor`` 0 in error (the perfect
score: 1 for a higher-is-better metric) with ``floor_ci95`` [0, 0] when every bootstrap draw falls;
a ``log_linear`` line that rises with x has a floor of +∞ (``floor`` null, ``unreachable``), and
``floor_ci95``'s far bound is null when some draws rise (then ``uncertain``). ``log_linear``
forecasts invert the line in closed form: x = 10^((target − a)/b).

A curve flagged as a plateau or non-monotonic (``trust.detect_plateau``) is not extrapolated: its
floor is the level it stopped at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bioscale.errors import BioscaleError
from bioscale.scaling.bootstrap import percentile_interval
from bioscale.scaling.fit import FitResult

#: forecasts further than this multiple of the largest observed scale are flagged
BEYOND_RANGE = 100.0
#: the inversion searches log x from log(min x) − 10 to log(max x) + 60 on this many points
_GRID = 6000


@dataclass(frozen=True, kw_only=True)
class Forecast:
    group: dict[str, Any]
    target: float
    axis: list[str]
    status: str
    reachable: bool | None
    value: float | None
    ci95: list[float | None] | None
    floor: float | None
    floor_ci95: list[float | None] | None
    metric: str = ""
    fixed: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "target": self.target,
            "axis": self.axis,
            "status": self.status,
            "reachable": self.reachable,
            "value": self.value,
            "ci95": self.ci95,
            "floor": self.floor,
            "floor_ci95": self.floor_ci95,
            "metric": self.metric,
            "fixed": self.fixed,
            "note": self.note,
        }


def invert(fit: FitResult, thetas: np.ndarray, target_err: float, along: int, logx_at: np.ndarray):
    """x along axis ``along`` where the law's error first falls to ``target_err``, per θ.

    Args:
        thetas: (B, P) in the law's θ space.
        target_err: the target in error terms.
        along: index of the axis that grows.
        logx_at: log of the point's other axes (K,) (the ``along`` entry is ignored).

    Returns:
        (B,) scales; +∞ where the error never reaches the target.
    """
    spec = fit.spec
    if spec.solve is not None:  # a closed-form inverse (log_linear)
        return spec.solve(np.atleast_2d(thetas), target_err, along, np.asarray(logx_at))
    lx = np.log(fit.x[:, along])
    grid = np.linspace(lx.min() - 10.0, lx.max() + 60.0, _GRID)  # (G,)
    logX = np.repeat(np.asarray(logx_at, dtype=float)[:, None], _GRID, axis=1)
    logX[along] = grid
    g = spec.log_predict(thetas, logX) - np.log(target_err)  # (B, G), decreasing where monotone
    below = g <= 0
    first = np.argmax(below, axis=1)
    out = np.full(len(thetas), np.inf)
    for b in np.flatnonzero(below.any(axis=1)):
        i = first[b]
        if i == 0:
            out[b] = np.exp(grid[0])
            continue
        g0, g1 = g[b, i - 1], g[b, i]
        out[b] = np.exp(grid[i - 1] + (grid[i] - grid[i - 1]) * g0 / (g0 - g1))
    return out


def _to_metric_interval(fit: FitResult, lo: float | None, hi: float | None) -> list[float | None]:
    if fit.direction != "higher":
        return [lo, hi]
    return [None if hi is None else 1.0 - hi, None if lo is None else 1.0 - lo]


def forecast(
    fit: FitResult,
    target: float,
    *,
    along: str | None = None,
    at: dict[str, float] | None = None,
) -> Forecast:
    """The scale along ``along`` at which ``fit`` reaches ``target`` (in the metric's terms).

    Args:
        fit: a fit (with ``boot`` for intervals, and ``plateau`` from ``trust.with_trust``).
        target: the metric value to reach (an accuracy for ``direction: higher``).
        along: the axis that grows (default the fit's last axis, e.g. D for chinchilla).
        at: the other axes' values for a multi-axis law (default their largest observed value).

    Raises:
        BioscaleError: ``along`` or an ``at`` key is not an axis of the fit, or ``target`` is not
            finite or is already met by every observed point (nothing to forecast).
    """
    along = along or fit.axis[-1]
    if along not in fit.axis:
        raise BioscaleError(
            f"cannot forecast along {along!r}: the fit's axes are {', '.join(fit.axis)}; "
            f"pass one of them (e.g. --along {fit.axis[-1]})"
        )
    unknown = sorted(set(at or {}) - set(fit.axis))
    if unknown:
        raise BioscaleError(
            f"--at {', '.join(unknown)}: not an axis of the fit (axes: {', '.join(fit.axis)})"
        )
    _check_target(fit, target)
    j = fit.axis.index(along)
    fixed = {
        a: float((at or {}).get(a, fit.x[:, i].max())) for i, a in enumerate(fit.axis) if i != j
    }
    base = {"group": fit.group, "target": target, "axis": [along], "metric": fit.metric}
    base["fixed"] = fixed
    t_err = 1.0 - target if fit.direction == "higher" else target
    if fit.params is None:
        return Forecast(
            status="uncertain",
            reachable=None,
            value=None,
            ci95=None,
            floor=None,
            floor_ci95=None,
            note=f"no fit: {fit.note}",
            **base,
        )
    if fit.plateau and (fit.plateau["plateau"] or fit.plateau["non_monotonic"]):
        return _plateau_forecast(fit, t_err, base)
    spec = fit.spec
    logx_at = np.array([np.log(fixed.get(a, 1.0)) for a in fit.axis])
    theta = spec.to_theta(fit.params)
    floor_err = float(np.exp(spec.log_floor(theta, j, logx_at)))
    value = float(invert(fit, theta[None, :], t_err, j, logx_at)[0]) if t_err > 0 else np.inf
    value_or_none = value if np.isfinite(value) else None
    floor = 1.0 - floor_err if fit.direction == "higher" else floor_err
    x_max = float(fit.x[:, j].max())
    if fit.boot is None:
        if t_err <= 0 or t_err < floor_err:
            return Forecast(
                status="unreachable",
                reachable=False,
                value=None,
                ci95=None,
                floor=floor,
                floor_ci95=None,
                note=f"the target lies beyond the fitted floor (point estimate only: {fit.note})",
                **base,
            )
        return Forecast(
            status="uncertain",
            reachable=None,
            value=value_or_none,
            ci95=None,
            floor=floor,
            floor_ci95=None,
            note=f"point estimate only ({fit.note})",
            **base,
        )
    floors = np.exp(spec.log_floor(fit.boot, j, logx_at))  # (B,)
    f_lo, f_hi = percentile_interval(floors)
    floor_ci = _to_metric_interval(fit, f_lo, f_hi)
    # a lower bound of +∞: in ≥ 97.5% of the draws the error never falls (a rising log_linear)
    if t_err <= 0 or f_lo is None or t_err < f_lo:
        return Forecast(
            status="unreachable",
            reachable=False,
            value=None,
            ci95=None,
            floor=floor,
            floor_ci95=floor_ci,
            note="the target lies beyond the floor's 95% interval"
            if f_lo is not None
            else f"the fitted error does not fall as {along} grows",
            **base,
        )
    values = invert(fit, fit.boot, t_err, j, logx_at)
    ci = percentile_interval(values)
    if f_hi is None or t_err <= f_hi:
        return Forecast(
            status="uncertain",
            reachable=None,
            value=value_or_none,
            ci95=ci,
            floor=floor,
            floor_ci95=floor_ci,
            note="the floor's 95% interval contains the target",
            **base,
        )
    beyond = value_or_none is not None and value > BEYOND_RANGE * x_max
    return Forecast(
        status="beyond_range" if beyond else "reachable",
        reachable=True,
        value=value_or_none,
        ci95=ci,
        floor=floor,
        floor_ci95=floor_ci,
        note=(
            f"more than {BEYOND_RANGE:g}× the largest observed {along} ({x_max:,.4g}): an "
            "extrapolation far outside the data"
            if beyond
            else ""
        ),
        **base,
    )


def _check_target(fit: FitResult, target: float) -> None:
    """A forecast needs a finite target that some observed point has not met yet."""
    if not np.isfinite(target):
        raise BioscaleError(f"the forecast target must be a finite number, got {target!r}")
    if not fit.points:
        return
    err = 1.0 - fit.y if fit.direction == "higher" else fit.y
    t_err = 1.0 - target if fit.direction == "higher" else target
    if t_err >= float(np.max(err)):
        worst = float(np.min(fit.y) if fit.direction == "higher" else np.max(fit.y))
        better = "above" if fit.direction == "higher" else "below"
        where = ", ".join(f"{k}={v}" for k, v in fit.group.items()) or "all rows"
        raise BioscaleError(
            f"target {target:g} for {fit.metric or 'the metric'} ({where}) is already met by every "
            f"observed point (the worst is {worst:.4g}): nothing to forecast; give a target "
            f"{better} {worst:.4g}"
        )


def _plateau_forecast(fit: FitResult, t_err: float, base: dict[str, Any]) -> Forecast:
    """Floor = the level the curve stopped at; reached only if already reached."""
    pl = fit.plateau
    lo, hi = pl["level_ci95"]
    lo_err, hi_err = (1.0 - hi, 1.0 - lo) if fit.direction == "higher" else (lo, hi)
    common = {"floor": pl["level"], "floor_ci95": [lo, hi], **base}
    why = f"flagged, not extrapolated: {pl['reason']}"
    if t_err < lo_err:
        return Forecast(
            status="unreachable", reachable=False, value=None, ci95=None, note=why, **common
        )
    if t_err <= hi_err:
        return Forecast(
            status="uncertain", reachable=None, value=None, ci95=None, note=why, **common
        )
    # already reached: the smallest observed scale whose mean error is at or below the target
    x, err = fit.x[:, 0], (1.0 - fit.y if fit.direction == "higher" else fit.y)
    reached = [xv for xv in np.unique(x) if err[x == xv].mean() <= t_err]
    value = float(min(reached)) if reached else None
    return Forecast(
        status="reachable",
        reachable=True,
        value=value,
        ci95=None,
        note=f"already reached at an observed scale; {why}",
        **common,
    )
