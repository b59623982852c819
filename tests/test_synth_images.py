"""Synthetic images: real-format files, imported through the LoadData path, biology in pixels."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile

from bioscale.data.images import read_image
from bioscale.data.synth_images import _N_TRAITS, SynthImagesConfig, generate_images, render_site

pytestmark = pytest.mark.timeout(60)
SMALL = {
    "n_moa": 3,
    "compounds_per_moa": 3,
    "n_extra": 2,
    "controls_per_plate": 2,
    "sites_per_well": 1,
    "size": 64,
    "cell_radius": 8.0,
}


def test_screen_files_manifest_and_determinism(tmp_path):
    cfg = SynthImagesConfig(seed=4, **SMALL)
    a = generate_images(cfg, tmp_path / "a")
    b = generate_images(cfg, tmp_path / "b")
    assert a.n_sites == 2 * (9 + 2 + 2) and a.n_files == 5 * a.n_sites
    rows = list(csv.DictReader(a.load_data.read_text().splitlines()))
    assert rows[0]["FileName_OrigDNA"].endswith("-ch5sk1fk1fl1.tiff")  # Phenix name, ch5 = DNA
    assert rows[0]["FileName_OrigER"].startswith("r01c01f01p01-ch2")
    f = a.images / rows[0]["PathName_OrigDNA"].removeprefix("images/") / rows[0]["FileName_OrigDNA"]
    with tifffile.TiffFile(f) as tif:
        assert tif.pages[0].compression == 5 and tif.pages[0].dtype == np.uint16  # LZW uint16
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(f) == digest(tmp_path / "b" / f.relative_to(tmp_path / "a"))

    table = pq.read_table(a.manifest)
    t = table.to_pylist()
    assert {r["group"] for r in t} == {"seen", "novel", "extra", "control"}
    assert table.schema.metadata[b"bioscale.dyes"] == b'["DNA", "ER", "RNA", "AGP", "Mito"]'
    ctrl = [r for r in t if r["group"] == "control"]
    assert all(r["perturbation_id"] == "JCP2022_033924" for r in ctrl)
    seen = [r for r in t if r["group"] == "seen"]
    assert all(r["moa"] and r["inchikey"] and r["concentration"] > 0 for r in seen)
    assert {r["source"] for r in t} == {"source_1"} and len({r["batch"] for r in t}) == 2
    other = pq.read_table(b.manifest).drop_columns(
        [f"path_{d}" for d in ["DNA", "ER", "RNA", "AGP", "Mito", "map"]]
    )
    assert other.equals(
        table.drop_columns([f"path_{d}" for d in ["DNA", "ER", "RNA", "AGP", "Mito", "map"]])
    )


def test_phenotype_changes_pixels():
    """A strong phenotype (all traits +0.9) vs control: bigger nuclei, more mito, more DNA."""
    kw = {
        "size": 128,
        "n_cells_mean": 10,
        "cell_radius": 12.0,
        "gains": np.ones(5, np.float32),
        "background": np.full(5, 200, np.float32),
    }
    ctrl = np.stack(
        [render_site(np.zeros(_N_TRAITS), rng=np.random.default_rng(i), **kw) for i in range(4)]
    )
    drug = np.stack(
        [render_site(np.full(_N_TRAITS, 0.9), rng=np.random.default_rng(i), **kw) for i in range(4)]
    )
    sig = lambda x: (x.astype(float) - 200).clip(0).mean(axis=(0, 2, 3))  # noqa: E731
    assert (sig(drug) > 1.3 * sig(ctrl)).all()  # every dye responds
    assert ctrl.dtype == np.uint16 and ctrl.shape == (4, 5, 128, 128)


def test_cli_writes_and_imports(tmp_path, capsys):
    """``data synth cellpainting``: every field of the generator's config is a flag; ``images``
    (the command's former name) is the same generator."""
    from bioscale.cli import main

    flags = ["--size", "64", "--sites-per-well", "1", "--n-moa", "2", "--no-expert-maps"]
    assert main(["data", "synth", "cellpainting", "--out", str(tmp_path / "a"), *flags]) == 0
    out = capsys.readouterr().out
    assert "manifest: " in out and "LZW TIFFs" in out
    table = pq.read_table(tmp_path / "a" / "manifest.parquet")
    row = table.to_pylist()[0]
    assert read_image(row["path_Mito"]).shape == (64, 64)
    assert "path_map" not in table.column_names  # --no-expert-maps
    seen = {r["moa"] for r in table.to_pylist() if r["group"] in ("seen", "novel")}
    assert len(seen) == 2  # --n-moa 2
    assert main(["data", "synth", "images", "--out", str(tmp_path / "b"), *flags]) == 0
    again = pq.read_table(tmp_path / "b" / "manifest.parquet")
    assert again.drop_columns([c for c in again.column_names if c.startswith("path_")]).equals(
        table.drop_columns([c for c in table.column_names if c.startswith("path_")])
    )


def test_expert_maps_mark_the_phenotype_and_are_empty_for_controls(tmp_path):
    import tifffile

    from bioscale.data.synth_images import SynthImagesConfig, generate_images

    table = pq.read_table(
        generate_images(SynthImagesConfig(size=64, cell_radius=10.0), tmp_path).manifest
    ).to_pylist()
    for row in table:
        heat = tifffile.imread(row["path_map"])
        assert heat.shape == (64, 64)
        if row["group"] == "control":
            assert heat.max() == 0
        else:
            assert heat.max() == 65535  # scaled to the site's strongest effect
            dna = tifffile.imread(row["path_DNA"]).astype(float)
            # the map lies on cells, not on background
            assert dna[heat > 32768].mean() > dna[heat == 0].mean()
