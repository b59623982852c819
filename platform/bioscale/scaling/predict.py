"""Predictions at new scales, with two intervals (ARCHITECTURE's prediction JSON):

- ``ci95``: where the fitted *mean curve* lies, the percentile interval of the bootstrap refits
  (``FitResult.boot``) at the point;
- ``pi95``: where *a new run's value* lies: each bootstrap curve plus a draw of seed-to-seed
  noise, so it is the wider one.

Seed noise lives where the fits live, on the log error. It is estimated from the seeds a study
has, pooled across scales as a function of the metric's level, log σ = a + b·log err
(``scaling.noise``: the same pooled noise the bootstrap resamples).

A study with one run per scale has no seed spread: σ then falls back to the fit residuals,
√(Σ r²/(n − P)) of the P-parameter fit (which also absorbs any lack of fit), or, where larger,
the RMS of the out-of-sample log residuals of the curve's own rolling backtest
(``selection.own_backtest``: refit without the largest scales, predict them), because the points
of one training curve share their deviations and in-sample residuals understate a new run's.
Every prediction says which (``noise.source``, ``note``). New-run draws are Student-t with the
noise estimate's degrees of freedom, so a σ from few runs widens the interval.

``--law auto`` (``fit_auto``) chooses one law per curve by its rolling backtest, and that law
gives ``value`` and ``ci95`` (its mean-curve interval). Its bootstrap alone knows only that law's
shape, so a curve that flattens where the chosen law keeps falling lies outside its band: on
published language curves that band held 84.5% of the held-out points. ``pi95`` therefore
averages the candidate laws (``average_laws``): every candidate is fitted to the same points
with bootstrap refits, weighted by pseudo-Bayesian model averaging over its out-of-sample
predictive density on the curve's own rolling backtest (``fold_log_density``, ``law_weights``;
each fold counted once), and the band is the weighted mixture of all candidates' new-run draws
(each bootstrap curve plus seed noise), widened where needed to contain the chosen law's own
band. The held-out points of a validation are used for nothing (benchmarks/predict_validation.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from bioscale.errors import BioscaleError
from bioscale.scaling.fit import N_BOOT, FitResult, fit_law
from bioscale.scaling.laws import as_log_axes
from bioscale.scaling.noise import level_slope, scale_ids, spreads
from bioscale.scaling.selection import choose_law, law_backtests, own_backtest, refit

#: noise draws per bootstrap curve for ``pi95`` (B × K Monte-Carlo samples per point)
DRAWS_PER_CURVE = 25
#: σ of log error never falls below this (a curve through every point)
MIN_SD = 1e-9
#: new-run draws per candidate law in ``--law auto``'s averaged band (bootstrap curves × noise
#: draws, at least ``DRAWS_PER_CURVE`` per curve)
MIX_DRAWS = 5000
#: candidate laws below this weight are not named in a prediction's note
MIN_WEIGHT = 0.01

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


def seed_noise(fit: FitResult, *, backtest: dict[str, Any] | str | None = "compute") -> SeedNoise:
    """The fit's seed-noise model (see the module docstring).

    Args:
        backtest: ``selection.own_backtest`` of the fit's law on its points if already computed
            (None: it cannot be backtested); by default computed here where the residual
            fallback needs it.

    Raises:
        BioscaleError: the fit has no parameters, or too few points for residual degrees of
            freedom.
    """
    if fit.params is None:
        raise BioscaleError(f"no {fit.law} fit to predict from: {fit.note}")
    spec = fit.spec
    le = _log_err(fit)
    logX = as_log_axes(fit.x, spec.axes)
    sp = spreads(le, scale_ids(logX))
    if len(sp.levels):
        lv, var, k = sp.levels, sp.variances, sp.dofs
        slope = level_slope(lv, var, k)
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
    bt = (
        own_backtest(fit.x, fit.y, fit.law, direction=fit.direction, axis=fit.axis)
        if isinstance(backtest, str)
        else backtest
    )
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


# law auto: the prediction band averaged over the candidate laws -------------------------------


@dataclass(frozen=True, kw_only=True)
class LawMember:
    """One candidate law of a ``--law auto`` fit: its fit to the curve's points (with bootstrap
    refits), its seed-noise model and its weight in the averaged prediction band."""

    fit: FitResult
    noise: SeedNoise
    weight: float


@dataclass(frozen=True, kw_only=True)
class AutoFit(FitResult):
    """A ``--law auto`` fit: the chosen law's fit (its parameters, value, ``ci95``, JSON), plus
    the candidate laws (``members``, the chosen one included) whose weighted new-run draws make
    its ``pi95`` (``average_laws``)."""

    members: tuple[LawMember, ...] = field(default=(), repr=False, compare=False)

    @property
    def weights(self) -> dict[str, float]:
        """``{law: weight}`` of the averaged prediction band, in candidate order."""
        return {m.fit.law: m.weight for m in self.members}

    def member(self, law: str) -> LawMember | None:
        return next((m for m in self.members if m.fit.law == law), None)


def fold_log_density(backtest: dict[str, Any], noise: SeedNoise) -> float:
    """The law's out-of-sample predictive log density on the curve's own rolling backtest: per
    fold (``selection.own_backtest``: refit without the largest scales, predict them), the mean
    over its held-out runs of the Student-t log density (``noise``'s σ at the predicted level and
    degrees of freedom) of their log residuals, summed over folds. A fold counts once, not once
    per run: its held-out runs share one refit's error, so they are not independent evidence."""
    resid = np.asarray(backtest["log_residuals"], dtype=float)
    level = np.asarray(backtest["log_predicted"], dtype=float)
    total, start = 0.0, 0
    for m in backtest["fold_runs"]:
        r, lv = resid[start : start + m], level[start : start + m]
        start += m
        ok = np.isfinite(r) & np.isfinite(lv)
        if not ok.any():
            return float("-inf")  # a prediction at or below 0 in error: no density
        total += float(np.mean(stats.t.logpdf(r[ok], noise.dof, scale=noise.sd(lv[ok]))))
    return total


