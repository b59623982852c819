"""Harmonized and IBP invariance: loss values against independent computations, gradients."""

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from bioscale.errors import ConfigError
from bioscale.models.ladder import get_rung
from bioscale.objectives import registry as objectives
from bioscale.objectives.harmonized import gaussian_pyramid, pyramid_alignment_loss
from bioscale.objectives.ibp import gradient_reversal
from bioscale.train.loop import Network, param_groups
from bioscale.train.precision import StepNumerics
from bioscale.train.step import make_optimizer, train_step

KERNEL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def reference_alignment(s: np.ndarray, h: np.ndarray) -> float:
    """The harmonization term for one image, written out with numpy/scipy."""

    def standardise(m):
        return np.maximum((m - m.mean()) / (m.std() + 1e-5), 0.0)

    s, h = standardise(s), standardise(h)
    h = h / (h.max() + 1e-6) * (s.max() + 1e-6)
    losses = []
    for _ in range(5):
        losses.append(np.mean((s - h) ** 2))
        # zero padding 2, stride 2: full 'same' convolution, then every other pixel
        s = convolve2d(s, KERNEL, mode="same", boundary="fill")[::2, ::2]
        h = convolve2d(h, KERNEL, mode="same", boundary="fill")[::2, ::2]
    return float(np.mean(losses))


def test_pyramid_levels_and_kernel():
    maps = torch.ones(1, 32, 32)
    levels = gaussian_pyramid(maps)
    assert [tuple(m.shape[1:]) for m in levels] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert levels[1][0, 8, 8].item() == pytest.approx(1.0)  # interior: kernel sums to 1
    assert levels[1][0, 0, 0].item() == pytest.approx((6 + 4 + 1) ** 2 / 256)  # zero padding


def test_alignment_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 32, 32))
    h = rng.random(size=(3, 32, 32))
    has = torch.tensor([True, False, True])
    got = pyramid_alignment_loss(torch.tensor(s), torch.tensor(h), has).item()
    want = np.mean([reference_alignment(s[i], h[i]) for i in (0, 2)])
    assert got == pytest.approx(want, rel=1e-5)
    batch = pyramid_alignment_loss(torch.tensor(s), torch.tensor(h), has, reduction="batch").item()
    assert batch == pytest.approx(want * 2 / 3, rel=1e-5)
    assert pyramid_alignment_loss(torch.tensor(s), torch.tensor(s), has).item() == pytest.approx(
        0.0, abs=1e-9
    )
    assert (
        pyramid_alignment_loss(torch.tensor(s), torch.tensor(h), torch.zeros(3, dtype=bool)).item()
        == 0.0
    )


