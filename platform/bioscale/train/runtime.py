"""How a trial's workers run, apart from what they learn: DDP bucketing and the batch feed.

These settings change speed and memory, not the trained model, so they are not part of a trial's
key (unlike ``LoopConfig``): the driver passes them beside the loop config as ``runtime`` (see
``bioscale.train.ray_worker.train_worker``). The builders return the keyword arguments of Ray
Train's ``prepare_model`` and Ray Data's ``iter_torch_batches`` (Ray 2.60), so they are tested
without Ray. No torch or Ray import here: ``bioscale.study.spec`` embeds these configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bioscale.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class DdpConfig:
    """``torch.nn.parallel.DistributedDataParallel`` options for trials with several workers.

    Attributes:
        bucket_cap_mb: gradients are all-reduced in buckets of this size (MiB) while backward is
            still running, so communication overlaps compute (torch's default is 25).
        gradient_as_bucket_view: gradients are views into the all-reduce buckets instead of copies
            (saves one gradient-sized copy of memory and a copy per step).
        static_graph: the set of parameters used per step never changes; lets DDP skip the search
            for unused parameters. Leave off for objectives whose heads are used conditionally.
    """

    bucket_cap_mb: float = 25.0
    gradient_as_bucket_view: bool = True
    static_graph: bool = False

    def __post_init__(self) -> None:
        if self.bucket_cap_mb <= 0:
            raise ConfigError("train.ddp.bucket_cap_mb must be > 0 (MiB)")


@dataclass(frozen=True, kw_only=True)
class FeedConfig:
    """How training batches reach the device.

    Attributes:
        pin_memory: page-locked host batches, so host→device copies are asynchronous
            (``non_blocking``); ``auto`` pins on CUDA devices only (pinning buys nothing on CPU).
        prefetch_batches: batches Ray Data fetches, decodes and collates ahead of the one being
            trained on, in a background thread, so decoding overlaps compute.
        cache_mib: the in-worker epoch cache's size limit (see the field).
    """

    pin_memory: Literal["auto", "on", "off"] = "auto"
    prefetch_batches: int = 2
    #: a worker whose training shard fits in this many MiB keeps it in memory after the first
    #: epoch and shuffles it there, instead of restarting Ray Data every epoch (0: always stream).
    #: Image studies always stream: every epoch draws fresh random crops.
    cache_mib: int = 512

    def __post_init__(self) -> None:
        if self.prefetch_batches < 0:
            raise ConfigError("train.feed.prefetch_batches must be >= 0")
        if self.cache_mib < 0:
            raise ConfigError("train.feed.cache_mib must be >= 0 (0: stream every epoch)")


@dataclass(frozen=True, kw_only=True)
class WorkerRuntime:
    ddp: DdpConfig = field(default_factory=DdpConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)


def prepare_model_kwargs(ddp: DdpConfig) -> dict[str, Any]:
    """Keyword arguments of ``ray.train.torch.prepare_model`` (used only with several workers)."""
    return {
        "parallel_strategy": "ddp",
        "parallel_strategy_kwargs": {
            "bucket_cap_mb": ddp.bucket_cap_mb,
            "gradient_as_bucket_view": ddp.gradient_as_bucket_view,
            "static_graph": ddp.static_graph,
        },
    }


def pins(feed: FeedConfig, device_type: str) -> bool:
    """Whether batches for a device of ``device_type`` (``cuda``, ``cpu``) are pinned."""
    if feed.pin_memory == "auto":
        return device_type == "cuda"
    return feed.pin_memory == "on"


def train_batch_kwargs(
    feed: FeedConfig, *, device: Any, batch_size: int, seed: int, epoch: int
) -> dict[str, Any]:
    """Keyword arguments of ``DataIterator.iter_torch_batches`` for one training epoch: shuffled
    per epoch, prefetched, pinned where the device is a GPU, copied to ``device``."""
    return {
        "batch_size": batch_size,
        "local_shuffle_buffer_size": 4 * batch_size,
        "local_shuffle_seed": seed * 100_003 + epoch,
        "prefetch_batches": feed.prefetch_batches,
        "pin_memory": pins(feed, getattr(device, "type", str(device))),
        "device": device,
    }
