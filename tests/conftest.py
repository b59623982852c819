"""Shared fixtures: real data location, one local Ray instance, and one finished small study."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The small real datasets (env ``BIOSCALE_REALDATA``, default ``../shared/data``)."""
    root = Path(os.environ.get("BIOSCALE_REALDATA", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(
            f"real data not found at {root}; set BIOSCALE_REALDATA to the shared data folder"
        )
    return root


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory) -> Path:
    """A small synthetic profile screen (shared by the unit tests)."""
    from bioscale.data.synth import SynthProfilesConfig, generate_profiles

    out = tmp_path_factory.mktemp("synth")
    return generate_profiles(
        SynthProfilesConfig(
            seed=1, n_moa=8, compounds_per_moa=4, n_extra=24, n_unlabelled_moa=4, plates_per_batch=2
        ),
        out,
    )


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session (2 logical CPUs), shut down at the end."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            object_store_memory=512 * 1024**2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
        )
    yield ray
    ray.shutdown()


SMALL_STUDY = {
    "name": "pytest-small",
    "data": {
        "synthetic": {
            "seed": 3,
            "n_moa": 6,
            "compounds_per_moa": 4,
            "n_extra": 16,
            "n_unlabelled_moa": 2,
            "plates_per_batch": 2,
            "n_features": 32,
        }
    },
    "grids": [
        {
            "rung": ["debug"],
            "diet": [{"replicates": 0.5, "extra": "all"}, {"replicates": 1.0, "extra": "all"}],
            "objective": ["supervised", "ibp"],
        }
    ],
    "train": {"budget": {"epochs": 2}, "batch_size": 64, "lr": {"value": 1.0e-3}},
    "resources": {
        "workers_per_trial": 1,
        "cpus_per_worker": 0.5,
        "max_concurrent_trials": 2,
        "data_cpus_per_task": 0.1,
    },
}


@pytest.fixture(scope="session")
def finished_study(ray_local, tmp_path_factory):
    """One small study run through Ray Tune/Train into a temporary SQLite MLflow store, then
    analysed; later tests read what it wrote instead of running their own."""
    from bioscale.study.analysis import analyse
    from bioscale.study.runner import run_study
    from bioscale.study.spec import StudySpec
    from bioscale.study.tracking import Tracker

    out = tmp_path_factory.mktemp("study")
    spec = StudySpec.from_dict(SMALL_STUDY)
    messages: list[str] = []
    result = run_study(spec, out, progress=messages.append)
    tracker = Tracker(result.tracking_uri, artifact_root=out / "mlartifacts")
    analysis = analyse(tracker, result.experiment_id, result.parent_run_id, spec.name, out)
    return {
        "spec": spec,
        "out": out,
        "result": result,
        "analysis": analysis,
        "tracker": tracker,
        "messages": messages,
    }
