"""Layer search: each probe picks (layer, regularisation) on the probe validation wells.

With ``probe: {selection: search}`` the trial embeds its probe rows at every layer of
``probe.layers`` in one pass (``bioscale.eval.layers``); every task that fits a probe (``moa``,
``target``) fits each readout on each layer's ``probe_train`` wells — the readout choosing its own
regularisation (C, or the MLP's epoch) on ``probe_val`` as always — and keeps the layer whose
selected readout has the best ``probe_val`` top-1 (ties: the deeper layer). Only that choice is
scored on the test splits, under the usual keys ``probe/<task>/<split>/<metric>``, so a test
split never influences the choice. Tasks that fit no probe (leakage, retrieval) read the last
layer.

Logged besides the usual keys, per readout prefix (``probe/<task>``, ``probe/<task>_mlp``):
``best_layer`` (the chosen layer's index in ``layer_names``), ``best_layer_depth`` (that index /
(number of layers − 1): 0 the first layer, 1 the embedding) and ``layer/<i>/val_top1`` (the
validation curve); the trial's ``layer_search.json`` artifact names the layers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: The trial artifact (and the final-report entry carrying its JSON text) of the per-layer
#: validation curves.
CURVES_ARTIFACT = "layer_search.json"
#: Probe-batch columns of per-layer embeddings: ``layer:<index>/<count>:<name>``.
_COLUMN = re.compile(r"^layer:(\d+)/(\d+):(.+)$")


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One searched layer's probe rows."""

    name: str
    index: int  # position in ``layer_names(model)``
    count: int  # number of layers of the model
    z: np.ndarray  # (n, d) embeddings (raw in a probe batch; normalised in ``ProbeRows``)

    @property
    def depth(self) -> float:
        """Relative depth in [0, 1]: 0 the first feature layer, 1 the embedding."""
        return self.index / max(self.count - 1, 1)


def layer_column(index: int, count: int, name: str) -> str:
    """The probe-batch column holding layer ``name`` (``index`` of ``count`` layers)."""
    return f"layer:{index}/{count}:{name}"


def layer_columns(model, layers) -> dict[str, str]:
    """``{layer name: probe-batch column}`` of the layers ``layers`` selects in ``model``
    (``bioscale.eval.layers.resolve_layers``), shallow to deep."""
    from bioscale.eval.layers import layer_names, resolve_layers

    names = layer_names(model)
    return {n: layer_column(names.index(n), len(names), n) for n in resolve_layers(model, layers)}


def layers_of(columns: Mapping[str, np.ndarray]) -> list[Layer]:
    """The per-layer embedding columns of a probe batch, shallow to deep."""
    found = []
    for key, value in columns.items():
        match = _COLUMN.match(key)
        if match:
            index, count, name = int(match[1]), int(match[2]), match[3]
            found.append(Layer(name=name, index=index, count=count, z=value))
    return sorted(found, key=lambda layer: layer.index)


def is_embedding_column(key: str) -> bool:
    """``emb`` and the per-layer columns: what sites → wells averaging averages."""
    return key == "emb" or _COLUMN.match(key) is not None


#: one readout fit on one layer's rows → (selected, {split: scores}, validation top-1)
FitLayer = Callable[[np.ndarray], tuple[dict[str, float], dict[str, dict[str, float]], float]]


@dataclass(frozen=True, kw_only=True)
class LayerChoice:
    """The layer a readout picked on validation, its test scores, and the validation curve."""

    layer: Layer
    selected: dict[str, float]
    scores: dict[str, dict[str, float]]
    curve: list[tuple[Layer, float]]  # (layer, validation top-1), shallow to deep

    def metrics(self, prefix: str) -> dict[str, float]:
        out = {
            f"{prefix}/best_layer": float(self.layer.index),
            f"{prefix}/best_layer_depth": self.layer.depth,
        }
        out |= {f"{prefix}/layer/{layer.index}/val_top1": v for layer, v in self.curve}
        return out


def search_layers(layers: Sequence[Layer], fit: FitLayer) -> LayerChoice:
    """Fit one readout on every layer; keep the best validation top-1 (ties: the deeper layer).

    Args:
        layers: the searched layers, shallow to deep (normalised embeddings).
        fit: fits and selects the readout on one layer's (n, d) embeddings and scores it.
    """
    if not layers:
        raise ValueError("layer search needs at least one layer")
    curve: list[tuple[Layer, float]] = []
    best: tuple[float, Layer, dict[str, float], dict[str, dict[str, float]]] | None = None
    for layer in layers:
        selected, scores, val_top1 = fit(layer.z)
        curve.append((layer, val_top1))
        if best is None or val_top1 >= best[0]:
            best = (val_top1, layer, selected, scores)
    assert best is not None
    _, layer, selected, scores = best
    return LayerChoice(layer=layer, selected=selected, scores=scores, curve=curve)


def layer_curves(layers: Sequence[Layer], metrics: Mapping[str, float]) -> dict:
    """The ``layer_search.json`` artifact: per probe prefix, the validation top-1 of every layer
    and the chosen layer, with the layers' names.

    Args:
        layers: the searched layers (names, indices).
        metrics: the evaluation suite's metrics (``<prefix>/layer/<i>/val_top1``, ``best_layer``).
    """
    by_index = {layer.index: layer for layer in layers}
    probes: dict[str, dict] = {}
    pattern = re.compile(r"^(probe/[^/]+)/layer/(\d+)/val_top1$")
    for key, value in metrics.items():
        match = pattern.match(key)
        if match:
            entry = probes.setdefault(match[1], {"val_top1": {}})
            entry["val_top1"][by_index[int(match[2])].name] = value
    for prefix, entry in probes.items():
        best = by_index[int(metrics[f"{prefix}/best_layer"])]
        entry["best_layer"] = best.name
        entry["best_layer_index"] = best.index
        entry["best_layer_depth"] = best.depth
    return {
        "selection": "search",
        "criterion": "top-1 on probe_val of each layer's readout (its C / epoch chosen on "
        "probe_val); ties go to the deeper layer",
        "layers": [
            {"name": layer.name, "index": layer.index, "depth": layer.depth} for layer in layers
        ],
        "probes": probes,
    }
