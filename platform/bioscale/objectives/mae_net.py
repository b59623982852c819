"""The torch side of the ``mae`` objective (``bioscale.objectives.mae``): masks, the masked
encoders, the light decoders and the reconstruction losses.

Images (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", arXiv 2111.06377):
the timm ViT's own patch embedding, position embedding, class token, blocks and final norm encode
only the visible patches; a light transformer decoder puts a shared mask token at every hidden
position and predicts every patch's pixels (all dyes); the loss is the MSE on the hidden patches.
Profiles: masked-feature reconstruction — hidden features are set to 0 (the profiles' centre), the
MLP embeds what is left and a small MLP decoder predicts all features; the loss is the MSE on the
hidden ones.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

_NORM_EPS = 1e-6


class MaskedImages(NamedTuple):
    """A backbone input: images and, per image, the indices of the patches the encoder sees."""

    images: torch.Tensor  # (B, C, H, W)
    keep: torch.Tensor  # (B, K) int64 patch indices, row-major over the patch grid


class EncodedPatches(NamedTuple):
    """The encoder's output on visible patches: what the decoder head receives."""

    tokens: torch.Tensor  # (B, 1 + K, D): class token, then the visible patches in ``keep`` order
    keep: torch.Tensor  # (B, K)


def num_visible(n: int, mask_ratio: float) -> int:
    """How many of ``n`` patches (or features) stay visible: at least one, and at least one hidden."""
    return min(n - 1, max(1, round(n * (1.0 - mask_ratio))))


def random_mask(
    batch: int,
    n: int,
    mask_ratio: float,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An independent random subset of ``n`` positions per sample.

    Returns:
        ``keep`` (B, K) int64 indices of the visible positions and ``hidden`` (B, n) bool, True
        where a position is masked.
    """
    noise = torch.rand(batch, n, device=device, generator=generator)
    keep = noise.argsort(dim=1)[:, : num_visible(n, mask_ratio)]
    hidden = torch.ones(batch, n, dtype=torch.bool, device=device)
    hidden.scatter_(1, keep, False)
    return keep, hidden


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) → (B, L, patch·patch·C), patches in row-major grid order (timm's token order);
    rows and columns beyond the last whole patch are dropped, as the patch embedding drops them."""
    b, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    x = images[:, :, : gh * patch, : gw * patch].reshape(b, c, gh, patch, gw, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, patch * patch * c)


def masked_patch_loss(
    pred: torch.Tensor, images: torch.Tensor, hidden: torch.Tensor, patch: int, norm_pix: bool
) -> torch.Tensor:
    """MSE between predicted and true pixels, averaged over the hidden patches only.

    Args:
        pred: (B, L, patch·patch·C) decoder output.
        images: (B, C, H, W) the reconstruction target.
        hidden: (B, L) bool, True for masked patches.
        patch: patch side in pixels.
        norm_pix: z-score each target patch over its pixels and dyes (population variance,
            ε = 1e-6) before the MSE.
    """
    target = patchify(images.float(), patch)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True, unbiased=False)
        target = (target - mean) / (var + _NORM_EPS).sqrt()
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # (B, L)
    weight = hidden.float()
    return (per_patch * weight).sum() / weight.sum()


def masked_feature_loss(
    pred: torch.Tensor, features: torch.Tensor, hidden: torch.Tensor
) -> torch.Tensor:
    """MSE over the hidden features only: pred and features (B, F), hidden (B, F) bool."""
    weight = hidden.float()
    return ((pred.float() - features.float()).pow(2) * weight).sum() / weight.sum()


