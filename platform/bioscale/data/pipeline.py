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
from bioscale.errors import BioscaleError


def _selected(batch: pa.Table, sample_ids: pa.Array) -> tuple[pa.Table, np.ndarray]:
    """The batch rows whose ``sample_id`` is in ``sample_ids``, and each one's position there."""
    pos = pc.index_in(batch.column("sample_id"), value_set=sample_ids)
    mask = pc.is_valid(pos)
    return batch.filter(mask), pos.filter(mask).to_numpy(zero_copy_only=False).astype(np.int64)


def _select_rows(
    batch: pa.Table, *, sample_ids: pa.Array, labels: dict[str, np.ndarray], keep: list[str]
) -> dict[str, np.ndarray]:
    """Keep the batch rows whose ``sample_id`` is selected; emit the ``keep`` columns + labels."""
    kept, where = _selected(batch, sample_ids)
    out = {c: kept.column(c).to_numpy(zero_copy_only=False) for c in keep}
    for name, values in labels.items():
        out[name] = values[where]
    return out


def select_rows(
    ds,
    sample_ids: np.ndarray,
    labels: dict[str, np.ndarray],
    keep: list[str],
    *,
    cpus_per_task: float,
):
    """``ds`` restricted to ``sample_ids`` (their ``keep`` columns) with integer ``labels``
    attached, aligned with ``sample_ids``."""
    return ds.map_batches(
        _select_rows,
        batch_format="pyarrow",
        num_cpus=cpus_per_task,
        fn_kwargs={
            "sample_ids": pa.array(list(sample_ids), type=pa.string()),
            "labels": {k: np.asarray(v, dtype=np.int64) for k, v in labels.items()},
            "keep": keep,
        },
    )


