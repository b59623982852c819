"""Scaling laws, one registry. Each law is fitted in log space with a log-sum-exp parametrisation
(Hoffmann et al. 2022, approach 3), which keeps every term positive and the loss well scaled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from bioscale.registry import Registry


@dataclass(frozen=True, kw_only=True)
class Law:
    """A law y(x) with parameters θ in log space.

    Attributes:
        name: registry name.
        formula: the law, for reports.
        theta_names: names of the optimised parameters (log-space where prefixed ``log_``).
        log_predict: (θ, log x) → log ŷ.
        to_params: θ → the reported parameters (e.g. ``E``, ``A``, ``alpha``).
        init_grid: starting points for L-BFGS.
    """

    name: str
    formula: str
    theta_names: tuple[str, ...]
    log_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
    to_params: Callable[[np.ndarray], dict[str, float]]
    init_grid: Callable[[], list[np.ndarray]]

    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.exp(self.log_predict(theta, np.log(np.asarray(x, dtype=float))))


LAWS: Registry[Law] = Registry("scaling law")


def _power_log_predict(theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
    e, a, alpha = theta
    # log(E + A·x^−α) = LSE(e, a − α·log x), E = exp(e), A = exp(a)
    return logsumexp(np.stack([np.full_like(logx, e), a - alpha * logx]), axis=0)


def _power_grid() -> list[np.ndarray]:
    return [
        np.array([e, a, al])
        for e in (-6.0, -3.0, -1.5, -0.5, 0.0)
        for a in (-1.0, 1.0, 3.0, 6.0)
        for al in (0.05, 0.2, 0.5, 1.0, 2.0)
    ]


LAWS.register(
    "power",
    Law(
        name="power",
        formula="y = E + A·x^(−α)",
        theta_names=("log_E", "log_A", "alpha"),
        log_predict=_power_log_predict,
        to_params=lambda t: {
            "E": float(np.exp(t[0])),
            "A": float(np.exp(t[1])),
            "alpha": float(t[2]),
        },
        init_grid=_power_grid,
    ),
)

LAWS.register(
    "pure_power",
    Law(
        name="pure_power",
        formula="y = A·x^(−α)",
        theta_names=("log_A", "alpha"),
        log_predict=lambda t, logx: t[0] - t[1] * logx,
        to_params=lambda t: {"A": float(np.exp(t[0])), "alpha": float(t[1])},
        init_grid=lambda: [
            np.array([a, al]) for a in (-1.0, 1.0, 3.0, 6.0) for al in (0.05, 0.2, 0.5, 1.0, 2.0)
        ],
    ),
)
