"""A data-constrained joint law (Muennighoff et al. 2023, "Scaling Data-Constrained Language
Models", arXiv 2305.16264, eq. 5): repeated epochs are worth less than new data.

U unique samples seen R = epochs − 1 extra times count as the effective data

    D' = U + U·R*·(1 − exp(−R/R*))                                        (samples)

inside the joint law err = E + A/N^α + B/D'^β. R* is the number of repeats after which a further
repeat is worth 1/e of a new sample; D' → U·(1 + R*) as R grows, so repetition alone has a floor.
Muennighoff et al. fit R* ≈ 15 for language models; a Cell Painting study measures its own from
trials that differ in epochs at fixed diets. Only the data term decays (their R*_N for excess
parameters is not modelled).

The law is registered as ``data_constrained`` with three axes, N (backbone parameters), D (unique
samples, ``D_samples``) and ``epochs`` (passes over them, ≥ 1). ``repeat_vs_new`` turns a fit into
the two answers a study asks for, at the same FLOPs: "train longer on what we have" (more
epochs) against "screen more compounds" (more unique samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bioscale.errors import BioscaleError
from bioscale.scaling.bootstrap import percentile_interval
from bioscale.scaling.laws import (
    EXPONENT_BOUND,
    LAWS,
    LOG_BOUND,
    Law,
    _chin_grid,
    _cols,
    _lse,
    _lse_jac,
    _stack,
)

#: the law's registry name and axes (N parameters, D unique samples, epochs ≥ 1)
LAW_NAME = "data_constrained"
AXES = ("N", "D", "epochs")
#: bounds on log R*: from a repeat worth almost nothing (0.05) to one worth a new sample (10⁴)
LOG_RSTAR_BOUND = (math.log(0.05), math.log(1e4))
#: R* starts of the fit's grid (repeats)
RSTAR_STARTS = (1.0, 5.0, 15.0, 60.0)
#: the column a table's epochs axis is read from, and the derived one it prefers
EPOCHS_SEEN = "epochs_seen"


def effective_data(unique: np.ndarray, repeats: np.ndarray, r_star: float) -> np.ndarray:
    """Effective data D' (samples) of ``unique`` samples seen ``repeats`` extra times
    (Muennighoff et al. 2023, eq. 5): U + U·R*·(1 − exp(−R/R*))."""
    unique = np.asarray(unique, dtype=float)
    return unique + unique * r_star * -np.expm1(-np.asarray(repeats, dtype=float) / r_star)


def _log_gain(log_rstar: np.ndarray, log_epochs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(D'/U) = log(1 + R*(1 − e^(−R/R*))) with R = epochs − 1, and its derivative in log R*;
    shapes broadcast (..., 1) against (n,)."""
    s = np.exp(log_rstar)
    r = np.maximum(np.exp(log_epochs) - 1.0, 0.0)
    q = r / s
    one_minus = -np.expm1(-q)  # 1 − e^(−R/R*)
    g = 1.0 + s * one_minus
    dg_dlogs = s * one_minus - r * np.exp(-q)  # s·∂g/∂s
    return np.log(g), dg_dlogs / g


