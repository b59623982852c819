"""The Pheno-CA MLP backbone as a torch module (see ``bioscale.models.mlp`` for the ladder)."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """Linear → BatchNorm → Dropout → GELU, plus the block's input when ``residual``."""

    def __init__(self, width: int, dropout: float, residual: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.BatchNorm1d(width)
        self.drop = nn.Dropout(dropout)
        self.act = nn.GELU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.drop(self.norm(self.linear(x))))
        return out + x if self.residual else out


class PhenoMLP(nn.Module):
    """(B, d_in) float32 profiles → (B, width) embeddings."""

    def __init__(self, in_features: int, *, width: int, depth: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed_dim = width
        self.stem = nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width))
        # a residual around every other block: blocks 1, 3, 5, ... add their input
        self.blocks = nn.ModuleList(
            Block(width, dropout, residual=i % 2 == 1) for i in range(depth)
        )

    def feature_layer_names(self) -> list[str]:
        """The hidden layers, shallow to deep (``bioscale.eval.layers``): the stem, then every
        block (its output includes its residual); the last is the embedding."""
        return ["stem", *(f"blocks.{i}" for i in range(len(self.blocks)))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return h


class RawFeatures(nn.Module):
    """The identity on profile features (rung ``features:raw``): no parameters; the embedding is
    the input."""

    def __init__(self, d_in: int) -> None:
        super().__init__()
        self.embed_dim = d_in

    def feature_layer_names(self) -> list[str]:
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
