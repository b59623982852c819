"""``bioscale data import profiles``: well-level profile tables → a profile manifest.

The real BBBC021 tables are imported two ways — the feature-selected table with its own
``Metadata_`` columns, and the raw per-well means through the image table (``--join``) and the MoA
table (``--annotations``) — and must agree well by well on compound, dose and MoA.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bioscale.cli import main
from bioscale.data.importers.profiles import ProfileImportConfig, import_profiles
from bioscale.data.manifest import feature_names, inspect, read_features, read_metadata
from bioscale.errors import ManifestError

pytestmark = pytest.mark.timeout(120)

WEEK = r"^(Week\d+)_"


@pytest.fixture(scope="module")
def bbbc021(realdata) -> Path:
    folder = realdata / "profiles" / "bbbc021"
    if not folder.is_dir():
        pytest.skip(f"BBBC021 profiles not found under {folder}")
    return folder


@pytest.fixture(scope="module")
def imported(bbbc021, tmp_path_factory):
    out = tmp_path_factory.mktemp("bbbc021")
    selected = import_profiles(
        ProfileImportConfig(
            tables=(str(bbbc021 / "BBBC021_feature_selected_mad_robustize.csv"),),
            out=str(out / "selected.parquet"),
            batch_pattern=WEEK,
        )
    )
    raw = import_profiles(
        ProfileImportConfig(
            tables=(str(bbbc021 / "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz"),),
            out=str(out / "raw.parquet"),
            batch_pattern=WEEK,
            join=str(bbbc021 / "BBBC021_v1_image.csv.gz"),
            on=(("Plate", "Image_Metadata_Plate_DAPI"), ("Well", "Image_Metadata_Well_DAPI")),
            annotations=str(bbbc021 / "BBBC021_v1_moa.csv"),
        )
    )
    return selected, raw


def test_bbbc021_imports_both_ways_and_the_two_agree_well_by_well(bbbc021, imported):
    selected, raw = imported
    assert (selected.n_wells, selected.n_features) == (632, 189)
    assert (raw.n_wells, raw.n_features) == (632, 516)
    a = read_metadata(selected.path).to_pylist()
    b = {r["sample_id"]: r for r in read_metadata(raw.path).to_pylist()}
    assert set(b) == {r["sample_id"] for r in a}
    for r in a:  # one path through the table's own columns, one through join + annotations
        other = b[r["sample_id"]]
        for col in ("perturbation_id", "perturbation_type", "concentration", "moa", "batch"):
            assert r[col] == other[col], (r["sample_id"], col)
    controls = [r for r in a if r["perturbation_type"] == "control"]
    assert len(controls) == 330 and {r["perturbation_id"] for r in controls} == {"DMSO"}
    assert all(r["moa"] is None and r["group"] == "control" for r in controls)
    treated = [r for r in a if r["perturbation_type"] == "compound"]
    assert len({r["moa"] for r in treated}) == 12
    assert len({r["perturbation_id"] for r in treated}) == 38
    assert len({(r["perturbation_id"], r["concentration"]) for r in treated}) == 103
    assert {r["batch"] for r in a} == {f"Week{i}" for i in range(1, 11)}
    # stratified groups: every MoA keeps a seen compound, a quarter of compounds are novel
    for moa in {r["moa"] for r in treated}:
        assert any(r["group"] == "seen" for r in treated if r["moa"] == moa)
    novel = {r["perturbation_id"] for r in treated if r["group"] == "novel"}
    assert 5 <= len(novel) <= 12
    info = inspect(raw.path)  # the manifest contract
    assert info.kind == "profiles" and info.n_features == 516


def test_feature_values_and_names_are_the_tables_own(bbbc021, imported):
    selected, _ = imported
    with open(bbbc021 / "BBBC021_feature_selected_mad_robustize.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = [c for c in rows[0] if not c.startswith("Metadata_")]
    assert feature_names(pq.read_schema(selected.path)) == names
    ids, x = read_features(selected.path)
    assert x.dtype == np.float32 and x.shape == (632, 189)
    by_id = dict(zip(ids, x, strict=True))
    for r in rows[::97]:
        want = np.array([float(r[c]) for c in names], np.float32)
        np.testing.assert_array_equal(by_id[f"{r['Metadata_Plate']}_{r['Metadata_Well']}"], want)


def _write_plate(path: Path, plate: str, wells: list[str], rng, extra: dict | None = None):
    n = len(wells)
    cols = {
        "Metadata_Plate": [plate] * n,
        "Metadata_Well": wells,
        "Metadata_broad_sample": ["DMSO" if i == 0 else f"BRD-{i % 3}" for i in range(n)],
        "Metadata_pert_type": ["control" if i == 0 else "trt" for i in range(n)],
        "Metadata_moa": [None if i == 0 else f"moa{i % 3}|kinase" for i in range(n)],
        "Cells_A": rng.normal(size=n),
        "Nuclei_B": rng.normal(size=n),
        "Image_Count_Cells": rng.integers(50, 100, n),
        "Image_FileName": [f"f{i}.tif" for i in range(n)],
    }
    cols |= extra or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(cols)
    if path.name.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        import pyarrow.csv as pacsv

        buf = pa.BufferOutputStream()
        pacsv.write_csv(table, buf)
        data = buf.getvalue().to_pybytes()
        path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return table


def test_a_jump_tree_imports_in_row_groups_with_defaults_from_its_folders(tmp_path):
    """``<source>/<batch>/<plate>/<plate>.parquet`` gives source and batch; CSV.gz and Parquet
    mix; non-numeric columns are left out and named; MoA lists stay as they are."""
    rng = np.random.default_rng(0)
    wells = [f"{r}{c:02d}" for r in "ABCDEFGH" for c in range(1, 13)]  # 96 wells a plate
    tree = tmp_path / "profiles"
    for source, batch, plate, suffix in [
        ("source_4", "2021_04", "P1", ".parquet"),
        ("source_4", "2021_04", "P2", ".csv.gz"),
        ("source_7", "2021_09", "P3", ".parquet"),
    ]:
        _write_plate(tree / source / batch / plate / f"{plate}{suffix}", plate, wells, rng)
    out = tmp_path / "m.parquet"
    summary = import_profiles(ProfileImportConfig(tables=(str(tree),), out=str(out)))
    assert (summary.n_wells, summary.n_features, summary.n_tables) == (288, 3, 3)
    assert summary.excluded_columns == ["Image_FileName"]
    meta = read_metadata(out).to_pylist()
    p3 = [r for r in meta if r["plate"] == "P3"]
    assert {(r["source"], r["batch"]) for r in p3} == {("source_7", "2021_09")}
    assert {r["moa"] for r in meta if r["perturbation_type"] == "compound"} == {
        "moa0|kinase",
        "moa1|kinase",
        "moa2|kinase",
    }
    assert sum(r["group"] == "control" for r in meta) == 3
    assert feature_names(pq.read_schema(out)) == ["Cells_A", "Nuclei_B", "Image_Count_Cells"]
    assert pq.ParquetFile(out).metadata.num_row_groups >= 2  # streamed, not one block
    # --features selects by prefix
    sub = import_profiles(
        ProfileImportConfig(
            tables=(str(tree),), out=str(tmp_path / "s.parquet"), features=("Cells_", "Nuclei_")
        )
    )
    assert sub.n_features == 2


def test_bad_tables_are_named_with_their_file_and_column(tmp_path):
    rng = np.random.default_rng(1)
    wells = ["A01", "A02", "A03"]
    good = tmp_path / "good.csv"
    _write_plate(good, "P1", wells, rng)
    text = good.read_text().splitlines()
    bad = tmp_path / "bad.csv"  # a word where a number belongs
    bad.write_text(
        "\n".join([text[0], *text[1:2], text[2].replace(text[2].split(",")[5], "oops"), *text[3:]])
        + "\n"
    )
    with pytest.raises(ManifestError, match=r"bad\.csv column Cells_A"):
        import_profiles(ProfileImportConfig(tables=(str(bad),), out=str(tmp_path / "o.parquet")))
    assert not (tmp_path / "o.parquet").exists()  # nothing half-written
    other = tmp_path / "other.csv"
    _write_plate(other, "P2", wells, rng, extra={"Cytoplasm_C": [1.0, 2.0, 3.0]})
    with pytest.raises(ManifestError, match=r"other\.csv has 1 other.*Cytoplasm_C"):
        import_profiles(
            ProfileImportConfig(tables=(str(good), str(other)), out=str(tmp_path / "o.parquet"))
        )
    again = tmp_path / "again.csv"
    _write_plate(again, "P1", wells, rng)
    with pytest.raises(ManifestError, match="P1_A01 appears twice"):
        import_profiles(
            ProfileImportConfig(tables=(str(good), str(again)), out=str(tmp_path / "o.parquet"))
        )


def test_cli_import_profiles(bbbc021, tmp_path, capsys):
    code = main(
        [
            "data",
            "import",
            "profiles",
            str(bbbc021 / "BBBC021_feature_selected_mad_robustize.csv"),
            "--out",
            str(tmp_path / "m.parquet"),
            "--batch-pattern",
            WEEK,
        ]
    )
    assert code == 0
    assert "632 wells × 189 features" in capsys.readouterr().out


def test_raw_feature_baseline_on_bbbc021_beats_chance_and_shuffled_features_do_not(
    imported, tmp_path
):
    """``data baseline``: the evaluation suite on the imported features as they are. BBBC021's
    CellProfiler features name a held-out well's MoA far above chance (12 MoAs); the same
    features shuffled across wells do not."""
    import json

    from bioscale.data.manifest import write_profiles

    selected, _ = imported
    out = tmp_path / "baseline.json"
    assert main(["data", "baseline", str(selected.path), "--eval", "moa", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    top1 = report["metrics"]["probe/moa/seen_compounds/top1"]
    assert top1 > 0.4 and report["n_features"] == 189 and report["tasks"] == ["moa"]
    table = pq.read_table(selected.path)
    _, x = read_features(selected.path)
    shuffled = np.random.default_rng(0).permutation(x)
    cols = {c: table.column(c).to_pylist() for c in table.column_names if c != "features"}
    write_profiles(tmp_path / "shuffled.parquet", cols, shuffled)
    from bioscale.eval.baseline import raw_feature_metrics
    from bioscale.eval.config import ProbeConfig

    null = raw_feature_metrics(tmp_path / "shuffled.parquet", probe=ProbeConfig(tasks=("moa",)))
    assert null.metrics["probe/moa/seen_compounds/top1"] < 0.25 < top1 - 0.15


def test_the_feature_pass_on_ray_data_writes_the_same_manifest(tmp_path, ray_local):
    """``--address``: each table is written by a Ray Data task and the parts joined in order;
    the manifest holds exactly what the one-process import writes."""
    rng = np.random.default_rng(3)
    wells = [f"{r}{c:02d}" for r in "ABCD" for c in range(1, 13)]
    tree = tmp_path / "profiles"
    for plate, suffix in (("P1", ".parquet"), ("P2", ".csv.gz"), ("P3", ".parquet")):
        _write_plate(tree / "s" / "b" / plate / f"{plate}{suffix}", plate, wells, rng)
    local = import_profiles(
        ProfileImportConfig(tables=(str(tree),), out=str(tmp_path / "a.parquet"))
    )
    remote = import_profiles(
        ProfileImportConfig(tables=(str(tree),), out=str(tmp_path / "b.parquet")), address="auto"
    )
    assert local.groups == remote.groups and remote.n_wells == 3 * len(wells)
    a, b = pq.read_table(local.path), pq.read_table(remote.path)
    assert a.equals(b) and feature_names(b.schema) == feature_names(a.schema)
    assert not (tmp_path / "b.parts").exists()  # the part files are gone
