"""The per-worker training loop: plain torch, written against ``TrainContext``.

It owns the optimisation (AdamW, weight decay once via parameter groups, coupled or decoupled;
the budget; early stopping on the objective's selection term over the validation subset of
training wells; checkpoint and resume); the objective only returns named loss terms. A non-finite
training loss fails the trial at once (``TrainingError`` naming the epoch, step and terms). After
training it restores the best weights and, on rank 0, hands the network to the trial's final
evaluation (a ``FinalEvaluation`` hook: the study wires ``bioscale.eval.final.final_metrics``,
the probes and alignment metrics; without a hook only the training metrics are reported). Every
rank reports the same number of times; only rank 0's metrics carry content.

The pieces: one step (network, AdamW groups, autocast, backward) is ``bioscale.train.step``;
checkpoint and resume ``bioscale.train.checkpoint``; here one epoch (``_train_epoch``), the
selection of the best epoch and early stopping (``_select``) and batched reports
(``_Reports``). Loss terms stay on the device until an epoch ends, so a GPU never waits on the
host between steps. On a GPU whose peak ``bioscale.hardware`` knows, ``perf/mfu`` (per epoch and
for the trial) is the measured training FLOPs (``flops_per_sample`` × samples) per second over the
peak of all workers' devices.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bioscale.errors import TrainingError
from bioscale.hardware import device_peak_flops, mfu
from bioscale.train.checkpoint import report_with_checkpoint, resume
from bioscale.train.config import LoopConfig
from bioscale.train.context import TrainContext
from bioscale.train.precision import StepNumerics, prepare_layout, resolve_precision
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
__all__ = ["FinalEvaluation", "LoopConfig", "Network", "build_network", "param_groups", "run"]

log = logging.getLogger(__name__)

#: The trial's final evaluation: (trained network, best weights restored; the context; the
#: config) → final metrics. Called on rank 0 only, after training.
FinalEvaluation = Callable[[Network, TrainContext, LoopConfig], dict[str, Any]]


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


@dataclass(frozen=True)
class _Epoch:
    """One epoch's training pass on this worker."""

    term_sums: dict[str, float]  # loss term → Σ term × batch size
    n_local: int  # samples this worker trained on
    seconds: float  # wall time of the pass
    step_seconds: float  # of which inside ``train_step``
    budget_spent: bool  # ``max_samples`` reached mid-epoch


def _train_epoch(
    cfg: LoopConfig,
    ctx: TrainContext,
    *,
    model: nn.Module,
    objective: Any,
    optimizer: torch.optim.Optimizer,
    numerics: StepNumerics,
    guard: FiniteLossGuard,
    epoch: int,
    samples_seen: int,
) -> _Epoch:
    """Train one pass over this worker's shard (``epoch`` 0-based), stopping early when the
    samples budget runs out; every step's loss terms are checked for NaN/Inf."""
    model.train()
    sums: dict[str, torch.Tensor] = {}  # loss term → Σ term × batch size, on the device
    n_local = 0
    t_epoch = time.perf_counter()
    step_s = 0.0
    step = 0
    spent = False
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
            and samples_seen + n_local * ctx.world_size >= cfg.max_samples
        ):
            spent = True
            break
    guard.flush()  # the epoch's last step
    return _Epoch(
        term_sums={k: float(v) for k, v in sums.items()},
        n_local=n_local,
        seconds=time.perf_counter() - t_epoch,
        step_seconds=step_s,
        budget_spent=spent,
    )


def _select(
    state: dict[str, Any], val: float, epoch: int, es: EarlyStopping | None
) -> tuple[bool, bool]:
    """Record epoch ``epoch`` (1-based) with selection value ``val`` in ``state``: ``(improved,
    stop)``; ``improved``: the best epoch so far (by ``es.min_delta``), whose weights are kept;
    ``stop``: ``es.patience`` epochs without improvement after ``es.warmup_epochs``."""
    improved = val < state["best_val"] - (es.min_delta if es else 0.0)
    if improved:
        state.update(best_val=val, best_epoch=epoch, bad_epochs=0)
    elif es is not None and epoch > es.warmup_epochs:
        state["bad_epochs"] += 1
    stop = es is not None and epoch > es.warmup_epochs and state["bad_epochs"] >= es.patience
    return improved, stop


class _Reports:
    """Epoch metrics go out in batches (``history``): a Ray Train report costs up to one
    controller poll, so reporting every epoch of a fast trial would dominate its wall time. A
    batch goes out when the trial finishes, a checkpoint is due (it carries the checkpoint) or
    ``report_interval_s`` has passed."""

    def __init__(self, interval_s: float, history: list[dict[str, Any]]) -> None:
        self.interval_s = interval_s
        self.history = history  # a resumed trial's epochs again first (its driver logs each once)
        self.last = time.monotonic()

    def due(self, *, finishing: bool, checkpoint_due: bool) -> bool:
        return finishing or checkpoint_due or time.monotonic() - self.last >= self.interval_s

    def take(self) -> dict[str, Any]:
        """The last epoch's metrics with every unreported epoch as ``history``."""
        batch, self.history = {**self.history[-1], "history": self.history}, []
        self.last = time.monotonic()
        return batch


def _prepare(
    cfg: LoopConfig, ctx: TrainContext
) -> tuple[Network, nn.Module, Any, torch.optim.Optimizer, StepNumerics]:
    """Seeds, the network (``net``; ``model`` as the context wraps it for the step), the
    objective, the optimiser and the step's numerics on this worker's device."""
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
    return net, model, objective, optimizer, numerics


