"""Ray Train adapter: ``RayContext`` (the loop's context inside a Train worker) and the trainer.

Thin by design: the loop is ``bioscale.train.loop.run``; this file only maps its context onto
``ray.train`` (dataset shards, DDP, reports with checkpoints, resume). How batches are fed
(prefetch, pinned host memory) and DDP's gradient buckets come from ``bioscale.train.runtime``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bioscale.config import from_mapping
from bioscale.train import loop
from bioscale.train.config import LoopConfig
from bioscale.train.runtime import WorkerRuntime, prepare_model_kwargs, train_batch_kwargs


class EpochCache:
    """A worker's training shard kept in memory after the first epoch, when it fits.

    The first epoch streams from Ray Data as usual and keeps a copy of each batch (on the host)
    up to ``limit_bytes``; later epochs reshuffle that copy in memory, which saves Ray Data's
    per-epoch start-up and collation, a large share of a short epoch. Every worker must make the
    same choice (their Ray Data shards advance together), so the choice is agreed through
    ``agree`` (all ranks keep their copy only if every rank's shard fitted).
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.columns: dict[str, torch.Tensor] | None = None
        self._kept: list[dict[str, torch.Tensor]] = []
        self._size = 0
        # new → (first epoch) filling → full | over → (agreed) ready | off; off from the start
        # when disabled (every rank has the same setting, so none waits for a vote)
        self._state = "new" if limit_bytes > 0 else "off"

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    def record(self, batches) -> Iterator[dict[str, torch.Tensor]]:
        """Pass the first epoch's batches through, keeping host copies while they fit."""
        if self._state == "new":
            self._state = "filling"
        for batch in batches:
            if self._state == "filling":
                self._size += sum(t.numel() * t.element_size() for t in batch.values())
                if self._size > self.limit:
                    self._state, self._kept = "over", []
                else:
                    self._kept.append({k: v.detach().to("cpu") for k, v in batch.items()})
            yield batch
        if self._state == "filling":
            self._state = "full"

    def settle(self, agree) -> None:
        """Once, after the first epoch: keep the copy if every rank's fitted and was complete
        (``agree(x)`` returns the maximum of ``x`` over ranks), else stream from now on."""
        if self._state not in ("filling", "full", "over"):
            return
        complete = self._state == "full" and bool(self._kept)
        if agree(0.0 if complete else 1.0) == 0.0:
            self.columns = {k: torch.cat([b[k] for b in self._kept]) for k in self._kept[0]}
            self._state = "ready"
        else:
            self._state = "off"
        self._kept = []

    def epoch(
        self, *, seed: int, epoch: int, batch_size: int, device: torch.device, pin: bool
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of the kept rows in a fresh order (seeded by seed and epoch)."""
        assert self.columns is not None
        n = len(next(iter(self.columns.values())))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            out = {}
            for k, v in self.columns.items():
                part = v[idx]
                out[k] = (part.pin_memory() if pin else part).to(device, non_blocking=pin)
            yield out


class RayContext:
    """The loop's context inside a Ray Train worker."""

    def __init__(self, *, batch_size: int, seed: int, runtime: WorkerRuntime | None = None) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._feed(batch_size, seed, runtime)

    def _feed(self, batch_size: int, seed: int, runtime: WorkerRuntime | None) -> None:
        """How batches are fed: their size, the shuffle seed, the runtime's feed settings."""
        self._batch_size = batch_size
        self._seed = seed
        self._runtime = runtime or WorkerRuntime()
        self._cache: dict[str, list[dict[str, torch.Tensor]]] = {}
        self._epochs = EpochCache(self._runtime.feed.cache_mib * 2**20)

    def train_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        kwargs = train_batch_kwargs(
            self._runtime.feed,
            device=self.device,
            batch_size=self._batch_size,
            seed=self._seed,
            epoch=epoch,
        )
        self._epochs.settle(self.all_reduce_max)  # every rank calls this at the same epoch
        if self._epochs.ready:
            return self._epochs.epoch(
                seed=self._seed,
                epoch=epoch,
                batch_size=self._batch_size,
                device=self.device,
                pin=bool(kwargs["pin_memory"]),
            )
        return self._epochs.record(self._dataset("train").iter_torch_batches(**kwargs))

    def eval_batches(self, name: str) -> Iterator[dict[str, torch.Tensor]]:
        """Whole eval sets, kept in memory after the first pass (``val`` is read every epoch)."""
        if name not in self._cache:
            self._cache[name] = list(
                self._dataset(name).iter_torch_batches(
                    batch_size=max(self._batch_size, 512), device=self.device
                )
            )
        return iter(self._cache[name])

    def _dataset(self, name: str):
        """This worker's shard of dataset ``name`` (anything with ``iter_torch_batches``)."""
        import ray.train

        return ray.train.get_dataset_shard(name)

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


def train_worker(config: dict[str, Any], final: loop.FinalEvaluation | None = None) -> None:
    """``train_loop_per_worker``: rebuild the typed loop config and run the plain loop.

    ``config``: ``loop`` (a ``LoopConfig`` mapping), ``batch_size_per_worker`` and, optionally,
    ``runtime`` (a ``WorkerRuntime`` mapping: DDP buckets, batch feed; defaults when absent).
    ``final``: the trial's final evaluation, run on rank 0 after training (the study's driver
    binds ``bioscale.eval.final.final_metrics``; ``None``: training metrics only).
    """
    cfg = from_mapping(LoopConfig, config["loop"], "loop")
    runtime = from_mapping(WorkerRuntime, config.get("runtime"), "runtime")
    ctx = RayContext(batch_size=config["batch_size_per_worker"], seed=cfg.seed, runtime=runtime)
    nodes = ctx.node_ids()
    loop.run(cfg, ctx, final=final, extra_final={"node_ids": ",".join(nodes)})


class CheckpointStore:
    """A trial's checkpoints under one folder or URI of the study's storage (``s3://``,
    ``gs://`` through ``pyarrow.fs``), kept as ``checkpoint_NNNNNN``: written whole, then renamed,
    and only the latest kept — what Ray Train's run storage does for a worker group."""

    def __init__(self, uri: str) -> None:
        import pyarrow.fs as pafs

        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(uri).resolve())
        self.fs.create_dir(self.root, recursive=True)
        self._scratch: tempfile.TemporaryDirectory | None = None

    def _names(self) -> list[str]:
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory
            and i.base_name.startswith("checkpoint_")
            and not i.base_name.endswith(".tmp")
        )

    def save(self, folder: str) -> None:
        import pyarrow.fs as pafs

        names = self._names()
        number = int(names[-1].split("_")[1]) + 1 if names else 1
        final = f"{self.root}/checkpoint_{number:06d}"
        tmp = final + ".tmp"
        self.fs.create_dir(tmp, recursive=True)
        pafs.copy_files(
            folder, tmp, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs
        )
        self.fs.move(tmp, final)
        for old in names:
            self.fs.delete_dir(f"{self.root}/{old}")

    def latest(self) -> str | None:
        """A local folder holding the latest checkpoint, or ``None``."""
        import pyarrow.fs as pafs

        names = self._names()
        if not names:
            return None
        source = f"{self.root}/{names[-1]}"
        if isinstance(self.fs, pafs.LocalFileSystem):
            return source
        self._scratch = tempfile.TemporaryDirectory(prefix="bioscale-ckpt-")
        pafs.LocalFileSystem().create_dir(self._scratch.name, recursive=True)
        pafs.copy_files(
            source,
            self._scratch.name,
            source_filesystem=self.fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        return self._scratch.name


class DirectContext(RayContext):
    """The loop's context run straight in the Tune trial's own process: a one-worker trial
    without a Ray Train worker group, whose controller and worker actors cost a trial several
    seconds whatever its size. Datasets are read whole (nothing to shard), reports go to Tune,
    and checkpoints to a ``CheckpointStore`` in the study's storage, so a study interrupted
    mid-trial resumes it from its last checkpoint as a Ray Train trial would."""

    def __init__(
        self,
        *,
        datasets: dict[str, Any],
        batch_size: int,
        seed: int,
        runtime: WorkerRuntime | None = None,
        checkpoints: CheckpointStore,
    ) -> None:
        import ray

        self.rank = 0
        self.world_size = 1
        gpus = ray.get_gpu_ids() if ray.is_initialized() else []
        self.device = (
            torch.device("cuda", 0) if gpus and torch.cuda.is_available() else torch.device("cpu")
        )
        self._datasets = datasets
        self._checkpoints = checkpoints
        self._feed(batch_size, seed, runtime)

    def _dataset(self, name: str):
        return self._datasets[name]  # the whole dataset: one worker, nothing to shard

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def node_ids(self) -> list[str]:
        import ray

        return [ray.get_runtime_context().get_node_id()]

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        import ray.tune

        if checkpoint_dir is not None:  # persisted before the driver hears of it
            self._checkpoints.save(checkpoint_dir)
        ray.tune.report(metrics)

    def latest_checkpoint(self) -> str | None:
        return self._checkpoints.latest()


def direct_trial(
    config: dict[str, Any],
    datasets: dict[str, Any],
    checkpoints: str,
    final: loop.FinalEvaluation | None = None,
) -> None:
    """``train_worker`` in the calling Tune trial's process (one worker; ``DirectContext``):
    ``checkpoints`` is the trial's folder or URI in the study's storage."""
    cfg = from_mapping(LoopConfig, config["loop"], "loop")
    runtime = from_mapping(WorkerRuntime, config.get("runtime"), "runtime")
    ctx = DirectContext(
        datasets=datasets,
        batch_size=config["batch_size_per_worker"],
        seed=cfg.seed,
        runtime=runtime,
        checkpoints=CheckpointStore(checkpoints),
    )
    loop.run(cfg, ctx, final=final, extra_final={"node_ids": ",".join(ctx.node_ids())})
