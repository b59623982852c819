"""The study driver: plan → skip what MLflow has FINISHED → Ray Tune (one trial per grid point,
each a Ray Train ``TorchTrainer`` fed by Ray Data) → MLflow, logged only from this process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bioscale.config import to_mapping
from bioscale.data import kinds
from bioscale.errors import BioscaleError, ConfigError, TrackingError
from bioscale.eval.layer_search import CURVES_ARTIFACT
from bioscale.models.features import TRAINLESS_FAMILY
from bioscale.names import NODE_IDS
from bioscale.study.lock import OutputLock, StudyLease
from bioscale.study.payload import TrialPayload, payloads
from bioscale.study.plan import StudyPlan, plan
from bioscale.study.spec import DataSpec, StudySpec
from bioscale.study.spool import TrialWriter, replay_spool, spool_path
from bioscale.study.tracking import Tracker, default_uri, open_tracker, tracking_uri
from bioscale.uri import redact_uri

Progress = Callable[[str], None]
#: Ray Train's controller polls workers every 2 s by default and a worker's report waits for the
#: poll; short trials are dominated by it, so poll faster (cheap: one actor call).
#: The local instance also skips Ray Train's preemption watcher (one more actor process per trial,
#: which polls cloud spot-instance notices that a local machine never gets).
TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True, kw_only=True)
class StudyRun:
    """What a study run did."""

    out_dir: Path
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    planned: int
    skipped: int
    finished: int
    failed: int
    seconds: float


class StudyInterrupted(BioscaleError):
    """The study was stopped (Ctrl-C) before every trial ended: nothing about it is complete."""

    exit_code = 130

    def __init__(
        self, *, finished: list[str], stopped: list[str], not_started: int, already_done: int
    ) -> None:
        self.finished = finished
        self.stopped = stopped
        lines = [
            f"study interrupted: {len(finished)} trial(s) ended in this run"
            + (f" ({already_done} more before it)" if already_done else "")
            + f", {len(stopped)} stopped and marked KILLED in MLflow, {not_started} not started; "
            "the study run is KILLED and no report was written."
        ]
        lines += [f"  {d}" for d in finished]
        lines += [f"  stopped:  {d}" for d in stopped]
        lines.append(
            "`bioscale study resume` with the same study and --out continues the stopped trials "
            "from their last checkpoints and skips the finished ones."
        )
        super().__init__("\n".join(lines))


def ensure_manifest(spec: StudySpec, out_dir: Path, progress: Progress = _print) -> Path:
    """The study's manifest path; a synthetic screen is generated into ``out_dir/data`` once."""
    if spec.data.manifest is not None:
        return Path(spec.data.manifest)
    data_dir = out_dir / "data"
    stamp = data_dir / "synth_fingerprint"
    path = data_dir / "manifest.parquet"
    fingerprint = spec.data.synthetic.fingerprint()
    if not path.exists() or not stamp.exists() or stamp.read_text() != fingerprint:
        progress(f"generating the synthetic screen into {data_dir} ...")
        path = kinds.get(spec.data.kind).synthesize(spec.data.synthetic, data_dir).manifest
        stamp.write_text(fingerprint)
    return path


def storage_path(spec: StudySpec, out_dir: Path) -> str:
    """Where Ray Train/Tune keep checkpoints: ``spec.storage`` (shared by every node on a cluster)
    or ``<out>/ray_results``."""
    return spec.storage or str(Path(out_dir).resolve() / "ray_results")


def check_writable(location: str | Path, what: str) -> None:
    """Create ``location`` if needed and write and delete a probe file in it, or raise a
    ConfigError naming it: found at plan time, not after hours of training."""
    import uuid

    import pyarrow.fs as pafs

    text = str(location)
    probe = f".bioscale-write-check-{uuid.uuid4().hex}"
    try:
        if "://" in text:
            fs, path = pafs.FileSystem.from_uri(text)
        else:
            fs, path = pafs.LocalFileSystem(), str(Path(text).resolve())
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{probe}") as f:
            f.write(b"ok")
        fs.delete_file(f"{path}/{probe}")
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{what} {text} is not writable ({err}). Choose another location (--out, or "
            "storage: in the study) or fix its permissions; nothing was run."
        ) from None


