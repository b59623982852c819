"""The per-worker training loop: plain torch, written against ``TrainContext``.

It owns the optimisation (AdamW, weight decay once via parameter groups, coupled or decoupled;
the budget; early stopping on the objective's selection term over the validation subset of
training wells; checkpoint and resume); the objective only returns named loss terms. A non-finite
training loss fails the trial at once (``TrainingError`` naming the epoch, step and terms). After
training it restores the best weights, embeds the fixed probe sets with the frozen backbone and
fits the probes, then runs the study's biological-alignment evaluations
(``bioscale.eval.trial_alignment``). Every rank reports the same number of times; only rank 0's
metrics carry content.

The step itself (network, AdamW groups, autocast, backward) is ``bioscale.train.step``. Loss terms
stay on the device until an epoch ends, so a GPU never waits on the host between steps. On a GPU
whose peak ``bioscale.hardware`` knows, ``perf/mfu`` (per epoch and for the trial) is the measured
training FLOPs (``flops_per_sample`` × samples) per second over the peak of all workers' devices.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bioscale.errors import TrainingError
from bioscale.eval.layer_search import CURVES_ARTIFACT, layer_curves, layers_of
from bioscale.eval.probe import ProbeConfig
from bioscale.eval.tasks import evaluate as evaluate_probe_rows
from bioscale.eval.trial_alignment import AlignmentConfig, run_alignment
from bioscale.hardware import device_peak_flops, mfu
from bioscale.objectives.base import WeightDecayMode
from bioscale.train.context import TrainContext
from bioscale.train.precision import Precision, StepNumerics, prepare_layout, resolve_precision
from bioscale.train.rules import EarlyStopping
from bioscale.train.step import (
    FiniteLossGuard,
    Network,
    configure_backends,
    make_optimizer,
    network_for,
    param_groups,
    train_step,
)

# Network and param_groups are part of this module's API (plan, eval and tests import them here)
__all__ = ["LoopConfig", "Network", "build_network", "embed", "param_groups", "run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Everything one trial's workers need, fully resolved by the driver (plain data, picklable)."""

    rung: str
    input_shape: tuple[int, ...]  # one sample: (F,) profile features or (C, H, W) image crops
    objective: str
    objective_params: dict[str, Any] = field(default_factory=dict)
    num_classes: dict[str, int]
    max_epochs: int
    max_samples: int | None = None
    lr: float
    weight_decay: float
    weight_decay_mode: WeightDecayMode = "decoupled"
    batch_size: int
    seed: int
    early_stopping: EarlyStopping | None = None
    checkpoint_every: int = 5
    report_interval_s: float = 10.0
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    probe_task: str = "moa"
    alignment: AlignmentConfig | None = None
    flops_per_sample: float = 0.0
    precision: Precision = "auto"
    channels_last: bool = True
    compile: bool = False


def build_network(cfg: LoopConfig) -> tuple[Network, Any]:
    """The trial's network (backbone + heads) and its objective."""
    return network_for(
        cfg.rung, cfg.input_shape, cfg.objective, cfg.objective_params, cfg.num_classes
    )


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _val_terms(model: nn.Module, objective: Any, ctx: TrainContext) -> dict[str, float] | None:
    """Every loss term's sample-weighted mean over the early-stopping wells (``None``: no wells)."""
    model.eval()
    sums: dict[str, torch.Tensor] = {}  # term → Σ term × batch size, on the device
    count = 0
    # objectives whose loss differentiates the input (the harmonizer's saliency) need autograd on
    with torch.enable_grad() if objective.needs_maps else torch.no_grad():
        for batch in ctx.eval_batches("val"):
            batch = _to(batch, ctx.device)
            n = len(batch["x"])
            for name, value in objective.loss_terms(model, batch).items():
                weighted = value.detach().float() * n
                sums[name] = sums[name] + weighted if name in sums else weighted
            count += n
    return {k: float(v) / count for k, v in sums.items()} if count else None


def _selection_value(objective: Any, terms: dict[str, float]) -> float:
    """The validation term early stopping minimises (``Objective.selection_term``)."""
    name = objective.selection_term()
    if name not in terms:
        raise TrainingError(
            f"objective {objective.name!r} selects on the validation term {name!r}, but its loss "
            f"terms are {', '.join(sorted(terms))}: make selection_term() name one of them"
        )
    return terms[name]


