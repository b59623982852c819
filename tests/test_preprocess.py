"""``data.preprocess``: per-plate normalisation against controls, feature selection, clipping and
PCA whitening — fitted on training-pool wells only, the same transform in every trial."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bioscale.data import manifest as mf
from bioscale.data.preprocess import PreprocessConfig, fit_preprocess
from bioscale.data.splits import SampleIndex, SplitConfig

pytestmark = pytest.mark.timeout(180)

FULL = PreprocessConfig(
    normalize="mad_robustize",
    feature_select=("variance_threshold", "correlation_threshold", "drop_na_columns"),
    clip=30.0,
    pca_variance=0.99,
)


def _index(path) -> SampleIndex:
    return SampleIndex.from_table(mf.read_metadata(path), SplitConfig())


def _with_features(path, out, change) -> None:
    table = pq.read_table(path)
    x = np.stack(table.column("features").to_numpy(zero_copy_only=False)).astype(np.float32)
    x = change(x)
    col = table.schema.get_field_index("features")
    arr = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
    pq.write_table(table.set_column(col, table.schema.field(col), arr), out)


def test_the_fit_never_sees_a_probe_early_stopping_or_novel_well(synth_manifest, tmp_path):
    """Every well outside the training pool (and the controls) replaced by noise: the fitted
    transform is bit-identical; one training-pool well changed: it is not."""
    index = _index(synth_manifest)
    outside = (index.role != "pool") & (index.group != "control")
    pool = np.flatnonzero((index.role == "pool") & (index.group != "control"))
    assert outside.sum() > 50 and len(pool) > 50
    reference = fit_preprocess(synth_manifest, index, FULL)
    rng = np.random.default_rng(0)
    order = {s: i for i, s in enumerate(index.sample_id)}
    rows = np.array(
        [order[s] for s in pq.read_table(synth_manifest).column("sample_id").to_pylist()]
    )

    def scramble_outside(x):
        x = x.copy()
        hit = outside[rows]
        x[hit] = rng.normal(0, 50, size=(hit.sum(), x.shape[1]))
        return x

    _with_features(synth_manifest, tmp_path / "outside.parquet", scramble_outside)
    assert fit_preprocess(tmp_path / "outside.parquet", index, FULL).sha() == reference.sha()

    def change_pool(x):
        x = x.copy()
        x[np.flatnonzero(rows == pool[0])] += 5.0
        return x

    _with_features(synth_manifest, tmp_path / "pool.parquet", change_pool)
    assert fit_preprocess(tmp_path / "pool.parquet", index, FULL).sha() != reference.sha()


def test_mad_robustize_is_each_plates_control_median_and_mad(synth_manifest):
    index = _index(synth_manifest)
    fitted = fit_preprocess(synth_manifest, index, PreprocessConfig(normalize="mad_robustize"))
    ids, x = mf.read_features(synth_manifest)
    meta = {r["sample_id"]: r for r in mf.read_metadata(synth_manifest).to_pylist()}
    plate = np.array([meta[i]["plate"] for i in ids])
    control = np.array([meta[i]["group"] == "control" for i in ids])
    y = fitted.apply(x, fitted.plate_codes(plate))
    for p in np.unique(plate)[:3]:
        c = x[control & (plate == p)].astype(np.float64)
        med = np.median(c, axis=0)
        mad = 1.4826 * np.median(np.abs(c - med), axis=0)
        want = (x[plate == p] - med) / mad
        np.testing.assert_allclose(y[plate == p], want, rtol=1e-4, atol=1e-4)
    assert fitted.n_out == x.shape[1]


def test_whitened_pca_on_the_pool_has_unit_variance_and_the_study_reads_its_width(
    synth_manifest,
):
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    index = _index(synth_manifest)
    fitted = fit_preprocess(synth_manifest, index, FULL)
    pool = [
        s
        for s, r, g in zip(index.sample_id, index.role, index.group, strict=True)
        if r == "pool" and g != "control"
    ]
    _, x = mf.read_features(synth_manifest, pool)
    y = fitted.apply(
        x, fitted.plate_codes(np.array([index.plate[list(index.sample_id).index(s)] for s in pool]))
    )
    np.testing.assert_allclose(y.std(axis=0, ddof=1), 1.0, rtol=0.05)
    assert 0 < fitted.n_out < x.shape[1]
    study = {
        "name": "pre",
        "data": {"manifest": str(synth_manifest)},
        "grids": [{"rung": ["debug"], "diet": [{"replicates": 0.5}], "objective": ["ibp"]}],
        "train": {"budget": {"epochs": 1}},
    }
    plain = plan(StudySpec.from_dict(study), synth_manifest).trials[0]
    study["data"]["preprocess"] = {
        "normalize": "mad_robustize",
        "feature_select": ["variance_threshold", "correlation_threshold", "drop_na_columns"],
        "clip": 30.0,
        "pca_variance": 0.99,
    }
    pre = plan(StudySpec.from_dict(study), synth_manifest).trials[0]
    assert pre.loop.input_shape == (fitted.n_out,) and plain.loop.input_shape == (x.shape[1],)
    assert pre.key != plain.key  # the preprocessing is part of what a trial learns from


def test_trial_datasets_carry_the_preprocessed_features(synth_manifest, ray_local):
    from bioscale.data import kinds
    from bioscale.objectives.base import Targets
    from bioscale.study.spec import DataSpec

    data = DataSpec(manifest=str(synth_manifest), preprocess=FULL)
    kind = kinds.get("profiles")
    index = kinds.read_index(data, synth_manifest)
    fitted = kind.prepare(data, synth_manifest)
    rows = np.flatnonzero(index.role == "pool")[:40]
    t = Targets(rows=rows, columns={"y": rows.astype(np.int64)})
    out = kind.datasets(
        data,
        str(synth_manifest),
        index,
        kinds.TrialSets(train=t, val=t, probe=t),
        kinds.DataCpus(select=0.1, decode=0.1),
        prepared=fitted,
    )
    _, raw = mf.read_features(synth_manifest, list(index.sample_id[rows]))
    want = fitted.apply(raw, fitted.plate_codes(index.plate[rows]))
    for name in ("train", "val", "probe"):
        got = {}
        for batch in out[name].iter_batches(batch_size=None, batch_format="numpy"):
            got.update(zip(batch["y"].tolist(), batch["x"], strict=True))
            assert "_preprocess_plate" not in batch
        np.testing.assert_allclose(np.stack([got[r] for r in rows]), want, rtol=1e-5, atol=1e-5)


def test_cli_writes_a_preprocessed_manifest(synth_manifest, tmp_path, capsys):
    from bioscale.cli import main

    out = tmp_path / "pre.parquet"
    argv = ["data", "preprocess", str(synth_manifest), "--out", str(out)]
    assert main([*argv, "--normalize", "standardize", "--clip", "5"]) == 0
    assert "features per well" in capsys.readouterr().out
    assert (tmp_path / "pre.preprocess.npz").exists()
    _, y = mf.read_features(out)
    assert np.abs(y).max() <= 5.0 and y.shape[1] == mf.inspect(synth_manifest).n_features
    assert mf.read_metadata(out).equals(mf.read_metadata(synth_manifest))
    assert main(argv) == 2  # nothing asked for: a clear error


def test_a_saved_transform_loads_back_identical(synth_manifest, tmp_path):
    from bioscale.data.preprocess import load_fitted

    fitted = fit_preprocess(synth_manifest, _index(synth_manifest), FULL)
    again = load_fitted(fitted.save(tmp_path / "t.npz"))
    assert again.sha() == fitted.sha() and again.config == FULL
    _, x = mf.read_features(synth_manifest)
    codes = np.zeros(len(x), np.int64)
    np.testing.assert_array_equal(again.apply(x, codes), fitted.apply(x, codes))