class TinyConvNet(torch.nn.Module):
    """No BatchNorm, so images are independent and gradients can be attributed per image."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.embed_dim = 4

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


def harmonized_batch(has_map):
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(2, 2, 16, 16, generator=g),
        "y": torch.tensor([0, 2]),
        "map": torch.rand(2, 16, 16, generator=g),
        "has_map": torch.tensor(has_map),
    }


def test_harmonization_trains_through_the_saliency_and_ignores_mapless_images():
    objective = objectives.build("harmonized")
    net = Network(TinyConvNet(), objective.build_heads(4, {"y": 3}))
    batch = harmonized_batch([True, False])
    terms = objective.loss_terms(net, batch)
    assert terms["align"].item() > 0
    grads = torch.autograd.grad(terms["align"], [net.backbone.conv.weight, net.heads["y"].weight])
    assert all(g.abs().sum() > 0 for g in grads)  # second order: reaches the parameters
    # the map-less image's map does not matter, and its pixels get no alignment gradient
    other = dict(batch, map=batch["map"].clone())
    other["map"][1] = torch.rand(16, 16)
    assert objective.loss_terms(net, other)["align"].item() == pytest.approx(terms["align"].item())
    x = batch["x"].clone().requires_grad_(True)
    _, logits = net(x)
    from bioscale.objectives.harmonized import saliency_maps

    sal = saliency_maps(logits["y"], x, batch["y"], batch["has_map"])
    align = pyramid_alignment_loss(sal, batch["map"], batch["has_map"])
    (gx,) = torch.autograd.grad(align, x)
    assert gx[0].abs().sum() > 0 and gx[1].abs().sum() == 0


def test_no_maps_means_plain_cross_entropy():
    objective = objectives.build("harmonized", {"lambda_h": 2.0})
    net = Network(TinyConvNet(), objective.build_heads(4, {"y": 3}))
    terms = objective.loss_terms(net, harmonized_batch([False, False]))
    assert terms["align"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(terms["ce"].item())


def loss_gradients(net, objective, batch):
    """∂(objective's loss)/∂θ alone, for every parameter (a deterministic net: no BN, dropout)."""
    names, params = zip(*net.named_parameters(), strict=True)
    grads = torch.autograd.grad(objective.loss_terms(net, batch)["loss"], params)
    return dict(zip(names, grads, strict=True))


def test_harmonized_coupled_weight_decay_adds_the_l2_penalty_gradient_once():
    """The release's loss adds 1e-5·Σ½‖w‖² over the decayed weights: the step's gradient is the
    objective's plus 1e-5·w on those weights, nothing on biases, and AdamW decays nothing more."""
    objective = objectives.build("harmonized")
    assert (objective.weight_decay(1e-6), objective.weight_decay_mode("decoupled")) == (
        1e-5,
        "coupled",
    )
    torch.manual_seed(0)
    # float64: the 1e-5·w penalty (~1e-6) is read off a gradient ~1e-1 without rounding noise
    net = Network(TinyConvNet(), objective.build_heads(4, {"y": 3})).double()
    batch = harmonized_batch([True, False])
    batch |= {k: batch[k].double() for k in ("x", "map")}
    want = loss_gradients(net, objective, batch)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = make_optimizer(
        net, lr=1e-3, weight_decay=1e-5, weight_decay_mode="coupled", device=torch.device("cpu")
    )
    train_step(
        net,
        objective,
        optimizer,
        batch,
        StepNumerics(precision="fp32", channels_last=False, device=torch.device("cpu")),
    )
    for name, p in net.named_parameters():  # conv and head weights decay, biases do not
        penalty = 1e-5 * before[name] if name.endswith("weight") else torch.zeros_like(p)
        torch.testing.assert_close(p.grad - want[name], penalty, rtol=1e-9, atol=1e-15)
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups)  # applied once


def test_decoupled_weight_decay_leaves_the_gradient_to_adamw():
    objective = objectives.build("harmonized", {"weight_decay_mode": "decoupled"})
    torch.manual_seed(0)
    net = Network(TinyConvNet(), objective.build_heads(4, {"y": 3}))
    batch = harmonized_batch([True, False])
    want = loss_gradients(net, objective, batch)
    cpu = torch.device("cpu")
    optimizer = make_optimizer(
        net,
        lr=1e-3,
        weight_decay=1e-5,
        weight_decay_mode=objective.weight_decay_mode("coupled"),
        device=cpu,
    )
    train_step(
        net,
        objective,
        optimizer,
        batch,
        StepNumerics(precision="fp32", channels_last=False, device=cpu),
    )
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, want[name])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-5, 0.0]
    with pytest.raises(ConfigError, match="weight_decay_mode must be 'coupled' or 'decoupled'"):
        param_groups(net, 1e-5, "l2")


def test_weight_decay_skips_patch_embeddings_tokens_norms_and_biases():
    net = get_rung("vit:debug").build((3, 32, 32))
    decay, no_decay = param_groups(net, 1e-5, "coupled")
    names = {id(p): n for n, p in net.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"patch_embed.proj.weight", "cls_token", "pos_embed"} <= skipped
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed and all(n.endswith(".weight") and "norm" not in n for n in decayed)
    assert "blocks.0.attn.qkv.weight" in decayed and "patch_embed.proj.weight" not in decayed


