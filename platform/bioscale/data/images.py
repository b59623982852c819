"""Decoding Cell Painting sites: files or URIs → raw channels → corrected, normalised crops.

A site is one ``path_<Dye>`` file per dye (ARCHITECTURE manifest). Files are TIFFs (Phenix exports
are LZW-compressed: ``tifffile`` decodes them through ``imagecodecs``), single- or multi-page,
uint8 or uint16. A path may end in ``#<page>`` to pick one page of a multi-page file (the importer
writes this from CellProfiler's ``Frame_Orig<Dye>`` column); a multi-page file without a page is a
z-stack and is max-projected.

Paths and URIs are opened through pyarrow filesystems: local paths directly, ``s3://`` and
``gs://`` through ``pyarrow.fs``. The public Cell Painting Gallery bucket needs no credentials::

    BIOSCALE_S3_ANONYMOUS=1 AWS_REGION=us-east-1 bioscale data check manifest.parquet

(``BIOSCALE_S3_ANONYMOUS=1`` makes every ``s3://`` read anonymous; otherwise the usual AWS
credential chain is used.)

The training pipeline calls :func:`decode_batch` inside Ray Data ``map_batches``.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable

import numpy as np

from bioscale.data.hashing import rank_key
from bioscale.data.image_config import (  # noqa: F401  (the image config, re-exported)
    BAD_SAMPLE_POLICIES,
    CROP_MODES,
    NORMALISE_KINDS,
    CropConfig,
    DecodeConfig,
    ImageConfig,
    NormaliseConfig,
)
from bioscale.errors import BioscaleError


class ImageReadError(BioscaleError):
    """A file of a sample is missing, truncated or not a decodable image."""

    def __init__(self, message: str, *, sample_id: str | None = None, path: str | None = None):
        super().__init__(message)
        self.sample_id = sample_id
        self.path = path


# --------------------------------------------------------------------------- reading files


@functools.lru_cache(maxsize=8)
def _filesystem(scheme: str, anonymous: bool):
    import pyarrow.fs as pafs

    if scheme == "s3":
        region = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        return pafs.S3FileSystem(anonymous=anonymous, region=region)
    if scheme == "gs":
        return pafs.GcsFileSystem(anonymous=anonymous)
    raise ImageReadError(f"unsupported URI scheme {scheme!r}; use a local path, s3:// or gs://")


def split_page(uri: str) -> tuple[str, int | None]:
    """``"a.tiff#2"`` → ``("a.tiff", 2)``; a path without ``#<int>`` → ``(path, None)``."""
    base, sep, frag = uri.rpartition("#")
    if sep and frag.isdigit():
        return base, int(frag)
    return uri, None


def read_bytes(uri: str) -> bytes:
    """The bytes of a local path, ``file://``, ``s3://`` or ``gs://`` URI."""
    if "://" not in uri or uri.startswith("file://"):
        with open(uri.removeprefix("file://"), "rb") as fh:
            return fh.read()
    scheme, rest = uri.split("://", 1)
    anonymous = os.environ.get("BIOSCALE_S3_ANONYMOUS", "0") not in ("", "0", "false")
    fs = _filesystem(scheme, anonymous)
    with fs.open_input_stream(rest) as fh:
        return fh.read()


def read_image(uri: str) -> np.ndarray:
    """Decode one channel file to a 2-D array in its stored dtype (uint8/uint16/float).

    Raises:
        ImageReadError: the file is missing, truncated or not a TIFF/NumPy image.
    """
    import tifffile

    path, page = split_page(uri)
    local = "://" not in path or path.startswith("file://")
    try:
        if local:  # tifffile reads local files itself, without a copy through memory
            source = path.removeprefix("file://")
            size = os.stat(source).st_size
        else:
            source = io.BytesIO(read_bytes(path))
            size = source.getbuffer().nbytes
    except FileNotFoundError:
        raise ImageReadError(f"missing file {path}", path=path) from None
    except OSError as err:
        raise ImageReadError(f"cannot read {path}: {err}", path=path) from None
    if not size:
        raise ImageReadError(f"empty file {path}", path=path)
    try:
        if path.endswith(".npy"):
            img = np.load(source, allow_pickle=False)
        else:
            with tifffile.TiffFile(source) as tif:
                if page is not None:
                    img = tif.pages[page].asarray()
                elif len(tif.pages) == 1:
                    img = tif.pages[0].asarray()
                else:  # a z-stack: max projection over its pages
                    img = np.max(np.stack([p.asarray() for p in tif.pages]), axis=0)
    except Exception as err:  # tifffile/imagecodecs raise many types on corrupt input
        raise ImageReadError(
            f"cannot decode {uri} ({type(err).__name__}: {err}); the file is truncated or not a "
            "TIFF",
            path=path,
        ) from None
    img = np.squeeze(img)
    if img.ndim != 2:
        raise ImageReadError(
            f"{uri} decodes to shape {img.shape}, expected one 2-D plane", path=path
        )
    return img


