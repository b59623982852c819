"""The BBBC021 MoA benchmark (NSC / NSCB): a designed table with hand-derived accuracies, the real
BBBC021 profiles against chance and a brute-force loop, and the ``nsc`` evaluation task."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bioscale.eval.config import ROLE_CODES, TASKS, ProbeConfig
from bioscale.eval.nsc import moa_benchmark, nearest_treatment, treatment_profiles
from bioscale.eval.tasks import default_tasks, evaluate

pytestmark = pytest.mark.timeout(60)

#: 3 MoAs x 2 compounds; compound -> (MoA axis, batch). MoA C sits in batch 0 only (like
#: BBBC021's cholesterol-lowering compounds): under NSCB its treatments have no same-MoA candidate.
COMPOUNDS = {"A1": (0, 0), "A2": (0, 1), "B1": (1, 0), "B2": (1, 1), "C1": (2, 0), "C2": (2, 0)}
DOSES = (1.0, 2.0)  # two concentrations; the MoA signal scales with the dose


def designed_wells(batch_effect: float) -> dict[str, np.ndarray]:
    """3 replicate wells per (compound, dose): profile = dose·e_moa + batch_effect·e_batch on
    axes 0-2 (MoA) and 3-4 (batch); replicates differ on axis 5 by +0.3, 0, -0.3, and the first
    replicate of A1 at dose 1 carries an outlier +10 on B's axis (a per-feature median ignores it;
    a mean would not)."""
    z, comp, conc, batch, moa = [], [], [], [], []
    for name, (axis, b) in COMPOUNDS.items():
        for dose in DOSES:
            for offset in (0.3, 0.0, -0.3):
                v = np.zeros(6)
                v[axis] = dose
                v[3 + b] = batch_effect
                v[5] = offset
                if name == "A1" and dose == 1.0 and offset > 0:
                    v[1] += 10.0
                z.append(v)
                comp.append(name)
                conc.append(dose)
                batch.append(f"Week{b + 1}")
                moa.append("ABC"[axis])
    return {
        "z": np.array(z),
        "compound": np.array(comp),
        "concentration": np.array(conc),
        "batch": np.array(batch),
        "moa": np.array(moa),
    }


def _benchmark(w: dict[str, np.ndarray]) -> dict[str, float]:
    return moa_benchmark(w["z"], w["compound"], w["concentration"], w["batch"], w["moa"])


def test_designed_table_gives_the_accuracies_derived_by_hand():
    # weak batch effect (0.5): the same-MoA compound is always nearest (cos >= 0.8 vs <= 0.2), so
    # NSC is 12/12. NSCB: A and B find their other-batch partner (8 hits); C1 and C2 (batch 0)
    # only have A2 and B2 (batch 1) left, both at cosine 0: 4 misses -> 8/12
    weak = _benchmark(designed_wells(0.5))
    assert weak == {
        "nsc/moa/top1": 1.0,
        "nsc/moa/n_treatments": 12.0,
        "nscb/moa/top1": pytest.approx(8 / 12),
        "nscb/moa/n_treatments": 12.0,
    }
    # strong batch effect (3): the shared batch axis (9) outweighs any MoA match (d·d' <= 4), so
    # NSC matches within the batch: A and B miss (8), C1 and C2 find each other in batch 0 (4
    # hits) -> 4/12. NSCB removes the batch and is unchanged at 8/12
    strong = _benchmark(designed_wells(3.0))
    assert strong["nsc/moa/top1"] == pytest.approx(4 / 12)
    assert strong["nscb/moa/top1"] == pytest.approx(8 / 12)


def test_treatments_are_per_feature_medians_and_span_their_batches():
    w = designed_wells(0.5)
    t = treatment_profiles(w["z"], w["compound"], w["concentration"], w["batch"], w["moa"])
    assert len(t.profiles) == 12 and (t.n_wells == 3).all()
    # A1 at dose 1 is the first treatment (sorted codes): the outlier replicate is gone
    np.testing.assert_array_equal(t.profiles[0], [1.0, 0.0, 0.0, 0.5, 0.0, 0.0])
    # a treatment whose wells span both batches excludes every candidate of either under NSCB
    two = dict(w)
    moved = (w["compound"] == "A1") & (w["concentration"] == 1.0) & (w["z"][:, 5] < 0)
    two["batch"] = np.where(moved, "Week2", w["batch"])
    t2 = treatment_profiles(two["z"], two["compound"], two["concentration"], two["batch"], w["moa"])
    assert t2.batches[0].all() and t2.batches[1].sum() == 1
    nearest = nearest_treatment(t2, exclude_batch=True)
    assert nearest[0] == -1 and nearest[1] >= 0  # A1 dose 1 has no candidate left; dose 2 has
    m = moa_benchmark(two["z"], two["compound"], two["concentration"], two["batch"], w["moa"])
    assert m["nscb/moa/n_treatments"] == 11.0


def test_no_eligible_candidate_leaves_the_metric_out_and_mixed_moas_are_refused():
    w = designed_wells(0.5)
    one_batch = {**w, "batch": np.full(len(w["z"]), "Week1")}
    m = _benchmark(one_batch)
    assert set(m) == {"nsc/moa/top1", "nsc/moa/n_treatments"}  # NSCB: nothing left, no NaN
    a1 = w["compound"] == "A1"
    assert _benchmark({k: v[a1] for k, v in w.items()}) == {}  # one compound: nothing to match
    bad = {**w, "moa": np.where(a1 & (w["z"][:, 5] == 0), "B", w["moa"])}
    with pytest.raises(ValueError, match="several MoAs"):
        _benchmark(bad)


def test_bbbc021_nsc_and_nscb_beat_chance_and_match_a_brute_force_loop(realdata):
    import pandas as pd
    from scipy.spatial.distance import cosine

    table = pd.read_csv(
        realdata / "profiles" / "bbbc021" / "BBBC021_feature_selected_mad_robustize.csv"
    )
    treated = table[table["Metadata_moa"] != "DMSO"].reset_index(drop=True)
    features = [c for c in treated.columns if not c.startswith("Metadata_")]
    z = treated[features].to_numpy(dtype=np.float64)
    compound = treated["Metadata_Compound"].to_numpy()
    conc = treated["Metadata_Concentration"].to_numpy()
    batch = treated["Metadata_Plate"].str.split("_").str[0].to_numpy()  # WeekN
    moa = treated["Metadata_moa"].to_numpy()

    m = moa_benchmark(z, compound, conc, batch, moa)
    chance = 1 / 12  # 12 MoAs
    assert m["nsc/moa/n_treatments"] == 103 and m["nscb/moa/n_treatments"] == 103
    # measured 0.913 (94/103) and 0.660 (68/103); CellProfiler baselines: NSC ~0.8-0.9, NSCB lower
    assert 0.8 <= m["nsc/moa/top1"] <= 0.97
    assert 5 * chance <= m["nscb/moa/top1"] < m["nsc/moa/top1"]

    # independent check: pandas medians and a plain loop over candidates
    keys = ["Metadata_Compound", "Metadata_Concentration"]
    profiles = treated.groupby(keys)[features].median()
    info = treated[keys].assign(batch=batch).groupby(keys).agg(batches=("batch", set))
    t = treatment_profiles(z, compound, conc, batch, moa)
    np.testing.assert_allclose(t.profiles, profiles.to_numpy())  # both sorted by (compound, conc)
    keys = list(profiles.index)
    for exclude_batch in (False, True):
        nearest = nearest_treatment(t, exclude_batch=exclude_batch)
        for i in (0, 17, 40, 66, 102):
            best, best_sim = None, -np.inf
            for j, key in enumerate(keys):
                if key[0] == keys[i][0]:
                    continue
                if exclude_batch and info["batches"].iloc[j] & info["batches"].iloc[i]:
                    continue
                sim = 1.0 - cosine(profiles.iloc[i], profiles.iloc[j])
                if sim > best_sim:
                    best, best_sim = j, sim
            assert nearest[i] == best, (keys[i], exclude_batch)


def _probe_columns(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The designed wells as an embedded probe batch (even compound codes seen-compound probe
    wells, odd ones novel), plus 6 control wells (3 per batch)."""
    n = len(w["z"])
    codes = {k: np.unique(w[k], return_inverse=True)[1].astype(np.int64) for k in w if k != "z"}
    role = np.where(codes["compound"] % 2 == 0, ROLE_CODES["probe_test"], ROLE_CODES["novel_test"])
    ctrl = np.random.default_rng(0).normal(scale=0.1, size=(6, 6))
    return {
        "emb": np.vstack([w["z"], ctrl]).astype(np.float32),
        "role": np.r_[role, np.full(6, ROLE_CODES["control"])],
        "label": np.r_[codes["moa"], np.full(6, -1)],
        "plate": np.r_[codes["batch"], np.array([0, 1] * 3)],
        "source": np.zeros(n + 6, dtype=np.int64),
        "batch": np.r_[codes["batch"], np.array([0, 1] * 3)],
        "compound": np.r_[codes["compound"], np.full(6, 6)],
        "concentration": np.r_[codes["concentration"], np.full(6, -1)],
        "well": np.arange(n + 6),
    }


