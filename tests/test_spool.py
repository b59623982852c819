"""An MLflow outage during a study delays trial writes but never blocks Tune or loses a metric."""

from __future__ import annotations

import time

import pytest
import requests

from bioscale.names import KIND, TRIAL_KEY
from bioscale.study.spool import TrialWriter, replay_spool, spool_path
from bioscale.study.tracking import Tracker, default_uri

pytestmark = pytest.mark.timeout(120)


class _Switchable:
    """An MlflowClient whose every call fails like a stopped server while ``down``."""

    def __init__(self, client) -> None:
        self._client = client
        self.down = False
        self.refused = 0

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                self.refused += 1
                raise requests.exceptions.ConnectionError("Connection refused")
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def store(tmp_path):
    tracker = Tracker(default_uri(tmp_path), artifact_root=tmp_path / "art", retry_seconds=0.3)
    exp = tracker.experiment("spool-study")
    parent = tracker.study_run(exp, "spool-study", "sha")
    switch = _Switchable(tracker.client)
    tracker.client = switch
    return tracker, switch, exp, parent


def _trial_runs(tracker, exp):
    return tracker._retry(lambda: tracker.runs(exp, "trial"))


def _write_trial(writer: TrialWriter, key: str, epochs: int) -> None:
    writer.start(key, f"trial-{key}", {"rung": "debug", "seed": 0}, None)
    for epoch in range(1, epochs + 1):
        writer.metrics(key, {"train/loss": 1.0 / epoch, "epoch": epoch, "note": "x"}, step=epoch)
    writer.text(key, "layers/moa.json", '{"layers": [0, 1]}')
    writer.finish(key, "FINISHED")


def test_writes_queued_during_an_outage_land_when_the_server_is_back(store, tmp_path):
    tracker, switch, exp, parent = store
    writer = TrialWriter(tracker, exp, parent, progress=lambda m: None, pause_s=0.05)
    switch.down = True
    t0 = time.perf_counter()
    _write_trial(writer, "k1", epochs=5)
    assert time.perf_counter() - t0 < 0.5, "submitting must not wait for MLflow"
    time.sleep(0.8)  # the writer is retrying against the stopped server
    assert switch.refused > 0 and writer.backlog > 0
    switch.down = False
    assert writer.close(spool_path(tmp_path), wait_s=30) == 0
    (run,) = _trial_runs(tracker, exp)
    assert run.info.status == "FINISHED" and run.data.tags[TRIAL_KEY] == "k1"
    history = tracker.client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]
    assert not spool_path(tmp_path).exists()


def test_an_outage_past_the_end_is_spooled_and_replayed_onto_the_same_run(store, tmp_path):
    tracker, switch, exp, parent = store
    writer = TrialWriter(tracker, exp, parent, progress=lambda m: None, pause_s=0.05)
    writer.start("k2", "trial-k2", {"rung": "debug"}, None)
    writer.metrics("k2", {"train/loss": 2.0}, step=1)
    deadline = time.monotonic() + 20
    while writer.backlog and time.monotonic() < deadline:  # the start lands before the outage
        time.sleep(0.05)
    switch.down = True
    writer.metrics("k2", {"train/loss": 1.0}, step=2)
    writer.finish("k2", "FINISHED")
    _write_trial(writer, "k3", epochs=2)  # never reached the server at all
    spooled = writer.close(spool_path(tmp_path), wait_s=0.5)
    assert spooled >= 2 + 5 and spool_path(tmp_path).exists()
    switch.down = False
    (before,) = _trial_runs(tracker, exp)
    assert before.info.status == "RUNNING"

    messages: list[str] = []
    assert replay_spool(tracker, tmp_path, exp, parent, messages.append) == spooled
    runs = {r.data.tags[TRIAL_KEY]: r for r in _trial_runs(tracker, exp)}
    assert set(runs) == {"k2", "k3"}, "each trial is one run, the interrupted one continued"
    assert runs["k2"].info.run_id == before.info.run_id
    assert all(r.info.status == "FINISHED" and r.data.tags[KIND] == "trial" for r in runs.values())
    steps = [m.step for m in tracker.client.get_metric_history(before.info.run_id, "train/loss")]
    assert steps == [1, 2]
    assert not spool_path(tmp_path).exists() and "replayed" in messages[0]


def test_a_damaged_spool_line_is_named(store, tmp_path):
    tracker, _switch, exp, parent = store
    spool_path(tmp_path).write_text('{"op": "finish", "key": "k"}\nnot json\n')
    with pytest.raises(Exception, match="line 2"):
        replay_spool(tracker, tmp_path, exp, parent, lambda m: None)
    assert spool_path(tmp_path).exists(), "nothing is deleted until it is written"


def test_the_writer_survives_tune_pickling_its_callbacks(tmp_path):
    from ray import cloudpickle as pickle

    tracker = Tracker(default_uri(tmp_path), artifact_root=tmp_path / "art", retry_seconds=0.3)
    exp = tracker.experiment("pickled")
    parent = tracker.study_run(exp, "pickled", "sha")
    writer = TrialWriter(tracker, exp, parent, progress=lambda m: None, pause_s=0.05)
    copy = pickle.loads(pickle.dumps(writer))
    with pytest.raises(RuntimeError):
        copy.start("k", "n", {}, None)
    _write_trial(writer, "k4", epochs=1)  # the original keeps working after being pickled
    assert writer.close(spool_path(tmp_path), wait_s=30) == 0
    assert [r.data.tags[TRIAL_KEY] for r in _trial_runs(tracker, exp)] == ["k4"]


def test_a_trial_run_whose_creation_answer_was_lost_is_not_made_twice(tmp_path):
    tracker = Tracker(default_uri(tmp_path), artifact_root=tmp_path / "art", retry_seconds=5)
    exp = tracker.experiment("lost-answer")
    parent = tracker.study_run(exp, "lost-answer", "sha")
    real_create = tracker.client.create_run
    calls = []

    def create_then_drop_the_answer(*args, **kwargs):
        calls.append(1)
        run = real_create(*args, **kwargs)
        if len(calls) == 1:  # the server made the run; the client never heard back
            raise requests.exceptions.ConnectionError("Connection reset by peer")
        return run

    tracker.client.create_run = create_then_drop_the_answer
    run_id = tracker.start_trial(exp, parent, "k5", "trial-k5", {"rung": "debug"})
    (only,) = _trial_runs(tracker, exp)
    assert only.info.run_id == run_id and only.data.params["rung"] == "debug"
    assert len(calls) == 1, "the retry found the run the first attempt made"