def law_weights(densities: dict[str, float]) -> dict[str, float]:
    """Pseudo-Bayesian model averaging weights from out-of-sample log densities (Geisser & Eddy
    1979; Yao et al. 2018, "Using stacking to average Bayesian predictive distributions"; here of
    a leave-future-out backtest, Bürkner, Gabry & Vehtari 2020): w ∝ exp(elpd), summing to 1; a
    law with no density (−∞) gets 0."""
    top = max(densities.values())
    raw = {k: float(np.exp(v - top)) if np.isfinite(v) else 0.0 for k, v in densities.items()}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def average_laws(
    fit: FitResult,
    backtests: dict[str, dict[str, Any] | None],
    *,
    n_boot: int,
    boot_seed: int = 0,
    bootstrap_scheme: str = "seeds",
) -> AutoFit:
    """The ``--law auto`` fit of a curve: ``fit`` (the chosen law's) plus every other candidate
    of ``backtests`` (``selection.law_backtests`` of the same points) fitted to the same points
    with ``n_boot`` refits, each weighted by ``law_weights`` of its ``fold_log_density``.

    The chosen law is the one whose *value* extrapolates best (the simplest within one standard
    error of the best backtest), but its bootstrap only knows that law's shape: a curve that
    bends where the law cannot is outside its band. The weighted candidates carry that law
    uncertainty into ``pi95`` (``bands``). A candidate that cannot be backtested, fitted or given
    a noise model (too few scales or residual degrees of freedom) is left out; where the chosen
    law itself cannot be backtested (too few scales for any candidate), or no candidate has a
    finite backtest density, it is the only one weighted; where it has no noise model, there
    are no members (and no pi95).
    """
    members: list[tuple[FitResult, SeedNoise, float]] = []
    chosen_bt = backtests.get(fit.law)
    for law, bt in backtests.items():
        if law != fit.law and (bt is None or chosen_bt is None):
            continue
        member = (
            fit
            if law == fit.law
            else refit(
                fit, law, n_boot=n_boot, boot_seed=boot_seed, bootstrap_scheme=bootstrap_scheme
            )
        )
        if member.params is None:
            continue
        try:
            noise = seed_noise(member, backtest=bt)
        except BioscaleError:  # no residual degrees of freedom: no new-run draws
            continue
        density = fold_log_density(bt, noise) if bt is not None else 0.0
        members.append((member, noise, density))
    if not any(m.law == fit.law for m, _, _ in members):
        members = []  # the chosen law has no new-run draws: no pi95 to average (``predict``)
    elif not any(np.isfinite(d) for _, _, d in members):
        members = [(m, nz, 0.0 if m.law == fit.law else d) for m, nz, d in members]
    weights = law_weights({m.law: d for m, _, d in members}) if members else {}
    fields = {f.name: getattr(fit, f.name) for f in dataclasses.fields(FitResult)}
    return AutoFit(
        **fields,
        members=tuple(LawMember(fit=m, noise=nz, weight=weights[m.law]) for m, nz, _ in members),
    )


