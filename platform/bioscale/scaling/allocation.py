"""Compute-optimal allocation: the (N, D) that minimises a fitted joint law at a FLOP budget,
with bootstrap intervals, isoFLOP curves, and the budget at which two objectives' optima cross.

How compute is modelled (units: FLOPs). Every trial logs its rung's measured ``flops_per_sample``
(forward + backward of the objective's loss per training sample, ``torch.utils.flop_counter``;
ARCHITECTURE "Rung"), so a run costs

    C = flops_per_sample(N) × D × epochs                                   (FLOPs)

with D the unique training samples and epochs the passes over them. ``flops_per_sample`` is
fitted over the rungs as k·N^p (least squares in log–log); with one rung, p = 1 and k =
flops_per_sample / N (the 6ND rule of Kaplan et al. 2020 has k = 6). For ``chinchilla`` the
epochs are fixed at the group's (median) epochs per trial; for ``data_constrained``
(``scaling.constrained``) they are chosen too, optionally with the unique data capped at what a
study has.

At a budget C the optimum minimises the law along the isoFLOP curve D(N) = C / (k·N^p·epochs),
searched on a grid of log N from 1 parameter to one sample and refined by a parabola through the
three best grid points (an optimum pressed against a cap on unique data lies exactly on the cap;
the epochs of a capped data-constrained allocation are refined the same way). Two objectives'
optima cross where their optimal errors, each at its own FLOPs per sample, are equal. For the
Chinchilla law with p = 1 this is Hoffmann et al. 2022's closed
form N_opt = G·(C/(k·e))^(β/(α+β)), G = (αA/(βB))^(1/(α+β)) (their eq. 4), which the tests check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioscale.errors import BioscaleError
from bioscale.scaling.bootstrap import percentile_interval
from bioscale.scaling.fit import FitResult, check_law_axes
from bioscale.scaling.laws import Law

#: isoFLOP grid points in log N (spacing ≈ log(C)/G; the parabola refines between them)
GRID_N = 1201
#: epochs searched by a data-constrained allocation: 1 to this many, geometric
MAX_EPOCHS = 1000.0
GRID_EPOCHS = 61
#: log N grid of that epochs search (the chosen epochs' N is then found on the full grid)
PROFILE_N = 241
#: crossings of two objectives' optima are searched from the smallest trial's compute to this
#: multiple of the largest, on this many budgets
CROSSING_SPAN = 1e4
GRID_BUDGETS = 120
#: the report's default budgets: these multiples of the largest trial's compute
DEFAULT_BUDGET_MULTIPLES = (1.0, 10.0, 100.0)


@dataclass(frozen=True, kw_only=True)
class FlopsModel:
    """flops_per_sample(N) = k·N^p (FLOPs per training sample, forward + backward).

    Attributes:
        k: FLOPs per sample per parameter^p.
        p: the exponent in N (1 for a dense model whose cost grows with its parameters).
        rungs: the (N, flops_per_sample) pairs it was fitted on.
        note: how it was fitted.
    """

    k: float
    p: float
    rungs: list[tuple[float, float]] = field(default_factory=list)
    note: str = ""

    def per_sample(self, n: np.ndarray | float) -> np.ndarray:
        return self.k * np.power(np.asarray(n, dtype=float), self.p)

    def compute(self, n: np.ndarray | float, d: np.ndarray | float, epochs: float) -> np.ndarray:
        """FLOPs of training a model of N parameters on D samples for ``epochs`` passes."""
        return self.per_sample(n) * np.asarray(d, dtype=float) * epochs

    def to_json(self) -> dict[str, Any]:
        return {
            "flops_per_sample": f"{self.k:.4g}·N^{self.p:.4g}",
            "k": self.k,
            "p": self.p,
            "rungs": [list(r) for r in self.rungs],
            "note": self.note,
        }


def fit_flops_model(n: Sequence[float], flops_per_sample: Sequence[float]) -> FlopsModel:
    """k·N^p through the rungs' measured FLOPs per sample (least squares of log FLOPs on log N).

    Raises:
        BioscaleError: no rung has a positive N and FLOPs per sample.
    """
    n = np.asarray(n, dtype=float)
    f = np.asarray(flops_per_sample, dtype=float)
    ok = np.isfinite(n) & np.isfinite(f) & (n > 0) & (f > 0)
    if not ok.any():
        raise BioscaleError(
            "no trial has a positive N and flops_per_sample (or compute/flops with "
            "train/samples_seen): log them (bioscale trials do) to allocate a FLOP budget"
        )
    pairs = sorted({(float(a), float(b)) for a, b in zip(n[ok], f[ok], strict=True)})
    ns = np.array([p[0] for p in pairs])
    fs = np.array([p[1] for p in pairs])
    if len(np.unique(ns)) < 2:
        k = float(np.median(fs / ns))
        return FlopsModel(
            k=k, p=1.0, rungs=pairs, note=f"one rung: FLOPs ∝ N assumed (k = {k:.3g} per N)"
        )
    p, logk = np.polyfit(np.log(ns), np.log(fs), 1)
    return FlopsModel(
        k=float(np.exp(logk)),
        p=float(p),
        rungs=pairs,
        note=f"fitted over {len(np.unique(ns))} rungs",
    )


def row_flops_per_sample(row: dict[str, Any]) -> float:
    """A trial's FLOPs per sample: ``flops_per_sample``, else ``compute/flops`` over the samples
    it saw (``train/samples_seen``, else D_samples × epochs); NaN when it logged none."""

    def num(key: str) -> float:
        v = row.get(key)
        try:
            return float(v) if v is not None and not isinstance(v, bool) else math.nan
        except (TypeError, ValueError):
            return math.nan

    fps = num("flops_per_sample")
    if fps > 0:
        return fps
    total, seen = num("compute/flops"), num("train/samples_seen")
    if not seen > 0:
        seen = num("D_samples") * num("epochs")
    return total / seen if total > 0 and seen > 0 else math.nan


def group_rows(rows: Sequence[dict[str, Any]], group: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one fit's group (every group column equal)."""
    return [r for r in rows if all(r.get(k) == v for k, v in group.items())]


