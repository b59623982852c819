"""Scaling laws, one registry. Each power law is fitted in log space with a log-sum-exp
parametrisation (Hoffmann et al. 2022, approach 3), which keeps every term positive and the loss
well scaled; ``log_linear`` (err = a + b·log10 x) is linear in its parameters and is fitted in
closed form by weighted least squares (``Law.design``).

Shapes used throughout: ``theta`` is ``(..., P)`` (a batch of parameter vectors in the optimiser's
space), ``logX`` is ``(K, n)`` (log of the K axes of n points), and a law's ``log_predict`` returns
``(..., n)``; ``jac`` takes ``theta`` (..., P) and returns ``(log ŷ (..., n), ∂log ŷ/∂θ
(..., P, n))``, for L-BFGS-B on one θ and for the batched Levenberg–Marquardt search
(``scaling.optim``) on many.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy.special import expit

from bioscale.registry import Registry

#: Bounds on log-space amplitudes and on exponents: wide enough for any curve seen in practice
#: (Chinchilla's a = log 406, b = log 411 at N ~ 1e9), narrow enough to keep exp() finite.
LOG_BOUND = (-30.0, 40.0)
EXPONENT_BOUND = (0.0, 10.0)


@dataclass(frozen=True, kw_only=True)
class Law:
    """A law err(x) in log space.

    Attributes:
        name: registry name.
        formula: the law, for reports.
        axes: how many axes it takes (1, or 2 for ``chinchilla``: N then D).
        param_names: the reported parameters, in ``theta`` order.
        log_params: which reported parameters are exp(θ_i) (amplitudes, floors, breaks).
        log_predict: (θ (..., P), log X (K, n)) → log ŷ (..., n).
        jac: (θ (..., P), log X) → (log ŷ (..., n), ∂log ŷ/∂θ (..., P, n)).
        init_grid: (log X, log y) → coarse starting points (S, P), data-relative.
        bounds: (log X) → one (lo, hi) per θ_i for L-BFGS-B.
        floor_name: the parameter that is the law's floor at infinite scale (all axes).
        log_floor: (θ (..., P), index of the axis that grows, log X of the point (K,)) → log of
            the error left when that axis alone grows without bound (..., ); for one-axis laws
            the floor, for chinchilla E + A/N^α at fixed N (along D) or E + B/D^β (along N).
        exponent_names: per axis, the parameter (or sum of parameters) that is its exponent at the
            largest scales.
        exponent_sign: ``exponent`` is this sign times that sum, so that a larger exponent always
            means a faster fall in error (−1 for ``log_linear``, whose slope b is negative then).
        exponent_symbols: per axis, how the exponent reads in plots (``α``, ``β``, ``−b``).
        design: for a law linear in θ in the error's own scale, log X (K, n) → the design matrix
            (n, P) with err = design @ θ; such a law is fitted by closed-form weighted least
            squares (``optim.linear_lstsq``) instead of the Huber search. None: a log-space law.
        solve: closed-form inverse (θ (B, P), target error, index of the axis that grows, log X
            of the point (K,)) → (B,) scales where the error falls to the target (+∞ where it
            never does as that axis grows); None: forecasts search a grid.
        describe: (params, ci95, axis name) → the clause of a report sentence on how the error
            scales; None: the power-law sentence (exponent and floor).
    """

    name: str
    formula: str
    axes: int
    param_names: tuple[str, ...]
    log_params: frozenset[str]
    log_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
    jac: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    init_grid: Callable[[np.ndarray, np.ndarray], np.ndarray]
    bounds: Callable[[np.ndarray], list[tuple[float, float]]]
    floor_name: str | None
    log_floor: Callable[[np.ndarray, int, np.ndarray], np.ndarray]
    exponent_names: tuple[tuple[str, ...], ...]
    exponent_sign: float = 1.0
    exponent_symbols: tuple[str, ...] = ("α", "β")
    design: Callable[[np.ndarray], np.ndarray] | None = None
    solve: Callable[[np.ndarray, float, int, np.ndarray], np.ndarray] | None = None
    describe: (
        Callable[[dict[str, float], dict[str, list[float | None] | None], str], str] | None
    ) = None

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @property
    def min_scales(self) -> int:
        """Distinct scales a point fit needs: at least 4, and at least one per parameter."""
        return max(4, self.n_params)

    def to_params(self, theta: np.ndarray) -> dict[str, float]:
        return {
            k: float(np.exp(t)) if k in self.log_params else float(t)
            for k, t in zip(self.param_names, theta, strict=True)
        }

    def to_theta(self, params: dict[str, float]) -> np.ndarray:
        return np.array(
            [np.log(params[k]) if k in self.log_params else params[k] for k in self.param_names]
        )

    def params_array(self, thetas: np.ndarray) -> np.ndarray:
        """(B, P) θ → (B, P) reported parameters."""
        out = np.array(thetas, dtype=float, copy=True)
        for i, k in enumerate(self.param_names):
            if k in self.log_params:
                out[:, i] = np.exp(out[:, i])
        return out

    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """ŷ at scales ``x`` ((n,) for one axis, (n, K) otherwise)."""
        return np.exp(self.log_predict(theta, as_log_axes(x, self.axes)))

    def exponent(self, params: dict[str, float], axis_index: int = 0) -> float:
        return self.exponent_sign * float(sum(params[k] for k in self.exponent_names[axis_index]))

    def exponent_ci(
        self, ci95: dict[str, list[float | None] | None], axis_index: int = 0
    ) -> list[float | None] | None:
        """The exponent's 95% interval when it is one parameter (sign applied), else None."""
        names = self.exponent_names[axis_index]
        ci = ci95.get(names[0]) if len(names) == 1 else None
        if not ci or self.exponent_sign > 0:
            return ci
        lo, hi = ci
        return [None if hi is None else -hi, None if lo is None else -lo]


