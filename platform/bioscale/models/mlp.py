"""The Pheno-CA profile MLP ladder ("Mmd_resnet", arXiv 2309.16773; SEEDS §1).

Backbone: Linear(d_in→W) + BatchNorm, then L blocks of Linear → BatchNorm → Dropout(0.1) → GELU,
with a residual connection around every other block. The embedding is the last block's output
(width W); heads (Linear(W→classes)) come from the objective. Published grid: L ∈ {1, 3, 6, 9, 12},
W ∈ {128, 256, 512, 1024, 1512}; rungs are named ``mlp:w<W>-l<L>``, plus ``mlp:w64-l1`` (a small
rung for CPU studies) and ``debug``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bioscale.models.ladder import RUNGS

WIDTHS = (128, 256, 512, 1024, 1512)
DEPTHS = (1, 3, 6, 9, 12)


@dataclass(frozen=True, kw_only=True)
class MLPRung:
    """One size of the profile MLP."""

    name: str
    width: int
    depth: int
    dropout: float = 0.1
    family: str = "mlp"

    def build(self, input_shape: tuple[int, ...]):
        from bioscale.models.mlp_net import PhenoMLP

        if len(input_shape) != 1:
            raise ValueError(f"rung {self.name} needs profile inputs (F,), got shape {input_shape}")
        return PhenoMLP(input_shape[0], width=self.width, depth=self.depth, dropout=self.dropout)


RUNGS.register("debug", MLPRung(name="debug", width=32, depth=1))
RUNGS.register("mlp:w64-l1", MLPRung(name="mlp:w64-l1", width=64, depth=1))
for _w in WIDTHS:
    for _l in DEPTHS:
        RUNGS.register(f"mlp:w{_w}-l{_l}", MLPRung(name=f"mlp:w{_w}-l{_l}", width=_w, depth=_l))