def flops_model_for(rows: Sequence[dict[str, Any]], group: dict[str, Any]) -> FlopsModel:
    """The FLOPs model of a group's rungs (``fit_flops_model``)."""
    members = group_rows(rows, group)
    n = [float(r["N"]) if r.get("N") is not None else math.nan for r in members]
    try:
        return fit_flops_model(n, [row_flops_per_sample(r) for r in members])
    except BioscaleError as err:
        where = ", ".join(f"{k}={v}" for k, v in group.items()) or "the table"
        raise BioscaleError(f"{where}: {err}") from None


def _parabola(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum over the last axis of ``values`` (..., G) on ``grid`` (G,), refined by a parabola
    through the best point and its neighbours: (argmin position (...,), min value (...,))."""
    i = np.argmin(values, axis=-1)
    j = np.clip(i, 1, len(grid) - 2)
    take = lambda k: np.take_along_axis(values, k[..., None], axis=-1)[..., 0]  # noqa: E731
    y0, y1, y2 = take(j - 1), take(j), take(j + 1)
    h = grid[1] - grid[0]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        den = y0 - 2.0 * y1 + y2
        ok = np.isfinite(den) & (den > 0) & (i == j)
        safe = np.where(ok, den, 1.0)
        shift = np.where(ok, 0.5 * h * (y0 - y2) / safe, 0.0)
        best = np.where(ok, y1 - (y0 - y2) ** 2 / (8.0 * safe), take(i))
    return np.where(i == j, grid[j] + shift, grid[i]), best


@dataclass(frozen=True, kw_only=True)
class Optimum:
    """Per θ (B,): the optimal N, D (unique samples), epochs and error at one budget."""

    n: np.ndarray
    d: np.ndarray
    epochs: np.ndarray
    err: np.ndarray
    at_edge: np.ndarray


def _best_n(
    spec: Law,
    thetas: np.ndarray,
    log_c: float,
    flops: FlopsModel,
    log_e: np.ndarray,
    unique_max: float | None,
    grid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per θ (B, P) at its own log epochs (B,): the optimal log N on the isoFLOP curve, the log
    error there and whether it sits at an end of the N grid. D = C/(k·N^p·e) must lie in
    [1, ``unique_max``]; an optimum pressed against the cap lies exactly on it."""
    rows = np.arange(len(thetas))
    le = log_e[:, None]  # (B, 1)
    logd = log_c - math.log(flops.k) - flops.p * grid[None, :] - le  # (B, G)
    shape = logd.shape
    axes = [np.broadcast_to(grid, shape), logd] + ([np.broadcast_to(le, shape)] * (spec.axes - 2))
    invalid = logd < 0
    if unique_max is not None:
        invalid |= logd > math.log(unique_max)
    lp = np.where(invalid, np.inf, spec.log_predict(thetas, np.stack(axes)))  # (B, G)
    pos, _ = _parabola(lp, grid)
    i = np.argmin(lp, axis=1)
    pressed = np.zeros(len(thetas), dtype=bool)
    if unique_max is not None:  # D = unique_max ⇔ log N = (log C − log k − log e − log U)/p
        cap = (log_c - math.log(flops.k) - log_e - math.log(unique_max)) / flops.p
        pressed = (i > 0) & invalid[rows, np.maximum(i - 1, 0)] & (cap > 0)
        pos = np.where(pressed, cap, pos)
    at_edge = ((pos <= grid[1]) & ~pressed) | (pos >= grid[-2])
    log_d = log_c - math.log(flops.k) - flops.p * pos - log_e
    point = np.stack([pos, log_d] + [log_e] * (spec.axes - 2))[..., None]  # (K, B, 1)
    err = spec.log_predict(thetas, point)[:, 0]  # each θ at its own optimum
    return pos, np.where(np.isfinite(lp[rows, i]), err, np.inf), at_edge


def optimum(
    spec: Law,
    thetas: np.ndarray,
    budget: float,
    flops: FlopsModel,
    *,
    epochs: float = 1.0,
    unique_max: float | None = None,
    grid_n: int = GRID_N,
) -> Optimum:
    """Minimise the law along the isoFLOP curve of ``budget`` FLOPs, for every θ (B, P).

    Args:
        spec: a two-axis (N, D) law, or a three-axis (N, D, epochs) one whose epochs are chosen
            too: 1 without a cap on unique data (D' < U·(1 + R) for R > 0, so a repeat never
            beats a new sample), else searched from 1 to ``MAX_EPOCHS`` (a grid in log epochs
            refined by a parabola through the best three).
        epochs: the fixed epochs of a two-axis law.
        unique_max: for a three-axis law, the most unique samples D may use (None: no cap).
        grid_n: points of the log N grid.
    """
    thetas = np.atleast_2d(np.asarray(thetas, dtype=float))
    B = len(thetas)
    if not (np.isfinite(budget) and budget > 0):
        raise BioscaleError(f"the FLOP budget must be a positive number, got {budget!r}")
    if spec.axes not in (2, 3):
        raise BioscaleError(f"law {spec.name!r} is not a joint N×D law: use chinchilla")
    log_c = math.log(budget)
    fixed = math.log(epochs) if spec.axes == 2 else 0.0
    # D = C / (k N^p e) ≥ 1  ⇔  log N ≤ (log C − log k − log e)/p; N ≥ 1
    top = (log_c - math.log(flops.k) - fixed) / flops.p
    if top <= 0:
        raise BioscaleError(
            f"a budget of {budget:.3g} FLOPs does not train one sample of a 1-parameter model "
            f"(flops_per_sample = {flops.k:.3g}·N^{flops.p:.3g}): give a larger --budget-flops"
        )
    grid = np.linspace(0.0, top, grid_n)  # log N (G,)
    log_e = np.full(B, fixed)
    e_edge = np.zeros(B, dtype=bool)
    if spec.axes == 3 and unique_max is not None:
        e_grid = np.linspace(0.0, math.log(MAX_EPOCHS), GRID_EPOCHS)  # log epochs, 12% apart
        coarse = np.linspace(0.0, top, PROFILE_N)
        profile = np.stack(
            [
                _best_n(spec, thetas, log_c, flops, np.full(B, le), unique_max, coarse)[1]
                for le in e_grid
            ],
            axis=1,
        )  # (B, Q): the best log error at each epochs
        log_e, _ = _parabola(profile, e_grid)
        log_e = np.clip(log_e, 0.0, e_grid[-1])
        e_edge = log_e >= e_grid[-2]
    log_n, log_err, at_edge = _best_n(spec, thetas, log_c, flops, log_e, unique_max, grid)
    log_d = log_c - math.log(flops.k) - flops.p * log_n - log_e
    return Optimum(
        n=np.exp(log_n),
        d=np.exp(log_d),
        epochs=np.full(B, float(epochs)) if spec.axes == 2 else np.exp(log_e),
        err=np.exp(log_err),
        at_edge=at_edge | e_edge | ~np.isfinite(log_err),
    )


@dataclass(frozen=True, kw_only=True)
class Allocation:
    """The compute-optimal (N, D, epochs) of one group at one budget, in the metric's terms."""

    group: dict[str, Any]
    law: str
    budget_flops: float
    n: float | None
    n_ci95: list[float | None] | None
    d: float | None
    d_ci95: list[float | None] | None
    epochs: float | None
    epochs_ci95: list[float | None] | None
    value: float | None
    value_ci95: list[float | None] | None
    flops: FlopsModel
    metric: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "law": self.law,
            "metric": self.metric,
            "budget_flops": self.budget_flops,
            "N": self.n,
            "N_ci95": self.n_ci95,
            "D": self.d,
            "D_ci95": self.d_ci95,
            "epochs": self.epochs,
            "epochs_ci95": self.epochs_ci95,
            "value": self.value,
            "value_ci95": self.value_ci95,
            "compute": self.flops.to_json(),
            "note": self.note,
        }

    def sentence(self) -> str:
        name = ", ".join(str(v) for v in self.group.values()) or "all trials"
        if self.n is None:
            return f"{name}: no allocation at {self.budget_flops:.3g} FLOPs ({self.note})."

        def ci(v: list[float | None] | None) -> str:
            if not v:
                return ""
            return " [" + ", ".join("—" if x is None else f"{x:.3g}" for x in v) + "]"

        return (
            f"{name}: at {self.budget_flops:.3g} FLOPs, N ≈ {self.n:.3g}{ci(self.n_ci95)} "
            f"parameters on D ≈ {self.d:.3g}{ci(self.d_ci95)} samples × {self.epochs:.3g} "
            f"epoch(s) gives {self.metric or 'the metric'} ≈ {self.value:.4g}"
            f"{ci(self.value_ci95)}" + (f" ({self.note})" if self.note else "") + "."
        )


