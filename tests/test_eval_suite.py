"""The evaluation suite without Ray: normalisation, probes, leakage, retrieval, alignment, config."""

from dataclasses import replace

import numpy as np
import pytest

from bioscale.data import kinds
from bioscale.errors import ConfigError
from bioscale.eval.alignment import CLICKME_CEILING, alignment_metrics, dice_iou
from bioscale.eval.leakage import leakage_probe
from bioscale.eval.normalise import MAD_TO_SD, fit_normaliser
from bioscale.eval.probe import ROLE_CODES, ProbeConfig, probe_task, topk_accuracy
from bioscale.eval.retrieval import map_against_controls
from bioscale.eval.tasks import default_tasks, evaluate, to_wells

pytestmark = pytest.mark.timeout(60)

FAST = ProbeConfig(cs=(0.1, 1.0), mlp_hidden=64, mlp_epochs=40, retrieval_null_size=2000)


def test_robust_z_against_plate_controls_on_a_hand_made_table():
    # plate 0 controls: feature 0 = 1, 2, 3 (median 2, MAD 1); plate 1 controls: 10, 20, 30
    emb = np.array([[1.0], [2.0], [3.0], [5.0], [10.0], [20.0], [30.0], [40.0]])
    plate = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    control = np.array([1, 1, 1, 0, 1, 1, 1, 0], dtype=bool)
    norm = fit_normaliser(emb, plate, control, sphere=False, clip=None)
    z = norm.transform(emb, plate)[:, 0]
    assert z[3] == pytest.approx((5 - 2) / (1 * MAD_TO_SD))
    assert z[7] == pytest.approx((40 - 20) / (10 * MAD_TO_SD))
    assert z[1] == 0.0 and z[5] == 0.0
    # clipping at ±2 and a plate without controls uses the pooled control statistics
    clipped = fit_normaliser(emb, plate, control, sphere=False, clip=2.0).transform(emb, plate)
    assert clipped.max() == 2.0
    pooled = norm.transform(np.array([[2.0]]), np.array([7]))
    assert np.isfinite(pooled).all()
    with pytest.raises(ValueError, match="control"):
        fit_normaliser(emb, plate, np.zeros(8, dtype=bool))


def test_sphering_whitens_the_pooled_controls():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(6, 6))
    emb = rng.normal(size=(4000, 6)) @ mix  # correlated features
    plate = np.repeat(np.arange(4), 1000)
    control = np.ones(4000, dtype=bool)
    z = fit_normaliser(emb, plate, control, sphere=True, shrinkage=0.0, clip=None).transform(
        emb, plate
    )
    assert np.allclose(np.cov(z, rowvar=False), np.eye(6), atol=0.05)
    lw = fit_normaliser(emb, plate, control, sphere=True, shrinkage=None).transform(emb, plate)
    assert np.abs(np.corrcoef(lw, rowvar=False) - np.eye(6)).max() < 0.1


def _probe_data(rng, n_classes=10, per_role=(6, 3, 4), noise=0.6, d=24):
    """Well embeddings with class structure: roles train/val/test of seen compounds + novel."""
    centres = rng.normal(size=(n_classes, d))
    rows, roles, labels, sources = [], [], [], []
    for c in range(n_classes):
        for role, count in zip(("probe_train", "probe_val", "probe_test"), per_role, strict=True):
            for i in range(count):
                rows.append(centres[c] + noise * rng.normal(size=d))
                roles.append(ROLE_CODES[role])
                labels.append(c)
                sources.append(i % 2)
        for i in range(4):
            rows.append(centres[c] + noise * rng.normal(size=d))
            roles.append(ROLE_CODES["novel_test"])
            labels.append(c)
            sources.append(i % 2)
    return np.array(rows), np.array(roles), np.array(labels)[:, None], np.array(sources)


@pytest.mark.parametrize("readout", ["linear", "mlp"])
def test_probes_beat_chance_and_sit_at_chance_on_shuffled_labels(readout):
    rng = np.random.default_rng(1)
    z, role, labels, source = _probe_data(rng)
    cfg = replace(FAST, readouts=(readout,))
    prefix = "probe/moa" if readout == "linear" else "probe/moa_mlp"
    m = probe_task(z, role, labels, source, "moa", cfg)
    chance = 0.1
    for split in ("seen_compounds", "novel_compounds"):
        assert m[f"{prefix}/{split}/top1"] > 6 * chance
        assert m[f"{prefix}/{split}/macro_f1"] > 5 * chance
        assert m[f"{prefix}/{split}/top10"] == 1.0  # 10 classes
    if readout == "linear":
        assert m["probe/moa/heldout_source/top1"] > 5 * chance
        assert m["probe/moa/C"] in FAST.cs
    shuffled = rng.permutation(labels)
    m0 = probe_task(z, role, shuffled, source, "moa", cfg)
    for split in ("seen_compounds", "novel_compounds"):
        assert m0[f"{prefix}/{split}/top1"] < 2.5 * chance


