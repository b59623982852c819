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
from bioscale.errors import BioscaleError

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


def _raw_site(path: str) -> np.ndarray:
    import tifffile

    return tifffile.imread(path).astype(np.float64)


def _plate_bounds(manifest, dye: str) -> dict[str, tuple[float, float]]:
    """Each plate's 1st/99.9th percentile over all its control sites' pixels (numpy only; the
    screen has fewer control sites per plate than the 16 ``plate_control_stats`` samples)."""
    table = pq.read_table(manifest).to_pylist()
    pooled: dict[str, list[np.ndarray]] = {}
    for r in table:
        if r["group"] == "control":
            pooled.setdefault(r["plate"], []).append(_raw_site(r[f"path_{dye}"]).ravel())
    # bioscale's percentiles of integer pixels are order statistics (numpy's "lower" method)
    return {
        p: tuple(np.percentile(np.concatenate(v), [1.0, 99.9], method="lower"))
        for p, v in pooled.items()
    }


def test_streamed_plate_control_normalisation_matches_the_plates_control_pixels(screen, ray_local):
    """``normalise: plate_controls`` in a trial's stream: every centre crop is its raw pixels
    scaled by its plate's control percentiles — the same bounds ``data pack`` stores."""
    from bioscale.data import kinds
    from bioscale.data.splits import SampleIndex
    from bioscale.objectives.base import Targets
    from bioscale.study.spec import DataSpec, ImageSpec

    data = DataSpec(
        kind="cellpainting",
        manifest=str(screen),
        image=ImageSpec(crop=64, normalise="plate_controls", dyes=["ER", "DNA"]),
    )
    kind = kinds.get("cellpainting")
    kind.check(data, screen)  # every plate has control sites
    index = SampleIndex.from_table(read_metadata(screen), data.splits)
    rows = np.arange(len(index.sample_id))
    targets = Targets(rows=rows, columns={"y": rows.astype(np.int64)})  # y names the site
    sets = kinds.TrialSets(train=targets, val=targets, probe=targets)
    prepared = kind.prepare(data, screen)
    out = kind.datasets(
        data, str(screen), index, sets, kinds.DataCpus(select=0.1, decode=0.25), prepared=prepared
    )
    xs, ys = [], []
    for batch in out["probe"].iter_batches(batch_size=None, batch_format="numpy"):
        xs.append(batch["x"])
        ys.append(batch["y"])
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    assert xs.shape == (len(rows), 2, 64, 64) and sorted(ys) == list(rows)
    paths = {r["sample_id"]: r for r in pq.read_table(screen).to_pylist()}
    bounds = {d: _plate_bounds(screen, d) for d in ("ER", "DNA")}
    for x, row in zip(xs, ys, strict=True):
        r = paths[index.sample_id[row]]
        for c, dye in enumerate(("ER", "DNA")):
            lo, hi = bounds[dye][r["plate"]]
            expected = np.clip((_raw_site(r[f"path_{dye}"]) - lo) / (hi - lo), 0.0, 1.0)
            np.testing.assert_allclose(x[c], expected, atol=2e-3)


def test_pack_takes_the_study_image_settings_dyes_and_skipped_sites(screen, tmp_path):
    """``data pack`` reads the same image config as a study: a dye subset in the given order,
    and ``bad_samples: skip`` leaves an unreadable site out of the shards and lists it."""
    import pyarrow as pa

    table = pq.read_table(screen)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    paths = table.column("path_DNA").to_pylist()
    bad_id = table.column("sample_id")[0].as_py()
    paths[0] = str(broken)
    damaged = tmp_path / "damaged.parquet"
    i = table.schema.get_field_index("path_DNA")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(paths)), damaged)

    cfg = PackConfig(crop=32, crops_per_site=1, dyes=["Mito", "DNA"], seed=1)
    with pytest.raises(BioscaleError, match=bad_id):  # error (the default) names the site
        pack_manifest(damaged, tmp_path / "strict", cfg)
    with pytest.raises(BioscaleError, match="max_skipped"):  # 1 bad site > 1 % of the sites
        pack_manifest(damaged, tmp_path / "few", PackConfig(crop=32, bad_samples="skip"))
    res = pack_manifest(
        damaged,
        tmp_path / "skip",
        PackConfig(
            crop=32,
            crops_per_site=1,
            dyes=["Mito", "DNA"],
            seed=1,
            bad_samples="skip",
            max_skipped=0.5,
        ),
    )
    assert list(res.skipped) == [bad_id] and res.crop_shape == (2, 32, 32)
    packed_ids = read_metadata(res.manifest).column("sample_id").to_pylist()
    assert bad_id not in packed_ids and len(packed_ids) == table.num_rows - 1
    got = list(iter_packed(tmp_path / "skip", batch_size=64))
    x = np.concatenate([b["x"] for b in got])
    ref = decode_batch(
        {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names},
        dyes=["Mito", "DNA"],
        crop=32,
        rng=1,
    )
    np.testing.assert_allclose(x, ref["x"][1:], atol=1e-6)  # the other sites, Mito then DNA
    with pytest.raises(BioscaleError, match="Golgi"):
        pack_manifest(screen, tmp_path / "x", PackConfig(crop=32, dyes=["Golgi"]))
