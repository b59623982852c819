"""Trial runs as a tidy table (one row per FINISHED trial, params typed, final metric values), the
trial runs that did not finish, their per-epoch training curves, and the MLflow UI pages that show
them."""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bioscale.errors import TrackingError
from bioscale.names import KIND, TRIAL_KEY
from bioscale.uri import redact_uri

_INT_PARAMS = (
    "N",
    "N_heads",
    "D_samples",
    "D_compounds",
    "seed",
    "diet_seed",
    "epochs",
    "batch_size",
)
_FLOAT_PARAMS = ("lr", "flops_per_sample")
_TRIAL = f"tags.`{KIND}` = 'trial'"
#: the validation metric a trial logs once per epoch (the objective's selection term)
VAL_LOSS = "val/loss"
#: ``train/*`` metrics a trial logs once, at its last epoch (the loop's totals and the driver's
#: skipped-sample count), not once per epoch; every other ``train/<term>`` is a per-epoch term
TRAIN_TOTALS = frozenset(
    {
        "train/best_epoch",
        "train/epochs",
        "train/resumed_from_epoch",
        "train/samples_seen",
        "train/early_stopped",
        "train/skipped_samples",
    }
)
#: concurrent metric-history reads from a tracking server (each read is one request; 200 trials
#: × 3 metrics from a local server: 42 s one at a time, 12 s with 8, 5 s with 16, 7 s with 32).
#: A SQLite store is read in one thread: threads do not speed it up (2.1 s vs 2.4 s with 8)
HISTORY_THREADS = 16
#: where ``mlflow ui`` serves a SQLite store by default (``--port 5000`` on the loopback)
LOCAL_UI = "http://127.0.0.1:5000"


