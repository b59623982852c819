"""What to run next, and how far to trust a decision.

``suggest`` picks the next trials that most shrink the 95% interval of a forecast (the scale at
which a fitted curve reaches a target) per FLOP. The bootstrap refits of each fit
(``FitResult.boot``) are the posterior: every draw b gives a forecast z_b = log x*_b and a
predicted log error p_b(x) at any candidate scale x. A new trial at x observes p(x) plus seed
noise of variance σ² (log space), so, treating the draws as an ensemble, the forecast's variance
after observing a set S of trials is the ensemble Kalman update (Evensen 2003)

    Var(z | y_S) = Var(z) − Cov(z, p_S) (Cov(p_S) + σ² I)⁻¹ Cov(p_S, z),

and the expected interval is the current one shrunk about its median by
√(Var(z | y_S) / Var(z)). Picks are greedy: each adds the trial with the largest drop in the sum
of the forecasts' interval widths (decades) per FLOP, the earlier picks held in S.

σ is the seed-to-seed noise: the pooled within-scale standard deviation of log error where a
curve has several seeds at a scale, else the fit residuals' (saying so).

``decisions`` backtests objective rankings (DataDecide, Magnusson et al. 2025): at the largest
scale every objective of a family was measured at, is the winner called right by curves fitted
to the smaller scales more often than by the ranking at the second-largest scale? It also gives,
from the bootstrap refits, how likely the ranking at a target scale differs from the ranking at
the largest measured scale.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import numpy as np
import yaml

from bioscale.errors import BioscaleError
from bioscale.scaling.fit import FitResult, fit_law
from bioscale.scaling.forecast import forecast, invert
from bioscale.scaling.laws import as_log_axes
from bioscale.scaling.noise import scale_ids, spreads

#: a bootstrap draw whose forecast never reaches the target counts as this multiple of the
#: largest observed scale (so a width stays finite and comparable across candidates)
FORECAST_CAP = 1e4
#: ranking changes are judged at this multiple of the largest measured scale by default
TARGET_MULTIPLE = 10.0
_LN10 = math.log(10.0)


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A trial that could run next.

    Attributes:
        curve: index (into the fits given to ``suggest``) of the curve the trial lands on.
        at: its scale on every axis of that fit (``{"D": 4096}``; samples, parameters).
        flops: training FLOPs of the trial.
        trial: what to run, for the ``grids:`` block (``{"rung", "diet", "objective"}``).
    """

    curve: int
    at: dict[str, float]
    flops: float
    trial: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Pick:
    """One suggested trial and the forecast interval expected once it (and the earlier picks)
    has run: ``ci95`` of its curve's forecast, ``width`` the sum over curves (decades)."""

    candidate: Candidate
    ci95: list[float]
    width: float
    flops_total: float


@dataclass(frozen=True, kw_only=True)
class Suggestion:
    """``picks`` in order; ``width`` / ``ci95`` before any (per curve, aligned with the fits),
    ``noise`` σ per curve and where it came from, ``skipped``: curves with no usable forecast."""

    picks: list[Pick]
    width: float
    ci95: list[list[float] | None]
    noise: list[tuple[float, str] | None]
    skipped: list[str]


def seed_noise(fit: FitResult) -> tuple[float, str]:
    """σ of a new run's log error around the curve: pooled within-scale SD of log error where
    scales have ≥ 2 points (Porian et al. 2024 pool seeds across scales), else the fit
    residuals' RMS with n − P degrees of freedom."""
    logy = np.log(1.0 - fit.y if fit.direction == "higher" else fit.y)
    sp = spreads(logy, scale_ids(as_log_axes(fit.x, fit.spec.axes)))
    if sp.dof >= 2:
        sigma = math.sqrt(float(np.sum(sp.dofs * sp.variances)) / sp.dof)
        return sigma, f"pooled over seeds ({sp.dof} degrees of freedom)"
    spec = fit.spec
    resid = logy - spec.log_predict(spec.to_theta(fit.params), np.log(fit.x).T)
    n_free = max(len(resid) - len(spec.param_names), 1)
    sigma = math.sqrt(float((resid**2).sum()) / n_free)
    return sigma, "from the fit residuals (one seed per scale)"


