"""Rediscovery and genetic separability (SEEDS §1) without Ray: hand-made embeddings with known
structure, the suite on a synthetic screen with ORF/CRISPR wells, and the plan-time check."""

from dataclasses import replace

import numpy as np
import pytest

from bioscale.errors import ConfigError
from bioscale.eval.genetic import CRISPR, ORF, genetic_metrics, zprime
from bioscale.eval.probe import ROLE_CODES, ProbeConfig
from bioscale.eval.retrieval import query_reference_map
from bioscale.eval.tasks import evaluate

pytestmark = pytest.mark.timeout(60)

NULL = dict(null_size=2000, threshold=0.05, seed=0)
SMALL = dict(n_moa=6, compounds_per_moa=4, n_extra=8, plates_per_batch=2, controls_per_plate=8)


def _library(rng, *, shuffle: bool):
    """Compounds of 8 classes around class centres; queries and references of every class."""
    n_cls, per_cls, d = 8, 5, 32
    centres = rng.normal(size=(n_cls, d))
    cls = np.repeat(np.arange(n_cls), per_cls)
    z = centres[cls] + 0.4 * rng.normal(size=(len(cls), d))
    is_query = np.tile(np.arange(per_cls) < 2, n_cls)  # 2 queries, 3 known compounds per class
    labels = rng.permutation(cls) if shuffle else cls
    return z, np.arange(len(cls)), labels, is_query


def test_rediscovery_map_is_high_when_classes_cluster_and_chance_when_shuffled():
    rng = np.random.default_rng(0)
    clustered = query_reference_map(*_library(rng, shuffle=False), **NULL)
    shuffled = query_reference_map(*_library(rng, shuffle=True), **NULL)
    assert clustered["map"] > 0.95 and clustered["fraction_retrieved"] == 1.0
    # 3 positives among 24 references: a random ranking's AP is about 0.2
    assert 0.05 < shuffled["map"] < 0.35 and shuffled["fraction_retrieved"] < 0.3


def _genetic_wells(rng, *, structured: bool, n_genes=12, reps=6, n_ctrl=48, d=24):
    """Controls around 0; per gene, CRISPR wells around +c_g and ORF wells around -c_g."""
    centres = 3.0 * rng.normal(size=(n_genes, d))
    z, gene, ptype = [rng.normal(size=(n_ctrl, d))], [np.full(n_ctrl, -1)], [np.full(n_ctrl, 3)]
    for g in range(n_genes):
        for kind, sign in ((ORF, -1.0), (CRISPR, 1.0)):
            mean = sign * centres[g] if structured else np.zeros(d)
            z.append(mean + rng.normal(size=(reps, d)))
            gene.append(np.full(reps, g))
            ptype.append(np.full(reps, kind))
    gene, ptype = np.concatenate(gene), np.concatenate(ptype)
    return np.concatenate(z), gene, ptype, ptype == 3


def test_genetic_separability_and_orf_crispr_matching_on_known_structure():
    rng = np.random.default_rng(1)
    strong = genetic_metrics(*_genetic_wells(rng, structured=True), **NULL)
    null = genetic_metrics(*_genetic_wells(rng, structured=False), **NULL)
    assert strong["map"] > 0.9 and strong["fraction_retrieved"] == 1.0
    assert strong["zprime"] > 0.0 > null["zprime"]
    assert strong["replicate_cosine_distance"] < 0.5 < strong["cosine_distance"]
    # ORF at -c, CRISPR at +c: absolute cosine matches each gene's pair
    assert strong["orf_crispr_map"] > 0.9
    # noise only: 5 replicates among 48 controls rank at random (AP ~0.1) ...
    assert null["map"] < 0.5 and null["fraction_retrieved"] < 0.5
    # ... and one positive among 12 CRISPR genes has AP ~0.26 (1/rank averaged)
    assert null["orf_crispr_map"] < 0.5


def test_zprime_of_hand_computed_samples():
    # means 10 and 0, sds 1 and 1: Z' = 1 - 3 * 2 / 10
    pos, neg = np.array([9.0, 10.0, 11.0]), np.array([-1.0, 0.0, 1.0])
    assert zprime(pos, neg) == pytest.approx(0.4)
    assert np.isnan(zprime(pos[:1], neg))


def test_zprime_is_cross_fitted_so_noise_in_high_dimension_is_not_separable():
    from bioscale.eval.genetic import separability

    rng = np.random.default_rng(3)
    d, wells, controls = 512, 4, 16
    z = rng.normal(size=(wells + controls, d))  # pure noise: no perturbation effect
    pert = np.r_[np.zeros(wells, dtype=np.int64), np.full(controls, -1)]
    is_control = pert < 0
    # the in-sample axis fits the wells' own noise: a gap of ~sqrt(d / wells) and a good-looking Z'
    axis = z[~is_control].mean(axis=0) - z[is_control].mean(axis=0)
    axis /= np.linalg.norm(axis)
    assert zprime(z[~is_control] @ axis, z[is_control] @ axis) > 0.4
    assert separability(z, pert, is_control)["zprime"] <= 0.0
    # a real effect along one direction stays separable when cross-fitted
    z[~is_control, 0] += 40.0
    assert separability(z, pert, is_control)["zprime"] > 0.5


@pytest.fixture(scope="module")
def genetic_screen(tmp_path_factory):
    from bioscale.data.synth import SynthProfilesConfig, generate_profiles

    cfg = SynthProfilesConfig(**SMALL, n_genes=3, genetic_effect=1.5)
    return generate_profiles(cfg, tmp_path_factory.mktemp("genetic"))


