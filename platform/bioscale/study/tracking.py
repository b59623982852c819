"""MLflow conventions (frozen in ARCHITECTURE): experiment = study, one ``study`` parent run, one
``trial`` child per grid point keyed by ``bioscale.trial_key``, ``fit`` and ``report`` children.

MLflow is the source of truth for what is done: a FINISHED trial run with the same key is never
run again. Only the study driver writes (workers report through Ray), so a SQLite store has one
writer.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bioscale.errors import TrackingError
from bioscale.names import FIT_ID, KIND, METRIC_PREFIXES, PARENT, STUDY_SHA, TRIAL_KEY


def default_uri(out_dir: str | Path) -> str:
    """SQLite in the study's output folder (absolute, so every process resolves the same file)."""
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def is_metric(key: str, value: Any) -> bool:
    return (
        key.startswith(METRIC_PREFIXES)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


class Tracker:
    """A thin adapter over ``MlflowClient`` for bioscale's run hierarchy."""

    def __init__(self, uri: str, artifact_root: str | Path | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.artifact_root = Path(artifact_root).resolve() if artifact_root else None
        self._check_reachable()
        self.client = MlflowClient(tracking_uri=uri)

    def _check_reachable(self) -> None:
        if not self.uri.startswith(("http://", "https://")):
            return
        url = self.uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(
                f"MLflow tracking server {self.uri} is not reachable ({err}). Start it, fix "
                "tracking.uri / MLFLOW_TRACKING_URI, or set tracking.uri: null for a local SQLite "
                "store. Nothing was run, so nothing is lost."
            ) from None

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

    def start_trial(
        self, experiment_id: str, parent_id: str, key: str, name: str, params: dict[str, Any]
    ) -> str:
        run = self.client.create_run(
            experiment_id, run_name=name, tags={KIND: "trial", PARENT: parent_id, TRIAL_KEY: key}
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

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

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._retry(lambda: self.client.set_terminated(run_id, status=status))

    def child_run(
        self, experiment_id: str, parent_id: str, kind: str, name: str, ident: str
    ) -> str:
        """A ``fit`` or ``report`` child run identified by ``ident``: reused when it exists, so
        analysing a study again updates its fits instead of piling up copies."""
        existing = self.runs(experiment_id, kind, f"tags.`{FIT_ID}` = '{ident}'")
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            experiment_id, run_name=name, tags={KIND: kind, PARENT: parent_id, FIT_ID: ident}
        )
        return run.info.run_id

    def log_artifacts(self, run_id: str, paths: Iterable[str | Path]) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path))

    @staticmethod
    def _retry(fn, attempts: int = 5) -> Any:
        """SQLite can answer 'database is locked' under bursts; retry with backoff, then raise."""
        for i in range(attempts):
            try:
                return fn()
            except Exception as err:  # MlflowException wraps the driver's OperationalError
                if "locked" not in str(err) or i == attempts - 1:
                    raise
                time.sleep(0.2 * 2**i)
        return None