def _dc_terms(theta: np.ndarray, logX: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    e, a, alpha, b, beta, ls = _cols(theta)
    LN, LU, LE = logX
    lg, dlg = _log_gain(ls, LE)
    LD = LU + lg  # log D'
    return [e + 0.0 * LN, a - alpha * LN, b - beta * LD], np.stack(
        np.broadcast_arrays(LN, LD, dlg, beta)
    )


def _dc_log_predict(theta: np.ndarray, logX: np.ndarray) -> np.ndarray:
    terms, _ = _dc_terms(theta, logX)
    return _lse(_stack(*terms))


def _dc_jac(theta: np.ndarray, logX: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    terms, (LN, LD, dlg, beta) = _dc_terms(theta, logX)
    lse, w = _lse_jac(_stack(*terms))
    return lse, _stack(w[0], w[1], -w[1] * LN, w[2], -w[2] * LD, -w[2] * beta * dlg, axis=-2)


def _dc_grid(logX: np.ndarray, logy: np.ndarray) -> np.ndarray:
    """Chinchilla's grid on the samples seen, U·epochs, times the ``RSTAR_STARTS`` (8,000)."""
    seen = np.stack([logX[0], logX[1] + logX[2]])
    base = _chin_grid(seen, logy)
    rs = np.log(np.asarray(RSTAR_STARTS))
    return np.concatenate([np.column_stack([base, np.full(len(base), r)]) for r in rs], axis=0)


def _dc_log_floor(theta: np.ndarray, along: int, logx: np.ndarray) -> np.ndarray:
    """The error left as one axis grows: along N, E + B/D'^β; along D, E + A/N^α; along epochs,
    E + A/N^α + B/(U(1 + R*))^β (repetition saturates)."""
    t = np.asarray(theta, dtype=float)
    e, a, alpha, b, beta, ls = (t[..., i] for i in range(6))
    if along == 1:
        return np.logaddexp(e, a - alpha * logx[0])
    if along == 0:
        lg, _ = _log_gain(ls, np.asarray(logx[2], dtype=float))
        return np.logaddexp(e, b - beta * (logx[1] + lg))
    cap = logx[1] + np.log1p(np.exp(ls))  # log U(1 + R*)
    return _lse(np.stack(np.broadcast_arrays(e, a - alpha * logx[0], b - beta * cap)))


def _dc_describe(
    params: dict[str, float], ci95: dict[str, list[float | None] | None], axis: str
) -> str:
    ci = ci95.get("R_star")
    shown = (
        " (95% CI [" + ", ".join("—" if v is None else f"{v:.3g}" for v in ci) + "])" if ci else ""
    )
    return (
        f"error falls as D'^−{params['beta']:.2f} in effective data and N^−{params['alpha']:.2f}; "
        f"a repeated epoch is worth {_repeat_worth(params['R_star']):.0%} of a new one at the "
        f"first repeat, 1/e of it after R* = {params['R_star']:.3g} repeats{shown}"
    )


def _repeat_worth(r_star: float) -> float:
    """What the first repeat adds, as a fraction of one epoch of new data: R*(1 − e^(−1/R*))."""
    return float(r_star * -np.expm1(-1.0 / r_star))


LAWS.register(
    LAW_NAME,
    Law(
        name=LAW_NAME,
        formula="err = E + A·N^(−α) + B·D'^(−β), D' = U + U·R*·(1 − exp(−(epochs − 1)/R*))",
        axes=3,
        param_names=("E", "A", "alpha", "B", "beta", "R_star"),
        log_params=frozenset({"E", "A", "B", "R_star"}),
        log_predict=_dc_log_predict,
        jac=_dc_jac,
        init_grid=_dc_grid,
        bounds=lambda logX: [
            LOG_BOUND,
            LOG_BOUND,
            EXPONENT_BOUND,
            LOG_BOUND,
            EXPONENT_BOUND,
            LOG_RSTAR_BOUND,
        ],
        floor_name="E",
        log_floor=_dc_log_floor,
        exponent_names=(("alpha",), ("beta",), ("beta",)),
        exponent_symbols=("α", "β", "β"),
        describe=_dc_describe,
    ),
)


def with_epochs_seen(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``epochs_seen``: passes over the diet actually made, ``train/samples_seen`` /
    ``D_samples`` where a trial logged them (early stopping ends a trial before its ``epochs``
    budget), else the ``epochs`` param; rows with neither keep no value."""
    out = []
    for row in rows:
        row = dict(row)
        seen, unique = _num(row.get("train/samples_seen")), _num(row.get("D_samples"))
        if seen > 0 and unique > 0:
            row[EPOCHS_SEEN] = max(seen / unique, 1.0)
        elif _num(row.get("epochs")) >= 1:
            row[EPOCHS_SEEN] = _num(row["epochs"])
        out.append(row)
    return out


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None and not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def check_epochs_vary(x: np.ndarray, group: dict[str, Any]) -> None:
    """R* is identified only by trials that differ in epochs at some (N, D): refuse otherwise."""
    if len(np.unique(np.round(x[:, 2], 6))) < 2:
        where = ", ".join(f"{k}={v}" for k, v in group.items()) or "the table"
        raise BioscaleError(
            f"{LAW_NAME} for {where}: every trial has {x[0, 2]:g} epoch(s), so the value of a "
            "repeated epoch (R*) cannot be fitted; add trials that differ in epochs at a fixed "
            "diet (e.g. train.budget.epochs 1, 4 and 16), or fit chinchilla on N,D"
        )


@dataclass(frozen=True, kw_only=True)
class RepeatVsNew:
    """At an operating point (N, U unique samples, epochs), what doubling the compute buys by
    doubling the epochs on the same data against doubling the unique data at the same epochs.

    Gains are in the metric's terms (positive: better); ``*_per_flop`` divide by the extra FLOPs,
    which are the same for both (flops_per_sample(N) × U × epochs); intervals are over the fit's
    bootstrap refits, ``p_new_data_better`` the fraction of refits in which new data gains more.
    """

    group: dict[str, Any]
    at: dict[str, float]
    extra_flops: float
    epochs_gain: float
    epochs_gain_ci95: list[float | None] | None
    data_gain: float
    data_gain_ci95: list[float | None] | None
    p_new_data_better: float | None
    r_star: float
    r_star_ci95: list[float | None] | None

    @property
    def epochs_gain_per_flop(self) -> float:
        return self.epochs_gain / self.extra_flops

    @property
    def data_gain_per_flop(self) -> float:
        return self.data_gain / self.extra_flops

    def to_json(self) -> dict[str, Any]:
        def per(ci: list[float | None] | None) -> list[float | None] | None:
            return None if ci is None else [None if v is None else v / self.extra_flops for v in ci]

        return {
            "group": self.group,
            "at": self.at,
            "extra_flops": self.extra_flops,
            "epochs": {
                "gain": self.epochs_gain,
                "gain_ci95": self.epochs_gain_ci95,
                "gain_per_flop": self.epochs_gain_per_flop,
                "gain_per_flop_ci95": per(self.epochs_gain_ci95),
            },
            "unique_data": {
                "gain": self.data_gain,
                "gain_ci95": self.data_gain_ci95,
                "gain_per_flop": self.data_gain_per_flop,
                "gain_per_flop_ci95": per(self.data_gain_ci95),
            },
            "p_new_data_better": self.p_new_data_better,
            "R_star": self.r_star,
            "R_star_ci95": self.r_star_ci95,
        }

    def sentence(self) -> str:
        name = ", ".join(str(v) for v in self.group.values()) or "all trials"
        n, u, ep = self.at.values()
        better = "more unique data" if self.data_gain > self.epochs_gain else "more epochs"
        p = (
            f" (new data gains more in {self.p_new_data_better:.0%} of bootstrap refits)"
            if self.p_new_data_better is not None
            else ""
        )
        return (
            f"{name}: at N = {n:,.3g}, {u:,.0f} unique samples × {ep:.3g} epochs, another "
            f"{self.extra_flops:.3g} FLOPs buys {self.epochs_gain:+.3g} in the metric as "
            f"{2 * ep:.3g} epochs on the same data ({self.epochs_gain_per_flop:.3g} per FLOP) "
            f"and {self.data_gain:+.3g} as {2 * u:,.0f} unique samples at {ep:.3g} epochs "
            f"({self.data_gain_per_flop:.3g} per FLOP): {better} is the better buy{p}."
        )


def repeat_vs_new(
    fit: Any, flops_per_sample: float, at: dict[str, float] | None = None
) -> RepeatVsNew:
    """Compare doubling epochs with doubling unique data at ``at`` (default: the fit's trial with
    the most compute, N·D·epochs), for a ``data_constrained`` fit (``fit.FitResult``).

    Args:
        fit: the fit (with ``boot`` for intervals).
        flops_per_sample: FLOPs of one training sample at ``at``'s N (``allocation.FlopsModel``).
        at: the point, keyed by the fit's axes (N, D, epochs); missing axes default to that
            trial's.
    """
    if fit.law != LAW_NAME or fit.params is None:
        raise BioscaleError(
            f"repeat-vs-new data needs a fitted {LAW_NAME} law (--law {LAW_NAME} --axis "
            f"N,D,epochs); got {fit.law}{'' if fit.params else ' without a fit'}"
        )
    x = fit.x
    top = x[np.argmax(np.prod(x, axis=1))]
    unknown = sorted(set(at or {}) - set(fit.axis))
    if unknown:
        raise BioscaleError(
            f"{', '.join(unknown)}: not an axis of the fit (axes: {', '.join(fit.axis)})"
        )
    point = {a: float((at or {}).get(a, top[i])) for i, a in enumerate(fit.axis)}
    base = np.array([list(point.values())])
    more_epochs = base * [1.0, 1.0, 2.0]
    more_data = base * [1.0, 2.0, 1.0]
    pts = np.concatenate([base, more_epochs, more_data])  # (3, 3)
    spec = fit.spec

    def gains(thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        err = np.exp(spec.log_predict(thetas, np.log(pts).T))  # (B, 3)
        return err[:, 0] - err[:, 1], err[:, 0] - err[:, 2]  # error removed = metric gained

    g_ep, g_data = gains(spec.to_theta(fit.params)[None, :])
    ci_ep = ci_data = p_better = r_ci = None
    if fit.boot is not None:
        b_ep, b_data = gains(fit.boot)
        ci_ep, ci_data = percentile_interval(b_ep), percentile_interval(b_data)
        p_better = float(np.mean(b_data > b_ep))
        r_ci = fit.ci95.get("R_star")
    return RepeatVsNew(
        group=fit.group,
        at=point,
        extra_flops=float(flops_per_sample * base[0, 1] * base[0, 2]),
        epochs_gain=float(g_ep[0]),
        epochs_gain_ci95=ci_ep,
        data_gain=float(g_data[0]),
        data_gain_ci95=ci_data,
        p_new_data_better=p_better,
        r_star=fit.params["R_star"],
        r_star_ci95=r_ci,
    )
