"""Bootstrap intervals for scaling-law fits (Besiroglu et al. 2024 showed that Chinchilla's
published intervals, which ignored this, were far too narrow).

Resampling, in log space (the space the Huber loss lives in):

- at a scale with m ≥ 2 points (seeds), the points are resampled with replacement around the
  scale's mean, deviations inflated by √(m/(m−1)) so that two or three seeds do not understate the
  spread (the plain bootstrap's variance is (m−1)/m of the sample variance);
- at a scale with one point, the fitted value plus a residual drawn from the fit's residuals,
  inflated by √(n/(n−P)) for the P fitted parameters (Davison & Hinkley 1997, §6.2.3).

Every refit is warm-started from the point estimate (the bootstrap sample is a small perturbation
of the data), which is what makes thousands of refits cheap.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: residuals at or below this size (the Huber δ) are points an L1-like fit interpolates
HUBER_RESID_FLOOR = 1e-3

Refit = Callable[[np.ndarray, np.ndarray], np.ndarray]


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


def bootstrap_thetas(
    refit: Refit,
    theta_hat: np.ndarray,
    logy: np.ndarray,
    fitted: np.ndarray,
    ids: np.ndarray,
    *,
    n_boot: int,
    seed: int = 0,
) -> np.ndarray:
    """``n_boot`` refits (B, P), each warm-started at ``theta_hat``.

    Args:
        refit: (log y replicate (n,), start θ (P,)) → fitted θ (P,).
        theta_hat: the point estimate (P,).
        logy: observed log errors (n,).
        fitted: the point fit's log predictions (n,).
        ids: scale id of each point (n,), from ``scale_ids``.
        n_boot: number of replicates.
        seed: the bootstrap's random seed (results are reproducible).
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(theta_hat)))
    for b in range(n_boot):
        out[b] = refit(resample(logy, fitted, ids, len(theta_hat), rng), theta_hat)
    return out


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
