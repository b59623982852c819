"""``bioscale data pack``: decode, normalise and crop an image manifest once into Parquet shards.

Decoding LZW TIFFs costs tens of milliseconds per site and core; reading a packed crop is a
memory copy. Each shard ``shard-NNNNN.parquet`` holds one row per crop: the manifest's metadata
columns, ``crop_index``, ``bounds`` ((C, 2) float32 [low, high] normalisation bounds, flattened)
and ``x``, the crop's (C, h, w) pixels as fixed-size bytes:

- ``uint16``: raw intensities (after illumination correction and downsampling, rounded); the
  reader normalises with ``bounds`` exactly as decoding would have — half the bytes of float32
  and normalisation stays inspectable;
- ``float16``: the normalised crop in [0, 1].

``manifest.parquet`` beside the shards has one row per site (metadata + ``shard`` + ``n_crops``)
and passes the manifest contract, so diets and splits work on it unchanged. Shard schema
metadata: ``bioscale.kind = cellpainting-packed``, ``bioscale.dyes``, ``bioscale.crop_shape``
([C, h, w]), ``bioscale.dtype``, ``bioscale.normalise``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bioscale.data import manifest as mf
from bioscale.data.images import (
    CROP_MODES,
    DecodeConfig,
    ImageConfig,
    ImageReadError,
    plate_control_stats,
    process_site,
    read_site,
    sample_rng,
)
from bioscale.errors import ConfigError, ManifestError

KIND = b"cellpainting-packed"
META_CROP_SHAPE = b"bioscale.crop_shape"
META_DTYPE = b"bioscale.dtype"
META_NORMALISE = b"bioscale.normalise"
DTYPES = {"uint16": np.uint16, "float16": np.float16}


@dataclass(frozen=True, kw_only=True)
class PackConfig(ImageConfig):
    """How ``data pack`` turns sites into stored crops: the image config
    (:class:`bioscale.data.images.ImageConfig`: dyes, crop, crops_per_site, downsample,
    normalise, illumination, bad_samples, max_skipped) and how its crops are stored."""

    crop: int = 256  # pixels, after downsampling
    crops_per_site: int = 4
    crop_mode: str = "random"  # random | centre | tiles
    dtype: str = "uint16"
    seed: int = 0  # random crops: drawn from hash(sample_id, seed)
    shard_mb: float = 128.0  # target shard size, MiB of pixels
    row_group_crops: int = 64
    workers: int = 1
    compression: str = "none"  # pixels barely compress; lz4 streamed 5× slower here

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dtype not in DTYPES:
            raise ConfigError(f"pack dtype {self.dtype!r}; choose one of {sorted(DTYPES)}")
        if self.crop_mode not in CROP_MODES:
            raise ConfigError(f"pack crop_mode {self.crop_mode!r}; choose one of {CROP_MODES}")
        if self.shard_mb <= 0 or self.row_group_crops < 1 or self.workers < 1:
            raise ConfigError("pack: shard_mb > 0, row_group_crops >= 1 and workers >= 1")

    def pack_decode(self, dyes: tuple[str, ...]) -> DecodeConfig:
        return self.decode_config(dyes, mode=self.crop_mode, per_site=self.crops_per_site)


@dataclass(frozen=True, kw_only=True)
class PackResult:
    manifest: Path
    shards: list[Path]
    n_sites: int
    n_crops: int
    n_shards: int
    crop_shape: tuple[int, int, int]
    seconds: float
    #: sites left out (``bad_samples: skip``): sample id → why the file could not be read
    skipped: dict[str, str] = field(default_factory=dict)


def shard_schema(dyes: list[str], crop_shape: tuple[int, int, int], cfg: PackConfig) -> pa.Schema:
    c, h, w = crop_shape
    nbytes = c * h * w * np.dtype(DTYPES[cfg.dtype]).itemsize
    fields = [pa.field(n, t) for n, t in zip(mf.METADATA_COLUMNS, _meta_types(), strict=True)]
    fields += [
        pa.field("crop_index", pa.int32()),
        pa.field("bounds", pa.list_(pa.float32(), 2 * c)),
        pa.field("x", pa.binary(nbytes)),
    ]
    return pa.schema(fields, metadata=_schema_meta(dyes, crop_shape, cfg))


def _meta_types() -> list[pa.DataType]:
    return [mf.image_schema(["DNA"]).field(n).type for n in mf.METADATA_COLUMNS]


def _schema_meta(dyes: list[str], crop_shape: tuple[int, int, int], cfg: PackConfig) -> dict:
    return {
        mf.META_KIND: KIND,
        mf.META_DYES: json.dumps(list(dyes)).encode(),
        META_CROP_SHAPE: json.dumps(list(crop_shape)).encode(),
        META_DTYPE: cfg.dtype.encode(),
        META_NORMALISE: cfg.normalise.encode(),
        b"bioscale.pack_config": json.dumps(asdict(cfg)).encode(),
    }


def _pack_shard(
    rows: list[dict],
    dyes: list[str],
    cfg: PackConfig,
    out: str,
    plate_stats: dict[str, np.ndarray] | None,
) -> tuple[str | None, list[int], tuple[int, int, int] | None, dict[str, str]]:
    """Decode ``rows`` into one shard file; returns (file, crops per row, crop shape, the sites
    that could not be read with ``bad_samples: skip``: sample id → error). A shard whose every
    site is bad writes no file."""
    dcfg = cfg.pack_decode(tuple(dyes))
    dtype = DTYPES[cfg.dtype]
    meta = {c: [] for c in mf.METADATA_COLUMNS}
    crop_index, bounds, pixels, counts, bad = [], [], [], [], {}
    shape = None
    for r in rows:
        sid = r["sample_id"]
        try:
            channels = read_site([r[f"{mf.PATH_PREFIX}{d}"] for d in dyes], sample_id=sid)
        except ImageReadError as err:
            if cfg.bad_samples == "error":
                raise
            bad[sid] = str(err)
            counts.append(0)
            continue
        illum = [r.get(f"{mf.ILLUM_PREFIX}{d}") for d in dyes] if cfg.illumination else None
        crops, used = process_site(
            channels,
            dcfg,
            illum=illum,
            bounds=None if plate_stats is None else plate_stats[r["plate"]],
            rng=sample_rng(cfg.seed, sid),
            scale=cfg.dtype != "uint16",
        )
        if cfg.dtype == "uint16":
            crops = np.clip(np.rint(crops), 0, 65535)
        crops = crops.astype(dtype)  # (K, C, h, w)
        shape = crops.shape[1:]
        counts.append(len(crops))
        for k, crop in enumerate(crops):
            for c in mf.METADATA_COLUMNS:
                meta[c].append(r[c])
            crop_index.append(k)
            bounds.append(used.reshape(-1))
            pixels.append(crop.tobytes())
    if shape is None:
        return None, counts, None, bad
    schema = shard_schema(dyes, shape, cfg)
    arrays = [pa.array(meta[c], type=schema.field(c).type) for c in mf.METADATA_COLUMNS]
    arrays.append(pa.array(crop_index, pa.int32()))
    flat = pa.array(np.concatenate(bounds).astype(np.float32))
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, 2 * len(dyes)))
    arrays.append(pa.array(pixels, type=schema.field("x").type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    tmp = Path(out).with_suffix(".tmp")
    pq.write_table(table, tmp, row_group_size=cfg.row_group_crops, compression=cfg.compression)
    tmp.replace(out)
    return out, counts, tuple(shape), bad


def pack_dyes(cfg: ImageConfig, available: list[str], manifest: str) -> list[str]:
    """The channels to pack: ``cfg.dyes`` (each in the manifest) or all of the manifest's."""
    if cfg.dyes is None:
        return list(available)
    missing = [d for d in cfg.dyes if d not in available]
    if missing:
        raise ConfigError(
            f"dyes {', '.join(missing)} are not in manifest {manifest} (it has "
            f"{', '.join(available)})"
        )
    return list(cfg.dyes)


