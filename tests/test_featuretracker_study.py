"""A FeatureTracker study end to end at CI size: generated videos → Ray Data → CV-RNN and 3D ResNet
rungs under the tracking objective → per-condition tracking accuracy in MLflow → the report's
out-of-distribution curves per family. The study YAML users run is the one loaded here, with its
sizes shrunk."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tracker_study(ray_local, tmp_path_factory):
    from bioscale.data import kinds
    from bioscale.data.featuretracker import FeatureTrackerConfig
    from bioscale.study.analysis import analyse
    from bioscale.study.runner import run_study
    from bioscale.study.spec import StudySpec
    from bioscale.study.tracking import Tracker

    out = tmp_path_factory.mktemp("featuretracker")
    # CI size: 16-frame videos (the CV-RNN's cost is per frame), 96 training-pool videos after 32
    # validation ones, 16 test videos per condition
    cfg = FeatureTrackerConfig(videos=128, test_videos=16, frames=16, seed=0)
    manifest = kinds.get("video").synthesize(cfg, out / "data").manifest
    raw = yaml.safe_load((ROOT / "jobs" / "studies" / "featuretracker.yaml").read_text())
    raw["name"] = "pytest-featuretracker"
    raw["data"]["manifest"] = str(manifest)
    raw["data"]["splits"] = {"early_stop_val": 16}
    raw["grids"] = [
        {
            "rung": ["cvrnn:debug", "r3d:debug"],
            "diet": [{"replicates": 0.5}, {"replicates": 1.0}],
            "objective": ["tracking"],
        },
        {"rung": ["cvrnn:xs", "r3d:xs"], "diet": [{"replicates": 1.0}], "objective": ["tracking"]},
    ]
    raw["seeds"] = [0]
    raw["train"] |= {"budget": {"epochs": 2}, "batch_size": 32, "lr": {"value": 1.0e-3}}
    raw["train"]["early_stopping"] = {"patience": 3, "warmup_epochs": 1}
    raw["resources"] = {"cpus_per_worker": 1, "max_concurrent_trials": 2, "data_cpus_per_task": 0.1}
    spec = StudySpec.from_dict(raw)
    messages: list[str] = []
    result = run_study(spec, out / "run", progress=messages.append)
    tracker = Tracker(result.tracking_uri, artifact_root=out / "run" / "mlartifacts")
    analysis = analyse(tracker, result.experiment_id, result.parent_run_id, spec.name, out / "run")
    return {
        "spec": spec,
        "result": result,
        "tracker": tracker,
        "analysis": analysis,
        "messages": messages,
    }


def test_every_trial_logs_tracking_accuracy_per_condition(tracker_study):
    from bioscale.data.featuretracker import CONDITIONS

    result, tracker = tracker_study["result"], tracker_study["tracker"]
    assert result.failed == 0 and result.finished == 6
    runs = tracker.runs(result.experiment_id, "trial")
    assert {r.data.params["model_family"] for r in runs} == {"cvrnn", "r3d"}
    for run in runs:
        m = run.data.metrics
        for condition in CONDITIONS:
            assert 0.0 <= m[f"track/{condition}/accuracy"] <= 1.0
            assert 0.0 <= m[f"track/{condition}/balanced_accuracy"] <= 1.0
        assert m["track/ood_gap"] == pytest.approx(
            m["track/shape-id_color-id/accuracy"] - m["track/ood/accuracy"]
        )
        assert m["train/bce"] > 0 and m["compute/flops"] > 0
        if run.data.params["model_family"] == "cvrnn":  # the CV-RNN's own term, logged apart
            assert "train/synchrony" in m
        # the diets keep a balanced subset of the 96 training-pool videos (32 validate)
        assert int(run.data.params["D_samples"]) in (48, 96)


def test_report_fits_ood_accuracy_per_family(tracker_study):
    analysis = tracker_study["analysis"]
    html = analysis.report.read_text()
    assert "track/ood/accuracy" in html
    families = {f.group.get("model_family") for f in analysis.fits}
    assert families == {"cvrnn", "r3d"}
    assert {tuple(f.axis) for f in analysis.fits} == {("D",), ("N",)}
    # every test condition's accuracy along D and N, per family
    assert {p.name for p in analysis.plots} >= {"conditions_D.png", "conditions_N.png"}
    assert "Tracking accuracy per condition" in html


def test_objectives_that_need_class_labels_are_refused_on_videos(tracker_study):
    from bioscale.errors import ConfigError
    from bioscale.study.spec import StudySpec

    raw = tracker_study["spec"].to_dict()
    raw["grids"] = [{"rung": ["r3d:debug"], "diet": [{"replicates": 1.0}], "objective": ["ibp"]}]
    with pytest.raises(ConfigError, match="objectives for this data: tracking"):
        StudySpec.from_dict(raw)