@dataclass(frozen=True, kw_only=True)
class _Posterior:
    fit: FitResult
    z: np.ndarray  # (B,) log forecast per draw, capped
    sigma: float

    @property
    def var(self) -> float:
        return float(np.var(self.z, ddof=1))

    def interval(self) -> tuple[float, float, float]:
        lo, med, hi = np.quantile(self.z, [0.025, 0.5, 0.975])
        return float(lo), float(med), float(hi)

    def width(self) -> float:
        lo, _, hi = self.interval()
        return (hi - lo) / _LN10

    def pred(self, at: dict[str, float]) -> np.ndarray:
        """Predicted log error (B,) of every draw at ``at``."""
        missing = [a for a in self.fit.axis if a not in at]
        if missing:
            raise BioscaleError(
                f"a candidate trial has no {', '.join(missing)}: give its scale on every axis of "
                f"the fit ({', '.join(self.fit.axis)})"
            )
        x = np.array([[float(at[a]) for a in self.fit.axis]])
        if not np.all(x > 0):
            raise BioscaleError(f"a candidate trial's scale must be > 0, got {at}")
        return self.fit.spec.log_predict(self.fit.boot, as_log_axes(x, self.fit.spec.axes))[:, 0]

    def ratio(self, preds: list[np.ndarray]) -> float:
        """√(Var(z | y_S) / Var(z)) after observing the predictions ``preds`` (each (B,))."""
        if not preds or self.var <= 0:
            return 1.0
        P = np.stack(preds, axis=1)  # (B, S)
        Pc = P - P.mean(axis=0)
        zc = self.z - self.z.mean()
        B = len(zc)
        c_pp = Pc.T @ Pc / (B - 1) + self.sigma**2 * np.eye(P.shape[1])
        c_zp = zc @ Pc / (B - 1)
        post = self.var - float(c_zp @ np.linalg.solve(c_pp, c_zp))
        return math.sqrt(max(post, 0.0) / self.var)


def _posterior(fit: FitResult, target: float, along: str | None) -> _Posterior | str:
    """The forecast's posterior ensemble, or why the curve cannot take part."""
    where = ", ".join(f"{k}={v}" for k, v in fit.group.items()) or "all rows"
    if fit.boot is None:
        return f"{where}: no bootstrap refits ({fit.note or 'no intervals'})"
    try:
        fc = forecast(fit, target, along=along)
    except BioscaleError as err:
        return f"{where}: {err}"
    if not fc.axis or (fit.plateau and (fit.plateau["plateau"] or fit.plateau["non_monotonic"])):
        return f"{where}: the forecast is {fc.status} ({fc.note})"
    j = fit.axis.index(fc.axis[0])
    logx_at = np.array([np.log(fc.fixed.get(a, 1.0)) for a in fit.axis])
    t_err = 1.0 - target if fit.direction == "higher" else target
    values = invert(fit, fit.boot, t_err, j, logx_at)
    cap = float(fit.x[:, j].max()) * FORECAST_CAP
    z = np.log(np.minimum(values, cap))
    if np.ptp(z) == 0:
        return f"{where}: every bootstrap draw gives the same forecast ({fc.status}: {fc.note})"
    return _Posterior(fit=fit, z=z, sigma=seed_noise(fit)[0])


