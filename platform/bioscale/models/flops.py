"""FLOPs of one training step, measured (``torch.utils.flop_counter``'s formulas), not estimated.

``flops_per_sample`` = FLOPs of forward + backward of the objective's loss on a small batch, divided
by the batch size, so objectives that cost more per step (harmonized's double backward, MAE's
decoder) are counted as they are (ARCHITECTURE "Rung").

bioscale counts totals with a small dispatch mode over torch's own per-operator formulas:
``FlopCounterMode`` also attributes FLOPs to modules through backward hooks, which
``torch.autograd.grad(..., create_graph=True)`` (the harmonizer's saliency) does not support.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class _TotalFlops(TorchDispatchMode):
    """Sums the FLOPs of every aten op torch has a formula for (matmuls, convolutions, attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def training_step_flops(
    model: torch.nn.Module, objective: Any, batch: dict[str, torch.Tensor]
) -> float:
    """FLOPs per sample of one forward+backward of ``objective.loss_terms`` on ``batch``."""
    model.train()
    with _TotalFlops() as counter:
        terms = objective.loss_terms(model, batch)
        terms["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.total / len(batch["x"])