def _row(run: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(run.data.params)
    for k in _INT_PARAMS:
        if k in row:
            row[k] = int(row[k])
    for k in _FLOAT_PARAMS:
        if k in row:
            row[k] = float(row[k])
    row.update(run.data.metrics)
    row["run_id"] = run.info.run_id
    return row


def _search(client: Any, experiment_id: str, query: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=query, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_table(client: Any, experiment_id: str) -> list[dict[str, Any]]:
    """Rows ``{param..., metric..., run_id}`` of the experiment's FINISHED trial runs."""
    runs = _search(client, experiment_id, f"{_TRIAL} and attributes.status = 'FINISHED'")
    rows = [_row(run) for run in runs]
    rows.sort(
        key=lambda r: (
            r.get("objective", ""),
            r.get("N", 0),
            r.get("D_samples", 0),
            r.get("seed", 0),
        )
    )
    return rows


def unfinished_trials(client: Any, experiment_id: str) -> list[dict[str, Any]]:
    """Rows ``{param..., metric..., run_id, status}`` of the trial runs that ended FAILED or KILLED
    or are still RUNNING, and whose trial has no FINISHED run (a trial retried to the end is done).
    Costs one search, plus one more only when some run did not finish."""
    runs = _search(client, experiment_id, f"{_TRIAL} and attributes.status != 'FINISHED'")
    if not runs:
        return []
    done = {
        run.data.tags.get(TRIAL_KEY)
        for run in _search(client, experiment_id, f"{_TRIAL} and attributes.status = 'FINISHED'")
    }
    out = []
    for run in runs:
        key = run.data.tags.get(TRIAL_KEY)
        if key is None or key not in done:
            out.append({**_row(run), "status": run.info.status})
    out.sort(key=lambda r: (r.get("objective", ""), r.get("N", 0), r.get("D_samples", 0)))
    return out


def step_metric_keys(row: dict[str, Any]) -> list[str]:
    """The per-epoch metrics a trial row names: ``val/loss`` and its ``train/<term>`` terms."""
    return sorted(
        k for k in row if k == VAL_LOSS or (k.startswith("train/") and k not in TRAIN_TOTALS)
    )


#: run id → metric → [(epoch, value), ...] in order of epoch
Histories = dict[str, dict[str, list[tuple[int, float]]]]


def metric_histories(
    client: Any, rows: Sequence[dict[str, Any]], *, threads: int = HISTORY_THREADS
) -> Histories:
    """Every trial's per-epoch ``val/loss`` and ``train/<term>`` (``step_metric_keys`` of its row,
    so nothing is searched for), read in one pass per run: one task per run reads its keys'
    histories, ``threads`` runs at a time. A value logged twice at one epoch keeps the later.

    Raises:
        TrackingError: the store does not answer.
    """
    from mlflow.exceptions import MlflowException

    def one(row: dict[str, Any]) -> tuple[str, dict[str, list[tuple[int, float]]]]:
        curves = {}
        for key in step_metric_keys(row):
            by_step: dict[int, tuple[int, float]] = {}
            for m in client.get_metric_history(row["run_id"], key):
                if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                    by_step[m.step] = (m.timestamp, float(m.value))
            curves[key] = [(step, v) for step, (_, v) in sorted(by_step.items())]
        return row["run_id"], curves

    todo = [r for r in rows if r.get("run_id")]
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            return dict(pool.map(one, todo))
    except MlflowException as err:
        why = " ".join(str(err).split())[:200]
        raise TrackingError(f"cannot read the trials' metric histories ({why})") from None


@dataclass(frozen=True, kw_only=True)
class MlflowUI:
    """Where a tracking store's runs are browsed.

    Attributes:
        base: the UI's address, without credentials (a tracking server is its own UI; a SQLite
            store is served by ``mlflow ui`` at ``LOCAL_UI``).
        launch: the command that serves a SQLite store's UI; None for a server.
    """

    base: str
    launch: str | None = None

    def runs_table(self, experiment_id: str) -> str:
        """The experiment's runs table, trials nested under the study run. MLflow 3's UI opens an
        experiment on its GenAI overview, where no run is listed; this page lists them."""
        return f"{self.base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"

    def run(self, experiment_id: str, run_id: str) -> str:
        """One run's page: params, metrics and their per-epoch charts, artifacts."""
        return f"{self.base}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_ui(tracking_uri: str) -> MlflowUI | None:
    """The UI of a SQLite store (``mlflow ui`` on ``LOCAL_UI``) or of a tracking server (its own
    address, user information and query dropped); None for other stores."""
    if tracking_uri.startswith("sqlite:"):
        return MlflowUI(
            base=LOCAL_UI,
            launch=f".venv/bin/mlflow ui --backend-store-uri {redact_uri(tracking_uri)} "
            f"--port {urlsplit(LOCAL_UI).port}",
        )
    if tracking_uri.startswith(("http://", "https://")):
        parts = urlsplit(tracking_uri)
        host = parts.netloc.rpartition("@")[2]
        return MlflowUI(base=urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", "")))
    return None


@dataclass(frozen=True, kw_only=True)
class TrialRuns:
    """What a report shows of a study's MLflow trial runs beyond their table.

    Attributes:
        experiment_id: the study's experiment.
        ui: where its runs are browsed (None: a store with no known UI).
        histories: per trial run, its per-epoch metrics (``metric_histories``).
        unfinished: the trials that did not finish (``unfinished_trials``).
        seconds: the time spent reading the histories.
    """

    experiment_id: str
    ui: MlflowUI | None
    histories: Histories = field(default_factory=dict)
    unfinished: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def run_url(self, run_id: str) -> str | None:
        return None if self.ui is None else self.ui.run(self.experiment_id, run_id)

    def issues(self) -> list[str]:
        """One line per trial that did not finish: what it was, its run, what to do."""
        out = []
        for r in self.unfinished:
            what = ", ".join(f"{k}={r[k]}" for k in ("objective", "rung", "diet", "seed") if k in r)
            state = (
                "is still RUNNING (or its study was interrupted)"
                if r["status"] == "RUNNING"
                else f"ended {r['status']}"
            )
            out.append(
                f"trial {what or r['run_id']} {state} (MLflow run {r['run_id']}): it is in no "
                "fit; study run printed why and where Ray's error file is; run the study again "
                "(study run and study resume retry every trial that is not FINISHED)"
            )
        return out


def read_trial_runs(
    client: Any, experiment_id: str, rows: Sequence[dict[str, Any]], tracking_uri: str
) -> TrialRuns:
    """The ``TrialRuns`` of a study's finished trial ``rows`` (``runs_table``)."""
    start = time.perf_counter()
    server = tracking_uri.startswith(("http://", "https://"))
    histories = metric_histories(client, rows, threads=HISTORY_THREADS if server else 1)
    seconds = time.perf_counter() - start
    return TrialRuns(
        experiment_id=experiment_id,
        ui=mlflow_ui(tracking_uri),
        histories=histories,
        unfinished=unfinished_trials(client, experiment_id),
        seconds=seconds,
    )


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
