"""Feature visualisation of a finished trial (``bioscale visualize``): MACO on its class logits.

A trial's run id → its grid point and ``LoopConfig`` (the study's plan) → its network, rebuilt
from the final checkpoint (``weights_only`` loading). The fixed magnitude is the mean amplitude
spectrum of up to ``images`` manifest images, decoded in-process by the trials' own decode
functions and normalisation (natural images: ``decode_natural`` at the MACO image size; Cell
Painting: ``decode_batch`` on whole sites, then resized). Per target logit of the ``y`` head,
``bioscale.eval.maco.maco`` optimises the phase; ``<out>/visualize/<run_id>/`` receives
``target-<k>.png`` (RGB, or a dye composite for Cell Painting), ``target-<k>-transparency.png``
(accumulated |gradient|, summed over channels) and ``maco.json`` (labels, objective before/after,
seconds, settings), and the folder is logged as the run's ``visualize/`` artifacts (same run).

``report_panels`` gathers those folders for the study report: per objective, the largest rung
(by N) that has visualisations.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioscale.errors import BioscaleError, ConfigError
from bioscale.uri import redact_uri

#: folder of ``<out>`` (and artifact folder of a run) that holds visualisations
VIS_DIR = "visualize"
#: per-run summary file in ``<out>/visualize/<run_id>/``
SUMMARY = "maco.json"
#: classes visualised when no ``--target`` is given (the first ones of the vocabulary)
DEFAULT_TARGETS = 4
#: manifest images the mean amplitude spectrum is computed from, at most
DEFAULT_SPECTRUM_IMAGES = 64
#: the transparency PNG maps this percentile of the summed |gradient| to white
TRANSPARENCY_PERCENTILE = 99.5


@dataclass(frozen=True, kw_only=True)
class TargetImage:
    """One visualised logit."""

    index: int
    label: str
    image: Path
    transparency: Path
    objective_start: float
    objective_end: float
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Visualization:
    """What ``visualize_run`` wrote: the folder, one entry per target, the images the spectrum
    was computed from."""

    run_id: str
    folder: Path
    targets: list[TargetImage]
    spectrum_images: int


def vis_folder(out_dir: str | Path, run_id: str) -> Path:
    """``<out>/visualize/<run_id>``."""
    return Path(out_dir) / VIS_DIR / run_id


# ------------------------------------------------------------------------------ the trial


def find_trial(spec, out_dir: Path, run_id: str, manifest: Path):
    """``(tracker, trial)`` of a FINISHED trial run of ``spec``'s study.

    Raises:
        BioscaleError: naming the study and the tracking store when the run is not one of its
            finished trials, or when the study file no longer plans the run's trial.
    """
    from bioscale.study.plan import plan
    from bioscale.study.runner import tracking_uri
    from bioscale.study.tracking import Tracker

    tracker = Tracker(tracking_uri(spec, out_dir), artifact_root=out_dir / "mlartifacts")
    exp = tracker.client.get_experiment_by_name(spec.name)
    if exp is None:
        raise BioscaleError(
            f"no MLflow experiment for study {spec.name!r} in {redact_uri(tracker.uri)}: run the study first "
            "(or give the --out it ran with)"
        )
    finished = tracker.finished_trial_keys(exp.experiment_id)  # {trial key: run id}
    keys = {r: k for k, r in finished.items()}
    if run_id not in keys:
        known = ", ".join(sorted(keys)[:8]) + (" ..." if len(keys) > 8 else "")
        raise BioscaleError(
            f"no FINISHED trial run {run_id} in study {spec.name!r} ({redact_uri(tracker.uri)}); its "
            f"finished trial runs: {known or 'none'}"
        )
    trials = {t.key: t for t in plan(spec, manifest).trials}
    trial = trials.get(keys[run_id])
    if trial is None:
        raise BioscaleError(
            f"trial run {run_id} was trained from another grid, data or training config than "
            f"study {spec.name!r}'s file; visualise it with the study file it ran with"
        )
    return tracker, trial


def class_names(spec, manifest: Path, trial) -> list[str] | None:
    """The trial's ``y`` vocabulary (class index → label), rebuilt from its diet as the planner
    builds it (``bioscale.study.plan.trial_data``); ``None`` when it does not match the head."""
    from bioscale.data.diets import select
    from bioscale.objectives import registry as objectives
    from bioscale.study.plan import load_index

    index = load_index(spec, manifest)
    objective = objectives.build(trial.point.objective.name, trial.point.objective.params)
    rows = select(index, trial.point.diet, objective.train_groups()).rows
    names = objective.label_space(index, rows).classes.get("y")
    return names if names is not None and len(names) == trial.loop.num_classes.get("y") else None


def resolve_targets(
    requested: Sequence[str] | None, names: list[str] | None, n_classes: int
) -> list[int]:
    """``--target`` values (class labels, or indices) → head indices; none given: the first
    ``DEFAULT_TARGETS`` classes."""
    if not requested:
        return list(range(min(DEFAULT_TARGETS, n_classes)))
    out: list[int] = []
    for value in requested:
        if names is not None and value in names:
            k = names.index(value)
        elif value.lstrip("-").isdigit() and 0 <= int(value) < n_classes:
            k = int(value)
        else:
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else ""
            raise ConfigError(
                f"--target {value!r} is neither a class of the trial's head nor an index in "
                f"[0, {n_classes})" + (f"; its classes: {shown}" if shown else "")
            )
        if k not in out:
            out.append(k)
    return out


def load_classifier(loop_config, checkpoint: Path, device: str):
    """The trial's network with its final weights, frozen, and ``x → logits["y"]``.

    Raises:
        BioscaleError: when the objective has no classifier head ``y`` (e.g. ``mae``).
    """
    import torch

    from bioscale.eval.extract import load_weights
    from bioscale.train.loop import build_network

    net, _ = build_network(loop_config)
    if "y" not in net.heads:
        raise BioscaleError(
            f"objective {loop_config.objective} has no classifier head 'y' to visualise (its "
            f"heads: {', '.join(net.heads) or 'none'}); MACO maximises a class logit, so "
            "visualise a trial of a classifying objective (supervised, ibp, harmonized)"
        )
    net.load_state_dict(load_weights(checkpoint))
    net = net.to(torch.device(device)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, lambda x: net.heads["y"](net.backbone(x))


# ------------------------------------------------------------------------------ the spectrum


def spectrum_rows(manifest: Path, columns: list[str], images: int) -> dict[str, np.ndarray]:
    """Up to ``images`` manifest rows (a fixed, evenly spread choice), ``columns`` only."""
    import pyarrow.parquet as pq

    table = pq.read_table(manifest, columns=columns)
    n = table.num_rows
    take = np.unique(np.linspace(0, n - 1, min(images, n)).round().astype(np.int64))
    picked = table.take(take)
    return {c: picked.column(c).to_numpy(zero_copy_only=False) for c in columns}


def data_spectrum(spec, manifest: Path, dyes: list[str] | None, size: int, images: int):
    """(C, size, size//2+1) mean amplitude spectrum of up to ``images`` manifest images decoded
    as the trials decode them; returns it and the number of images used."""
    from bioscale.eval.maco import mean_amplitude_spectrum

    image = spec.data.image
    if spec.data.kind == "natural":
        from bioscale.data.natural import decode_natural

        rows = spectrum_rows(manifest, ["sample_id", "path_image"], images)
        rows["path_map"] = np.array([None] * len(rows["sample_id"]), dtype=object)
        decoded = [decode_natural(rows, size=size, flip=False, seed=0)["x"]]
    else:
        from bioscale.data.images import decode_batch

        rows = spectrum_rows(manifest, ["sample_id", *[f"path_{d}" for d in dyes]], images)
        decoded = []
        for i in range(len(rows["sample_id"])):  # one site at a time: sites may differ in size
            out = decode_batch(
                {k: v[i : i + 1] for k, v in rows.items()},
                dyes=dyes,
                crop=None,
                crop_mode="centre",
                downsample=image.downsample,
                rng=0,
                normalise=image.normalise,
                bad_sample_policy=image.bad_samples,
            )
            decoded.append(out["x"][out["ok"]])
    total, count = None, 0
    for x in decoded:
        if len(x):
            part = mean_amplitude_spectrum(x, size) * len(x)
            total = part if total is None else total + part
            count += len(x)
    if total is None:
        raise BioscaleError(f"no readable image among the first rows of {manifest}")
    return total / count, count


# ------------------------------------------------------------------------------ writing


def _png(rgb: np.ndarray, path: Path) -> Path:
    """(H, W, 3) or (H, W) in [0, 1] → an 8-bit PNG."""
    from PIL import Image

    Image.fromarray((np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8)).save(path)
    return path


def transparency_gray(alpha: np.ndarray) -> np.ndarray:
    """(C, H, W) accumulated |gradient| → (H, W) in [0, 1]: summed over channels, scaled so the
    ``TRANSPARENCY_PERCENTILE`` maps to 1."""
    total = np.asarray(alpha, dtype=np.float64).sum(axis=0)
    top = float(np.percentile(total, TRANSPARENCY_PERCENTILE))
    return np.clip(total / top, 0.0, 1.0) if top > 0 else np.zeros_like(total)


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
    progress: Callable[[str], None] = print,
) -> Visualization:
    """Visualise the class logits of one finished trial of ``spec``'s study and log the PNGs to
    its MLflow run.

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

    from bioscale.eval.maco import DYE_COLOURS, MacoConfig, composite, logit_objective, maco
    from bioscale.study.plan import study_dyes
    from bioscale.study.runner import ensure_manifest

    if spec.data.kind == "profiles":
        raise BioscaleError(
            f"study {spec.name!r} trains on profiles (data.kind profiles): MACO optimises an "
            "image, so it needs image rungs (data.kind natural or cellpainting)"
        )
    cfg = cfg or MacoConfig()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out_dir = Path(out_dir).resolve()
    manifest = ensure_manifest(spec, out_dir)
    dyes = study_dyes(spec, manifest) if spec.data.kind == "cellpainting" else None
    if dyes is not None:
        unknown = [d for d in dyes if d not in DYE_COLOURS]
        if unknown:
            raise BioscaleError(
                f"no composite colour for dye(s) {', '.join(unknown)}; bioscale colours "
                f"{', '.join(DYE_COLOURS)} (set data.image.dyes to those)"
            )
    tracker, trial = find_trial(spec, out_dir, run_id, manifest)
    _, logits = load_classifier_checked(trial, run_id, checkpoint, out_dir, spec.storage, device)
    names = class_names(spec, manifest, trial)
    chosen = resolve_targets(targets, names, trial.loop.num_classes["y"])

    t0 = time.perf_counter()
    magnitude, used = data_spectrum(spec, manifest, dyes, cfg.image_size, images)
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
    results: list[TargetImage] = []
    for k in chosen:
        label = names[k] if names is not None else str(k)
        img, alpha, metrics = maco(
            logit_objective(logits, k), magnitude, input_size=input_size, cfg=cfg, device=device
        )
        image_path = _png(composite(img, tuple(dyes) if dyes else None), folder / f"target-{k}.png")
        alpha_path = _png(transparency_gray(alpha), folder / f"target-{k}-transparency.png")
        results.append(
            TargetImage(
                index=k,
                label=label,
                image=image_path,
                transparency=alpha_path,
                objective_start=metrics["maco/objective_start"],
                objective_end=metrics["maco/objective_end"],
                seconds=metrics["maco/seconds"],
            )
        )
        progress(
            f"target {k} ({label}): logit {metrics['maco/objective_start']:.3f} → "
            f"{metrics['maco/objective_end']:.3f} ({metrics['maco/seconds']:.1f} s)"
        )
    summary = {
        "run_id": run_id,
        "study": spec.name,
        "trial": trial.point.describe(),
        "rung": trial.point.rung,
        "objective": trial.point.objective.label(),
        "input_size": input_size,
        "dyes": dyes,
        "spectrum_images": used,
        "maco": asdict(cfg),
        "targets": [
            {
                **asdict(r),
                "image": r.image.name,
                "transparency": r.transparency.name,
            }
            for r in results
        ],
    }
    (folder / SUMMARY).write_text(json.dumps(summary, indent=1))
    tracker.client.log_artifacts(run_id, str(folder), artifact_path=VIS_DIR)
    progress(f"wrote {folder} and logged it to run {run_id} as artifacts {VIS_DIR}/")
    return Visualization(run_id=run_id, folder=folder, targets=results, spectrum_images=used)


def load_classifier_checked(
    trial, run_id: str, checkpoint, out_dir: Path, storage: str | None, device: str
):
    """``load_classifier`` on ``checkpoint`` or the trial's final one (in the study's
    ``storage:`` when set), errors naming the run."""
    from bioscale.eval.extract import final_checkpoint, trial_folder

    try:
        if checkpoint is None:
            checkpoint = final_checkpoint(trial_folder(out_dir, trial.key, storage))
        return load_classifier(trial.loop, Path(checkpoint), device)
    except FileNotFoundError as err:
        raise BioscaleError(f"run {run_id}: {err}") from None
    except BioscaleError as err:
        raise BioscaleError(f"run {run_id} ({trial.point.describe()}): {err}") from None


# ------------------------------------------------------------------------------ the report


def report_panels(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, report_dir: str | Path
) -> list[Any]:
    """One ``bioscale.scaling.report.VisPanel`` per objective: the trial of the largest N among
    ``rows`` (finished trial runs) with visualisations under ``<out>/visualize/``. Their PNGs are
    copied into ``report_dir`` (as ``maco-<run>-<file>``) so the report folder stands alone."""
    from bioscale.scaling.report import VisPanel

    root = Path(out_dir) / VIS_DIR
    if not root.is_dir():
        return []
    best: dict[str, tuple[float, dict[str, Any], dict[str, Any]]] = {}
    for row in rows:
        summary_path = root / str(row.get("run_id", "")) / SUMMARY
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        objective = str(row.get("objective", summary.get("objective", "")))
        n = float(row.get("N", 0) or 0)
        if objective not in best or n > best[objective][0]:
            best[objective] = (n, row, summary)
    panels = []
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    for objective in sorted(best):
        n, row, summary = best[objective]
        run_id = str(row["run_id"])
        items = []
        for t in summary["targets"]:
            copied = []
            for name in (t["image"], t["transparency"]):
                dest = report_dir / f"maco-{run_id[:12]}-{name}"
                shutil.copyfile(root / run_id / name, dest)
                copied.append(dest)
            caption = f"{t['label']}: logit {t['objective_start']:.2f} → {t['objective_end']:.2f}"
            items.append((caption, copied[0], copied[1]))
        cfg = summary.get("maco", {})
        panels.append(
            VisPanel(
                title=f"{objective} · {row.get('rung', summary.get('rung'))} (N = {n:,.0f})",
                note=(
                    f"run {run_id}; {cfg.get('steps')} steps at {cfg.get('image_size')} px, "
                    f"magnitude from {summary.get('spectrum_images')} image(s)"
                ),
                items=items,
            )
        )
    return panels