def suggest(
    fits: Sequence[FitResult],
    target: float,
    candidates: Sequence[Candidate],
    *,
    k: int = 4,
    budget_flops: float | None = None,
    along: str | None = None,
    repeat: bool = False,
) -> Suggestion:
    """The next ``k`` trials (fewer within ``budget_flops``) that most shrink the forecasts'
    intervals per FLOP (see the module docstring).

    Args:
        fits: curves with bootstrap refits; each forecasts where it reaches ``target``.
        target: the metric value to reach (an accuracy for ``direction: higher``).
        candidates: trials that could run; ``Candidate.curve`` indexes ``fits``.
        k: at most this many picks.
        budget_flops: the picks' FLOPs together stay within this (FLOPs).
        along: the axis the forecasts grow along (default each fit's last axis).
        repeat: a candidate may be picked more than once (another seed of the same trial).

    Raises:
        BioscaleError: ``k`` < 1, a candidate names a curve that is not there or has no FLOPs,
            or no curve has a forecast with an interval.
    """
    if k < 1:
        raise BioscaleError(f"--k must be ≥ 1, got {k}")
    if budget_flops is not None and not budget_flops > 0:
        raise BioscaleError(f"the FLOP budget must be > 0, got {budget_flops}")
    posts: list[_Posterior | None] = []
    skipped: list[str] = []
    for fit in fits:
        p = _posterior(fit, target, along)
        posts.append(p if isinstance(p, _Posterior) else None)
        if not isinstance(p, _Posterior):
            skipped.append(p)
    if not any(posts):
        raise BioscaleError(
            "no curve has a forecast of that target with a 95% interval to shrink: "
            + "; ".join(skipped)
        )
    for c in candidates:
        if not 0 <= c.curve < len(fits):
            raise BioscaleError(f"candidate {c.trial or c.at}: no curve {c.curve}")
        if not c.flops > 0:
            raise BioscaleError(
                f"candidate {c.trial or c.at}: FLOPs must be > 0, got {c.flops} (trials need "
                "flops_per_sample)"
            )
    usable = [c for c in candidates if posts[c.curve] is not None]
    preds = [posts[c.curve].pred(c.at) for c in usable]
    chosen: dict[int, list[np.ndarray]] = {}
    widths = {i: p.width() for i, p in enumerate(posts) if p is not None}
    total0 = sum(widths.values())
    picks: list[Pick] = []
    spent = 0.0
    taken: set[int] = set()
    for _ in range(k):
        best, best_score, best_w = None, 0.0, None
        for i, c in enumerate(usable):
            if (i in taken and not repeat) or (
                budget_flops is not None and spent + c.flops > budget_flops
            ):
                continue
            post = posts[c.curve]
            w = post.width() * post.ratio([*chosen.get(c.curve, []), preds[i]])
            score = (widths[c.curve] - w) / c.flops
            if score > best_score:
                best, best_score, best_w = i, score, w
        if best is None:
            break
        c = usable[best]
        taken.add(best)
        chosen.setdefault(c.curve, []).append(preds[best])
        widths[c.curve] = best_w
        spent += c.flops
        post = posts[c.curve]
        lo, med, hi = post.interval()
        r = post.ratio(chosen[c.curve])
        ci = [math.exp(med - (med - lo) * r), math.exp(med + (hi - med) * r)]
        picks.append(Pick(candidate=c, ci95=ci, width=sum(widths.values()), flops_total=spent))
    before = []
    for p in posts:
        if p is None:
            before.append(None)
            continue
        lo, _, hi = p.interval()
        before.append([math.exp(lo), math.exp(hi)])
    return Suggestion(
        picks=picks,
        width=total0,
        ci95=before,
        noise=[None if p is None else seed_noise(p.fit) for p in posts],
        skipped=skipped,
    )


