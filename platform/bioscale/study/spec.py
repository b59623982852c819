"""The study YAML as typed config, validated once at load (unknown keys and names fail early).

A study is a union of grids (``grids:``), each a product of ``rung × diet × objective``, times
``seeds``, minus ``exclude``. See ``jobs/studies/demo.yaml`` for a commented example.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from bioscale.config import from_mapping, to_mapping
from bioscale.data import kinds
from bioscale.data.diets import Diet
from bioscale.data.image_config import ImageConfig
from bioscale.data.natural import MapConfig
from bioscale.data.preprocess import PreprocessConfig
from bioscale.data.splits import SplitConfig
from bioscale.data.synth import SynthProfilesConfig
from bioscale.errors import ConfigError
from bioscale.eval.config import ProbeConfig
from bioscale.eval.trial_alignment import AlignmentConfig
from bioscale.objectives.base import WeightDecayMode
from bioscale.train.rules import Budget, EarlyStopping, LRRule
from bioscale.train.runtime import DdpConfig, FeedConfig, WorkerRuntime

#: A study name: the MLflow experiment, the Ray Tune run and output folders are named after it,
#: and MLflow search filters quote it, so it holds no quote, slash, space or control character.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}")


@dataclass(frozen=True, kw_only=True)
class ObjectiveSpec:
    """An objective as the YAML names it: ``ibp`` or ``{name: ibp, params: {...}}``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        """The ``objective`` param: the name, with params in canonical JSON when there are any."""
        if not self.params:
            return self.name
        return f"{self.name}{json.dumps(self.params, sort_keys=True, separators=(',', ':'))}"


