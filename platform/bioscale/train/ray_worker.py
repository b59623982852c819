"""Ray Train adapter: ``RayContext`` (the loop's context inside a Train worker) and the trainer.

Thin by design: the loop is ``bioscale.train.loop.run``; this file only maps its context onto
``ray.train`` (dataset shards, DDP, reports with checkpoints, resume). How batches are fed
(prefetch, pinned host memory) and DDP's gradient buckets come from ``bioscale.train.runtime``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from bioscale.config import from_mapping
from bioscale.train import loop
from bioscale.train.runtime import WorkerRuntime, prepare_model_kwargs, train_batch_kwargs


class RayContext:
    """The loop's context inside a Ray Train worker."""

    def __init__(self, *, batch_size: int, seed: int, runtime: WorkerRuntime | None = None) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._batch_size = batch_size
        self._seed = seed
        self._runtime = runtime or WorkerRuntime()
        self._cache: dict[str, list[dict[str, torch.Tensor]]] = {}

    def train_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        import ray.train

        shard = ray.train.get_dataset_shard("train")
        return shard.iter_torch_batches(
            **train_batch_kwargs(
                self._runtime.feed,
                device=self.device,
                batch_size=self._batch_size,
                seed=self._seed,
                epoch=epoch,
            )
        )

    def eval_batches(self, name: str) -> Iterator[dict[str, torch.Tensor]]:
        """Whole eval sets, kept in memory after the first pass (``val`` is read every epoch)."""
        import ray.train

        if name not in self._cache:
            shard = ray.train.get_dataset_shard(name)
            self._cache[name] = list(
                shard.iter_torch_batches(batch_size=max(self._batch_size, 512))
            )
        return iter(self._cache[name])

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model, **prepare_model_kwargs(self._runtime.ddp))

    def all_reduce_max(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())

    def node_ids(self) -> list[str]:
        """The Ray node ids of every worker of this trial (gathered on every rank)."""
        import ray

        mine = ray.get_runtime_context().get_node_id()
        if self.world_size == 1:
            return [mine]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, mine)
        return sorted(set(out))

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def latest_checkpoint(self) -> str | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        return ckpt.to_directory()


def train_worker(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: rebuild the typed loop config and run the plain loop.

    ``config``: ``loop`` (a ``LoopConfig`` mapping), ``batch_size_per_worker`` and, optionally,
    ``runtime`` (a ``WorkerRuntime`` mapping: DDP buckets, batch feed; defaults when absent).
    """
    cfg = from_mapping(loop.LoopConfig, config["loop"], "loop")
    runtime = from_mapping(WorkerRuntime, config.get("runtime"), "runtime")
    ctx = RayContext(batch_size=config["batch_size_per_worker"], seed=cfg.seed, runtime=runtime)
    nodes = ctx.node_ids()
    loop.run(cfg, ctx, extra_final={"node_ids": ",".join(nodes)})
