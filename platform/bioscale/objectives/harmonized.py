"""The neural harmonizer (Fel et al. 2022, arXiv 2211.04533; SEEDS §2).

loss = CE(label smoothing 0.1) + 1e-5·Σ½‖w‖² + λ_h · H, λ_h = 1.0 by default. The weight-decay
part (skipping norm, bias, embedding, patch-embedding and class-token weights) is applied by the
loop's optimiser parameter groups (``weight_decay()``/``weight_decay_mode()`` below), never a
second time here: ``coupled`` (default) is the release's L2 penalty on the loss, ``decoupled``
AdamW's decay of the same coefficient (a much weaker regulariser under Adam,
``bioscale.objectives.base.WeightDecayMode``). H aligns the model's saliency with human importance
maps across a Gaussian pyramid:

1. saliency s = ∂(true-class logit)/∂x, averaged (signed) over the input channels, from the
   training-mode forward pass, kept in the graph (``create_graph=True``: the loss trains through it);
2. s and the human map h are z-scored per image over (H, W) (population std, ε = 1e-5) and ReLU'd;
   h is rescaled to s's max: h ← h / (max h + 1e-6) · (stopgrad(max s) + 1e-6);
3. a Gaussian pyramid of both (5×5 binomial kernel [1,4,6,4,1]⊗[1,4,6,4,1]/256, zero padding 2 on
   every side — TensorFlow's 'SAME' padded (1, 2) on even sizes — stride 2), levels 0..4;
   H_i = mean over levels of the per-image MSE; H = mean of H_i over the images that have a map
   (``align_reduction: mapped``), or their sum over the whole batch size as the released code did
   (``align_reduction: batch``, which rescales λ_h by the share of images with maps).

Only the images that have maps get a saliency (the others contribute nothing to H), and the
forward pass that gives the CE also gives the saliency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bioscale.objectives.base import Objective, WeightDecayMode
from bioscale.objectives.registry import register

PYRAMID_LEVELS = 5
_STD_EPS = 1e-5
_MAX_EPS = 1e-6


def _binomial_kernel():
    import torch

    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    return (torch.outer(k1, k1) / 256.0).view(1, 1, 5, 5)


def _standardise_relu(maps):
    """(B, H, W) → z-score over (H, W) with the population std, then ReLU."""
    import torch

    mean = maps.mean(dim=(1, 2), keepdim=True)
    std = maps.std(dim=(1, 2), keepdim=True, unbiased=False)
    return torch.relu((maps - mean) / (std + _STD_EPS))


def gaussian_pyramid(maps, levels: int = PYRAMID_LEVELS) -> list:
    """Levels 0..levels−1 of (B, H, W) maps; each level blurs and halves the previous one."""
    import torch.nn.functional as F

    kernel = _binomial_kernel().to(dtype=maps.dtype, device=maps.device)
    out = [maps]
    current = maps.unsqueeze(1)  # (B, 1, H, W)
    for _ in range(levels - 1):
        current = F.conv2d(current, kernel, padding=2, stride=2)
        out.append(current.squeeze(1))
    return out


def pyramid_alignment_loss(saliency, human_maps, has_map, reduction: str = "mapped"):
    """The harmonization term H.

    Args:
        saliency: (B, H, W) model saliency (in the graph).
        human_maps: (B, H, W) human importance maps (any non-negative scale).
        has_map: (B,) bool, which images have a map.
        reduction: ``mapped`` (mean over images with a map) or ``batch`` (sum over them / B).

    Returns:
        A scalar tensor; 0 when no image has a map.
    """
    import torch

    has_map = has_map.to(torch.bool)
    if not bool(has_map.any()):
        return saliency.sum() * 0.0
    s = _standardise_relu(saliency[has_map].float())
    h = _standardise_relu(human_maps[has_map].float())
    s_max = s.amax(dim=(1, 2), keepdim=True).detach()
    h = h / (h.amax(dim=(1, 2), keepdim=True) + _MAX_EPS) * (s_max + _MAX_EPS)
    per_image = torch.stack(
        [
            ((ps - ph) ** 2).mean(dim=(1, 2))
            for ps, ph in zip(gaussian_pyramid(s), gaussian_pyramid(h), strict=True)
        ]
    ).mean(dim=0)  # (B_mapped,)
    if reduction == "mapped":
        return per_image.mean()
    return per_image.sum() / has_map.numel()


def saliency_maps(logits, x, y, rows):
    """∂(true-class logit)/∂x for ``rows`` (a bool mask), channel-averaged: (B, H, W), in the graph.

    Rows outside the mask get no logit in the sum, so their saliency is (up to BatchNorm's
    coupling of a training batch) zero and costs nothing extra in the double backward.
    """
    import torch

    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    (grad,) = torch.autograd.grad(true_logit[rows].sum(), x, create_graph=True)
    return grad.mean(dim=1)


@dataclass(frozen=True, kw_only=True)
class HarmonizedParams:
    #: ``moa`` (natural images keep their class in it); ``target`` is refused (one true class only)
    task: Literal["moa", "target"] = "moa"
    label_smoothing: float = 0.1
    lambda_h: float = 1.0
    align_reduction: Literal["mapped", "batch"] = "mapped"
    weight_decay: float = 1.0e-5
    weight_decay_mode: WeightDecayMode = "coupled"  # the release's L2 penalty on the loss

    def __post_init__(self) -> None:
        if self.task == "target":  # the saliency of *the* true class: a compound may have several
            raise ValueError(
                "task: target is not supported: the harmonizer aligns the saliency of the one true "
                "class with the human map, and a compound's targets are several (pipe-separated); "
                "use task: moa (or the supervised objective, which trains on every target)"
            )
        if self.lambda_h < 0:
            raise ValueError("lambda_h must be >= 0")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")


@register
class Harmonized(Objective):
    """CE + λ_h · pyramid alignment of saliency and human maps; needs images with maps."""

    name = "harmonized"
    Params = HarmonizedParams
    needs_maps = True

    def train_groups(self) -> frozenset[str]:
        return frozenset({"seen"})

    def weight_decay(self, default: float) -> float:
        return self.params.weight_decay

    def weight_decay_mode(self, default: WeightDecayMode) -> WeightDecayMode:
        return self.params.weight_decay_mode

    def raw_labels(self, index) -> dict[str, np.ndarray]:
        return {"y": getattr(index, self.params.task)}

    def prepare_backbone(self, backbone):
        """Second-order gradients through fused scaled-dot-product attention are not implemented
        on CPU: switch timm attention blocks to their explicit (non-fused) path."""
        for module in backbone.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
        return backbone

    def loss_terms(self, model, batch):
        import torch.nn.functional as F

        x = batch["x"].detach().requires_grad_(True)
        y = batch["y"]
        has_map = batch["has_map"].to(bool)
        _, logits = model(x)
        ce = F.cross_entropy(logits["y"], y, label_smoothing=self.params.label_smoothing)
        if bool(has_map.any()) and self.params.lambda_h > 0:
            saliency = saliency_maps(logits["y"], x, y, has_map)
            align = pyramid_alignment_loss(
                saliency, batch["map"], has_map, self.params.align_reduction
            )
        else:
            align = ce.detach() * 0.0
        return {"loss": ce + self.params.lambda_h * align, "ce": ce, "align": align}