@dataclass(frozen=True, kw_only=True)
class ImageSpec(ImageConfig):
    """A study's ``data.image``: how image sites become tensors (``bioscale.data.images.
    ImageConfig``: dyes, crop, crops_per_site, downsample, normalise, illumination, bad_samples,
    max_skipped) and how a trial schedules decoding: Ray Data tasks of ``decode_cpus`` logical
    CPUs each, ``decode_batch_size`` sites at a time. Which fields apply depends on the data
    kind (``bioscale.data.kinds``: ``natural`` reads crop and the decode settings only)."""

    decode_batch_size: int = 16
    decode_cpus: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decode_batch_size < 1 or self.decode_cpus <= 0:
            raise ConfigError("data.image: decode_batch_size >= 1 and decode_cpus > 0")


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Where the samples come from: a manifest, or a synthetic screen generated into the output
    folder. ``kind`` says what a sample is: a well profile or a Cell Painting image site."""

    #: what a sample is: a registered data kind (``bioscale.data.kinds``: profiles,
    #: cellpainting, natural, video)
    kind: str = "profiles"
    manifest: str | None = None
    synthetic: SynthProfilesConfig | None = None
    splits: SplitConfig = field(default_factory=SplitConfig)
    image: ImageSpec = field(default_factory=ImageSpec)
    #: how natural images' human maps are blurred (``bioscale.data.natural.MapConfig``; default
    #: ``release``, the ClickMe release's exact preprocessing); part of the trial key
    maps: MapConfig = field(default_factory=MapConfig)
    #: profiles holding NaN/±Inf features: ``error`` refuses the manifest at plan time, naming
    #: them; ``drop`` leaves those samples out of every role (part of the trial key).
    non_finite: Literal["error", "drop"] = "error"
    #: profiles: per-plate normalisation, feature selection, clipping, PCA whitening before any
    #: model sees the features (``bioscale.data.preprocess``; part of the trial key when set)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.synthetic is None):
            raise ConfigError(
                "data: set exactly one of 'manifest' (a Parquet manifest) or "
                "'synthetic' (generate a synthetic screen)"
            )
        try:
            kind = kinds.get(self.kind)
        except ConfigError as err:
            raise ConfigError(f"data.kind: {err}") from None
        kind.validate(self)  # which of the settings below apply to this kind of sample
        if kind.default_splits is not None and self.splits == SplitConfig():
            object.__setattr__(self, "splits", kind.default_splits)  # e.g. videos: no probe wells
        if not kind.probes:  # no probes run on this data: probe roles would only take samples
            object.__setattr__(
                self,
                "splits",
                replace(self.splits, probe_train=0, probe_val=0, probe_test=0),
            )


@dataclass(frozen=True, kw_only=True)
class GridSpec:
    """One product of axes; every list needs at least one entry."""

    rung: list[str]
    diet: list[Diet]
    objective: list[ObjectiveSpec | str]
    #: this grid's training seeds (default: the study's ``seeds``); ``bioscale study suggest``
    #: writes one to add a seed at a measured point
    seeds: list[int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "objective",
            [ObjectiveSpec(name=o) if isinstance(o, str) else o for o in self.objective],
        )
        for axis in ("rung", "diet", "objective"):
            if not getattr(self, axis):
                raise ConfigError(f"grids: axis {axis!r} is empty")
        if self.seeds is not None:
            if not self.seeds or any(s < 0 for s in self.seeds):
                raise ConfigError(
                    f"grids: seeds {self.seeds!r} must be a non-empty list of integers ≥ 0 "
                    "(omit it to use the study's seeds)"
                )
            if len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(f"grids: seeds {self.seeds!r} repeat a seed")


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    budget: Budget = field(default_factory=lambda: Budget(epochs=20))
    batch_size: int = 256
    lr: LRRule = field(default_factory=LRRule)
    weight_decay: float = 1.0e-6
    # coupled: an L2 penalty on the loss; decoupled: AdamW's (Pheno-CA); objectives may prescribe
    # their own (harmonized: coupled 1e-5, as published)
    weight_decay_mode: WeightDecayMode = "decoupled"
    early_stopping: EarlyStopping | None = None
    checkpoint_every: int = 5
    # bf16 autocast: auto = on where the workers' device computes bf16 natively (GPUs; CPUs with
    # AVX512-BF16/AMX), else fp32. channels_last applies to image rungs; compile to torch.compile.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    compile: bool = False
    # how workers run, not what they learn (not part of trial keys): DDP's gradient buckets with
    # several workers; prefetch and pinned host memory for the host→device batch feed
    ddp: DdpConfig = field(default_factory=DdpConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ConfigError("train.batch_size must be >= 2 (BatchNorm needs two samples)")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.checkpoint_every < 0:
            raise ConfigError(
                f"train.checkpoint_every must be >= 0 (0: only at the end), got "
                f"{self.checkpoint_every!r}"
            )

    def worker_runtime(self) -> WorkerRuntime:
        """What ``bioscale.train.ray_worker.train_worker`` takes as ``runtime``."""
        return WorkerRuntime(ddp=self.ddp, feed=self.feed)


@dataclass(frozen=True, kw_only=True)
class ResourceSpec:
    """Per-trial resources and concurrency. ``batch_size`` is global: each of the
    ``workers_per_trial`` workers takes ``batch_size // workers_per_trial``."""

    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_concurrent_trials: int = 2
    data_cpus_per_task: float = 0.25
    max_failures: int = 0
    #: how a trial's workers are placed on nodes (Ray placement strategies): PACK fills nodes,
    #: SPREAD puts workers on different nodes where it can, STRICT_* insist.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    #: how a trial trains: ``auto`` runs a one-worker trial straight in its Tune trial's process
    #: (no Ray Train worker group: seconds less fixed cost per trial) and a multi-worker trial as
    #: a Ray Train worker group; ``ray_train`` always starts the worker group
    trial_runner: Literal["auto", "ray_train"] = "auto"

    @property
    def direct(self) -> bool:
        """One-worker trials train in their Tune trial's own process."""
        return self.trial_runner == "auto" and self.workers_per_trial == 1

    def __post_init__(self) -> None:
        if self.workers_per_trial < 1 or self.max_concurrent_trials < 1:
            raise ConfigError("resources: workers_per_trial and max_concurrent_trials must be >= 1")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0 or self.max_failures < -1:
            raise ConfigError(
                "resources: cpus_per_worker and gpus_per_worker must be >= 0, max_failures >= -1 "
                "(-1: retry forever)"
            )


@dataclass(frozen=True, kw_only=True)
class TrackingSpec:
    """``uri: null`` → SQLite in the output folder; or a tracking server (``http://mlflow:5000``)."""

    uri: str | None = None
    #: how long a write to an unreachable tracking server is retried (with backoff) before the
    #: study fails; metrics are never dropped silently.
    retry_seconds: float = 120.0


