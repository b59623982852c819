"""MACO feature visualisation (SEEDS §3; Fel et al. 2023, arXiv 2306.06805): optimise only the
Fourier phase of an image whose magnitude spectrum is fixed to the data's mean amplitude spectrum.

Per step: image = σ(standardise(irfft2(|F| · e^{i·standardise(φ)}))) rescaled to ``values_range``;
``crops`` random square boxes (centres ~ N(0.5, 0.15), sides uniform in ``box_size`` of the image
side) are resized to the model's input size, Gaussian (σ = ``noise``) and uniform (width
``noise``) noise are added, and NAdam (lr ``lr``) ascends the mean objective over the crops. The
transparency map accumulates |∂objective/∂image| over all steps. Defaults follow the authors'
PyTorch release (Horama: 1000 steps, NAdam lr 1.0, 6 crops, box 0.20–0.25, noise 0.05), with two
departures: the value range is [0, 1] because bioscale models read [0, 1] inputs (the release used
(−2.5, 2.5) for ImageNet-normalised ones), and box sides are drawn from ``box_size`` itself (the
release drew them from [0.25, 0.30]). Channels are not recorrelated: the release's ImageNet colour
matrix has no meaning for five Cell Painting dyes; each channel keeps its own mean spectrum.

``composite`` turns a 5-dye image (or transparency) into RGB for display.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bioscale.errors import ConfigError

#: RGB colour of each Cell Painting dye in composites (DNA, ER, RNA, AGP, Mito).
DYE_COLOURS = {
    "DNA": (0.0, 0.0, 1.0),
    "ER": (0.0, 1.0, 0.0),
    "RNA": (0.0, 1.0, 1.0),
    "AGP": (1.0, 0.0, 1.0),
    "Mito": (1.0, 0.0, 0.0),
}


@dataclass(frozen=True, kw_only=True)
class MacoConfig:
    """MACO settings.

    Attributes:
        steps: optimisation steps.
        lr: NAdam learning rate on the phase.
        image_size: side of the optimised image (pixels).
        crops: crops per step.
        box_size: (min, max) crop side as a fraction of the image side.
        noise: Gaussian σ and uniform width of the noise added to the crops.
        values_range: pixel range of the image.
        seed: seed of the initial phase, crops and noise.
    """

    steps: int = 1000
    lr: float = 1.0
    image_size: int = 256
    crops: int = 6
    box_size: tuple[float, float] = (0.20, 0.25)
    noise: float = 0.05
    values_range: tuple[float, float] = (0.0, 1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.crops < 1 or self.image_size < 8:
            raise ConfigError("maco: steps and crops must be >= 1, image_size >= 8")
        lo, hi = self.box_size
        if not 0 < lo <= hi <= 1:
            raise ConfigError(
                f"maco.box_size must satisfy 0 < min <= max <= 1, got {self.box_size}"
            )
        if self.values_range[0] >= self.values_range[1]:
            raise ConfigError(f"maco.values_range must be (low, high), got {self.values_range}")


def mean_amplitude_spectrum(images: np.ndarray, size: int) -> np.ndarray:
    """(C, size, size//2 + 1) mean |rfft2| of (n, C, H, W) images resized to size × size."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return torch.fft.rfft2(x).abs().mean(dim=0).numpy()


def _standardise(t):
    return (t - t.mean()) / (t.std() + 1e-4)


def phase_to_image(magnitude, phase, values_range: tuple[float, float]):
    """(C, S, S//2+1) magnitude and phase → (C, S, S) image in ``values_range``."""
    import torch

    phi = _standardise(phase)
    spectrum = torch.complex(torch.cos(phi) * magnitude, torch.sin(phi) * magnitude)
    img = _standardise(torch.fft.irfft2(spectrum, s=(magnitude.shape[1], magnitude.shape[1])))
    lo, hi = values_range
    return torch.sigmoid(img) * (hi - lo) + lo


def random_crops(img, n: int, box_size: tuple[float, float], out_size: int, gen):
    """(C, S, S) image → (n, C, out, out) crops: centres ~ N(0.5, 0.15), sides ~ U(box_size),
    bilinear resampling (differentiable)."""
    import torch
    import torch.nn.functional as F

    centre = 0.5 + 0.15 * torch.randn(n, 2, generator=gen)
    side = box_size[0] + (box_size[1] - box_size[0]) * torch.rand(n, generator=gen)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, :, 2] = centre * 2 - 1  # grid coordinates in [−1, 1]
    grid = F.affine_grid(theta.to(img), (n, img.shape[0], out_size, out_size), align_corners=False)
    return F.grid_sample(
        img.unsqueeze(0).expand(n, -1, -1, -1), grid, mode="bilinear", align_corners=False
    )


