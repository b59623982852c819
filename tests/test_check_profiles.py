"""``bioscale data check`` on profile manifests: non-finite and constant features, counted exactly."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bioscale.cli import main
from bioscale.data import manifest as mf
from bioscale.data.check import check_profiles, profile_problems

pytestmark = pytest.mark.timeout(60)

N_WELLS = 40


def metadata(n: int) -> dict[str, list]:
    """Metadata columns of ``n`` wells on two plates (well ``w<i>``, plate ``P<i % 2>``)."""
    cols: dict[str, list] = {c: [None] * n for c in mf.METADATA_COLUMNS}
    cols |= {
        "sample_id": [f"s{i:03d}" for i in range(n)],
        "source": ["src"] * n,
        "batch": ["b0"] * n,
        "plate": [f"P{i % 2}" for i in range(n)],
        "well": [f"w{i}" for i in range(n)],
        "site": [None] * n,
        "perturbation_id": [f"cpd{i % 5}" for i in range(n)],
        "perturbation_type": ["compound"] * n,
        "group": ["seen"] * n,
    }
    return cols


def known_profiles() -> np.ndarray:
    """(40, 6) float32 with bad values at known places (well index, feature index):
    f1 NaN in wells 3, 17, 30; f2 +Inf in well 5 and -Inf in well 22; f3 is 2.5 everywhere;
    f4 is 1.0 where finite and NaN in well 30; f0 and f5 are random and clean."""
    x = np.random.default_rng(0).normal(size=(N_WELLS, 6)).astype(np.float32)
    x[[3, 17, 30], 1] = np.nan
    x[5, 2] = np.inf
    x[22, 2] = -np.inf
    x[:, 3] = 2.5
    x[:, 4] = 1.0
    x[30, 4] = np.nan
    return x


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    out = tmp_path_factory.mktemp("check_profiles")
    x = known_profiles()
    unnamed = mf.write_profiles(out / "unnamed.parquet", metadata(N_WELLS), x, row_group_size=7)
    names = ["area", "nan_feat", "inf_feat", "flat", "flat_with_nan", "texture"]
    with mf.ProfileWriter(out / "named.parquet", names, row_group_size=7) as w:
        for a, b in ((0, 25), (25, N_WELLS)):  # two writes: row groups of 7 and a ragged tail
            cols = {c: v[a:b] for c, v in metadata(N_WELLS).items()}
            w.write(cols, x[a:b])
    clean = x.copy()
    clean[~np.isfinite(clean)] = 0.0
    clean_path = mf.write_profiles(out / "clean.parquet", metadata(N_WELLS), clean)
    return {"unnamed": unnamed, "named": out / "named.parquet", "clean": clean_path}


def test_counts_names_and_exit_code_through_the_cli(manifests, capsys):
    assert main(["data", "check", str(manifests["named"]), "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["n_wells"] == N_WELLS and report["n_features"] == 6
    assert report["feature_names_stored"] is True
    assert report["nonfinite_wells"] == 5  # wells 3, 5, 17, 22, 30
    assert report["nonfinite_features"] == [
        {"feature": "nan_feat", "index": 1, "nan": 3, "posinf": 0, "neginf": 0},
        {"feature": "inf_feat", "index": 2, "nan": 0, "posinf": 1, "neginf": 1},
        {"feature": "flat_with_nan", "index": 4, "nan": 1, "posinf": 0, "neginf": 0},
    ]
    assert report["constant_features"] == [
        {"feature": "flat", "index": 3, "value": 2.5},
        {"feature": "flat_with_nan", "index": 4, "value": 1.0},
    ]
    wells = [(w["sample_id"], w["plate"], w["well"]) for w in report["bad_wells"]]
    assert wells == [
        ("s003", "P1", "w3"),
        ("s005", "P1", "w5"),
        ("s017", "P1", "w17"),
        ("s022", "P0", "w22"),
        ("s030", "P0", "w30"),
    ]
    first = {w["sample_id"]: (w["feature"], w["value"], w["n_bad"]) for w in report["bad_wells"]}
    assert first["s005"] == ("inf_feat", "inf", 1)
    assert first["s022"] == ("inf_feat", "-inf", 1)
    assert first["s030"] == ("nan_feat", "nan", 2)  # nan_feat and flat_with_nan
    assert "sample s030 (plate P0, well w30): 2 feature(s), first nan_feat = nan" in captured.err
    assert (
        "warning: 2 constant feature(s)" in captured.err and "flat, flat_with_nan" in captured.err
    )


def test_without_stored_names_features_are_named_by_index(manifests, capsys):
    assert main(["data", "check", str(manifests["unnamed"])]) == 1
    captured = capsys.readouterr()
    text = captured.out
    assert "40 well(s) x 6 feature(s)" in text
    assert "stores no feature names: by index" in text
    assert "5 well(s) with non-finite values; 3 feature(s) hold 4 NaN, 1 +Inf, 1 -Inf" in text
    assert "  feature 1: 3 NaN, 0 +Inf, 0 -Inf" in text
    assert "2 constant feature(s)" in text
    assert "sample s022 (plate P0, well w22): 1 feature(s), first feature 2 = -inf" in captured.err
    assert "constant feature(s) (zero variance over the finite values): feature 3, feature 4" in (
        captured.err
    )


def test_clean_manifest_exits_0_and_only_warns_about_constant_features(manifests, capsys):
    assert main(["data", "check", str(manifests["clean"]), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["nonfinite_wells"] == 0 and report["nonfinite_features"] == []
    # the former bad values are now 0.0: f1, f2 vary; f4 holds 1.0 and one 0.0, so varies too
    assert [c["feature"] for c in report["constant_features"]] == ["feature 3"]
    assert "warning: 1 constant feature(s)" in captured.err


def test_batches_smaller_than_row_groups_give_the_same_counts(manifests):
    whole = check_profiles(str(manifests["named"]))
    calls = []
    small = check_profiles(  # 3 rows per batch: batches straddle the 7-row row groups
        str(manifests["named"]),
        batch_bytes=3 * 4 * 6,
        max_named=2,
        progress=lambda done, total, bad: calls.append((done, total, bad)),
    )
    for name in ("nan", "posinf", "neginf", "finite_min", "finite_max"):
        np.testing.assert_array_equal(getattr(small, name), getattr(whole, name))
    assert small.nonfinite_wells == whole.nonfinite_wells == 5
    assert [w["sample_id"] for w in small.bad_wells] == ["s003", "s005"]
    assert profile_problems(small)[2] == "non-finite profile: ... 3 more well(s)"
    assert calls[-1] == (N_WELLS, N_WELLS, 5) and len(calls) == -(-N_WELLS // 3)


def _write_raw(path, features: pa.Array) -> None:
    cols = metadata(len(features))
    schema = mf.profile_schema(2)
    arrays = [pa.array(cols[c], type=schema.field(c).type) for c in mf.METADATA_COLUMNS]
    names = [*mf.METADATA_COLUMNS, mf.FEATURES]
    pq.write_table(pa.Table.from_arrays([*arrays, features], names=names), path)


def test_null_values_count_as_nan_and_an_all_nan_feature_is_not_constant(tmp_path):
    fixed = pa.list_(pa.float32(), 2)
    _write_raw(tmp_path / "m.parquet", pa.array([[1.0, None], [1.0, np.nan], [1.0, None]], fixed))
    result = check_profiles(str(tmp_path / "m.parquet"))
    np.testing.assert_array_equal(result.nan, [0, 3])
    assert result.nonfinite_wells == 3 and list(result.constant) == [0]
    assert np.isnan(result.finite_min[1]) and np.isnan(result.finite_max[1])


def test_bad_manifests_fail_with_the_reason(tmp_path, capsys):
    ragged = pa.array([[1.0, 2.0], [3.0]], type=pa.list_(pa.float32()))
    _write_raw(tmp_path / "ragged.parquet", ragged)
    assert main(["data", "check", str(tmp_path / "ragged.parquet")]) == 2
    assert "'features' is list<element: float>, not a fixed-width list" in capsys.readouterr().err
    # a null profile in the fixed-width column: pyarrow writes it but cannot read it back
    flat = pa.array([1.0, 2.0, 3.0, 4.0], type=pa.float32())
    null_row = pa.FixedSizeListArray.from_arrays(flat, 2, mask=pa.array([False, True]))
    _write_raw(tmp_path / "null.parquet", null_row)
    assert main(["data", "check", str(tmp_path / "null.parquet")]) == 2
    assert "null.parquet: cannot read its profiles" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path / "absent.parquet")]) == 2
    assert "cannot read manifest" in capsys.readouterr().err


def test_memory_stays_at_a_batch_not_the_manifest(tmp_path):
    n, width = 20_000, 200  # 16 MiB of float32 features in ONE row group: the worst case
    x = np.random.default_rng(1).normal(size=(n, width)).astype(np.float32)
    path = mf.write_profiles(tmp_path / "big.parquet", metadata(n), x, row_group_size=n)
    del x
    base = pa.total_allocated_bytes()  # Arrow memory held by anything else in this process
    arrow_peak = []  # Arrow's allocations after every batch (pyarrow's default reader: ~23 MiB)
    tracemalloc.start()  # numpy's
    result = check_profiles(
        str(path),
        batch_bytes=1 << 20,
        progress=lambda *_: arrow_peak.append(pa.total_allocated_bytes()),
    )
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.n_wells == n and result.ok and len(arrow_peak) == 16
    assert numpy_peak < 8 << 20, f"numpy peak {numpy_peak / 2**20:.1f} MiB"
    arrow = max(arrow_peak) - base
    assert arrow < 12 << 20, f"Arrow peak {arrow / 2**20:.1f} MiB"


def test_real_bbbc021_well_means_are_clean(realdata, tmp_path):
    table = pd.read_csv(realdata / "profiles/bbbc021/ljosa_jbiomolscreen_2013_per_well_mean.csv.gz")
    features = table.drop(columns=["Image_Metadata_Plate", "Image_Metadata_Well"])
    cols = metadata(len(table))
    cols["plate"] = table["Image_Metadata_Plate"].astype(str).tolist()
    cols["well"] = table["Image_Metadata_Well"].astype(str).tolist()
    with mf.ProfileWriter(tmp_path / "bbbc021.parquet", list(features.columns)) as w:
        w.write(cols, features.to_numpy(np.float32))
    result = check_profiles(str(tmp_path / "bbbc021.parquet"))
    # pandas' own view of the CSV: no missing value, no column with a single value
    assert int(features.isna().sum().sum()) == 0 and int((features.nunique() <= 1).sum()) == 0
    assert result.ok and len(result.constant) == 0 and result.n_wells == 632
    assert result.feature_names[:2] == ["Cells_AreaShape_Area", "Cells_AreaShape_Center_X"]
