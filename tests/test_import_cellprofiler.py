"""Importers: real LoadData/CytoTable layouts, path resolution, dyes by column, the JUMP join."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from bioscale.cli import main
from bioscale.data import manifest as mf
from bioscale.data.images import decode_batch
from bioscale.data.importers import ImportConfig, import_dataset, importer_names
from bioscale.errors import ConfigError, ManifestError

pytestmark = pytest.mark.timeout(60)


def _rows(path):
    return pq.read_table(path).to_pylist()


@pytest.mark.realdata
def test_real_cytotable_site_imports_with_dyes_from_columns(realdata, tmp_path):
    site = realdata / "cellpainting" / "BR00143976_C03_site3"
    out = tmp_path / "real.parquet"
    summary = import_dataset(
        "cellprofiler",
        ImportConfig(
            input=str(site / "BR00143976_shrunken.parquet"), root=str(site / "images"), out=str(out)
        ),
    )
    assert summary.n_sites == 1  # 5 cell rows of one site
    assert summary.dyes == ["DNA", "ER", "RNA", "AGP", "Mito", "Brightfield"]
    schema = pq.read_schema(out)
    assert json.loads(schema.metadata[mf.META_DYES]) == summary.dyes
    (row,) = _rows(out)
    assert (row["plate"], row["well"], row["site"]) == ("BR00143976", "C03", 3)
    # The real mapping is ch5=DNA ch2=ER ch6=RNA ch3=AGP ch4=Mito ch1=Brightfield.
    expect = {"DNA": 5, "ER": 2, "RNA": 6, "AGP": 3, "Mito": 4, "Brightfield": 1}
    for dye, ch in expect.items():
        assert row[f"path_{dye}"].endswith(f"r03c03f03p01-ch{ch}sk1fk1fl1.tiff")
    assert row["illum_DNA"].endswith("BR00143976_IllumDNA.npy")
    assert row["group"] == "extra" and row["perturbation_id"] is None
    # Decoded channel order follows the dyes: raw means of the real files, channel by channel.
    batch = {k: np.array([v], dtype=object) for k, v in row.items()}
    out_b = decode_batch(batch, dyes=summary.dyes, crop=None, normalise="none")
    assert out_b["x"].shape == (1, 6, 1080, 1080)
    means = out_b["x"][0].mean(axis=(1, 2))
    np.testing.assert_allclose(
        means, [998.503, 1057.093, 1135.613, 522.246, 6237.683, 11872.393], rtol=1e-5
    )
    assert out_b["x"][0, 4].max() == 65535  # Mito (ch4, the uncompressed file) saturates


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "dyes"),
    [
        ("load_data_version1.csv", ["DNA", "ER", "RNA", "AGP", "Mito", "Brightfield"]),
        ("load_data_version5.csv", ["ER", "RNA", "AGP", "Mito", "Brightfield", "DPC"]),
        ("load_data_version7.csv", ["DNA", "ER", "RNA", "AGP", "Mito", "Actin", "Brightfield"]),
    ],
)
def test_real_loaddata_layouts(realdata, tmp_path, name, dyes):
    csv = realdata / "cellpainting" / "load_data_examples_pe2loaddata" / name
    out = tmp_path / "m.parquet"
    summary = import_dataset(
        "cellprofiler", ImportConfig(input=str(csv), root=str(tmp_path), out=str(out))
    )
    assert summary.dyes == dyes  # version 5 has no DNA channel
    (row,) = _rows(out)
    assert row["path_ER"].startswith(str(tmp_path / "tests" / "data"))  # relative → --root


@pytest.mark.realdata
def test_nfcore_s3_urls_kept_and_source_from_metadata(realdata, tmp_path):
    csv = realdata / "cellpainting" / "load_data_examples_pe2loaddata"
    out = tmp_path / "m.parquet"
    summary = import_dataset(
        "cellprofiler",
        ImportConfig(
            input=str(csv / "nfcore_cpg0016_BR00117035_load_data_urls.csv"),
            out=str(out),
            metadata=str(realdata / "jump_metadata"),
            dyes=("DNA", "ER", "RNA", "AGP", "Mito"),
        ),
    )
    (row,) = _rows(out)
    assert summary.dyes == ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert row["path_DNA"].startswith("s3://cellpainting-gallery/cpg0016-jump/source_4/")
    assert row["path_DNA"].endswith("r01c01f01p01-ch5sk1fk1fl1.tiff")
    assert (row["source"], row["batch"]) == ("source_4", "2021_04_26_Batch1")
    assert row["perturbation_type"] == "orf"  # an ORF plate: JCP2022 id found in orf.csv.gz


@pytest.mark.realdata
def test_jump_target2_join_gives_the_platemap_compound(realdata, tmp_path):
    """well.csv × plate.csv[TARGET2] × platemap × compound metadata (no compound.csv here)."""
    from bioscale.data.importers.jump import JumpMetadata

    meta = JumpMetadata.load(realdata / "jump_metadata", plates=set())
    t2 = {
        r["JCP2022"]
        for (plate, _), r in meta.wells.items()
        if meta.plates[plate]["type"] == "TARGET2"
    }
    assert len(t2) == 302
    assert sum(bool(meta.compounds.get(j, {}).get("inchikey")) for j in t2) == 301

    load = tmp_path / "load.csv"
    load.write_text(
        "FileName_OrigDNA,PathName_OrigDNA,Metadata_Plate,Metadata_Well,Metadata_Site\n"
        "a.tiff,img,Dest210726-160150,A01,1\n"
        "b.tiff,img,Dest210726-160150,A02,1\n"
    )
    out = tmp_path / "m.parquet"
    import_dataset(
        "cellprofiler",
        ImportConfig(
            input=str(load),
            root=str(tmp_path),
            out=str(out),
            metadata=str(realdata / "jump_metadata"),
        ),
    )
    a01, a02 = _rows(out)
    # A01 of the JUMP-Target-2 platemap: BRD-K09338665 (1-octanol).
    assert a01["perturbation_id"] == "JCP2022_043547"
    assert a01["inchikey"] == "KBPLFHHGFOOTCA-UHFFFAOYSA-N"
    assert a01["smiles"] == "CCCCCCCCO"
    assert a01["source"] == "source_10" and a01["batch"] == "2021_08_03_U2OS_48_hr_run12"
    # A02: quinine; MoA from the Drug Repurposing Hub annotations by InChIKey.
    assert a02["inchikey"] == "LOUPRKONTZGTKE-UHFFFAOYSA-N"
    assert a02["moa"] == "hemozoin biocrystallization inhibitor"
    assert a02["group"] in ("seen", "novel") and a01["group"] == "extra"  # no MoA → extra


def test_paths_uris_and_errors(tmp_path):
    load = tmp_path / "load.csv"
    load.write_text(
        "FileName_OrigDNA,PathName_OrigDNA,URL_OrigER,FileName_OrigER,Frame_OrigER,"
        "Metadata_Plate,Metadata_Well,Metadata_Site\n"
        "a.tif,s3://bucket/plate1,gs://b/er.tif,,2,P1,A01,1\n"
        "a.tif,/abs/dir,gs://b/er2.tif,,,P1,A02,1\n"
    )
    out = tmp_path / "m.parquet"
    import_dataset("cellprofiler", ImportConfig(input=str(load), out=str(out), source="lab"))
    r1, r2 = _rows(out)
    assert r1["path_DNA"] == "s3://bucket/plate1/a.tif" and r1["path_ER"] == "gs://b/er.tif#2"
    assert r2["path_DNA"] == "/abs/dir/a.tif" and r1["source"] == "lab"

    rel = tmp_path / "rel.csv"
    rel.write_text(
        "FileName_OrigDNA,PathName_OrigDNA,Metadata_Plate,Metadata_Well,Metadata_Site\n"
        "a.tif,images,P1,A01,1\n"
    )
    with pytest.raises(ManifestError, match="--root"):
        import_dataset("cellprofiler", ImportConfig(input=str(rel), out=str(out)))
    with pytest.raises(ManifestError, match="no dye"):
        import_dataset(
            "cellprofiler",
            ImportConfig(input=str(rel), out=str(out), root=str(tmp_path), dyes=("ER",)),
        )
    with pytest.raises(ConfigError, match="cellprofiler"):
        import_dataset("cellprofilr", ImportConfig(input=str(rel), out=str(out)))
    assert "cellprofiler" in importer_names()


def test_cli_import_reports_missing_column_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("FileName_OrigDNA,Metadata_Plate\na.tif,P1\n")
    code = main(["data", "import", "cellprofiler", str(bad), "--out", str(tmp_path / "m.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "Metadata_Well" in err and "Traceback" not in err


def test_orf_and_crispr_wells_carry_their_gene_and_are_held_out(realdata, tmp_path):
    """JUMP's orf.csv / crispr.csv: a guide's or ORF's gene becomes its target (what the genetic
    evaluation pairs), and those wells are `novel`: evaluated, never trained on."""
    import shutil

    from bioscale.data.importers.jump import JumpMetadata

    real = JumpMetadata.load(realdata / "jump_metadata", plates=set())
    assert real.kinds["JCP2022_900002"] == "orf" and real.genes["JCP2022_900002"] == "NAT1"
    assert real.genes["JCP2022_800003"] == "A2M" and "JCP2022_800001" not in real.genes

    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "plate.csv").write_text(
        "Metadata_Source,Metadata_Batch,Metadata_Plate,Metadata_PlateType\nsource_4,b1,P1,ORF\n"
    )
    (meta / "well.csv").write_text(
        "Metadata_Source,Metadata_Plate,Metadata_Well,Metadata_JCP2022\n"
        "source_4,P1,A01,JCP2022_900002\n"
        "source_4,P1,A02,JCP2022_800001\n"
    )
    for name in ("orf.csv.gz", "crispr.csv.gz"):
        shutil.copy(realdata / "jump_metadata" / "datasets" / name, meta / name)
    load = tmp_path / "load.csv"
    load.write_text(
        "FileName_OrigDNA,PathName_OrigDNA,Metadata_Plate,Metadata_Well,Metadata_Site\n"
        "a.tiff,img,P1,A01,1\n"
        "b.tiff,img,P1,A02,1\n"
    )
    out = tmp_path / "m.parquet"
    import_dataset(
        "cellprofiler",
        ImportConfig(input=str(load), root=str(tmp_path), out=str(out), metadata=str(meta)),
    )
    orf, guide = _rows(out)
    assert (orf["perturbation_type"], orf["target"], orf["group"]) == ("orf", "NAT1", "novel")
    # a no-guide CRISPR well names no gene: no target, not a genetic evaluation well
    assert guide["perturbation_type"] == "crispr" and guide["target"] is None
    assert guide["group"] == "extra"