def test_synthetic_screen_with_genetic_wells_runs_both_tasks(genetic_screen):
    from bioscale.data import manifest as mf
    from bioscale.data.splits import SampleIndex, SplitConfig
    from bioscale.eval.probe_sets import PTYPE_CODES, probe_set_targets

    table = mf.read_metadata(genetic_screen).to_pandas()
    genetic = table[table.perturbation_type.isin(["orf", "crispr"])]
    assert len(genetic) == 2 * 3 * 8 and set(genetic.group) == {"novel"}
    # every genetic gene is a target of compounds
    assert set(genetic.target) <= set(table[table.perturbation_type == "compound"].target)

    index = SampleIndex.from_table(mf.read_metadata(genetic_screen), SplitConfig())
    t = probe_set_targets(index)
    gen = t.columns["gene"] >= 0
    assert gen.sum() == len(genetic)
    assert set(t.columns["ptype"][gen]) == {PTYPE_CODES["orf"], PTYPE_CODES["crispr"]}
    assert (t.columns["label"][gen] == -1).all() and (t.columns["target_0"][gen] == -1).all()

    _, x = mf.read_features(genetic_screen, list(index.sample_id[t.rows]))
    cfg = ProbeConfig(
        tasks=("rediscovery", "genetic", "replicate_retrieval", "leakage"), retrieval_null_size=2000
    )
    m = evaluate({"emb": x, **t.columns}, cfg)
    for key in (
        "retrieval/rediscovery/map",
        "retrieval/rediscovery/fraction_retrieved",
        "retrieval/genetic/map",
        "retrieval/genetic/fraction_retrieved",
        "retrieval/genetic/cosine_distance",
        "retrieval/genetic/replicate_cosine_distance",
        "retrieval/genetic/zprime",
        "retrieval/genetic/orf_crispr_map",
        "retrieval/genetic/orf_crispr_fraction_retrieved",
    ):
        assert key in m and np.isfinite(m[key]), key
    assert m["retrieval/genetic/map"] > 0.3 and m["retrieval/genetic/fraction_retrieved"] > 0.5
    # 6 MoAs, ~3 known compounds each among ~18: rediscovery clearly beats chance (~0.2)
    assert m["retrieval/rediscovery/map"] > 0.35

    # shuffled embeddings of the compounds: rediscovery falls to about chance
    rng = np.random.default_rng(0)
    comp = ~gen & (t.columns["role"] != ROLE_CODES["control"])
    x_shuffled = x.copy()
    x_shuffled[comp] = x[comp][rng.permutation(int(comp.sum()))]
    s = evaluate({"emb": x_shuffled, **t.columns}, replace(cfg, tasks=("rediscovery",)))
    assert s["retrieval/rediscovery/map"] < m["retrieval/rediscovery/map"] - 0.15


def test_genetic_task_skips_without_genetic_wells_and_plan_refuses_it(tmp_path, caplog):
    import yaml

    from bioscale.data import manifest as mf
    from bioscale.data.splits import SampleIndex, SplitConfig
    from bioscale.data.synth import SynthProfilesConfig, generate_profiles
    from bioscale.eval.probe_sets import probe_set_targets
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    manifest = generate_profiles(SynthProfilesConfig(**SMALL), tmp_path)
    index = SampleIndex.from_table(mf.read_metadata(manifest), SplitConfig())
    t = probe_set_targets(index)
    assert "gene" not in t.columns and "ptype" not in t.columns
    _, x = mf.read_features(manifest, list(index.sample_id[t.rows]))
    with caplog.at_level("WARNING"):
        m = evaluate({"emb": x, **t.columns}, ProbeConfig(tasks=("genetic",)))
    assert not [k for k in m if k.startswith("retrieval/genetic")]
    assert "not applicable" in caplog.text

    study = {
        "name": "g",
        "data": {"manifest": str(manifest)},
        "grids": [{"rung": ["debug"], "diet": [{}], "objective": ["supervised"]}],
        "eval": ["moa", "genetic"],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    spec = StudySpec.load(path)
    with pytest.raises(ConfigError, match=r"'genetic' cannot run on this data: .*no genetic"):
        plan(spec, manifest)
    # the default task list drops it for this data, and keeps rediscovery
    default = StudySpec.from_dict({k: v for k, v in study.items() if k != "eval"})
    assert "genetic" in default.probe.tasks
    planned = plan(default, manifest)
    assert "genetic" not in planned.probe.tasks and "rediscovery" in planned.probe.tasks
    assert all(t.final.probe == planned.probe for t in planned.trials)  # what each trial runs
    assert "genetic" in default.probe.tasks  # the loaded spec is never changed by planning


def test_a_planned_study_without_eval_ships_to_its_trials_unchanged(synth_manifest):
    # plan narrows the default tasks to what the manifest feeds (no genetic wells here) in the
    # trials' loop configs; the spec each trial rebuilds from spec.to_dict() is the loaded one
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    spec = StudySpec.from_dict(
        {
            "name": "x",
            "data": {"manifest": str(synth_manifest)},
            "grids": [{"rung": ["debug"], "diet": [{}], "objective": ["ibp"]}],
        }
    )
    before = spec.to_dict()
    planned = plan(spec, synth_manifest)
    tasks = planned.trials[0].final.probe.tasks
    assert "genetic" not in tasks and "moa" in tasks
    assert spec.to_dict() == before
    assert StudySpec.from_dict(spec.to_dict()) == spec