@torch.no_grad()
def embed(
    backbone: nn.Module, batches, device: torch.device, layers: Any = None
) -> dict[str, np.ndarray]:
    """Frozen embeddings ``emb`` of every batch, with the batch's other columns passed through.

    ``layers`` (``all`` or layer names / indices, ``bioscale.eval.layers``): also the pooled
    embedding of each of those layers, from the same forward pass, as columns
    ``layer:<index>/<count>:<name>`` (``bioscale.eval.layer_search.layer_columns``).
    """
    from contextlib import nullcontext

    from bioscale.eval.layer_search import layer_columns
    from bioscale.eval.layers import LayerExtractor

    backbone.eval()
    out: dict[str, list[np.ndarray]] = {}
    columns = layer_columns(backbone, layers) if layers is not None else {}
    with LayerExtractor(backbone, layers) if layers is not None else nullcontext() as extractor:
        for batch in batches:
            x = batch["x"].to(device)
            if extractor is None:
                out.setdefault("emb", []).append(backbone(x).float().cpu().numpy())
            else:
                for name, emb in extractor(x).items():
                    out.setdefault(columns[name], []).append(emb.cpu().numpy())
                out.setdefault("emb", []).append(extractor.embedding.cpu().numpy())
            for k, v in batch.items():
                if k != "x":
                    out.setdefault(k, []).append(v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def run(
    cfg: LoopConfig, ctx: TrainContext, extra_final: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train, restore the best weights, probe; return rank 0's final metrics (plus ``extra_final``)."""
    torch.manual_seed(cfg.seed * 1000 + ctx.rank)
    np.random.seed(cfg.seed)
    configure_backends(ctx.device)
    net, objective = build_network(cfg)
    image_input = len(cfg.input_shape) == 3
    numerics = StepNumerics(
        precision=resolve_precision(cfg.precision, ctx.device),
        channels_last=cfg.channels_last and image_input,
        device=ctx.device,
    )
    net = prepare_layout(net, numerics.channels_last, image_input, compile_model=False)
    model = ctx.prepare_model(net)
    if cfg.compile:
        model = torch.compile(model)
    optimizer = make_optimizer(
        net,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        weight_decay_mode=cfg.weight_decay_mode,
        device=ctx.device,
    )
    guard = FiniteLossGuard(ctx.device)
    peak_flops = device_peak_flops(ctx.device)  # None on CPUs and unknown GPUs: no perf/mfu

    state = {
        "epoch": 0,
        "samples_seen": 0,
        "best_val": math.inf,
        "best_epoch": -1,
        "bad_epochs": 0,
        "step_seconds": 0.0,
        "loop_seconds": 0.0,
        # every epoch's metrics so far: a resumed trial reports the epochs its checkpoint covers
        # again, so the driver can log any it had not logged yet (it logs each epoch once)
        "epoch_log": [],
    }
    best_weights: dict[str, torch.Tensor] | None = None
    resumed = ctx.latest_checkpoint()
    if resumed is not None:
        ckpt = torch.load(Path(resumed) / "state.pt", map_location=ctx.device, weights_only=True)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        best_weights = ckpt["best_weights"]
        log.info("resumed from %s at epoch %d", resumed, state["epoch"])
    resumed_from_epoch = state["epoch"]  # 0 on a fresh start; a restarted worker group's checkpoint

    es = cfg.early_stopping
    stop = False
    history: list[dict[str, Any]] = list(state["epoch_log"])
    last_report = time.monotonic()
    while state["epoch"] < cfg.max_epochs and not stop:
        epoch = state["epoch"]
        model.train()
        sums: dict[str, torch.Tensor] = {}  # loss term → Σ term × batch size, on the device
        n_local = 0
        t_epoch = time.perf_counter()
        step_s = 0.0
        step = 0
        for batch in ctx.train_batches(epoch):
            if len(batch["x"]) < 2:  # BatchNorm cannot train on one sample; shards are equal-sized
                continue
            batch = _to(batch, ctx.device)
            batch["x"] = numerics.inputs(batch["x"])
            t0 = time.perf_counter()
            terms = train_step(model, objective, optimizer, batch, numerics)
            step_s += time.perf_counter() - t0
            step += 1
            guard.check(epoch + 1, step, terms)
            n = len(batch["x"])
            n_local += n
            for name, value in terms.items():
                weighted = value.detach().float() * n
                sums[name] = sums[name] + weighted if name in sums else weighted
            if (
                cfg.max_samples is not None
                and state["samples_seen"] + n_local * ctx.world_size >= cfg.max_samples
            ):
                stop = True
                break
        guard.flush()  # the epoch's last step
        term_sums = {k: float(v) for k, v in sums.items()}
        epoch_s = time.perf_counter() - t_epoch
        state["samples_seen"] += n_local * ctx.world_size
        state["step_seconds"] += step_s
        state["loop_seconds"] += epoch_s
        state["epoch"] = epoch + 1

        metrics: dict[str, Any] = {f"train/{k}": v / max(n_local, 1) for k, v in term_sums.items()}
        metrics["perf/samples_per_s"] = n_local * ctx.world_size / max(epoch_s, 1e-9)
        epoch_mfu = mfu(
            cfg.flops_per_sample * n_local * ctx.world_size, epoch_s, peak_flops, ctx.world_size
        )
        if epoch_mfu is not None:
            metrics["perf/mfu"] = epoch_mfu
        metrics["epoch"] = epoch + 1
        val_terms = _val_terms(model, objective, ctx)
        val = None if val_terms is None else _selection_value(objective, val_terms)
        if val is not None:
            # val/loss: the selection term's value; every other term beside it as val/<term>
            metrics["val/loss"] = val
            metrics |= {f"val/{k}": v for k, v in val_terms.items() if k != "loss"}
            if val < state["best_val"] - (es.min_delta if es else 0.0):
                state.update(best_val=val, best_epoch=epoch + 1, bad_epochs=0)
                best_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif es is not None and epoch + 1 > es.warmup_epochs:
                state["bad_epochs"] += 1
            if (
                es is not None
                and epoch + 1 > es.warmup_epochs
                and state["bad_epochs"] >= es.patience
            ):
                stop = True
        # ranks agree on stopping even if their floating-point val losses differ in the last bit
        stop = ctx.all_reduce_max(1.0 if stop else 0.0) > 0.5

        # Epoch metrics go out in batches ("history"): a Ray Train report costs up to one controller
        # poll, so reporting every epoch of a fast trial would dominate its wall time.
        history.append(metrics)
        state["epoch_log"].append(metrics)
        finishing = stop or state["epoch"] >= cfg.max_epochs
        checkpoint_due = bool(cfg.checkpoint_every) and state["epoch"] % cfg.checkpoint_every == 0
        if finishing or checkpoint_due or time.monotonic() - last_report >= cfg.report_interval_s:
            if finishing:
                history[-1]["train/early_stopped"] = float(stop and val is not None)
            batch = {**history[-1], "history": history}
            if checkpoint_due and not finishing:
                _report_with_checkpoint(ctx, batch, net, optimizer, state, best_weights)
            else:
                ctx.report(batch)
            history = []
            last_report = time.monotonic()

    if best_weights is not None:
        net.load_state_dict(best_weights)
    final: dict[str, float] = {
        "train/best_epoch": float(state["best_epoch"]),
        "train/epochs": float(state["epoch"]),
        "train/resumed_from_epoch": float(resumed_from_epoch),
        "train/samples_seen": float(state["samples_seen"]),
        "compute/flops": cfg.flops_per_sample * state["samples_seen"],
        "compute/seconds": state["loop_seconds"],
        "perf/step_seconds": state["step_seconds"],
        "final": 1.0,
        **(extra_final or {}),
    }
    trial_mfu = mfu(final["compute/flops"], state["loop_seconds"], peak_flops, ctx.world_size)
    if trial_mfu is not None:
        final["perf/mfu"] = trial_mfu
    if ctx.rank == 0:
        search = cfg.probe.selection == "search"
        probe_data = embed(
            net.backbone,
            ctx.eval_batches("probe"),
            ctx.device,
            layers=cfg.probe.layers if search else None,
        )
        # normalised against the control wells, then every task of the study's ``eval:``
        evaluated = evaluate_probe_rows(probe_data, cfg.probe)
        final |= evaluated
        if search:  # the per-layer validation curves: a JSON artifact of the trial's run
            final[CURVES_ARTIFACT] = json.dumps(layer_curves(layers_of(probe_data), evaluated))
        final["val/best_loss"] = (
            state["best_val"] if math.isfinite(state["best_val"]) else float("nan")
        )
        if cfg.alignment is not None:  # saliency/adversarial read the probe-test images
            final |= run_alignment(
                net,
                cfg.alignment,
                held_out=lambda: ctx.eval_batches("held_out"),
                device=ctx.device,
                image_size=cfg.input_shape[-1],
            )
    _report_with_checkpoint(ctx, final, net, optimizer, state, best_weights)
    return final


def _report_with_checkpoint(
    ctx: TrainContext,
    metrics: dict[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    best_weights: dict[str, torch.Tensor] | None,
) -> None:
    if ctx.rank != 0:
        ctx.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="bioscale-ckpt-") as tmp:
        torch.save(
            {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": dict(state),
                "best_weights": best_weights,
            },
            Path(tmp) / "state.pt",
        )
        # "checkpointed": the driver logs epochs to MLflow once a checkpoint covers them
        ctx.report({**metrics, "checkpointed": 1.0}, checkpoint_dir=tmp)