def pack_manifest(
    manifest: str | Path,
    out_dir: str | Path,
    cfg: PackConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> PackResult:
    """Pack every site of ``manifest`` into shards under ``out_dir``; see the module docstring.
    ``progress(sites_done, sites)`` is called as each shard is written."""
    t0 = time.perf_counter()
    table = pq.read_table(manifest)
    dyes = pack_dyes(cfg, mf.dyes_of(table.schema, str(manifest)), str(manifest))
    mf.validate_table(table, str(manifest))
    rows = table.to_pylist()
    if not rows:
        raise ManifestError(f"manifest {manifest} has no sites to pack")
    plate_stats = (
        plate_control_stats(str(manifest), dyes=dyes) if cfg.normalise == "plate_controls" else None
    )
    side = cfg.crop
    crop_bytes = len(dyes) * side * side * np.dtype(DTYPES[cfg.dtype]).itemsize
    per_shard = max(1, int(cfg.shard_mb * 2**20 // (crop_bytes * cfg.crops_per_site)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.parquet"):  # a re-pack replaces the previous shards
        old.unlink()
    parts = [rows[i : i + per_shard] for i in range(0, len(rows), per_shard)]
    names = [str(out / f"shard-{i:05d}.parquet") for i in range(len(parts))]
    args = ([dyes] * len(parts), [cfg] * len(parts), names, [plate_stats] * len(parts))
    results, done = [], 0
    with contextlib.ExitStack() as stack:
        if cfg.workers > 1:
            import multiprocessing as mp

            pool = stack.enter_context(
                ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"))
            )
            shards = pool.map(_pack_shard, parts, *args)
        else:
            shards = (_pack_shard(p, *a) for p, *a in zip(parts, *args, strict=True))
        for part, result in zip(parts, shards, strict=True):
            results.append(result)
            done += len(part)
            if progress is not None:
                progress(done, len(rows))
    bad = {sid: err for *_, b in results for sid, err in b.items()}
    if len(bad) > cfg.max_skipped * len(rows):
        sid, err = next(iter(bad.items()))
        raise ManifestError(
            f"{len(bad)} of {len(rows)} sites of {manifest} could not be read, more than "
            f"max_skipped={cfg.max_skipped:g} of them (first: {sid}: {err}); fix or remove "
            "those files, or raise max_skipped"
        )
    kept = [r for r, n in zip(rows, (n for _, c, _, _ in results for n in c), strict=True) if n]
    site_cols = {c: [r[c] for r in kept] for c in mf.METADATA_COLUMNS}
    site_cols[mf.PACKED_SHARD] = [Path(f).name for f, counts, _, _ in results for n in counts if n]
    site_cols["n_crops"] = [n for _, counts, _, _ in results for n in counts if n]
    shape = next(s for _, _, s, _ in results if s is not None)
    schema = pa.schema(
        [pa.field(n, t) for n, t in zip(mf.METADATA_COLUMNS, _meta_types(), strict=True)]
        + [pa.field(mf.PACKED_SHARD, pa.string()), pa.field("n_crops", pa.int32())],
        metadata=_schema_meta(dyes, shape, cfg),
    )
    packed = pa.Table.from_pydict(site_cols, schema=schema)
    mf.validate_table(packed, str(out / "manifest.parquet"))
    pq.write_table(packed, out / "manifest.parquet")
    written = [Path(f) for f, *_ in results if f is not None]
    return PackResult(
        manifest=out / "manifest.parquet",
        shards=written,
        n_sites=len(kept),
        n_crops=sum(site_cols["n_crops"]),
        n_shards=len(written),
        crop_shape=shape,
        seconds=time.perf_counter() - t0,
        skipped=bad,
    )


# --------------------------------------------------------------------------- reading shards


@dataclass(frozen=True, kw_only=True)
class ShardFormat:
    """What a reader needs from a shard's schema metadata."""

    dyes: list[str]
    crop_shape: tuple[int, int, int]
    dtype: str
    normalise: str

    @classmethod
    def of(cls, schema: pa.Schema, source: str = "shard") -> ShardFormat:
        meta = schema.metadata or {}
        if meta.get(mf.META_KIND) != KIND:
            raise ManifestError(f"{source} is not a packed shard (bioscale data pack writes them)")
        return cls(
            dyes=json.loads(meta[mf.META_DYES]),
            crop_shape=tuple(json.loads(meta[META_CROP_SHAPE])),
            dtype=meta[META_DTYPE].decode(),
            normalise=meta[META_NORMALISE].decode(),
        )


def shard_files(folder: str | Path) -> list[str]:
    files = sorted(str(p) for p in Path(folder).glob("shard-*.parquet"))
    if not files:
        raise ManifestError(f"{folder} holds no shard-*.parquet files; run `bioscale data pack`")
    return files


def unpack_batch(batch: pa.Table, *, fmt: ShardFormat) -> dict[str, np.ndarray]:
    """A shard batch → ``x`` (B, C, h, w) float32 in [0, 1] (raw units if ``normalise=none``)
    plus every metadata column; for Ray Data ``map_batches(batch_format="pyarrow")``."""
    n = batch.num_rows
    col = batch.column("x").combine_chunks()
    width = col.type.byte_width
    dtype = DTYPES[fmt.dtype]
    raw = np.frombuffer(
        col.buffers()[1], dtype=np.uint8, count=n * width, offset=col.offset * width
    )
    x = raw.view(dtype).reshape(n, *fmt.crop_shape).astype(np.float32)
    if fmt.dtype == "uint16" and fmt.normalise != "none":
        c = fmt.crop_shape[0]
        b = batch.column("bounds").combine_chunks().flatten().to_numpy().reshape(n, c, 2)
        lo = b[:, :, 0, None, None]
        x -= lo
        x /= np.maximum(b[:, :, 1, None, None] - lo, 1e-6)
        np.clip(x, 0.0, 1.0, out=x)
    out = {"x": x}
    for name in batch.column_names:
        if name not in ("x", "bounds"):
            out[name] = batch.column(name).to_numpy(zero_copy_only=False)
    return out


def iter_packed(
    folder: str | Path, *, batch_size: int = 64, columns: list[str] | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Stream the shards of ``folder`` in this process, ``batch_size`` crops at a time."""
    for path in shard_files(folder):
        pf = pq.ParquetFile(path)
        fmt = ShardFormat.of(pf.schema_arrow, path)
        cols = None if columns is None else sorted({"x", "bounds", *columns})
        for rb in pf.iter_batches(batch_size=batch_size, columns=cols):
            yield unpack_batch(pa.Table.from_batches([rb]), fmt=fmt)


def read_packed(folder: str | Path, *, num_cpus: float = 0.25):
    """The shards as a Ray Dataset of decoded crops (``x`` float32 + metadata columns)."""
    from bioscale.data.pipeline import read_parquet

    files = shard_files(folder)
    fmt = ShardFormat.of(pq.read_schema(files[0]), files[0])
    ds = read_parquet(files, num_cpus=num_cpus)
    return ds.map_batches(
        unpack_batch, batch_format="pyarrow", num_cpus=num_cpus, fn_kwargs={"fmt": fmt}
    )
