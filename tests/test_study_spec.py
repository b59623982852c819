from pathlib import Path

import pytest

from bioscale.errors import ConfigError
from bioscale.study.plan import expand
from bioscale.study.spec import StudySpec

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "name": "s",
    "data": {"synthetic": {}},
    "grids": [{"rung": ["debug"], "diet": [{}], "objective": ["ibp"]}],
}


def with_(**changes):
    spec = {k: v for k, v in BASE.items()}
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    "bad,message",
    [
        (
            with_(grid=[]),
            r"unknown key 'grid' \(did you mean 'grids'\?\); allowed keys: .*data, eval, exclude, grids",
        ),
        (
            with_(grids=[{"rung": ["debug"], "diet": [{"replicate": 1}], "objective": ["ibp"]}]),
            r"grids\[0\]\.diet\[0\]: unknown key 'replicate' \(did you mean 'replicates'\?\)",
        ),
        (
            with_(grids=[{"rung": ["mlp:w256-l4"], "diet": [{}], "objective": ["ibp"]}]),
            r"grids\[0\]\.rung\[0\]: unknown model rung 'mlp:w256-l4'",
        ),
        (
            with_(grids=[{"rung": ["debug"], "diet": [{}], "objective": ["ibq"]}]),
            r"unknown objective 'ibq'\. Did you mean 'ibp'\? Known: harmonized, ibp, mae, supervised",
        ),
        (with_(train={"budget": {"epochs": 2, "samples": 10}}), r"exactly one of epochs"),
        (
            with_(train={"lr": {"rule": "cosine"}}),
            r"'cosine' is not one of 'constant', 'kaplan', 'power'",
        ),
        (
            with_(eval=["moa", "deconvolution"]),
            r"eval\[1\]: unknown evaluation task 'deconvolution'.* Known: genetic, leakage, moa",
        ),
        (with_(exclude=[{"width": 3}]), r"exclude\[0\]: unknown key 'width'"),
        (
            with_(grids=[{"rung": ["debug"], "diet": [{}], "objective": ["ibp"], "seeds": []}]),
            r"grids: seeds \[\] must be a non-empty list of integers ≥ 0 \(omit it to use the "
            r"study's seeds\)",
        ),
        (
            with_(grids=[{"rung": ["debug"], "diet": [{}], "objective": ["ibp"], "seeds": [1, 1]}]),
            r"grids: seeds \[1, 1\] repeat a seed",
        ),
        (with_(data={"manifest": "x.parquet", "synthetic": {}}), r"exactly one of 'manifest'"),
        (
            with_(analysis={"law": "powr"}),
            r"analysis\.law: unknown scaling law 'powr'; choose one of .*pure_power.*auto",
        ),
        (with_(analysis={"law": "chinchilla"}), r"analysis\.law: 'chinchilla' is a joint"),
        (
            with_(data={"kind": "video", "manifest": "x.parquet"}),
            r"objective 'ibp' does not apply to data\.kind 'video'.*objectives for this data: "
            r"tracking",
        ),
    ],
)
def test_typos_fail_before_compute_with_the_key_and_choices(bad, message):
    with pytest.raises(ConfigError, match=message):
        StudySpec.from_dict(bad)


def test_spec_round_trips_through_its_mapping():
    spec = StudySpec.load(REPO / "jobs" / "studies" / "demo.yaml")
    again = StudySpec.from_dict(spec.to_dict())
    assert again == spec and again.sha() == spec.sha()


def test_demo_is_an_L_shape_with_four_points_per_curve():
    spec = StudySpec.load(REPO / "jobs" / "studies" / "demo.yaml")
    points, dropped = expand(spec)
    assert not dropped and len(points) >= 14
    for objective in ("supervised", "ibp"):
        mine = [p for p in points if p.objective.name == objective]
        full = [p for p in mine if p.diet.replicates == 1.0]
        assert len({p.rung for p in full}) >= 4
        by_rung = {}
        for p in mine:
            by_rung.setdefault(p.rung, set()).add(p.diet.replicates)
        assert max(len(v) for v in by_rung.values()) >= 4


def test_exclude_and_duplicates_are_dropped_with_a_reason():
    spec = StudySpec.from_dict(
        with_(
            grids=[
                {
                    "rung": ["debug", "mlp:w64-l1"],
                    "diet": [{"extra": 0}, {"extra": 5}],
                    "objective": ["supervised", "ibp"],
                }
            ],
            seeds=[0, 1],
            exclude=[{"rung": "mlp:w64-l1", "seed": 1}],
        )
    )
    points, dropped = expand(spec)
    reasons = [why for _, why in dropped]
    assert sum("excluded" in r for r in reasons) == 4
    # supervised ignores extra compounds: {extra: 5} duplicates {extra: 0}
    assert sum("same data" in r for r in reasons) == 3
    assert len(points) == 16 - 4 - 3


def test_plan_drops_objectives_the_data_cannot_feed_and_fails_when_nothing_is_left(synth_manifest):
    from bioscale.study.plan import plan

    spec = StudySpec.from_dict(
        with_(grids=[{"rung": ["debug"], "diet": [{}], "objective": ["ibp", "harmonized"]}])
    )
    result = plan(spec, synth_manifest)
    assert [t.point.objective.name for t in result.trials] == ["ibp"]
    assert any(
        "harmonized needs samples with human importance maps" in why for _, why in result.dropped
    )
    only = StudySpec.from_dict(
        with_(grids=[{"rung": ["debug"], "diet": [{}], "objective": ["harmonized"]}])
    )
    with pytest.raises(ConfigError, match="has no runnable trial: harmonized needs"):
        plan(only, synth_manifest)


def test_a_grid_with_its_own_seeds_adds_those_seeds_only():
    """``study suggest`` adds a seed at a measured point as a grid entry with its own seeds."""
    grids = [
        {"rung": ["debug"], "diet": [{}, {"replicates": 0.5}], "objective": ["ibp"]},
        {"rung": ["debug"], "diet": [{"replicates": 0.5}], "objective": ["ibp"], "seeds": [2]},
    ]
    spec = StudySpec.from_dict(with_(grids=grids, seeds=[0, 1]))
    points, dropped = expand(spec)
    assert not dropped
    got = sorted((p.diet.replicates, p.seed) for p in points)
    assert got == [(0.5, 0), (0.5, 1), (0.5, 2), (1.0, 0), (1.0, 1)]
    assert StudySpec.from_dict(spec.to_dict()) == spec
