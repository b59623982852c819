"""Image model ladders from timm (ResNet, ViT, ConvNeXt), ``in_chans`` = number of dyes.

Every rung is ``pretrained=False`` (bioscale never downloads weights) with ``num_classes=0``, so the
backbone returns pooled embeddings of width ``num_features``; heads come from the objective. Each
family has a ``debug`` rung small enough for CPU tests. Rung names: ``<family>:<size>``.

Sizes follow timm's published configurations (He et al. 2016; Dosovitskiy et al. 2021 with
Touvron et al. 2021's tiny/small widths; Liu et al. 2022 and timm's atto–nano ConvNeXts). ViTs use
patch 8 because Cell Painting crops are small (64–256 px) next to ImageNet's 224 px.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bioscale.models.ladder import RUNGS


@dataclass(frozen=True, kw_only=True)
class TimmRung:
    """One timm architecture at one size.

    Attributes:
        name: rung name (``resnet:r18``).
        family: ``resnet`` | ``vit`` | ``convnext``.
        timm_name: the timm model to create.
        kwargs: overrides passed to ``timm.create_model`` (depths, widths, patch size).
        needs_img_size: ViTs fix their position embedding to the input size at build time.
    """

    name: str
    family: str
    timm_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    needs_img_size: bool = False

    def build(self, input_shape: tuple[int, ...]):
        """Backbone for (C, H, W) inputs; ``embed_dim`` = timm's ``num_features``."""
        import timm

        if len(input_shape) != 3:
            raise ValueError(
                f"rung {self.name} needs image inputs (C, H, W), got shape {input_shape}"
            )
        chans, height, width = input_shape
        kwargs = dict(self.kwargs)
        if self.needs_img_size:
            kwargs["img_size"] = (height, width)
        model = timm.create_model(
            self.timm_name, pretrained=False, in_chans=chans, num_classes=0, **kwargs
        )
        model.embed_dim = model.num_features
        return model


def _register(
    name: str, family: str, timm_name: str, needs_img_size: bool = False, **kwargs
) -> None:
    RUNGS.register(
        name,
        TimmRung(
            name=name,
            family=family,
            timm_name=timm_name,
            kwargs=kwargs,
            needs_img_size=needs_img_size,
        ),
    )


# ResNet (basic blocks up to r34, bottlenecks from r50)
_register("resnet:debug", "resnet", "resnet10t", layers=(1, 1, 1, 1), channels=(16, 32, 64, 128))
_register("resnet:r10", "resnet", "resnet10t")
_register("resnet:r18", "resnet", "resnet18")
_register("resnet:r34", "resnet", "resnet34")
_register("resnet:r50", "resnet", "resnet50")
_register("resnet:r101", "resnet", "resnet101")
# ViT, patch 8
_VIT = {
    "debug": (64, 2, 2),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
for _size, (_dim, _depth, _heads) in _VIT.items():
    _register(
        f"vit:{_size}",
        "vit",
        "vit_tiny_patch16_224",
        needs_img_size=True,
        patch_size=8,
        embed_dim=_dim,
        depth=_depth,
        num_heads=_heads,
    )
# ConvNeXt
_register(
    "convnext:debug", "convnext", "convnext_atto", depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)
)
for _size in ("atto", "femto", "pico", "nano", "tiny", "small"):
    _register(f"convnext:{_size}", "convnext", f"convnext_{_size}")
