"""``bioscale data check``: raw statistics per sample and channel; every bad file named."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bioscale.cli import main
from bioscale.data.check import check_manifest
from bioscale.data.images import read_image
from bioscale.data.synth_images import SynthImagesConfig, generate_images

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    out = tmp_path_factory.mktemp("check")
    cfg = SynthImagesConfig(
        seed=2,
        n_moa=2,
        compounds_per_moa=2,
        n_extra=1,
        controls_per_plate=1,
        sites_per_well=1,
        size=64,
        cell_radius=8.0,
    )
    return generate_images(cfg, out).manifest


def test_json_reports_raw_stats(screen, capsys):
    assert main(["data", "check", str(screen), "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    rows = pq.read_table(screen).to_pylist()
    assert [r["sample_id"] for r in reports] == [r["sample_id"] for r in rows]
    first, row = reports[0], rows[0]
    assert set(first) == {"sample_id", "plate", "well", "site", "channels"}
    assert list(first["channels"]) == ["DNA", "ER", "RNA", "AGP", "Mito"]
    img = read_image(row["path_RNA"])
    assert first["channels"]["RNA"] == {
        "shape": [64, 64],
        "dtype": "uint16",
        "min": int(img.min()),
        "max": int(img.max()),
        "mean": pytest.approx(float(img.mean())),
    }


@pytest.mark.realdata
def test_real_site_stats(realdata, tmp_path):
    from bioscale.data.importers import ImportConfig, import_dataset

    site = realdata / "cellpainting" / "BR00143976_C03_site3"
    out = tmp_path / "m.parquet"
    import_dataset(
        "cellprofiler",
        ImportConfig(
            input=str(site / "BR00143976_shrunken.parquet"), root=str(site / "images"), out=str(out)
        ),
    )
    (rep,) = check_manifest(str(out)).reports
    assert rep["channels"]["DNA"]["min"] == 174 and rep["channels"]["DNA"]["max"] == 28340
    assert rep["channels"]["Mito"]["max"] == 65535 and rep["channels"]["AGP"]["max"] == 5831


def test_bad_files_all_reported(screen, tmp_path, capsys):
    table = pq.read_table(screen)
    rows = table.to_pylist()
    trunc = tmp_path / "trunc.tiff"
    trunc.write_bytes(Path(rows[1]["path_ER"]).read_bytes()[:200])
    junk = tmp_path / "junk.tiff"
    junk.write_bytes(b"not a tiff at all" * 10)
    paths_er = [r["path_ER"] for r in rows]
    paths_dna = [r["path_DNA"] for r in rows]
    paths_er[1] = str(trunc)
    paths_dna[1] = str(tmp_path / "gone.tiff")
    paths_dna[3] = str(junk)
    bad = table.set_column(table.schema.get_field_index("path_ER"), "path_ER", [paths_er])
    bad = bad.set_column(bad.schema.get_field_index("path_DNA"), "path_DNA", [paths_dna])
    manifest = tmp_path / "bad.parquet"
    pq.write_table(bad, manifest)

    code = main(["data", "check", str(manifest), "--json"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    for sid, f in [
        (rows[1]["sample_id"], "trunc.tiff"),
        (rows[1]["sample_id"], "gone.tiff"),
        (rows[3]["sample_id"], "junk.tiff"),
    ]:
        assert any(sid in line and f in line for line in captured.err.splitlines()), (sid, f)
    reports = json.loads(captured.out)
    assert len(reports) == len(rows)
    assert sorted(e["dye"] for e in reports[1]["errors"]) == ["DNA", "ER"]
    assert "RNA" in reports[1]["channels"]  # the good files of a bad sample are still checked

    pooled = check_manifest(str(manifest), workers=2, chunk=3)
    assert len(pooled.bad) == 3 and [r["sample_id"] for r in pooled.reports] == [
        r["sample_id"] for r in rows
    ]
    assert len(check_manifest(str(manifest), sample=4).reports) == 4


def test_check_on_a_ray_cluster_reports_like_the_local_check(screen, tmp_path, ray_local):
    rows = pq.read_table(screen).to_pylist()
    table = pq.read_table(screen)
    paths = [r["path_Mito"] for r in rows]
    paths[2] = str(tmp_path / "lost.tiff")
    broken = table.set_column(table.schema.get_field_index("path_Mito"), "path_Mito", [paths])
    manifest = tmp_path / "broken.parquet"
    pq.write_table(broken, manifest)
    seen: list[tuple[int, int]] = []
    on_ray = check_manifest(
        str(manifest), address="auto", progress=lambda done, _total, bad: seen.append((done, bad))
    )
    local = check_manifest(str(manifest))
    assert on_ray.reports == local.reports, "same reports, in manifest order"
    assert [r["sample_id"] for r in on_ray.bad] == [rows[2]["sample_id"]]
    assert "lost.tiff" in json.dumps(on_ray.bad[0])
    assert seen[-1] == (len(rows), 1)
