"""From a study spec and its manifest to fully resolved trials: grid expansion, de-duplication,
diets, label spaces, sizes, FLOPs and trial keys. ``bioscale study plan`` prints this; the Tune
driver runs it. Nothing here starts Ray.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import subprocess
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from bioscale.config import from_mapping, to_mapping
from bioscale.data import kinds
from bioscale.data import manifest as mf
from bioscale.data.diets import Diet, select
from bioscale.data.splits import ROLES_VERSION, SampleIndex
from bioscale.errors import ConfigError
from bioscale.eval.config import ProbeConfig
from bioscale.eval.final import FinalConfig
from bioscale.eval.trial_alignment import (
    MAP_EVALUATIONS,
    AlignmentConfig,
    check_data,
    classifier_refusal,
)
from bioscale.models.features import is_trainless
from bioscale.models.ladder import get_rung
from bioscale.objectives import registry as objectives
from bioscale.objectives.base import Objective, Targets
from bioscale.study.spec import ObjectiveSpec, StudySpec
from bioscale.train import measure
from bioscale.train.config import LoopConfig

log = logging.getLogger(__name__)

#: The optimiser's parameter groups: v2 leaves timm's patch-embedding weights out of weight decay
#: (as the harmonizer release does), which changes what every ViT trial trains.
DECAY_GROUPS_VERSION = 2


@dataclass(frozen=True, kw_only=True)
class GridPoint:
    rung: str
    diet: Diet
    objective: ObjectiveSpec
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "rung": self.rung,
            "diet": asdict(self.diet),
            "objective": {"name": self.objective.name, "params": self.objective.params},
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridPoint:
        return cls(
            rung=data["rung"],
            diet=from_mapping(Diet, data["diet"], "point.diet"),
            objective=ObjectiveSpec(**data["objective"]),
            seed=int(data["seed"]),
        )

    def describe(self) -> str:
        return f"{self.rung} · {self.objective.label()} · {self.diet.label()} · seed {self.seed}"


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One resolved grid point: what it trains on, how big it is, its key and its MLflow params."""

    index: int
    point: GridPoint
    key: str
    loop: LoopConfig
    #: what the trial evaluates after training (probes, alignment): the final-evaluation hook's
    final: FinalConfig
    params: dict[str, Any]
    planned_samples: int
    #: evaluations of the study's ``alignment:`` this trial skips, each with the reason
    notes: tuple[str, ...] = ()

    @property
    def flops_total(self) -> float:
        return self.loop.flops_per_sample * self.planned_samples


@dataclass(frozen=True, kw_only=True)
class TrialData:
    """Manifest rows and integer labels of a trial's three datasets."""

    train: Targets
    val: Targets
    probe: Targets  # columns: role (ROLE_CODES), label (MoA index)
    #: the probe-test rows in the objective's label space (``y``): what saliency and adversarial
    #: alignment read, never the early-stopping rows; ``None`` without a classifier head
    held_out: Targets | None = None


@dataclass(frozen=True, kw_only=True)
class StudyPlan:
    spec: StudySpec
    manifest: kinds.Manifest
    #: the evaluation every trial runs: the study's, narrowed to what the manifest can feed
    probe: ProbeConfig
    trials: list[Trial]
    dropped: list[tuple[GridPoint, str]]
    #: runnable trials that skip some of the study's evaluations, with the reason
    skipped: list[tuple[GridPoint, str]] = field(default_factory=list)


