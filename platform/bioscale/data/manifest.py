"""The manifest contract (ARCHITECTURE.md): one Parquet row per sample, read and validated here.

A sample is a well profile (``features``, a fixed-width float32 list) or an image site (one
``path_<Dye>`` column per dye). Everything downstream reads manifests through this module so a
malformed file fails once, early, with the column it lacks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bioscale.errors import ManifestError

#: Columns every manifest has, in order (frozen contract).
METADATA_COLUMNS = (
    "sample_id",
    "source",
    "batch",
    "plate",
    "well",
    "site",
    "perturbation_id",
    "perturbation_type",
    "inchikey",
    "smiles",
    "concentration",
    "moa",
    "target",
    "group",
)
GROUPS = ("seen", "novel", "extra", "control")
PERTURBATION_TYPES = ("compound", "orf", "crispr", "control")
#: Perturbation types that perturb one gene (named in ``target``).
GENETIC_TYPES = ("orf", "crispr")
FEATURES = "features"
#: Parquet schema-metadata keys bioscale writes.
META_KIND = b"bioscale.kind"
META_N_FEATURES = b"bioscale.n_features"
META_DYES = b"bioscale.dyes"
#: Image manifests: one path column per dye, optional illumination functions per dye.
PATH_PREFIX = "path_"
ILLUM_PREFIX = "illum_"
#: Packed manifests (``bioscale data pack``): the shard file holding each site's crops.
PACKED_SHARD = "shard"

_STRING_COLUMNS = {c: pa.string() for c in METADATA_COLUMNS}
_STRING_COLUMNS["site"] = pa.int32()
_STRING_COLUMNS["concentration"] = pa.float64()


#: Profile manifests written by an importer: the feature (column) names, JSON list, in order.
META_FEATURE_NAMES = b"bioscale.feature_names"


def profile_schema(n_features: int, feature_names: list[str] | None = None) -> pa.Schema:
    """Arrow schema of a profile manifest with ``n_features`` float32 features per well (and
    their names in the schema metadata, ``bioscale.feature_names``, when known)."""
    fields = [pa.field(c, t) for c, t in _STRING_COLUMNS.items()]
    fields.append(pa.field(FEATURES, pa.list_(pa.float32(), n_features)))
    meta = {META_KIND: b"profiles", META_N_FEATURES: str(n_features).encode()}
    if feature_names is not None:
        if len(feature_names) != n_features:
            raise ManifestError(f"{len(feature_names)} feature names for {n_features} features")
        meta[META_FEATURE_NAMES] = json.dumps(list(feature_names)).encode()
    return pa.schema(fields, metadata=meta)


def feature_names(schema: pa.Schema) -> list[str] | None:
    """The feature names a profile manifest stores, or ``None``."""
    raw = (schema.metadata or {}).get(META_FEATURE_NAMES)
    return json.loads(raw) if raw else None


class ProfileWriter:
    """Write a profile manifest batch by batch (bounded memory: one batch at a time), atomically:
    the file appears under its name only when :meth:`close` succeeds. Use as a context manager."""

    def __init__(
        self, path: str | Path, feature_names: list[str], row_group_size: int = 1024
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_suffix(".parquet.tmp")
        self.schema = profile_schema(len(feature_names), feature_names)
        # dictionary-encode the metadata only: trying it on the float features (Parquet's default)
        # costs ~7× the write time and ends in a larger file (4,700 features, 384-well plates)
        self._writer = pq.ParquetWriter(
            self._tmp, self.schema, use_dictionary=list(METADATA_COLUMNS)
        )
        self._row_group_size = row_group_size
        self.n_rows = 0

    def write(self, columns: dict[str, list | pa.Array], features: np.ndarray) -> None:
        features = np.ascontiguousarray(features, dtype=np.float32)
        arrays = [pa.array(columns[c], type=_STRING_COLUMNS[c]) for c in METADATA_COLUMNS]
        flat = pa.array(features.reshape(-1), type=pa.float32())
        arrays.append(pa.FixedSizeListArray.from_arrays(flat, features.shape[1]))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        validate_table(table, source=str(self.path))
        self._writer.write_table(table, row_group_size=self._row_group_size)
        self.n_rows += table.num_rows

    def close(self) -> Path:
        self._writer.close()
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ProfileWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_profiles(
    path: str | Path, columns: dict[str, list], features: np.ndarray, row_group_size: int = 1024
) -> Path:
    """Write a profile manifest; several row groups so Ray Data reads it in parallel blocks.

    Args:
        path: output ``.parquet`` file.
        columns: the metadata columns (``METADATA_COLUMNS``), one list per column.
        features: (n_samples, n_features) float32 profiles.
        row_group_size: rows per row group (one Ray Data block each).
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    schema = profile_schema(features.shape[1])
    arrays = [pa.array(columns[c], type=_STRING_COLUMNS[c]) for c in METADATA_COLUMNS]
    flat = pa.array(features.reshape(-1), type=pa.float32())
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, features.shape[1]))
    table = pa.Table.from_arrays(arrays, schema=schema)
    validate_table(table, source=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, row_group_size=row_group_size)
    tmp.replace(path)  # atomic: a crash never leaves half a manifest behind
    return path


