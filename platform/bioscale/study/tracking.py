"""MLflow conventions (frozen in ARCHITECTURE): experiment = study, one ``study`` parent run, one
``trial`` child per grid point keyed by ``bioscale.trial_key``, ``fit`` and ``report`` children.

MLflow is the source of truth for what is done: a FINISHED trial run with the same key is never
run again. Only the study driver writes (workers report through Ray), so a SQLite store has one
writer.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioscale.errors import TrackingError
from bioscale.names import (
    FIT_ID,
    KIND,
    METRIC_PREFIXES,
    PARENT,
    STUDY_SHA,
    TRIAL_KEY,
    filter_value,
)
from bioscale.tracking_uri import check_reachable, check_scheme, configure_http, is_server
from bioscale.uri import redact_uri

if TYPE_CHECKING:
    from bioscale.study.spec import StudySpec


def default_uri(out_dir: str | Path) -> str:
    """SQLite in the study's output folder (absolute, so every process resolves the same file)."""
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def tracking_uri(spec: StudySpec, out_dir: str | Path) -> str:
    """A study's tracking store: its ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else SQLite
    in its output folder."""
    return spec.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(out_dir)


def is_metric(key: str, value: Any) -> bool:
    return (
        key.startswith(METRIC_PREFIXES)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


class Tracker:
    """A thin adapter over ``MlflowClient`` for bioscale's run hierarchy."""

    def __init__(
        self, uri: str, artifact_root: str | Path | None = None, retry_seconds: float = 120.0
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        # a tracking server keeps artifacts in its own store; a local store keeps them beside it
        self.artifact_root = (
            Path(artifact_root).resolve() if artifact_root and not is_server(uri) else None
        )
        self.retry_seconds = retry_seconds
        # an unknown scheme or a server that does not answer fails here, before any work; MLflow's
        # own HTTP retries are off (they re-send a runs/create whose answer was lost, making a
        # second run): `_retry` is the only retry layer (bounded, and it finds a run already made)
        check_scheme(uri)
        configure_http(uri)
        check_reachable(uri)
        self.client = MlflowClient(tracking_uri=uri)

    @property
    def is_server(self) -> bool:
        """Whether the store is a tracking server (which several output folders may share)."""
        return is_server(self.uri)

    def experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        location = self.artifact_root.as_uri() if self.artifact_root else None
        return self.client.create_experiment(name, artifact_location=location)

    def runs(self, experiment_id: str, kind: str, extra_filter: str = "") -> list[Any]:
        query = f"tags.`{KIND}` = '{kind}'" + (f" and {extra_filter}" if extra_filter else "")
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=query, max_results=1000, page_token=token
            )
            out.extend(page)
            token = page.token
            if not token:
                return out

    def study_run(self, experiment_id: str, study_name: str, study_sha: str) -> str:
        """The study's parent run, reused across re-runs of the same study name."""
        existing = self.runs(experiment_id, "study")
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                experiment_id, run_name=study_name, tags={KIND: "study", STUDY_SHA: study_sha}
            )
            run_id = run.info.run_id
        self.client.set_tag(run_id, STUDY_SHA, study_sha)
        return run_id

    def finished_trial_keys(self, experiment_id: str) -> dict[str, str]:
        """``{trial_key: run_id}`` of FINISHED trial runs."""
        runs = self.runs(experiment_id, "trial", "attributes.status = 'FINISHED'")
        return {r.data.tags[TRIAL_KEY]: r.info.run_id for r in runs if TRIAL_KEY in r.data.tags}

    def unfinished_trial_runs(self, experiment_id: str) -> dict[str, str]:
        """``{trial_key: run_id}`` of trial runs left RUNNING, FAILED or KILLED by an earlier
        attempt (a killed driver, a failed trial): a new attempt continues on the same run, so
        every trial is one run however often it is retried."""
        runs = self.runs(experiment_id, "trial", "attributes.status != 'FINISHED'")
        out: dict[str, str] = {}
        for r in sorted(runs, key=lambda r: r.info.start_time or 0):
            if TRIAL_KEY in r.data.tags:
                out.setdefault(r.data.tags[TRIAL_KEY], r.info.run_id)
        return out

    def start_trial(
        self,
        experiment_id: str,
        parent_id: str,
        key: str,
        name: str,
        params: dict[str, Any],
        run_id: str | None = None,
    ) -> str:
        """The trial's child run: ``run_id`` (an earlier attempt's run) reopened, or a new one."""
        if run_id is not None:
            self._retry(lambda: self.client.update_run(run_id, status="RUNNING"))
            return run_id
        attempts = 0

        def create():
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # the server may have made the run before its answer was lost
                made = self.runs(
                    experiment_id,
                    "trial",
                    f"tags.`{TRIAL_KEY}` = {filter_value(key)} and attributes.status = 'RUNNING'",
                )
                if made:
                    return made[0]
            return self.client.create_run(
                experiment_id,
                run_name=name,
                tags={KIND: "trial", PARENT: parent_id, TRIAL_KEY: key},
            )

        run = self._retry(create)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        batch = [Param(k, str(v)) for k, v in params.items()]
        self._retry(lambda: self.client.log_batch(run_id, params=batch))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._retry(lambda: self.client.set_tag(run_id, key, value))

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if is_metric(k, v)]
        for start in range(0, len(batch), 500):
            self._retry(
                lambda chunk=batch[start : start + 500]: self.client.log_batch(
                    run_id, metrics=chunk
                )
            )

    def last_step(self, run_id: str, metric: str) -> int:
        """The largest step ``metric`` has in run ``run_id`` (0 when it has none)."""
        history = self._retry(lambda: self.client.get_metric_history(run_id, metric))
        return max((m.step for m in history), default=0)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._retry(lambda: self.client.set_terminated(run_id, status=status))

    def child_run(
        self, experiment_id: str, parent_id: str, kind: str, name: str, ident: str
    ) -> str:
        """A ``fit`` or ``report`` child run identified by ``ident``: reused when it exists, so
        analysing a study again updates its fits instead of piling up copies."""
        existing = self.runs(experiment_id, kind, f"tags.`{FIT_ID}` = {filter_value(ident)}")
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            experiment_id, run_name=name, tags={KIND: kind, PARENT: parent_id, FIT_ID: ident}
        )
        return run.info.run_id

    def log_text(self, run_id: str, text: str, name: str) -> None:
        """``text`` as the run's artifact ``name`` (a relative path such as ``layers/moa.json``)."""
        self._retry(lambda: self.client.log_text(run_id, text, name))

    def log_artifacts(self, run_id: str, paths: Iterable[str | Path]) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path))

    def _retry(self, fn) -> Any:
        """Run one write, retrying what is transient — SQLite's 'database is locked', a tracking
        server that is unreachable or answers 5xx/429 — with exponential backoff (0.2 s doubling
        to 10 s) for up to ``retry_seconds``; then raise, naming the server."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                return fn()
            except Exception as err:  # MlflowException wraps the driver's OperationalError
                if not _transient(err):
                    raise
                if time.monotonic() + delay > deadline:
                    raise TrackingError(
                        f"MLflow tracking store {redact_uri(self.uri)} kept failing for "
                        f"{self.retry_seconds:.0f} s ({err}); raise tracking.retry_seconds or "
                        "fix the server. Finished trials are kept; `bioscale study resume` "
                        "continues the others."
                    ) from err
                time.sleep(delay)
                delay = min(2 * delay, 10.0)


def open_tracker(spec: StudySpec | None, out_dir: str | Path, *, uri: str | None = None) -> Tracker:
    """The ``Tracker`` every command and the study driver use: the study's store (``uri``
    overrides it), artifacts of a local store in ``<out>/mlartifacts``, writes retried for the
    study's ``tracking.retry_seconds``.

    Args:
        spec: the ``StudySpec``; ``None`` for a store read without a study file (then ``uri``
            names it, and writes are retried for ``TrackingSpec``'s default).
        out_dir: the study's output folder.
        uri: a tracking URI that overrides the study's.
    """
    if spec is None and uri is None:
        raise TypeError("open_tracker needs the study's spec or a tracking uri")
    retry = {} if spec is None else {"retry_seconds": spec.tracking.retry_seconds}
    return Tracker(
        tracking_uri(spec, out_dir) if uri is None else uri,
        artifact_root=Path(out_dir) / "mlartifacts",
        **retry,
    )


#: Substrings of errors worth retrying: SQLite lock contention, connection failures (requests /
#: urllib3 wording), and the HTTP statuses MLflow's client raises for an overloaded server.
_TRANSIENT = (
    "database is locked",
    "connection refused",
    "connection aborted",
    "connection reset",
    "max retries exceeded",
    "failed to establish a new connection",
    "remote end closed connection",
    "read timed out",
    "temporarily unavailable",
    "response code 500",
    "response code 502",
    "response code 503",
    "response code 504",
    "response code 429",
)


def _transient(err: BaseException) -> bool:
    import requests

    if isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    text = str(err).lower()
    return any(t in text for t in _TRANSIENT)
