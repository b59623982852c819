"""``features:raw``: the input features as they are — no parameters, no training.

"The CellProfiler features as they are" is the baseline any learned representation must beat.
As a rung it is a trial like any other: the study's plan gives it N = 0, zero epochs and zero
FLOPs, and its trial skips training and evaluates the raw features with the study's probes and
tasks (one trial stands for every diet, objective and seed: none of them changes an untrained
embedding). Profile studies only: raw pixels are not a representation to probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from bioscale.models.ladder import RUNGS

#: The family of rungs that are not trained (``plan`` and the trial driver ask for it by name).
TRAINLESS_FAMILY = "features"


@dataclass(frozen=True, kw_only=True)
class FeaturesRung:
    name: str
    family: str = TRAINLESS_FAMILY

    def build(self, input_shape: tuple[int, ...]):
        from bioscale.models.mlp_net import RawFeatures

        if len(input_shape) != 1:
            raise ValueError(
                f"rung {self.name} evaluates profile features as they are; it needs profile "
                f"inputs (F,), got shape {input_shape}"
            )
        return RawFeatures(input_shape[0])


def is_trainless(rung: str) -> bool:
    """Whether ``rung`` is never trained (its trials only evaluate)."""
    from bioscale.models.ladder import get_rung

    return get_rung(rung).family == TRAINLESS_FAMILY


RUNGS.register("features:raw", FeaturesRung(name="features:raw"))
