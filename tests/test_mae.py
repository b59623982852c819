"""The ``mae`` objective: masked patches on ViT rungs, masked features on profile MLPs, the plan's
refusal of CNN rungs, FLOPs, and a local training loop run with probes."""

import pytest
import torch

from bioscale.errors import ConfigError
from bioscale.models.ladder import count_parameters, get_rung
from bioscale.objectives import registry as objectives
from bioscale.objectives.mae import EVAL_MASK_SEED
from bioscale.objectives.mae_net import (
    MaskedImages,
    masked_feature_loss,
    masked_patch_loss,
    random_mask,
)
from bioscale.train.loop import Network

PATCH = 8  # the ViT ladder's patch size


def build(rung, input_shape, **params):
    objective = objectives.build("mae", params)
    backbone = objective.prepare_backbone(get_rung(rung).build(input_shape))
    return Network(backbone, objective.build_heads(backbone.embed_dim, {})), objective


def smooth_images(n, chans=3, size=32, seed=0):
    """Images with spatial structure (a few blobs per dye), so hidden patches are predictable."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, chans, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


def pixels_of(hidden, grid, patch=PATCH):
    """(B, L) patch mask → (B, 1, H, W) pixel mask."""
    b = len(hidden)
    m = hidden.view(b, 1, *grid).float()
    return m.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3).bool()


def eval_loss(net, objective, x):
    net.eval()
    with torch.no_grad():
        return objective.loss_terms(net, {"x": x})["loss"].item()


def test_registry_builds_mae_with_validated_params():
    assert "mae" in objectives.names()
    mae = objectives.build("mae")
    assert mae.params.mask_ratio == 0.75 and mae.params.norm_pix_loss
    assert mae.train_groups() == frozenset({"seen", "extra"}) and mae.uses_controls()
    with pytest.raises(ConfigError, match="mask_ratio must be in"):
        objectives.build("mae", {"mask_ratio": 1.0})
    with pytest.raises(ConfigError, match="multiple of decoder_heads"):
        objectives.build("mae", {"decoder_dim": 30, "decoder_heads": 4})
    with pytest.raises(ConfigError, match="unknown key 'ratio'"):
        objectives.build("mae", {"ratio": 0.5})


@pytest.mark.parametrize("norm_pix", [True, False])
def test_patch_loss_is_computed_on_masked_patches_only(norm_pix):
    torch.manual_seed(0)
    net, objective = build("vit:debug", (5, 32, 32), norm_pix_loss=norm_pix)
    grid = net.backbone.grid
    x = torch.rand(4, 5, 32, 32)
    gen = torch.Generator().manual_seed(EVAL_MASK_SEED)
    keep, hidden = random_mask(4, grid[0] * grid[1], 0.75, x.device, gen)
    assert keep.shape == (4, 4) and hidden.sum(dim=1).tolist() == [12] * 4
    net.eval()
    with torch.no_grad():
        encoded, heads = net(MaskedImages(images=x, keep=keep))
    pred = heads["decoder"]
    assert pred.shape == (4, 16, PATCH * PATCH * 5)
    base = masked_patch_loss(pred, x, hidden, PATCH, norm_pix)
    # the objective's evaluation loss is this function on the fixed evaluation masks
    assert objective.loss_terms(net, {"x": x})["loss"].item() == pytest.approx(base.item())

    visible_px = ~pixels_of(hidden, grid)
    changed_visible = torch.where(visible_px, torch.rand_like(x) * 5, x)
    same = masked_patch_loss(pred, changed_visible, hidden, PATCH, norm_pix)
    assert same.item() == pytest.approx(base.item(), rel=1e-6)
    changed_hidden = torch.where(~visible_px, torch.rand_like(x) * 5, x)
    assert masked_patch_loss(pred, changed_hidden, hidden, PATCH, norm_pix).item() != pytest.approx(
        base.item(), rel=1e-3
    )
    # the encoder never sees the hidden pixels
    with torch.no_grad():
        again, _ = net(MaskedImages(images=changed_hidden, keep=keep))
    assert encoded.tokens.shape == (4, 1 + 4, 64)
    assert torch.allclose(again.tokens, encoded.tokens, atol=1e-6)


def test_a_few_steps_reduce_the_mae_loss_on_a_tiny_vit():
    torch.manual_seed(0)
    net, objective = build("vit:debug", (3, 32, 32))
    x = smooth_images(32)
    before = eval_loss(net, objective, x)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    for _ in range(25):
        net.train()
        terms = objective.loss_terms(net, {"x": x})
        assert set(terms) == {"loss", "recon"}
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    after = eval_loss(net, objective, x)
    assert after < 0.9 * before


def test_masked_features_hide_the_input_and_score_only_the_hidden_features():
    objective = objectives.build("mae", {"feature_mask_ratio": 0.25})
    objective.prepare_backbone(get_rung("debug").build((20,)))

    class Echo(torch.nn.Module):
        """Its reconstruction is its (masked) input."""

        def forward(self, x):
            return x, {"decoder": x}

    x = torch.randn(6, 20)
    terms = objective.loss_terms(Echo().eval(), {"x": x})
    gen = torch.Generator().manual_seed(EVAL_MASK_SEED)
    _, hidden = random_mask(6, 20, 0.25, x.device, gen)
    assert hidden.sum(dim=1).tolist() == [5] * 6
    # hidden inputs were zeroed, so the echo's error on them is x itself
    expected = (x[hidden] ** 2).mean()
    assert terms["recon"].item() == pytest.approx(expected.item(), rel=1e-6)
    pred = torch.randn(6, 20)
    base = masked_feature_loss(pred, x, hidden)
    changed = torch.where(hidden, x, x + 10.0)
    assert masked_feature_loss(pred, changed, hidden).item() == pytest.approx(base.item())


def test_a_few_steps_reduce_masked_feature_reconstruction_on_a_profile_mlp():
    torch.manual_seed(0)
    # low-rank profiles: every feature is predictable from the others
    x = torch.randn(128, 4) @ torch.randn(4, 24)
    x = (x - x.mean(0)) / x.std(0)
    net, objective = build("debug", (24,))
    assert count_parameters(net.heads) > 0
    before = eval_loss(net, objective, x)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(60):
        net.train()
        terms = objective.loss_terms(net, {"x": x})
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    after = eval_loss(net, objective, x)
    assert after < 0.6 * before


def test_cnn_rungs_are_refused_naming_the_rungs_that_support_mae():
    mae = objectives.get("mae")
    assert mae.rung_refusal("vit:debug") is None and mae.rung_refusal("mlp:w64-l1") is None
    why = mae.rung_refusal("resnet:debug")
    assert "mae cannot train the resnet rung resnet:debug" in why
    assert "vit: vit:base, vit:debug" in why and "mlp:w64-l1" in why
    assert objectives.get("supervised").rung_refusal("resnet:debug") is None
    with pytest.raises(ValueError, match="mae trains ViT and profile MLP rungs"):
        objectives.build("mae").prepare_backbone(get_rung("convnext:debug").build((3, 32, 32)))


def test_mae_step_under_bf16_autocast_and_channels_last():
    net, objective = build("vit:debug", (5, 16, 16))
    net = net.to(memory_format=torch.channels_last)
    x = torch.rand(4, 5, 16, 16).contiguous(memory_format=torch.channels_last)
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = objective.loss_terms(net, {"x": x})
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_plan_runs_mae_on_profiles_and_counts_its_flops(synth_manifest):
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    spec = StudySpec.from_dict(
        {
            "name": "s",
            "data": {"synthetic": {}},
            "grids": [
                {
                    "rung": ["debug"],
                    "diet": [{"extra": "all"}],
                    "objective": ["supervised", "ibp", "harmonized", "mae"],
                }
            ],
        }
    )
    result = plan(spec, synth_manifest)
    trials = {t.point.objective.name: t for t in result.trials}
    assert set(trials) == {"supervised", "ibp", "mae"}  # harmonized needs maps
    mae = trials["mae"]
    assert mae.loop.num_classes == {}
    assert mae.params["N"] == trials["ibp"].params["N"]  # the decoder is a head
    assert mae.params["N_heads"] > 0
    assert mae.params["D_samples"] == trials["ibp"].params["D_samples"]  # seen + extra
    assert mae.loop.flops_per_sample > trials["supervised"].loop.flops_per_sample > 0


def test_plan_drops_cnn_rungs_for_mae_and_keeps_vit(tmp_path):
    from bioscale.data.synth_images import SynthImagesConfig, generate_images
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    manifest = generate_images(
        # 4 plates: a seen compound's 4 wells fill probe_train/val/test (whole wells) + the pool
        SynthImagesConfig(size=32, cell_radius=6.0, expert_maps=False, plates_per_batch=2),
        tmp_path,
    ).manifest
    spec = StudySpec.from_dict(
        {
            "name": "img",
            "data": {
                "kind": "cellpainting",
                "manifest": str(manifest),
                "splits": {"probe_train": 1, "probe_val": 1, "probe_test": 1, "early_stop_val": 0},
                "image": {"crop": 16},
            },
            "grids": [{"rung": ["resnet:debug", "vit:debug"], "diet": [{}], "objective": ["mae"]}],
        }
    )
    result = plan(spec, manifest)
    assert [t.point.rung for t in result.trials] == ["vit:debug"]
    vit = result.trials[0]
    assert vit.loop.flops_per_sample > 0 and vit.params["N_heads"] > 0
    (refused,) = [why for p, why in result.dropped if p.rung == "resnet:debug"]
    assert "rungs that support it" in refused and "vit:debug" in refused


def test_local_training_loop_runs_mae_and_probes(synth_manifest):
    from functools import partial

    from bioscale.data import manifest as mf
    from bioscale.data.diets import Diet
    from bioscale.data.splits import SampleIndex, SplitConfig
    from bioscale.eval.final import FinalConfig, final_metrics
    from bioscale.eval.probe import ProbeConfig
    from bioscale.study.plan import GridPoint, trial_data
    from bioscale.study.spec import ObjectiveSpec
    from bioscale.train import loop
    from bioscale.train.context import LocalContext

    index = SampleIndex.from_table(mf.read_metadata(synth_manifest), SplitConfig())
    _, x = mf.read_features(synth_manifest)
    point = GridPoint(
        rung="debug",
        diet=Diet(replicates=1.0, extra="all"),
        objective=ObjectiveSpec(name="mae"),
        seed=0,
    )
    td, num_classes = trial_data(index, point)
    assert num_classes == {} and td.train.columns == {}
    cfg = loop.LoopConfig(
        rung="debug",
        input_shape=(x.shape[1],),
        objective="mae",
        num_classes=num_classes,
        max_epochs=4,
        lr=3e-3,
        weight_decay=1e-6,
        batch_size=64,
        seed=0,
        flops_per_sample=100.0,
    )
    ctx = LocalContext(
        train={"x": x[td.train.rows]},
        evals={
            "val": {"x": x[td.val.rows]},
            "probe": {"x": x[td.probe.rows], **td.probe.columns},
        },
        batch_size=64,
    )
    final = loop.run(
        cfg, ctx, final=partial(final_metrics, final=FinalConfig(probe=ProbeConfig(cs=(0.1, 1.0))))
    )
    epochs = [m for r in ctx.reports for m in r.get("history", ())]
    assert len(epochs) == 4
    assert {"train/loss", "train/recon", "val/loss"} <= set(epochs[0])
    assert epochs[-1]["train/loss"] < epochs[0]["train/loss"]
    for split in ("seen_compounds", "novel_compounds"):
        assert 0.0 <= final[f"probe/moa/{split}/top1"] <= 1.0
    assert final["compute/flops"] == pytest.approx(100.0 * final["train/samples_seen"])


def test_the_wrapped_vit_embeds_and_exposes_layers_like_the_plain_vit():
    from bioscale.eval.layers import extract_layers, layer_names

    torch.manual_seed(0)
    plain = get_rung("vit:debug").build((3, 16, 16))
    net, _ = build("vit:debug", (3, 16, 16))
    net.backbone.vit.load_state_dict(plain.state_dict())
    assert layer_names(net.backbone) == [f"vit.{name}" for name in layer_names(plain)]
    x = torch.rand(4, 3, 16, 16)
    mine = extract_layers(net.backbone, [x])
    theirs = extract_layers(plain, [x])
    for a, b in zip(mine.values(), theirs.values(), strict=True):
        assert torch.allclose(torch.from_numpy(a), torch.from_numpy(b), atol=1e-6)
