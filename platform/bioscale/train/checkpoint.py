"""A trial's checkpoint: the network, the optimiser, the loop's state and the best weights so far,
in one ``state.pt`` per reported checkpoint folder (loaded with ``weights_only``)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bioscale.train.context import TrainContext

log = logging.getLogger(__name__)

#: The file of a checkpoint folder.
STATE_FILE = "state.pt"


def resume(
    ctx: TrainContext,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> dict[str, torch.Tensor] | None:
    """Load the context's latest checkpoint, if any, into ``net``, ``optimizer`` and ``state``
    (in place); returns the best weights it holds (``None``: a fresh start or none yet)."""
    folder = ctx.latest_checkpoint()
    if folder is None:
        return None
    ckpt = torch.load(Path(folder) / STATE_FILE, map_location=ctx.device, weights_only=True)
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state.update(ckpt["state"])
    log.info("resumed from %s at epoch %d", folder, state["epoch"])
    return ckpt["best_weights"]


def report_with_checkpoint(
    ctx: TrainContext,
    metrics: dict[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    best_weights: dict[str, torch.Tensor] | None,
) -> None:
    """Report ``metrics`` with a checkpoint from rank 0 (other ranks report the same number of
    times, without one); the report carries ``checkpointed`` = 1."""
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
            Path(tmp) / STATE_FILE,
        )
        # "checkpointed": the driver logs epochs to MLflow once a checkpoint covers them
        ctx.report({**metrics, "checkpointed": 1.0}, checkpoint_dir=tmp)
