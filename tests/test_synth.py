from collections import Counter

import numpy as np

from bioscale.data import manifest as mf
from bioscale.data.splits import SampleIndex, SplitConfig
from bioscale.data.synth import SynthProfilesConfig, generate_profiles
from bioscale.eval.probe import ProbeConfig, linear_probe
from bioscale.study.plan import probe_targets


def test_manifest_follows_the_contract(synth_manifest):
    info = mf.inspect(synth_manifest)
    assert info.kind == "profiles" and info.n_features == 128
    table = mf.read_metadata(synth_manifest)
    assert tuple(table.column_names) == mf.METADATA_COLUMNS
    groups = Counter(table.column("group").to_pylist())
    assert set(groups) == {"seen", "novel", "extra", "control"}
    # groups are stratified by MoA: every MoA of a novel compound also has seen compounds
    moa = np.array(table.column("moa").to_pylist(), dtype=object)
    group = np.array(table.column("group").to_pylist(), dtype=object)
    assert set(moa[group == "novel"]) <= set(moa[group == "seen"])
    assert all(m is None for m in moa[group == "extra"])
    assert (synth_manifest.parent / "metadata" / "well.csv.gz").exists()


def test_generator_is_deterministic(tmp_path):
    cfg = SynthProfilesConfig(seed=7, n_moa=4, compounds_per_moa=3, n_extra=4, plates_per_batch=1)
    a = generate_profiles(cfg, tmp_path / "a")
    b = generate_profiles(cfg, tmp_path / "b")
    assert mf.manifest_sha(a) == mf.manifest_sha(b)
    c = generate_profiles(
        SynthProfilesConfig(seed=8, n_moa=4, compounds_per_moa=3, n_extra=4, plates_per_batch=1),
        tmp_path / "c",
    )
    assert mf.manifest_sha(a) != mf.manifest_sha(c)


def test_moa_structure_is_learnable_from_raw_features(tmp_path):
    # the default screen (the demo's): 28 MoAs, so chance is 1/28
    synth_manifest = generate_profiles(SynthProfilesConfig(), tmp_path)
    index = SampleIndex.from_table(mf.read_metadata(synth_manifest), SplitConfig())
    probe = probe_targets(index)
    _, x = mf.read_features(synth_manifest, list(index.sample_id[probe.rows]))
    metrics = linear_probe(x, probe.columns["role"], probe.columns["label"], "moa", ProbeConfig())
    chance = 1.0 / len(set(probe.columns["label"]))
    assert chance < 0.04
    assert metrics["probe/moa/seen_compounds/top1"] > 5 * chance
    assert metrics["probe/moa/novel_compounds/top1"] > 5 * chance
