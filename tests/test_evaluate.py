"""``bioscale evaluate``: a finished trial's checkpoint → new metrics in the same MLflow run."""

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.timeout(120)

STUDY = {
    "name": "pytest-evaluate",
    "data": {
        "synthetic": {
            "seed": 5,
            "n_moa": 5,
            "compounds_per_moa": 4,
            "n_extra": 8,
            "n_unlabelled_moa": 2,
            "plates_per_batch": 2,
            "n_features": 24,
        }
    },
    "grids": [{"rung": ["debug"], "diet": [{"replicates": 1.0}], "objective": ["supervised"]}],
    "train": {"budget": {"epochs": 1}, "batch_size": 64, "lr": {"value": 1.0e-3}},
    "eval": ["moa"],
    "probe": {"readouts": ["linear"], "cs": [0.1, 1.0], "retrieval_null_size": 1000},
}


def _finished_trial(tmp_path):
    """Train the study's one trial in-process, checkpoints where the runner puts them, and log
    it as a FINISHED trial run, as the study driver does."""
    from functools import partial

    from bioscale.data import manifest as mf
    from bioscale.eval.final import final_metrics
    from bioscale.study.plan import load_index, plan, trial_data
    from bioscale.study.posthoc import trial_folder
    from bioscale.study.runner import ensure_manifest, tracking_uri
    from bioscale.study.spec import StudySpec
    from bioscale.study.tracking import Tracker
    from bioscale.train import loop
    from bioscale.train.context import LocalContext

    spec = StudySpec.from_dict(STUDY)
    out = tmp_path / "out"
    manifest = ensure_manifest(spec, out, progress=lambda _: None)
    trial = plan(spec, manifest).trials[0]
    index = load_index(spec, manifest)
    data, _ = trial_data(index, trial.point)
    _, x = mf.read_features(manifest)
    ctx = LocalContext(
        train={"x": x[data.train.rows], **data.train.columns},
        evals={
            "val": {"x": x[data.val.rows], **data.val.columns},
            "probe": {"x": x[data.probe.rows], **data.probe.columns},
        },
        batch_size=64,
        checkpoint_root=str(trial_folder(out, trial.key)),
    )
    final = loop.run(trial.loop, ctx, final=partial(final_metrics, final=trial.final))
    tracker = Tracker(tracking_uri(spec, out), artifact_root=out / "mlartifacts")
    exp = tracker.experiment(spec.name)
    parent = tracker.study_run(exp, spec.name, spec.sha())
    run_id = tracker.start_trial(exp, parent, trial.key, "t", trial.params)
    tracker.log_metrics(run_id, final, step=int(final["train/epochs"]))
    tracker.finish(run_id)
    return spec, out, tracker, exp, run_id, final


def test_evaluate_adds_metrics_to_the_trial_run_without_a_new_run(tmp_path, ray_local):
    from bioscale.cli import main

    _, out, tracker, exp, run_id, final = _finished_trial(tmp_path)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    before = {r.info.run_id for r in tracker.client.search_runs([exp])}
    assert "retrieval/replicate/map" not in tracker.client.get_run(run_id).data.metrics

    code = main(
        [
            "evaluate",
            str(study_file),
            "--out",
            str(out),
            "--task",
            "moa",
            "--task",
            "replicate_retrieval",
            "--run",
            run_id,
        ]
    )
    assert code == 0
    after = {r.info.run_id for r in tracker.client.search_runs([exp])}
    assert after == before  # no new run
    metrics = tracker.client.get_run(run_id).data.metrics
    assert 0.0 <= metrics["retrieval/replicate/map"] <= 1.0
    assert 0.0 <= metrics["retrieval/replicate/fraction_retrieved"] <= 1.0
    # the recomputed probe from the reloaded checkpoint equals the one the trial logged
    assert metrics["probe/moa/novel_compounds/top1"] == pytest.approx(
        final["probe/moa/novel_compounds/top1"], abs=1e-6
    )
    assert np.isfinite(metrics["perf/eval_seconds"])
    assert tracker.client.get_run(run_id).info.status == "FINISHED"


def test_evaluate_names_an_unknown_run_and_creates_no_experiment(tmp_path, capsys):
    from bioscale.cli import main
    from bioscale.study.tracking import Tracker, default_uri

    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    code = main(["evaluate", str(study_file), "--out", str(tmp_path / "o"), "--run", "nope"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no FINISHED trial run nope in study 'pytest-evaluate' (sqlite:" in err
    assert "its finished trial runs: none (no MLflow experiment of that name" in err
    # a tool on finished trials only reads the store: no empty experiment left behind
    tracker = Tracker(default_uri(tmp_path / "o"))
    assert tracker.client.get_experiment_by_name(STUDY["name"]) is None


def test_final_checkpoint_is_found_under_a_storage_uri_and_fetched(tmp_path):
    from bioscale.eval.extract import STATE_FILE
    from bioscale.study.posthoc import final_checkpoint, trial_folder

    folder = trial_folder(tmp_path / "out", "ab" * 32, storage=(tmp_path / "bucket").as_uri())
    assert folder.startswith("file://") and folder.endswith("/trial-" + "ab" * 8)
    local_root = tmp_path / "bucket" / f"trial-{'ab' * 8}"
    for n, payload in ((1, b"first"), (2, b"final")):
        (local_root / f"checkpoint_00000{n}").mkdir(parents=True)
        (local_root / f"checkpoint_00000{n}" / STATE_FILE).write_bytes(payload)
    (local_root / "checkpoint_000003").mkdir()  # written but never finished: no state file
    fetched = final_checkpoint(folder, cache=tmp_path / "cache")
    assert fetched.name == "checkpoint_000002" and (fetched / STATE_FILE).read_bytes() == b"final"
    assert final_checkpoint(local_root) == local_root / "checkpoint_000002"
    with pytest.raises(FileNotFoundError, match="no checkpoint_"):
        final_checkpoint(trial_folder(tmp_path / "out", "cd" * 32))
