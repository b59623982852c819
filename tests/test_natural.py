"""Natural images with human maps: importers, map preprocessing, and harmonization at work."""

import io
import json
import struct

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from bioscale.data.natural import (
    SynthNaturalConfig,
    fixation_map,
    generate_natural,
    import_clickme,
    import_fixations,
    import_folder,
    load_image,
    load_map,
    parse_example,
    prepare_map,
)
from bioscale.errors import ManifestError


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def encode_example(image: bytes, heatmap: bytes, label: int) -> bytes:
    """A tf.train.Example, encoded by hand from the protobuf wire format."""

    def entry(key: str, feature: bytes) -> bytes:
        return _field(1, _field(1, key.encode()) + _field(2, feature))

    features = (
        entry("image", _field(1, _field(1, image)))
        + entry("heatmap", _field(1, _field(1, heatmap)))
        + entry("label", _field(3, _field(1, _varint(label))))
    )
    return _field(1, features)


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG")
    return buf.getvalue()


def test_clickme_tfrecords_import_without_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    shard = tmp_path / "clickme-train-000.tfrecords"
    with open(shard, "wb") as fh:
        for label in (3, 980):
            rec = encode_example(
                jpeg(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)),
                jpeg(rng.integers(0, 255, (256, 256), dtype=np.uint8)),
                label,
            )
            fh.write(struct.pack("<Q", len(rec)) + b"\0" * 4 + rec + b"\0" * 4)
    assert parse_example(encode_example(b"a", b"b", 7)) == {
        "image": [b"a"],
        "heatmap": [b"b"],
        "label": [7],
    }
    manifest = import_clickme([shard], tmp_path / "out")
    rows = pq.read_table(manifest).to_pylist()
    assert [r["label"] for r in rows] == ["3", "980"]
    assert load_image(rows[0]["path_image"], 64).shape == (3, 64, 64)
    assert load_map(rows[1]["path_map"], 64).shape == (64, 64)
    with open(shard, "ab") as fh:
        fh.write(b"\x10\x00")
    with pytest.raises(ManifestError, match="truncated TFRecord"):
        import_clickme([shard], tmp_path / "bad")


def test_folder_layout_and_fixations(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / cls / "a.jpg")
    (tmp_path / "maps" / "cat").mkdir(parents=True)
    Image.fromarray(np.full((20, 30), 200, np.uint8)).save(tmp_path / "maps" / "cat" / "a.png")
    rows = pq.read_table(import_folder(tmp_path, tmp_path / "m.parquet")).to_pylist()
    assert [(r["label"], r["path_map"] is not None) for r in rows] == [
        ("cat", True),
        ("dog", False),
    ]
    heat = fixation_map([(5, 5), (5, 5), (15, 25)], (20, 30), sigma_px=2.0)
    assert heat.argmax() == np.ravel_multi_index((5, 5), (20, 30))
    assert heat.sum() == pytest.approx(3.0, rel=0.05)
    fix = tmp_path / "fix.json"
    fix.write_text(json.dumps({"cat/a.jpg": [[5, 5], [10, 12]]}))
    out = pq.read_table(import_fixations(fix, tmp_path / "images", tmp_path / "fx")).to_pylist()
    assert out[0]["label"] == "cat" and np.load(out[0]["path_map"]).shape == (20, 30)


def test_prepare_map_blurs_at_64_and_resizes():
    heat = np.zeros((256, 256), np.float32)
    heat[128, 128] = 1.0
    out = prepare_map(heat, 32)
    assert out.shape == (32, 32)
    assert np.unravel_index(out.argmax(), out.shape) in {(15, 15), (15, 16), (16, 15), (16, 16)}
    assert out.max() < 0.01  # σ = 10 px at 64 px spreads a point over many pixels


@pytest.mark.timeout(300)
def test_harmonized_training_looks_where_the_map_says(tmp_path):
    """Same data, model, seed and steps; λ_h = 1 vs λ_h = 0 (plain CE with the same smoothing)."""
    from bioscale.eval.alignment import saliency_alignment
    from bioscale.models.ladder import get_rung
    from bioscale.objectives import registry as objectives
    from bioscale.train.loop import Network, param_groups

    size = 32
    rows = pq.read_table(
        generate_natural(SynthNaturalConfig(per_class=40, size=size), tmp_path)
    ).to_pylist()
    x = torch.tensor(np.stack([load_image(r["path_image"], size) for r in rows]))
    y = torch.tensor([int(r["label"][-1]) for r in rows])
    has = torch.tensor([r["path_map"] is not None for r in rows])
    maps = torch.tensor(
        np.stack(
            [
                load_map(r["path_map"], size)
                if r["path_map"]
                else np.zeros((size, size), np.float32)
                for r in rows
            ]
        )
    )
    order = np.random.default_rng(0).permutation(len(rows))
    train, test = order[:120], order[120:]
    scores = {}
    for lam in (0.0, 1.0):
        torch.manual_seed(0)
        objective = objectives.build("harmonized", {"lambda_h": lam})
        backbone = objective.prepare_backbone(get_rung("resnet:debug").build((3, size, size)))
        net = Network(backbone, objective.build_heads(backbone.embed_dim, {"y": 4}))
        opt = torch.optim.AdamW(param_groups(net, 1e-5), lr=3e-3)
        for _ in range(15):
            for start in range(0, len(train), 32):
                b = train[start : start + 32]
                terms = objective.loss_terms(
                    net, {"x": x[b], "y": y[b], "map": maps[b], "has_map": has[b]}
                )
                opt.zero_grad()
                terms["loss"].backward()
                opt.step()
        scores[lam] = saliency_alignment(net, x[test], y[test], maps[test], has[test])
    assert scores[1.0] > scores[0.0] + 0.05, scores