def git_sha(cwd: str | Path | None = None) -> str:
    """The checkout's commit (``-dirty`` when it has uncommitted changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def canonical_diet(diet: Diet, objective: Objective) -> Diet:
    """The diet as the objective sees it: axes it cannot use are zeroed (supervised ignores
    ``extra`` compounds and controls), so duplicate grid points collapse."""
    groups = objective.train_groups()
    return replace(
        diet,
        extra=diet.extra if "extra" in groups else 0,
        controls=diet.controls and objective.uses_controls(),
    )


def _excluded(point: GridPoint, rules: list[dict[str, Any]]) -> bool:
    for rule in rules:
        hit = True
        for key, want in rule.items():
            if key == "rung":
                hit &= point.rung == want
            elif key == "seed":
                hit &= point.seed == int(want)
            elif key == "objective":
                name = want if isinstance(want, str) else want.get("name")
                hit &= point.objective.name == name or point.objective.label() == name
            elif key == "diet":
                hit &= point.diet == from_mapping(Diet, want, "exclude.diet")
        if hit:
            return True
    return False


def expand(spec: StudySpec) -> tuple[list[GridPoint], list[tuple[GridPoint, str]]]:
    """All grid points of the union of grids × seeds (a grid's own ``seeds`` where it has them),
    minus exclusions and duplicates."""
    kept: list[GridPoint] = []
    dropped: list[tuple[GridPoint, str]] = []
    seen: dict[tuple, GridPoint] = {}
    for grid in spec.grids:
        for rung, diet, obj, seed in itertools.product(
            grid.rung, grid.diet, grid.objective, spec.seeds if grid.seeds is None else grid.seeds
        ):
            objective = objectives.build(obj.name, obj.params)
            point = GridPoint(
                rung=rung, diet=canonical_diet(diet, objective), objective=obj, seed=seed
            )
            if _excluded(GridPoint(rung=rung, diet=diet, objective=obj, seed=seed), spec.exclude):
                dropped.append((point, "excluded by the study's exclude list"))
                continue
            # an untrained rung's embedding depends on no diet, objective or seed: one trial
            ident = (rung,) if is_trainless(rung) else (rung, obj.label(), point.diet, seed)
            if ident in seen and ident == (rung,):
                dropped.append(
                    (
                        GridPoint(rung=rung, diet=diet, objective=obj, seed=seed),
                        f"{rung} is not trained: '{seen[ident].describe()}' stands for every "
                        "diet, objective and seed",
                    )
                )
                continue
            if ident in seen:
                if point.diet != diet or seen[ident] is not point:
                    dropped.append(
                        (
                            GridPoint(rung=rung, diet=diet, objective=obj, seed=seed),
                            f"same data as '{seen[ident].describe()}' for {obj.name}",
                        )
                    )
                continue
            seen[ident] = point
            kept.append(point)
    return kept, dropped


def _check_trainless(rung: str, input_shape: tuple[int, ...], spec: StudySpec) -> None:
    if len(input_shape) != 1:
        raise ConfigError(
            f"rung {rung} evaluates profile features as they are: it applies to data.kind "
            f"profiles, not {spec.data.kind!r}"
        )
    if spec.probe.selection == "search":
        raise ConfigError(
            f"rung {rung} has no layers to search: use probe.selection: last, or leave {rung} "
            "out of this study"
        )


def probe_targets(index: SampleIndex) -> Targets:
    """The fixed probe sets (identical for every trial) and the control wells they are normalised
    against: roles, MoA and target labels over ``seen`` compounds, plate/source/compound/well
    codes (``bioscale.eval.probe_sets``)."""
    from bioscale.eval.probe_sets import probe_set_targets

    return probe_set_targets(index)


def trial_data(index: SampleIndex, point: GridPoint) -> tuple[TrialData, dict[str, int]]:
    """Training rows (the diet), early-stopping rows and probe rows of one grid point."""
    objective = objectives.build(point.objective.name, point.objective.params)
    selection = select(index, point.diet, objective.train_groups())
    space = objective.label_space(index, selection.rows)
    raw = objective.raw_labels(index)
    train = space.encode(index, selection.rows, raw)
    val_groups = objective.train_groups() | ({"control"} if point.diet.controls else set())
    val = space.encode(index, index.where(role="es_val", groups=frozenset(val_groups)), raw)
    held_out = space.encode(index, index.where(role="probe_test"), raw) if "y" in raw else None
    data = TrialData(train=train, val=val, probe=probe_targets(index), held_out=held_out)
    return data, space.num_classes()


@cache
def _size_and_flops(
    rung: str, input_shape: tuple[int, ...], objective_json: str, num_classes_json: str
) -> tuple[int, int, str, float]:
    """(N, N_heads, family, flops_per_sample) of a rung under an objective, measured once (in a
    helper process unless torch is loaded here: ``bioscale.train.measure``)."""
    return measure.size_and_flops(
        rung, input_shape, json.loads(objective_json), json.loads(num_classes_json)
    )


def resolve(
    spec: StudySpec,
    info: mf.ManifestInfo,
    index: SampleIndex,
    point: GridPoint,
    position: int,
    sha_of_code: str,
    input_shape: tuple[int, ...],
    probe: ProbeConfig | None = None,
) -> tuple[Trial, TrialData]:
    """Resolve one grid point into a runnable trial (sizes, budget, lr, key, params); ``probe``:
    the evaluation the trial runs (default the study's, ``check_eval_data`` narrows it)."""
    data, num_classes = trial_data(index, point)
    alignment, notes = trial_alignment(spec.alignment, point, num_classes)
    trainless = is_trainless(point.rung)
    if trainless:  # the raw features: nothing to size, train or count
        _check_trainless(point.rung, input_shape, spec)
        n_params, n_heads, family, flops = 0, 0, get_rung(point.rung).family, 0.0
        d_samples = d_compounds = 0
        max_epochs, max_samples = 0, 0
    else:
        n_params, n_heads, family, flops = _size_and_flops(
            point.rung,
            input_shape,
            json.dumps(asdict(point.objective), sort_keys=True),
            json.dumps(num_classes, sort_keys=True),
        )
        d_samples = len(data.train.rows)
        d_compounds = len(set(index.perturbation_id[data.train.rows]))
        max_epochs, max_samples = spec.train.budget.resolve(n_params, d_samples)
    objective = objectives.build(point.objective.name, point.objective.params)
    loop = LoopConfig(
        rung=point.rung,
        input_shape=input_shape,
        objective=point.objective.name,
        objective_params=dict(point.objective.params),
        num_classes=num_classes,
        max_epochs=max_epochs,
        max_samples=max_samples,
        lr=0.0 if trainless else spec.train.lr.resolve(n_params),
        weight_decay=objective.weight_decay(spec.train.weight_decay),
        weight_decay_mode=objective.weight_decay_mode(spec.train.weight_decay_mode),
        batch_size=spec.train.batch_size,
        seed=point.seed,
        early_stopping=spec.train.early_stopping,
        checkpoint_every=spec.train.checkpoint_every,
        precision=trial_precision(spec),
        channels_last=spec.train.channels_last,
        compile=spec.train.compile,
        flops_per_sample=flops,
    )
    final = FinalConfig(
        probe=probe or spec.probe,
        # workers run in other directories: dataset folders as absolute paths
        alignment=alignment.resolved(Path.cwd()) if alignment is not None else None,
        tracking=kinds.get(spec.data.kind).head_evaluation(spec.data, index),
    )
    config = to_mapping(replace(loop, flops_per_sample=0.0, report_interval_s=0.0))
    # evaluation settings are not part of a trial's identity: adding a task or changing a probe
    # re-evaluates finished trials (``bioscale evaluate``) instead of retraining them. Keys keep
    # the layout they had when the loop config held the evaluation: default probe, task ``moa``
    config |= {"probe": to_mapping(ProbeConfig()), "probe_task": "moa"}
    if config["weight_decay_mode"] == "decoupled":  # the only mode before coupled existed: the
        del config["weight_decay_mode"]  # keys of trials trained with it stay valid
    splits = asdict(spec.data.splits)
    if not point.diet.controls:  # which control wells are kept for evaluation: not trained on
        del splits["eval_controls"]
    identity = {
        "point": point.as_dict(),
        "config": config,
        "splits": splits,
        "manifest_sha": info.sha,
    }
    # roles v2 (whole wells, evaluation controls; ``data.splits``) changed what a trial trains on
    # only where wells hold several samples (image sites) or the diet trains on controls: other
    # trials keep their v1 keys
    if point.diet.controls or index.samples_per_well > 1:
        identity["roles"] = ROLES_VERSION
    if family == "vit":  # patch-embedding weights left out of weight decay since groups v2
        identity["decay_groups"] = DECAY_GROUPS_VERSION
    if alignment is not None:  # nothing re-runs these after the fact: they are part of the trial
        identity["alignment"] = to_mapping(alignment)
        if set(MAP_EVALUATIONS) & set(alignment.enabled()):  # measured on probe-test images
            identity["alignment_images"] = "probe_test"  # (before: the early-stopping ones)
    identity |= kinds.get(spec.data.kind).identity(spec.data)  # e.g. how pixels become tensors
    if spec.probe.selection != "last":  # a run's metrics are either last-layer or searched
        identity["probe_selection"] = to_mapping([spec.probe.selection, spec.probe.layers])
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    params = {
        "rung": point.rung,
        "model_family": family,
        "N": n_params,
        "N_heads": n_heads,
        "diet": point.diet.label(),
        "diet_seed": point.diet.diet_seed,
        "D_samples": d_samples,
        "D_compounds": d_compounds,
        "objective": point.objective.label(),
        "seed": point.seed,
        "epochs": max_epochs,
        "lr": loop.lr,
        "weight_decay": loop.weight_decay,
        "weight_decay_mode": loop.weight_decay_mode,
        "batch_size": loop.batch_size,
        "manifest_sha": info.sha,
        "git_sha": sha_of_code,
        "budget": json.dumps(asdict(spec.train.budget), sort_keys=True),
        "precision": loop.precision,
        "flops_per_sample": flops,
        "probe_selection": spec.probe.selection,
    }
    planned = max_samples if max_samples is not None else max_epochs * d_samples
    return (
        Trial(
            index=position,
            point=point,
            key=key,
            loop=loop,
            final=final,
            params=params,
            planned_samples=planned,
            notes=notes,
        ),
        data,
    )


def trial_alignment(
    alignment: AlignmentConfig | None, point: GridPoint, num_classes: dict[str, int]
) -> tuple[AlignmentConfig | None, tuple[str, ...]]:
    """The study's ``alignment:`` as one trial runs it: saliency and adversarial alignment are
    skipped (with the reason) for objectives without a classifier head (``mae``)."""
    if alignment is None:
        return None, ()
    needs_head = [n for n in MAP_EVALUATIONS if n in alignment.enabled()]
    refusal = classifier_refusal(point.objective.name, num_classes) if needs_head else None
    if refusal is None:
        return alignment, ()
    return alignment.without(needs_head), (f"{', '.join(needs_head)}: {refusal}",)


def check_alignment(spec: StudySpec, manifest: kinds.Manifest) -> None:
    """Before any compute: the manifest has the human maps saliency and adversarial alignment
    compare with, every neural and 3D-PC folder is complete, and every rung has the neural
    ``layers``. Relative folders are taken from the current directory."""
    cfg = spec.alignment
    if cfg is None:
        return
    maps = [n for n in MAP_EVALUATIONS if n in cfg.enabled()]
    if maps and not manifest.has_maps:
        raise ConfigError(
            f"alignment.{maps[0]} needs images with human importance maps; manifest "
            f"{manifest.path} has none (natural images: fill path_map, e.g. "
            "`bioscale data import natural` with maps/; Cell Painting: a path_map column). "
            f"Remove {', '.join(maps)} from alignment: or use a manifest with maps."
        )
    resolved = cfg.resolved(Path.cwd())
    check_data(resolved)
    layered = [(i, n) for i, n in enumerate(cfg.neural) if n.layers != "all"]
    if layered:
        from bioscale.models.layers import pick_layers
        from bioscale.train.measure import layer_names

        crop = spec.data.image.crop
        for rung in sorted({r for grid in spec.grids for r in grid.rung}):
            names = layer_names(rung, (3, crop, crop))
            for i, n in layered:
                try:
                    pick_layers(names, n.layers)
                except ValueError as err:
                    raise ConfigError(f"alignment.neural[{i}].layers, rung {rung}: {err}") from None


def load_index(spec: StudySpec, manifest_path: str | Path) -> SampleIndex:
    """The manifest's metadata and fixed roles (the same in the driver and every trial;
    ``bioscale.data.kinds.read_index``)."""
    return kinds.read_index(spec.data, manifest_path)


def trial_precision(spec: StudySpec) -> str:
    """``train.precision`` resolved for the trial's workers: ``auto`` means bf16 on GPU workers and
    on CPUs with native bf16 (checked for this machine, where local studies run, by
    ``bioscale.train.measure``)."""
    if spec.train.precision != "auto":
        return spec.train.precision
    if spec.resources.gpus_per_worker > 0:
        return "bf16"
    return "bf16" if measure.cpu_bf16_native() else "fp32"


def _check_probe_sets(index: SampleIndex, spec: StudySpec) -> None:
    """Every probe set needs samples, or the probe cannot be fit, selected or scored (kinds whose
    classifiers cannot name never-seen labels, natural images, need no novel ones)."""
    kind = kinds.get(spec.data.kind)
    if not kind.probes:  # scored by the network's own read-out on the held-out samples
        if len(index.where(role="novel_test")) == 0:
            raise ConfigError(
                f"data.manifest: no held-out {kind.wording.novel} to score trials on; generate "
                "or import them into the manifest"
            )
        return
    roles = ["probe_train", "probe_val", "probe_test"]
    if kind.novel_labels:
        roles.append("novel_test")
    for role in roles:
        if len(index.where(role=role)) == 0:
            raise ConfigError(
                f"data.splits: the fixed probe set '{role}' is empty for this manifest "
                f"(splits {asdict(spec.data.splits)}: wells per seen compound; each keeps at "
                "least one well for training, and novel compounds must exist). Lower the "
                "per-compound counts in data.splits or use a manifest with more replicate wells / "
                "novel compounds."
            )


def check_eval_data(spec: StudySpec, index: SampleIndex) -> ProbeConfig:
    """The study's evaluation narrowed to what the manifest can feed: tasks it cannot
    (``genetic`` without ORF/CRISPR wells) fail the study when ``eval:`` lists them, naming why,
    and are dropped (logged) from the default list. The spec itself is left as it was loaded."""
    from bioscale.eval.tasks import applicable

    tasks, reasons = applicable(spec.probe.tasks, index, explicit=spec.eval is not None)
    for reason in reasons:
        log.info("evaluation task not applicable to this data, dropped: %s", reason)
    return replace(spec.probe, tasks=tasks)


def study_dyes(spec: StudySpec, manifest_path: str | Path) -> list[str]:
    """The channel order of an image study (Cell Painting: ``data.image.dyes`` or the
    manifest's dyes)."""
    channels = kinds.get(spec.data.kind).channels(spec.data, manifest_path)
    if channels is None:
        raise ConfigError(f"data.kind {spec.data.kind!r} has no named channels")
    return channels


def plan(spec: StudySpec, manifest_path: str | Path) -> StudyPlan:
    """Resolve every grid point of ``spec`` against the manifest (opened once, here)."""
    manifest = kinds.open_manifest(spec.data, manifest_path)
    info, index, input_shape = manifest.info, manifest.index, manifest.sample_shape
    _check_probe_sets(index, spec)
    probe = check_eval_data(spec, index)
    check_alignment(spec, manifest)
    points, dropped = expand(spec)
    code = git_sha(Path(__file__).parent)
    has_maps = manifest.has_maps
    trials = []
    for i, point in enumerate(points):
        trainless = is_trainless(point.rung)  # no objective runs: nothing of it to refuse
        if objectives.get(point.objective.name).needs_maps and not has_maps and not trainless:
            dropped.append(
                (
                    point,
                    f"{point.objective.name} needs samples with human importance maps "
                    f"(a natural-image manifest with path_map); this {spec.data.kind} data has none",
                )
            )
            continue
        refusal = (
            None if trainless else objectives.get(point.objective.name).rung_refusal(point.rung)
        )
        if refusal is not None:
            dropped.append((point, refusal))
            continue
        trial, _ = resolve(spec, info, index, point, i, code, input_shape, probe=probe)
        if trial.params["D_samples"] == 0 and not trainless:
            dropped.append((point, "the diet leaves no training samples for this objective"))
            continue
        trials.append(trial)
        for note in trial.notes:
            log.warning("%s: %s", point.describe(), note)
    skipped = [(t.point, note) for t in trials for note in t.notes]
    if not trials:
        reasons = "; ".join(sorted({why for _, why in dropped})) or "the grid is empty"
        raise ConfigError(f"study {spec.name!r} has no runnable trial: {reasons}")
    return StudyPlan(
        spec=spec, manifest=manifest, probe=probe, trials=trials, dropped=dropped, skipped=skipped
    )
