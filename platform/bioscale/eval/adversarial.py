"""Adversarial alignment (SEEDS §3; arXiv 2306.03229): how small an L2 attack flips a model's
decision, and whether the attack changes the pixels humans find important.

On correctly classified images that have a human map: L2-PGD (3 steps of size 0.5 along the
normalised gradient of the cross-entropy, each followed by projection of the perturbation onto the
ε-sphere and a clamp of the image to [0, 1]) inside a per-image binary search for the smallest ε
that flips the decision. The search looks in [0.01, 1] first and, for images that survive ε = 1,
in [1, 10]; images that survive ε = 10 are skipped and counted. Each bisection runs PGD at the ε it
tests (every image of a batch has its own ε). Alignment is the per-image Spearman ρ between
|mean over channels of (x_adv − x)| at the minimal ε and the human map.

Metrics: ``adv/min_eps_l2/median`` (over the images that flipped), ``adv/alignment/mean``,
``adv/alignment/median``, ``adv/n_images`` (attacked), ``adv/n_skipped`` (no flip at ε = 10),
``adv/n_misclassified`` (left out), ``adv/seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from bioscale.errors import ConfigError
from bioscale.eval.alignment import spearman_per_image


@dataclass(frozen=True, kw_only=True)
class AdversarialConfig:
    """Attack and search settings (published defaults).

    Attributes:
        steps: PGD steps per tested ε.
        step_size: L2 length of each PGD step (in [0, 1] pixel units).
        ranges: ε intervals searched in order; an image goes to the next interval when the upper
            end of the current one does not flip it.
        bisections: halvings per interval; the tolerance is (hi − lo) / 2**bisections.
        max_images: attack at most this many eligible images (None: all).
        batch_size: images attacked together.
    """

    steps: int = 3
    step_size: float = 0.5
    ranges: tuple[tuple[float, float], ...] = ((0.01, 1.0), (1.0, 10.0))
    bisections: int = 10
    max_images: int | None = 256
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.steps < 1 or self.step_size <= 0:
            raise ConfigError("adversarial.steps must be >= 1 and step_size > 0")
        if not self.ranges or any(not 0 < lo < hi for lo, hi in self.ranges):
            raise ConfigError(f"adversarial.ranges must be intervals 0 < lo < hi: {self.ranges}")
        if self.bisections < 1 or self.batch_size < 1:
            raise ConfigError("adversarial.bisections and batch_size must be >= 1")

    def tolerance(self, eps: float) -> float:
        """Search tolerance at ``eps``: the width of the last bisection interval there."""
        for lo, hi in self.ranges:
            if eps <= hi:
                return (hi - lo) / 2**self.bisections
        return float("inf")


def network_logits(model, head: str = "y") -> Callable:
    """Adapt a bioscale network (``forward(x) → (emb, {head: logits})``) to ``x → logits``."""
    return lambda x: model(x)[1][head]


def pgd_l2(logits_fn: Callable, x, y, eps, *, steps: int = 3, step_size: float = 0.5):
    """L2-PGD from x: (B, C, H, W) images in [0, 1], (B,) labels, (B,) radii → (B, C, H, W).

    Each step moves ``step_size`` along the per-image unit gradient of the cross-entropy, rescales
    the perturbation to length ε (the ε-sphere) and clamps the image to [0, 1]."""
    import torch
    import torch.nn.functional as F

    eps = eps.to(x).view(-1, *([1] * (x.ndim - 1)))
    delta = torch.zeros_like(x)
    for _ in range(steps):
        adv = (x + delta).detach().requires_grad_(True)
        loss = F.cross_entropy(logits_fn(adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        unit = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(eps)
        delta = delta + step_size * unit
        delta = delta * eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(eps)
        delta = (x + delta).clamp(0.0, 1.0) - x
    return (x + delta).detach()


def _flips(logits_fn: Callable, x_adv, y):
    import torch

    with torch.no_grad():
        return logits_fn(x_adv).argmax(dim=1) != y


def minimal_eps(logits_fn: Callable, x, y, cfg: AdversarialConfig):
    """Per-image binary search of the smallest flipping ε.

    Returns:
        eps: (B,) the smallest ε found to flip (NaN where nothing up to the last range flipped);
        x_adv: (B, C, H, W) the attack at that ε (x itself where nothing flipped);
        found: (B,) bool.
    """
    import torch

    b = len(x)
    attack = lambda e: pgd_l2(logits_fn, x, y, e, steps=cfg.steps, step_size=cfg.step_size)  # noqa: E731
    lo = torch.zeros(b, dtype=x.dtype, device=x.device)
    hi = torch.full((b,), float("nan"), dtype=x.dtype, device=x.device)
    best = x.detach().clone()
    for r_lo, r_hi in cfg.ranges:
        todo = torch.isnan(hi)
        if not bool(todo.any()):
            break
        adv = attack(torch.full_like(lo, r_hi))
        hit = _flips(logits_fn, adv, y) & todo
        hi[hit] = r_hi
        lo[hit] = r_lo
        best[hit] = adv[hit]
    found = ~torch.isnan(hi)
    if not bool(found.any()):
        return hi.cpu().numpy(), best, found.cpu().numpy()
    # an image already flipped at the lower end of its range reports that end
    eps = torch.where(found, lo, torch.ones_like(lo))
    adv = attack(eps)
    at_lo = _flips(logits_fn, adv, y) & found
    hi[at_lo] = lo[at_lo]
    best[at_lo] = adv[at_lo]
    searching = found & ~at_lo
    for _ in range(cfg.bisections):
        if not bool(searching.any()):
            break
        mid = torch.where(searching, (lo + hi) / 2, torch.ones_like(lo))
        adv = attack(mid)  # PGD at the ε under test, per image
        hit = _flips(logits_fn, adv, y) & searching
        miss = searching & ~hit
        hi[hit] = mid[hit]
        best[hit] = adv[hit]
        lo[miss] = mid[miss]
    return hi.cpu().numpy(), best, found.cpu().numpy()


def perturbation_maps(x, x_adv) -> np.ndarray:
    """(B, H, W) |mean over channels of (x_adv − x)|."""
    return (x_adv - x).mean(dim=1).abs().cpu().numpy()


def adversarial_alignment(
    logits_fn: Callable, x, y, maps, *, cfg: AdversarialConfig | None = None
) -> dict[str, float]:
    """Metrics on (B, C, H, W) images in [0, 1], (B,) labels and (B, H, W) human maps (every
    image has a map; select them before). Misclassified images are counted and left out."""
    start = time.perf_counter()
    rows = _attack_rows(logits_fn, x, y, maps, cfg or AdversarialConfig())
    return _summarise(*rows, seconds=time.perf_counter() - start)


def _attack_rows(logits_fn: Callable, x, y, maps, cfg: AdversarialConfig):
    """(eps (n,), alignment ρ (n,), flipped (n,), misclassified count) of a set of images."""
    import torch

    with torch.no_grad():
        correct = logits_fn(x).argmax(dim=1) == y
    n_wrong = int((~correct).sum())
    x, y, maps = x[correct], y[correct], maps[correct.to(maps.device)]
    eps_all, rho_all, found_all = [], [], []
    for i in range(0, len(x), cfg.batch_size):
        xb, yb = x[i : i + cfg.batch_size], y[i : i + cfg.batch_size]
        eps, adv, found = minimal_eps(logits_fn, xb, yb, cfg)
        rho = np.full(len(xb), np.nan)
        if found.any():
            hit = torch.as_tensor(found, device=xb.device)
            mb = maps[i : i + cfg.batch_size][hit.to(maps.device)]
            rho[found] = spearman_per_image(perturbation_maps(xb[hit], adv[hit]), mb.cpu().numpy())
        eps_all.append(eps)
        rho_all.append(rho)
        found_all.append(found)
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    return cat(eps_all), cat(rho_all), cat(found_all).astype(bool), n_wrong


def _summarise(eps, rho, found, n_wrong, *, seconds: float) -> dict[str, float]:
    flipped = found.astype(bool)
    nan = float("nan")
    return {
        "adv/min_eps_l2/median": float(np.median(eps[flipped])) if flipped.any() else nan,
        "adv/alignment/mean": float(np.mean(rho[flipped])) if flipped.any() else nan,
        "adv/alignment/median": float(np.median(rho[flipped])) if flipped.any() else nan,
        "adv/n_images": float(len(eps)),
        "adv/n_skipped": float((~flipped).sum()),
        "adv/n_misclassified": float(n_wrong),
        "adv/seconds": seconds,
    }


def model_adversarial(
    model,
    batches: Iterable[dict],
    device,
    *,
    cfg: AdversarialConfig | None = None,
    label: str = "y",
    head: str = "y",
) -> dict[str, float]:
    """Adversarial alignment of a bioscale network over the held-out images with a human map in
    ``batches`` (``x``, ``map``, ``has_map``, ``label``), as ``model_alignment`` reads them;
    stops after ``cfg.max_images`` images with a map."""
    import torch

    cfg = cfg or AdversarialConfig()
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    logits_fn = network_logits(model, head)
    xs, ys, ms = [], [], []
    taken = 0
    for batch in batches:
        rows = torch.as_tensor(batch["has_map"], dtype=torch.bool)
        if cfg.max_images is not None:
            keep = torch.cumsum(rows.long(), 0) <= cfg.max_images - taken
            rows = rows & keep
        if bool(rows.any()):
            xs.append(torch.as_tensor(batch["x"])[rows])
            ys.append(torch.as_tensor(batch[label])[rows].long())
            ms.append(torch.as_tensor(batch["map"])[rows])
            taken += int(rows.sum())
        if cfg.max_images is not None and taken >= cfg.max_images:
            break
    if not xs:
        model.train(was_training)
        return {}
    x, y, maps = torch.cat(xs).to(device), torch.cat(ys).to(device), torch.cat(ms)
    rows = _attack_rows(logits_fn, x, y, maps, cfg)
    model.train(was_training)
    return _summarise(*rows, seconds=time.perf_counter() - start)