class MaskedViT(nn.Module):
    """A timm ``VisionTransformer`` that also encodes visible patches only.

    ``forward(x)`` on a tensor is the ViT's own forward (the pooled class-token embedding the probes
    use); on ``MaskedImages`` it returns ``EncodedPatches``. The wrapper adds no parameters; its
    layers are the ViT's under ``vit.`` (``feature_layer_names``).
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        unsupported = []
        if not getattr(vit, "has_class_token", False) or vit.num_prefix_tokens != 1:
            unsupported.append("exactly one class token and no register tokens")
        if getattr(vit, "no_embed_class", False) or getattr(vit, "dynamic_img_size", False):
            unsupported.append("a fixed position embedding that covers the class token")
        if not getattr(vit.patch_embed, "flatten", False):
            unsupported.append("a flattening patch embedding")
        if unsupported:
            raise ValueError(f"mae needs a ViT with {' and '.join(unsupported)}")
        self.vit = vit
        self.embed_dim = vit.embed_dim
        self.patch = int(vit.patch_embed.patch_size[0])
        self.grid = tuple(int(g) for g in vit.patch_embed.grid_size)  # (rows, cols) of patches
        self.in_chans = int(vit.patch_embed.proj.in_channels)
        self.num_prefix_tokens = vit.num_prefix_tokens  # the class token, for layer pooling

    def feature_layer_names(self) -> list[str]:
        """The ViT's feature layers (timm ``feature_info``: ``blocks.0`` …) as module paths of this
        wrapper (``vit.blocks.0`` …), for evaluations that read intermediate layers."""
        info = self.vit.feature_info
        names = info.module_name() if hasattr(info, "module_name") else [f["module"] for f in info]
        return [f"vit.{name}" for name in names]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, x: torch.Tensor | MaskedImages) -> torch.Tensor | EncodedPatches:
        if isinstance(x, MaskedImages):
            return self.encode_visible(x.images, x.keep)
        return self.vit(x)

    def encode_visible(self, images: torch.Tensor, keep: torch.Tensor) -> EncodedPatches:
        """Patch-embed all patches, add their position embeddings, keep the visible ones, prepend
        the class token and run the blocks and final norm on 1 + K tokens."""
        vit = self.vit
        tokens = vit.patch_embed(images)  # (B, L, D)
        pos = vit.pos_embed  # (1, 1 + L, D): the class token's position first
        tokens = tokens + pos[:, 1:]
        dim = tokens.shape[-1]
        visible = tokens.gather(1, keep[..., None].expand(-1, -1, dim))  # (B, K, D)
        cls = (vit.cls_token + pos[:, :1]).expand(len(images), -1, -1).to(visible.dtype)
        seq = torch.cat([cls, visible], dim=1)
        seq = vit.norm(vit.blocks(vit.norm_pre(vit.pos_drop(seq))))
        return EncodedPatches(tokens=seq, keep=keep)


class PatchDecoder(nn.Module):
    """The light MAE decoder: encoder tokens → decoder width, a shared mask token at every hidden
    position, learned position embeddings, ``depth`` timm transformer blocks, a norm and a linear
    prediction of each patch's pixels. It is an objective head (counted in ``N_heads``)."""

    def __init__(
        self,
        embed_dim: int,
        *,
        num_patches: int,
        patch_dim: int,
        dim: int,
        depth: int,
        heads: int,
    ) -> None:
        from timm.models.vision_transformer import Block

        super().__init__()
        self.num_patches = num_patches
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(
            *(Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_dim)

    def forward(self, encoded: EncodedPatches) -> torch.Tensor:
        """→ (B, L, patch_dim) predictions for every patch (the loss reads the hidden ones)."""
        h = self.embed(encoded.tokens)  # (B, 1 + K, dim)
        b, _, dim = h.shape
        slots = self.mask_token.to(h.dtype).expand(b, self.num_patches, dim)
        index = encoded.keep[..., None].expand(-1, -1, dim)
        slots = slots.scatter(1, index, h[:, 1:])  # visible tokens back at their positions
        seq = torch.cat([h[:, :1], slots], dim=1) + self.pos_embed.to(h.dtype)
        seq = self.norm(self.blocks(seq))
        return self.pred(seq[:, 1:])


class FeatureDecoder(nn.Module):
    """Profiles: embedding → ``depth`` hidden Linear+GELU layers of width ``dim`` → all features."""

    def __init__(self, embed_dim: int, *, num_features: int, dim: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = embed_dim
        for _ in range(depth):
            layers += [nn.Linear(width, dim), nn.GELU()]
            width = dim
        layers.append(nn.Linear(width, num_features))
        self.net = nn.Sequential(*layers)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net(emb)  # (B, F)
