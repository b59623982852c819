"""Tools that act on a study's finished trials: find a trial run and its final checkpoint, rebuild
the data it was trained and probed on, re-evaluate it into its own MLflow run (``bioscale
evaluate``) and visualise its class logits with MACO (``bioscale visualize``).

A finished trial is a FINISHED ``trial`` run of the study's MLflow experiment whose
``bioscale.trial_key`` the study file still plans (the plan gives its grid point and
``LoopConfig``); its weights are the last ``checkpoint_*/state.pt`` of its Ray Train folder,
``<storage: or <out>/ray_results>/trial-<key[:16]>``, loaded with ``weights_only``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from bioscale.data import kinds
from bioscale.errors import BioscaleError, ConfigError
from bioscale.eval.extract import STATE_FILE, evaluate_checkpoint
from bioscale.eval.visualize import (
    DEFAULT_SPECTRUM_IMAGES,
    VIS_DIR,
    Visualization,
    load_classifier,
    render_targets,
    resolve_targets,
    vis_folder,
    write_summary,
)
from bioscale.study.tracking import Tracker, open_tracker
from bioscale.uri import redact_uri

Progress = Callable[[str], None]

# ------------------------------------------------------------------------------ checkpoints


def trial_folder(out_dir: str | Path, trial_key: str, storage: str | None = None) -> str:
    """A trial's Ray Train folder (named by the runner): under the study's ``storage:`` (a path
    or an ``s3://``/``gs://`` URI) when it has one, else under ``<out>/ray_results``."""
    root = storage.rstrip("/") if storage else str(Path(out_dir) / "ray_results")
    return f"{root}/trial-{trial_key[:16]}"


def final_checkpoint(folder: str | Path, cache: str | Path | None = None) -> Path:
    """The last ``checkpoint_*`` folder of a trial (the final report's: best weights restored),
    as a local folder: one in object storage is downloaded into ``cache`` (a temporary folder
    by default) first.

    Raises:
        FileNotFoundError: naming the folder, when it holds no checkpoint.
    """
    import pyarrow.fs as pafs

    location = str(folder)
    fs, root = pafs.FileSystem.from_uri(location if "://" in location else str(Path(location)))
    info = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = sorted(i.base_name for i in info if i.type == pafs.FileType.Directory)
    found = [
        n
        for n in names
        if n.startswith("checkpoint_")
        and fs.get_file_info(f"{root}/{n}/{STATE_FILE}").type == pafs.FileType.File
    ]
    if not found:
        raise FileNotFoundError(
            f"no checkpoint_*/{STATE_FILE} under {location}: the trial's Ray Train folder is "
            "missing (another --out or storage:?) or the trial never reported its final checkpoint"
        )
    if "://" not in location:
        return Path(root) / found[-1]
    import tempfile

    local = Path(cache or tempfile.mkdtemp(prefix="bioscale-ckpt-")) / found[-1]
    local.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        f"{root}/{found[-1]}/{STATE_FILE}",
        str(local / STATE_FILE),
        source_filesystem=fs,
        destination_filesystem=pafs.LocalFileSystem(),
    )
    return local


# ------------------------------------------------------------------------------ finished trials