@dataclass(frozen=True, kw_only=True)
class AnalysisSpec:
    """How the study's report fits its curves (``study run``, ``study report``, ``demo``).

    ``law``: the scaling law of every one-axis curve (``bioscale.scaling.laws.LAWS``: ``power``,
    the saturating E + A·x^(−α); ``pure_power`` without the floor E, for curves too short to
    identify one; ``log_linear``; ``m4``; ...), or ``auto`` (per curve, the law with the best
    backtest on its own points). ``metric``: the column the report fits (default: the data's
    primary metric, e.g. MoA top-1 on novel compounds)."""

    law: str = "power"
    metric: str | None = None

    def __post_init__(self) -> None:
        from bioscale.scaling.laws import LAWS
        from bioscale.scaling.selection import AUTO

        if self.law != AUTO and self.law not in LAWS.names():
            raise ConfigError(
                f"analysis.law: unknown scaling law {self.law!r}; choose one of "
                f"{', '.join([*LAWS.names(), AUTO])}"
            )
        if self.law != AUTO and LAWS.get(self.law).axes != 1:
            raise ConfigError(
                f"analysis.law: {self.law!r} is a joint (N, D) law; the report fits one-axis "
                "curves: choose a one-axis law (fit joint laws with `bioscale fit --axis N,D`)"
            )


@dataclass(frozen=True, kw_only=True)
class ComputeBudget:
    """A cap on a study's accelerator time, checked by ``bioscale study plan`` and ``run``.

    GPU-hours = total training FLOPs / (device peak FLOP/s × ``mfu``) / 3600. ``device`` names a
    row of ``bioscale.study.capacity.DEVICE_PEAK_TFLOPS`` (default: the accelerator the cluster
    reports); ``peak_tflops`` overrides the table. ``mfu`` is the model-FLOPs utilisation assumed
    (0.3 is typical of well-fed mid-size models; small models reach less).
    """

    gpu_hours: float
    device: str | None = None
    peak_tflops: float | None = None
    mfu: float = 0.3

    def __post_init__(self) -> None:
        if self.gpu_hours <= 0 or not 0 < self.mfu <= 1:
            raise ConfigError("budget: gpu_hours must be > 0 and mfu in (0, 1]")


