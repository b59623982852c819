"""The training input streams: a decoded-crop stream several times larger than the object-store
budget Ray Data is given still completes, holding only a bounded window of it at a time."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.timeout(300)

BUDGET = 16 * 1024**2  # Ray Data's object-store limit for this stream, bytes


def test_a_crop_stream_larger_than_its_object_store_budget_completes(ray_local, tmp_path):
    import ray.data
    from ray.data import ExecutionResources

    from bioscale.data.images import ImageConfig
    from bioscale.data.manifest import dyes_of
    from bioscale.data.pipeline import decoded_sites, read_sites
    from bioscale.data.synth_images import SynthImagesConfig, generate_images

    manifest = generate_images(SynthImagesConfig(size=128, expert_maps=False), tmp_path).manifest
    dyes = dyes_of(pq.read_schema(manifest))
    ids = np.array(pq.read_table(manifest, columns=["sample_id"]).column(0).to_pylist())
    crops_per_site = 16
    context = ray.data.DataContext.get_current()
    before = context.execution_options.resource_limits
    context.execution_options.resource_limits = ExecutionResources(object_store_memory=BUDGET)
    try:
        stream = decoded_sites(
            read_sites(manifest, dyes, cpus_per_task=0.1),
            ids,
            {"y": np.zeros(len(ids), dtype=np.int64)},
            image=ImageConfig(crop=64, crops_per_site=crops_per_site),
            dyes=dyes,
            training=True,
            seed=0,
            batch_size=4,
            cpus_per_task=0.25,
            select_cpus=0.1,
        )
        crops = streamed = 0
        for batch in stream.iter_batches(batch_size=64, batch_format="numpy"):
            crops += len(batch["x"])
            streamed += batch["x"].nbytes
    finally:
        context.execution_options.resource_limits = before
    assert crops == crops_per_site * len(ids)
    assert streamed > 4 * BUDGET, f"only {streamed / 2**20:.0f} MiB streamed: not a real test"
