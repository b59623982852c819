"""The biological-alignment evaluations a trial runs after its probes (a study's ``alignment:``).

Four evaluations, each optional, run on rank 0 with the trained network (best weights restored,
eval mode), after the probe suite:

- ``saliency``: ``bioscale.eval.alignment.model_alignment`` → ``align/spearman``,
  ``align/dice10``, ``align/iou10``, ``align/top1``, ``align/n_images`` (+ ``align/score`` with a
  ``ceiling``; ClickMe's only where the maps are blurred as its release blurs them);
- ``adversarial``: ``bioscale.eval.adversarial.model_adversarial`` → ``adv/*``;
- ``neural``: per dataset folder, ``bioscale.eval.neural.score_model`` over the backbone's feature
  layers → ``neural/<dataset>/{score, explained, raw, ceiling, best_layer, ...}`` (``score`` =
  raw / ceiling, ``explained`` = raw / √ceiling: ``bioscale.eval.neural``);
- ``threedpc``: per task folder, ``bioscale.eval.threedpc.evaluate_3dpc`` on the frozen backbone
  → ``probe/3dpc_<task>/{test, val, human}/acc``.

Saliency and adversarial alignment read the trial's probe-test images (``probe_test`` role:
never trained on, and not the early-stopping images that chose the checkpoint, so a harmonized
trial's λ·H selection does not leak into its alignment), labelled in the objective's own class
space (the true-class logit is the ``y`` head's), that carry a human map; they need images with
maps and a classifier head. Neural and 3D-PC
stimuli are RGB files: each is read with ``bioscale.data.natural.load_image`` — converted to RGB,
bilinearly resized to the rung's input side (``data.image.crop``), scaled to [0, 1], no further
normalisation — exactly how natural-image training images are decoded; they apply to natural-image
studies only. Each evaluation's wall time is logged as ``perf/eval_<name>_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bioscale.errors import ConfigError
from bioscale.eval.adversarial import AdversarialConfig
from bioscale.eval.alignment import CLICKME_CEILING
from bioscale.eval.neural import NeuralConfig
from bioscale.eval.threedpc import ThreeDPCConfig

log = logging.getLogger(__name__)

#: The evaluations of ``alignment:``, in the order a trial runs them.
EVALUATIONS = ("saliency", "adversarial", "neural", "threedpc")
#: Those that read held-out images with human maps through the classifier head ``y``.
MAP_EVALUATIONS = ("saliency", "adversarial")


@dataclass(frozen=True, kw_only=True)
class NeuralSpec:
    """One neural dataset folder (``bioscale.eval.neural`` layout) and its scoring settings.

    Attributes:
        path: the folder (``stimuli/``, ``responses.npy``, optional ``repeats.npy``, ``meta.json``);
            relative paths are taken from the directory ``bioscale`` runs in.
        name: the ``<dataset>`` of the metric keys (default: ``meta.json``'s name).
        layers: the backbone layers scored (``all``, or names / indices of
            ``bioscale.eval.layers.layer_names``); the best is chosen on validation folds.
        n_components, folds, seed, ceiling_splits: as ``bioscale.eval.neural.NeuralConfig``.
    """

    path: str
    name: str | None = None
    layers: str | list[str | int] = "all"
    n_components: int = NeuralConfig.n_components
    folds: int = NeuralConfig.folds
    seed: int = NeuralConfig.seed
    ceiling_splits: int = NeuralConfig.ceiling_splits

    def __post_init__(self) -> None:
        if self.name is not None and (not self.name or "/" in self.name):
            raise ConfigError(f"neural name {self.name!r} must be non-empty and contain no '/'")
        if isinstance(self.layers, str) and self.layers != "all":
            raise ConfigError(
                f"neural layers: 'all' or a list of names / indices, not {self.layers!r}"
            )
        self.build(8)  # the scoring settings' own checks

    def build(self, image_size: int) -> NeuralConfig:
        """The scoring settings, stimuli resized to ``image_size`` (the rung's input side)."""
        return NeuralConfig(
            n_components=self.n_components,
            folds=self.folds,
            seed=self.seed,
            ceiling_splits=self.ceiling_splits,
            image_size=image_size,
        )


@dataclass(frozen=True, kw_only=True)
class ThreeDPCSpec:
    """3D-PC task folders ``<root>/<task>/{train,val,test[,human]}/{0,1}/*.png`` and the probe.

    Attributes:
        root: the folder holding one sub-folder per task (``bioscale data synth 3dpc`` writes one);
            relative paths are taken from the directory ``bioscale`` runs in.
        tasks: the task folders to probe; the folder name is the ``<task>`` of
            ``probe/3dpc_<task>/...``.
        epochs, lr, weight_decay, dropout, batch_size, seed: the published probe
            (``bioscale.eval.threedpc.ThreeDPCConfig``).
    """

    root: str
    tasks: list[str] = field(default_factory=lambda: ["depth", "vpt_basic", "vpt_strategy"])
    epochs: int = ThreeDPCConfig.epochs
    lr: float = ThreeDPCConfig.lr
    weight_decay: float = ThreeDPCConfig.weight_decay
    dropout: float = ThreeDPCConfig.dropout
    batch_size: int = ThreeDPCConfig.batch_size
    seed: int = ThreeDPCConfig.seed

    def __post_init__(self) -> None:
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"threedpc.tasks: list each task once, at least one: {self.tasks}")
        bad = [t for t in self.tasks if not t or "/" in t]
        if bad:
            raise ConfigError(f"threedpc.tasks: {bad[0]!r} must be a folder name under root")
        self.build(8)

    def build(self, image_size: int) -> ThreeDPCConfig:
        """The probe settings, images resized to ``image_size`` (the rung's input side)."""
        return ThreeDPCConfig(
            epochs=self.epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            dropout=self.dropout,
            batch_size=self.batch_size,
            seed=self.seed,
            image_size=image_size,
        )


@dataclass(frozen=True, kw_only=True)
class AlignmentConfig:
    """A study's ``alignment:`` section: which biological-alignment evaluations every trial runs.

    Attributes:
        saliency: importance-map alignment with the human maps (``align/*``).
        ceiling: the map dataset's human ceiling for ``align/score`` (ClickMe: 0.65753,
            ``bioscale.eval.alignment.CLICKME_CEILING``, measured on maps blurred as its release
            blurs them: with other maps it is dropped, ``for_maps``); ``None``: only raw ρ.
        adversarial: adversarial alignment (``adv/*``); ``{}`` for the published settings, or
            fields of ``bioscale.eval.adversarial.AdversarialConfig`` (``max_images``, ...).
        neural: neural datasets to score (``neural/<dataset>/*``).
        threedpc: 3D-PC task folders to probe (``probe/3dpc_<task>/*``).
    """

    saliency: bool = False
    ceiling: float | None = None
    adversarial: AdversarialConfig | None = None
    neural: list[NeuralSpec] = field(default_factory=list)
    threedpc: ThreeDPCSpec | None = None

    def __post_init__(self) -> None:
        if not self.enabled():
            raise ConfigError(
                "alignment: enable at least one of saliency: true, adversarial: {...}, "
                "neural: [...], threedpc: {...} (or leave the section out)"
            )
        if self.ceiling is not None and not 0 < self.ceiling <= 1:
            raise ConfigError(f"alignment.ceiling must be in (0, 1], got {self.ceiling}")
        names = [n.name for n in self.neural if n.name is not None]
        if len(set(names)) != len(names):
            raise ConfigError(f"alignment.neural: dataset names must be unique: {names}")

    def enabled(self) -> tuple[str, ...]:
        """The evaluations this config runs, in run order."""
        on = {
            "saliency": self.saliency,
            "adversarial": self.adversarial is not None,
            "neural": bool(self.neural),
            "threedpc": self.threedpc is not None,
        }
        return tuple(name for name in EVALUATIONS if on[name])

    def without(self, names: Iterable[str]) -> AlignmentConfig | None:
        """This config with the named evaluations switched off (``None`` when none is left)."""
        off = set(names)
        changes: dict[str, Any] = {}
        if "saliency" in off:
            changes.update(saliency=False, ceiling=None)
        if "adversarial" in off:
            changes["adversarial"] = None
        if "neural" in off:
            changes["neural"] = []
        if "threedpc" in off:
            changes["threedpc"] = None
        kept = set(self.enabled()) - off
        return replace(self, **changes) if kept else None

    def for_maps(self, *, release: bool) -> AlignmentConfig:
        """This config as maps prepared so can be scored: ClickMe's human ceiling was measured on
        maps blurred as its release blurs them (``data.maps.blur: release``), so with other maps
        (``release`` false) it is dropped, with a warning, and trials log the raw ρ
        (``align/spearman``) without ``align/score``. Other ceilings are the study's own."""
        if release or self.ceiling != CLICKME_CEILING or not self.saliency:
            return self
        log.warning(
            "alignment.ceiling %s is ClickMe's human ceiling, measured on maps blurred as the "
            "ClickMe release blurs them; these maps are prepared otherwise (data.maps.blur is not "
            "'release'), so align/score is not logged: trials log the raw Spearman rho "
            "(align/spearman)",
            self.ceiling,
        )
        return replace(self, ceiling=None)

    def resolved(self, base: str | Path) -> AlignmentConfig:
        """Paths made absolute against ``base`` (trial workers run in other directories)."""

        def absolute(path: str) -> str:
            p = Path(path).expanduser()
            return str(p if p.is_absolute() else (Path(base) / p).resolve())

        neural = [replace(n, path=absolute(n.path)) for n in self.neural]
        threedpc = self.threedpc and replace(self.threedpc, root=absolute(self.threedpc.root))
        return replace(self, neural=neural, threedpc=threedpc)


def check_data(cfg: AlignmentConfig, where: str = "alignment") -> None:
    """Validate every neural dataset folder and 3D-PC task folder (paths already resolved), before
    any compute: a missing file or folder fails naming it and what to put there."""
    from bioscale.eval.neural import NeuralDataError, load_neural_dataset
    from bioscale.eval.threedpc import ThreeDPCDataError, read_split, task_splits

    names: dict[str, int] = {}
    for i, spec in enumerate(cfg.neural):
        try:
            dataset = load_neural_dataset(spec.path)
        except NeuralDataError as err:
            raise ConfigError(f"{where}.neural[{i}]: {err}") from None
        name = spec.name or dataset.name
        if name in names:
            raise ConfigError(
                f"{where}.neural[{i}]: dataset name {name!r} is also neural[{names[name]}]'s; "
                "set a distinct 'name'"
            )
        names[name] = i
        folds = spec.folds
        if len(dataset.stimuli) < folds:
            raise ConfigError(
                f"{where}.neural[{i}]: {spec.path} has {len(dataset.stimuli)} images, fewer than "
                f"folds = {folds}"
            )
    if cfg.threedpc is not None:
        for task in cfg.threedpc.tasks:
            task_dir = Path(cfg.threedpc.root) / task
            try:
                for split in task_splits(task_dir):
                    read_split(task_dir, split)
            except ThreeDPCDataError as err:
                raise ConfigError(f"{where}.threedpc, task {task!r}: {err}") from None


def classifier_refusal(objective: str, num_classes: dict[str, int]) -> str | None:
    """Why saliency and adversarial alignment cannot run for an objective with these heads."""
    if num_classes.get("y", 0) >= 2:
        return None
    return (
        f"saliency and adversarial alignment need a classifier head ('y', the true-class logit); "
        f"objective {objective} has none, so they are skipped for its trials"
    )


def run_alignment(
    net,
    cfg: AlignmentConfig,
    *,
    held_out: Callable[[], Iterable[dict]],
    device,
    image_size: int,
) -> dict[str, float]:
    """Run ``cfg``'s evaluations on a trained network; returns their metrics and timings.

    Args:
        net: ``bioscale.train.loop.Network`` (``backbone`` + ``heads``), unwrapped (not DDP).
        cfg: the trial's evaluations.
        held_out: a fresh iterator of the probe-test batches (``x``, ``y``, ``map``,
            ``has_map``) each call — never the early-stopping images; saliency and adversarial
            alignment read the images with a map.
        device: where the network is.
        image_size: the rung's input side; neural and 3D-PC stimuli are resized to it.
    """
    import torch

    from bioscale.eval.adversarial import model_adversarial
    from bioscale.eval.alignment import model_alignment

    was_training = net.training
    net.eval()
    out: dict[str, float] = {}
    has_head = "y" in getattr(net, "heads", {})
    for name in cfg.enabled():
        if name in MAP_EVALUATIONS and not has_head:
            log.warning("alignment: %s skipped: the network has no classifier head 'y'", name)
            continue
        start = time.perf_counter()
        if name == "saliency":
            found = model_alignment(net, held_out(), device, ceiling=cfg.ceiling)
            if not found:
                log.warning("alignment: saliency skipped: no held-out image has a human map")
            out |= found
        elif name == "adversarial":
            found = model_adversarial(net, held_out(), device, cfg=cfg.adversarial)
            if not found:
                log.warning("alignment: adversarial skipped: no held-out image has a human map")
            out |= found
        elif name == "neural":
            with torch.no_grad():
                out |= _neural(net.backbone, cfg.neural, device, image_size)
        else:  # embeds without gradients; the probe itself trains
            out |= _threedpc(net.backbone, cfg.threedpc, device, image_size)
        out[f"perf/eval_{name}_seconds"] = time.perf_counter() - start
    net.train(was_training)
    return out


def _neural(backbone, specs: list[NeuralSpec], device, image_size: int) -> dict[str, float]:
    """``neural/<dataset>/*`` of every dataset; ``best_layer`` indexes the scored layers (the
    backbone's ``layer_names`` order, restricted to ``layers``)."""
    from bioscale.eval.layers import LayerExtractor
    from bioscale.eval.neural import load_neural_dataset, score_model

    out: dict[str, float] = {}
    for spec in specs:
        dataset = load_neural_dataset(spec.path)
        if spec.name is not None:
            dataset = replace(dataset, name=spec.name)
        with LayerExtractor(backbone, spec.layers) as extractor:
            score = score_model(extractor, dataset, cfg=spec.build(image_size), device=str(device))
        log.info("neural/%s: best layer %s", dataset.name, score.best_layer_name)
        out |= score.metrics
    return out


def _threedpc(backbone, spec: ThreeDPCSpec, device, image_size: int) -> dict[str, float]:
    from bioscale.eval.threedpc import evaluate_3dpc

    out: dict[str, float] = {}
    probe_cfg = spec.build(image_size)
    for task in spec.tasks:
        out |= evaluate_3dpc(
            backbone, Path(spec.root) / task, task=task, cfg=probe_cfg, device=str(device)
        )
    return out