@dataclass(frozen=True, kw_only=True)
class StudySpec:
    name: str
    data: DataSpec
    grids: list[GridSpec]
    seeds: list[int] = field(default_factory=lambda: [0])
    exclude: list[dict[str, Any]] = field(default_factory=list)
    train: TrainSpec = field(default_factory=TrainSpec)
    #: evaluation tasks, checked against the one registry of them (``bioscale.eval.config.TASKS``);
    #: omitted, every task that applies to the data kind runs (``genetic`` only when the manifest
    #: has genetic perturbations: ``bioscale study plan`` checks the manifest)
    eval: list[str] | None = None
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    #: biological alignment beside accuracy, run by every trial after its probes
    #: (``bioscale.eval.trial_alignment``); ``None``: none.
    alignment: AlignmentConfig | None = None
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    #: how the report fits the study's curves (law, metric)
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    budget: ComputeBudget | None = None
    #: Ray Train/Tune storage (checkpoints): a folder every node shares, or s3:// / gs://;
    #: default ``<out>/ray_results``.
    storage: str | None = None

    def __post_init__(self) -> None:
        if not STUDY_NAME.fullmatch(self.name):
            raise ConfigError(
                f"name: {self.name!r} is not a study name: use letters, digits and . _ - + = "
                "(it names the MLflow experiment, the Ray run and folders; quotes, slashes and "
                "spaces are not allowed)"
            )
        if not self.grids:
            raise ConfigError("grids: a study needs at least one grid")
        _validate_names(self)
        _resolve_eval(self)
        _check_probe_layers(self)
        _check_alignment_kind(self)
        _ceiling_for_maps(self)
        allowed = {"rung", "diet", "objective", "seed"}
        for i, rule in enumerate(self.exclude):
            bad = set(rule) - allowed
            if bad:
                raise ConfigError(
                    f"exclude[{i}]: unknown key {sorted(bad)[0]!r}; allowed keys: "
                    f"{', '.join(sorted(allowed))}"
                )

    @classmethod
    def from_dict(cls, data: Any, where: str = "study") -> StudySpec:
        return from_mapping(cls, data, where)

    @classmethod
    def load(cls, path: str | Path) -> StudySpec:
        """Read and validate a study YAML."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"study file {path} does not exist") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"study file {path} is not valid YAML: {err}") from err
        return cls.from_dict(data, where=path.name)

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self)

    def sha(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _validate_names(spec: StudySpec) -> None:
    """Unknown rungs and objectives (and bad objective params) fail here, before any compute."""
    from bioscale.models.ladder import get_rung
    from bioscale.objectives import registry as objectives

    for g, grid in enumerate(spec.grids):
        for r, rung in enumerate(grid.rung):
            try:
                get_rung(rung)
            except ConfigError as err:
                raise ConfigError(f"grids[{g}].rung[{r}]: {err}") from None
        for o, obj in enumerate(grid.objective):
            objectives.build(obj.name, obj.params, where=f"grids[{g}].objective[{o}]")
            _check_objective_applies(spec, obj.name, where=f"grids[{g}].objective[{o}]")


def _check_objective_applies(spec: StudySpec, name: str, where: str) -> None:
    """An objective whose data needs (``Objective.needs``) the kind does not provide is refused
    at load, naming the objectives that do apply."""
    from bioscale.objectives import registry as objectives

    provides = kinds.get(spec.data.kind).provides
    missing = objectives.get(name).needs - provides
    if not missing:
        return
    fit = [n for n in objectives.names() if objectives.get(n).needs <= provides]
    raise ConfigError(
        f"{where}: objective {name!r} does not apply to data.kind {spec.data.kind!r}: it needs "
        f"{', '.join(sorted(missing))}, which that data does not carry (it provides "
        f"{', '.join(sorted(provides))}); objectives for this data: {', '.join(fit) or 'none'}"
    )


def _resolve_eval(spec: StudySpec) -> None:
    """``eval:`` → ``probe.tasks``: known, unique, applicable to the data kind (omitted: every
    task that applies)."""
    from dataclasses import replace

    from bioscale.eval.tasks import TASKS, default_tasks

    if spec.eval is None:
        # every task the kind's data can feed; plan narrows them to what the manifest holds
        tasks = default_tasks(kinds.get(spec.data.kind).provides)
    else:
        tasks = tuple(spec.eval)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ConfigError(f"eval: list each task once, at least one; got {list(tasks)}")
        for i, name in enumerate(tasks):
            try:
                task = TASKS.get(name)
            except ConfigError as err:
                raise ConfigError(f"eval[{i}]: {err}") from None
            if not task.needs <= kinds.get(spec.data.kind).provides:
                raise ConfigError(
                    f"eval: task {name!r} does not apply to data.kind {spec.data.kind!r} "
                    f"(it needs {task.requires})"
                )
    if spec.probe.tasks not in (ProbeConfig().tasks, tasks):
        raise ConfigError(
            "probe.tasks is set from the study's 'eval:' list; choose tasks there "
            f"(eval gives {list(tasks)}, probe.tasks {list(spec.probe.tasks)})"
        )
    object.__setattr__(spec, "probe", replace(spec.probe, tasks=tasks))


def _ceiling_for_maps(spec: StudySpec) -> None:
    """ClickMe's human ceiling holds only for natural-image maps blurred as the ClickMe release
    blurs them (``data.maps.blur: release``); otherwise trials log the raw ρ and no
    ``align/score`` (``AlignmentConfig.for_maps`` warns)."""
    if spec.alignment is not None:
        human_maps = "maps" in kinds.get(spec.data.kind).settings  # ClickMe-style human maps
        release = human_maps and spec.data.maps.blur == "release"
        object.__setattr__(spec, "alignment", spec.alignment.for_maps(release=release))


def _check_alignment_kind(spec: StudySpec) -> None:
    """``alignment:`` evaluations that cannot apply to the study's data kind fail at load."""
    if spec.alignment is None:
        return
    kind = kinds.get(spec.data.kind)
    for name in spec.alignment.enabled():
        refusal = kind.alignment_refusal(name)
        if refusal is not None:
            raise ConfigError(refusal)


def _check_probe_layers(spec: StudySpec) -> None:
    """``probe.layers`` (layer search) names layers every rung of the study has: checked on
    parameter-free (meta-device) builds, before any compute."""
    if spec.probe.selection != "search" or spec.probe.layers == "all":
        return
    from bioscale.models.layers import pick_layers
    from bioscale.train.measure import layer_names

    # layer names depend on neither the input size nor the channel count: any valid shape will do
    shape = kinds.get(spec.data.kind).any_sample_shape(spec.data)
    for rung in sorted({r for grid in spec.grids for r in grid.rung}):
        try:
            pick_layers(layer_names(rung, shape), spec.probe.layers)
        except ValueError as err:
            raise ConfigError(f"probe.layers, rung {rung}: {err}") from None