def as_log_axes(x: np.ndarray, axes: int) -> np.ndarray:
    """Scales (n,) or (n, K) → log X (K, n)."""
    x = np.asarray(x, dtype=float)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    if x.shape[1] != axes:
        raise ValueError(f"law takes {axes} axis(es), got points with {x.shape[1]}")
    return np.log(x).T


def _cols(theta: np.ndarray) -> list[np.ndarray]:
    """θ (..., P) → P arrays of shape (..., 1) that broadcast against (n,)."""
    theta = np.asarray(theta, dtype=float)
    return [theta[..., i, None] for i in range(theta.shape[-1])]


def _stack(*arrays: np.ndarray, axis: int = 0) -> np.ndarray:
    """Broadcast, then stack: T arrays of (..., n) → (T, ..., n) (``axis=0``) or (..., T, n)."""
    return np.stack(np.broadcast_arrays(*arrays), axis=axis)


def _lse_jac(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """terms (T, ..., n) → (log Σ exp terms (..., n), softmax weights (T, ..., n)), one exp pass."""
    m = terms.max(axis=0)
    e = np.exp(terms - m)
    total = e.sum(axis=0)
    return m + np.log(total), e / total


def _lse(terms: np.ndarray) -> np.ndarray:
    """log Σ exp over the first axis of (T, ..., n) → (..., n)."""
    m = terms.max(axis=0)
    return m + np.log(np.exp(terms - m).sum(axis=0))


def _amplitude_grid(logX: np.ndarray, logy: np.ndarray, exps: np.ndarray) -> np.ndarray:
    """Data-relative amplitude starts: log A ≈ mean log y + α·mean log x, shifted."""
    return float(np.mean(logy)) + exps * float(np.mean(logX))


def _floor_grid(logy: np.ndarray) -> np.ndarray:
    """Floor starts as fractions of the smallest observed error."""
    return float(np.min(logy)) + np.log([0.01, 0.1, 0.3, 0.6, 0.9])


# power: err = E + A·x^−α; θ = (log E, log A, α) -------------------------------------------


def _power_log_predict(theta: np.ndarray, logX: np.ndarray) -> np.ndarray:
    e, a, alpha = _cols(theta)
    L = logX[0]
    return np.logaddexp(e + 0.0 * L, a - alpha * L)


def _power_jac(theta: np.ndarray, logX: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e, a, alpha = _cols(theta)
    L = logX[0]
    lse, w = _lse_jac(_stack(e, a - alpha * L))
    return lse, _stack(w[0], w[1], -w[1] * L, axis=-2)


def _power_grid(logX: np.ndarray, logy: np.ndarray) -> np.ndarray:
    rows = []
    for e, al, shift in product(_floor_grid(logy), (0.05, 0.2, 0.4, 0.7, 1.0, 1.5), (-2, 0, 2)):
        rows.append((e, _amplitude_grid(logX[0], logy, np.array(al)) + shift, al))
    return np.array(rows, dtype=float)


LAWS: Registry[Law] = Registry("scaling law")

LAWS.register(
    "power",
    Law(
        name="power",
        formula="err = E + A·x^(−α)",
        axes=1,
        param_names=("E", "A", "alpha"),
        log_params=frozenset({"E", "A"}),
        log_predict=_power_log_predict,
        jac=_power_jac,
        init_grid=_power_grid,
        bounds=lambda logX: [LOG_BOUND, LOG_BOUND, EXPONENT_BOUND],
        floor_name="E",
        log_floor=lambda theta, along, logx: np.asarray(theta)[..., 0],
        exponent_names=(("alpha",),),
    ),
)

# pure_power: err = A·x^−α; θ = (log A, α) ----------------------------------------------------


def _pure_log_predict(theta: np.ndarray, logX: np.ndarray) -> np.ndarray:
    a, alpha = _cols(theta)
    return a - alpha * logX[0]


def _pure_jac(theta: np.ndarray, logX: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, alpha = _cols(theta)
    L = logX[0]
    lp = a - alpha * L
    return lp, _stack(np.ones_like(lp), -L + 0.0 * lp, axis=-2)


LAWS.register(
    "pure_power",
    Law(
        name="pure_power",
        formula="err = A·x^(−α)",
        axes=1,
        param_names=("A", "alpha"),
        log_params=frozenset({"A"}),
        log_predict=_pure_log_predict,
        jac=_pure_jac,
        init_grid=lambda logX, logy: np.array(
            [
                (_amplitude_grid(logX[0], logy, np.array(al)) + s, al)
                for al in (0.05, 0.2, 0.5, 1.0, 2.0)
                for s in (-2, 0, 2)
            ]
        ),
        bounds=lambda logX: [LOG_BOUND, EXPONENT_BOUND],
        floor_name=None,
        log_floor=lambda theta, along, logx: np.full(np.shape(theta)[:-1], -np.inf),
        exponent_names=(("alpha",),),
    ),
)

# chinchilla: err = E + A/N^α + B/D^β (Hoffmann et al. 2022, eq. 2); θ = (e, a, α, b, β) ------


def _chin_log_predict(theta: np.ndarray, logX: np.ndarray) -> np.ndarray:
    e, a, alpha, b, beta = _cols(theta)
    LN, LD = logX
    return _lse(_stack(e + 0.0 * LN, a - alpha * LN, b - beta * LD))


def _chin_jac(theta: np.ndarray, logX: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e, a, alpha, b, beta = _cols(theta)
    LN, LD = logX
    lse, w = _lse_jac(_stack(e + 0.0 * LN, a - alpha * LN, b - beta * LD))
    return lse, _stack(w[0], w[1], -w[1] * LN, w[2], -w[2] * LD, axis=-2)


def _chin_grid(logX: np.ndarray, logy: np.ndarray) -> np.ndarray:
    """A coarse 5×5×4×5×4 = 2,000-start grid (the published one has 4,500 starts)."""
    exps = np.array([0.1, 0.3, 0.6, 1.0])
    e, sa, al, sb, be = np.meshgrid(
        _floor_grid(logy), (-3, -1.5, 0, 1.5, 3), exps, (-3, -1.5, 0, 1.5, 3), exps, indexing="ij"
    )
    half = float(np.mean(logy)) - np.log(2.0)  # two terms share the error above the floor
    a = half + al * float(np.mean(logX[0])) + sa
    b = half + be * float(np.mean(logX[1])) + sb
    return np.stack([e, a, al, b, be], axis=-1).reshape(-1, 5)


def _chin_log_floor(theta: np.ndarray, along: int, logx: np.ndarray) -> np.ndarray:
    t = np.asarray(theta)
    if along == 1:  # D grows at fixed N: E + A/N^α
        return np.logaddexp(t[..., 0], t[..., 1] - t[..., 2] * logx[0])
    return np.logaddexp(t[..., 0], t[..., 3] - t[..., 4] * logx[1])  # N grows at fixed D


LAWS.register(
    "chinchilla",
    Law(
        name="chinchilla",
        formula="err = E + A·N^(−α) + B·D^(−β)",
        axes=2,
        param_names=("E", "A", "alpha", "B", "beta"),
        log_params=frozenset({"E", "A", "B"}),
        log_predict=_chin_log_predict,
        jac=_chin_jac,
        init_grid=_chin_grid,
        bounds=lambda logX: [LOG_BOUND, LOG_BOUND, EXPONENT_BOUND, LOG_BOUND, EXPONENT_BOUND],
        floor_name="E",
        log_floor=_chin_log_floor,
        exponent_names=(("alpha",), ("beta",)),
    ),
)

# broken power law (Caballero et al. 2022, "Broken Neural Scaling Laws", one break):
# err = a + b·x^−c0·(1 + (x/d1)^(1/f1))^(−c1·f1); θ = (log a, log b, c0, c1, log d1, log f1) --


def _bnsl_log_predict(theta: np.ndarray, logX: np.ndarray) -> np.ndarray:
    la, lb, c0, c1, ld, lf = _cols(theta)
    L = logX[0]
    f = np.exp(lf)
    bend = f * np.logaddexp(0.0, (L - ld) / f)  # f·log(1 + (x/d)^(1/f))
    return np.logaddexp(la + 0.0 * L, lb - c0 * L - c1 * bend)


def _bnsl_jac(theta: np.ndarray, logX: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    la, lb, c0, c1, ld, lf = _cols(theta)
    L = logX[0]
    f = np.exp(lf)
    u = (L - ld) / f
    sp, sig = np.logaddexp(0.0, u), expit(u)
    lse, w = _lse_jac(_stack(la + 0.0 * L, lb - c0 * L - c1 * f * sp))
    d1 = _stack(np.ones_like(u), -L, -f * sp, c1 * sig, -c1 * f * (sp - u * sig))
    return lse, np.moveaxis(np.concatenate([w[:1], w[1] * d1]), 0, -2)


def _bnsl_grid(logX: np.ndarray, logy: np.ndarray) -> np.ndarray:
    L = logX[0]
    rows = []
    for la, c0, c1, q, lf in product(
        _floor_grid(logy)[[0, 2, 4]],
        (0.05, 0.3, 0.8),
        (-0.5, 0.0, 0.5, 1.0),
        (0.25, 0.5, 0.75),
        np.log([0.3, 1.0]),
    ):
        rows.append((la, _amplitude_grid(L, logy, np.array(c0)), c0, c1, np.quantile(L, q), lf))
    return np.array(rows, dtype=float)


def _bnsl_bounds(logX: np.ndarray) -> list[tuple[float, float]]:
    L = logX[0]
    return [
        LOG_BOUND,
        LOG_BOUND,
        (-1.0, 10.0),
        (-10.0, 10.0),
        (float(L.min()) - 1.0, float(L.max()) + 1.0),  # the break lies near the data
        (np.log(0.05), np.log(10.0)),
    ]


LAWS.register(
    "broken_power",
    Law(
        name="broken_power",
        formula="err = a + b·x^(−c0)·(1 + (x/d1)^(1/f1))^(−c1·f1)",
        axes=1,
        param_names=("a", "b", "c0", "c1", "d1", "f1"),
        log_params=frozenset({"a", "b", "d1", "f1"}),
        log_predict=_bnsl_log_predict,
        jac=_bnsl_jac,
        init_grid=_bnsl_grid,
        bounds=_bnsl_bounds,
        floor_name="a",
        log_floor=lambda theta, along, logx: np.asarray(theta)[..., 0],
        exponent_names=(("c0", "c1"),),
    ),
)

# m4 (Alabdulmohsin, Neyshabur & Zhai 2022, "Revisiting Neural Scaling Laws", estimator M4):
# (err − E)/(e0 − err)^α = β·x^(−c), with e0 = E + b the random-guess error; it bends at both ends
# (err → e0 at small x, err − E ∝ x^(−c) at large x). Predictions solve the implicit equation:
# with w = err − E = b·s, s = σ(t) ∈ (0, 1), it reads q(t) = log s − α·log(1 − s)
# = log β − c·log x − (1 − α)·log b, q increasing in t; θ = (log E, log b, log β, c, α) -------

#: Newton iterations of the implicit M4 solve at most; each point stops once its step is below
#: ``M4_TOL`` (q is monotone and convex or concave in t, so from the asymptotic start Newton
#: converges, in under 10 iterations on the curves tried)
M4_NEWTON = 50
M4_TOL = 1e-11
#: the logit t = log(s/(1 − s)) stays in this range (s down to ~e^−700, the smallest float)
M4_T_BOUND = 700.0


def _softplus(u: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, u)


def _m4_t(lb: np.ndarray, lbeta: np.ndarray, c: np.ndarray, alpha: np.ndarray, L: np.ndarray):
    """The logit t (..., n) of s = w/b, solving q(t) = −softplus(−t) + α·softplus(t) = r.

    With α = 0 and r ≥ 0 there is no root (err would reach e0): t is then the upper bound."""
    r = lbeta - c * L - (1.0 - alpha) * lb
    r, alpha = np.broadcast_arrays(r, alpha)
    shape = r.shape
    r, alpha = r.ravel(), alpha.ravel()
    # asymptotes: s ≈ e^r for r ≪ 0 (t ≈ r); α·t ≈ r for r ≫ 0
    with np.errstate(divide="ignore"):
        t = np.where(r < 0, r, r / np.maximum(alpha, 1e-300))
    t = np.clip(t, -M4_T_BOUND, M4_T_BOUND)
    active = np.flatnonzero(~((alpha <= 0) & (r >= 0)))
    t[(alpha <= 0) & (r >= 0)] = M4_T_BOUND
    for _ in range(M4_NEWTON):
        if not len(active):
            break
        ta, aa = t[active], alpha[active]
        # one exp and one log1p: softplus(±t) = max(±t, 0) + log1p(e^−|t|), σ(±t) from e^−|t|
        e = np.exp(-np.abs(ta))
        l1p = np.log1p(e)
        pos = ta >= 0
        sp_t = np.where(pos, ta, 0.0) + l1p
        sp_neg = np.where(pos, 0.0, -ta) + l1p
        sig_t = np.where(pos, 1.0, e) / (1.0 + e)
        q = -sp_neg + aa * sp_t - r[active]
        dq = (1.0 - sig_t) + aa * sig_t
        step = np.clip(q / np.maximum(dq, 1e-300), -50.0, 50.0)
        t[active] = np.clip(ta - step, -M4_T_BOUND, M4_T_BOUND)
        active = active[np.abs(step) >= M4_TOL]
    return t.reshape(shape)


def _m4_log_predict(theta: np.ndarray, logX: np.ndarray) -> np.ndarray:
    le, lb, lbeta, c, alpha = _cols(theta)
    L = logX[0]
    t = _m4_t(lb, lbeta, c, alpha, L)
    return np.logaddexp(le + 0.0 * L, lb - _softplus(-t))  # log(E + b·σ(t))


def _m4_jac(theta: np.ndarray, logX: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Implicit differentiation of H(t, θ) = −softplus(−t) + α·softplus(t) − r(θ) = 0."""
    le, lb, lbeta, c, alpha = _cols(theta)
    L = logX[0]
    t = _m4_t(lb, lbeta, c, alpha, L)
    lw = lb - _softplus(-t)  # log w
    lse, wt = _lse_jac(_stack(le + 0.0 * L, lw))
    dH_dt = expit(-t) + alpha * expit(t)
    dlw_dt = expit(-t) / dH_dt  # ∂log w/∂t · (1 / ∂H/∂t)
    # ∂H/∂θ: log b: (1 − α); log β: −1; c: L; α: softplus(t) − log b
    d_lb = 1.0 - dlw_dt * (1.0 - alpha)
    d_lbeta = dlw_dt
    d_c = -dlw_dt * L
    d_alpha = -dlw_dt * (_softplus(t) - lb)
    w = wt[1]
    return lse, _stack(wt[0], w * d_lb, w * d_lbeta, w * d_c, w * d_alpha, axis=-2)


def _m4_grid(logX: np.ndarray, logy: np.ndarray) -> np.ndarray:
    """Floors below the smallest error, e0 a little to well above the largest, and β placed so
    the curve passes near the median point."""
    L = logX[0]
    mid = int(np.argsort(logy)[len(logy) // 2])
    y_mid, L_mid, y_max = float(np.exp(logy[mid])), float(L[mid]), float(np.exp(logy.max()))
    rows = []
    for le, e0_scale, c, alpha in product(
        _floor_grid(logy), (1.001, 1.05, 1.5, 3.0), (0.05, 0.2, 0.5, 1.0), (0.0, 0.5, 1.0, 2.0)
    ):
        E = float(np.exp(le))
        b = e0_scale * y_max - E
        w = y_mid - E
        if b <= 0 or w <= 0 or w >= b:
            continue
        lbeta = np.log(w) - alpha * np.log(b - w) + c * L_mid
        rows.append((le, np.log(b), lbeta, c, alpha))
    return np.array(rows, dtype=float)


def _m4_describe(
    params: dict[str, float], ci95: dict[str, list[float | None] | None], axis: str
) -> str:
    ci = ci95.get("c")
    per = f" (95% CI {_fmt_ci(ci)})" if ci else ""
    e0 = params["E"] + params["b"]
    return (
        f"error falls from near e0 = {e0:.3g} toward a floor E = {params['E']:.3g}, as "
        f"{axis}^−{params['c']:.3g}{per} at the largest scales (M4, bend α = {params['alpha']:.3g})"
    )


LAWS.register(
    "m4",
    Law(
        name="m4",
        formula="(err − E)/(e0 − err)^α = β·x^(−c), e0 = E + b",
        axes=1,
        param_names=("E", "b", "beta", "c", "alpha"),
        log_params=frozenset({"E", "b", "beta"}),
        log_predict=_m4_log_predict,
        jac=_m4_jac,
        init_grid=_m4_grid,
        bounds=lambda logX: [LOG_BOUND, LOG_BOUND, LOG_BOUND, EXPONENT_BOUND, EXPONENT_BOUND],
        floor_name="E",
        log_floor=lambda theta, along, logx: np.asarray(theta)[..., 0],
        exponent_names=(("c",),),
        exponent_symbols=("c",),
        describe=_m4_describe,
    ),
)

# log_linear: err = a + b·log10 x, the straight line in log x that Pheno-CA (arXiv 2309.16773)
# compared its power laws against; θ = (a, b), linear in θ, so no iterative optimiser ----------

LN10 = float(np.log(10.0))


def _loglin_design(logX: np.ndarray) -> np.ndarray:
    """log X (1, n) → design matrix (n, 2): columns 1 and log10 x."""
    return np.column_stack([np.ones_like(logX[0]), logX[0] / LN10])


def _loglin_line(theta: np.ndarray, logX: np.ndarray) -> np.ndarray:
    """a + b·log10 x (..., n), unclipped."""
    a, b = _cols(theta)
    return a + b * (logX[0] / LN10)


#: below this error the log of the line is continued linearly (C¹), so log-space losses and
#: gradients stay finite where the line reaches 0; the error it gives there, exp(·), is 0
LOGLIN_EPS = 1e-12


def _loglin_log_predict(theta: np.ndarray, logX: np.ndarray) -> np.ndarray:
    """log of the error: log(line) above ``LOGLIN_EPS``, its tangent continuation below."""
    line = _loglin_line(theta, logX)
    return np.where(
        line > LOGLIN_EPS,
        np.log(np.maximum(line, LOGLIN_EPS)),
        np.log(LOGLIN_EPS) + (line - LOGLIN_EPS) / LOGLIN_EPS,
    )


def _loglin_jac(theta: np.ndarray, logX: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    line = _loglin_line(theta, logX)
    inv = 1.0 / np.maximum(line, LOGLIN_EPS)  # ∂log ŷ/∂line
    return _loglin_log_predict(theta, logX), _stack(inv, inv * (logX[0] / LN10), axis=-2)


def _loglin_start(logX: np.ndarray, logy: np.ndarray) -> np.ndarray:
    """One start (1, 2): the unweighted least-squares line through the errors."""
    coef, *_ = np.linalg.lstsq(_loglin_design(logX), np.exp(logy), rcond=None)
    return coef[None, :]


def _loglin_log_floor(theta: np.ndarray, along: int, logx: np.ndarray) -> np.ndarray:
    """No floor: a falling line reaches error 0 (log −∞); a rising one grows without bound (+∞);
    a flat one stays at a."""
    t = np.asarray(theta, dtype=float)
    a, b = t[..., 0], t[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        flat = np.where(a > 0, np.log(np.where(a > 0, a, 1.0)), -np.inf)
    return np.where(b < 0, -np.inf, np.where(b > 0, np.inf, flat))


def _loglin_solve(theta: np.ndarray, target_err: float, along: int, logx: np.ndarray) -> np.ndarray:
    """x = 10^((target − a)/b) where the line falls (b < 0); +∞ where it does not."""
    t = np.atleast_2d(np.asarray(theta, dtype=float))
    a, b = t[:, 0], t[:, 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = np.power(10.0, (target_err - a) / np.where(b < 0, b, -1.0))
    return np.where(b < 0, x, np.inf)


def _loglin_describe(
    params: dict[str, float], ci95: dict[str, list[float | None] | None], axis: str
) -> str:
    a, b = params["a"], params["b"]
    ci = ci95.get("b")
    per = f" (95% CI of b {_fmt_ci(ci)})" if ci else ""
    if b >= 0:
        return (
            f"error changes by {b:+.3g} per decade of {axis}{per}, a straight line in log10 {axis} "
            "that does not fall: more data along it does not help"
        )
    zero = 10.0 ** (-a / b)
    return (
        f"error falls by {-b:.3g} per decade of {axis}{per}, a straight line in log10 {axis} "
        f"with no floor (it would reach 0 at {axis} ≈ {zero:,.3g})"
    )


def _fmt_ci(ci: list[float | None]) -> str:
    return "[" + ", ".join("—" if v is None else f"{v:.3g}" for v in ci) + "]"


LAWS.register(
    "log_linear",
    Law(
        name="log_linear",
        formula="err = a + b·log10(x)",
        axes=1,
        param_names=("a", "b"),
        log_params=frozenset(),
        log_predict=_loglin_log_predict,
        jac=_loglin_jac,
        init_grid=_loglin_start,
        bounds=lambda logX: [(-np.inf, np.inf), (-np.inf, np.inf)],
        floor_name=None,
        log_floor=_loglin_log_floor,
        exponent_names=(("b",),),
        exponent_sign=-1.0,
        exponent_symbols=("−b",),
        design=_loglin_design,
        solve=_loglin_solve,
        describe=_loglin_describe,
    ),
)

from bioscale.scaling import constrained as _constrained  # noqa: E402, F401  (data_constrained)