def _attach_labels(
    batch: pa.Table, *, sample_ids: pa.Array, labels: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Keep the batch rows whose ``sample_id`` is selected; emit ``x`` (B, F) float32 + labels."""
    kept, where = _selected(batch, sample_ids)
    feats = kept.column(FEATURES).combine_chunks()
    width = feats.type.list_size
    x = feats.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
    out = {"x": x}
    for name, values in labels.items():
        out[name] = values[where]
    return out


def read_parquet(paths, **kwargs):
    """``ray.data.read_parquet`` through Ray Data's V1 Parquet reader, whose read tasks take the
    ``num_cpus`` given and split a file into ``override_num_blocks`` blocks themselves.

    Every task of a trial's data pipeline must ask for a fraction of a CPU: on a cluster whose
    CPUs are mostly held by Train workers (two trials on two cores) a task that wants a whole one
    never schedules and the trial waits for its data forever. The V2 reader lists files through
    footer-reader actors that want one CPU each, and ``Dataset.repartition(n)``'s reduce tasks
    want one too; neither is used here."""
    import ray.data

    ray.data.DataContext.get_current().use_datasource_v2 = False
    return ray.data.read_parquet(paths, **kwargs)


def read_profiles(manifest: str | Path, *, num_blocks: int = 4, cpus_per_task: float = 0.25):
    """The manifest's ``sample_id`` and ``features`` columns as a Ray Dataset of ``num_blocks``
    blocks (a one-row-group file would otherwise be a single block, PLATFORM_NOTES)."""

    return read_parquet(
        str(manifest),
        columns=["sample_id", FEATURES],
        num_cpus=cpus_per_task,
        override_num_blocks=num_blocks,
    )


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


MAP_DYE = "map"  # an image manifest's expert-map column is path_map: decoded like one more dye


def manifest_has_maps(manifest: str | Path) -> bool:
    """Whether an image or natural manifest has human/expert maps (a non-empty ``path_map``)."""
    import pyarrow.parquet as pq

    if "path_map" not in pq.read_schema(manifest).names:
        return False
    column = pq.read_table(manifest, columns=["path_map"]).column("path_map")
    return column.null_count < len(column)


def _split_map(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(B, C+1, h, w) crops whose last channel is the map → ``x`` (B, C, h, w), ``map`` (B, h, w),
    ``has_map`` (B,) (a map that is zero everywhere, e.g. a control's, is no map)."""
    crops = batch.pop("x")
    maps = crops[:, -1]
    batch["x"] = np.ascontiguousarray(crops[:, :-1])
    batch["map"] = np.ascontiguousarray(maps)
    batch["has_map"] = maps.reshape(len(maps), -1).max(axis=1) > 0
    return batch


def read_sites(
    manifest: str | Path,
    dyes: list[str],
    *,
    extra: list[str] | tuple[str, ...] = (),
    num_blocks: int = 8,
    cpus_per_task: float = 0.25,
):
    """An image manifest's ``sample_id`` and ``path_<Dye>`` columns (and the ``extra`` ones, e.g.
    ``plate`` or ``illum_<Dye>``) as a Ray Dataset (a dye may be ``MAP_DYE``: the expert map)."""

    columns = ["sample_id", *[f"path_{d}" for d in dyes], *extra]
    return read_parquet(
        str(manifest), columns=columns, num_cpus=cpus_per_task, override_num_blocks=num_blocks
    )


def site_columns(image, dyes: list[str]) -> list[str]:
    """The manifest columns besides ``sample_id`` and the paths that decoding ``dyes`` as
    ``image`` (an ``ImageConfig``) reads: ``plate`` for plate-control bounds, ``illum_<Dye>``."""
    extra = ["plate"] if image.normalise == "plate_controls" else []
    if image.illumination:
        extra += [f"illum_{d}" for d in dyes if d != MAP_DYE]
    return extra


def decoded_sites(
    sites,
    sample_ids: np.ndarray,
    labels: dict[str, np.ndarray],
    *,
    image,
    dyes: list[str],
    training: bool,
    seed: int | None,
    batch_size: int,
    cpus_per_task: float,
    select_cpus: float = 0.25,
    with_maps: bool = False,
    skips=None,
    decode_tasks: int | None = None,
    plate_stats: dict[str, np.ndarray] | None = None,
):
    """Selected sites → decoded crops ``{"x": (C, crop, crop) float32, <label>: int64}``, streamed.

    ``image`` (a :class:`bioscale.data.images.ImageConfig`) says how a site becomes crops;
    ``training`` takes its ``crops_per_site`` random crops per site (fresh every pass when
    ``seed`` is None), otherwise one centre crop. ``sites`` must hold the columns
    :func:`site_columns` names. Rows are selected (and labelled) before any pixel is read;
    decoding runs in parallel ``map_batches`` tasks of ``batch_size`` sites. A site that cannot
    be read stops the trial with the sample and file named; with ``skips`` (a
    :class:`SkipLedger` actor) it is dropped instead and recorded there. ``with_maps`` decodes
    the expert map as one more channel, so it gets exactly the image's crops, then splits it off
    as ``map``/``has_map``. ``plate_stats``: the per-plate control bounds of ``normalise:
    plate_controls`` (``bioscale.data.images.plate_control_stats``). ``decode_tasks`` caps the
    concurrent decode tasks (default: as many as the CPUs allow).
    """
    from dataclasses import replace

    from bioscale.data.images import decode_rows

    if image.normalise == "plate_controls" and plate_stats is None:
        raise BioscaleError(
            "normalise: plate_controls needs the plates' control bounds (plate_control_stats)"
        )
    dyes = [*dyes, MAP_DYE] if with_maps else list(dyes)
    cfg = image.decode_config(
        dyes,
        mode="random" if training else "centre",
        per_site=image.crops_per_site if training else 1,
    )
    cfg = replace(cfg, bad_sample_policy="error" if skips is None else "skip")
    keep = ["sample_id", *[f"path_{d}" for d in dyes], *site_columns(image, dyes)]
    selected = select_rows(sites, sample_ids, labels, keep, cpus_per_task=select_cpus)
    import ray.data

    decoded = selected.map_batches(
        decode_rows,
        batch_format="numpy",
        batch_size=batch_size,
        num_cpus=cpus_per_task,
        compute=None if decode_tasks is None else ray.data.TaskPoolStrategy(size=decode_tasks),
        fn_kwargs={"cfg": cfg, "rng": seed, "plate_stats": plate_stats},
    )
    if skips is not None:
        decoded = decoded.map_batches(
            _drop_bad, batch_format="numpy", num_cpus=select_cpus, fn_kwargs={"skips": skips}
        )
    if with_maps:
        decoded = decoded.map_batches(_split_map, batch_format="numpy", num_cpus=select_cpus)
        return decoded.select_columns(["x", "map", "has_map", *labels])
    return decoded.select_columns(["x", *labels])


class SkipLedger:
    """The sites a trial's decode tasks could not read (``bad_samples: skip``), collected from
    every task; a Ray actor that takes no CPU (``skip_ledger``)."""

    def __init__(self) -> None:
        self.bad: dict[str, str] = {}

    def add(self, entries: list[tuple[str, str]]) -> None:
        for sample_id, error in entries:
            self.bad.setdefault(sample_id, error)

    def entries(self) -> dict[str, str]:
        return dict(self.bad)


def skip_ledger():
    """A fresh :class:`SkipLedger` actor (0 CPU, so it never competes with a trial's data)."""
    import ray

    return ray.remote(num_cpus=0)(SkipLedger).remote()


def _drop_bad(batch: dict[str, np.ndarray], *, skips) -> dict[str, np.ndarray]:
    """Drop the crops of sites that failed to decode and record them in the ledger."""
    ok = batch.pop("ok")
    errors = batch.pop("error")
    if not ok.all():
        bad = {
            str(s): str(e)
            for s, e, good in zip(batch["sample_id"], errors, ok, strict=True)
            if not good
        }
        skips.add.remote(sorted(bad.items()))
    return {name: values[ok] for name, values in batch.items()}


def decoded_natural(
    manifest: str | Path,
    sample_ids: np.ndarray,
    labels: dict[str, np.ndarray],
    *,
    size: int,
    flip: bool,
    seed: int | None,
    batch_size: int,
    cpus_per_task: float,
    select_cpus: float = 0.25,
    maps=None,
):
    """Selected natural images → ``{"x": (3, size, size), "map": (size, size), "has_map": bool,
    <label>: int64}``, decoded in parallel ``map_batches`` tasks (maps flip with their image;
    ``maps``: how they are blurred, ``bioscale.data.natural.MapConfig``, default ``release``)."""

    from bioscale.data.natural import decode_natural

    keep = ["sample_id", "path_image", "path_map"]
    rows = read_parquet(str(manifest), columns=keep, num_cpus=select_cpus, override_num_blocks=8)
    selected = select_rows(rows, sample_ids, labels, keep, cpus_per_task=select_cpus)
    decoded = selected.map_batches(
        decode_natural,
        batch_format="numpy",
        batch_size=batch_size,
        num_cpus=cpus_per_task,
        fn_kwargs={"size": size, "flip": flip, "seed": seed, "maps": maps},
    )
    return decoded.select_columns(["x", "map", "has_map", *labels])


def rows_in_order(manifest: str | Path, sample_ids: np.ndarray, columns: list[str]) -> pa.Table:
    """The manifest's ``columns`` of ``sample_ids``, in that order, read with pyarrow (only the
    row groups that hold them)."""
    import pyarrow.parquet as pq

    wanted = pa.array(list(sample_ids), type=pa.string())
    table = pq.read_table(
        manifest, columns=["sample_id", *columns], filters=pc.field("sample_id").isin(wanted)
    )
    return table.take(pc.index_in(wanted, value_set=table.column("sample_id")))


def labelled_dataset(tensors: dict[str, np.ndarray], labels: dict[str, np.ndarray]):
    """A small in-memory Ray Dataset: tensor columns (one row per sample) and int64 labels."""
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    columns = {k: ArrowTensorArray.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    columns |= {k: pa.array(np.asarray(v, dtype=np.int64)) for k, v in labels.items()}
    return ray.data.from_arrow(pa.table(columns))


def profile_rows(
    manifest: str | Path,
    sample_ids: np.ndarray,
    labels: dict[str, np.ndarray],
    transform=None,
):
    """A small labelled profile set as a Ray Dataset: ``{"x": (F,) float32, <label>: int64}`` in
    ``sample_ids`` order; ``transform(x)`` (rows in that order) preprocesses the features first."""
    table = rows_in_order(manifest, sample_ids, [FEATURES])
    feats = table.column(FEATURES).combine_chunks()
    x = feats.flatten().to_numpy(zero_copy_only=False).reshape(len(table), feats.type.list_size)
    x = x if transform is None else transform(x)
    return labelled_dataset({"x": np.asarray(x, dtype=np.float32)}, labels)