@pytest.mark.parametrize("rung", ["resnet:debug", "vit:debug"])
def test_debug_image_rungs_train_under_harmonized(rung):
    torch.manual_seed(0)
    objective = objectives.build("harmonized")
    backbone = objective.prepare_backbone(get_rung(rung).build((3, 32, 32)))
    net = Network(backbone, objective.build_heads(backbone.embed_dim, {"y": 4}))
    opt = torch.optim.AdamW(param_groups(net, 1e-5), lr=1e-3)
    batch = {
        "x": torch.rand(4, 3, 32, 32),
        "y": torch.tensor([0, 1, 2, 3]),
        "map": torch.rand(4, 32, 32),
        "has_map": torch.tensor([True, True, False, True]),
    }
    for _ in range(3):
        terms = objective.loss_terms(net, batch)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        assert torch.isfinite(terms["loss"]) and terms["align"].item() > 0


def test_gradient_reversal_flips_and_scales():
    x = torch.ones(3, requires_grad=True)
    gradient_reversal(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))


def test_ibp_invariance_heads_are_adversarial_and_log_leakage():
    objective = objectives.build("ibp", {"invariance": ["plate"], "invariance_weight": 1.0})
    backbone = get_rung("debug").build((6,))
    net = Network(backbone, objective.build_heads(backbone.embed_dim, {"y": 5, "plate": 3}))
    net.eval()  # deterministic forward (no dropout), so two passes can be compared
    batch = {
        "x": torch.randn(8, 6),
        "y": torch.randint(0, 5, (8,)),
        "plate": torch.randint(0, 3, (8,)),
    }
    terms = objective.loss_terms(net, batch)
    assert {"loss", "ce", "invariance", "leakage_plate"} <= set(terms)
    assert terms["loss"].item() == pytest.approx(terms["ce"].item() + terms["invariance"].item())
    # the plate head descends its loss; the backbone receives the reversed gradient
    head_w = net.heads["plate"].linear.weight
    g_head, g_emb_rev = torch.autograd.grad(
        terms["invariance"], [head_w, backbone.stem[0].weight], retain_graph=True
    )
    net.heads["plate"].linear.weight.requires_grad_(True)
    plain = torch.nn.functional.cross_entropy(
        net.heads["plate"].linear(backbone(batch["x"])), batch["plate"]
    )
    (g_emb_plain,) = torch.autograd.grad(plain, [backbone.stem[0].weight])
    assert g_head.abs().sum() > 0
    assert torch.allclose(g_emb_rev, -g_emb_plain, atol=1e-6)


@pytest.mark.parametrize("rung", ["resnet:debug", "vit:debug"])
def test_harmonized_step_under_bf16_autocast(rung):
    objective = objectives.build("harmonized")
    backbone = objective.prepare_backbone(get_rung(rung).build((3, 32, 32)))
    net = Network(backbone, objective.build_heads(backbone.embed_dim, {"y": 4}))
    batch = {
        "x": torch.rand(4, 3, 32, 32),
        "y": torch.tensor([0, 1, 2, 3]),
        "map": torch.rand(4, 32, 32),
        "has_map": torch.tensor([True, False, True, True]),
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = objective.loss_terms(net, batch)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and terms["align"].item() > 0
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_harmonized_trials_resolve_the_coupled_decay_into_config_params_and_key(tmp_path):
    from bioscale.data.natural import SynthNaturalConfig, generate_natural
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    manifest = generate_natural(SynthNaturalConfig(per_class=6, size=32), tmp_path / "data")

    def trial(params):
        spec = StudySpec.from_dict(
            {
                "name": "wd",
                "data": {
                    "kind": "natural",
                    "manifest": str(manifest),
                    "splits": {"probe_train": 1, "probe_val": 1, "probe_test": 1},
                    "image": {"crop": 32},
                },
                "grids": [
                    {
                        "rung": ["resnet:debug"],
                        "diet": [{}],
                        "objective": [{"name": "harmonized", "params": params}],
                    }
                ],
            }
        )
        (only,) = plan(spec, manifest).trials
        return only

    coupled, decoupled = trial({}), trial({"weight_decay_mode": "decoupled"})
    assert (coupled.loop.weight_decay, coupled.loop.weight_decay_mode) == (1e-5, "coupled")
    assert decoupled.loop.weight_decay_mode == "decoupled"
    assert (
        coupled.params["weight_decay_mode"] == "coupled" and coupled.params["weight_decay"] == 1e-5
    )
    assert coupled.key != decoupled.key