def _epoch_metrics(
    cfg: LoopConfig, done: _Epoch, epoch: int, world_size: int, peak_flops: float | None
) -> dict[str, Any]:
    """``train/<term>`` (sample means), ``perf/samples_per_s`` (all workers), ``perf/mfu`` (with
    a known peak) and ``epoch`` (1-based) of one epoch."""
    samples = done.n_local * world_size
    metrics: dict[str, Any] = {
        f"train/{k}": v / max(done.n_local, 1) for k, v in done.term_sums.items()
    }
    metrics["perf/samples_per_s"] = samples / max(done.seconds, 1e-9)
    epoch_mfu = mfu(cfg.flops_per_sample * samples, done.seconds, peak_flops, world_size)
    if epoch_mfu is not None:
        metrics["perf/mfu"] = epoch_mfu
    metrics["epoch"] = epoch
    return metrics


def _totals(
    cfg: LoopConfig,
    state: dict[str, Any],
    resumed_from_epoch: int,
    world_size: int,
    peak_flops: float | None,
) -> dict[str, Any]:
    """The trial's training totals: epochs, samples, FLOPs (``flops_per_sample`` × samples seen),
    seconds and, with a known peak, ``perf/mfu``."""
    totals: dict[str, Any] = {
        "train/best_epoch": float(state["best_epoch"]),
        "train/epochs": float(state["epoch"]),
        "train/resumed_from_epoch": float(resumed_from_epoch),
        "train/samples_seen": float(state["samples_seen"]),
        "compute/flops": cfg.flops_per_sample * state["samples_seen"],
        "compute/seconds": state["loop_seconds"],
        "perf/step_seconds": state["step_seconds"],
        "final": 1.0,
    }
    trial_mfu = mfu(totals["compute/flops"], state["loop_seconds"], peak_flops, world_size)
    if trial_mfu is not None:
        totals["perf/mfu"] = trial_mfu
    return totals


def run(
    cfg: LoopConfig,
    ctx: TrainContext,
    *,
    final: FinalEvaluation | None = None,
    extra_final: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, restore the best weights, run ``final`` on rank 0; return rank 0's final metrics
    (training totals, ``final``'s metrics, ``val/best_loss``, plus ``extra_final``)."""
    net, model, objective, optimizer, numerics = _prepare(cfg, ctx)
    guard = FiniteLossGuard(ctx.device)
    peak_flops = device_peak_flops(ctx.device)  # None on CPUs and unknown GPUs: no perf/mfu

    state: dict[str, Any] = {
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
    best_weights = resume(ctx, net, optimizer, state)
    resumed_from_epoch = state["epoch"]  # 0 on a fresh start; a restarted worker group's checkpoint

    reports = _Reports(cfg.report_interval_s, list(state["epoch_log"]))
    stop = False
    while state["epoch"] < cfg.max_epochs and not stop:
        epoch = state["epoch"]
        done = _train_epoch(
            cfg,
            ctx,
            model=model,
            objective=objective,
            optimizer=optimizer,
            numerics=numerics,
            guard=guard,
            epoch=epoch,
            samples_seen=state["samples_seen"],
        )
        stop = done.budget_spent
        samples = done.n_local * ctx.world_size
        state["samples_seen"] += samples
        state["step_seconds"] += done.step_seconds
        state["loop_seconds"] += done.seconds
        state["epoch"] = epoch + 1

        metrics = _epoch_metrics(cfg, done, epoch + 1, ctx.world_size, peak_flops)
        val_terms = _val_terms(model, objective, ctx)
        val = None if val_terms is None else _selection_value(objective, val_terms)
        if val is not None:
            # val/loss: the selection term's value; every other term beside it as val/<term>
            metrics["val/loss"] = val
            metrics |= {f"val/{k}": v for k, v in val_terms.items() if k != "loss"}
            improved, patience_out = _select(state, val, epoch + 1, cfg.early_stopping)
            if improved:
                best_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
            stop = stop or patience_out
        # ranks agree on stopping even if their floating-point val losses differ in the last bit
        stop = ctx.all_reduce_max(1.0 if stop else 0.0) > 0.5

        reports.history.append(metrics)
        state["epoch_log"].append(metrics)
        finishing = stop or state["epoch"] >= cfg.max_epochs
        checkpoint_due = bool(cfg.checkpoint_every) and state["epoch"] % cfg.checkpoint_every == 0
        if reports.due(finishing=finishing, checkpoint_due=checkpoint_due):
            if finishing:
                metrics["train/early_stopped"] = float(stop and val is not None)
            batch = reports.take()
            if checkpoint_due and not finishing:
                report_with_checkpoint(ctx, batch, net, optimizer, state, best_weights)
            else:
                ctx.report(batch)

    if best_weights is not None:
        net.load_state_dict(best_weights)
    totals = _totals(cfg, state, resumed_from_epoch, ctx.world_size, peak_flops)
    totals |= extra_final or {}
    if ctx.rank == 0:
        if final is not None:
            totals |= final(net, ctx, cfg)
        best = state["best_val"]
        totals["val/best_loss"] = best if math.isfinite(best) else float("nan")
    report_with_checkpoint(ctx, totals, net, optimizer, state, best_weights)
    return totals
