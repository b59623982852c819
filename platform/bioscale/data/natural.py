"""Natural images with human importance maps: the manifest, three importers, map preprocessing,
and a synthetic dataset whose class is decided by a small diagnostic part.

Manifest (ARCHITECTURE): ``sample_id, path_image, path_map (nullable), label, group`` — one row
per image; ``group`` is ``seen`` (training and probing) or ``novel`` (classes held out).

Importers: (a) a folder layout ``images/<class>/<name>.<ext>`` with ``maps/<class>/<name>.png``;
(b) the ClickMe TFRecord release (``image`` JPEG 256×256×3, ``heatmap`` JPEG 256×256×1, ``label``
int64), read without TensorFlow; (c) eye-tracking fixations, per-image (y, x) lists accumulated into
a map and blurred with a Gaussian of ``sigma_px`` pixels.

Maps are prepared by ``prepare_map`` as ``MapConfig`` (a study's ``data.maps``) says; the default,
``release``, is exactly the ClickMe release's preprocessing (serre-lab/Harmonization,
``harmonization/common/clickme_dataset.py`` and ``blur.py``): bilinear resize to 64×64, a 10×10-tap
Gaussian of σ = 10 px with 'SAME' zero padding, bilinear resize to the input size. Only maps
prepared so are comparable with ClickMe's human ceiling (0.65753).
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bioscale.data.hashing import rank_key
from bioscale.errors import ConfigError, ManifestError

NATURAL_COLUMNS = ("sample_id", "path_image", "path_map", "label", "group")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
MAP_SCALE = 64  # px: maps are blurred at this size (ClickMe release)
MAP_SIGMA = 10.0  # px at MAP_SCALE: the release's BLUR_SIGMA
RELEASE_TAPS = 10  # the release's BLUR_KERNEL_SIZE: an even kernel, 10×10 taps
MAP_BLURS = ("release", "none", "gaussian")


def write_natural(path: str | Path, rows: list[dict]) -> Path:
    """Write a natural-image manifest (rows of ``NATURAL_COLUMNS``) atomically."""
    schema = pa.schema(
        [pa.field(c, pa.string()) for c in NATURAL_COLUMNS], metadata={b"bioscale.kind": b"natural"}
    )
    table = pa.Table.from_pylist(
        [{c: r.get(c) for c in NATURAL_COLUMNS} for r in rows], schema=schema
    )
    bad = sorted({str(g) for g in table.column("group").to_pylist()} - {"seen", "novel"})
    if bad:
        raise ManifestError(f"natural manifest {path}: group must be seen or novel, got {bad}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, row_group_size=256)
    tmp.replace(path)
    return path


def _load_gray(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def load_image(path: str, size: int) -> np.ndarray:
    """RGB image → (3, size, size) float32 in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
    except (OSError, ValueError) as err:
        raise ManifestError(f"cannot read image {path}: {err}") from err
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0


@dataclass(frozen=True, kw_only=True)
class MapConfig:
    """How a human map becomes the (size, size) target of a trial (a study's ``data.maps``).

    Attributes:
        blur: ``release`` — the ClickMe release's preprocessing, reproduced exactly
            (``release_kernel``, ``release_blur``, ``resize_bilinear``); the only maps ClickMe's
            human ceiling (0.65753) applies to. ``none`` — the map resized straight to the input
            size, no blur and no low-pass filter (for maps already smooth at that scale, e.g.
            fixation maps, which ``import_fixations`` blurs).
            ``gaussian`` — resize to 64×64, a full Gaussian of ``sigma_px`` (taps out to ±4σ,
            zero padding; scipy ``gaussian_filter``), resize to the input size.
        sigma_px: σ of ``gaussian`` in pixels of the 64×64 map (default 10); the release's
            kernel is fixed (σ = 10 px, 10 taps), and ``none`` has none.
    """

    blur: Literal["release", "none", "gaussian"] = "release"
    sigma_px: float | None = None

    def __post_init__(self) -> None:
        if self.blur not in MAP_BLURS:
            raise ConfigError(f"data.maps.blur: one of {', '.join(MAP_BLURS)}, not {self.blur!r}")
        if self.sigma_px is not None and self.blur != "gaussian":
            has = {"release": "the release's fixed kernel (10 taps, σ = 10 px)", "none": "no blur"}
            raise ConfigError(
                f"data.maps.sigma_px sets the σ of blur: gaussian; blur {self.blur!r} has "
                f"{has[self.blur]}: remove sigma_px or use blur: gaussian"
            )
        if self.sigma_px is not None and not self.sigma_px > 0:
            raise ConfigError(
                f"data.maps.sigma_px must be > 0 (pixels of the 64×64 map), got {self.sigma_px}"
            )

    @property
    def sigma(self) -> float:
        """σ in pixels of the 64×64 map (``gaussian`` and ``release``; 0 for ``none``)."""
        if self.blur == "none":
            return 0.0
        return MAP_SIGMA if self.sigma_px is None else float(self.sigma_px)