def fit_epochs(fit: FitResult, rows: Sequence[dict[str, Any]]) -> float:
    """The epochs per trial of a two-axis fit's group (median of ``epochs_seen``, else of
    ``epochs``; 1 when the table has neither)."""
    from bioscale.scaling.constrained import with_epochs_seen

    seen = [r.get("epochs_seen") for r in with_epochs_seen(group_rows(rows, fit.group))]
    vals = [float(v) for v in seen if v is not None and math.isfinite(float(v))]
    return float(np.median(vals)) if vals else 1.0


def allocate(
    fit: FitResult,
    budget: float,
    flops: FlopsModel,
    *,
    epochs: float = 1.0,
    unique_max: float | None = None,
) -> Allocation:
    """The compute-optimal allocation of ``fit`` (a joint law) at ``budget`` FLOPs, with 95%
    intervals over its bootstrap refits (``fit.boot``)."""
    spec = fit.spec
    base = {"group": fit.group, "law": fit.law, "budget_flops": float(budget), "flops": flops}
    base["metric"] = fit.metric
    if spec.axes < 2:
        raise BioscaleError(
            f"a FLOP budget is split between N and D by a joint law: fit --law chinchilla --axis "
            f"N,D (or data_constrained on N,D,epochs), not {fit.law} on {','.join(fit.axis)}"
        )
    if fit.params is None:
        return Allocation(
            n=None,
            n_ci95=None,
            d=None,
            d_ci95=None,
            epochs=None,
            epochs_ci95=None,
            value=None,
            value_ci95=None,
            note=f"no fit: {fit.note}",
            **base,
        )
    point = optimum(
        spec,
        spec.to_theta(fit.params)[None, :],
        budget,
        flops,
        epochs=epochs,
        unique_max=unique_max,
    )
    notes = []
    if point.at_edge[0]:
        notes.append("the optimum lies at the edge of the isoFLOP curve (a law that does not bend)")
    cis: dict[str, list[float | None] | None] = {"n": None, "d": None, "e": None, "v": None}
    if fit.boot is not None:
        draws = optimum(spec, fit.boot, budget, flops, epochs=epochs, unique_max=unique_max)
        metric = fit.to_metric(draws.err)
        cis = {
            "n": percentile_interval(draws.n),
            "d": percentile_interval(draws.d),
            "e": percentile_interval(draws.epochs),
            "v": percentile_interval(metric),
        }
    else:
        notes.append("point estimate only (no bootstrap refits)")
    x_max = float(np.max(np.prod(fit.x[:, :2], axis=1)))
    if point.n[0] * point.d[0] > 100.0 * x_max:
        notes.append("more than 100× the largest observed N·D: far outside the data")
    return Allocation(
        n=float(point.n[0]),
        n_ci95=cis["n"],
        d=float(point.d[0]),
        d_ci95=cis["d"],
        epochs=float(point.epochs[0]),
        epochs_ci95=cis["e"],
        value=float(fit.to_metric(point.err)[0]),
        value_ci95=cis["v"],
        note="; ".join(notes),
        **base,
    )