def check_locations(spec: StudySpec, out_dir: Path) -> None:
    """The output folder and the checkpoint storage must both be writable."""
    check_writable(out_dir, "output folder")
    if spec.storage:
        check_writable(spec.storage, "storage path")


#: Loggers whose start-up notices are noise on a study's console (``--verbose`` keeps them): Ray's
#: token-authentication notice on a local instance, MLflow's and its database migrations' INFO.
_QUIET = {
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
    "mlflow": logging.WARNING,
    "alembic": logging.WARNING,
}


def quiet_console() -> None:
    """Keep start-up notices off the console (``_QUIET``); MLflow sets its loggers' level from
    ``MLFLOW_LOGGING_LEVEL`` when it is first imported, so that is set too (unless the user has)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(level)


def init_ray(address: str | None, num_cpus: int | None, verbose: bool) -> None:
    """Join ``address`` (a cluster) or start a local instance sized for this machine."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if not verbose:
        quiet_console()
    if address:
        from bioscale.study.capacity import check_ray_address

        check_ray_address(address)
        ray.init(address=address, log_to_driver=verbose)
        return
    # Logical CPUs above the physical count: trial drivers and data tasks are light (PLATFORM_NOTES).
    cpus = num_cpus or max(4, 2 * (os.cpu_count() or 1))
    ray.init(
        address="local",
        num_cpus=cpus,
        object_store_memory=2 * 1024**3,
        runtime_env={"env_vars": TRAIN_ENV},
        log_to_driver=verbose,
        include_dashboard=False,
        configure_logging=True,
        logging_level="WARNING",
    )