@lru_cache(maxsize=64)
def _bilinear_weights(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float64 interpolation matrix of one axis (``resize_bilinear``)."""
    at = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    floor = np.floor(at)
    lerp = at - floor
    lower = np.clip(floor, 0, n_in - 1).astype(np.int64)
    upper = np.clip(np.ceil(at), 0, n_in - 1).astype(np.int64)
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.arange(n_out), lower), 1.0 - lerp)
    np.add.at(w, (np.arange(n_out), upper), lerp)
    w.flags.writeable = False
    return w


def resize_bilinear(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) → ``shape`` as TF 2's ``tf.image.resize(method="bilinear")`` (``antialias=False``:
    ``resize_bilinear`` with half-pixel centres): output pixel i samples input coordinate
    (i + ½)·in/out − ½, clamped to the edge pixels, interpolating its two neighbours; no
    low-pass filter when shrinking (256 → 64 reads pixels 4i + 1 and 4i + 2 only). float32."""
    h, w = image.shape
    rows, cols = _bilinear_weights(shape[0], h), _bilinear_weights(shape[1], w)
    return (rows @ np.asarray(image, np.float64) @ cols.T).astype(np.float32)


def release_kernel(size: int = RELEASE_TAPS, sigma: float = MAP_SIGMA) -> np.ndarray:
    """(size, size) float32 Gaussian taps as the release builds them (``gaussian_kernel``):
    column j has x = j − ⌈(size−1)/2⌉ and row i has y = ⌊(size−1)/2⌋ − i, so for size 10
    x = −5…4 and y = 4…−5; exp(−(x² + y²)/2σ²) normalised to sum 1. For an even size the
    centre tap (x = y = 0) is row 4, column 5."""
    lo = -(size - 1) // 2  # Python's floor division, as the release: −5 for size 10
    xs, ys = np.meshgrid(np.arange(lo, (size - 1) // 2 + 1), np.arange((size - 1) // 2, lo - 1, -1))
    kernel = np.exp(-(xs**2 + ys**2) / (2.0 * sigma**2))
    return (kernel / kernel.sum()).astype(np.float32)


def release_blur(image: np.ndarray, kernel: np.ndarray | None = None) -> np.ndarray:
    """(H, W) → (H, W) as ``tf.nn.conv2d(image, kernel, strides=1, padding="SAME")``:
    cross-correlation (the kernel is not flipped) with zero padding of ⌊(k−1)/2⌋ rows/columns
    before and ⌈(k−1)/2⌉ after (k = 10: 4 top/left, 5 bottom/right). float32."""
    kernel = release_kernel() if kernel is None else np.asarray(kernel, np.float64)
    kh, kw = kernel.shape
    h, w = image.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(np.asarray(image, np.float64), ((top, kh - 1 - top), (left, kw - 1 - left)))
    out = np.zeros((h, w))
    for a in range(kh):
        for b in range(kw):
            out += kernel[a, b] * padded[a : a + h, b : b + w]
    return out.astype(np.float32)


def prepare_map(heatmap: np.ndarray, size: int, maps: MapConfig | None = None) -> np.ndarray:
    """A (H, W) human map → the (size, size) float32 map a trial sees, blurred as ``maps``
    says (default: exactly as the ClickMe release — 64×64, its 10×10 σ = 10 kernel, ``size``²)."""
    maps = maps or MapConfig()
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ManifestError(f"a human map must be a 2-D (H, W) array, got shape {heatmap.shape}")
    if maps.blur == "none":
        return resize_bilinear(heatmap, (size, size))
    small = resize_bilinear(heatmap, (MAP_SCALE, MAP_SCALE))
    if maps.blur == "release":
        blurred = release_blur(small)
    else:
        from scipy.ndimage import gaussian_filter

        blurred = gaussian_filter(small, sigma=maps.sigma, mode="constant")
    return resize_bilinear(blurred, (size, size))


def load_map(path: str | None, size: int, maps: MapConfig | None = None) -> np.ndarray | None:
    """A map file (PNG, JPEG or ``.npy``) → prepared (size, size) float32 (``prepare_map``),
    or None."""
    if path is None:
        return None
    raw = np.load(path) if str(path).endswith(".npy") else _load_gray(path)
    try:
        return prepare_map(raw, size, maps)
    except ManifestError as err:
        raise ManifestError(f"human map {path}: {err}") from None


def fixation_map(
    points: list[tuple[float, float]], shape: tuple[int, int], sigma_px: float
) -> np.ndarray:
    """Eye-tracking fixations (y, x in pixels) → a map: counts per pixel blurred by ``sigma_px``."""
    from scipy.ndimage import gaussian_filter

    acc = np.zeros(shape, dtype=np.float32)
    for y, x in points:
        yi, xi = round(y), round(x)
        if 0 <= yi < shape[0] and 0 <= xi < shape[1]:
            acc[yi, xi] += 1.0
    return gaussian_filter(acc, sigma=sigma_px, mode="constant")


def _novel(label: str, novel_fraction: float) -> bool:
    return (rank_key(label, "bioscale-natural-novel") % 10_000) / 10_000 < novel_fraction


def import_folder(root: str | Path, out: str | Path, novel_fraction: float = 0.0) -> Path:
    """``root/images/<class>/*`` (+ ``root/maps/<class>/<stem>.png``) → a natural manifest."""
    root = Path(root)
    images = root / "images"
    if not images.is_dir():
        raise ManifestError(f"{root} has no images/ folder (expected images/<class>/<file>)")
    rows = []
    for cls in sorted(p for p in images.iterdir() if p.is_dir()):
        for img in sorted(cls.iterdir()):
            if img.suffix.lower() not in IMAGE_EXTS:
                continue
            maps = [root / "maps" / cls.name / f"{img.stem}{ext}" for ext in (".png", ".npy")]
            found = next((str(m.resolve()) for m in maps if m.exists()), None)
            rows.append(
                {
                    "sample_id": f"{cls.name}/{img.stem}",
                    "path_image": str(img.resolve()),
                    "path_map": found,
                    "label": cls.name,
                    "group": "novel" if _novel(cls.name, novel_fraction) else "seen",
                }
            )
    if not rows:
        raise ManifestError(f"no images ({', '.join(IMAGE_EXTS)}) under {images}")
    return write_natural(out, rows)


# ----------------------------------------------------------------- TFRecord without TensorFlow


def read_tfrecords(path: str | Path):
    """Yield the serialized records of a TFRecord file (length, crc, data, crc framing)."""
    with open(path, "rb") as fh:
        while True:
            header = fh.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ManifestError(f"{path}: truncated TFRecord header")
            (length,) = struct.unpack("<Q", header[:8])
            data = fh.read(length)
            if len(data) < length or len(fh.read(4)) < 4:
                raise ManifestError(f"{path}: truncated TFRecord")
            yield data


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message (varint or length-delimited)."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        else:
            raise ManifestError(f"unsupported protobuf wire type {wire}")
        yield num, wire, val


def parse_example(record: bytes) -> dict[str, list]:
    """A ``tf.train.Example`` → ``{name: values}`` (bytes_list → bytes, int64_list → int,
    float_list → float). Example{1: Features{1: map<string, Feature>}}; Feature is a oneof of
    BytesList (1), FloatList (2), Int64List (3)."""
    out: dict[str, list] = {}
    for num, _, features in _fields(record):
        if num != 1:
            continue
        for fnum, _, entry in _fields(features):
            if fnum != 1:
                continue
            key, feature = None, b""
            for enum, _, val in _fields(entry):
                if enum == 1:
                    key = val.decode()
                elif enum == 2:
                    feature = val
            values: list = []
            for kind, _, lst in _fields(feature):
                for _, wire, v in _fields(lst):
                    if kind == 1:
                        values.append(bytes(v))
                    elif kind == 3:  # packed (wire 2) or not (wire 0)
                        if wire == 2:
                            p = 0
                            while p < len(v):
                                x, p = _varint(v, p)
                                values.append(x - (1 << 64) if x >= 1 << 63 else x)
                        else:
                            values.append(v - (1 << 64) if v >= 1 << 63 else v)
                    elif kind == 2:
                        if wire == 2:
                            values.extend(struct.unpack(f"<{len(v) // 4}f", v))
                        else:
                            values.append(struct.unpack("<f", v)[0])
            out[key] = values
    return out


def import_clickme(
    tfrecords: list[str | Path], out_dir: str | Path, novel_fraction: float = 0.0
) -> Path:
    """ClickMe TFRecords → JPEG/PNG files + a natural manifest in ``out_dir``."""
    from PIL import Image

    out_dir = Path(out_dir)
    rows = []
    for shard in tfrecords:
        for i, record in enumerate(read_tfrecords(shard)):
            ex = parse_example(record)
            missing = [k for k in ("image", "heatmap", "label") if k not in ex]
            if missing:
                raise ManifestError(f"{shard} record {i}: no {', '.join(missing)} feature")
            label = str(ex["label"][0])
            sid = f"{Path(shard).stem}-{i:06d}"
            img_path = out_dir / "images" / label / f"{sid}.jpg"
            map_path = out_dir / "maps" / label / f"{sid}.png"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            map_path.parent.mkdir(parents=True, exist_ok=True)
            img_path.write_bytes(ex["image"][0])
            heat = Image.open(io.BytesIO(ex["heatmap"][0])).convert("L")
            heat.save(map_path)
            rows.append(
                {
                    "sample_id": sid,
                    "path_image": str(img_path.resolve()),
                    "path_map": str(map_path.resolve()),
                    "label": label,
                    "group": "novel" if _novel(label, novel_fraction) else "seen",
                }
            )
    return write_natural(out_dir / "manifest.parquet", rows)


def _read_fixations(path: Path) -> dict[str, list[tuple[float, float]]]:
    """The fixations JSON, validated: ``{"<class>/<file>": [[y, x], ...]}`` with numeric points."""
    hint = 'it must map each image ("<class>/<file>") to a list of [y, x] fixations'
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"fixations file {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"fixations file {path} is not valid JSON ({err}); {hint}") from None
    if not isinstance(entries, dict) or not entries:
        raise ManifestError(
            f"fixations file {path} holds a {type(entries).__name__}"
            f"{' (empty)' if not entries else ''}; {hint}"
        )
    for rel, points in entries.items():
        if not isinstance(points, list) or not all(
            isinstance(p, list | tuple)
            and len(p) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
            for p in points
        ):
            raise ManifestError(
                f"fixations file {path}: entry {rel!r} is not a list of [y, x] number pairs "
                f"(got {json.dumps(points)[:80]}); {hint}"
            )
    return entries


def import_fixations(
    fixations_json: str | Path, images_root: str | Path, out_dir: str | Path, sigma_px: float = 25.0
) -> Path:
    """``{"<class>/<file>": [[y, x], ...]}`` fixations → ``.npy`` maps + a natural manifest.

    ``sigma_px`` (pixels of the original image) is the blur of each fixation, roughly one degree
    of visual angle in typical eye-tracking setups; state yours when you publish.
    """
    entries = _read_fixations(Path(fixations_json))
    out_dir = Path(out_dir)
    rows = []
    for rel, points in sorted(entries.items()):
        img = Path(images_root) / rel
        if not img.exists():
            raise ManifestError(f"fixations list {rel}, but {img} does not exist")
        shape = _load_gray(str(img)).shape
        heat = fixation_map([tuple(p) for p in points], shape, sigma_px)
        map_path = out_dir / "maps" / f"{Path(rel).with_suffix('')}.npy"
        map_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(map_path, heat)
        label = Path(rel).parent.name
        rows.append(
            {
                "sample_id": str(Path(rel).with_suffix("")),
                "path_image": str(img.resolve()),
                "path_map": str(map_path.resolve()),
                "label": label,
                "group": "seen",
            }
        )
    return write_natural(out_dir / "manifest.parquet", rows)


# ------------------------------------------------------------------------ synthetic natural data


@dataclass(frozen=True, kw_only=True)
class SynthNaturalConfig:
    """Objects on textured backgrounds; the class is the shape of a small diagnostic mark on the
    object (the rest of the object is the same for every class), so a model that looks at the mark
    is right for the right reason. ``map_fraction`` of images carry a map of the mark."""

    seed: int = 0
    n_classes: int = 4
    per_class: int = 40
    size: int = 64
    map_fraction: float = 0.75


def _render(
    rng: np.random.Generator, cls: int, cfg: SynthNaturalConfig
) -> tuple[np.ndarray, np.ndarray]:
    s = cfg.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    # textured background: random low-frequency colour waves
    img = np.zeros((s, s, 3), np.float32)
    for c in range(3):
        fy, fx, ph = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 6.3)
        img[..., c] = 0.5 + 0.25 * np.sin(fy * yy + fx * xx + ph)
    img += rng.normal(0, 0.08, img.shape)
    # the object: a grey disc at a random place
    cy, cx, r = rng.uniform(0.35 * s, 0.65 * s), rng.uniform(0.35 * s, 0.65 * s), 0.22 * s
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    img[disc] = 0.45 + rng.normal(0, 0.03, (disc.sum(), 3))
    # the diagnostic mark (class-specific shape) at a random spot on the object
    my, mx = cy + rng.uniform(-0.4, 0.4) * r, cx + rng.uniform(-0.4, 0.4) * r
    m = 0.09 * s
    dy, dx = yy - my, xx - mx
    shapes = [
        np.abs(dy) + np.abs(dx) < m,  # diamond
        (np.abs(dy) < m) & (np.abs(dx) < m * 0.35),  # vertical bar
        (np.abs(dx) < m) & (np.abs(dy) < m * 0.35),  # horizontal bar
        (dy**2 + dx**2 < m**2) & (dy**2 + dx**2 > (0.5 * m) ** 2),
    ]  # ring
    mark = shapes[cls % len(shapes)]
    img[mark] = np.array([0.9, 0.2, 0.1]) + rng.normal(0, 0.03, (mark.sum(), 3))
    heat = np.exp(-((dy**2 + dx**2) / (2 * (0.8 * m) ** 2))).astype(np.float32)
    return np.clip(img, 0, 1), heat


def generate_natural(cfg: SynthNaturalConfig, out_dir: str | Path) -> Path:
    """Write PNG images, ``.npy`` maps (for ``map_fraction`` of them) and the manifest."""
    from PIL import Image

    if cfg.n_classes > 4:
        raise ValueError("the synthetic natural dataset has 4 mark shapes (n_classes <= 4)")
    rng = np.random.default_rng(cfg.seed)
    out = Path(out_dir)
    rows = []
    for cls in range(cfg.n_classes):
        for i in range(cfg.per_class):
            img, heat = _render(rng, cls, cfg)
            sid = f"class{cls}/img{i:04d}"
            img_path = out / "images" / f"{sid}.png"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img * 255).astype(np.uint8)).save(img_path)
            map_path = None
            if rng.random() < cfg.map_fraction:
                p = out / "maps" / f"{sid}.npy"
                p.parent.mkdir(parents=True, exist_ok=True)
                np.save(p, heat)
                map_path = str(p.resolve())
            rows.append(
                {
                    "sample_id": sid,
                    "path_image": str(img_path.resolve()),
                    "path_map": map_path,
                    "label": f"class{cls}",
                    "group": "seen",
                }
            )
    return write_natural(out / "manifest.parquet", rows)


