"""Masked autoencoding: ``mae``, a self-supervised objective that needs no label.

- ViT rungs (He et al. 2022, arXiv 2111.06377): each image's patches are masked at random
  (``mask_ratio``, 0.75 by default); the ViT encodes the visible patches only (its own patch
  embedding, position embedding, class token, blocks and norm); a light transformer decoder
  (``decoder_dim`` wide, ``decoder_depth`` blocks) predicts every patch's pixels of all dyes; the
  loss is the MSE on the masked patches of the target, each target patch z-scored over its pixels
  and dyes when ``norm_pix_loss`` is on (as the MAE paper's best setting).
- Profile MLP rungs: masked-feature reconstruction (the Pheno-CA code's ``masked_recon`` option) —
  a ``feature_mask_ratio`` fraction of each profile's features is set to 0 (the centre of the
  normalised profiles), the MLP embeds the rest and an MLP decoder (``decoder_depth`` hidden
  layers of ``decoder_dim``) reconstructs the features; the loss is the MSE on the hidden ones.
- CNN rungs (resnet, convnext) are refused at plan time (``model_families``), with the rungs that
  do support ``mae`` named: a CNN sees every pixel of its receptive field, so hiding patches needs
  a different recipe (sparse convolutions, as in SparK or ConvNeXt V2), not this one.

The decoder is a head (counted in ``N_heads``); its mask token and position embedding are named so
the loop's parameter groups exclude them from weight decay. Training batches draw fresh masks from
the global torch generator (seeded per rank by the loop); evaluation (the early-stopping loss) uses
a fixed generator, so validation losses of different epochs see the same masks. Without labels,
``mae`` trains on ``seen`` and ``extra`` compounds and on controls when a diet turns them on; the
probes at the end are the same as for every objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bioscale.objectives.base import Objective
from bioscale.objectives.registry import register

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The seed of the masks drawn for evaluation batches (the early-stopping validation loss).
EVAL_MASK_SEED = 0


@dataclass(frozen=True, kw_only=True)
class MAEParams:
    mask_ratio: float = 0.75  # images: fraction of patches hidden from the encoder
    norm_pix_loss: bool = True  # images: z-score each target patch over its pixels and dyes
    feature_mask_ratio: float = 0.5  # profiles: fraction of features hidden (choice)
    decoder_dim: int = 128
    decoder_depth: int = 2  # transformer blocks (images) / hidden layers (profiles)
    decoder_heads: int = 4  # images only

    def __post_init__(self) -> None:
        for name in ("mask_ratio", "feature_mask_ratio"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1)")
        if self.decoder_dim < 1 or self.decoder_depth < 0 or self.decoder_heads < 1:
            raise ValueError("decoder_dim >= 1, decoder_depth >= 0 and decoder_heads >= 1")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(
                f"decoder_dim ({self.decoder_dim}) must be a multiple of decoder_heads "
                f"({self.decoder_heads})"
            )


class _PatchMasking:
    """Images on a ViT: mask patches, encode the visible ones, decode all, score the hidden."""

    def __init__(self, backbone: Any, params: MAEParams) -> None:
        if backbone.num_patches < 2:
            raise ValueError(
                f"mae needs at least 2 patches per image; the crop gives a {backbone.grid} grid of "
                f"{backbone.patch}-pixel patches"
            )
        self.params = params
        self.patch = backbone.patch
        self.num_patches = backbone.num_patches
        self.patch_dim = backbone.patch * backbone.patch * backbone.in_chans

    def build_heads(self, embed_dim: int) -> nn.ModuleDict:
        from torch import nn

        from bioscale.objectives.mae_net import PatchDecoder

        p = self.params
        decoder = PatchDecoder(
            embed_dim,
            num_patches=self.num_patches,
            patch_dim=self.patch_dim,
            dim=p.decoder_dim,
            depth=p.decoder_depth,
            heads=p.decoder_heads,
        )
        return nn.ModuleDict({"decoder": decoder})

    def loss_terms(self, model, x, generator) -> dict[str, torch.Tensor]:
        from bioscale.objectives.mae_net import MaskedImages, masked_patch_loss, random_mask

        keep, hidden = random_mask(
            len(x), self.num_patches, self.params.mask_ratio, x.device, generator
        )
        _, heads = model(MaskedImages(images=x, keep=keep))
        recon = masked_patch_loss(
            heads["decoder"], x, hidden, self.patch, self.params.norm_pix_loss
        )
        return {"loss": recon, "recon": recon}


class _FeatureMasking:
    """Profiles on the MLP: zero a random subset of features, reconstruct, score the hidden."""

    def __init__(self, num_features: int, params: MAEParams) -> None:
        if num_features < 2:
            raise ValueError("mae needs profiles of at least 2 features")
        self.params = params
        self.num_features = num_features

    def build_heads(self, embed_dim: int) -> nn.ModuleDict:
        from torch import nn

        from bioscale.objectives.mae_net import FeatureDecoder

        decoder = FeatureDecoder(
            embed_dim,
            num_features=self.num_features,
            dim=self.params.decoder_dim,
            depth=self.params.decoder_depth,
        )
        return nn.ModuleDict({"decoder": decoder})

    def loss_terms(self, model, x, generator) -> dict[str, torch.Tensor]:
        from bioscale.objectives.mae_net import masked_feature_loss, random_mask

        _, hidden = random_mask(
            len(x), self.num_features, self.params.feature_mask_ratio, x.device, generator
        )
        _, heads = model(x.masked_fill(hidden, 0.0))
        recon = masked_feature_loss(heads["decoder"], x, hidden)
        return {"loss": recon, "recon": recon}


@register
class MAE(Objective):
    """Masked autoencoding (ViT rungs) and masked-feature reconstruction (profile MLP rungs)."""

    name = "mae"
    Params = MAEParams
    model_families = frozenset({"mlp", "vit"})

    def __init__(self, params: MAEParams) -> None:
        super().__init__(params)
        self._task: _PatchMasking | _FeatureMasking | None = None

    def train_groups(self) -> frozenset[str]:
        return frozenset({"seen", "extra"})

    def uses_controls(self) -> bool:
        return True

    def raw_labels(self, index) -> dict[str, np.ndarray]:
        return {}

    def prepare_backbone(self, backbone):
        """Wrap a ViT so it can encode visible patches only (``MaskedViT``); keep an MLP as it is.
        Records what the decoder reconstructs, which ``build_heads`` and ``loss_terms`` use."""
        from timm.models.vision_transformer import VisionTransformer

        from bioscale.models.mlp_net import PhenoMLP
        from bioscale.objectives.mae_net import MaskedViT

        if isinstance(backbone, VisionTransformer):
            backbone = MaskedViT(backbone)
        if isinstance(backbone, MaskedViT):
            self._task = _PatchMasking(backbone, self.params)
        elif isinstance(backbone, PhenoMLP):
            self._task = _FeatureMasking(backbone.stem[0].in_features, self.params)
        else:
            raise ValueError(
                f"mae trains ViT and profile MLP rungs, not a {type(backbone).__name__} backbone "
                f"(rung families: {', '.join(sorted(self.model_families))})"
            )
        return backbone

    def _prepared(self) -> _PatchMasking | _FeatureMasking:
        if self._task is None:
            raise RuntimeError("mae: call prepare_backbone on the backbone before building heads")
        return self._task

    def build_heads(self, embed_dim: int, labels: dict[str, int]):
        return self._prepared().build_heads(embed_dim)

    def loss_terms(self, model, batch):
        import torch

        x = batch["x"]
        generator = None
        if not model.training:
            generator = torch.Generator(device=x.device).manual_seed(EVAL_MASK_SEED)
        return self._prepared().loss_terms(model, x, generator)
