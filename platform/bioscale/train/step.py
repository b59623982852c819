"""One training step, outside the loop: the network, AdamW with its parameter groups, the step.

Only torch and the model/objective registries: the loop (``bioscale.train.loop``) and the bare GPU
check (``benchmarks/gpu_check.py``, which runs where Ray, MLflow and scikit-learn may be absent)
share these, so the check measures the step trials run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bioscale.models.ladder import get_rung
from bioscale.objectives import registry as objectives
from bioscale.train.precision import StepNumerics


class Network(nn.Module):
    """Backbone + objective heads; ``forward(x) → (embedding, {head: logits})``."""

    def __init__(self, backbone: nn.Module, heads: nn.ModuleDict) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        emb = self.backbone(x)
        return emb, {name: head(emb) for name, head in self.heads.items()}


def network_for(
    rung: str,
    input_shape: tuple[int, ...],
    objective: str,
    objective_params: dict[str, Any],
    num_classes: dict[str, int],
) -> tuple[Network, Any]:
    """(the rung's backbone as the objective prepares it + the objective's heads, the objective)."""
    obj = objectives.build(objective, objective_params)
    backbone = obj.prepare_backbone(get_rung(rung).build(tuple(input_shape)))
    heads = obj.build_heads(backbone.embed_dim, num_classes)
    return Network(backbone, heads), obj


_NO_DECAY_NAMES = ("cls_token", "pos_embed", "dist_token", "reg_token", "mask_token")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weights; none on norms, biases, embeddings and class tokens."""
    no_decay_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.Embedding)
        for p in m.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(_NO_DECAY_NAMES) or id(p) in no_decay_ids:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; on CUDA the fused kernel (one launch for all parameters)."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, fused=fused or None)


def train_step(
    model: nn.Module,
    objective: Any,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    numerics: StepNumerics,
) -> dict[str, torch.Tensor]:
    """Forward under the step's autocast, backward, optimiser step; the loss terms (on device,
    not synchronised: callers read them when they need the numbers)."""
    with numerics.autocast():
        terms = objective.loss_terms(model, batch)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()
    return terms


def configure_backends(device: torch.device) -> None:
    """Per-process kernel choice for fixed-shape training on CUDA: cuDNN autotunes convolutions
    for the batch's shape (the first steps are slower, later ones faster). ``fp32`` stays full
    float32 (no TF32). Nothing changes on CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
