"""The small context the training loop is written against, and its plain-torch implementation.

The loop never imports Ray. ``LocalContext`` runs it in-process on numpy arrays (unit tests, quick
experiments); ``bioscale.train.ray_worker.RayContext`` runs it as a Ray Train worker.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


class TrainContext(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def train_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """This worker's shard of the training diet, one pass, shuffled per epoch."""

    def eval_batches(self, name: str) -> Iterator[dict[str, torch.Tensor]]:
        """A whole, unsharded evaluation set (``val`` for early stopping, ``probe`` for probes)."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to device and wrap for data parallelism where there are several workers."""

    def all_reduce_max(self, value: float) -> float:
        """The maximum of ``value`` over workers (1 worker: ``value``)."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        """Report metrics (and, from rank 0, a checkpoint folder); every rank calls it equally often."""

    def latest_checkpoint(self) -> str | None:
        """The folder of the last reported checkpoint when resuming, else ``None``."""


class LocalContext:
    """One process, numpy arrays in memory: the loop without Ray."""

    rank = 0
    world_size = 1

    def __init__(
        self,
        *,
        train: dict[str, np.ndarray],
        evals: dict[str, dict[str, np.ndarray]],
        batch_size: int,
        seed: int = 0,
        checkpoint_root: str | None = None,
    ) -> None:
        self.device = torch.device("cpu")
        self._train = train
        self._evals = evals
        self._batch_size = batch_size
        self._seed = seed
        self.reports: list[dict[str, Any]] = []
        self._ckpt_root = Path(checkpoint_root or tempfile.mkdtemp(prefix="bioscale-ckpt-"))
        if checkpoint_root is None:  # a folder of its own: removed with the context
            weakref.finalize(self, shutil.rmtree, self._ckpt_root, ignore_errors=True)
        self._last_ckpt: str | None = None

    def train_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        n = len(next(iter(self._train.values())))
        order = np.random.default_rng((self._seed, epoch)).permutation(n)
        for start in range(0, n, self._batch_size):
            rows = order[start : start + self._batch_size]
            yield {
                k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in self._train.items()
            }

    def eval_batches(self, name: str) -> Iterator[dict[str, torch.Tensor]]:
        data = self._evals[name]
        n = len(next(iter(data.values())))
        for start in range(0, n, self._batch_size):
            yield {
                k: torch.from_numpy(np.ascontiguousarray(v[start : start + self._batch_size]))
                for k, v in data.items()
            }

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def all_reduce_max(self, value: float) -> float:
        return value

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None:
            dest = self._ckpt_root / f"checkpoint_{len(self.reports):06d}"
            shutil.copytree(checkpoint_dir, dest)
            self._last_ckpt = str(dest)

    def latest_checkpoint(self) -> str | None:
        return self._last_ckpt
