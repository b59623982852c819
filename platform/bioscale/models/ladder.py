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

    def build(self, input_shape: tuple[int, ...]) -> nn.Module:
        """The backbone for per-sample inputs of ``input_shape`` ((F,) profiles, (C, H, W) images);
        its ``embed_dim`` attribute is the embedding width."""
        ...


RUNGS: Registry[Rung] = Registry("model rung")


def get_rung(name: str) -> Rung:
    """Look up a rung by name (the error lists the known rungs)."""
    _load_builtin()
    return RUNGS.get(name)


def rung_names() -> list[str]:
    _load_builtin()
    return RUNGS.names()


def _load_builtin() -> None:
    """Register the built-in ladders (profile MLP; timm image models; video models). Importing
    them is cheap: torch and timm load only when a rung is built."""
    import bioscale.models.features
    import bioscale.models.mlp
    import bioscale.models.timm_ladder
    import bioscale.models.video  # noqa: F401


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
