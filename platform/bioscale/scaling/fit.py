"""Robust scaling-law fits: Huber loss (δ = 1e-3) on log residuals, L-BFGS from a grid of starts.

As in Hoffmann et al. 2022 (approach 3) and the Epoch replication (Besiroglu et al. 2024, which
sums rather than averages the Huber terms; so does bioscale). Intervals, backtests and forecasts
grow here (ARCHITECTURE's fit JSON already has their fields, null until computed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize

from bioscale.scaling.laws import LAWS, Law

HUBER_DELTA = 1e-3
MIN_SCALES = 4


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


@dataclass(frozen=True, kw_only=True)
class FitResult:
    """One fitted curve, serialised exactly as ARCHITECTURE's fit JSON."""

    group: dict[str, Any]
    law: str
    axis: list[str]
    direction: Literal["lower", "higher"]
    metric: str
    params: dict[str, float] | None
    ci95: dict[str, list[float] | None]
    n_points: int
    n_scales: int
    loss: float | None
    backtest: dict[str, Any] | None = None
    note: str = ""
    points: list[tuple[float, float]] = field(default_factory=list)

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
            "note": self.note,
        }

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The fitted curve in the metric's own terms (accuracy for ``direction: higher``)."""
        law = LAWS.get(self.law)
        theta = _theta_from_params(law, self.params)
        err = law.predict(theta, x)
        return 1.0 - err if self.direction == "higher" else err


def _theta_from_params(law: Law, params: dict[str, float]) -> np.ndarray:
    out = []
    for name in law.theta_names:
        out.append(np.log(params[name[4:]]) if name.startswith("log_") else params[name])
    return np.array(out)


def fit_law(
    x: np.ndarray,
    y: np.ndarray,
    *,
    law: str = "power",
    direction: str = "lower",
    metric: str = "",
    axis: str = "D",
    group: dict[str, Any] | None = None,
) -> FitResult:
    """Fit ``law`` to points ``(x, y)``.

    Args:
        x: scales (samples, parameters, FLOPs), > 0.
        y: metric values; lower-is-better unless ``direction="higher"``, in which case the law is
            fitted to the error 1 − y (accuracy bounded by 1).
        law: a ``LAWS`` name.
        direction: ``lower`` or ``higher``.
        metric: the metric's name, for the record.
        axis: the axis name (``D``, ``N``), for the record.
        group: the group the points belong to (``{"objective": "ibp"}``).

    Returns:
        The fit; with fewer than 4 distinct scales, ``params`` is None and ``note`` says why.
    """
    spec = LAWS.get(law)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    err = 1.0 - y if direction == "higher" else y
    ok = np.isfinite(x) & np.isfinite(err) & (x > 0) & (err > 0)
    x, err = x[ok], err[ok]
    n_scales = len(np.unique(x))
    base = {
        "group": group or {},
        "law": law,
        "axis": [axis],
        "direction": direction,
        "metric": metric,
        "n_points": len(x),
        "n_scales": n_scales,
        "points": list(
            zip(x.tolist(), (1.0 - err if direction == "higher" else err).tolist(), strict=True)
        ),
        "ci95": {k: None for k in spec.to_params(np.zeros(len(spec.theta_names)))},
    }
    if n_scales < MIN_SCALES:
        return FitResult(
            params=None,
            loss=None,
            note=f"needs at least {MIN_SCALES} distinct scales, has {n_scales}",
            **base,
        )
    logx, logy = np.log(x), np.log(err)

    def objective(theta: np.ndarray) -> float:
        return float(np.sum(huber(spec.log_predict(theta, logx) - logy)))

    best = None
    for start in spec.init_grid():
        res = minimize(objective, start, method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    return FitResult(
        params=spec.to_params(best.x),
        loss=float(best.fun),
        note="95% intervals need the bootstrap (not computed)",
        **base,
    )
