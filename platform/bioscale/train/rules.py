"""Named rules for the learning rate and the training budget, so exponents stay honest.

A scaling exponent measured with one fixed learning rate and epoch count for every size mixes the
law with the tuning. Studies name a rule instead of a bare number; every rule states its unit and
source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from bioscale.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class LRRule:
    """``rule`` picks the function; the other fields are its arguments.

    - ``constant``: lr = ``value`` for every rung (Pheno-CA used AdamW 1e-4).
    - ``kaplan``: lr(N) = 0.003239 − 0.0001395·ln N, N = non-embedding parameters
      (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", eq. D.1), clipped at 1e-6.
    - ``power``: lr(N) = ``value`` · (N / ``ref_n``)^(−``exponent``): a power law in N anchored at
      a tuned reference size (as in DeepSeek LLM 2024's lr ∝ C^−0.125, stated in N here).
    """

    rule: Literal["constant", "kaplan", "power"] = "constant"
    value: float = 1.0e-4
    ref_n: float | None = None
    exponent: float | None = None

    def __post_init__(self) -> None:
        if self.rule == "power" and (self.ref_n is None or self.exponent is None):
            raise ConfigError("lr rule 'power' needs ref_n and exponent")
        if self.value <= 0:
            raise ConfigError("lr value must be > 0")

    def resolve(self, n_params: int) -> float:
        """Learning rate (per step, AdamW) for a backbone of ``n_params`` parameters."""
        if self.rule == "constant":
            return self.value
        if self.rule == "kaplan":
            return max(0.003239 - 0.0001395 * math.log(n_params), 1e-6)
        return self.value * (n_params / self.ref_n) ** (-self.exponent)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """How long a trial trains; exactly one field is set.

    - ``epochs``: passes over the trial's diet (Pheno-CA: up to early stopping).
    - ``samples``: samples seen (a fixed compute budget in samples, whatever the diet size).
    - ``samples_per_parameter``: samples seen = ratio · N (a Chinchilla-style budget,
      Hoffmann et al. 2022 used ≈ 20 tokens per parameter).
    """

    epochs: int | None = None
    samples: float | None = None
    samples_per_parameter: float | None = None

    def __post_init__(self) -> None:
        set_fields = [
            n
            for n in ("epochs", "samples", "samples_per_parameter")
            if getattr(self, n) is not None
        ]
        if len(set_fields) != 1:
            raise ConfigError(
                "train.budget needs exactly one of epochs, samples, "
                f"samples_per_parameter (got {set_fields or 'none'})"
            )
        (name,) = set_fields
        value = getattr(self, name)
        if (name == "epochs" and value < 1) or value <= 0:  # nothing trained, yet a result logged
            raise ConfigError(
                f"train.budget.{name} must be {'>= 1' if name == 'epochs' else '> 0'}, got "
                f"{value!r}: a trial with no training would log probe metrics of an untrained "
                "model"
            )

    def resolve(self, n_params: int, d_samples: int) -> tuple[int, int | None]:
        """``(max_epochs, max_samples)`` for a rung of ``n_params`` on a diet of ``d_samples``."""
        if self.epochs is not None:
            return self.epochs, None
        samples = (
            self.samples if self.samples is not None else self.samples_per_parameter * n_params
        )
        samples = math.ceil(samples)
        return max(1, math.ceil(samples / max(d_samples, 1))), samples


@dataclass(frozen=True, kw_only=True)
class EarlyStopping:
    """Stop when ``val/loss`` has not improved by ``min_delta`` for ``patience`` epochs, counting
    only after ``warmup_epochs`` (Pheno-CA: patience 10 after 5 warm-up epochs)."""

    patience: int = 10
    warmup_epochs: int = 5
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        for name in ("patience", "warmup_epochs", "min_delta"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"train.early_stopping.{name} must be >= 0, got {getattr(self, name)!r}"
                )