class FinishedTrials:
    """A study's FINISHED trial runs in its tracking store, matched to the trials its file plans,
    and the data they were trained and probed on: opened once for every trial a tool acts on.

    Attributes:
        spec: the ``StudySpec`` the trials ran with.
        out_dir: the study's output folder (absolute).
        manifest: the study's manifest (a synthetic screen is generated once, as the runner does).
        tracker: the study's ``Tracker`` (``open_tracker``).
        runs: ``{trial key: run id}`` of the FINISHED trial runs.
        has_experiment: whether the store holds the study's experiment at all.
    """

    def __init__(self, spec, out_dir: str | Path) -> None:
        from bioscale.study.runner import ensure_manifest

        self.spec = spec
        self.out_dir = Path(out_dir).resolve()
        self.manifest = ensure_manifest(spec, self.out_dir)
        self.tracker: Tracker = open_tracker(spec, self.out_dir)
        # read only: a tool on finished trials never creates the study's experiment
        exp = self.tracker.client.get_experiment_by_name(spec.name)
        self.has_experiment = exp is not None
        self.runs: dict[str, str] = (
            self.tracker.finished_trial_keys(exp.experiment_id) if exp is not None else {}
        )

    @cached_property
    def plan(self):
        """The study file's ``StudyPlan`` against its manifest."""
        from bioscale.study.plan import plan

        return plan(self.spec, self.manifest)

    @cached_property
    def trials(self) -> dict[str, Any]:
        """``{trial key: Trial}`` of every trial the study file plans."""
        return {t.key: t for t in self.plan.trials}

    @cached_property
    def index(self):
        """The manifest's ``SampleIndex`` (groups, roles, codes), as the planner loads it."""
        from bioscale.study.plan import load_index

        return load_index(self.spec, self.manifest)

    def select(self, run_ids: Iterable[str] | None, action: str) -> list[tuple[str, Any]]:
        """``(run id, Trial)`` of ``run_ids`` (default: every finished trial run), in trial-key
        order.

        Raises:
            BioscaleError: naming the study and its store, for a run that is not one of its
                finished trial runs; and for a run whose trial the study file no longer plans,
                saying to ``action`` it ("evaluate", "visualise") with the file it ran with.
        """
        finished = set(self.runs.values())
        wanted = set(run_ids) if run_ids else finished
        unknown = wanted - finished
        if unknown:
            known = ", ".join(sorted(finished)[:8]) + (" ..." if len(finished) > 8 else "")
            if not self.has_experiment:
                known = "none (no MLflow experiment of that name: run the study first, or give "
                known += "the --out it ran with)"
            raise BioscaleError(
                f"no FINISHED trial run {', '.join(sorted(unknown))} in study "
                f"{self.spec.name!r} ({redact_uri(self.tracker.uri)}); its finished trial runs: "
                f"{known or 'none'}"
            )
        chosen = []
        for key, run_id in sorted(self.runs.items()):
            if run_id not in wanted:
                continue
            trial = self.trials.get(key)
            if trial is None:
                raise BioscaleError(
                    f"trial run {run_id} was trained from another grid, data or training config "
                    f"than study {self.spec.name!r}'s file; {action} it with the study file it "
                    "ran with"
                )
            chosen.append((run_id, trial))
        return chosen

    def trial(self, run_id: str, action: str):
        """The planned ``Trial`` of one finished trial run (errors as ``select``)."""
        return self.select([run_id], action)[0][1]

    def checkpoint(self, run_id: str, trial) -> Path:
        """The trial's final checkpoint folder (fetched when ``storage:`` is object storage).

        Raises:
            BioscaleError: naming the run and the folder, when it holds no checkpoint.
        """
        try:
            return final_checkpoint(trial_folder(self.out_dir, trial.key, self.spec.storage))
        except FileNotFoundError as err:
            raise BioscaleError(f"run {run_id}: {err}") from None

    def classes(self, trial, head: str = "y") -> list[str] | None:
        """The trial's label vocabulary of ``head`` (class index → label), rebuilt from its diet
        as the planner builds it (``bioscale.study.plan.trial_data``); ``None`` when the
        objective has no such head or the vocabulary does not match the head's size."""
        from bioscale.data.diets import select
        from bioscale.objectives import registry as objectives

        objective = objectives.build(trial.point.objective.name, trial.point.objective.params)
        rows = select(self.index, trial.point.diet, objective.train_groups()).rows
        names = objective.label_space(self.index, rows).classes.get(head)
        wanted = trial.loop.num_classes.get(head)
        return names if names is not None and len(names) == wanted else None

    def probe_dataset(self):
        """The Ray Dataset of the probe rows (the fixed probe sets: identical for every trial),
        decoded as the trials decode them. Needs Ray initialised."""
        from bioscale.objectives.base import Targets
        from bioscale.study.datasets import trial_datasets
        from bioscale.study.plan import TrialData, probe_targets

        probe = probe_targets(self.index)
        empty = Targets(rows=probe.rows[:0], columns={k: v[:0] for k, v in probe.columns.items()})
        data = TrialData(train=empty, val=empty, probe=probe)
        # what the study's driver prepared for its trials (a fitted preprocessing), as it kept it
        prepared = kinds.get(self.spec.data.kind).load_prepared(self.spec.data, self.out_dir)
        return trial_datasets(self.spec, str(self.manifest), self.index, data, prepared=prepared)[
            "probe"
        ]


# ------------------------------------------------------------------------------ re-evaluation


def with_eval_tasks(spec, tasks: Sequence[str], where: str = "study with tasks"):
    """``spec`` with ``eval:`` and ``probe.tasks`` set to ``tasks`` (validated as a study file
    is; ``where`` names it in errors)."""
    from bioscale.study.spec import StudySpec

    data = spec.to_dict()
    data["eval"], data["probe"]["tasks"] = list(tasks), list(tasks)
    return StudySpec.from_dict(data, where=where)