# ------------------------------------------------------------------ natural manifests in studies


def inspect(path: str | Path):
    """A natural manifest's ``ManifestInfo`` (validated, hashed)."""
    from bioscale.data.manifest import ManifestInfo, manifest_sha

    sha = manifest_sha(path)
    try:
        schema = pq.read_schema(path)
        rows = pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"manifest {path} is not a readable Parquet file: {err}") from err
    missing = [c for c in NATURAL_COLUMNS if c not in schema.names]
    if missing:
        raise ManifestError(
            f"natural manifest {path} lacks column(s) {', '.join(missing)}; it needs "
            f"{', '.join(NATURAL_COLUMNS)} (write it with `bioscale data import natural`)"
        )
    return ManifestInfo(
        path=str(Path(path).resolve()), sha=sha, kind="natural", n_rows=rows, n_features=None
    )


def metadata_table(path: str | Path) -> pa.Table:
    """The natural manifest in the shape of the HCS metadata columns, so diets, splits and probes
    work unchanged: a class plays the part of a compound (diets keep a fraction of each class's
    images) and is the task label (``moa``); every image is its own well."""
    from bioscale.data.manifest import METADATA_COLUMNS

    table = pq.read_table(path, columns=list(NATURAL_COLUMNS))
    n = table.num_rows
    ids = table.column("sample_id")
    labels = table.column("label")
    const = pa.array(["natural"] * n, pa.string())
    columns = {
        "sample_id": ids,
        "source": const,
        "batch": const,
        "plate": const,
        "well": ids,
        "site": pa.array([0] * n, pa.int32()),
        "perturbation_id": labels,
        "perturbation_type": pa.array(["image"] * n, pa.string()),
        "inchikey": pa.nulls(n, pa.string()),
        "smiles": pa.nulls(n, pa.string()),
        "concentration": pa.nulls(n, pa.float64()),
        "moa": labels,
        "target": pa.nulls(n, pa.string()),
        "group": table.column("group"),
    }
    return pa.table({c: columns[c] for c in METADATA_COLUMNS})