def _trial_fn(config: dict[str, Any], payloads: dict[str, TrialPayload]) -> None:
    """One Tune trial: build the trial's Ray Datasets and run a ``TorchTrainer`` on them."""
    import ray.data
    import ray.tune
    from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from bioscale.eval.final import final_metrics
    from bioscale.study.plan import trial_data
    from bioscale.train.ray_worker import train_worker

    t0 = time.perf_counter()
    payload = payloads[config["trial"]]  # Tune's grid runs over trial keys
    res = payload.resources
    index = kinds.read_index(payload.data, payload.manifest)  # the trial's one manifest read
    data, _ = trial_data(index, payload.point)

    ray.data.DataContext.get_current().enable_progress_bars = False
    skips = None
    if payload.kind.skips_bad_samples(payload.data):
        from bioscale.data.pipeline import skip_ledger

        skips = skip_ledger()
    datasets = payload.datasets(index, data, skips=skips)
    if payload.params.get("model_family") == TRAINLESS_FAMILY:  # features:raw: evaluate only
        ray.tune.report(_evaluate_untrained(payload, datasets, t0))
        return
    train_config = {
        "loop": to_mapping(payload.loop),
        "batch_size_per_worker": payload.batch_size_per_worker,
        "runtime": to_mapping(payload.runtime),  # DDP buckets, batch feed
    }
    # the loop's final evaluation (probes, alignment) is wired here: train never imports eval
    final = functools.partial(final_metrics, final=payload.final)
    if res.direct:  # one worker: trained right here, no Ray Train worker group to start
        from bioscale.train.ray_worker import direct_trial

        direct_trial(
            train_config,
            datasets,
            checkpoints=f"{payload.storage.rstrip('/')}/trial-{payload.key[:16]}/direct",
            final=final,
        )
        _report_closing(skips, data, payload, t0)
        return
    use_gpu = res.gpus_per_worker > 0
    per_worker = {"CPU": res.cpus_per_worker} | ({"GPU": res.gpus_per_worker} if use_gpu else {})
    trainer = TorchTrainer(
        functools.partial(train_worker, final=final),
        train_loop_config=train_config,
        scaling_config=ScalingConfig(
            num_workers=res.workers_per_trial,
            use_gpu=use_gpu,
            resources_per_worker=per_worker,
            placement_strategy=res.placement_strategy,
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=f"trial-{payload.key[:16]}",
            storage_path=payload.storage,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=res.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    _report_closing(skips, data, payload, t0)


def _trial_resources(spec: StudySpec) -> dict[str, float]:
    """What a Tune trial's own process holds: a one-worker trial that trains there holds its
    worker's CPUs and GPUs; a trial that starts a worker group only coordinates (0.01 CPU)."""
    res = spec.resources
    if not res.direct:
        return {"CPU": 0.01}
    out = {"CPU": max(res.cpus_per_worker, 0.01)}
    if res.gpus_per_worker > 0:
        out["GPU"] = res.gpus_per_worker
    return out


def _report_closing(skips, data, payload: TrialPayload, t0: float) -> None:
    """The trial's last report: its wall time, and the sites it skipped (images)."""
    import ray
    import ray.tune

    closing: dict[str, Any] = {}
    if skips is not None:
        closing = _skipped(ray.get(skips.entries.remote()), len(data.train.rows), payload.data)
    ray.tune.report({"perf/trial_seconds": time.perf_counter() - t0, "trial_complete": 1} | closing)


def _evaluate_untrained(payload: TrialPayload, datasets: dict[str, Any], t0: float) -> dict:
    """A trial of an untrained rung (``features:raw``): the probe rows' features are their
    embedding; the study's evaluation runs on them in this process, and the trial reports what a
    trained trial reports at its end (zero epochs, samples and FLOPs)."""
    import numpy as np

    from bioscale.eval.tasks import evaluate

    columns: dict[str, list[np.ndarray]] = {}
    for batch in datasets["probe"].iter_batches(batch_size=None, batch_format="numpy"):
        for name, values in batch.items():
            columns.setdefault("emb" if name == "x" else name, []).append(values)
    probe = {k: np.concatenate(v) for k, v in columns.items()}
    metrics = evaluate(probe, payload.final.probe)
    return metrics | {
        "final": 1.0,
        "trial_complete": 1,
        "train/epochs": 0,
        "train/samples_seen": 0,
        "compute/flops": 0.0,
        "compute/seconds": 0.0,
        "perf/trial_seconds": time.perf_counter() - t0,
    }


#: The trial artifact listing the image sites ``bad_samples: skip`` dropped (sample id → error).
SKIPPED_ARTIFACT = "skipped_samples.json"


def _skipped(entries: dict[str, str], n_train: int, data: DataSpec) -> dict[str, Any]:
    """What a trial reports of the sites it skipped; past ``max_skipped`` the trial fails."""
    limit = data.image.max_skipped * n_train
    if len(entries) > limit:
        first = "; ".join(f"{k}: {v}" for k, v in sorted(entries.items())[:3])
        raise BioscaleError(
            f"{len(entries)} image sites could not be read, more than data.image.max_skipped="
            f"{data.image.max_skipped:g} of the trial's {n_train} training sites (first: "
            f"{first}). Fix the files (`bioscale data check` lists every bad one) or raise "
            "max_skipped."
        )
    return {"train/skipped_samples": len(entries), SKIPPED_ARTIFACT: json.dumps(entries)}


#: Text artifacts a trial reports by name in its results (the layer-search curves, the skipped
#: sites); the driver logs each on the trial's run.
TEXT_ARTIFACTS = (CURVES_ARTIFACT, SKIPPED_ARTIFACT)


def _failure_reason(trial) -> str | None:
    """The last ``SomeError: message`` line of a failed trial's error log (a bioscale error's
    message names what went wrong), or ``None`` when there is no log to read."""
    try:
        text = trial.get_error() or ""
    except Exception:  # the log is a convenience: the trial's failure is reported regardless
        return None
    for line in reversed(str(text).strip().splitlines()):
        name, sep, message = line.strip().partition(": ")
        if sep and name.rsplit(".", 1)[-1].endswith(("Error", "Exception")):
            return f"{name.rsplit('.', 1)[-1]}: {message}"[:500]
    return None


def probe_summary(kind: str, metrics: dict[str, Any]) -> str:
    """The one probe number a trial's console line shows, in the data kind's words: MoA top-1
    (novel compounds when there are any) for screens, class top-1 on held-out images for natural
    images, out-of-distribution tracking accuracy for videos."""
    words = kinds.get(kind).wording
    for split, where in (("novel_compounds", words.novel), ("seen_compounds", words.held_out)):
        value = metrics.get(f"probe/moa/{split}/top1")
        if value is not None:
            return f"{words.label} top-1 on {where} {value:.3f}"
    ood = metrics.get("track/ood/accuracy")  # videos: the tracker's own answers
    if ood is not None:
        gap = metrics.get("track/ood_gap")
        gap_text = f", gap to in-distribution {gap:+.3f}" if gap is not None else ""
        return f"tracking accuracy out of distribution {ood:.3f}{gap_text}"
    return f"no {words.label} probe"


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``1 h 5 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60)} min"


