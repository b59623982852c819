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
    MapConfig,
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
    release_blur,
    release_kernel,
    resize_bilinear,
)
from bioscale.errors import ConfigError, ManifestError


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
    heat[126:130, 126:130] = 1.0
    # 256 → 64 reads the mean of pixels 4i+1 and 4i+2: rows/columns 31 and 32 get 0.5 each, a
    # 2×2 block of mass 1. The 10-tap kernel reaches offsets −4…+5: rows/columns 26…36 at 64 px;
    # 64 → 32 averages pixels 2j and 2j+1: rows/columns 13…18, zero outside.
    out = prepare_map(heat, 32)
    assert out.shape == (32, 32)
    rows, cols = np.nonzero(out > 0)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (13, 18, 13, 18)
    assert out[13:19, 13:19].min() > 0
    assert out.sum() * 4 == pytest.approx(1.0, rel=1e-5)  # kernel sums to 1; 4 px at 64 per px
    # scipy's σ = 10 Gaussian (±40 px taps) spreads the same block over the whole map
    spread = prepare_map(heat, 32, MapConfig(blur="gaussian"))
    assert (spread > 0).all() and spread.sum() * 4 < 1.0  # mass lost past the frame
    # unblurred: straight to the input size, so a map already at that size is left as it is
    smooth = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    assert prepare_map(smooth, 32, MapConfig(blur="none")) == pytest.approx(smooth, abs=1e-6)


def test_release_kernel_and_same_padding_match_the_clickme_release():
    """Literal values from the release's formula: x = −5…4 across columns, y = 4…−5 down rows,
    exp(−(x² + y²)/200) over Z = (Σ_{k=−5}^{4} e^{−k²/200})² = 9.5911468640² = 91.99009817."""
    k = release_kernel()
    assert k.shape == (10, 10) and k.dtype == np.float32
    assert k.sum() == pytest.approx(1.0, rel=1e-6)
    assert k[4, 5] == pytest.approx(0.0108707352, rel=1e-6)  # x = 0, y = 0: the centre tap
    assert k[4, 4] == pytest.approx(0.0108165172, rel=1e-6)  # x = −1, y = 0
    assert k[0, 0] == pytest.approx(0.0088558153, rel=1e-6)  # x = −5, y = 4
    assert k[9, 0] == pytest.approx(0.0084661371, rel=1e-6)  # x = −5, y = −5
    assert k[0, 9] == pytest.approx(0.0092634295, rel=1e-6)  # x = 4, y = 4
    assert np.unravel_index(k.argmax(), k.shape) == (4, 5)

    # 'SAME' for 10 taps pads 4 zeros before and 5 after: out[i, j] = Σ in[i+a−4, j+b−4]·k[a, b]
    corner = np.zeros((64, 64), np.float32)
    corner[0, 0] = 1.0
    out = release_blur(corner)  # out[i, j] = k[4−i, 4−j] for i, j ≤ 4
    rows, cols = np.nonzero(out)
    assert rows.max() == 4 and cols.max() == 4 and len(rows) == 25  # a 5×5 response
    assert out[0, 0] == pytest.approx(0.0108165172, rel=1e-6)  # k[4, 4]
    assert out[0, 4] == pytest.approx(0.0095933902, rel=1e-6)  # k[4, 0]: x = −5, y = 0
    assert out[4, 4] == pytest.approx(0.0088558153, rel=1e-6)  # k[0, 0]
    far = np.zeros((64, 64), np.float32)
    far[63, 63] = 1.0
    out = release_blur(far)  # the bottom/right side has the 5th row/column of taps: 6×6
    rows, cols = np.nonzero(out)
    assert rows.min() == 58 and cols.min() == 58 and len(rows) == 36
    assert out[63, 63] == pytest.approx(0.0108165172, rel=1e-6)  # k[4, 4]
    assert out[58, 58] == pytest.approx(0.0088558153, rel=1e-6)  # k[9, 9]: x = 4, y = −5
    centre = np.zeros((64, 64), np.float32)
    centre[32, 32] = 1.0  # the even kernel's centre tap sits one column right of the pad
    assert np.unravel_index(release_blur(centre).argmax(), (64, 64)) == (32, 31)


def test_resize_bilinear_is_tf_half_pixel_without_antialiasing():
    import torch.nn.functional as F

    ramp = np.tile(np.arange(256, dtype=np.float32), (256, 1))  # value = column
    assert resize_bilinear(ramp, (64, 64))[0] == pytest.approx(4 * np.arange(64) + 1.5)
    small = np.tile(np.arange(64, dtype=np.float32), (64, 1))
    up = resize_bilinear(small, (64, 224))[0]  # samples (j + ½)·64/224 − ½, clamped to [0, 63]
    assert up[0] == 0.0 and up[-1] == 63.0
    assert up[100] == pytest.approx((100 + 0.5) * 64 / 224 - 0.5)
    rng = np.random.default_rng(0)
    for shape, size in (((256, 256), (64, 64)), ((64, 64), (224, 224)), ((20, 30), (64, 64))):
        a = rng.random(shape).astype(np.float32)
        ref = F.interpolate(  # torch's half-pixel bilinear, an independent implementation
            torch.from_numpy(a)[None, None], size=size, mode="bilinear", align_corners=False
        )[0, 0].numpy()
        assert np.abs(resize_bilinear(a, size) - ref).max() < 1e-5


def test_decode_natural_prepares_maps_as_configured(tmp_path):
    from bioscale.data.natural import decode_natural

    heat = np.zeros((40, 40), np.float32)
    heat[8:16, 20:28] = 1.0
    np.save(tmp_path / "m.npy", heat)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    batch = {
        "sample_id": np.array(["a", "b"], dtype=object),
        "path_image": np.array([str(tmp_path / "a.png")] * 2, dtype=object),
        "path_map": np.array([str(tmp_path / "m.npy"), None], dtype=object),
        "y": np.array([0, 1]),
    }
    for maps in (None, MapConfig(blur="none"), MapConfig(blur="gaussian", sigma_px=3.0)):
        out = decode_natural(batch, size=32, flip=False, seed=0, maps=maps)
        assert out["map"][0] == pytest.approx(prepare_map(heat, 32, maps), abs=1e-7)
        assert not out["map"][1].any() and out["has_map"].tolist() == [True, False]
        assert out["y"].tolist() == [0, 1] and out["x"].shape == (2, 3, 32, 32)


def test_map_config_names_its_mistakes():
    assert MapConfig().blur == "release" and MapConfig().sigma == 10.0
    assert MapConfig(blur="gaussian", sigma_px=4.0).sigma == 4.0
    with pytest.raises(ConfigError, match=r"data\.maps\.sigma_px sets the σ of blur: gaussian"):
        MapConfig(blur="release", sigma_px=5.0)
    with pytest.raises(ConfigError, match="must be > 0"):
        MapConfig(blur="gaussian", sigma_px=0.0)
    with pytest.raises(ConfigError, match="one of release, none, gaussian"):
        MapConfig(blur="box")
    with pytest.raises(ManifestError, match="2-D"):
        prepare_map(np.zeros((8, 8, 3), np.float32), 32)


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
