"""Alignment of a model's importance maps with human maps (Fel et al. 2022; SEEDS §2).

Importance = max over channels of |∂(true-class logit)/∂x|; per image, Spearman ρ between the
importance map and the human map; the score is the mean ρ. ClickMe's human ceiling (0.65753) is
valid only on ClickMe, with maps blurred as its release blurs them (``bioscale.data.natural``,
``MapConfig(blur="release")``): other maps report raw ρ or their own ceiling.
"""

from __future__ import annotations

import numpy as np

CLICKME_CEILING = 0.65753


def importance_maps(model, x, y):
    """(B, C, H, W) inputs → (B, H, W) max-over-channels |∂ logit_y / ∂x|, model in eval mode."""
    import torch

    was_training = model.training
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    _, logits = model(x)
    (grad,) = torch.autograd.grad(logits["y"].gather(1, y[:, None]).sum(), x)
    model.train(was_training)
    return grad.abs().amax(dim=1)


def spearman_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman ρ between corresponding (H, W) maps of two (B, H, W) stacks."""
    from scipy.stats import spearmanr

    out = np.empty(len(a))
    for i in range(len(a)):
        rho = spearmanr(a[i].ravel(), b[i].ravel()).statistic
        out[i] = 0.0 if np.isnan(rho) else rho
    return out


def saliency_alignment(model, x, y, maps, has_map) -> float:
    """Mean Spearman ρ between importance and human maps over the images that have a map."""
    import torch

    rows = torch.as_tensor(has_map, dtype=torch.bool)
    if not bool(rows.any()):
        return float("nan")
    imp = importance_maps(model, x[rows], y[rows]).cpu().numpy()
    return float(spearman_per_image(imp, maps[rows].cpu().numpy()).mean())


def top_fraction_masks(maps: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """(B, H, W) maps → (B, H, W) bool: each image's ⌈fraction·H·W⌉ highest pixels (ties broken
    by position, so every mask has exactly that many pixels)."""
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(np.ceil(fraction * flat.shape[1])))
    top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    mask = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask.reshape(maps.shape)


def dice_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU (B,) of the top-``fraction`` pixels of two (B, H, W) map stacks."""
    ma, mb = top_fraction_masks(a, fraction), top_fraction_masks(b, fraction)
    inter = (ma & mb).sum(axis=(1, 2))
    union = (ma | mb).sum(axis=(1, 2))
    dice = 2.0 * inter / (ma.sum(axis=(1, 2)) + mb.sum(axis=(1, 2)))
    return dice, inter / np.maximum(union, 1)


def alignment_metrics(
    importance: np.ndarray, human: np.ndarray, ceiling: float | None
) -> dict[str, float]:
    """``align/spearman`` (mean per-image ρ), ``align/score`` (ρ / the dataset's human ceiling;
    only with a ceiling: ClickMe's is ``CLICKME_CEILING``), ``align/dice10`` and ``align/iou10``
    (top-10% pixels) of (B, H, W) model importance maps against (B, H, W) human maps."""
    rho = float(spearman_per_image(importance, human).mean())
    dice, iou = dice_iou(importance, human, 0.1)
    out = {
        "align/spearman": rho,
        "align/dice10": float(dice.mean()),
        "align/iou10": float(iou.mean()),
    }
    if ceiling is not None:
        out["align/score"] = rho / ceiling
    return out


def model_alignment(
    model, batches, device, *, ceiling: float | None, label: str = "y"
) -> dict[str, float]:
    """Alignment metrics, ``align/top1`` and ``align/n_images`` (the images scored) of ``model``
    (``forward(x) → (emb, {"y": logits})``) over the images with a human map in ``batches``
    (``x``, ``map``, ``has_map``, ``label``).

    Importance is taken for the true class, max over channels of |∂logit/∂x|; maps and images are
    gathered on the CPU, one batch of gradients at a time."""
    import torch

    imps, humans, hits = [], [], []
    for batch in batches:
        rows = batch["has_map"].bool()
        if not bool(rows.any()):
            continue
        x = batch["x"][rows].to(device)
        y = batch[label][rows].to(device)
        imps.append(importance_maps(model, x, y).cpu().numpy())
        humans.append(batch["map"][rows].cpu().numpy())
        with torch.no_grad():
            model.eval()
            _, logits = model(x)
            hits.append((logits["y"].argmax(dim=1) == y).cpu().numpy())
    if not imps:
        return {}
    out = alignment_metrics(np.concatenate(imps), np.concatenate(humans), ceiling)
    correct = np.concatenate(hits)
    out["align/top1"] = float(correct.mean())
    out["align/n_images"] = float(len(correct))
    return out
