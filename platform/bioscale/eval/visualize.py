"""MACO feature visualisation of a trained classifier's logits, and the study report's panels of
them. ``bioscale.study.posthoc.visualize_run`` finds a finished trial and its data and calls these.

``render_targets`` optimises, per target logit of the ``y`` head, the phase of an image whose
magnitude is fixed (``bioscale.eval.maco.maco``) and writes ``target-<k>.png`` (RGB, or a dye
composite for Cell Painting) and ``target-<k>-transparency.png`` (accumulated |gradient|, summed
over channels); ``write_summary`` adds ``maco.json`` (labels, objective before/after, seconds,
settings). ``report_panels`` gathers those folders for the study report: per objective, the
largest rung (by N) that has visualisations.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioscale.errors import BioscaleError, ConfigError

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


# ------------------------------------------------------------------------------ the classifier


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


def render_targets(
    logits: Callable[[Any], Any],
    magnitude: np.ndarray,
    chosen: Sequence[int],
    names: list[str] | None,
    *,
    folder: Path,
    input_size: int,
    dyes: list[str] | None,
    cfg,
    device: str,
    progress: Callable[[str], None] = print,
) -> list[TargetImage]:
    """MACO on each ``chosen`` logit of ``logits`` (``x → (B, K)``), the image's magnitude fixed
    to ``magnitude`` ((C, S, S//2+1) amplitude spectrum); writes each target's image (RGB, or the
    composite of ``dyes``) and transparency PNG into ``folder``.

    Args:
        names: class labels by index (``None``: labelled by index).
        input_size: side in px of the crops the network sees.
        cfg: ``MacoConfig``.
    """
    from bioscale.eval.maco import composite, logit_objective, maco

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
    return results


def write_summary(
    folder: Path,
    results: Sequence[TargetImage],
    *,
    about: dict[str, Any],
    input_size: int,
    dyes: list[str] | None,
    spectrum_images: int,
    cfg,
) -> Path:
    """``maco.json`` in ``folder``: ``about`` (run id, study, trial, rung, objective), the
    settings and one entry per target (its PNGs by file name), as ``report_panels`` reads it."""
    summary = {
        **about,
        "input_size": input_size,
        "dyes": dyes,
        "spectrum_images": spectrum_images,
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
    path = folder / SUMMARY
    path.write_text(json.dumps(summary, indent=1))
    return path


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