def fit_auto(
    x: np.ndarray,
    y: np.ndarray,
    *,
    direction: str = "lower",
    metric: str = "",
    axis: list[str] | tuple[str, ...] = ("D",),
    group: dict[str, Any] | None = None,
    seeds: list[Any] | None = None,
    n_boot: int = N_BOOT,
    boot_seed: int = 0,
    bootstrap_scheme: str = "seeds",
) -> tuple[AutoFit, dict[str, Any]]:
    """``--law auto`` on one curve: every candidate's rolling backtest on the points
    (``selection.law_backtests``), the law they choose (``selection.choose_law``) fitted with
    ``n_boot`` refits, and the candidates that average into its prediction band
    (``average_laws``).

    Returns:
        (the fit, the choice: ``choose_law``'s dict plus ``pi95_weights``, ``{law: weight}``).
    """
    axis = list(axis)
    backtests = law_backtests(x, y, direction=direction, axis=axis)
    choice = choose_law(x, y, direction=direction, axis=axis, group=group, backtests=backtests)
    fit = fit_law(
        x,
        y,
        law=choice["law"],
        direction=direction,
        metric=metric,
        axis=axis,
        group=group,
        seeds=seeds,
        n_boot=n_boot,
        boot_seed=boot_seed,
        bootstrap_scheme=bootstrap_scheme,
    )
    auto = average_laws(
        fit, backtests, n_boot=n_boot, boot_seed=boot_seed, bootstrap_scheme=bootstrap_scheme
    )
    return auto, {**choice, "pi95_weights": auto.weights}


def _describe_weights(fit: AutoFit) -> str:
    ranked = sorted(fit.members, key=lambda m: -m.weight)
    shown = ", ".join(f"{m.fit.law} {m.weight:.2f}" for m in ranked if m.weight >= MIN_WEIGHT)
    return (
        f"pi95 averages the candidate laws' new-run draws, weighted by their backtest predictive "
        f"density on the curve's own points ({shown}), and contains {fit.law}'s own; value and "
        f"ci95 are {fit.law}'s"
    )


def _weighted_quantiles(samples: np.ndarray, weights: np.ndarray, qs: list[float]) -> np.ndarray:
    """Quantiles (len(qs), n) of weighted samples (S, n) with weights (S,), per column: the
    smallest sample whose cumulative weight reaches q."""
    order = np.argsort(samples, axis=0)
    ordered = np.take_along_axis(samples, order, axis=0)
    cum = np.cumsum(weights[order], axis=0)
    cum /= cum[-1]
    cols = np.arange(samples.shape[1])
    return np.stack([ordered[np.argmax(cum >= q, axis=0), cols] for q in qs])


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One point of ARCHITECTURE's prediction JSON (plus ``law``, ``metric``, ``noise``,
    ``note`` and, for ``--law auto``, ``law_weights``, the candidate laws' weights in ``pi95``,
    which readers may ignore); values and intervals in the metric's own terms."""

    group: dict[str, Any]
    at: dict[str, float]
    value: float | None
    ci95: list[float] | None
    pi95: list[float] | None
    law: str
    metric: str = ""
    noise: dict[str, Any] | None = None
    note: str = ""
    law_weights: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
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
        if self.law_weights is not None:
            out["law_weights"] = self.law_weights
        return out


