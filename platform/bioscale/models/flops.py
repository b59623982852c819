"""FLOPs of one training step, measured (``torch.utils.flop_counter``), not estimated.

``flops_per_sample`` = FLOPs of forward + backward of the objective's loss on a small batch, divided
by the batch size, so objectives that cost more per step (harmonized's double backward, MAE's
decoder) are counted as they are (ARCHITECTURE "Rung").
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def training_step_flops(
    model: torch.nn.Module, objective: Any, batch: dict[str, torch.Tensor]
) -> float:
    """FLOPs per sample of one forward+backward of ``objective.loss_terms`` on ``batch``."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        terms = objective.loss_terms(model, batch)
        terms["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch["x"])