def test_the_nsc_task_reads_treated_probe_wells_and_is_opt_in():
    cfg = ProbeConfig(tasks=("nsc",), normalise="none")
    m = evaluate(_probe_columns(designed_wells(0.5)), cfg)
    assert m["nsc/moa/top1"] == 1.0 and m["nscb/moa/top1"] == pytest.approx(8 / 12)
    assert m["nsc/moa/n_treatments"] == 12.0  # the unlabelled controls are no treatment
    # normalised against the controls as every task reads them: still every key, finite
    m = evaluate(_probe_columns(designed_wells(0.5)), replace(cfg, normalise="robust_z"))
    assert all(np.isfinite(m[k]) for k in ("nsc/moa/top1", "nscb/moa/top1"))
    # a probe batch without the batch column says what is missing
    cols = _probe_columns(designed_wells(0.5))
    del cols["batch"]
    with pytest.raises(ValueError, match=r"probe column\(s\) batch"):
        evaluate(cols, cfg)
    # opt-in: a study without eval: does not run it; plates-and-labels kinds accept it
    from bioscale.data import kinds

    assert TASKS.get("nsc").opt_in
    for kind in ("profiles", "cellpainting"):
        assert TASKS.get("nsc").needs <= kinds.get(kind).provides
        assert "nsc" not in default_tasks(kinds.get(kind).provides)


def test_probe_batches_carry_batch_and_concentration_codes(synth_manifest):
    from bioscale.data import manifest as mf
    from bioscale.data.splits import SampleIndex, SplitConfig
    from bioscale.eval.probe_sets import probe_set_targets

    table = mf.read_metadata(synth_manifest)
    index = SampleIndex.from_table(table, SplitConfig())
    t = probe_set_targets(index)
    batch, conc = t.columns["batch"], t.columns["concentration"]
    assert batch.dtype == np.int64 and conc.dtype == np.int64
    names = np.asarray(table.column("batch").to_pylist(), dtype=object)[t.rows]
    values = np.asarray(table.column("concentration").to_pylist(), dtype=np.float64)[t.rows]
    for code in np.unique(batch):  # one code, one batch name
        assert len(set(names[batch == code])) == 1
    assert len(np.unique(batch)) == len(set(names))
    known = conc >= 0
    assert (np.isfinite(values) == known).all()
    order = np.argsort(values[known], kind="stable")  # codes ascend with the concentration
    assert (np.diff(conc[known][order]) >= 0).all()
