"""Failures found before any compute (an unreachable tracking server, an unwritable output folder
or storage, a study over its budget) and the tracker's retries of transient errors. No Ray here;
the multi-node failures (killed worker, killed driver, outage mid-trial) are in test_cluster.py."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from bioscale.errors import TrackingError
from bioscale.study.tracking import Tracker

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(120)

STUDY = {
    "name": "failures",
    "data": {
        "synthetic": {
            "seed": 0,
            "n_moa": 6,
            "compounds_per_moa": 4,
            "n_extra": 16,
            "n_unlabelled_moa": 2,
            "plates_per_batch": 2,
            "n_features": 32,
        }
    },
    "grids": [{"rung": ["debug"], "diet": [{"replicates": 1.0}], "objective": ["supervised"]}],
    "train": {"budget": {"epochs": 2}, "batch_size": 64},
    "resources": {"cpus_per_worker": 0.5},
}


def _write(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **overrides}))
    return path


def _bioscale(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [str(BIN / "bioscale"), *args],
        capture_output=True,
        text=True,
        timeout=110,
        env={**env, **(env_extra or {})},
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_fails_before_any_compute(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    out = tmp_path / "out"
    done = _bioscale(
        "study", "run", str(_write(tmp_path, tracking={"uri": url})), "--out", str(out)
    )
    assert done.returncode == 2
    assert f"MLflow tracking server {url} is not reachable" in done.stderr
    assert "Traceback" not in done.stderr
    # nothing was generated, trained or started
    assert not (out / "data").exists() and not (out / "ray_results").exists()


def test_unwritable_output_folder_fails_at_plan_time(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "study-out"  # cannot be created, whoever runs the test (root included)
    done = _bioscale("study", "plan", str(_write(tmp_path)), "--out", str(out))
    assert done.returncode == 2
    assert f"output folder {out} is not writable" in done.stderr
    assert "Traceback" not in done.stderr


def test_unwritable_storage_path_fails_at_plan_time(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    study = _write(tmp_path, storage=str(blocker / "ckpt"))
    done = _bioscale("study", "plan", str(study), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "storage path" in done.stderr and "not writable" in done.stderr


def test_plan_refuses_a_study_over_its_budget_unless_told_to_proceed(tmp_path):
    study = _write(tmp_path, budget={"gpu_hours": 1.0e-18, "device": "H100"})
    out = str(tmp_path / "out")
    refused = _bioscale("study", "plan", str(study), "--out", out)
    assert refused.returncode == 2
    assert "over its budget" in refused.stderr and "--proceed" in refused.stderr
    assert "GPU-hours on H100" in refused.stdout  # the plan and the estimate are still printed
    accepted = _bioscale("study", "plan", str(study), "--out", out, "--proceed")
    assert accepted.returncode == 0, accepted.stderr
    roomy = _bioscale("study", "plan", str(study), "--out", out, "--budget", "1000")
    assert roomy.returncode == 0 and "(budget 1000 GPU-hours)" in roomy.stdout


def test_resume_of_a_study_that_never_ran_says_so(tmp_path):
    done = _bioscale("study", "resume", str(_write(tmp_path)), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "nothing to resume" in done.stderr


class _Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def _tracker(tmp_path, retry_seconds: float = 30.0) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", retry_seconds=retry_seconds)


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ConnectionError("Connection refused"),
        RuntimeError(
            "API request to endpoint failed with error code 503 != 200: response code 503"
        ),
        RuntimeError("(sqlite3.OperationalError) database is locked"),
    ],
)
def test_transient_tracking_errors_are_retried_with_backoff(tmp_path, error):
    flaky = _Flaky(3, error)
    assert _tracker(tmp_path)._retry(flaky) == "ok" and flaky.calls == 4


def test_other_tracking_errors_are_not_retried(tmp_path):
    flaky = _Flaky(3, ValueError("INVALID_PARAMETER_VALUE: bad metric name"))
    with pytest.raises(ValueError):
        _tracker(tmp_path)._retry(flaky)
    assert flaky.calls == 1


def test_a_tracking_outage_longer_than_retry_seconds_fails_naming_the_store(tmp_path):
    flaky = _Flaky(10**6, requests.exceptions.ConnectionError("Connection refused"))
    with pytest.raises(TrackingError, match="kept failing for 1 s"):
        _tracker(tmp_path, retry_seconds=1.0)._retry(flaky)
    assert flaky.calls >= 3
