"""Objective comparison: the difference of two fits' exponents with a bootstrap interval, and the
scale at which one overtakes the other, if it does."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from bioscale.scaling.bootstrap import percentile_interval
from bioscale.scaling.fit import FitResult
from bioscale.scaling.laws import as_log_axes

#: crossovers are searched from the smallest observed scale to this multiple of the largest
CROSSOVER_SPAN = 1e4


def _exponents(fit: FitResult) -> np.ndarray | None:
    """Bootstrap draws (B,) of the exponent at the largest scales along the fit's (only) axis."""
    if fit.boot is None:
        return None
    spec = fit.spec
    values = spec.params_array(fit.boot)
    idx = [spec.param_names.index(k) for k in spec.exponent_names[0]]
    return spec.exponent_sign * values[:, idx].sum(axis=1)


def _crossings(errs_a: np.ndarray, errs_b: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """First x (per row) where the sign of err_a − err_b changes; NaN where it never does.
    errs_*: (B, G) errors on the grid xs (G,)."""
    diff = np.sign(errs_a - errs_b)
    change = diff[:, 1:] != diff[:, :1]
    out = np.full(len(diff), np.nan)
    has = change.any(axis=1)
    out[has] = xs[1:][np.argmax(change[has], axis=1)]
    return out


def compare(a: FitResult, b: FitResult) -> dict[str, Any]:
    """Compare two one-axis fits on the same axis.

    Returns:
        ``{"a", "b", "axis", "exponent_a", "exponent_b", "difference", "ci95", "crossover",
        "crossover_ci95", "p_crossover", "leader_after", "within_observed", "note"}``: the
        difference is exponent(a) − exponent(b) (a positive one: a improves faster), its interval
        pairs the two independent bootstraps draw by draw; the crossover is the first scale where
        the fitted curves cross, searched up to 10⁴× the largest observed scale.
    """
    out: dict[str, Any] = {"a": a.group, "b": b.group, "axis": a.axis}
    if a.axis != b.axis or len(a.axis) != 1:
        return {**out, "note": "comparisons need two one-axis fits along the same axis"}
    if a.params is None or b.params is None:
        return {**out, "note": "both curves need a fit"}
    ea = a.spec.exponent(a.params)
    eb = b.spec.exponent(b.params)
    out.update(exponent_a=ea, exponent_b=eb, difference=ea - eb, ci95=None)
    da, db = _exponents(a), _exponents(b)
    if da is not None and db is not None:
        n = min(len(da), len(db))
        out["ci95"] = percentile_interval(da[:n] - db[:n])
    lo = min(a.x.min(), b.x.min())
    hi = max(a.x.max(), b.x.max())
    xs = np.geomspace(lo, hi * CROSSOVER_SPAN, 2000)
    point = _crossings(
        a.spec.predict(a.spec.to_theta(a.params), xs)[None, :],  # errors, (1, G)
        b.spec.predict(b.spec.to_theta(b.params), xs)[None, :],
        xs,
    )[0]
    out["crossover"] = None if np.isnan(point) else float(point)
    out["within_observed"] = bool(not np.isnan(point) and point <= hi)
    err_a = a.spec.predict(a.spec.to_theta(a.params), xs[-1:])[0]
    err_b = b.spec.predict(b.spec.to_theta(b.params), xs[-1:])[0]
    out["leader_after"] = a.group if err_a < err_b else b.group
    out["crossover_ci95"], out["p_crossover"] = None, None
    if a.boot is not None and b.boot is not None:
        n = min(len(a.boot), len(b.boot))
        logx = as_log_axes(xs, 1)
        cross = _crossings(
            np.exp(a.spec.log_predict(a.boot[:n], logx)),
            np.exp(b.spec.log_predict(b.boot[:n], logx)),
            xs,
        )
        out["p_crossover"] = float(np.mean(~np.isnan(cross)))
        if out["crossover"] is not None:
            out["crossover_ci95"] = percentile_interval(np.where(np.isnan(cross), np.inf, cross))
    out["note"] = exponent_verdict(out)
    return out


def _name(group: dict[str, Any]) -> str:
    return ", ".join(str(v) for v in group.values()) or "all"


def exponent_verdict(c: dict[str, Any]) -> str:
    """One sentence on whether two curves' exponents differ: their difference with its 95 %
    interval, and whether that interval excludes zero."""
    if c.get("difference") is None:
        return c.get("note", "")
    a, b = _name(c["a"]), _name(c["b"])
    axis = ",".join(c["axis"])
    diff = c["difference"]
    ci = c.get("ci95")
    if not ci or ci[0] is None or ci[1] is None:
        return f"exponent along {axis}: {a} − {b} = {diff:+.3f} (no interval: too few scales)"
    text = f"exponent along {axis}: {a} − {b} = {diff:+.3f}, 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]"
    if ci[0] > 0 or ci[1] < 0:
        faster = a if ci[0] > 0 else b
        return f"{text}: excludes 0, {faster} improves faster along {axis}"
    return f"{text}: includes 0, these runs do not tell the two exponents apart"


def compare_by(fits: list[FitResult], column: str = "objective") -> list[dict[str, Any]]:
    """Every pair of fits that differ only in ``column`` (e.g. two objectives on one rung)."""
    out = []
    for a, b in combinations(fits, 2):
        if column not in a.group or column not in b.group or a.axis != b.axis:
            continue
        rest_a = {k: v for k, v in a.group.items() if k != column}
        rest_b = {k: v for k, v in b.group.items() if k != column}
        if rest_a == rest_b and a.group[column] != b.group[column]:
            out.append(compare(a, b))
    return out
