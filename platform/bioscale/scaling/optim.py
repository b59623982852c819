"""Minimising the summed Huber loss of log residuals for many starts at once.

``lm_batch`` runs a damped Gauss–Newton (Levenberg–Marquardt) iteration on a batch of problems in
one array program: the Huber loss is majorised by weighted least squares (weights 1 inside δ,
δ/|r| outside; iteratively reweighted least squares, Holland & Welsch 1977), so each accepted step
lowers the loss; steps are projected onto the law's bounds. Hundreds of starts, or a bootstrap's
replicates × starts, cost about as much as a few scalar L-BFGS-B runs. ``polish`` finishes the
best candidate with L-BFGS-B (analytic gradient, tight tolerances).

Shapes: ``logX`` (K, n); ``logy`` and ``weights`` (n,) or (B, n); ``starts`` (B, P).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from bioscale.scaling.laws import Law

HUBER_DELTA = 1e-3
#: tight tolerances: the Huber loss of a good fit is ~1e-6, and a refit that stops at scipy's
#: default relative tolerance leaves bootstrap replicates at their warm start (too-narrow CIs)
LBFGS_OPTIONS = {"ftol": 1e-14, "gtol": 1e-10, "maxiter": 2000}
#: Levenberg–Marquardt: iterations, initial damping, and the damping at which a start is stuck
LM_MAX_ITER = 200
LM_DAMPING = 1e-3
LM_STUCK = 1e8
#: a start has converged when its step moves no θ_i by more than this
LM_STEP_TOL = 1e-7
#: problems per array program (bounds memory: chunk × P × n floats for the Jacobian)
LM_CHUNK = 512
#: two optima closer than this in every θ_i (log amplitudes, exponents) are the same basin
SAME_BASIN = 1e-2


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    return np.clip(r, -delta, delta)


def bounds_arrays(spec: Law, logX: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo (P,), hi (P,)) of the law's L-BFGS-B bounds."""
    b = spec.bounds(logX)
    return np.array([v[0] for v in b], dtype=float), np.array([v[1] for v in b], dtype=float)


def losses(
    spec: Law,
    logX: np.ndarray,
    logy: np.ndarray,
    thetas: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Summed (weighted) Huber loss of each θ (B, P) → (B,); non-finite → +∞."""
    h = huber(spec.log_predict(thetas, logX) - logy)
    total = (h if weights is None else weights * h).sum(axis=-1)
    return np.where(np.isfinite(total), total, np.inf)


def lm_batch(
    spec: Law,
    logX: np.ndarray,
    logy: np.ndarray,
    starts: np.ndarray,
    weights: np.ndarray | None = None,
    max_iter: int = LM_MAX_ITER,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise from every start; problem b fits ``logy[b]`` with ``weights[b]`` when those are
    (B, n). Returns (θ (B, P), loss (B,))."""
    starts = np.atleast_2d(np.asarray(starts, dtype=float))
    B = len(starts)
    Y = np.broadcast_to(logy, (B, logy.shape[-1]))
    W = None if weights is None else np.broadcast_to(weights, (B, logy.shape[-1]))
    thetas, out = np.empty_like(starts), np.empty(B)
    for s in range(0, B, LM_CHUNK):
        sl = slice(s, s + LM_CHUNK)
        thetas[sl], out[sl] = _lm_chunk(
            spec, logX, Y[sl], starts[sl], None if W is None else W[sl], max_iter
        )
    return thetas, out


def _lm_chunk(
    spec: Law,
    logX: np.ndarray,
    Y: np.ndarray,
    starts: np.ndarray,
    W: np.ndarray | None,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = bounds_arrays(spec, logX)
    theta = np.clip(starts, lo, hi)
    f = losses(spec, logX, Y, theta, W)
    lam = np.full(len(theta), LM_DAMPING)
    active = np.flatnonzero(np.isfinite(f))
    P = theta.shape[1]
    eye = np.eye(P)
    for _ in range(max_iter):
        if not len(active):
            break
        t, y = theta[active], Y[active]
        w_case = 1.0 if W is None else W[active]
        lp, J = spec.jac(t, logX)  # (b, n), (b, P, n)
        r = lp - y
        a = np.abs(r)
        w = w_case * np.where(a <= HUBER_DELTA, 1.0, HUBER_DELTA / np.maximum(a, HUBER_DELTA))
        g = np.einsum("bpn,bn->bp", J, w * r)
        H = np.einsum("bpn,bqn->bpq", J * w[:, None, :], J)
        d = np.diagonal(H, axis1=1, axis2=2)
        scale = d + 1e-12 * (d.max(axis=1, keepdims=True) + 1e-300)
        A = H + (lam[active, None] * scale)[:, :, None] * eye
        with np.errstate(all="ignore"):
            try:
                step = -np.linalg.solve(A, g[..., None])[..., 0]
            except np.linalg.LinAlgError:  # a θ_i no point depends on (a zero row of J)
                step = -(np.linalg.pinv(A) @ g[..., None])[..., 0]
        step = np.where(np.isfinite(step), step, 0.0)
        new = np.clip(t + step, lo, hi)
        fn = losses(spec, logX, y, new, None if W is None else W[active])
        better = fn < f[active]
        idx_b = active[better]
        moved = np.max(np.abs(new - t), axis=1)
        theta[idx_b], f[idx_b] = new[better], fn[better]
        lam[active] = np.where(better, lam[active] / 3.0, lam[active] * 4.0)
        done = (better & (moved <= LM_STEP_TOL)) | (lam[active] >= LM_STUCK)
        active = active[~done]
    return theta, f


def polish(
    spec: Law,
    logX: np.ndarray,
    logy: np.ndarray,
    start: np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """L-BFGS-B from one start (P,), analytic gradient. Returns (θ (P,), loss)."""
    bounds = spec.bounds(logX)
    lo, hi = bounds_arrays(spec, logX)
    w = 1.0 if weights is None else weights

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        lp, J = spec.jac(theta, logX)
        r = lp - logy
        return float((w * huber(r)).sum()), J @ (w * huber_grad(r))

    res = minimize(
        loss_grad,
        np.clip(start, lo, hi),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options=LBFGS_OPTIONS,
    )
    return np.asarray(res.x, dtype=float), float(res.fun)


def linear_lstsq(
    design: np.ndarray, err: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Closed-form fits of a law linear in θ (``Law.design``): weighted least squares of the
    errors ``err`` (B, n) on ``design`` (n, P), each point weighted by 1/err² (times its case
    weight (B, n), if given). The relative weights make Σ((err − ŷ)/err)² the objective, to first
    order the squared log residual every other law fits, so a point with a small error counts as
    much as one with a large error. Returns θ (B, P)."""
    err = np.atleast_2d(np.asarray(err, dtype=float))
    W = np.broadcast_to(1.0 if weights is None else weights, err.shape) / err**2
    out = np.empty((len(err), design.shape[1]))
    for b in range(len(err)):
        sw = np.sqrt(W[b])
        out[b] = np.linalg.lstsq(design * sw[:, None], err[b] * sw, rcond=None)[0]
    return out


def distinct(thetas: np.ndarray, loss: np.ndarray, tol: float = SAME_BASIN) -> np.ndarray:
    """Indices of the finite-loss θ (B, P) that are distinct basins, best loss first."""
    kept: list[int] = []
    for i in np.argsort(loss):
        if not np.isfinite(loss[i]):
            break
        if all(np.max(np.abs(thetas[i] - thetas[k])) > tol for k in kept):
            kept.append(int(i))
    return np.array(kept, dtype=int)