def grids_block(picks: Sequence[Pick]) -> str:
    """A ``grids:`` block (YAML) with one grid per distinct picked trial, to append to the
    study's ``grids:`` list; a trial with a ``seed`` (another seed at a measured point) gets the
    grid's own ``seeds``."""
    entries, seen = [], set()
    for p in picks:
        t = p.candidate.trial
        if not {"rung", "diet", "objective"} <= set(t):
            raise BioscaleError(
                f"candidate {t or p.candidate.at}: a grid entry needs rung, diet and objective"
            )
        key = yaml.safe_dump(t, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        entry = {"rung": [t["rung"]], "diet": [t["diet"]], "objective": [t["objective"]]}
        if "seed" in t:  # another seed at a measured point
            entry["seeds"] = [t["seed"]]
        entries.append(entry)
    return yaml.safe_dump({"grids": entries}, sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------------------------- decisions


def _err(fit: FitResult, y: np.ndarray) -> np.ndarray:
    return 1.0 - y if fit.direction == "higher" else y


def _families(fits: Sequence[FitResult], column: str) -> list[list[FitResult]]:
    """Fits that differ only in ``column`` (one-axis, same axis, fitted), ≥ 2 per family."""

    def rest(f: FitResult) -> str:
        others = {k: v for k, v in f.group.items() if k != column}
        return repr((sorted(others.items(), key=str), f.axis))

    usable = [f for f in fits if column in f.group and len(f.axis) == 1 and f.params]
    out = []
    for _, fam in groupby(sorted(usable, key=rest), key=rest):
        fam = list(fam)
        if len({str(f.group[column]) for f in fam}) == len(fam) >= 2:
            out.append(fam)
    return out


def _scale_means(fit: FitResult) -> dict[float, float]:
    """Mean error at each observed scale."""
    x, err = fit.x[:, 0], _err(fit, fit.y)
    return {float(v): float(err[x == v].mean()) for v in np.unique(x)}


def decisions(
    fits: Sequence[FitResult],
    column: str = "objective",
    target_multiple: float = TARGET_MULTIPLE,
) -> dict[str, Any]:
    """Backtest the choice of ``column`` (the objective) in every family of curves that differ
    only in it.

    Per family, at x_L, the largest scale every member was measured at: the truth is the member
    with the lowest mean error at x_L; the fit's call refits each member (same law, no
    bootstrap) to its points below x_L and ranks their predictions at x_L; the baseline ranks the
    mean errors at the second-largest common scale. Members with no two common scales but the
    same number of them (a matched design in which the same diets give each objective its own
    sample count) are compared at each one's largest and second-largest scale instead. ``p_rank_change`` is the share of bootstrap
    draws (paired by index across members) whose ranking at ``target_multiple`` × x_max differs
    from their ranking at x_max.

    Returns:
        ``{"families": [...], "n_decisions", "fit_correct", "baseline_correct",
        "fit_rate", "baseline_rate"}``; rates are None without any decision.
    """
    rows = []
    for fam in _families(fits, column):
        names = [str(f.group[column]) for f in fam]
        rest = {k: v for k, v in fam[0].group.items() if k != column}
        row: dict[str, Any] = {"group": rest, "axis": fam[0].axis, "members": names}
        row.update(_rank_change(fam, target_multiple))
        row.update(_backtest(fam, names))
        rows.append(row)
    decided = [r for r in rows if r.get("truth") is not None]
    fit_ok = sum(r["fit_call"] == r["truth"] for r in decided)
    base_ok = sum(r["baseline_call"] == r["truth"] for r in decided)
    n = len(decided)
    return {
        "families": rows,
        "n_decisions": n,
        "fit_correct": fit_ok,
        "baseline_correct": base_ok,
        "fit_rate": fit_ok / n if n else None,
        "baseline_rate": base_ok / n if n else None,
    }


def _rank_change(fam: list[FitResult], multiple: float) -> dict[str, Any]:
    x_max = max(float(f.x.max()) for f in fam)
    at = {"x_max": x_max, "x_target": x_max * multiple}
    if any(f.boot is None for f in fam):
        return {**at, "p_rank_change": None}
    n = min(len(f.boot) for f in fam)
    logx = as_log_axes(np.array([x_max, x_max * multiple]), 1)
    errs = np.stack([f.spec.log_predict(f.boot[:n], logx) for f in fam])  # (M, B, 2)
    rank_now = np.argsort(errs[:, :, 0], axis=0, kind="stable")  # (M, B)
    rank_then = np.argsort(errs[:, :, 1], axis=0, kind="stable")
    changed = np.any(rank_now != rank_then, axis=0)
    return {**at, "p_rank_change": float(changed.mean())}


def _backtest(fam: list[FitResult], names: list[str]) -> dict[str, Any]:
    means = [_scale_means(f) for f in fam]
    common = sorted(set.intersection(*(set(m) for m in means)))
    note = ""
    if len(common) >= 2:
        held = [common[-1]] * len(fam)
        base = [common[-2]] * len(fam)
    elif len({len(m) for m in means}) == 1 and len(means[0]) >= 2:
        # a matched design whose members turn the same diets into different sample counts
        # (IBP trains on the unlabelled compounds' wells too): compare at each member's largest
        # and second-largest scale, the same diets
        held = [max(m) for m in means]
        base = [sorted(m)[-2] for m in means]
        note = (
            "no scale common to every member: compared at each one's largest and second-largest "
            "scale (the same points of a matched design)"
        )
    else:
        return {"truth": None, "note": "fewer than two scales every member was measured at"}
    truth = names[int(np.argmin([m[x] for m, x in zip(means, held, strict=True)]))]
    baseline = names[int(np.argmin([m[x] for m, x in zip(means, base, strict=True)]))]
    preds = []
    for f, x_l in zip(fam, held, strict=True):
        keep = f.x[:, 0] < x_l
        small = fit_law(
            f.x[keep, 0], f.y[keep], law=f.law, direction=f.direction, axis=f.axis, n_boot=0
        )
        if small.params is None:
            return {
                "truth": None,
                "x_held_out": x_l,
                "note": f"{f.group}: below {x_l:.4g}: {small.note}",
            }
        preds.append(float(_err(small, small.predict(np.array([[x_l]])))[0]))
    one = len(set(held)) == 1
    return {
        "truth": truth,
        "fit_call": names[int(np.argmin(preds))],
        "baseline_call": baseline,
        "x_held_out": held[0] if one else held,
        "x_baseline": base[0] if one else base,
        "note": note,
    }


def _scales_text(x: float | list[float], names: list[str]) -> str:
    if isinstance(x, list):
        return "(" + ", ".join(f"{n} {v:.3g}" for n, v in zip(names, x, strict=True)) + ")"
    return f"{x:.3g}"


def decision_section(fits: Sequence[FitResult], column: str = "objective") -> str:
    """The report's "Decisions" section (HTML); empty when no family compares ``column``."""
    d = decisions(fits, column)
    if not d["families"]:
        return ""
    items = []
    for r in d["families"]:
        where = ", ".join(f"{k}={v}" for k, v in r["group"].items()) or "all rows"
        p = r["p_rank_change"]
        text = (
            f"{where} along {','.join(r['axis'])}: P(ranking at {r['x_target']:.3g} differs from "
            f"that at {r['x_max']:.3g}) = {'—' if p is None else f'{p:.2f}'}; "
        )
        if r.get("truth") is None:
            text += f"no backtest ({r['note']})"
        else:
            held = _scales_text(r["x_held_out"], r["members"])
            base = _scales_text(r["x_baseline"], r["members"])
            text += (
                f"winner at {held}: {r['truth']}; called by the fit on smaller scales: "
                f"{r['fit_call']}; by ranking at {base}: {r['baseline_call']}"
                + (f" ({r['note']})" if r["note"] else "")
            )
        items.append(f"<li>{html.escape(text)}</li>")
    rates = (
        f"Called right: fit {d['fit_correct']}/{d['n_decisions']}, second-largest-scale "
        f"ranking {d['baseline_correct']}/{d['n_decisions']}."
        if d["n_decisions"]
        else "No family has two common scales and enough smaller ones to backtest."
    )
    return (
        f"<h2>Decisions</h2><p class=note>Which {html.escape(column)} wins at the largest "
        "measured scale, called by curves fitted to the smaller scales and by simply ranking "
        "at the second-largest scale (the DataDecide baseline), and how likely the ranking "
        f"changes by {TARGET_MULTIPLE:g}× the largest scale (bootstrap refits). "
        f"{html.escape(rates)}</p><ul>{''.join(items)}</ul>"
    )
