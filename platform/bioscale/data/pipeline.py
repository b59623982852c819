"""Ray Data pipelines: manifest → the trial's rows with their labels → tensors for Ray Train.

The driver decides *which* rows a trial uses (diets are computed from the metadata columns alone);
the feature payload is read by Ray Data tasks and reaches workers through Ray Train's dataset
sharding — never through the driver.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bioscale.data.manifest import FEATURES


def _attach_labels(
    batch: pa.Table, *, sample_ids: pa.Array, labels: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Keep the batch rows whose ``sample_id`` is selected; emit ``x`` (B, F) float32 + labels."""
    pos = pc.index_in(batch.column("sample_id"), value_set=sample_ids)
    keep = pc.is_valid(pos)
    kept = batch.filter(keep)
    where = pos.filter(keep).to_numpy(zero_copy_only=False).astype(np.int64)
    feats = kept.column(FEATURES).combine_chunks()
    width = feats.type.list_size
    x = feats.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
    out = {"x": x}
    for name, values in labels.items():
        out[name] = values[where]
    return out


def read_profiles(manifest: str | Path, *, num_blocks: int = 4, cpus_per_task: float = 0.25):
    """The manifest's ``sample_id`` and ``features`` columns as a Ray Dataset of ``num_blocks``
    blocks (a one-row-group file would otherwise be a single block, PLATFORM_NOTES)."""
    import ray.data

    ds = ray.data.read_parquet(
        str(manifest), columns=["sample_id", FEATURES], num_cpus=cpus_per_task
    )
    return ds.repartition(num_blocks)


def with_labels(
    profiles, sample_ids: np.ndarray, labels: dict[str, np.ndarray], *, cpus_per_task: float = 0.25
):
    """Rows of ``profiles`` whose ``sample_id`` is selected, as ``{"x": (F,) float32, <label>:
    int64}``; ``labels`` are aligned with ``sample_ids``."""
    return profiles.map_batches(
        _attach_labels,
        batch_format="pyarrow",
        num_cpus=cpus_per_task,
        fn_kwargs={
            "sample_ids": pa.array(list(sample_ids), type=pa.string()),
            "labels": {k: np.asarray(v, dtype=np.int64) for k, v in labels.items()},
        },
    )