def reevaluate(
    tracker: Tracker,
    run_id: str,
    *,
    probe_dataset,
    loop_config: Any,
    checkpoint: str | Path,
    cfg: Any,
    pool_size: int = 1,
    num_cpus: float = 1.0,
) -> dict[str, float]:
    """Embed a finished trial's probe rows from its checkpoint, run ``cfg.tasks`` and log the
    metrics into the *same* MLflow run (at the step of its final metrics; no new run).

    Args:
        tracker: the study's ``Tracker``.
        run_id: the trial's MLflow run.
        probe_dataset: Ray Dataset of the probe rows (``x`` + code columns).
        loop_config: the trial's ``LoopConfig`` (rebuilds the network).
        checkpoint: the trial's final checkpoint folder.
        cfg: ``ProbeConfig`` with the tasks to run.
        pool_size: embedding actors.
        num_cpus: CPUs per embedding actor.

    Raises:
        ConfigError: when the run was probed with another ``probe.selection``.
    """
    from bioscale.eval.layer_search import CURVES_ARTIFACT

    run = tracker.client.get_run(run_id)
    logged = run.data.params.get("probe_selection", "last")  # runs from before layer search
    if logged != cfg.selection:
        raise ConfigError(
            f"run {run_id} was probed with probe.selection {logged!r}; re-evaluating it with "
            f"{cfg.selection!r} would log one kind of metric under the other's param. Run the "
            "study with the new selection instead (a new trial key)."
        )
    metrics, curves = evaluate_checkpoint(
        probe_dataset,
        loop_config=loop_config,
        checkpoint=checkpoint,
        cfg=cfg,
        pool_size=pool_size,
        num_cpus=num_cpus,
    )
    step = int(run.data.metrics.get("train/epochs", 0))
    tracker.log_metrics(run_id, metrics, step=step)
    if curves is not None:
        tracker.log_text(run_id, json.dumps(curves), CURVES_ARTIFACT)
    return metrics


def reevaluate_study(
    spec,
    out_dir: str | Path,
    *,
    run_ids: Iterable[str] | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    verbose: bool = False,
    actors: int = 1,
    progress: Progress = print,
) -> dict[str, dict[str, float]]:
    """``bioscale evaluate``: re-evaluate finished trials of ``spec``'s study (``run_ids``, default
    all) from their final checkpoints into their own MLflow runs, one ``progress`` line per
    trial and per finite metric. Returns ``{run id: metrics}``.

    Args:
        spec: the ``StudySpec`` the trials ran with (its ``probe:`` says what to compute;
            ``with_eval_tasks`` picks other tasks).
        out_dir: the study's output folder.
        run_ids: MLflow run ids of trials to evaluate.
        address: a Ray cluster to join (default: start a local instance).
        num_cpus: logical CPUs of a local Ray instance.
        verbose: show Ray's logs.
        actors: embedding actors (Ray Data pool).

    Raises:
        BioscaleError: an unknown run or one the study file no longer plans (before any
            embedding); a trial without its final checkpoint.
    """
    from bioscale.study.runner import init_ray

    finished = FinishedTrials(spec, out_dir)
    chosen = finished.select(run_ids, action="evaluate")
    init_ray(address, num_cpus, verbose)
    dataset = finished.probe_dataset()
    results: dict[str, dict[str, float]] = {}
    for run_id, trial in chosen:
        metrics = reevaluate(
            finished.tracker,
            run_id,
            probe_dataset=dataset,
            loop_config=trial.loop,
            checkpoint=finished.checkpoint(run_id, trial),
            cfg=finished.plan.probe,  # the study's evaluation, narrowed to this manifest
            pool_size=actors,
        )
        shown = {k: v for k, v in metrics.items() if np.isfinite(v)}
        progress(f"{run_id} ({trial.point.describe()}): {len(shown)} metrics logged")
        for name in sorted(shown):
            progress(f"  {name} = {shown[name]:.4f}")
        results[run_id] = metrics
    return results


# ------------------------------------------------------------------------------ visualisation


def data_spectrum(spec, manifest: Path, size: int, images: int):
    """(C, size, size//2+1) mean amplitude spectrum of up to ``images`` manifest images decoded
    as the trials decode them (``DataKind.sample_images``); returns it and the number used."""
    from bioscale.eval.maco import mean_amplitude_spectrum

    decoded = kinds.get(spec.data.kind).sample_images(spec.data, manifest, size, images)
    total, count = None, 0
    for x in decoded:
        if len(x):
            part = mean_amplitude_spectrum(x, size) * len(x)
            total = part if total is None else total + part
            count += len(x)
    if total is None:
        raise BioscaleError(f"no readable image among the first rows of {manifest}")
    return total / count, count


