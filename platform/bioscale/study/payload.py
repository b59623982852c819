"""What one Tune trial receives: a typed, frozen payload the driver resolved, so a trial neither
re-parses nor re-validates the study YAML and opens the manifest once (for its index)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bioscale.data import kinds
from bioscale.data.kinds import DataCpus, TrialSets
from bioscale.eval.final import FinalConfig
from bioscale.eval.trial_alignment import MAP_EVALUATIONS
from bioscale.study.plan import GridPoint, StudyPlan, Trial
from bioscale.study.spec import DataSpec, ResourceSpec, StudySpec
from bioscale.train.config import LoopConfig
from bioscale.train.runtime import WorkerRuntime


@dataclass(frozen=True, kw_only=True)
class TrialPayload:
    """One grid point, resolved: what its Tune trial needs to build its datasets and trainer."""

    key: str
    position: int  # 0-based index in the study's plan
    name: str  # the MLflow run name
    describe: str  # one line for the console
    point: GridPoint
    loop: LoopConfig
    final: FinalConfig  # what the final-evaluation hook runs after training
    params: dict[str, Any]  # the trial run's MLflow params
    data: DataSpec
    resources: ResourceSpec
    runtime: WorkerRuntime  # DDP buckets, batch feed
    batch_size: int  # global: each worker takes batch_size // workers_per_trial
    #: the trial's ``alignment:`` reads human maps (saliency, adversarial): it needs the
    #: held-out probe-test images as a dataset of their own
    reads_maps: bool
    manifest: str
    storage: str
    #: what the data kind computed from the whole manifest once for every trial
    #: (``DataKind.prepare``: e.g. plate-control normalisation bounds)
    prepared: Any = None

    @property
    def kind(self) -> kinds.DataKind:
        return kinds.get(self.data.kind)

    @property
    def batch_size_per_worker(self) -> int:
        return max(2, self.batch_size // self.resources.workers_per_trial)

    def datasets(self, index: Any, data: Any, skips: Any = None) -> dict[str, Any]:
        """The trial's Ray Datasets from its selection (``study.plan.trial_data``)."""
        return build_datasets(
            self.data,
            self.resources,
            self.reads_maps,
            self.manifest,
            index,
            data,
            skips=skips,
            prepared=self.prepared,
        )


def build_datasets(
    data_spec: DataSpec,
    resources: ResourceSpec,
    maps: bool,
    manifest: str,
    index: Any,
    data: Any,
    skips: Any = None,
    prepared: Any = None,
) -> dict[str, Any]:
    """A trial's Ray Datasets, as its data kind builds them: ``train``, ``val``, ``probe`` and,
    when the trial's alignment reads human maps (``maps``), ``held_out`` (the probe-test images).
    ``prepared``: the kind's study-wide state (``DataKind.prepare``), computed here if ``None``
    and the kind has any (so a single trial's datasets can be rebuilt after the fact)."""
    from ray.data import DataContext

    # the datasets' rows come out in the order their tasks were given, not the order they
    # finished in: a trial's epochs (a seeded shuffle of that order) are then the same on every
    # run, and so are its numbers
    DataContext.get_current().execution_options.preserve_order = True
    sets = TrialSets(
        train=data.train,
        val=data.val,
        probe=data.probe,
        held_out=data.held_out if maps else None,
    )
    cpus = DataCpus(select=resources.data_cpus_per_task, decode=data_spec.image.decode_cpus)
    kind = kinds.get(data_spec.kind)
    if prepared is None:
        prepared = kind.prepare(data_spec, manifest)
    return kind.datasets(data_spec, manifest, index, sets, cpus, skips=skips, prepared=prepared)


def worker_runtime(spec: StudySpec) -> WorkerRuntime:
    """The workers' DDP and feed settings; kinds whose input streams (images) never cache an
    epoch (each epoch draws fresh random crops)."""
    runtime = spec.train.worker_runtime()
    if not kinds.get(spec.data.kind).streams:
        return runtime
    return replace(runtime, feed=replace(runtime.feed, cache_mib=0))


def reads_maps(spec: StudySpec) -> bool:
    """Whether the study's alignment evaluations read human maps (saliency, adversarial)."""
    return spec.alignment is not None and bool(set(MAP_EVALUATIONS) & set(spec.alignment.enabled()))


def payloads(
    spec: StudySpec,
    study_plan: StudyPlan,
    trials: list[Trial],
    storage: str,
    progress: Any = None,
):
    """One ``TrialPayload`` per trial to run; the data kind's study-wide state is computed here,
    once (``progress(message)`` says so when it reads samples)."""
    runtime = worker_runtime(spec)
    maps = reads_maps(spec)
    kind = kinds.get(spec.data.kind)
    say = progress or (lambda message: None)

    def step(done: int, total: int) -> None:  # about ten lines however long it takes
        if done == total or done % max(1, total // 10) == 0:
            say(f"  preparing the {spec.data.kind} data for every trial: {done}/{total}")

    prepared = kind.prepare(spec.data, study_plan.manifest.path, step) if trials else None
    return [
        TrialPayload(
            key=t.key,
            position=t.index,
            name=f"{t.params['rung']}|{t.params['objective']}|{t.params['diet']}|"
            f"seed{t.params['seed']}",
            describe=t.point.describe(),
            point=t.point,
            loop=t.loop,
            final=t.final,
            params=t.params,
            data=spec.data,
            resources=spec.resources,
            runtime=runtime,
            batch_size=spec.train.batch_size,
            reads_maps=maps,
            manifest=study_plan.manifest.path,
            storage=str(storage),
            prepared=prepared,
        )
        for t in trials
    ]
