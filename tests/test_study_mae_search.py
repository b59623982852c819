"""The self-supervised baseline and layer search through the real study path (Ray Tune → Ray
Train → MLflow), switched on by the study YAML alone."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def searched_study(ray_local, tmp_path_factory):
    from bioscale.study.runner import run_study
    from bioscale.study.spec import StudySpec
    from conftest import SMALL_STUDY

    study = {
        **SMALL_STUDY,
        "name": "pytest-mae-search",
        "grids": [{"rung": ["debug"], "diet": [{"replicates": 1.0}], "objective": ["mae", "ibp"]}],
        "probe": {"selection": "search"},
    }
    out = tmp_path_factory.mktemp("mae-search")
    return run_study(StudySpec.from_dict(study), out, progress=lambda m: None)


def test_mae_trains_without_labels_and_is_probed_like_the_others(searched_study):
    from bioscale.study.tracking import Tracker

    assert searched_study.failed == 0 and searched_study.finished == 2
    tracker = Tracker(searched_study.tracking_uri)
    runs = {
        r.data.params["objective"]: r for r in tracker.runs(searched_study.experiment_id, "trial")
    }
    mae = runs["mae"].data.metrics
    assert mae["train/recon"] > 0 and mae["train/loss"] == pytest.approx(mae["train/recon"])
    assert 0.0 <= mae["probe/moa/novel_compounds/top1"] <= 1.0
    # mae sees no labels, so like ibp it may train on the extra compounds
    assert runs["mae"].data.params["D_samples"] == runs["ibp"].data.params["D_samples"]


def test_layer_search_picks_a_layer_per_trial_and_keeps_its_curves(searched_study):
    from bioscale.study.tracking import Tracker

    tracker = Tracker(searched_study.tracking_uri)
    for run in tracker.runs(searched_study.experiment_id, "trial"):
        assert run.data.params["probe_selection"] == "search"
        metrics = run.data.metrics
        assert metrics["probe/moa/best_layer"] >= 0
        assert 0.0 <= metrics["probe/moa/best_layer_depth"] <= 1.0
        path = tracker.client.download_artifacts(run.info.run_id, "layer_search.json")
        with open(path) as fh:
            curves = json.load(fh)
        assert curves, "the per-layer validation curves are the trial's artifact"


def test_the_four_objective_example_plans_every_objective_on_natural_images(tmp_path):
    from pathlib import Path

    import yaml

    from bioscale.data.natural import SynthNaturalConfig, generate_natural
    from bioscale.study.plan import plan
    from bioscale.study.spec import StudySpec

    example = Path(__file__).resolve().parents[1] / "jobs/studies/natural-four-objectives.yaml"
    study = yaml.safe_load(example.read_text())
    manifest = generate_natural(SynthNaturalConfig(per_class=12, size=32), tmp_path / "data")
    study["data"]["manifest"] = str(manifest)
    planned = plan(StudySpec.from_dict(study), manifest)
    assert {t.params["objective"] for t in planned.trials} == {
        "supervised",
        "ibp",
        "harmonized",
        "mae",
    }
    assert not planned.dropped and not [why for _, why in planned.skipped if "harmonized" in why]