def visualize_run(
    spec,
    out_dir: str | Path,
    run_id: str,
    *,
    cfg=None,
    targets: Sequence[str] | None = None,
    images: int = DEFAULT_SPECTRUM_IMAGES,
    device: str = "auto",
    checkpoint: str | Path | None = None,
    progress: Progress = print,
) -> Visualization:
    """Visualise the class logits of one finished trial of ``spec``'s study and log the PNGs to
    its MLflow run.

    The trial's network is rebuilt from its final checkpoint; the fixed magnitude is the mean
    amplitude spectrum of up to ``images`` manifest images decoded as the trials decode them;
    ``<out>/visualize/<run_id>/`` receives the PNGs and ``maco.json``
    (``bioscale.eval.visualize``), logged as the run's ``visualize/`` artifacts (same run).

    Args:
        spec: the ``StudySpec`` the trial ran with.
        out_dir: the study's output folder (tracking store, Ray results, ``visualize/``).
        run_id: the trial's MLflow run.
        cfg: ``MacoConfig`` (default: the published settings).
        targets: class labels or indices of the ``y`` head; default the first
            ``DEFAULT_TARGETS`` classes.
        images: manifest images the magnitude spectrum is averaged over, at most.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).
        checkpoint: the trial's checkpoint folder; default its final checkpoint in the study's
            Ray results.
        progress: receives one line per step.

    Raises:
        BioscaleError: a profile study, an unknown run, a run without a classifier head, a
            missing checkpoint.
    """
    import torch

    from bioscale.eval.maco import DYE_COLOURS, MacoConfig

    kind = kinds.get(spec.data.kind)
    if not kind.images:
        raise BioscaleError(
            f"study {spec.name!r} trains on {kind.name} (data.kind {kind.name}): MACO optimises "
            f"an image, so it needs image rungs (data kinds with images: "
            f"{', '.join(n for n in kinds.names() if kinds.get(n).images)})"
        )
    cfg = cfg or MacoConfig()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    finished = FinishedTrials(spec, out_dir)
    out_dir, manifest = finished.out_dir, finished.manifest
    channels = kind.channels(spec.data, manifest)  # Cell Painting dyes, composited in colour
    dyes = list(channels) if channels is not None else None
    if dyes is not None:
        unknown = [d for d in dyes if d not in DYE_COLOURS]
        if unknown:
            raise BioscaleError(
                f"no composite colour for dye(s) {', '.join(unknown)}; bioscale colours "
                f"{', '.join(DYE_COLOURS)} (set data.image.dyes to those)"
            )
    trial = finished.trial(run_id, action="visualise")
    weights = Path(checkpoint) if checkpoint is not None else finished.checkpoint(run_id, trial)
    try:
        _, logits = load_classifier(trial.loop, weights, device)
    except FileNotFoundError as err:
        raise BioscaleError(f"run {run_id}: {err}") from None
    except BioscaleError as err:
        raise BioscaleError(f"run {run_id} ({trial.point.describe()}): {err}") from None
    names = finished.classes(trial, "y")
    chosen = resolve_targets(targets, names, trial.loop.num_classes["y"])

    t0 = time.perf_counter()
    magnitude, used = data_spectrum(spec, manifest, cfg.image_size, images)
    progress(
        f"mean amplitude spectrum of {used} image(s) of {manifest} at {cfg.image_size} px "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    folder = vis_folder(out_dir, run_id)
    if folder.exists():
        shutil.rmtree(folder)  # one run's visualisations are those of its last `visualize`
    folder.mkdir(parents=True)
    input_size = trial.loop.input_shape[-1]
    progress(
        f"run {run_id} ({trial.point.describe()}): {len(chosen)} target(s), {cfg.steps} steps, "
        f"{cfg.crops} crops of {input_size} px, on {device}"
    )
    results = render_targets(
        logits,
        magnitude,
        chosen,
        names,
        folder=folder,
        input_size=input_size,
        dyes=dyes,
        cfg=cfg,
        device=device,
        progress=progress,
    )
    about = {
        "run_id": run_id,
        "study": spec.name,
        "trial": trial.point.describe(),
        "rung": trial.point.rung,
        "objective": trial.point.objective.label(),
    }
    write_summary(
        folder,
        results,
        about=about,
        input_size=input_size,
        dyes=dyes,
        spectrum_images=used,
        cfg=cfg,
    )
    finished.tracker.client.log_artifacts(run_id, str(folder), artifact_path=VIS_DIR)
    progress(f"wrote {folder} and logged it to run {run_id} as artifacts {VIS_DIR}/")
    return Visualization(run_id=run_id, folder=folder, targets=results, spectrum_images=used)