def optimal_curve(
    fit: FitResult,
    budgets: np.ndarray,
    flops: FlopsModel,
    thetas: np.ndarray,
    *,
    epochs: float = 1.0,
    unique_max: float | None = None,
) -> np.ndarray:
    """The optimal error at each budget (G,), per θ: (B, G)."""
    cols = [
        optimum(fit.spec, thetas, c, flops, epochs=epochs, unique_max=unique_max, grid_n=401).err
        for c in budgets
    ]
    return np.stack(cols, axis=1)


def first_crossing(err_a: np.ndarray, err_b: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """Per row of the errors (B, G) on ``budgets`` (G,): the first budget where err_a − err_b
    changes sign, interpolated linearly in log budget; NaN where it never does."""
    diff = np.log(err_a) - np.log(err_b)
    sign = np.sign(diff)
    change = sign[:, 1:] != sign[:, :1]
    out = np.full(len(diff), np.nan)
    logc = np.log(budgets)
    for r in np.flatnonzero(change.any(axis=1)):
        i = int(np.argmax(change[r])) + 1
        d0, d1 = diff[r, i - 1], diff[r, i]
        t = d0 / (d0 - d1) if d0 != d1 else 1.0
        out[r] = float(np.exp(logc[i - 1] + t * (logc[i] - logc[i - 1])))
    return out


def optima_crossing(
    a: FitResult,
    b: FitResult,
    flops_a: FlopsModel,
    flops_b: FlopsModel,
    *,
    epochs_a: float = 1.0,
    epochs_b: float = 1.0,
    budgets: np.ndarray,
) -> dict[str, Any]:
    """The first budget at which the compute-optimal errors of ``a`` and ``b`` cross (the better
    objective at the optimum changes), with a 95% interval over paired bootstrap refits and the
    fraction of refits that cross inside ``budgets``.

    Returns:
        ``{"a", "b", "crossover_flops", "crossover_ci95", "p_crossover", "leader_at_max",
        "budgets": [lo, hi], "note"}``.
    """
    out: dict[str, Any] = {"a": a.group, "b": b.group, "budgets": [budgets[0], budgets[-1]]}
    if a.params is None or b.params is None:
        return {**out, "note": "both objectives need a fit"}
    ta = a.spec.to_theta(a.params)[None, :]
    tb = b.spec.to_theta(b.params)[None, :]
    ea = optimal_curve(a, budgets, flops_a, ta, epochs=epochs_a)
    eb = optimal_curve(b, budgets, flops_b, tb, epochs=epochs_b)
    point = first_crossing(ea, eb, budgets)[0]
    out["crossover_flops"] = None if np.isnan(point) else float(point)
    out["leader_at_max"] = a.group if ea[0, -1] < eb[0, -1] else b.group
    out["crossover_ci95"], out["p_crossover"] = None, None
    if a.boot is not None and b.boot is not None:
        n = min(len(a.boot), len(b.boot))
        ca = optimal_curve(a, budgets, flops_a, a.boot[:n], epochs=epochs_a)
        cb = optimal_curve(b, budgets, flops_b, b.boot[:n], epochs=epochs_b)
        cross = first_crossing(ca, cb, budgets)
        out["p_crossover"] = float(np.mean(~np.isnan(cross)))
        if out["crossover_flops"] is not None:
            out["crossover_ci95"] = percentile_interval(np.where(np.isnan(cross), np.inf, cross))
    out["note"] = ""
    return out


@dataclass(frozen=True, kw_only=True)
class AllocationSet:
    """Allocations of every joint fit at every budget, crossings between groups, and (for the
    data-constrained law) the repeat-vs-new-data comparison."""

    fits: list[FitResult]
    allocations: list[Allocation]
    crossings: list[dict[str, Any]]
    repeat_vs_new: list[Any] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "allocations": [a.to_json() for a in self.allocations],
            "crossings": self.crossings,
            "repeat_vs_new": [r.to_json() for r in self.repeat_vs_new],
            "issues": self.issues,
        }