def image_schema(dyes: list[str] | tuple[str, ...], illum: bool = False) -> pa.Schema:
    """Arrow schema of an image manifest: metadata, ``path_<Dye>`` (and ``illum_<Dye>``) strings.

    The dye order is stored in the schema metadata (``bioscale.dyes``, JSON list); it is the
    channel order every decoder produces.
    """
    fields = [pa.field(c, t) for c, t in _STRING_COLUMNS.items()]
    fields += [pa.field(f"{PATH_PREFIX}{d}", pa.string()) for d in dyes]
    if illum:
        fields += [pa.field(f"{ILLUM_PREFIX}{d}", pa.string()) for d in dyes]
    return pa.schema(
        fields, metadata={META_KIND: b"cellpainting", META_DYES: json.dumps(list(dyes)).encode()}
    )


def write_images(
    path: str | Path,
    columns: dict[str, list],
    dyes: list[str] | tuple[str, ...],
    row_group_size: int = 256,
) -> Path:
    """Write an image manifest (one row per site) atomically; return its path.

    Args:
        path: output ``.parquet`` file.
        columns: ``METADATA_COLUMNS`` plus ``path_<Dye>`` for every dye (and ``illum_<Dye>`` for
            every dye when illumination functions are known), one list per column.
        dyes: the channel order, e.g. ``["DNA", "ER", "RNA", "AGP", "Mito"]``.
        row_group_size: sites per row group (one Ray Data block each).
    """
    illum = any(f"{ILLUM_PREFIX}{d}" in columns for d in dyes)
    schema = image_schema(dyes, illum=illum)
    missing = [n for n in schema.names if n not in columns]
    if missing:
        raise ManifestError(f"image manifest {path}: no values for column(s) {', '.join(missing)}")
    arrays = [pa.array(columns[n], type=schema.field(n).type) for n in schema.names]
    table = pa.Table.from_arrays(arrays, schema=schema)
    validate_table(table, source=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, row_group_size=row_group_size)
    tmp.replace(path)
    return path


def dyes_of(schema: pa.Schema, source: str = "manifest") -> list[str]:
    """The dye (channel) order of an image manifest: schema metadata, else its path columns."""
    meta = schema.metadata or {}
    if META_DYES in meta:
        dyes = json.loads(meta[META_DYES].decode())
    else:
        dyes = [n[len(PATH_PREFIX) :] for n in schema.names if n.startswith(PATH_PREFIX)]
    absent = [d for d in dyes if f"{PATH_PREFIX}{d}" not in schema.names]
    if not dyes or absent:
        raise ManifestError(
            f"{source} is not an image manifest: "
            + (f"dyes {', '.join(absent)} have no path column" if dyes else "no path_<Dye> column")
        )
    return dyes


def validate_table(table: pa.Table | pa.Schema, source: str, payload: bool = True) -> None:
    """Raise ``ManifestError`` naming the first missing column or unknown group value."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    missing = [c for c in METADATA_COLUMNS if c not in schema.names]
    if missing:
        raise ManifestError(
            f"manifest {source} lacks column(s) {', '.join(missing)}; a manifest needs "
            f"{', '.join(METADATA_COLUMNS)} and either 'features' (profiles) or path_<Dye> columns "
            "(images). Write it with `bioscale data synth profiles` or an importer."
        )
    if (
        payload
        and FEATURES not in schema.names
        and not any(n.startswith("path_") for n in schema.names)
        and PACKED_SHARD not in schema.names
    ):
        raise ManifestError(
            f"manifest {source} has neither a 'features' column nor path_<Dye> columns"
        )
    meta = schema.metadata or {}
    if payload and META_DYES in meta and PACKED_SHARD not in schema.names:
        dyes_of(schema, f"manifest {source}")  # every listed dye has its path column
    if isinstance(table, pa.Table):
        groups = set(table.column("group").to_pylist())
        bad = sorted(str(g) for g in groups - set(GROUPS))
        if bad:
            raise ManifestError(
                f"manifest {source}: column 'group' holds {', '.join(bad)}; allowed: {', '.join(GROUPS)}"
            )


@dataclass(frozen=True, kw_only=True)
class ManifestInfo:
    """What the driver knows about a manifest without reading its features."""

    path: str
    sha: str
    kind: str
    n_rows: int
    n_features: int | None


def manifest_sha(path: str | Path) -> str:
    """sha256 of the manifest file's bytes: the data lineage logged with every trial."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise ManifestError(
            f"manifest {path} does not exist; check data.manifest in the study YAML"
        ) from None
    except IsADirectoryError:
        raise ManifestError(
            f"manifest {path} is a folder; data.manifest names the manifest file itself (e.g. "
            f"{Path(path) / 'manifest.parquet'})"
        ) from None
    return digest.hexdigest()