def maco(
    objective: Callable,
    magnitude: np.ndarray,
    *,
    input_size: int,
    cfg: MacoConfig | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Run MACO.

    Args:
        objective: (B, C, input_size, input_size) → (B,) scores to maximise, e.g. a target logit.
        magnitude: (C, S, S//2+1) amplitude spectrum (``mean_amplitude_spectrum``), S = image size.
        input_size: side of the crops fed to the model.
        cfg: settings (``cfg.image_size`` must equal S).
        device: where to optimise.

    Returns:
        image (C, S, S), transparency (C, S, S) accumulated |gradient|, and
        ``{"maco/objective_start", "maco/objective_end", "maco/seconds"}`` — the objective on the
        whole image resized to the input size, before and after.
    """
    import torch
    import torch.nn.functional as F

    cfg = cfg or MacoConfig()
    start = time.perf_counter()
    mag = torch.as_tensor(np.asarray(magnitude, dtype=np.float32), device=device)
    if mag.shape[1] != cfg.image_size or mag.shape[2] != cfg.image_size // 2 + 1:
        raise ValueError(
            f"magnitude spectrum of shape {tuple(mag.shape)} does not fit image_size "
            f"{cfg.image_size}: compute it with mean_amplitude_spectrum(images, {cfg.image_size})"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    phase = torch.randn(mag.shape, generator=gen).to(device).requires_grad_(True)
    opt = torch.optim.NAdam([phase], lr=cfg.lr)
    transparency = torch.zeros(mag.shape[0], cfg.image_size, cfg.image_size, device=device)

    def whole(img):
        with torch.no_grad():
            x = F.interpolate(img[None], size=(input_size, input_size), mode="bilinear")
            return float(objective(x).mean())

    first = whole(phase_to_image(mag, phase, cfg.values_range))
    for _ in range(cfg.steps):
        opt.zero_grad()
        img = phase_to_image(mag, phase, cfg.values_range)
        img.retain_grad()
        crops = random_crops(img, cfg.crops, cfg.box_size, input_size, gen)
        noise = cfg.noise * torch.randn(crops.shape, generator=gen).to(crops)
        noise += cfg.noise * (torch.rand(crops.shape, generator=gen).to(crops) - 0.5)
        loss = -objective(crops + noise).mean()
        loss.backward()
        transparency += img.grad.abs()
        opt.step()
    img = phase_to_image(mag, phase, cfg.values_range).detach()
    metrics = {
        "maco/objective_start": first,
        "maco/objective_end": whole(img),
        "maco/seconds": time.perf_counter() - start,
    }
    return img.cpu().numpy(), transparency.cpu().numpy(), metrics


def logit_objective(logits_fn: Callable, target: int) -> Callable:
    """``x → logits_fn(x)[:, target]``: the objective of a class visualisation."""
    return lambda x: logits_fn(x)[:, target]


def composite(image: np.ndarray, dyes: tuple[str, ...] | None = None) -> np.ndarray:
    """(C, H, W) → (H, W, 3) in [0, 1] for display: RGB passes through; Cell Painting dyes are
    min-max scaled per channel and mixed with ``DYE_COLOURS`` (default order DNA, ER, RNA, AGP,
    Mito)."""
    img = np.asarray(image, dtype=np.float64)
    if img.shape[0] == 3 and dyes is None:
        out = img.transpose(1, 2, 0)
        return (out - out.min()) / max(out.max() - out.min(), 1e-12)
    dyes = dyes or tuple(DYE_COLOURS)[: img.shape[0]]
    if len(dyes) != img.shape[0]:
        raise ValueError(f"{img.shape[0]} channels but {len(dyes)} dye names: {dyes}")
    unknown = [d for d in dyes if d not in DYE_COLOURS]
    if unknown:
        raise ValueError(f"no composite colour for dye(s) {unknown}; known: {list(DYE_COLOURS)}")
    lo = img.min(axis=(1, 2), keepdims=True)
    hi = img.max(axis=(1, 2), keepdims=True)
    scaled = (img - lo) / np.maximum(hi - lo, 1e-12)
    colours = np.array([DYE_COLOURS[d] for d in dyes])  # (C, 3)
    rgb = np.einsum("chw,ck->hwk", scaled, colours) / np.maximum(colours.sum(axis=0), 1.0)
    return np.clip(rgb, 0.0, 1.0)
