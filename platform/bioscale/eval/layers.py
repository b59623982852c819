"""Feature layers of any rung, and pooled embeddings of many layers from one forward pass.

One API for every family, shared by the probes' layer search and any other evaluation that reads
intermediate representations:

- ``layer_names(model)``: the layers, shallow to deep. A module that defines
  ``feature_layer_names()`` names its own (the profile MLP: ``stem``, ``blocks.0`` … — its hidden
  layers); a timm model lists the stages/blocks of its ``feature_info`` (ResNet ``act1``,
  ``layer1`` … ``layer4``; ConvNeXt ``stages.0`` …; ViT ``blocks.0`` …).
- ``extract_layers(model, batches, layers)``: ``{layer: (n, d) float32}`` for every layer (or a
  list of names / indices), from forward hooks during one pass per batch.

Pooling, per layer output: (B, C, H, W) feature maps are global-average pooled over H and W;
(B, T, D) ViT tokens are mean-pooled over the patch tokens (class/register tokens excluded,
``num_prefix_tokens``); (B, D) is taken as is. The deepest layer is read from the model's own
output instead of a hook, so it is exactly the embedding the probes of ``selection: last`` use
(for ViT: the normalised class token; for ConvNeXt: the normalised pooled map; for ResNet and the
MLP this equals the pooled last stage).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

from bioscale.models.layers import ALL, layer_names, pick_layers


def resolve_layers(model: nn.Module, layers: str | Sequence[str | int] | None = ALL) -> list[str]:
    """Names of the requested layers, shallow to deep: ``all``/``None`` → every layer; otherwise
    layer names or integer indices into ``layer_names(model)`` (negative counts from the deepest).

    Raises:
        ValueError: naming the unknown layer and the model's layers.
    """
    return pick_layers(layer_names(model), layers)


def pool(out: Any, prefix_tokens: int = 0) -> torch.Tensor:
    """One layer's output → (B, d): maps averaged over space, tokens over the patch tokens."""
    if isinstance(out, tuple | list):  # modules returning (features, extras)
        out = out[0]
    if out.ndim == 2:  # (B, D)
        return out
    if out.ndim == 3:  # (B, T, D) tokens; the first prefix_tokens are class/register tokens
        return out[:, prefix_tokens:].mean(dim=1)
    if out.ndim == 4:  # (B, C, H, W) feature maps
        return out.mean(dim=(2, 3))
    raise ValueError(f"cannot pool a layer output of shape {tuple(out.shape)}")


class LayerExtractor:
    """Forward hooks that collect pooled layer outputs; ``extractor(x)`` → ``{layer: (B, d)}``.

    Use as a context manager (the hooks are removed on exit). The deepest layer of the model,
    when requested, is its output (module docstring); ``embedding`` holds the last call's output
    (B, d) whichever layers were requested.
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str | int] | None = ALL) -> None:
        self.model = model
        self.names = resolve_layers(model, layers)
        self.deepest = layer_names(model)[-1]
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        modules = dict(model.named_modules())
        self._seen: dict[str, torch.Tensor] = {}
        self.embedding: torch.Tensor | None = None
        self._handles = []
        for name in self.names:
            if name == self.deepest:
                continue

            def hook(_module, _inputs, output, name=name):
                self._seen[name] = pool(output, prefix).float()

            self._handles.append(modules[name].register_forward_hook(hook))

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._seen = {}
        self.embedding = pool(self.model(x)).float()
        if self.deepest in self.names:
            self._seen[self.deepest] = self.embedding
        return {name: self._seen[name] for name in self.names}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> LayerExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def extract_layers(
    model: nn.Module,
    batches: Iterable[Any],
    layers: str | Sequence[str | int] | None = ALL,
    device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:
    """Pooled embeddings of the requested layers over every batch, one forward pass per batch.

    Args:
        model: a frozen backbone (put in eval mode here).
        batches: input tensors ((B, F) profiles or (B, C, H, W) images), or numpy arrays.
        layers: ``all``, or layer names / indices (``resolve_layers``).
        device: where to run (default: the model's device).

    Returns:
        ``{layer: (n, d_layer) float32}``, shallow to deep.
    """
    import torch

    if device is None:
        device = next(model.parameters()).device
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad(), LayerExtractor(model, layers) as extractor:
        for x in batches:
            x = torch.as_tensor(x).to(device)
            for name, emb in extractor(x).items():
                parts.setdefault(name, []).append(emb.cpu().numpy())
        names = extractor.names
    if not parts:
        raise ValueError("no input batches: nothing to extract")
    return {name: np.concatenate(parts[name]).astype(np.float32, copy=False) for name in names}
