"""``bioscale data pack``: shards of fixed-size crops that stream back to what decoding gives."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from bioscale.cli import main
from bioscale.data.images import decode_batch
from bioscale.data.manifest import inspect, read_metadata
from bioscale.data.pack import PackConfig, iter_packed, pack_manifest, read_packed
from bioscale.data.synth_images import SynthImagesConfig, generate_images

pytestmark = pytest.mark.timeout(120)
DYES = ["DNA", "ER", "RNA", "AGP", "Mito"]


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    out = tmp_path_factory.mktemp("pack")
    cfg = SynthImagesConfig(
        seed=3,
        n_moa=2,
        compounds_per_moa=2,
        n_extra=1,
        controls_per_plate=2,
        sites_per_well=1,
        size=64,
        cell_radius=8.0,
    )
    return generate_images(cfg, out).manifest


def _decoded(manifest, crop, k, seed):
    table = pq.read_table(manifest)
    batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    return decode_batch(batch, dyes=DYES, crop=crop, crops_per_site=k, rng=seed)


@pytest.mark.parametrize(("dtype", "atol"), [("uint16", 1e-6), ("float16", 1e-3)])
def test_pack_round_trip(screen, tmp_path, dtype, atol):
    res = pack_manifest(
        screen, tmp_path, PackConfig(crop=32, crops_per_site=3, dtype=dtype, seed=9, shard_mb=0.05)
    )
    n_sites = pq.read_metadata(screen).num_rows
    assert res.n_crops == 3 * n_sites and res.crop_shape == (5, 32, 32) and res.n_shards > 1
    info = inspect(res.manifest)  # the packed manifest follows the manifest contract
    assert info.kind == "cellpainting-packed" and info.n_rows == n_sites
    assert (
        read_metadata(res.manifest).column("group").to_pylist()
        == read_metadata(screen).column("group").to_pylist()
    )
    got = list(iter_packed(tmp_path, batch_size=7))
    x = np.concatenate([b["x"] for b in got])
    ids = np.concatenate([b["sample_id"] for b in got])
    ref = _decoded(screen, 32, 3, 9)  # the same seeded crops, decoded directly
    assert list(ids) == list(ref["sample_id"]) and x.shape == ref["x"].shape
    if dtype == "uint16":  # raw integers + stored bounds: identical to decoding
        np.testing.assert_allclose(x, ref["x"], atol=atol)
    else:
        np.testing.assert_allclose(x, ref["x"], atol=atol, rtol=1e-3)


def test_cli_pack_and_ray_stream(screen, tmp_path, ray_local, capsys):
    assert (
        main(
            [
                "data",
                "pack",
                str(screen),
                "--out",
                str(tmp_path),
                "--crop",
                "32",
                "--crops-per-site",
                "2",
            ]
        )
        == 0
    )
    assert "packed" in capsys.readouterr().out
    ds = read_packed(tmp_path)
    n = 0
    for batch in ds.iter_batches(batch_size=16, batch_format="numpy"):
        assert batch["x"].dtype == np.float32 and batch["x"].shape[1:] == (5, 32, 32)
        assert batch["x"].min() >= 0.0 and batch["x"].max() <= 1.0
        n += len(batch["x"])
    assert n == 2 * pq.read_metadata(screen).num_rows