def trial_compute(rows: Sequence[dict[str, Any]], fits: Sequence[FitResult]) -> np.ndarray:
    """Each observed point's FLOPs, flops_per_sample(N)·D·epochs, under its group's model."""
    out = []
    for f in fits:
        if not f.points:
            continue
        model = flops_model_for(rows, f.group)
        ep = f.x[:, 2] if f.x.shape[1] > 2 else np.full(len(f.x), fit_epochs(f, rows))
        out.append(model.compute(f.x[:, 0], f.x[:, 1], 1.0) * ep)
    return np.concatenate(out) if out else np.array([])


def allocate_fits(
    fits: Sequence[FitResult],
    rows: Sequence[dict[str, Any]],
    budgets: Sequence[float],
    *,
    unique_max: float | None = None,
    compare_column: str | None = "objective",
) -> AllocationSet:
    """Allocate every joint fit at every budget; cross every pair differing in
    ``compare_column`` (budgets from the smallest trial's compute to ``CROSSING_SPAN``× the
    largest); for ``data_constrained`` fits, compare more epochs with more unique data."""
    from itertools import combinations

    from bioscale.scaling.constrained import LAW_NAME, repeat_vs_new

    fits = list(fits)
    if not fits:
        raise BioscaleError("no fit to allocate a FLOP budget with")
    for f in fits:
        check_law_axes(f.law, f.axis)
        if f.spec.axes < 2:
            raise BioscaleError(
                f"--budget-flops splits compute between N and D: it needs a joint law (--law "
                f"chinchilla --axis N,D, or --law {LAW_NAME} --axis N,D,epochs), not {f.law}"
            )
    models = [flops_model_for(rows, f.group) for f in fits]
    epochs = [fit_epochs(f, rows) if f.spec.axes == 2 else 1.0 for f in fits]
    allocations = [
        allocate(f, c, m, epochs=e, unique_max=unique_max)
        for f, m, e in zip(fits, models, epochs, strict=True)
        for c in budgets
    ]
    crossings = []
    seen = trial_compute(rows, fits)
    if compare_column and len(seen):
        grid = np.geomspace(seen.min(), seen.max() * CROSSING_SPAN, GRID_BUDGETS)
        for i, j in combinations(range(len(fits)), 2):
            a, b = fits[i], fits[j]
            if compare_column not in a.group or compare_column not in b.group:
                continue
            rest = lambda g: {k: v for k, v in g.items() if k != compare_column}  # noqa: E731
            if rest(a.group) != rest(b.group) or a.law != b.law:
                continue
            crossings.append(
                optima_crossing(
                    a,
                    b,
                    models[i],
                    models[j],
                    epochs_a=epochs[i],
                    epochs_b=epochs[j],
                    budgets=grid,
                )
            )
    issues = []
    if unique_max is not None and crossings and any(f.spec.axes == 3 for f in fits):
        issues.append(
            f"crossings of the optima are at unlimited unique data (one epoch), not at the "
            f"--unique-data cap of {unique_max:,.0f} samples"
        )
    repeats = []
    for f, m in zip(fits, models, strict=True):
        if f.law == LAW_NAME and f.params is not None:
            top = f.x[np.argmax(np.prod(f.x, axis=1))]
            repeats.append(repeat_vs_new(f, float(m.per_sample(top[0]))))
    return AllocationSet(
        fits=list(fits),
        allocations=allocations,
        crossings=crossings,
        repeat_vs_new=repeats,
        issues=issues,
    )


