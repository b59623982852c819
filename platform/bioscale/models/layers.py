"""A model's feature layers by name, shallow to deep (no torch needed to pick among names).

``layer_names(model)``: a module that defines ``feature_layer_names()`` names its own (the profile
MLP: ``stem``, ``blocks.0`` …); a timm model lists the stages/blocks of its ``feature_info``.
``pick_layers(names, layers)`` resolves a study's ``probe.layers`` / ``alignment.neural[].layers``
(names or indices) against them. ``bioscale.eval.layers`` re-exports both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

#: ``layers`` value meaning every layer of the model.
ALL = "all"


def layer_names(model: nn.Module) -> list[str]:
    """The model's feature layers, shallow to deep (module paths of ``model.named_modules()``).

    Raises:
        ValueError: naming the model's type, when it exposes no feature layers.
    """
    own = getattr(model, "feature_layer_names", None)
    if callable(own):
        return list(own())
    info = getattr(model, "feature_info", None)
    if info:
        # timm: a list of {"module": ..., "num_chs": ..., "reduction": ...} (or a FeatureInfo)
        names = info.module_name() if hasattr(info, "module_name") else [f["module"] for f in info]
        return list(names)
    raise ValueError(
        f"{type(model).__name__} exposes no feature layers: layer search needs a timm model "
        "(feature_info) or a module with feature_layer_names()"
    )


def pick_layers(names: Sequence[str], layers: str | Sequence[str | int] | None = ALL) -> list[str]:
    """The requested layers among a model's ``names`` (``layer_names``), shallow to deep:
    ``all``/``None`` → every layer; otherwise names or integer indices (negative: from the
    deepest).

    Raises:
        ValueError: naming the unknown layer and the model's layers.
    """
    names = list(names)
    if layers is None or layers == ALL:
        return names
    wanted: set[str] = set()
    for item in layers:
        if isinstance(item, int):
            if not -len(names) <= item < len(names):
                raise ValueError(f"layer index {item} out of range: the model has {len(names)}")
            wanted.add(names[item])
        elif item in names:
            wanted.add(item)
        else:
            raise ValueError(f"unknown layer {item!r}; this model's layers: {', '.join(names)}")
    return [n for n in names if n in wanted]
