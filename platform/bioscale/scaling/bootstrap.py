"""Bootstrap intervals for scaling-law fits (Besiroglu et al. 2024 showed that Chinchilla's
published intervals, which ignored this, were far too narrow).

Two schemes (``SCHEMES``), both in log space (the space the Huber loss lives in):

``seeds`` (the default) keeps every scale and resamples what varies at it:

- at a scale with m ≥ 2 points (seeds), the points are resampled with replacement around the
  scale's mean, deviations inflated by √(m/(m−1)) so that two or three seeds do not understate the
  spread (the plain bootstrap's variance is (m−1)/m of the sample variance);
- at a scale with one point, the fitted value plus a residual drawn from the fit's residuals,
  inflated by √(n/(n−P)) for the P fitted parameters (Davison & Hinkley 1997, §6.2.3).

``cases`` is the plain case bootstrap (Efron & Tibshirani 1993, §9): n points drawn with
replacement from the n observed (x, y), as multiplicities (weights) of the summed Huber loss;
draws that keep fewer distinct scales than the law needs are drawn again. It assumes nothing about
the noise, and it is wider where a few scales drive the fit.

Every replicate is refitted from θ̂ *and* from the other distinct optima that the point fit's
refined grid starts reached (``fit.N_BOOT_OPTIMA``), all replicates × starts in one batched search,
so a replicate whose optimum lies in another basin finds it: refits warm-started at θ̂ alone stay
in θ̂'s basin and give too-narrow intervals.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bioscale.errors import BioscaleError

#: residuals at or below this size (the Huber δ) are points an L1-like fit interpolates
HUBER_RESID_FLOOR = 1e-3

#: the resampling schemes (see the module docstring)
SCHEMES = ("seeds", "cases")
#: draws of one case-bootstrap replicate before giving up on enough distinct scales
_CASE_TRIES = 100

#: (log y replicates (B, n), case weights (B, n) or None) → fitted θ (B, P)
RefitBatch = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def scale_ids(logX: np.ndarray) -> np.ndarray:
    """log X (K, n) → (n,) integer id of each point's distinct scale."""
    _, inverse = np.unique(np.round(logX.T, 9), axis=0, return_inverse=True)
    return inverse.reshape(-1)


def resample(
    logy: np.ndarray,
    fitted: np.ndarray,
    ids: np.ndarray,
    n_params: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One bootstrap replicate of log y (n,) (see the module docstring for the scheme)."""
    out = np.empty_like(logy)
    n = len(logy)
    resid = logy - fitted
    inflate = np.sqrt(n / (n - n_params)) if n > n_params else 1.0
    singles = []
    for s in np.unique(ids):
        idx = np.flatnonzero(ids == s)
        m = len(idx)
        if m == 1:
            singles.append(idx[0])
            continue
        mean = logy[idx].mean()
        dev = logy[idx] - mean
        out[idx] = mean + np.sqrt(m / (m - 1)) * rng.choice(dev, size=m, replace=True)
    if singles:
        pool = resid[singles] if len(singles) >= 3 else resid
        # a Huber fit with δ = 1e-3 behaves like an L1 fit: about P residuals are ~0 (the curve
        # passes through those points); they carry no information about the noise
        informative = pool[np.abs(pool) > HUBER_RESID_FLOOR]
        pool = informative if len(informative) >= 2 else pool
        out[singles] = fitted[singles] + inflate * rng.choice(pool, size=len(singles))
    return out


def case_weights(
    ids: np.ndarray, n_boot: int, min_scales: int, rng: np.random.Generator
) -> np.ndarray:
    """Multiplicities (B, n) of ``n_boot`` case-bootstrap draws, each keeping ≥ ``min_scales``
    distinct scales (when the data has them)."""
    n = len(ids)
    out = np.empty((n_boot, n))
    for b in range(n_boot):
        for _ in range(_CASE_TRIES):
            counts = rng.multinomial(n, np.full(n, 1.0 / n))
            if len(np.unique(ids[counts > 0])) >= min_scales:
                break
        out[b] = counts
    return out


def bootstrap_thetas(
    refit: RefitBatch,
    theta_hat: np.ndarray,
    logy: np.ndarray,
    fitted: np.ndarray,
    ids: np.ndarray,
    *,
    n_boot: int,
    seed: int = 0,
    scheme: str = "seeds",
    min_scales: int = 1,
) -> np.ndarray:
    """``n_boot`` refits (B, P).

    Args:
        refit: (log y replicates (B, n), case weights (B, n) or None) → fitted θ (B, P).
        theta_hat: the point estimate (P,).
        logy: observed log errors (n,).
        fitted: the point fit's log predictions (n,).
        ids: scale id of each point (n,), from ``scale_ids``.
        n_boot: number of replicates.
        seed: the bootstrap's random seed (results are reproducible).
        scheme: one of ``SCHEMES``.
        min_scales: distinct scales a ``cases`` replicate must keep.
    """
    if scheme not in SCHEMES:
        raise BioscaleError(f"unknown bootstrap scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    rng = np.random.default_rng(seed)
    if scheme == "cases":
        return refit(
            np.broadcast_to(logy, (n_boot, len(logy))), case_weights(ids, n_boot, min_scales, rng)
        )
    Y = np.stack([resample(logy, fitted, ids, len(theta_hat), rng) for _ in range(n_boot)])
    return refit(Y, None)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float | None]:
    """[lo, hi] percentile interval of ``values`` (B,); +∞ draws (no solution in that replicate)
    count as draws above every finite value, and a bound that lands on them is ``None``."""
    v = np.sort(np.asarray(values, dtype=float))
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return [None, None]
    q = (1.0 - level) / 2.0
    out: list[float | None] = []
    for p in (q, 1.0 - q):
        pos = p * (len(v) - 1)
        lo, hi = v[int(np.floor(pos))], v[int(np.ceil(pos))]
        val = lo + (hi - lo) * (pos - np.floor(pos)) if np.isfinite(hi) else hi
        out.append(float(val) if np.isfinite(val) else None)
    return out
