"""Trial writes to MLflow that an outage delays but never loses.

The study driver's Tune callback must not block on MLflow: while it waits, Tune stops collecting
results and trials stall behind a tracking server. :class:`TrialWriter` takes each write (a trial
run opened, a batch of metrics, a tag, the run closed) in order onto a queue that one background
thread drains through the :class:`~bioscale.study.tracking.Tracker` (itself retrying transient
errors with backoff). An outage longer than that only makes the thread wait and try again; the
trials keep training. When the study ends the driver waits for the queue to drain, and whatever
an unreachable server still has not taken is written to a spool file in the study's output folder
(JSON lines). The next ``bioscale study run`` or ``study resume`` replays the spool before it plans,
so every metric lands once, on the trial's one run.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bioscale.errors import TrackingError
from bioscale.study.tracking import is_metric
from bioscale.uri import redact_uri

log = logging.getLogger(__name__)

SPOOL_FILE = "tracking-spool.jsonl"
_STOP = object()


def spool_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / SPOOL_FILE


class TrialWriter:
    """Applies trial writes in order from a background thread; ``submit`` never blocks.

    Writes name trials by their trial key; the writer opens (or reopens) each trial's run and
    keeps the key → run id map, so a write queued while the server is down still reaches the
    right run later.
    """

    def __init__(
        self,
        tracker: Any,
        experiment_id: str,
        parent_id: str,
        *,
        progress: Callable[[str], None] = log.warning,
        pause_s: float = 5.0,
    ) -> None:
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.progress = progress
        self.pause_s = pause_s
        self.run_ids: dict[str, str] = {}
        self._queue: queue.Queue = queue.Queue()
        self._pending: list[dict[str, Any]] = []  # the write being tried, until it lands
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._give_up = threading.Event()
        self._outage_since: float | None = None
        self._thread = threading.Thread(target=self._drain, name="bioscale-mlflow", daemon=True)
        self._thread.start()

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks into the experiment state; the copy is a record only (the
        queue and the thread stay with the driver's writer)."""
        state = self.__dict__.copy()
        for live in ("_queue", "_lock", "_closing", "_give_up", "_thread"):
            state.pop(live, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._queue = queue.Queue()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._closing.set()  # a copy takes no writes: the driver's writer does
        self._give_up = threading.Event()
        self._thread = threading.Thread(target=lambda: None)

    # --- what the callback calls -------------------------------------------------------------
    def start(self, key: str, name: str, params: dict[str, Any], run_id: str | None) -> None:
        self.submit({"op": "start", "key": key, "name": name, "params": params, "run_id": run_id})

    def metrics(self, key: str, metrics: dict[str, Any], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if is_metric(k, v)}
        if not clean:
            return
        self.submit({"op": "metrics", "key": key, "metrics": clean, "step": int(step)})

    def tag(self, key: str, name: str, value: str) -> None:
        self.submit({"op": "tag", "key": key, "name": name, "value": str(value)})

    def text(self, key: str, name: str, text: str) -> None:
        """A small text artifact (JSON, CSV) of the trial, e.g. a per-layer validation curve."""
        self.submit({"op": "text", "key": key, "name": name, "text": str(text)})

    def finish(self, key: str, status: str) -> None:
        self.submit({"op": "finish", "key": key, "status": status})

    def submit(self, write: dict[str, Any]) -> None:
        if self._closing.is_set():
            raise RuntimeError("TrialWriter.submit after close")
        self._queue.put(write)

    @property
    def backlog(self) -> int:
        with self._lock:
            return self._queue.qsize() + len(self._pending)

    # --- the end of a study ------------------------------------------------------------------
    def close(self, spool: str | Path, wait_s: float) -> int:
        """Wait up to ``wait_s`` for the queue to drain; spool what is left to ``spool`` and
        return how many writes were spooled (0: everything is in MLflow)."""
        self._closing.set()
        self._queue.put(_STOP)
        deadline = time.monotonic() + wait_s
        said = False
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(timeout=1.0)
            if self._thread.is_alive() and self._outage_since is not None and not said:
                self.progress(
                    f"waiting up to {wait_s:.0f} s for MLflow ({redact_uri(self.tracker.uri)}) to take "
                    f"{self.backlog} queued write(s)"
                )
                said = True
        self._give_up.set()
        self._thread.join(timeout=max(5.0, self.tracker.retry_seconds + 5.0))
        with self._lock:
            left = list(self._pending)
            self._pending.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                left.append(item)
        if not left:
            return 0
        path = Path(spool)
        with path.open("a", encoding="utf-8") as fh:
            for write in left:
                fh.write(json.dumps(write | {"run_id_known": self.run_ids.get(write["key"])}))
                fh.write("\n")
        return len(left)

    # --- the background thread ---------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            with self._lock:
                self._pending = [item]
            while not self._apply_once(item):
                if self._give_up.is_set():
                    return
                self._give_up.wait(self.pause_s)
                if self._give_up.is_set():
                    return
            with self._lock:
                self._pending = []

    def _apply_once(self, write: dict[str, Any]) -> bool:
        """One attempt (with the tracker's own retries); False if the store is still down."""
        try:
            apply_write(self.tracker, self.experiment_id, self.parent_id, self.run_ids, write)
        except TrackingError as err:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                self.progress(
                    f"warning: MLflow ({redact_uri(self.tracker.uri)}) is not taking writes ({err}); trials "
                    "keep running and their metrics are queued until it is back"
                )
            return False
        except Exception as err:  # a write MLflow refuses for good (a bad name): say, go on
            self.progress(
                f"warning: MLflow refused a {write['op']} write for trial "
                f"{write['key'][:12]} and it was dropped: {err}"
            )
        if self._outage_since is not None:
            self.progress(
                f"MLflow ({redact_uri(self.tracker.uri)}) is back after "
                f"{time.monotonic() - self._outage_since:.0f} s; writing the queued metrics"
            )
            self._outage_since = None
        return True


def apply_write(
    tracker: Any,
    experiment_id: str,
    parent_id: str,
    run_ids: dict[str, str],
    write: dict[str, Any],
) -> None:
    """Apply one queued or spooled write; ``run_ids`` maps trial keys to runs and grows as
    trial runs are opened."""
    key = write["key"]
    op = write["op"]
    if op == "start":
        run_ids[key] = tracker.start_trial(
            experiment_id,
            parent_id,
            key,
            write["name"],
            write["params"],
            run_id=write.get("run_id") or run_ids.get(key) or write.get("run_id_known"),
        )
        return
    run_id = run_ids.get(key) or write.get("run_id_known")
    if run_id is None:
        raise TrackingError(f"no MLflow run is open for trial {key[:12]} (its start was lost)")
    run_ids[key] = run_id
    if op == "metrics":
        tracker.log_metrics(run_id, write["metrics"], step=write["step"])
    elif op == "tag":
        tracker.set_tag(run_id, write["name"], write["value"])
    elif op == "text":
        tracker.log_text(run_id, write["text"], write["name"])
    elif op == "finish":
        tracker.finish(run_id, write["status"])
    else:
        raise ValueError(f"unknown tracking write {op!r}")


def replay_spool(
    tracker: Any,
    out_dir: str | Path,
    experiment_id: str,
    parent_id: str,
    progress: Callable[[str], None],
) -> int:
    """Write a spool left by an earlier run into MLflow, then delete it; the number replayed.
    A trial whose run cannot be found again is opened anew, under its trial key."""
    path = spool_path(out_dir)
    if not path.exists():
        return 0
    writes = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            writes.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise TrackingError(
                f"the tracking spool {path} is damaged at line {n} ({err}); fix or remove that "
                "line and run again (every other line is still replayed)"
            ) from None
    # runs the spooled writes belong to, if they were opened before the outage (or by an
    # earlier attempt): reused, so each trial stays one run
    run_ids = dict(tracker.unfinished_trial_runs(experiment_id))
    for write in writes:
        apply_write(tracker, experiment_id, parent_id, run_ids, write)
    path.unlink()
    progress(f"replayed {len(writes)} tracking write(s) an earlier run had spooled to {path}")
    return len(writes)
