"""A worker's training shard kept in memory after the first epoch (``train.feed.cache_mib``)."""

from __future__ import annotations

import pytest
import torch

from bioscale.train.ray_worker import EpochCache

pytestmark = pytest.mark.timeout(60)


def _batches(n: int, batch: int):
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1).repeat(1, 4)
    y = torch.arange(n)
    return [{"x": x[s : s + batch], "y": y[s : s + batch]} for s in range(0, n, batch)]


def test_after_the_first_epoch_every_row_comes_back_once_in_a_new_order():
    cache = EpochCache(limit_bytes=2**20)
    first = list(cache.record(iter(_batches(50, 16))))
    assert [len(b["y"]) for b in first] == [16, 16, 16, 2], "the first epoch passes through"
    votes = []
    cache.settle(lambda v: votes.append(v) or v)
    assert cache.ready and votes == [0.0]
    one = list(cache.epoch(seed=0, epoch=1, batch_size=16, device=torch.device("cpu"), pin=False))
    two = list(cache.epoch(seed=0, epoch=2, batch_size=16, device=torch.device("cpu"), pin=False))
    rows_one = torch.cat([b["y"] for b in one])
    assert sorted(rows_one.tolist()) == list(range(50))
    assert rows_one.tolist() != torch.cat([b["y"] for b in two]).tolist()
    for b in one:  # rows keep their columns together
        assert torch.equal(b["x"][:, 0], b["y"].float())
    cache.settle(lambda v: pytest.fail("the choice is made once"))


def test_a_shard_over_the_limit_keeps_streaming():
    cache = EpochCache(limit_bytes=100)
    assert len(list(cache.record(iter(_batches(50, 16))))) == 4
    cache.settle(lambda v: v)
    assert not cache.ready


def test_every_rank_streams_when_one_rank_could_not_keep_its_shard():
    cache = EpochCache(limit_bytes=2**20)
    list(cache.record(iter(_batches(20, 8))))
    cache.settle(lambda v: max(v, 1.0))  # another rank's shard did not fit
    assert not cache.ready


def test_an_epoch_left_early_is_not_kept():
    cache = EpochCache(limit_bytes=2**20)
    for i, _ in enumerate(cache.record(iter(_batches(50, 16)))):
        if i == 1:
            break
    cache.settle(lambda v: v)
    assert not cache.ready


def test_disabled_cache_never_votes():
    cache = EpochCache(limit_bytes=0)
    list(cache.record(iter(_batches(10, 4))))
    cache.settle(lambda v: pytest.fail("no vote when the cache is off"))
    assert not cache.ready