def decode_natural(
    batch: dict[str, np.ndarray],
    *,
    size: int,
    flip: bool,
    seed: int | None,
    maps: MapConfig | None = None,
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` (numpy format): images and maps → ``x`` (B, 3, size, size) float32
    in [0, 1], ``map`` (B, size, size) float32 prepared as ``maps`` says (``prepare_map``; zeros
    where absent), ``has_map`` (B,) bool. With ``flip`` each image and its map are mirrored
    together with probability ½."""
    ids = [str(s) for s in batch["sample_id"]]
    xs, prepared, has = [], [], []
    for i, sid in enumerate(ids):
        x = load_image(str(batch["path_image"][i]), size)
        raw = batch["path_map"][i]
        m = (
            load_map(str(raw), size, maps)
            if raw is not None and str(raw) not in ("", "None")
            else None
        )
        has.append(m is not None)
        m = m if m is not None else np.zeros((size, size), np.float32)
        rng = np.random.default_rng(None if seed is None else rank_key(sid, seed))
        if flip and rng.random() < 0.5:
            x, m = x[:, :, ::-1], m[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        prepared.append(np.ascontiguousarray(m))
    out = {"x": np.stack(xs), "map": np.stack(prepared), "has_map": np.array(has, dtype=bool)}
    for name, values in batch.items():
        if name not in ("path_image", "path_map", "sample_id"):
            out[name] = values
    return out
