"""Numerics and memory layout of the training step: bf16 autocast, channels_last, torch.compile.

bf16 autocast runs matmuls and convolutions in bfloat16 with float32 master weights (no loss
scaling needed, unlike fp16). On CPUs with native bf16 (AVX512-BF16 or AMX) it is close to a 2×
speed-up for convolutional rungs (resnet18, 5 dyes, 96 px: 127 → 225 images/s measured on such a
CPU); where the CPU lacks it, bf16 is emulated and slower, so ``auto`` turns it off.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

from bioscale.train.config import Precision  # defined without torch, for the loop config


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_precision(requested: Precision, device: torch.device) -> Literal["fp32", "bf16"]:
    """``auto`` → bf16 where the device has it natively, else fp32; explicit choices are kept."""
    if requested == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return requested


@dataclass(frozen=True)
class StepNumerics:
    """How the loop runs a step on one device (resolved in the worker, logged as trial params)."""

    precision: Literal["fp32", "bf16"]
    channels_last: bool
    device: torch.device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image batches in channels_last when the model is; others unchanged."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def prepare_layout(
    model: torch.nn.Module, channels_last: bool, image_input: bool, compile_model: bool
) -> torch.nn.Module:
    """channels_last for image models (convolutions run NHWC kernels), optional torch.compile."""
    if channels_last and image_input:
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        model = torch.compile(model)
    return model
