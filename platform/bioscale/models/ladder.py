"""The rung registry: every named model size of every family, including a tiny ``debug`` rung.

A rung is data (a frozen dataclass) that builds its backbone. ``N`` counts backbone parameters
only (heads belong to the objective and are logged as ``N_heads``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bioscale.registry import Registry

if TYPE_CHECKING:
    from torch import nn


class Rung(Protocol):
    """What every rung provides."""

    name: str
    family: str

    def build(self, in_features: int) -> nn.Module:
        """The backbone; its ``embed_dim`` attribute is the embedding width."""
        ...


RUNGS: Registry[Rung] = Registry("model rung")


def get_rung(name: str) -> Rung:
    """Look up a rung by name (the error lists the known rungs)."""
    import bioscale.models.mlp  # noqa: F401  (registers the profile ladder)

    return RUNGS.get(name)


def rung_names() -> list[str]:
    import bioscale.models.mlp  # noqa: F401

    return RUNGS.names()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
