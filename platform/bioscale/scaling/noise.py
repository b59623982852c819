"""Seed-to-seed noise of a curve's points, pooled across its scales: what the bootstrap resamples
(``scaling.bootstrap``) and what a new run's prediction interval adds (``scaling.predict``).

Noise lives where the fits live, on the log error. At each scale with m ≥ 2 runs the sample
variance s² of log error has k = m − 1 degrees of freedom; across scales it is pooled as a
function of the level, log σ = a + b·log err (Porian et al. 2024 pool seed variation across
scales as a function of the loss). ``level_slope`` estimates b by weighted least squares of the
bias-corrected log s² (mean log σ² + ψ(k/2) − log(k/2), variance ψ′(k/2)); with fewer than
``MIN_SCALES_SLOPE`` scales with repeats, a level range narrower than ``MIN_LEVEL_SPAN``, or a
slope within two standard errors of 0, b = 0 and σ is the pooled constant (Σ k·s² / Σ k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, polygamma

#: scales with repeated runs needed to fit how seed noise changes with the level
MIN_SCALES_SLOPE = 3
#: a slope also needs the level (log error) of those scales to span at least this much
MIN_LEVEL_SPAN = 0.1


def scale_ids(logX: np.ndarray) -> np.ndarray:
    """log X (K, n) → (n,) integer id of each point's distinct scale."""
    _, inverse = np.unique(np.round(logX.T, 9), axis=0, return_inverse=True)
    return inverse.reshape(-1)


def scale_groups(ids: np.ndarray) -> list[np.ndarray]:
    """The point indices of each distinct scale, from ``scale_ids``."""
    return [np.flatnonzero(ids == s) for s in np.unique(ids)]


@dataclass(frozen=True)
class Spreads:
    """Per scale with repeated, not all equal, runs: its mean log error (``levels``), sample
    variance (``variances``, ddof 1) and degrees of freedom (``dofs``, m − 1)."""

    levels: np.ndarray
    variances: np.ndarray
    dofs: np.ndarray

    @property
    def dof(self) -> int:
        return int(self.dofs.sum())


def spreads(log_err: np.ndarray, ids: np.ndarray) -> Spreads:
    levels, variances, dofs = [], [], []
    for idx in scale_groups(ids):
        v = log_err[idx]
        if len(v) >= 2 and np.var(v) > 0:
            levels.append(float(v.mean()))
            variances.append(float(np.var(v, ddof=1)))
            dofs.append(len(v) - 1)
    return Spreads(np.array(levels), np.array(variances), np.array(dofs, dtype=float))


def level_slope(levels: np.ndarray, variances: np.ndarray, dofs: np.ndarray) -> float:
    """b in log σ = a + b·log err (see the module docstring); 0 unless the data show it."""
    if len(levels) < MIN_SCALES_SLOPE or np.ptp(levels) < MIN_LEVEL_SPAN:
        return 0.0
    y = np.log(variances) - (digamma(dofs / 2) - np.log(dofs / 2))
    w = 1.0 / polygamma(1, dofs / 2)
    X = np.column_stack([np.ones_like(levels), levels])
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    coef = cov @ X.T @ (w * y)
    return float(coef[1] / 2.0) if abs(coef[1]) > 2.0 * np.sqrt(cov[1, 1]) else 0.0
