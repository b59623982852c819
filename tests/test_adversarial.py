"""Adversarial alignment: on a linear classifier the minimal L2 ε is the analytic margin, and the
perturbation follows the weights, so a human map of the weights aligns perfectly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bioscale.eval.adversarial import (
    AdversarialConfig,
    adversarial_alignment,
    minimal_eps,
    model_adversarial,
    pgd_l2,
)

C, H, W = 3, 8, 8


def _linear(seed=0):
    """A two-class linear model on (C, H, W) images; class 1 − class 0 weights ``dw``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(2, C * H * W, generator=g) * 0.05
    b = torch.zeros(2)

    def logits(x):
        return x.flatten(1) @ w.T + b

    return logits, w[1] - w[0]


def _images_at_margins(dw, eps_true, label):
    """Images near 0.5 whose minimal L2 flip distance is exactly ``eps_true`` (analytic)."""
    g = torch.Generator().manual_seed(1)
    base = 0.5 + 0.02 * torch.rand(len(eps_true), C * H * W, generator=g)
    unit = dw / dw.norm()
    sign = torch.where(label == 1, 1.0, -1.0)[:, None]
    # distance of each base image to the boundary along ``unit``, then shift to the target distance
    dist = sign[:, 0] * (base @ unit)
    x = base + sign * (torch.as_tensor(eps_true, dtype=torch.float32) - dist)[:, None] * unit
    return x.view(-1, C, H, W)


def test_pgd_moves_along_the_weights_to_the_eps_sphere():
    logits, dw = _linear()
    x = _images_at_margins(dw, [0.5], torch.tensor([1]))
    adv = pgd_l2(logits, x, torch.tensor([1]), torch.tensor([0.3]))
    delta = (adv - x).flatten(1)[0]
    assert float(delta.norm()) == pytest.approx(0.3, rel=1e-4)
    assert float(delta @ dw / (delta.norm() * dw.norm())) == pytest.approx(-1.0, abs=1e-5)


def test_minimal_eps_matches_the_analytic_margin():
    logits, dw = _linear()
    eps_true = np.array([0.05, 0.3, 0.77, 2.5, 6.0, 14.0])
    y = torch.tensor([1, 0, 1, 0, 1, 0])
    x = _images_at_margins(dw, eps_true, y)
    cfg = AdversarialConfig(bisections=12)
    eps, adv, found = minimal_eps(logits, x, y, cfg)
    assert found.tolist() == [True] * 5 + [False]  # 14 > 10: skipped
    for got, want in zip(eps[:5], eps_true[:5], strict=True):
        assert want <= got + 1e-6  # never below the true distance
        assert got - want <= cfg.tolerance(want) + 1e-4
    assert np.isnan(eps[5])
    assert torch.equal(adv[5], x[5])


def test_alignment_metrics_with_known_answers():
    logits, dw = _linear()
    eps_true = np.array([0.2, 0.4, 0.9, 1.5, 14.0, 0.3])
    y = torch.tensor([1, 0, 1, 0, 1, 0])
    x = _images_at_margins(dw, eps_true, y)
    # image 5 is put on the wrong side: misclassified, left out
    x[5] = _images_at_margins(dw, [0.3], torch.tensor([1]))[0]
    human = dw.view(C, H, W).mean(dim=0).abs().expand(6, H, W)  # where the attack must act
    out = adversarial_alignment(logits, x, y, human, cfg=AdversarialConfig())
    assert out["adv/n_misclassified"] == 1.0
    assert out["adv/n_images"] == 5.0 and out["adv/n_skipped"] == 1.0
    assert out["adv/min_eps_l2/median"] == pytest.approx(np.median([0.2, 0.4, 0.9, 1.5]), abs=0.01)
    assert out["adv/alignment/mean"] > 0.99
    rand = torch.rand(6, H, W, generator=torch.Generator().manual_seed(5))
    off = adversarial_alignment(logits, x, y, rand, cfg=AdversarialConfig())
    assert abs(off["adv/alignment/mean"]) < 0.4
    assert off["adv/seconds"] >= 0


def test_network_batches_on_a_tiny_cnn():
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)
            self.head = torch.nn.Linear(2 * 8 * 8, 3, bias=False)

        def forward(self, x):
            emb = self.conv(x).tanh().flatten(1)
            return emb, {"y": self.head(emb)}

    net = Net()
    x = torch.rand(10, 3, 8, 8)
    with torch.no_grad():
        pred = net(x)[1]["y"].argmax(1)
    batches = [
        {
            "x": x[:5],
            "map": torch.rand(5, 8, 8),
            "has_map": torch.ones(5, dtype=bool),
            "y": pred[:5],
        },
        {
            "x": x[5:],
            "map": torch.rand(5, 8, 8),
            "has_map": torch.tensor([1, 0, 1, 0, 1]).bool(),
            "y": pred[5:],
        },
    ]
    out = model_adversarial(net, batches, "cpu", cfg=AdversarialConfig(max_images=7, bisections=4))
    assert out["adv/n_images"] + out["adv/n_misclassified"] == 7.0
    assert out["adv/n_misclassified"] == 0.0
    assert out["adv/n_skipped"] < 7
    assert 0.01 <= out["adv/min_eps_l2/median"] <= 10.0
    assert -1.0 <= out["adv/alignment/mean"] <= 1.0
    assert net.training  # mode restored
