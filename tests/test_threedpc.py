"""3D-PC: the synthetic ImageFolder layout has the answers its geometry says, and the published
probe on frozen pooled features beats chance on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bioscale.data.synth_3dpc import Synth3DPCConfig, _visible, generate_3dpc, render_depth
from bioscale.eval.threedpc import (
    ThreeDPCConfig,
    ThreeDPCDataError,
    evaluate_3dpc,
    read_split,
    train_probe,
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    cfg = Synth3DPCConfig(size=32, train=60, val=20, test=20, human=8)
    return generate_3dpc(cfg, tmp_path_factory.mktemp("3dpc"))


def test_layout_is_imagefolder_and_balanced(synth):
    for task in ("depth", "vpt_basic", "vpt_strategy"):
        for split, per_class in (("train", 60), ("val", 20), ("test", 20), ("human", 8)):
            paths, labels = read_split(synth / task, split)
            assert np.bincount(labels).tolist() == [per_class, per_class]
            assert all(p.parent.name == str(y) for p, y in zip(paths, labels, strict=True))


def test_depth_answer_follows_the_red_dot():
    # nearer blocks stand lower on the ground plane: label 1 ⇔ the red dot is below the blue one
    rng = np.random.default_rng(0)
    agree = []
    for label in [0, 1] * 40:
        img = render_depth(rng, label, 64)
        red = (img[..., 0] > 0.95) & (img[..., 1] < 0.05) & (img[..., 2] < 0.05)
        blue = (img[..., 2] > 0.95) & (img[..., 0] < 0.05)
        rows = np.arange(64)[:, None]
        lower = (rows * red).sum() / red.sum() > (rows * blue).sum() / blue.sum()
        agree.append(lower == bool(label))
    assert np.mean(agree) == 1.0


def test_visibility_geometry():
    viewer, facing = np.array([0.2, 0.5]), np.array([1.0, 0.0])
    target = np.array([0.8, 0.5])
    far_wall = (np.array([0.5, 0.8]), np.array([0.5, 0.9]))
    across = (np.array([0.5, 0.4]), np.array([0.5, 0.6]))
    assert _visible(viewer, facing, target, *far_wall)
    assert not _visible(viewer, facing, target, *across)
    assert not _visible(viewer, -facing, target, *far_wall)  # behind the viewer


def test_probe_beats_chance_on_depth_order(synth):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 32, 5, stride=2, padding=2)

    def embed(x):  # a frozen random conv layer, max-pooled to 4×4
        return torch.nn.functional.adaptive_max_pool2d(conv(x).relu(), 4).flatten(1)

    # the published lr (5e-5) is sized for 3D-PC's thousands of training images; 120 images
    # give ~30× fewer steps, so this small case uses a larger one
    cfg = ThreeDPCConfig(image_size=32, lr=1e-3)
    out = evaluate_3dpc(embed, synth / "depth", cfg=cfg)
    # 40 test images: chance reaches 0.7 with p < 0.01
    assert out["probe/3dpc_depth/test/acc"] > 0.7
    assert "probe/3dpc_depth/human/acc" in out
    assert out["probe/3dpc_depth/n_train"] == 120.0
    assert 1 <= out["probe/3dpc_depth/best_epoch"] <= 30


def test_probe_keeps_the_best_validation_epoch():
    # separable train/val/test; the probe's reported val acc is the max over its epochs
    rng = np.random.default_rng(0)

    def split(n):
        y = np.repeat([0, 1], n // 2)
        return rng.normal(size=(n, 6)).astype(np.float32) + 2.5 * y[:, None], y

    feats = {"train": split(200), "val": split(60), "test": split(60)}
    out = train_probe(feats, ThreeDPCConfig(epochs=5, lr=1e-2))
    assert out["val/acc"] > 0.9 and out["test/acc"] > 0.9
    first = train_probe(feats, ThreeDPCConfig(epochs=1, lr=1e-2))
    assert out["val/acc"] >= first["val/acc"]


def test_defaults_are_the_published_probe():
    cfg = ThreeDPCConfig()
    assert (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.dropout) == (30, 5e-5, 1e-4, 0.3)


def test_missing_split_is_named(tmp_path):
    generate_3dpc(
        Synth3DPCConfig(size=16, train=2, val=1, test=1, human=0, tasks=("depth",)), tmp_path
    )
    import shutil

    shutil.rmtree(tmp_path / "depth" / "val" / "1")
    with pytest.raises(ThreeDPCDataError, match=r"val/1 is missing"):
        evaluate_3dpc(lambda x: x.mean(dim=(2, 3)), tmp_path / "depth")
    shutil.rmtree(tmp_path / "depth" / "test")
    with pytest.raises(ThreeDPCDataError, match=r"lacks split folder\(s\) \['test'\]"):
        evaluate_3dpc(lambda x: x.mean(dim=(2, 3)), tmp_path / "depth")