def _new_run_draws(
    fit: FitResult, noise: SeedNoise, logX: np.ndarray, rng: np.random.Generator, per_curve: int
) -> np.ndarray:
    """New-run values (B·per_curve, n) in the metric's terms: each bootstrap curve (or the point
    fit, without refits) plus ``per_curve`` Student-t draws of seed noise on the log error."""
    spec = fit.spec
    thetas = fit.boot if fit.boot is not None else spec.to_theta(fit.params)[None, :]
    lp = spec.log_predict(thetas, logX)  # (B, n)
    draws = stats.t.rvs(noise.dof, size=(len(lp), per_curve, 1), random_state=rng)
    sampled = lp[:, None, :] + draws * noise.sd(lp)[:, None, :]  # (B, K, n)
    return fit.to_metric(np.exp(sampled.reshape(-1, lp.shape[-1])))


def _averaged_band(
    fit: AutoFit, logX: np.ndarray, q: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The weighted mixture of the members' new-run draws, its [q, 1 − q] quantiles (each
    member ≈ ``MIX_DRAWS`` draws, weighted by its weight over its number of draws)."""
    samples, weights = [], []
    for i, m in enumerate(fit.members):
        if m.weight <= 0.0:
            continue
        n_curves = len(m.fit.boot) if m.fit.boot is not None else 1
        per_curve = max(DRAWS_PER_CURVE, -(-MIX_DRAWS // n_curves))
        draws = _new_run_draws(m.fit, m.noise, logX, np.random.default_rng([seed, i]), per_curve)
        samples.append(draws)
        weights.append(np.full(len(draws), m.weight / len(draws)))
    lo, hi = _weighted_quantiles(np.concatenate(samples), np.concatenate(weights), [q, 1.0 - q])
    return lo, hi


def _noise(fit: FitResult) -> SeedNoise:
    own = fit.member(fit.law) if isinstance(fit, AutoFit) else None
    return own.noise if own is not None else seed_noise(fit)


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

    For an ``AutoFit`` (``--law auto``) with more than one weighted candidate law, the
    prediction band is the quantile band of the weighted mixture of every candidate's new-run
    draws (``average_laws``), widened where needed to contain the chosen law's own band (law
    uncertainty only adds to it); the value and the confidence band are the chosen law's.

    Args:
        fit: a fit with parameters (with ``boot`` for the confidence band).
        x: scales (n,) or (n, K).
        noise: the seed-noise model (default: the fit's, ``seed_noise``).
        seed: the random seed of the noise draws (results are reproducible).

    Returns:
        (value (n,), (ci lo, ci hi) or None without bootstrap refits, (pi lo, pi hi)).
    """
    noise = noise or _noise(fit)
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
        metric = _new_run_draws(fit, noise, logX, np.random.default_rng(seed), DRAWS_PER_CURVE)
        lo, hi = np.quantile(metric, [q, 1.0 - q], axis=0)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    if isinstance(fit, AutoFit) and sum(m.weight > 0.0 for m in fit.members) > 1:
        mix_lo, mix_hi = _averaged_band(fit, logX, q, seed)
        lo, hi = np.minimum(lo, mix_lo), np.maximum(hi, mix_hi)
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
    averaged = isinstance(fit, AutoFit) and sum(m.weight > 0.0 for m in fit.members) > 1
    try:
        noise: SeedNoise | None = _noise(fit)
    except BioscaleError as err:  # no residual degrees of freedom: no pi95, and say why
        noise = None
        value, ci, pi = fit.predict(x), fit.band(x), None
        notes = [f"no pi95: {err}"]
    else:
        value, ci, pi = bands(fit, x, noise=noise, seed=seed)
        notes = [noise.describe()]
        if averaged:
            notes.append(_describe_weights(fit))
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
            law_weights=fit.weights if isinstance(fit, AutoFit) else None,
        )
        for i in range(len(x))
    ]
