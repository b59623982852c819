"""Decoding: TIFF variants, illumination, normalisation, crops, downsampling, bad samples."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from bioscale.data.images import (
    CropConfig,
    ImageReadError,
    crop_origins,
    decode_batch,
    percentiles,
    read_image,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def site(tmp_path):
    """Two channels of a 64×64 site: DNA as LZW uint16, ER as uncompressed uint8."""
    rng = np.random.default_rng(0)
    dna = rng.integers(100, 5000, (64, 64), dtype=np.uint16)
    er = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "dna.tiff", dna, compression="lzw")
    tifffile.imwrite(tmp_path / "er.tiff", er)
    batch = {
        "sample_id": np.array(["s1"], dtype=object),
        "plate": np.array(["P1"], dtype=object),
        "label": np.array([7]),
        "path_DNA": np.array([str(tmp_path / "dna.tiff")], dtype=object),
        "path_ER": np.array([str(tmp_path / "er.tiff")], dtype=object),
    }
    return batch, dna, er


def test_read_formats(tmp_path, site):
    _, dna, _ = site
    assert tifffile.TiffFile(tmp_path / "dna.tiff").pages[0].compression == 5  # LZW
    np.testing.assert_array_equal(read_image(str(tmp_path / "dna.tiff")), dna)
    assert read_image(str(tmp_path / "er.tiff")).dtype == np.uint8
    stack = np.stack([dna, dna // 2, dna * 0 + 7])
    tifffile.imwrite(tmp_path / "stack.tiff", stack, compression="lzw", photometric="minisblack")
    np.testing.assert_array_equal(read_image(str(tmp_path / "stack.tiff#1")), dna // 2)
    np.testing.assert_array_equal(read_image(str(tmp_path / "stack.tiff")), dna)  # max projection


def test_percentiles_match_numpy_on_integers():
    img = np.random.default_rng(1).integers(0, 60000, (300, 300), dtype=np.uint16)
    lo, hi = percentiles(img, 1.0, 99.9)
    ref = np.percentile(img, [1.0, 99.9], method="lower")
    assert abs(lo - ref[0]) <= 1 and abs(hi - ref[1]) <= 1


def test_decode_normalise_crop_and_pass_through(site):
    batch, dna, _ = site
    out = decode_batch(batch, dyes=["DNA", "ER"], crop=None, normalise="none")
    assert out["x"].shape == (1, 2, 64, 64) and out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["x"][0, 0], dna.astype(np.float32))
    assert list(out["label"]) == [7] and list(out["sample_id"]) == ["s1"] and out["ok"].all()
    assert "path_DNA" not in out

    norm = decode_batch(batch, dyes=["ER", "DNA"], crop=None)  # percentile clip + scale
    assert norm["x"].min() == 0.0 and norm["x"].max() == 1.0
    lo, hi = percentiles(dna, 1.0, 99.9)
    np.testing.assert_allclose(norm["x"][0, 1], np.clip((dna - lo) / (hi - lo), 0, 1), atol=1e-6)

    a = decode_batch(batch, dyes=["DNA"], crop=16, crops_per_site=3, rng=5)
    b = decode_batch(batch, dyes=["DNA"], crop=16, crops_per_site=3, rng=5)
    assert a["x"].shape == (3, 1, 16, 16) and list(a["label"]) == [7, 7, 7]
    np.testing.assert_array_equal(a["x"], b["x"])  # seeded per sample: reproducible
    tiles = decode_batch(batch, dyes=["DNA"], crop=16, crop_mode="tiles", downsample=2)
    assert tiles["x"].shape == (4, 1, 16, 16)  # 64 → 32 pixels → 2×2 tiles
    down = decode_batch(batch, dyes=["DNA"], crop=None, downsample=2, normalise="none")
    np.testing.assert_allclose(down["x"][0, 0, 0, 0], dna[:2, :2].mean(), rtol=1e-6)
    centre = crop_origins(64, 64, CropConfig(size=16, per_site=2, mode="centre"), None)
    assert centre == [(24, 24), (24, 24)]


def test_illumination_correction(tmp_path, site):
    batch, dna, _ = site
    illum = np.full((64, 64), 2.0, dtype=np.float32)
    illum[:, 32:] = 4.0
    np.save(tmp_path / "illum.npy", illum)
    batch = dict(batch, illum_DNA=np.array([str(tmp_path / "illum.npy")], dtype=object))
    out = decode_batch(batch, dyes=["DNA"], crop=None, normalise="none", illumination=True)
    np.testing.assert_allclose(out["x"][0, 0], dna / illum, rtol=1e-6)


def test_plate_control_normalisation(site):
    batch, dna, _ = site
    stats = {"P1": np.array([[100.0, 1100.0]], dtype=np.float32)}
    out = decode_batch(
        batch, dyes=["DNA"], crop=None, normalise="plate_controls", plate_stats=stats
    )
    np.testing.assert_allclose(out["x"][0, 0], np.clip((dna - 100) / 1000, 0, 1), atol=1e-6)


def test_bad_samples_error_or_marked(tmp_path, site):
    batch, _, _ = site
    (tmp_path / "trunc.tiff").write_bytes((tmp_path / "dna.tiff").read_bytes()[:300])
    bad = {k: np.concatenate([v, v]) for k, v in batch.items()}
    bad["sample_id"] = np.array(["s1", "s2"], dtype=object)
    bad["path_DNA"] = np.array([batch["path_DNA"][0], str(tmp_path / "trunc.tiff")], dtype=object)
    with pytest.raises(ImageReadError, match=r"sample s2: cannot decode .*trunc\.tiff") as info:
        decode_batch(bad, dyes=["DNA", "ER"], crop=16)
    assert info.value.sample_id == "s2" and info.value.path.endswith("trunc.tiff")
    out = decode_batch(bad, dyes=["DNA", "ER"], crop=16, crops_per_site=2, bad_sample_policy="skip")
    assert out["x"].shape == (4, 2, 16, 16)
    assert out["ok"].tolist() == [True, True, False, False]
    assert "trunc.tiff" in out["error"][2] and not out["x"][2:].any()
    missing = dict(batch, path_ER=np.array([str(tmp_path / "nope.tiff")], dtype=object))
    with pytest.raises(ImageReadError, match=r"sample s1: missing file .*nope\.tiff"):
        decode_batch(missing, dyes=["DNA", "ER"], crop=16)
