"""The objective registry: ``supervised``, ``ibp``, ``harmonized``, ``mae``, ``tracking`` (one
file each).

A study names an objective as a string or ``{name: ..., params: {...}}``; ``build`` validates the
params against the objective's ``Params`` dataclass (unknown keys are errors naming the key).
"""

from __future__ import annotations

from typing import Any

from bioscale.config import from_mapping
from bioscale.objectives.base import Objective
from bioscale.registry import Registry

OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register(cls: type[Objective]) -> type[Objective]:
    OBJECTIVES.register(cls.name, cls)
    return cls


def _load_builtin() -> None:
    from bioscale.objectives import harmonized, ibp, mae, supervised, tracking  # noqa: F401


def get(name: str) -> type[Objective]:
    _load_builtin()
    return OBJECTIVES.get(name)


def names() -> list[str]:
    _load_builtin()
    return OBJECTIVES.names()


def build(name: str, params: dict[str, Any] | None = None, where: str = "objective") -> Objective:
    """Build a configured objective, validating ``params``."""
    cls = get(name)
    return cls(from_mapping(cls.Params, params or {}, f"{where}.params"))
