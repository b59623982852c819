"""Alignment of a model's importance maps with human maps (Fel et al. 2022; SEEDS §2).

Importance = max over channels of |∂(true-class logit)/∂x|; per image, Spearman ρ between the
importance map and the human map; the score is the mean ρ. ClickMe's human ceiling (0.65753) is
valid only on ClickMe: other map datasets report raw ρ or their own ceiling.
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