def describe_crossing(c: dict[str, Any]) -> str:
    a = ", ".join(map(str, c["a"].values()))
    b = ", ".join(map(str, c["b"].values()))
    if c.get("note"):
        return f"{a} vs {b}: {c['note']}."
    lo, hi = c["budgets"]
    p = c.get("p_crossover")
    chance = f"; crossing in {p:.0%} of bootstrap refits" if p is not None else ""
    if c.get("crossover_flops") is None:
        lead = ", ".join(map(str, c["leader_at_max"].values()))
        return (
            f"{a} vs {b}: the compute-optimal curves do not cross between {lo:.3g} and "
            f"{hi:.3g} FLOPs ({lead} leads{chance})."
        )
    ci = c.get("crossover_ci95")
    shown = (
        " (95% CI [" + ", ".join("—" if v is None else f"{v:.3g}" for v in ci) + "])" if ci else ""
    )
    lead = ", ".join(map(str, c["leader_at_max"].values()))
    return (
        f"{a} vs {b}: the compute-optimal curves cross at {c['crossover_flops']:.3g} FLOPs"
        f"{shown}; beyond it {lead} is better{chance}."
    )


def isoflop_curve(
    spec: Law,
    theta: np.ndarray,
    budget: float,
    flops: FlopsModel,
    n: np.ndarray,
    *,
    epochs: float = 1.0,
    unique_max: float | None = None,
) -> np.ndarray:
    """The law's error (G,) at each N (G,) on the isoFLOP curve of ``budget``: D = C/(k·N^p·e);
    for a three-axis law with a cap on unique data, at the best epochs for that N (1 without a
    cap); +∞ where no D in [1, cap] fits the budget."""
    log_e = np.zeros(1) if spec.axes == 3 else np.array([math.log(epochs)])
    if spec.axes == 3 and unique_max is not None:
        log_e = np.linspace(0.0, math.log(MAX_EPOCHS), GRID_EPOCHS)
    logn = np.log(np.asarray(n, dtype=float))[None, :]
    log_e = np.broadcast_to(log_e[:, None], (len(log_e), logn.shape[1]))
    if spec.axes == 3 and unique_max is not None:  # and the epochs that use exactly the cap
        at_cap = math.log(budget) - math.log(flops.k) - flops.p * logn - math.log(unique_max)
        log_e = np.concatenate([log_e, np.clip(at_cap, 0.0, math.log(MAX_EPOCHS))])
    logd = math.log(budget) - math.log(flops.k) - flops.p * logn - log_e  # (Q, G)
    axes = [np.broadcast_to(logn, logd.shape), logd] + [log_e] * (spec.axes - 2)
    lp = spec.log_predict(theta[None, :], np.stack(axes)[:, None])[0]  # (Q, G)
    bad = (logd < 0) | (unique_max is not None and spec.axes == 3) & (logd > _log(unique_max))
    return np.exp(np.where(bad, np.inf, lp).min(axis=0))


