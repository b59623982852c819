"""Accelerator peaks and model-FLOPs utilisation (MFU); imports nothing heavy.

``DEVICE_PEAK_TFLOPS`` is the dense bf16/fp16 tensor-core peak of each device in TFLOP/s (no
sparsity), from the vendors' data sheets (NVIDIA V100 — fp16 only, it has no bf16 —, T4, A100,
H100 SXM, H200 SXM, L4, L40S; AMD MI300X). Its keys are Ray's accelerator types
(``ray.util.accelerators``), as nodes report them (``bioscale.study.capacity`` plans with them);
``peak_tflops`` maps the names ``torch.cuda.get_device_name()`` returns onto them.

MFU = achieved training FLOP/s ÷ (peak FLOP/s × devices), with the trial's FLOPs as
``bioscale.models.flops`` measures them (Chowdhery et al. 2022, "PaLM", appendix B).
"""

from __future__ import annotations

import re
from typing import Any

DEVICE_PEAK_TFLOPS: dict[str, float] = {
    "V100": 125.0,
    "T4": 65.0,
    "A100": 312.0,
    "H100": 989.0,
    "H200": 989.0,
    "L4": 121.0,
    "L40S": 362.0,
    "AMD-Instinct-MI300X-OAM": 1307.0,
}

#: Device-name patterns → peak (TFLOP/s), first match wins. H100 PCIe (756) and NVL (835) are
#: slower than the SXM part the ``H100`` row holds; "L4" must not match "L40S".
_NAME_PATTERNS: list[tuple[re.Pattern[str], float]] = [
    (re.compile(r"\bH100\b.*\bPCIE\b"), 756.0),
    (re.compile(r"\bH100\b.*\bNVL\b"), 835.0),
    (re.compile(r"\bMI300X\b"), DEVICE_PEAK_TFLOPS["AMD-Instinct-MI300X-OAM"]),
    *(
        (re.compile(rf"\b{re.escape(key)}\b"), peak)
        for key, peak in DEVICE_PEAK_TFLOPS.items()
        if not key.startswith("AMD-")
    ),
]


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak (TFLOP/s) of a device named as ``torch.cuda.get_device_name()`` names it
    ("NVIDIA H200", "NVIDIA A100-SXM4-80GB", "Tesla T4", "AMD Instinct MI300X"); ``None`` when
    the device is not in the table."""
    name = device_name.upper()
    for pattern, peak in _NAME_PATTERNS:
        if pattern.search(name):
            return peak
    return None


def device_peak_flops(device: Any) -> float | None:
    """Peak FLOP/s of a ``torch.device``; ``None`` on CPUs and on GPUs missing from the table
    (MFU is then not reported rather than made up)."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    peak = peak_tflops(torch.cuda.get_device_name(device))
    return peak * 1e12 if peak is not None else None


def mfu(flops: float, seconds: float, peak_flops: float | None, devices: int = 1) -> float | None:
    """Model-FLOPs utilisation: ``flops`` (FLOPs, all devices) done in ``seconds`` (wall time) over
    ``devices`` × ``peak_flops`` (FLOP/s each); ``None`` without a peak, FLOPs or time."""
    if not peak_flops or flops <= 0 or seconds <= 0 or devices < 1:
        return None
    return flops / seconds / (peak_flops * devices)