def test_multilabel_topk_counts_any_true_label():
    classes = np.array([0, 1, 2, 3])
    proba = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    labels = np.array([[3, 0], [0, -1]])  # row 0: targets {3, 0}; row 1: {0}
    assert topk_accuracy(proba, classes, labels, 1) == 0.5
    assert topk_accuracy(proba, classes, labels, 3) == 0.5  # row 1's 0 is ranked last
    assert topk_accuracy(proba, classes, labels, 4) == 1.0
    # a label the readout never saw is a miss
    assert topk_accuracy(proba, classes, np.array([[9], [9]]), 4) == 0.0


def test_leakage_sees_plate_offsets_and_nothing_without_them():
    rng = np.random.default_rng(2)
    n_comp, n_plates, d = 30, 6, 16
    compound = np.repeat(np.arange(n_comp), n_plates)
    plate = np.tile(np.arange(n_plates), n_comp)
    phenotype = rng.normal(size=(n_comp, d))[compound]
    offsets = 1.5 * rng.normal(size=(n_plates, d))[plate]
    noise = 0.5 * rng.normal(size=(len(plate), d))
    leaky = leakage_probe(phenotype + offsets + noise, plate, compound, c=1.0)
    clean = leakage_probe(phenotype + noise, plate, compound, c=1.0)
    assert 1 / n_plates <= leaky["chance"] < 0.25  # majority share of the test wells
    assert leaky["acc"] > 0.9
    assert clean["acc"] < 2 * clean["chance"] + 0.1
    assert leakage_probe(phenotype, np.zeros(len(plate)), compound, c=1.0) is None


