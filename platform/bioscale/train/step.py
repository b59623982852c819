"""One training step, outside the loop: the network, AdamW with its parameter groups, the step
and the guard that fails a trial on a non-finite loss.

Only torch and the model/objective registries: the loop (``bioscale.train.loop``) and the bare GPU
check (``benchmarks/gpu_check.py``, which runs where Ray, MLflow and scikit-learn may be absent)
share these, so the check measures the step trials run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bioscale.errors import ConfigError, TrainingError
from bioscale.models.ladder import get_rung
from bioscale.objectives import registry as objectives
from bioscale.objectives.base import WeightDecayMode
from bioscale.train.precision import StepNumerics


class Network(nn.Module):
    """Backbone + objective heads; ``forward(x) → (embedding, {head: logits})``. Keyword inputs
    (``forward(x, masks=...)``) go to the backbone: what a backbone's auxiliary loss terms read
    (the CV-RNN's ground-truth groups), passed through the module DDP wraps."""

    def __init__(self, backbone: nn.Module, heads: nn.ModuleDict) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    def forward(
        self, x: torch.Tensor, **inputs: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        emb = self.backbone(x, **inputs) if inputs else self.backbone(x)
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
#: Modules whose weights embed the input rather than transform features: timm's patch embedding
#: (the harmonizer release skips its embedding variables, SEEDS §2).
_NO_DECAY_MODULES = frozenset({"patch_embed"})


def param_groups(
    model: nn.Module, weight_decay: float, mode: WeightDecayMode = "decoupled"
) -> list[dict[str, Any]]:
    """Optimiser groups: decay on weights; none on norms, biases, embeddings (``nn.Embedding``,
    patch embeddings) and class/position/mask tokens.

    The decayed group carries the decay once: as AdamW's ``weight_decay`` (``decoupled``), or as
    ``l2_penalty`` with ``weight_decay`` 0 (``coupled``), whose gradient ``add_l2_gradients`` adds.
    """
    if mode not in ("coupled", "decoupled"):
        raise ConfigError(f"weight_decay_mode must be 'coupled' or 'decoupled', got {mode!r}")
    no_decay_ids = {
        id(p)
        for name, m in model.named_modules()
        if isinstance(m, nn.Embedding) or name.rsplit(".", 1)[-1] in _NO_DECAY_MODULES
        for p in m.parameters()
    }
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(_NO_DECAY_NAMES) or id(p) in no_decay_ids:
            no_decay.append(p)
        else:
            decay.append(p)
    coupled = mode == "coupled"
    return [
        {
            "params": decay,
            "weight_decay": 0.0 if coupled else weight_decay,
            "l2_penalty": weight_decay if coupled else 0.0,
        },
        {"params": no_decay, "weight_decay": 0.0, "l2_penalty": 0.0},
    ]


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    device: torch.device,
    weight_decay_mode: WeightDecayMode = "decoupled",
) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; on CUDA the fused kernel (one launch for all parameters)."""
    fused = device.type == "cuda"
    groups = param_groups(model, weight_decay, weight_decay_mode)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def add_l2_gradients(optimizer: torch.optim.Optimizer) -> None:
    """``grad += l2_penalty · w`` for every parameter of a group with an ``l2_penalty``: the
    gradient of l2_penalty·Σ½‖w‖², the coupled weight decay (one fused add per group)."""
    for group in optimizer.param_groups:
        coefficient = group.get("l2_penalty", 0.0)
        if not coefficient:
            continue
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            torch._foreach_add_([p.grad for p in params], params, alpha=coefficient)


def train_step(
    model: nn.Module,
    objective: Any,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    numerics: StepNumerics,
) -> dict[str, torch.Tensor]:
    """Forward under the step's autocast, backward, the coupled L2 gradient (if any), optimiser
    step; the loss terms (on device, not synchronised: callers read them when they need the
    numbers)."""
    with numerics.autocast():
        terms = objective.loss_terms(model, batch)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    add_l2_gradients(optimizer)
    optimizer.step()
    return terms


class FiniteLossGuard:
    """Fails training on the first step whose loss terms are not all finite (NaN/Inf), naming the
    epoch, the step and the terms.

    The device is never made to wait: on a GPU (``deferred``) each step's terms (scalars) are
    copied to pinned host memory asynchronously and read once the next step has been queued, so a
    step is reported one step late at most; on the CPU at once. ``flush`` reads the last step (at
    an epoch's end).
    """

    def __init__(self, device: torch.device, *, deferred: bool | None = None) -> None:
        self._deferred = device.type == "cuda" if deferred is None else deferred
        self._pending: tuple[int, int, list[str], torch.Tensor, Any] | None = None

    def check(self, epoch: int, step: int, terms: dict[str, torch.Tensor]) -> None:
        """Queue step ``step`` (1-based) of epoch ``epoch`` (1-based); raise for an earlier one."""
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        if values.is_cuda:
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        else:
            host, done = values, None
        previous, self._pending = self._pending, (epoch, step, list(terms), host, done)
        if previous is not None:
            self._raise_if_not_finite(previous)
        if not self._deferred:
            self.flush()

    def flush(self) -> None:
        """Read the queued step (waits for the device to finish it)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._raise_if_not_finite(pending)

    @staticmethod
    def _raise_if_not_finite(pending: tuple[int, int, list[str], torch.Tensor, Any]) -> None:
        epoch, step, names, host, done = pending
        if done is not None:
            done.synchronize()
        values = host.tolist()
        bad = [f"{n}={v}" for n, v in zip(names, values, strict=True) if not math.isfinite(v)]
        if bad:
            raise TrainingError(
                f"training loss is not finite at epoch {epoch}, step {step} "
                f"({', '.join(bad)}): the weights diverged or a batch holds NaN/Inf inputs; "
                "lower train.lr, train with train.precision: fp32, or check the data"
            )


def configure_backends(device: torch.device) -> None:
    """Per-process kernel choice for fixed-shape training on CUDA: cuDNN autotunes convolutions
    for the batch's shape (the first steps are slower, later ones faster). ``fp32`` stays full
    float32 (no TF32). Nothing changes on CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