def _log(v: float | None) -> float:
    return math.inf if v is None else math.log(v)


def plot_isoflops(
    fits: Sequence[FitResult],
    rows: Sequence[dict[str, Any]],
    budgets: Sequence[float],
    path: str | Path,
    *,
    title: str = "isoFLOP curves",
    unique_max: float | None = None,
) -> Path:
    """One panel per group: the fitted error along each budget's isoFLOP curve against N
    (log–log), the optimum starred; for a data-constrained law, at the optimal epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = [f for f in fits if f.params is not None]
    fig, axes = plt.subplots(
        1, max(len(fits), 1), figsize=(4.4 * max(len(fits), 1), 3.8), dpi=120, squeeze=False
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, fit in zip(axes[0], fits, strict=False):
        model = flops_model_for(rows, fit.group)
        spec, theta = fit.spec, fit.spec.to_theta(fit.params)
        ep = fit_epochs(fit, rows) if spec.axes == 2 else 1.0
        for i, c in enumerate(sorted(budgets)):
            best = optimum(spec, theta[None, :], c, model, epochs=ep, unique_max=unique_max)
            n_opt = float(best.n[0])
            n = np.geomspace(n_opt / 300.0, n_opt * 300.0, 200)
            err = isoflop_curve(spec, theta, c, model, n, epochs=ep, unique_max=unique_max)
            keep = np.isfinite(err)
            colour = colours[i % len(colours)]
            ax.plot(n[keep], err[keep], color=colour, label=f"C = {c:.2g} FLOPs")
            ax.plot([n_opt], [float(best.err[0])], marker="*", color=colour, ms=10, mec="k")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("backbone parameters N")
        ax.set_ylabel(f"1 − {fit.metric}" if fit.direction == "higher" else fit.metric)
        ax.set_title(", ".join(map(str, fit.group.values())) or "all trials", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    width = 4.4 * max(len(fits), 1)
    fig.subplots_adjust(left=0.8 / width, right=0.97, bottom=0.14, top=0.86, wspace=0.35)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def default_budgets(rows: Sequence[dict[str, Any]], fits: Sequence[FitResult]) -> list[float]:
    """``DEFAULT_BUDGET_MULTIPLES`` of the largest trial's compute."""
    seen = trial_compute(rows, fits)
    if not len(seen):
        return []
    return [float(seen.max() * m) for m in DEFAULT_BUDGET_MULTIPLES]