def _make_callback(
    writer: TrialWriter,
    total: int,
    progress: Progress,
    earlier_runs: dict[str, str],
    by_key: dict[str, TrialPayload],
):
    from ray.tune import Callback

    class StudyCallback(Callback):
        """Logs each trial as an MLflow child run, from the driver (the only writer), through a
        background writer so that a slow or unreachable tracking server never stalls Tune."""

        def __init__(self) -> None:
            self.opened: set[str] = set()
            self.earlier = dict(earlier_runs)  # trial key → run of an interrupted attempt
            self.last: dict[str, dict[str, Any]] = {}
            self.finished = 0
            self.failed = 0
            #: trial key → "finished: …" / "failed: …" for the trials that ended in this run
            self.done: dict[str, str] = {}
            # Epochs reach MLflow once a checkpoint covers them: a trial that crashes or is
            # interrupted resumes from its last checkpoint and trains the later epochs again, and
            # MLflow cannot take back a logged value. trial key → {epoch: metrics}
            self.unsaved: dict[str, dict[int, dict[str, Any]]] = {}
            self.logged_epochs: dict[str, int] = {}  # trial key → last epoch already in MLflow
            self.started_at = time.monotonic()
            self.running: set[str] = set()

        def _study_progress(self) -> None:
            """One line on the whole study after each trial ends: a bar, the counts, an ETA."""
            ended = self.finished + self.failed
            left = len(by_key) - ended
            elapsed = time.monotonic() - self.started_at
            width = 24
            filled = round(width * ended / max(len(by_key), 1))
            eta = ""
            if ended and left:
                seconds = elapsed / ended * left
                eta = f"; about {_duration(seconds)} left"
            progress(
                f"  [{'#' * filled}{'.' * (width - filled)}] {ended}/{len(by_key)} trials of this "
                f"run ended ({self.failed} failed), {len(self.running)} running, {left - len(self.running)} "
                f"waiting; {_duration(elapsed)} so far{eta}"
            )

        def _flush(self, key: str) -> None:
            """Log the trial's epochs a checkpoint now covers, each once."""
            epochs = self.unsaved.pop(key, {})
            last = self.logged_epochs.get(key, 0)
            for epoch, metrics in sorted(epochs.items()):
                if epoch > last:
                    writer.metrics(key, metrics, step=epoch)
            self.logged_epochs[key] = max([last, *epochs])

        def _key(self, trial) -> str:
            return trial.config["trial"]

        def on_trial_start(self, iteration, trials, trial, **info):
            payload = by_key[trial.config["trial"]]
            key = payload.key
            if key not in self.opened:
                writer.start(key, payload.name, payload.params, self.earlier.get(key))
                self.opened.add(key)
                if key in self.earlier:  # what the interrupted attempt had logged
                    self.logged_epochs[key] = writer.tracker.last_step(
                        self.earlier[key], "train/loss"
                    )
            again = " (continuing its earlier run)" if key in self.earlier else ""
            self.running.add(key)
            progress(f"  ▶ trial {payload.position + 1}/{total} started{again}: {payload.describe}")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            key = self._key(trial)
            unsaved = self.unsaved.setdefault(key, {})
            for epoch in result.get("history", ()):
                unsaved[int(epoch["epoch"])] = epoch  # a retried epoch replaces its first try
            if result.get("checkpointed"):
                self._flush(key)
            if "history" not in result:
                step = int(result.get("train/epochs") or result.get("epoch") or 0)
                writer.metrics(key, result, step=step)
            self.last.setdefault(key, {}).update(result)
            if "node_ids" in result:
                writer.tag(key, NODE_IDS, result["node_ids"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            key = self._key(trial)
            payload = by_key[trial.config["trial"]]
            last = self.last.get(key, {})
            if "trial_complete" not in last or "final" not in last:
                self.on_trial_error(iteration, trials, trial)
                return
            self._flush(key)
            overhead = last.get("perf/trial_seconds", 0.0) - last.get("compute/seconds", 0.0)
            writer.metrics(
                key, {"perf/overhead_seconds": overhead}, step=int(last.get("train/epochs", 0))
            )
            for name in TEXT_ARTIFACTS:
                if last.get(name):
                    writer.text(key, name, last[name])
            writer.finish(key, "FINISHED")
            self.finished += 1
            self.done[key] = f"finished: {payload.describe}"
            probe = probe_summary(payload.data.kind, last)
            progress(
                f"  ✓ trial {payload.position + 1}/{total} finished in "
                f"{last.get('perf/trial_seconds', 0.0):.1f} s "
                f"({int(last.get('train/epochs', 0))} epochs, "
                f"{last.get('compute/seconds', 0.0):.1f} s training): {probe}"
            )
            self.running.discard(key)
            self._study_progress()

        def on_trial_error(self, iteration, trials, trial, **info):
            key = self._key(trial)
            payload = by_key[trial.config["trial"]]
            if key in self.opened:
                writer.finish(key, "FAILED")
            self.unsaved.pop(key, None)  # trained again from the last checkpoint on resume
            self.failed += 1
            self.done[key] = f"failed:   {payload.describe}"
            where = getattr(trial, "error_file", None) or getattr(trial, "path", "")
            reason = _failure_reason(trial)
            progress(
                f"  ✗ trial {payload.position + 1}/{total} FAILED: {payload.describe}"
                + (f": {reason}" if reason else "")
                + f" (error log: {where})"
            )
            self.running.discard(key)
            self._study_progress()

    return StudyCallback()


def run_study(
    spec: StudySpec,
    out_dir: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    verbose: bool = False,
    progress: Progress = _print,
    resume: bool = False,
    proceed: bool = False,
) -> StudyRun:
    """Run every trial of ``spec`` that MLflow does not already hold as FINISHED.

    MLflow is checked first (an unreachable server fails here, before any data or compute), then
    the output folder and storage. A trial an earlier attempt left unfinished (a killed driver, a
    failed trial) continues on its MLflow run, and its Ray Train run resumes from its last
    checkpoint. ``resume=True`` (``bioscale study resume``) insists that the study exists.
    A study over its ``budget:`` is refused unless ``proceed``.
    """
    t_start = time.perf_counter()
    if not verbose:  # before MLflow opens its store (its INFO lines) and Ray starts
        quiet_console()
    out = Path(out_dir).resolve()
    check_locations(spec, out)
    if address:  # an unreachable cluster is said before any planning or MLflow work
        from bioscale.study.capacity import check_ray_address

        check_ray_address(address)
    # one driver per output folder, taken before MLflow's SQLite store is even opened
    with OutputLock(out) as lock:
        if lock.took_over is not None:
            progress(
                f"note: the earlier driver of {out} ({lock.took_over.describe()}) is gone; "
                "continuing its study"
            )
        return _run_locked(
            spec,
            out,
            t_start,
            address=address,
            num_cpus=num_cpus,
            verbose=verbose,
            progress=progress,
            resume=resume,
            proceed=proceed,
        )


def _run_locked(
    spec: StudySpec,
    out: Path,
    t_start: float,
    *,
    address: str | None,
    num_cpus: int | None,
    verbose: bool,
    progress: Progress,
    resume: bool,
    proceed: bool,
) -> StudyRun:
    uri = tracking_uri(spec, out)
    tracker = open_tracker(spec, out, uri=uri)
    if resume:
        exp = tracker.client.get_experiment_by_name(spec.name)
        if exp is None or not tracker.runs(exp.experiment_id, "study"):
            raise BioscaleError(
                f"nothing to resume: study {spec.name!r} has no run in {redact_uri(uri)}. Start it with "
                "`bioscale study run` (check --out and the tracking URI if it did run)."
            )
    manifest = ensure_manifest(spec, out, progress)
    study_plan: StudyPlan = plan(spec, manifest)
    experiment_id = tracker.experiment(spec.name)
    parent_id = tracker.study_run(experiment_id, spec.name, spec.sha())
    # a store outside the output folder (a server, a shared SQLite file) may be driven from
    # another output folder too: the study run's lease says who holds it
    shared = uri != default_uri(out)
    lease = StudyLease(tracker.client, parent_id) if shared else None
    if lease is not None:
        lease.acquire()
        if lease.took_over is not None:
            progress(
                f"note: took over study {spec.name!r} from a driver that stopped renewing its "
                f"lease ({lease.took_over.describe()})"
            )
    try:
        return _run_study_run(
            spec,
            out,
            t_start,
            study_plan,
            tracker,
            experiment_id,
            parent_id,
            address=address,
            num_cpus=num_cpus,
            verbose=verbose,
            progress=progress,
            proceed=proceed,
        )
    except (StudyInterrupted, KeyboardInterrupt):
        tracker.finish(parent_id, "KILLED")
        raise
    finally:
        if lease is not None:
            lease.release()


def _run_study_run(
    spec: StudySpec,
    out: Path,
    t_start: float,
    study_plan: StudyPlan,
    tracker: Tracker,
    experiment_id: str,
    parent_id: str,
    *,
    address: str | None,
    num_cpus: int | None,
    verbose: bool,
    progress: Progress,
    proceed: bool,
) -> StudyRun:
    uri = tracker.uri
    replay_spool(tracker, out, experiment_id, parent_id, progress)
    done = tracker.finished_trial_keys(experiment_id)
    pending = [t for t in study_plan.trials if t.key not in done]
    earlier = {
        k: r
        for k, r in tracker.unfinished_trial_runs(experiment_id).items()
        if k in {t.key for t in pending}
    }
    skipped = len(study_plan.trials) - len(pending)
    progress(
        f"study {spec.name!r}: {len(study_plan.trials)} trials planned, {skipped} already "
        f"finished in MLflow ({redact_uri(uri)}), {len(pending)} to run"
        + (f" ({len(earlier)} continuing an interrupted run)" if earlier else "")
    )
    finished = failed = 0
    if pending:
        finished, failed = _tune(
            spec,
            study_plan,
            pending,
            out,
            tracker,
            experiment_id,
            parent_id,
            earlier,
            address=address,
            num_cpus=num_cpus,
            verbose=verbose,
            progress=progress,
            proceed=proceed,
        )
    tracker.finish(parent_id, "FAILED" if failed else "FINISHED")
    return StudyRun(
        out_dir=out,
        tracking_uri=uri,
        experiment_id=experiment_id,
        parent_run_id=parent_id,
        planned=len(study_plan.trials),
        skipped=skipped,
        finished=finished,
        failed=failed,
        seconds=time.perf_counter() - t_start,
    )


def _trial_name(trial) -> str:
    return f"tune-{trial.config['trial'][:16]}"


def _tune(
    spec,
    study_plan,
    pending,
    out,
    tracker,
    experiment_id,
    parent_id,
    earlier,
    *,
    address,
    num_cpus,
    verbose,
    progress,
    proceed,
) -> tuple[int, int]:
    from ray import tune

    if not verbose:  # Tune's default console output prints even at verbose=0
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # MLflow is the results store: Tune's own CSV/JSON/TensorBoard loggers would only duplicate
    # it (and choke on the batched epoch history); a driver callback that takes a second to write
    # a batch of epochs to SQLite is expected, not a bottleneck worth a warning.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")
    init_ray(address, num_cpus, verbose)
    import ray.data

    from bioscale.study import capacity

    if spec.budget is not None:  # the cluster now known, its accelerator prices the study
        cluster = capacity.Cluster.from_ray_nodes(address or "local", ray.nodes())
        est = capacity.estimate(capacity.total_flops(pending), spec.budget, cluster=cluster)
        capacity.enforce_budget(est, proceed)
        progress(f"compute: {est.describe()}")
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    concurrent = _concurrency(spec, address, progress)
    storage = storage_path(spec, out)
    name = (
        f"{spec.name}-"
        + hashlib.sha256("".join(sorted(t.key for t in pending)).encode()).hexdigest()[:10]
    )
    _clear(f"{storage}/{name}")  # an interrupted attempt at the same pending set: start clean
    runs = payloads(spec, study_plan, pending, storage, progress)
    # what the data kind prepared for every trial (a fitted preprocessing) is kept with the study
    files = kinds.get(spec.data.kind).artifacts(runs[0].prepared, Path(out)) if runs else []
    if files:
        tracker.log_artifacts(parent_id, files)
    writer = TrialWriter(tracker, experiment_id, parent_id, progress=progress)
    by_key = {p.key: p for p in runs}
    callback = _make_callback(writer, len(study_plan.trials), progress, earlier, by_key)
    tuner = tune.Tuner(
        # each trial's payload travels through the object store; Tune's grid is over the keys
        tune.with_resources(
            tune.with_parameters(_trial_fn, payloads=by_key), _trial_resources(spec)
        ),
        param_space={"trial": tune.grid_search(list(by_key))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrent,
            reuse_actors=spec.resources.direct,  # one-worker trials: no process start, no re-import
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[callback],
            verbose=1 if verbose else 0,
            # a one-worker trial trains in its Tune trial: Tune retries it (from its checkpoint,
            # CheckpointStore) as Ray Train retries a worker group
            failure_config=tune.FailureConfig(
                max_failures=spec.resources.max_failures if spec.resources.direct else 0
            ),
        ),
    )
    # Tune's end-of-run analysis looks for the JSON/CSV results its loggers would have written
    # and warns once per trial that they are missing; MLflow holds them, so that warning is noise
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # on Ctrl-C Tune suggests `Tuner.restore(...)`; bioscale's own message names `study resume`
    if not verbose:
        logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    try:
        tuner.fit()
    finally:  # finished, failed or interrupted: what MLflow has not taken yet is kept
        sys.stdout.flush()
        # Tune ends its run on Ctrl-C (SIGINT) and returns as if done: trials that reached
        # neither FINISHED nor FAILED were stopped, and their runs say so
        stopped = [p for p in runs if p.key not in callback.done]
        for p in stopped:
            if p.key in callback.opened:
                writer.finish(p.key, "KILLED")
        spooled = writer.close(spool_path(out), wait_s=spec.tracking.retry_seconds)
        if spooled:
            progress(
                f"MLflow ({redact_uri(tracker.uri)}) did not take {spooled} write(s); they are saved in "
                f"{spool_path(out)} and written by the next `bioscale study resume`"
            )
    if spooled:
        raise TrackingError(
            f"MLflow ({redact_uri(tracker.uri)}) was unreachable at the end of the study: {spooled} "
            f"write(s) are saved in {spool_path(out)}. Once the server is back, `bioscale study "
            "resume` writes them to their trials' runs and continues any unfinished trial."
        )
    if stopped:
        raise StudyInterrupted(
            finished=[callback.done[k] for k in callback.done],
            stopped=[p.describe for p in stopped if p.key in callback.opened],
            not_started=sum(p.key not in callback.opened for p in stopped),
            already_done=len(study_plan.trials) - len(pending),
        )
    return callback.finished, callback.failed


def _concurrency(spec, address: str | None, progress: Progress) -> int:
    """How many trials to run at once: ``resources.max_concurrent_trials``, lowered on a local
    instance to what its CPUs can place with room left for Ray Data (more trials than that do not
    fail, they starve each other's data tasks and hang; image trials stream their data and need a
    whole leftover CPU each, ``capacity.check_fit``). A cluster is only warned: its autoscaler may
    add the nodes."""
    import ray

    from bioscale.study import capacity

    res = spec.resources
    data_cpus = res.data_cpus_per_task
    streaming = kinds.get(spec.data.kind).streams
    if streaming:  # decoding tasks hold their CPUs for the whole trial
        data_cpus = max(data_cpus, spec.data.image.decode_cpus)
    cluster = capacity.Cluster.from_ray_nodes(address or "local", ray.nodes())
    report = capacity.check_fit(
        replace(res, data_cpus_per_task=data_cpus), cluster, streaming=streaming
    )
    wanted = res.max_concurrent_trials
    if report.concurrent_trials >= wanted:
        return wanted
    if address:
        for line in report.problems + report.notes:
            progress(f"warning: {line}")
        return wanted
    if report.concurrent_trials == 0:
        raise BioscaleError(
            "this machine's local Ray instance cannot run one trial: " + " ".join(report.problems)
        )
    progress(
        f"running {report.concurrent_trials} trial(s) at a time, not "
        f"resources.max_concurrent_trials={wanted}: that is what this machine's "
        f"{sum(n.cpus for n in cluster.nodes):g} CPUs place with CPU left for their Ray Data tasks"
    )
    return report.concurrent_trials


def _clear(location: str) -> None:
    """Delete a Tune experiment folder (local or ``s3://``/``gs://``) if it exists. Only Tune's
    bookkeeping of one attempt: each trial's Ray Train folder (its checkpoints) lives beside it,
    under the trial's stable name, and is kept so the trial can resume."""
    if "://" not in location:
        shutil.rmtree(location, ignore_errors=True)
        return
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(location)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