@functools.lru_cache(maxsize=64)
def read_illumination(uri: str) -> np.ndarray:
    """An illumination-correction function (``.npy``, (H, W) float), cached per process."""
    illum = read_image(uri).astype(np.float32)
    if not np.all(np.isfinite(illum)) or illum.min() <= 0:
        raise ImageReadError(f"illumination function {uri} has non-positive or non-finite values")
    return illum


# --------------------------------------------------------------------------- pixel operations


def percentiles(img: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The ``low``/``high`` percentiles of an image; exact and fast for uint8/uint16 (histogram)."""
    if img.dtype in (np.uint8, np.uint16):
        counts = np.cumsum(np.bincount(img.ravel(), minlength=1))
        n = counts[-1]
        lo = int(np.searchsorted(counts, low / 100.0 * (n - 1), side="right"))
        hi = int(np.searchsorted(counts, high / 100.0 * (n - 1), side="right"))
        return float(lo), float(hi)
    lo, hi = np.percentile(img, [low, high])
    return float(lo), float(hi)


def downsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean pooling by an integer factor; (C, H, W) → (C, H // f, W // f) float32."""
    if factor == 1:
        return img
    c, h, w = img.shape
    h2, w2 = h // factor, w // factor
    view = img[:, : h2 * factor, : w2 * factor].reshape(c, h2, factor, w2, factor)
    return view.mean(axis=(2, 4), dtype=np.float32)


def crop_origins(
    height: int, width: int, crop: CropConfig, rng: np.random.Generator | None
) -> list[tuple[int, int]]:
    """Top-left corners of the crops of a (height, width) site."""
    size = crop.size
    if size is None:
        return [(0, 0)]
    if size > height or size > width:
        raise ValueError(f"crop size {size} exceeds the site ({height}×{width} after downsampling)")
    if crop.mode == "centre":
        return [((height - size) // 2, (width - size) // 2)] * crop.per_site
    if crop.mode == "tiles":
        ny, nx = height // size, width // size
        y0, x0 = (height - ny * size) // 2, (width - nx * size) // 2
        return [(y0 + i * size, x0 + j * size) for i in range(ny) for j in range(nx)]
    assert rng is not None
    ys = rng.integers(0, height - size + 1, crop.per_site)
    xs = rng.integers(0, width - size + 1, crop.per_site)
    return list(zip(ys.tolist(), xs.tolist(), strict=True))


def read_site(paths: list[str], *, sample_id: str | None = None) -> list[np.ndarray]:
    """Decode one site's channel files (raw dtype), naming the sample in any error."""
    channels = []
    for p in paths:
        if p is None or p == "":
            raise ImageReadError(f"sample {sample_id}: a dye has no file", sample_id=sample_id)
        try:
            channels.append(read_image(p))
        except ImageReadError as err:
            raise ImageReadError(
                f"sample {sample_id}: {err}", sample_id=sample_id, path=err.path
            ) from None
    shapes = {c.shape for c in channels}
    if len(shapes) > 1:
        raise ImageReadError(
            f"sample {sample_id}: channels have different shapes {sorted(shapes)}",
            sample_id=sample_id,
        )
    return channels


def process_site(
    channels: list[np.ndarray],
    cfg: DecodeConfig,
    *,
    illum: list[str | None] | None = None,
    bounds: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    scale: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw channels → (crops (K, C, h, w) float32, bounds (C, 2) float32 [low, high]).

    ``bounds`` overrides the per-site percentiles (``plate_controls``); the returned bounds are
    those used. With ``scale=False`` the crops stay in raw units (after illumination correction
    and downsampling), so packed uint16 crops can be normalised identically later.
    """
    n = len(channels)
    if cfg.illumination and illum is not None:
        img = np.stack(
            [
                c / read_illumination(u) if u else c.astype(np.float32)
                for c, u in zip(channels, illum, strict=True)
            ]
        ).astype(np.float32)
    else:
        img = np.stack(channels)  # (C, H, W), raw dtype
    if cfg.normalise.kind == "none":
        used = np.tile(np.array([0.0, 1.0], dtype=np.float32), (n, 1))
    elif bounds is not None:  # plate-control bounds; channels past them (a map): their own
        used = np.asarray(bounds, dtype=np.float32)
        if len(used) < n:
            own = [
                percentiles(img[i], cfg.normalise.low, cfg.normalise.high)
                for i in range(len(used), n)
            ]
            used = np.concatenate([used, np.asarray(own, dtype=np.float32)])
    else:
        used = np.array(
            [percentiles(img[i], cfg.normalise.low, cfg.normalise.high) for i in range(n)],
            dtype=np.float32,
        )
    img = downsample(img, cfg.crop.downsample)
    _, h, w = img.shape
    size = cfg.crop.size
    out = []
    for y, x in crop_origins(h, w, cfg.crop, rng):
        patch = img[:, y : y + (size or h), x : x + (size or w)].astype(np.float32)
        out.append(patch)
    crops = np.stack(out)  # (K, C, h, w)
    if scale and cfg.normalise.kind != "none":
        lo = used[:, 0][None, :, None, None]
        scale = np.maximum(used[:, 1] - used[:, 0], 1e-6)[None, :, None, None]
        np.clip((crops - lo) / scale, 0.0, 1.0, out=crops)
    return crops, used


def sample_rng(rng: np.random.Generator | int | None, sample_id: str) -> np.random.Generator:
    """A crop generator: ``rng`` itself, or one derived from (seed, sample_id) so a sample's crops
    do not depend on which batch it lands in; ``None`` draws fresh entropy."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    return np.random.default_rng(rank_key(sample_id, rng))


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    dyes: list[str] | tuple[str, ...],
    crop: int | None = 256,
    crops_per_site: int = 1,
    crop_mode: str = "random",
    downsample: int = 1,
    rng: np.random.Generator | int | None = None,
    normalise: str | NormaliseConfig = "percentile",
    plate_stats: dict[str, np.ndarray] | None = None,
    illumination: bool = False,
    bad_sample_policy: str = "error",
) -> dict[str, np.ndarray]:
    """Decode a batch of manifest rows into crops; the function to give Ray Data ``map_batches``.

    Signature (keyword-only after ``batch``)::

        decode_batch(batch, *, dyes, crop=256, crops_per_site=1, crop_mode="random",
                     downsample=1, rng=None, normalise="percentile", plate_stats=None,
                     illumination=False, bad_sample_policy="error") -> dict[str, np.ndarray]

    Args:
        batch: a numpy batch of an image manifest (``batch_format="numpy"``): ``sample_id`` and
            ``path_<Dye>`` for every dye in ``dyes`` (``illum_<Dye>`` when ``illumination``,
            ``plate`` when ``normalise="plate_controls"``); any other column passes through.
        dyes: channel order of ``x``, e.g. ``("DNA", "ER", "RNA", "AGP", "Mito")``.
        crop: crop size in pixels after downsampling; ``None`` keeps the whole site.
        crops_per_site: crops per site for ``random``/``centre`` (``tiles`` takes all tiles).
        crop_mode: ``random`` (training), ``centre`` or ``tiles`` (evaluation).
        downsample: integer block-mean pooling factor applied before cropping.
        rng: a Generator, or an int seed (each sample's crops are then drawn from
            hash(sample_id, seed): reproducible whatever the batching; pass seed + epoch for new
            crops each epoch), or ``None`` (fresh entropy).
        normalise: ``percentile`` (per site and channel, clip at 1st/99.9th and scale to [0, 1]),
            ``plate_controls`` (the same bounds from ``plate_stats[plate]``, (C, 2)), ``none``, or
            a :class:`NormaliseConfig`.
        plate_stats: ``{plate: (C, 2) float32 [low, high]}`` from :func:`plate_control_stats`.
        illumination: divide each channel by its ``illum_<Dye>`` function (``.npy``).
        bad_sample_policy: ``error`` raises :class:`ImageReadError` naming the sample and file;
            ``skip`` keeps the batch going: the bad sample's crops are zeros with ``ok=False`` and
            its error text in ``error`` — the consumer must drop them, count and log them.

    Returns:
        ``x``: (B·K, C, h, w) float32 with K crops per site (site-major order); ``ok``: (B·K,)
        bool; ``error``: (B·K,) str ("" when ok); every input column except paths repeated K
        times (``sample_id`` always).
    """
    norm = normalise if isinstance(normalise, NormaliseConfig) else NormaliseConfig(kind=normalise)
    cfg = DecodeConfig(
        dyes=tuple(dyes),
        crop=CropConfig(size=crop, per_site=crops_per_site, mode=crop_mode, downsample=downsample),
        normalise=norm,
        illumination=illumination,
        bad_sample_policy=bad_sample_policy,
    )
    return decode_rows(batch, cfg, rng=rng, plate_stats=plate_stats)


def decode_rows(
    batch: dict[str, np.ndarray],
    cfg: DecodeConfig,
    *,
    rng: np.random.Generator | int | None = None,
    plate_stats: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`decode_batch` with a :class:`DecodeConfig` (also used by ``data pack``)."""
    ids = [str(s) for s in batch["sample_id"]]
    path_cols = [f"path_{d}" for d in cfg.dyes]
    illum_cols = [f"illum_{d}" for d in cfg.dyes]
    missing = [c for c in path_cols if c not in batch]
    if missing:
        raise BioscaleError(f"decode: the batch lacks column(s) {', '.join(missing)}")
    # a channel without an illumination function (the expert map) is left as it is
    has_illum = cfg.illumination and any(c in batch for c in illum_cols)
    if cfg.illumination and not has_illum:
        raise BioscaleError("decode: illumination=True but the manifest has no illum_<Dye> columns")
    results: list[tuple[np.ndarray | None, str]] = []
    shape = None
    for i, sid in enumerate(ids):
        try:
            channels = read_site([batch[c][i] for c in path_cols], sample_id=sid)
            bounds = None
            if cfg.normalise.kind == "plate_controls":
                plate = str(batch["plate"][i])
                if plate_stats is None or plate not in plate_stats:
                    raise BioscaleError(
                        f"sample {sid}: no control statistics for plate {plate}; compute them "
                        "with plate_control_stats(manifest)"
                    )
                bounds = plate_stats[plate]
            illum = [batch[c][i] if c in batch else None for c in illum_cols] if has_illum else None
            crops, _ = process_site(
                channels, cfg, illum=illum, bounds=bounds, rng=sample_rng(rng, sid)
            )
            shape = crops.shape
            results.append((crops, ""))
        except ImageReadError as err:
            if cfg.bad_sample_policy == "error":
                raise
            results.append((None, str(err)))
    if shape is None:  # every sample bad: shapes from the config alone
        size = cfg.crop.size or 1
        shape = (cfg.crops_per_site(size, size), len(cfg.dyes), size, size)
    k = shape[0]
    xs = [c if c is not None else np.zeros(shape, np.float32) for c, _ in results]
    out: dict[str, np.ndarray] = {
        "x": np.concatenate(xs) if xs else np.zeros((0, *shape[1:]), np.float32),
        "ok": np.repeat(np.array([c is not None for c, _ in results], dtype=bool), k),
        "error": np.repeat(np.array([e for _, e in results], dtype=object), k),
    }
    for name, values in batch.items():
        if name.startswith(("path_", "illum_")) or name in out:
            continue
        out[name] = np.repeat(np.asarray(values), k, axis=0)
    return out


def plate_control_stats(
    manifest: str,
    cfg: NormaliseConfig | None = None,
    *,
    dyes: list[str] | tuple[str, ...] | None = None,
    max_sites_per_plate: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Per plate, per channel ``[low, high]`` percentiles pooled over (up to
    ``max_sites_per_plate``, chosen by a stable hash) control sites; (C, 2) float32 per plate,
    channels in ``dyes`` order (default: the manifest's). ``progress(plates_done, plates)``."""
    import pyarrow.parquet as pq

    from bioscale.data.manifest import dyes_of

    cfg = cfg or NormaliseConfig(kind="plate_controls")
    available = dyes_of(pq.read_schema(manifest), str(manifest))
    dyes = list(dyes or available)
    missing_dyes = [d for d in dyes if d not in available]
    if missing_dyes:
        raise BioscaleError(
            f"dyes {', '.join(missing_dyes)} are not in manifest {manifest} (it has "
            f"{', '.join(available)})"
        )
    table = pq.read_table(
        manifest, columns=["sample_id", "plate", "group", *[f"path_{d}" for d in dyes]]
    )
    rows = table.to_pylist()
    by_plate: dict[str, list[dict]] = {}
    for r in rows:
        if r["group"] == "control":
            by_plate.setdefault(r["plate"], []).append(r)
    missing = sorted({r["plate"] for r in rows} - set(by_plate))
    if missing:
        raise BioscaleError(
            f"plates {', '.join(missing[:5])} of {manifest} have no control sites, so "
            "normalise: plate_controls has nothing to pool there; use normalise: percentile"
        )
    stats = {}
    for done, (plate, sites) in enumerate(sorted(by_plate.items()), start=1):
        sites = sorted(sites, key=lambda r: rank_key(r["sample_id"], "plate-stats"))[
            :max_sites_per_plate
        ]
        pooled = [
            np.concatenate(
                [read_site([r[f"path_{d}"]], sample_id=r["sample_id"])[0].ravel() for r in sites]
            )
            for d in dyes
        ]
        stats[plate] = np.array([percentiles(p, cfg.low, cfg.high) for p in pooled], np.float32)
        if progress is not None:
            progress(done, len(by_plate))
    return stats
