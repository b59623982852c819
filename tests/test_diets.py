import itertools

import numpy as np
import pytest

from bioscale.data import manifest as mf
from bioscale.data.diets import Diet, select
from bioscale.data.splits import SampleIndex, SplitConfig
from bioscale.errors import ConfigError


@pytest.fixture(scope="module")
def index(synth_manifest):
    return SampleIndex.from_table(mf.read_metadata(synth_manifest), SplitConfig())


IBP = frozenset({"seen", "extra"})
SUP = frozenset({"seen"})


def test_diets_are_nested_in_replicates_and_extra(index):
    fractions = [0.1, 0.25, 0.5, 0.75, 1.0]
    for extra in (0, 5, "all"):
        rows = [set(select(index, Diet(replicates=f, extra=extra), IBP).rows) for f in fractions]
        for small, large in itertools.pairwise(rows):
            assert small <= large
    by_extra = [set(select(index, Diet(replicates=0.5, extra=k), IBP).rows) for k in (0, 3, 10, 24)]
    for small, large in itertools.pairwise(by_extra):
        assert small < large


def test_diets_are_deterministic_and_seeded(index):
    a = select(index, Diet(replicates=0.3, extra=7, diet_seed=4), IBP)
    b = select(index, Diet(replicates=0.3, extra=7, diet_seed=4), IBP)
    c = select(index, Diet(replicates=0.3, extra=7, diet_seed=5), IBP)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert set(a.rows) != set(c.rows)
    assert a.D_samples == len(c.rows)  # same sizes, other samples


def test_every_compound_keeps_at_least_one_sample(index):
    sel = select(index, Diet(replicates=0.01, extra="all"), IBP)
    pool_compounds = set(index.perturbation_id[index.where(role="pool", groups=IBP)])
    assert set(index.perturbation_id[sel.rows]) == pool_compounds
    assert sel.D_compounds == len(pool_compounds)


def test_diets_never_touch_probe_or_novel_samples(index):
    sel = select(index, Diet(replicates=1.0, extra="all", controls=True), IBP)
    assert set(index.role[sel.rows]) == {"pool"}
    assert "novel" not in set(index.group[sel.rows])
    assert "control" in set(index.group[sel.rows])


def test_supervised_groups_exclude_extra(index):
    sel = select(index, Diet(replicates=1.0, extra="all"), SUP)
    assert set(index.group[sel.rows]) == {"seen"}


def test_probe_sets_are_fixed_per_seen_compound(index):
    seen = index.where(groups=frozenset({"seen"}))
    for compound in set(index.perturbation_id[seen]):
        roles = list(index.role[index.perturbation_id == compound])
        assert roles.count("probe_test") == 2 and roles.count("probe_val") == 1
        assert roles.count("probe_train") == 2 and roles.count("pool") >= 1
    assert set(index.role[index.group == "novel"]) == {"novel_test"}


def test_evaluation_control_wells_are_reserved_per_plate_and_never_trained_on(index):
    controls = index.where(groups=frozenset({"control"}))
    reserved = index.where(role="eval_control")
    assert set(index.group[reserved]) == {"control"}
    for plate in np.unique(index.plate[controls]):
        on_plate = controls[index.plate[controls] == plate]
        # half of the plate's 16 DMSO wells; the rest stay trainable (pool) or early-stop
        assert (index.role[on_plate] == "eval_control").sum() == len(on_plate) // 2
        assert (index.role[on_plate] == "pool").any()
    for f in (0.1, 0.5, 1.0):
        sel = select(index, Diet(replicates=f, extra="all", controls=True), IBP)
        assert "control" in set(index.group[sel.rows])
        assert not set(sel.rows) & set(reserved)
    with pytest.raises(ConfigError, match="eval_controls"):
        SplitConfig(eval_controls=1.5)


def test_diet_rejects_bad_values():
    with pytest.raises(ValueError, match="replicates"):
        Diet(replicates=0.0)
    with pytest.raises(ValueError, match="extra"):
        Diet(extra=-1)


def test_the_roles_version_keys_only_trials_whose_rows_it_changed(synth_manifest, monkeypatch):
    import bioscale.study.plan as plan_module
    from bioscale.study.spec import StudySpec

    def key(controls: bool, **splits):
        spec = {
            "name": "k",
            "data": {"synthetic": {}, "splits": splits},
            "grids": [{"rung": ["debug"], "diet": [{"controls": controls}], "objective": ["ibp"]}],
            "train": {"budget": {"epochs": 1}},
        }
        return plan_module.plan(StudySpec.from_dict(spec), synth_manifest).trials[0].key

    with_controls, without = key(True), key(False)
    assert key(True, eval_controls=0.25) != with_controls  # other control wells in the diet
    # profiles without controls train on the same rows as under v1 roles: same key
    assert key(False, eval_controls=0.25) == without
    monkeypatch.setattr(plan_module, "ROLES_VERSION", 1)  # trials keyed before roles v2
    assert key(True) != with_controls and key(False) == without
