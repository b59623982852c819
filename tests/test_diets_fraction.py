"""Diets whose ``extra`` axis is a fraction of the extra compounds: nested, labelled apart from counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import yaml

from bioscale.data import manifest as mf
from bioscale.data.diets import Diet, n_extra_kept, select
from bioscale.data.splits import SampleIndex, SplitConfig
from bioscale.errors import ConfigError
from bioscale.study.plan import expand
from bioscale.study.spec import StudySpec

pytestmark = pytest.mark.timeout(60)

IBP = frozenset({"seen", "extra"})


@pytest.fixture(scope="module")
def index(synth_manifest):  # 24 extra compounds (tests/conftest.py)
    return SampleIndex.from_table(mf.read_metadata(synth_manifest), SplitConfig())


def extra_compounds(index: SampleIndex, diet: Diet) -> set[str]:
    rows = select(index, diet, IBP).rows
    return set(index.perturbation_id[rows[index.group[rows] == "extra"]])


def test_existing_diets_keep_their_labels_and_identity():
    expected = {
        0: "rep=1,extra=0,controls=off",
        24: "rep=1,extra=24,controls=off",
        "all": "rep=1,extra=all,controls=off",
    }
    for extra, label in expected.items():
        assert Diet(extra=extra).label() == label
    assert Diet(replicates=0.25, extra=24, diet_seed=3).canonical() == (
        '{"controls": false, "diet_seed": 3, "extra": 24, "plates": null, '
        '"replicates": 0.25, "sources": null}'
    )
    assert '"extra": "all"' in Diet(extra="all").canonical()


def test_a_fraction_is_labelled_apart_from_any_count():
    assert Diet(extra=0.5).label() == "rep=1,extra=0.5,controls=off"
    assert Diet(extra=0.125).label() == "rep=1,extra=0.125,controls=off"
    assert '"extra": 0.25' in Diet(extra=0.25).canonical()
    # the count 1 is one compound; the fraction 1.0 is every compound, i.e. "all"
    assert Diet(extra=1).label() == "rep=1,extra=1,controls=off"
    assert Diet(extra=1.0) == Diet(extra="all") != Diet(extra=1)
    assert Diet(extra=np.float32(0.5)).extra == 0.5 and Diet(extra=np.int64(3)).extra == 3
    assert Diet(extra=np.float32(1.0)).extra == "all"


def test_fractions_keep_the_first_ceil_of_the_same_ranking(index):
    # 24 extra compounds: ⌈f·24⌉ = 3, 6, 12, 18, 24
    counts = {0.1: 3, 0.25: 6, 0.5: 12, 0.75: 18, 1.0: 24}
    by_fraction = [extra_compounds(index, Diet(extra=f)) for f in counts]
    assert [len(s) for s in by_fraction] == list(counts.values())
    for small, large in itertools.pairwise(by_fraction):
        assert small < large
    for f, k in counts.items():  # a fraction keeps exactly what the count ⌈f·n⌉ keeps
        rows = select(index, Diet(replicates=0.5, extra=f, diet_seed=2), IBP).rows
        same = select(index, Diet(replicates=0.5, extra=k, diet_seed=2), IBP).rows
        np.testing.assert_array_equal(rows, same)
    assert extra_compounds(index, Diet(extra=5)) > extra_compounds(index, Diet(extra=0.1))
    assert extra_compounds(index, Diet(extra=0.01)) and not extra_compounds(index, Diet(extra=0))


def test_ceil_is_taken_on_the_decimal_fraction_not_the_rounded_product():
    assert 0.07 * 100 > 7 and 0.55 * 100 > 55  # float products just above the integers
    assert n_extra_kept(0.07, 100) == 7 and n_extra_kept(0.55, 100) == 55
    assert n_extra_kept(0.071, 100) == 8 and n_extra_kept(0.01, 30) == 1
    assert (
        n_extra_kept(40, 24) == 24 and n_extra_kept("all", 24) == 24 and n_extra_kept(0.5, 0) == 0
    )


@pytest.mark.parametrize(
    "value,message",
    [
        (-0.5, r"diet\.extra must be a count >= 0 .* got -0\.5"),
        (-3, r"diet\.extra must be .* got -3"),
        (float("nan"), r"diet\.extra must be .* got nan"),
        (0.0, r"diet\.extra must be .* a fraction in \(0, 1\] .* got 0\.0"),
        (1.5, r"diet\.extra must be .* got 1\.5"),
        (24.0, r"diet\.extra is 24\.0, a fraction above 1: write 24 \(no decimal point\)"),
        (True, r"diet\.extra must be .* got True"),
        ("most", r"diet\.extra must be .* got 'most'"),
    ],
)
def test_bad_extra_values_name_the_key(value, message):
    with pytest.raises(ValueError, match=message):
        Diet(extra=value)
    with pytest.raises(ConfigError, match=r"grids\[0\]\.diet\[0\]: " + message):
        StudySpec.from_dict(
            {
                "name": "s",
                "data": {"synthetic": {}},
                "grids": [{"rung": ["debug"], "diet": [{"extra": value}], "objective": ["ibp"]}],
            }
        )


STUDY = """
name: fractions
data: {synthetic: {}}
grids:
  - rung: [debug]
    diet: [{extra: 0.25}, {extra: 1}, {extra: 1.0}, {extra: all}, {extra: 24}]
    objective: [ibp, supervised]
exclude: [{diet: {extra: 0.25}, objective: supervised}]
"""


def test_yaml_fractions_parse_through_the_study_spec():
    spec = StudySpec.from_dict(yaml.safe_load(STUDY))
    extras = [d.extra for d in spec.grids[0].diet]
    assert extras == [0.25, 1, "all", "all", 24]
    assert [type(e) for e in extras] == [float, int, str, str, int]
    assert StudySpec.from_dict(spec.to_dict()) == spec
    points, dropped = expand(spec)
    ibp = sorted(p.diet.label() for p in points if p.objective.name == "ibp")
    assert ibp == [
        "rep=1,extra=0.25,controls=off",
        "rep=1,extra=1,controls=off",
        "rep=1,extra=24,controls=off",
        "rep=1,extra=all,controls=off",
    ]
    reasons = [why for _, why in dropped]
    assert sum("excluded" in r for r in reasons) == 1
    # ibp: extra 1.0 is extra all; supervised: every extra is 0, four of five points collapse
    assert sum("same data" in r for r in reasons) == 1 + 3
    assert [p.diet.extra for p in points if p.objective.name == "supervised"] == [0]
