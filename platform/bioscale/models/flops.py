"""FLOPs of one training step, measured (``torch.utils.flop_counter``'s formulas), not estimated.

``flops_per_sample`` = FLOPs of forward + backward of the objective's loss on a small batch, divided
by the batch size, so objectives that cost more per step (harmonized's double backward, MAE's
decoder) are counted as they are (ARCHITECTURE "Rung"). A trial's ``compute/flops`` is
``flops_per_sample`` × samples seen, and ``perf/mfu`` divides the same FLOPs by time and peak.

How that relates to the common "forward FLOPs × 3" (a backward pass costs two forwards): measured
step ÷ measured forward (``loss_terms`` without autograd), per objective, on this library's rungs —

- supervised / ibp: 2.86–3.02 on image rungs (resnet:debug 2.97, vit:tiny 3.02), 2.92 on
  mlp:w256-l3, 2.38 on the tiny profile ``debug`` MLP. Below 3 because the first layer's input
  gradient is never computed (the input does not require grad), which weighs most in small and
  shallow nets; above 3 where attention dominates, because torch's attention-backward formula
  counts five matmuls (flash attention recomputes the scores) against the forward's two.
- mae: 2.97–2.98 (vit:debug, vit:tiny): the masked encoder plus the decoder, forward and backward.
- harmonized: 6.05–6.16 (resnet:debug, vit:debug, vit:tiny): the saliency term differentiates
  the input with ``create_graph=True`` and the loss is then differentiated through that gradient,
  so a step costs about twice a forward × 3. Forward × 3 would undercount it by half.

So for supervised, ibp and mae the measured step is forward × 3 to within a few percent on image
rungs, and bioscale keeps the measured step everywhere (the contract's definition, and the work a
device really does).

bioscale counts totals with a small dispatch mode over torch's own per-operator formulas:
``FlopCounterMode`` also attributes FLOPs to modules through backward hooks, which
``torch.autograd.grad(..., create_graph=True)`` (the harmonizer's saliency) does not support.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _cpu_attention(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


#: Ops torch's registry lacks: on CPU ``scaled_dot_product_attention`` dispatches to these, which
#: would leave a ViT's attention uncounted when ``bioscale study plan`` measures on a CPU. Counted
#: with the formulas torch uses for the CUDA kernels, so CPU and GPU measure the same FLOPs.
_EXTRA_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


class _TotalFlops(TorchDispatchMode):
    """Sums the FLOPs of every aten op torch has a formula for (matmuls, convolutions, attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket) or _EXTRA_FORMULAS.get(
            func._overloadpacket
        )
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