def inspect(path: str | Path) -> ManifestInfo:
    """Read a manifest's schema and row count, validate it, and hash it."""
    sha = manifest_sha(path)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"manifest {path} is not a readable Parquet file: {err}") from err
    schema = pf.schema_arrow
    validate_table(schema, source=str(path))
    meta = schema.metadata or {}
    kind = meta.get(
        META_KIND, b"profiles" if FEATURES in schema.names else b"cellpainting"
    ).decode()
    n_features = None
    if FEATURES in schema.names:
        n_features = _feature_width(pf, str(path))
    _check_unique_ids(pf, str(path))
    return ManifestInfo(
        path=str(Path(path).resolve()),
        sha=sha,
        kind=kind,
        n_rows=pf.metadata.num_rows,
        n_features=n_features,
    )


def _feature_width(pf: pq.ParquetFile, source: str) -> int:
    """The fixed width F of ``features`` (``fixed_size_list<float>[F]``), or a ManifestError that
    says what the column holds instead (ragged rows are named by sample)."""
    ftype = pf.schema_arrow.field(FEATURES).type
    if pa.types.is_fixed_size_list(ftype) and pa.types.is_floating(ftype.value_type):
        return ftype.list_size
    if pa.types.is_list(ftype) or pa.types.is_large_list(ftype):
        table = pf.read(columns=["sample_id", FEATURES])
        lengths = pc.list_value_length(table.column(FEATURES)).to_numpy(zero_copy_only=False)
        widths = sorted({int(n) for n in lengths if n == n})
        if len(widths) > 1:
            common = np.bincount(lengths.astype(np.int64)).argmax()
            odd = int(np.flatnonzero(lengths != common)[0])
            raise ManifestError(
                f"manifest {source}: 'features' is ragged (rows hold {widths[0]} to {widths[-1]} "
                f"values; sample {table.column('sample_id')[odd].as_py()!r} has "
                f"{int(lengths[odd])}, most have {int(common)}). Every profile needs the same "
                "features in the same order: re-import the tables with `bioscale data import`."
            )
    raise ManifestError(
        f"manifest {source}: 'features' is {ftype}, not a fixed-width list of floats "
        "(fixed_size_list<float32>[F]); write profile manifests with "
        "bioscale.data.manifest.write_profiles or `bioscale data import`"
    )


def _check_unique_ids(pf: pq.ParquetFile, source: str) -> None:
    """Rows are selected by ``sample_id``: a duplicated id would mix two samples' labels and roles."""
    ids = pf.read(columns=["sample_id"]).column("sample_id")
    counts = pc.value_counts(ids)
    dup = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    if len(dup):
        shown = ", ".join(repr(v) for v in dup.field("values")[:5].to_pylist())
        raise ManifestError(
            f"manifest {source}: {len(dup)} sample_id value(s) occur more than once ({shown}"
            f"{', ...' if len(dup) > 5 else ''}); every row needs its own sample_id"
        )


def non_finite_features(path: str | Path, batch_rows: int = 16384) -> dict[str, str]:
    """``{sample_id: first bad feature}`` of the profiles holding NaN or ±Inf, streamed in
    batches of ``batch_rows`` rows (memory: one batch of features)."""
    pf = pq.ParquetFile(path)
    bad: dict[str, str] = {}
    for batch in pf.iter_batches(batch_size=batch_rows, columns=["sample_id", FEATURES]):
        col = batch.column(1)
        width = col.type.list_size
        values = col.flatten().to_numpy(zero_copy_only=False).reshape(len(batch), width)
        finite = np.isfinite(values)
        rows = np.flatnonzero(~finite.all(axis=1))
        if len(rows):
            ids = batch.column(0)
            for r in rows:
                j = int(np.flatnonzero(~finite[r])[0])
                bad[ids[int(r)].as_py()] = f"feature {j} = {values[r, j]}"
    return bad


def read_metadata(path: str | Path) -> pa.Table:
    """The manifest without its heavy columns (features, paths): what planning needs."""
    try:
        table = pq.read_table(path, columns=list(METADATA_COLUMNS))
    except (pa.ArrowInvalid, OSError, KeyError) as err:
        raise ManifestError(f"cannot read manifest {path}: {err}") from err
    validate_table(table, source=str(path), payload=False)
    return table


def read_features(
    path: str | Path, sample_ids: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Read ``(sample_ids, features)`` for the given samples (all when ``None``), in that order.

    Used by the plain-torch path and tests; trials stream features with Ray Data instead.
    """
    table = pq.read_table(path, columns=["sample_id", FEATURES])
    ids = table.column("sample_id").to_pylist()
    feats = table.column(FEATURES).combine_chunks()
    matrix = feats.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), -1)
    if sample_ids is None:
        return ids, matrix
    index = {s: i for i, s in enumerate(ids)}
    try:
        rows = np.fromiter((index[s] for s in sample_ids), dtype=np.int64, count=len(sample_ids))
    except KeyError as err:
        raise ManifestError(f"sample {err.args[0]!r} is not in manifest {path}") from None
    return list(sample_ids), matrix[rows]


def schema_json(path: str | Path) -> str:
    """The manifest's Parquet schema metadata as JSON (for reports)."""
    meta = pq.read_schema(path).metadata or {}
    return json.dumps({k.decode(): v.decode() for k, v in meta.items()})