def _ap(scores: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return average_precision_score(positive, scores)


def test_replicate_map_agrees_with_average_precision_by_hand():
    rng = np.random.default_rng(3)
    d = 8
    compound = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    z_comp = rng.normal(size=(3, d))[compound] + 0.8 * rng.normal(size=(8, d))
    z = np.vstack([z_comp, rng.normal(size=(6, d))])
    control = np.r_[np.zeros(8, bool), np.ones(6, bool)]
    codes = np.r_[compound, np.full(6, 9)]
    got = map_against_controls(z, codes, control, null_size=2000, threshold=0.05, seed=0)
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    per_compound = {}
    for q in range(8):
        others = [j for j in range(14) if j != q and (control[j] or codes[j] == codes[q])]
        sims = unit[others] @ unit[q]
        pos = np.array([not control[j] for j in others])
        per_compound.setdefault(codes[q], []).append(_ap(sims, pos))
    expected = np.mean([np.mean(v) for v in per_compound.values()])
    assert got["map"] == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= got["fraction_retrieved"] <= 1.0


def test_same_moa_retrieval_uses_other_compounds_only():
    rng = np.random.default_rng(4)
    d = 8
    moa_centre = rng.normal(size=(2, d)) * 3
    compound = np.repeat(np.arange(6), 3)
    moa = compound // 3  # compounds 0-2 share MoA 0, 3-5 MoA 1
    z = np.vstack([moa_centre[moa] + 0.3 * rng.normal(size=(18, d)), rng.normal(size=(12, d))])
    control = np.r_[np.zeros(18, bool), np.ones(12, bool)]
    got = map_against_controls(
        z,
        np.r_[compound, np.full(12, 99)],
        control,
        same="label",
        label=np.r_[moa, np.full(12, -1)],
        null_size=2000,
        threshold=0.05,
        seed=0,
    )
    assert got["map"] > 0.95 and got["fraction_retrieved"] == 1.0


def test_alignment_score_is_one_over_ceiling_for_identical_maps_and_zero_for_noise():
    rng = np.random.default_rng(5)
    maps = rng.random((8, 16, 16))
    same = alignment_metrics(maps, maps, CLICKME_CEILING)
    assert same["align/spearman"] == pytest.approx(1.0)
    assert same["align/score"] == pytest.approx(1.0 / CLICKME_CEILING)
    assert same["align/dice10"] == 1.0 and same["align/iou10"] == 1.0
    noise = alignment_metrics(maps, rng.random((8, 16, 16)), CLICKME_CEILING)
    assert abs(noise["align/score"]) < 0.1
    assert "align/score" not in alignment_metrics(maps, maps, None)  # no ceiling: raw ρ only
    dice, iou = dice_iou(np.eye(10)[None], np.eye(10)[None], fraction=0.1)
    assert dice[0] == 1.0 and iou[0] == 1.0


def test_sites_are_averaged_to_one_row_per_well_and_a_well_has_one_role():
    cols = {
        "emb": np.array([[0.0], [2.0], [4.0], [8.0]], dtype=np.float32),
        "well": np.array([5, 5, 6, 6]),
        "role": np.array([0, 0, 2, 2]),
        "label": np.array([1, 1, 2, 2]),
    }
    out = to_wells(cols)
    assert sorted(out["emb"][:, 0].tolist()) == [1.0, 6.0]
    assert sorted(out["role"].tolist()) == [0, 2]
    # a probe batch whose well is half probe_train, half probe_test would train and test on it
    with pytest.raises(ValueError, match="well code 6 carry different roles"):
        to_wells({**cols, "role": np.array([0, 0, 0, 2])})


def _multisite_index(splits=None):
    """An image-like manifest: 8 plates, 3 sites per well, 6 DMSO wells per plate."""
    import pyarrow as pa

    from bioscale.data.splits import SampleIndex, SplitConfig

    rows = []
    for p in range(8):
        layout = [("c0", "seen"), ("c1", "seen"), ("x0", "extra"), ("n0", "novel")]
        layout += [("DMSO", "control")] * 6
        for w, (pid, group) in enumerate(layout):
            for site in (1, 2, 3):
                rows.append((f"P{p}", f"A{w:02d}", site, pid, group))
    plate, well, site, pid, group = (list(c) for c in zip(*rows, strict=True))
    n = len(rows)
    table = pa.table(
        {
            "sample_id": [f"{a}_{b}_s{c}" for a, b, c in zip(plate, well, site, strict=True)],
            "source": ["s"] * n,
            "batch": ["b"] * n,
            "plate": plate,
            "well": well,
            "site": site,
            "perturbation_id": pid,
            "group": group,
            "moa": [None if g in ("extra", "control") else "m" for g in group],
            "target": [None] * n,
            "perturbation_type": ["control" if g == "control" else "compound" for g in group],
        }
    )
    return SampleIndex.from_table(table, splits or SplitConfig())


def test_roles_are_assigned_to_whole_wells_and_diets_never_take_a_reserved_site():
    from bioscale.data.diets import Diet, select

    index = _multisite_index()
    wells = np.array([k.rsplit("/", 1)[0] for k in index.key])
    for well in np.unique(wells):
        assert len(set(index.role[wells == well])) == 1, well
    # counts are wells per seen compound: 2 probe_test wells = 6 sites
    roles = list(index.role[index.perturbation_id == "c0"])
    assert roles.count("probe_test") == 6 and roles.count("probe_train") == 6
    assert roles.count("probe_val") == 3 and roles.count("es_val") == 3
    reserved = set(wells[index.role != "pool"])
    for diet in (Diet(replicates=f, extra="all", controls=True) for f in (0.2, 0.5, 1.0)):
        picked = select(index, diet, frozenset({"seen", "extra"})).rows
        assert not reserved & set(wells[picked])


def test_probe_rows_of_the_manifest_carry_controls_codes_and_split_targets(synth_manifest):
    from bioscale.data import manifest as mf
    from bioscale.data.splits import SampleIndex, SplitConfig
    from bioscale.eval.probe_sets import probe_set_targets, split_targets

    assert split_targets("EGFR| ERBB2") == ["EGFR", "ERBB2"] and split_targets(None) == []
    index = SampleIndex.from_table(mf.read_metadata(synth_manifest), SplitConfig())
    t = probe_set_targets(index)
    role = t.columns["role"]
    assert set(np.unique(role)) == set(ROLE_CODES.values())
    controls = role == ROLE_CODES["control"]
    np.testing.assert_array_equal(np.sort(t.rows[controls]), index.where(role="eval_control"))
    assert (t.columns["label"][controls] == -1).all()
    assert (t.columns["target_0"][~controls] >= -1).all()
    assert len(np.unique(t.columns["plate"])) == len(set(index.plate))
    # the suite runs end to end on raw features, every task, with frozen metric names
    _, x = mf.read_features(synth_manifest, list(index.sample_id[t.rows]))
    cfg = replace(FAST, tasks=default_tasks(kinds.get("profiles").provides), readouts=("linear",))
    m = evaluate({"emb": x, **t.columns}, cfg)
    for key in (
        "probe/moa/novel_compounds/top1",
        "probe/moa/heldout_source/top10",
        "probe/target/seen_compounds/macro_f1",
        "leakage/plate/acc",
        "leakage/source/chance",
        "retrieval/replicate/map",
        "retrieval/moa/fraction_retrieved",
        "perf/eval_seconds",
    ):
        assert key in m and np.isfinite(m[key]), key
    assert m["probe/moa/seen_compounds/top1"] > 3 / len(set(t.columns["label"][~controls]))


def test_study_eval_names_are_validated_and_become_the_probe_tasks():
    from bioscale.study.spec import StudySpec

    base = {
        "name": "e",
        "data": {"synthetic": {}},
        "grids": [{"rung": ["debug"], "diet": [{}], "objective": ["ibp"]}],
    }
    assert StudySpec.from_dict(base).probe.tasks == default_tasks(kinds.get("profiles").provides)
    spec = StudySpec.from_dict({**base, "eval": ["moa", "replicate_retrieval"]})
    assert spec.probe.tasks == ("moa", "replicate_retrieval")
    assert StudySpec.from_dict(spec.to_dict()) == spec
    # the task registry is the one list of names: a typo is named with the close matches
    with pytest.raises(
        ConfigError, match=r"eval\[1\]: unknown evaluation task 'mao'. Did you mean"
    ):
        StudySpec.from_dict({**base, "eval": ["moa", "mao"]})
    with pytest.raises(ConfigError, match="once"):
        StudySpec.from_dict({**base, "eval": ["moa", "moa"]})
    with pytest.raises(ConfigError, match="probe readout"):
        StudySpec.from_dict({**base, "probe": {"readouts": ["linear", "svm"]}})
    assert default_tasks(kinds.get("natural").provides) == ("moa",)


def test_normaliser_statistics_come_only_from_the_evaluation_control_wells(synth_manifest):
    from bioscale.data import manifest as mf
    from bioscale.data.splits import SampleIndex, SplitConfig
    from bioscale.eval.probe_sets import probe_set_targets
    from bioscale.eval.tasks import probe_rows

    index = SampleIndex.from_table(mf.read_metadata(synth_manifest), SplitConfig())
    t = probe_set_targets(index)
    # the control wells diets may train on (controls: true) are not even in the probe batch
    assert not set(t.rows) & set(index.where(role="pool"))
    _, x = mf.read_features(synth_manifest, list(index.sample_id[t.rows]))
    rows = probe_rows({"emb": x, **t.columns}, replace(FAST, sphere=False, clip=None))
    order = np.argsort(t.columns["well"], kind="stable")  # probe rows come in well order
    evaluation = np.isin(t.rows[order], index.where(role="eval_control"))
    np.testing.assert_array_equal(rows.is_control, evaluation)
    for plate in np.unique(rows.plate):
        z = rows.z[evaluation & (rows.plate == plate)]  # robust z of that plate's eval controls
        np.testing.assert_allclose(np.median(z, axis=0), 0.0, atol=1e-6)
        mad = MAD_TO_SD * np.median(np.abs(z - np.median(z, axis=0)), axis=0)
        np.testing.assert_allclose(mad, 1.0, rtol=1e-5)


def test_evaluation_does_not_depend_on_the_order_of_the_manifest_rows(synth_manifest, tmp_path):
    """The same wells in another file order give the same metrics, to the last digit: the
    leakage halves, retrieval nulls and readouts see the rows in well order."""
    import pyarrow.parquet as pq

    from bioscale.data import manifest as mf
    from bioscale.eval.baseline import raw_feature_metrics
    from bioscale.eval.config import ProbeConfig

    table = pq.read_table(synth_manifest)
    flipped = tmp_path / "flipped.parquet"
    pq.write_table(table.take(np.arange(table.num_rows)[::-1]), flipped)
    assert mf.manifest_sha(flipped) != mf.manifest_sha(synth_manifest)
    cfg = ProbeConfig(tasks=("leakage", "moa"), retrieval_null_size=100)
    a = raw_feature_metrics(synth_manifest, probe=cfg).metrics
    b = raw_feature_metrics(flipped, probe=cfg).metrics
    a.pop("perf/eval_seconds")
    b.pop("perf/eval_seconds")
    assert a == b and "leakage/plate/acc" in a
