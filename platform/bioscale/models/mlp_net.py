"""The Pheno-CA MLP backbone as a torch module (see ``bioscale.models.mlp`` for the ladder)."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """Linear → BatchNorm → Dropout → GELU."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.BatchNorm1d(width)
        self.drop = nn.Dropout(dropout)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.norm(self.linear(x))))


class PhenoMLP(nn.Module):
    """(B, d_in) float32 profiles → (B, width) embeddings."""

    def __init__(self, in_features: int, *, width: int, depth: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed_dim = width
        self.stem = nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width))
        self.blocks = nn.ModuleList(Block(width, dropout) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for i, block in enumerate(self.blocks):
            # a residual around every other block: blocks 1, 3, 5, ... add their input
            h = block(h) + h if i % 2 == 1 else block(h)
        return h
