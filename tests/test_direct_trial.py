"""One-worker trials train in their Tune trial's own process (``resources.trial_runner: auto``):
their checkpoints live in the study's storage as Ray Train's would, and a resumed trial finds them.
The runs themselves are every end-to-end study of the suite (all one-worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioscale.study.spec import StudySpec

pytestmark = pytest.mark.timeout(60)


def _folder(tmp_path: Path, name: str, text: str) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "state.pt").write_text(text)
    return str(folder)


def test_checkpoint_store_keeps_the_latest_whole_checkpoint(tmp_path):
    from bioscale.train.ray_worker import CheckpointStore

    store = CheckpointStore(str(tmp_path / "storage" / "trial-x" / "direct"))
    assert store.latest() is None  # a fresh trial
    store.save(_folder(tmp_path, "a", "epoch 1"))
    store.save(_folder(tmp_path, "b", "epoch 2"))
    (tmp_path / "storage" / "trial-x" / "direct" / "checkpoint_000009.tmp").mkdir()  # torn write
    latest = store.latest()
    assert (Path(latest) / "state.pt").read_text() == "epoch 2"
    kept = sorted(p.name for p in (tmp_path / "storage" / "trial-x" / "direct").iterdir())
    assert kept == ["checkpoint_000002", "checkpoint_000009.tmp"]
    # a new store on the same folder (the resumed study's trial) finds it
    again = CheckpointStore(str(tmp_path / "storage" / "trial-x" / "direct"))
    assert (Path(again.latest()) / "state.pt").read_text() == "epoch 2"


def _spec(**resources) -> StudySpec:
    return StudySpec.from_dict(
        {
            "name": "direct",
            "data": {"synthetic": {}},
            "grids": [{"rung": ["debug"], "diet": [{}], "objective": ["ibp"]}],
            "resources": resources,
        }
    )


def test_one_worker_trials_hold_their_workers_resources_in_the_trial():
    from bioscale.study.runner import _trial_resources

    assert _spec().resources.direct
    assert _trial_resources(_spec(cpus_per_worker=2, gpus_per_worker=0.5)) == {
        "CPU": 2,
        "GPU": 0.5,
    }
    assert not _spec(workers_per_trial=2).resources.direct  # DDP keeps the worker group
    assert _trial_resources(_spec(workers_per_trial=2)) == {"CPU": 0.01}
    assert not _spec(trial_runner="ray_train").resources.direct
