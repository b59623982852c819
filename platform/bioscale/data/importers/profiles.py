"""Well-level profile tables (CellProfiler / pycytominer / JUMP) → a profile manifest.

``bioscale data import profiles TABLE [TABLE ...] --out manifest.parquet`` reads CSV, CSV.gz and
Parquet tables — one file, many, or folder trees (every ``*.csv``, ``*.csv.gz``, ``*.parquet``
below them, in sorted order). A table has metadata columns (any column whose name holds
``Metadata_``: ``Metadata_Plate``, ``Image_Metadata_Well``…) and feature columns (by default the
numeric columns that are not metadata; ``--features Cells_,Cytoplasm_,Nuclei_`` selects them by
prefix). Every table must have the same features; their names are stored in the manifest
(``bioscale.feature_names``).

Metadata columns map onto the manifest contract by their name after ``Metadata_``
(case-insensitive): ``Source``, ``Batch``, ``Plate``, ``Well``; the perturbation from
``JCP2022``, ``broad_sample``, ``Compound`` or ``pert_iname`` (the first present); the
concentration from ``Concentration``, ``mmoles_per_liter`` or ``dose`` (as the table gives it:
µM in JUMP and BBBC021); ``moa`` and ``target`` (pipe-separated lists kept as they are),
``InChIKey``, ``SMILES`` and ``pert_type``. A well is a negative control when its ``pert_type`` is
``control``/``negcon``/``ctl_vehicle`` or its perturbation is ``DMSO``/``negcon`` (a control
carries no MoA). Metadata a table lacks can come from, in this order of precedence:

- ``--join FILE --on LEFT=RIGHT[,LEFT=RIGHT]``: a plate map joined on those columns (``LEFT`` a
  profile-table column or its name after ``Metadata_``; e.g. BBBC021's image table, one row per
  image, ``--on Plate=Image_Metadata_Plate_DAPI,Well=Image_Metadata_Well_DAPI``);
- ``--annotations FILE``: MoA/target (and InChIKey/SMILES) by compound, and by concentration
  too when the table has one (BBBC021's ``compound, concentration, moa``);
- ``--metadata DIR``: the JUMP tables (plate/well/compound, Drug Repurposing Hub annotations), as
  for images.

Defaults, never a crash: a table without a source column takes ``--source`` (default
``unknown``); without a batch column, the batch is the first group of ``--batch-pattern`` on the
plate name (BBBC021: ``'^(Week\\d+)_'``), else the folder layout's ``<source>/<batch>/<plate>/
<plate>.*`` (JUMP's ``profiles/`` tree), else ``unknown``. Groups are assigned as for images,
stratified by MoA (``bioscale.data.groups``); a well without a known perturbation is ``extra``.

Memory is bounded at any table size: a first pass reads only the metadata columns (to assign
groups and check ids), a second streams the features a block at a time into the manifest's row
groups (``bioscale.data.manifest.ProfileWriter``).
"""

from __future__ import annotations

import csv
import functools
import gzip
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bioscale.data import manifest as mf
from bioscale.data.groups import assign_groups
from bioscale.data.importers import ImportConfig, register_writer
from bioscale.errors import ConfigError, ManifestError

SUFFIXES = (".csv", ".csv.gz", ".parquet")
#: manifest field → the metadata names that fill it, in order of preference (lower case)
ALIASES: dict[str, tuple[str, ...]] = {
    "source": ("source",),
    "batch": ("batch",),
    "plate": ("plate",),
    "well": ("well",),
    "perturbation_id": ("jcp2022", "broad_sample", "compound", "pert_iname"),
    "concentration": ("concentration", "mmoles_per_liter", "dose"),
    "moa": ("moa",),
    "target": ("target",),
    "inchikey": ("inchikey",),
    "smiles": ("smiles",),
    "pert_type": ("pert_type",),
}
CONTROL_TYPES = {"control", "negcon", "ctl_vehicle", "ctrl"}
CONTROL_NAMES = {"DMSO", "NEGCON"}
UNKNOWN = "unknown"
_NUMBER = re.compile(r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)
_ROWS_PER_WRITE = 1024
_PARQUET_WHOLE_BLOCKS = 4  # a Parquet row group up to 4 × block_mb is read whole


@dataclass(frozen=True, kw_only=True)
class ProfileImportConfig:
    """What ``data import profiles`` reads (see the module docstring)."""

    tables: tuple[str, ...]
    out: str
    metadata: str | None = None
    annotations: str | None = None
    join: str | None = None
    #: ``(left, right)`` column pairs of ``join``
    on: tuple[tuple[str, str], ...] = ()
    features: tuple[str, ...] | None = None  # column-name prefixes
    source: str | None = None
    batch_pattern: str | None = None
    novel_fraction: float = 0.25
    block_mb: float = 16.0  # CSV block read at a time

    def __post_init__(self) -> None:
        if not self.tables:
            raise ConfigError("data import profiles: name at least one table or folder")
        if (self.join is None) != (not self.on):
            raise ConfigError("--join FILE and --on LEFT=RIGHT go together: give both or neither")
        if self.batch_pattern is not None:
            try:
                pattern = re.compile(self.batch_pattern)
            except re.error as err:
                raise ConfigError(f"--batch-pattern {self.batch_pattern!r}: {err}") from None
            if pattern.groups < 1:
                raise ConfigError(
                    f"--batch-pattern {self.batch_pattern!r} needs a group, e.g. '^(Week\\d+)_'"
                )


@dataclass(frozen=True, kw_only=True)
class ProfileImportSummary:
    path: Path
    n_wells: int
    n_features: int
    n_tables: int
    n_annotated: int  # wells with a perturbation
    groups: dict[str, int]
    excluded_columns: list[str] = field(default_factory=list)  # non-numeric, not metadata


def meta_key(column: str) -> str | None:
    """``Image_Metadata_Plate`` → ``plate``: a metadata column's name after ``Metadata_``, lower
    case; ``None`` for a column that is not metadata."""
    if "Metadata_" not in column:
        return None
    return column.split("Metadata_", 1)[1].lower()


# ------------------------------------------------------------------------------------- tables


def find_tables(paths: tuple[str, ...]) -> list[Path]:
    """Every table the arguments name: files as given, folders searched recursively."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            hits = sorted(q for q in p.rglob("*") if q.is_file() and q.name.endswith(SUFFIXES))
            if not hits:
                raise ManifestError(
                    f"folder {p} holds no profile table (*.csv, *.csv.gz, *.parquet)"
                )
            found += hits
        elif p.is_file():
            if not p.name.endswith(SUFFIXES):
                raise ManifestError(f"{p} is not a CSV, CSV.gz or Parquet table")
            found.append(p)
        else:
            raise ManifestError(f"profile table {p} does not exist")
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


@functools.lru_cache(maxsize=4096)
def _header(path: Path) -> list[str]:
    """A table's column names (cached: a Parquet footer of 4,700 columns costs ~40 ms to parse,
    and the layout check and the metadata pass both need it)."""
    return list(_read_header(path))


def _read_header(path: Path) -> list[str]:
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as err:
            raise ManifestError(f"{path} is not a readable Parquet file: {err}") from None
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", newline="") as fh:
            return next(csv.reader(fh))
    except StopIteration:
        raise ManifestError(f"{path} is empty: a profile table needs a header row") from None
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile) as err:
        raise ManifestError(f"{path} is not a readable CSV table: {err}") from None


def _numeric_columns(path: Path, columns: list[str]) -> set[str]:
    """The columns of ``path`` holding numbers (CSV: as pyarrow infers its first block)."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        types = {n: schema.field(n).type for n in columns}
    else:
        import pyarrow.csv as pacsv

        try:
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=1 << 20),
                convert_options=pacsv.ConvertOptions(include_columns=columns),
            )
        except pa.ArrowInvalid as err:
            raise ManifestError(f"{path}: {err}") from None
        first = reader.read_next_batch()
        types = {f.name: f.type for f in reader.schema}
        for name, t in types.items():  # text in a column of numbers: a bad value, not a label
            if pa.types.is_string(t):
                values = [v for v in first.column(name).to_pylist() if v is not None]
                bad = [v for v in values if not _NUMBER.match(v.strip())]
                if values and len(bad) < 0.5 * len(values):
                    raise ManifestError(
                        f"{path} column {name}: {bad[0]!r} is not a number, in a column of "
                        "numbers (fix the table, or leave the column out with --features PREFIXES)"
                    )
    return {
        n
        for n, t in types.items()
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)
    }


@dataclass(frozen=True, kw_only=True)
class _Layout:
    features: list[str]
    excluded: list[str]


def feature_layout(tables: list[Path], prefixes: tuple[str, ...] | None) -> _Layout:
    """The feature columns every table shares (the first table's order), or an error naming the
    file and the columns it lacks or adds."""
    first = tables[0]
    header = _header(first)
    candidates = [c for c in header if meta_key(c) is None]
    if prefixes:
        features = [c for c in candidates if c.startswith(prefixes)]
        excluded: list[str] = []
        if not features:
            raise ManifestError(
                f"{first}: no column starts with {', '.join(prefixes)} (--features); its columns "
                f"start {', '.join(sorted({c.split('_')[0] + '_' for c in candidates})[:8])}"
            )
    else:
        numeric = _numeric_columns(first, candidates)
        features = [c for c in candidates if c in numeric]
        excluded = [c for c in candidates if c not in numeric]
        if not features:
            raise ManifestError(f"{first} has no numeric feature columns besides Metadata_ ones")
    wanted = set(features)
    for path in tables[1:]:
        cols = set(_header(path))
        lacking = [c for c in features if c not in cols]
        extra = sorted(c for c in cols - wanted if meta_key(c) is None and c not in excluded)
        if prefixes:
            extra = [c for c in extra if c.startswith(prefixes)]
        if lacking or extra:
            detail = []
            if lacking:
                detail.append(f"lacks {len(lacking)} feature(s) ({', '.join(lacking[:3])}…)")
            if extra:
                detail.append(f"has {len(extra)} other(s) ({', '.join(extra[:3])}…)")
            raise ManifestError(
                f"{path} {' and '.join(detail)} compared with {first}: every table needs the "
                "same features (select common ones with --features PREFIXES)"
            )
    return _Layout(features=features, excluded=excluded)


def _parquet_blocks(pf, columns: list[str], block_mb: float) -> Iterator[pa.RecordBatch]:
    """``columns`` of a Parquet file, one row group at a time when a row group is small (at most
    ``_PARQUET_WHOLE_BLOCKS × block_mb`` uncompressed: a 384-well plate of 4,700 float64 features
    is 14 MB), else in 4,096-row batches. ``read_row_group`` costs ~0.7× ``iter_batches``' CPU on
    wide tables."""
    whole = _PARQUET_WHOLE_BLOCKS * block_mb * 2**20
    for i in range(pf.num_row_groups):
        if pf.metadata.row_group(i).total_byte_size <= whole:
            yield from pf.read_row_group(i, columns=columns).to_batches()
        else:
            yield from pf.iter_batches(batch_size=4096, row_groups=[i], columns=columns)


def _batches(
    path: Path, columns: list[str], types: dict[str, pa.DataType], block_mb: float
) -> Iterator[pa.RecordBatch]:
    """``columns`` of one table, a block at a time, cast to ``types``; a value that is not a
    number in a feature column names the file and the column."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        wanted = [types[name] for name in columns]
        for batch in _parquet_blocks(pf, columns, block_mb):
            if batch.schema.names == columns and batch.schema.types == wanted:
                yield batch  # already in order and of the wanted types (a Parquet table's own)
                continue
            out = []
            for name, to in zip(columns, wanted, strict=True):
                col = batch.column(batch.schema.get_field_index(name))
                try:
                    out.append(col if col.type == to else col.cast(to))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise ManifestError(
                        f"{path}: column {name} holds {col.type}, not numbers ({err})"
                    ) from None
            yield pa.RecordBatch.from_arrays(out, names=columns)
        return
    import pyarrow.csv as pacsv

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=int(block_mb * 2**20)),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types=types,
                strings_can_be_null=True,
                null_values=["", "NA", "NaN", "nan", "NULL", "null"],
            ),
        )
        for batch in reader:
            yield batch
    except pa.ArrowInvalid as err:  # "In CSV column #12: CSV conversion error to float: ..."
        message = str(err)
        m = re.search(r"column #(\d+)", message)
        name = ""
        if m:
            header = _header(path)
            idx = int(m.group(1))
            name = f" column {header[idx]}" if idx < len(header) else ""
        raise ManifestError(
            f"{path}{name}: {message.splitlines()[0]} (features must be numbers; select the "
            "feature columns with --features PREFIXES)"
        ) from None


# ----------------------------------------------------------------------------------- metadata


def _read_table_rows(path: str, what: str) -> list[dict[str, str]]:
    """A small side table (plate map, annotations), every value a string."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{what} {p} does not exist")
    try:
        if p.name.endswith(".parquet"):
            table = pq.read_table(p)
            table = table.cast(pa.schema([pa.field(n, pa.string()) for n in table.schema.names]))
        else:
            header = _header(p)
            sep = "\t" if p.name.endswith((".tsv", ".tsv.gz")) else ","
            table = pacsv.read_csv(
                p,
                parse_options=pacsv.ParseOptions(delimiter=sep),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(header, pa.string())
                ),
            )
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"{what} {p} is not a readable table: {err}") from None
    return table.to_pylist()


def _pick(row: dict[str, str | None], names: tuple[str, ...]) -> str | None:
    for n in names:
        v = row.get(n)
        if v not in (None, "", "NA", "nan", "NaN"):
            return str(v)
    return None


def _keyed(row: dict[str, str | None]) -> dict[str, str | None]:
    """A row's columns by their metadata key (``Metadata_``-less, lower case; other columns
    lower-cased as they are: side tables often have plain ``compound``, ``moa``)."""
    return {(meta_key(k) or k.lower()): v for k, v in row.items()}


def _conc_key(value: str | float | None) -> str | None:
    if value in (None, ""):
        return None
    try:
        return f"{float(value):.6g}"
    except ValueError:
        return str(value)


class _Join:
    """A plate map joined on ``on`` pairs; its rows by key, one per key (conflicts refused)."""

    def __init__(self, path: str, on: tuple[tuple[str, str], ...]) -> None:
        rows = _read_table_rows(path, "--join table")
        if not rows:
            raise ManifestError(f"--join table {path} has no rows")
        self.left = [left for left, _ in on]
        right = [r for _, r in on]
        missing = [r for r in right if r not in rows[0]]
        if missing:
            raise ManifestError(
                f"--join table {path} has no column {', '.join(missing)} (--on); it has "
                f"{', '.join(list(rows[0])[:12])}"
            )
        joined = set(right)
        self.rows: dict[tuple[str, ...], dict[str, str | None]] = {}
        for row in rows:
            key = tuple(str(row[r]) for r in right)
            values = _keyed({k: v for k, v in row.items() if k not in joined})
            fields = {f: _pick(values, names) for f, names in ALIASES.items()}
            fields = {f: v for f, v in fields.items() if v is not None}
            old = self.rows.setdefault(key, fields)
            clash = [f for f in fields if f in old and old[f] != fields[f]]
            if clash:
                raise ManifestError(
                    f"--join table {path}: {'/'.join(key)} has two values of {clash[0]} "
                    f"({old[clash[0]]!r} and {fields[clash[0]]!r})"
                )

    def lookup(
        self, raw: dict[str, str | None], keyed: dict[str, str | None]
    ) -> dict[str, str | None]:
        """The plate map's fields for a profile row (``LEFT`` read as the column itself, else
        as its metadata key: ``Plate`` finds ``Metadata_Plate``)."""
        key = []
        for left in self.left:
            value = raw.get(left)
            if value is None:
                value = keyed.get(meta_key(left) or left.lower())
            key.append(str(value))
        return self.rows.get(tuple(key), {})


class _Annotations:
    """MoA/target (and InChIKey/SMILES) by compound, and by concentration when given."""

    def __init__(self, path: str) -> None:
        rows = [_keyed(r) for r in _read_table_rows(path, "--annotations table")]
        if not rows or (
            _pick(rows[0], ALIASES["perturbation_id"]) is None
            and not any(n in rows[0] for n in ALIASES["perturbation_id"])
        ):
            raise ManifestError(
                f"--annotations table {path} needs a compound column (compound, broad_sample, "
                "JCP2022 or pert_iname, optionally Metadata_-prefixed) and moa/target columns"
            )
        self.by_dose: dict[tuple[str, str | None], dict[str, str]] = {}
        self.with_dose = any(n in rows[0] for n in ALIASES["concentration"])
        for r in rows:
            pid = _pick(r, ALIASES["perturbation_id"])
            if pid is None:
                continue
            dose = _conc_key(_pick(r, ALIASES["concentration"])) if self.with_dose else None
            info = {
                f: v
                for f in ("moa", "target", "inchikey", "smiles")
                if (v := _pick(r, ALIASES[f])) is not None
            }
            self.by_dose[(pid, dose)] = info
            self.by_dose.setdefault((pid, None), info)

    def lookup(self, pid: str | None, concentration: str | None) -> dict[str, str]:
        if pid is None:
            return {}
        if self.with_dose:
            hit = self.by_dose.get((pid, _conc_key(concentration)))
            if hit is not None:
                return hit
        return self.by_dose.get((pid, None), {})


def _layout_names(path: Path) -> tuple[str | None, str | None]:
    """``(source, batch)`` from a ``<source>/<batch>/<plate>/<plate>.*`` path (JUMP)."""
    stem = path.name
    for suffix in SUFFIXES:
        stem = stem.removesuffix(suffix)
    parts = path.parts
    if len(parts) >= 4 and parts[-2] == stem:
        return parts[-4], parts[-3]
    return None, None


# -------------------------------------------------------------------------------- the import


@dataclass(kw_only=True)
class _TableMeta:
    path: Path
    columns: dict[str, list]  # the manifest's metadata columns, group excepted


def _table_metadata(
    path: Path,
    cfg: ProfileImportConfig,
    join: _Join | None,
    notes: _Annotations | None,
    jump,
) -> _TableMeta:
    header = _header(path)
    meta_cols = [c for c in header if meta_key(c) is not None]
    if not meta_cols:
        raise ManifestError(
            f"{path} has no Metadata_ columns: a profile table needs at least Metadata_Plate and "
            "Metadata_Well"
        )
    types = dict.fromkeys(meta_cols, pa.string())
    rows: list[dict[str, str | None]] = []
    for batch in _batches(path, meta_cols, types, cfg.block_mb):
        rows += batch.to_pylist()
    layout_source, layout_batch = _layout_names(path)
    pattern = re.compile(cfg.batch_pattern) if cfg.batch_pattern else None
    cols: dict[str, list] = {c: [] for c in mf.METADATA_COLUMNS if c != "group"}
    for raw in rows:
        keyed = _keyed(raw)
        got = {f: _pick(keyed, names) for f, names in ALIASES.items()}
        if join is not None:
            for f, v in join.lookup(raw, keyed).items():
                if got.get(f) is None:
                    got[f] = v
        plate, well = got["plate"], got["well"]
        if plate is None or well is None:
            what = "plate" if plate is None else "well"
            raise ManifestError(
                f"{path}: a row has no {what} (Metadata_Plate / Metadata_Well, or from --join): "
                f"{dict(list(raw.items())[:4])}"
            )
        if jump is not None:
            info = jump.lookup(plate, well)
            plate_info = jump.plate(plate)
            for f in ("perturbation_id", "moa", "target", "inchikey", "smiles", "source"):
                if got.get(f) is None and info.get(f) is not None:
                    got[f] = str(info[f])
            if got.get("concentration") is None and info.get("concentration") is not None:
                got["concentration"] = str(info["concentration"])
            if got.get("batch") is None and plate_info.get("batch"):
                got["batch"] = plate_info["batch"]
            if got.get("source") is None and plate_info.get("source"):
                got["source"] = plate_info["source"]
            if info.get("perturbation_type") == "control":
                got["pert_type"] = "control"
        if notes is not None:
            for f, v in notes.lookup(got["perturbation_id"], got["concentration"]).items():
                if got.get(f) is None:
                    got[f] = v
        pid = got["perturbation_id"]
        control = (got.get("pert_type") or "").lower() in CONTROL_TYPES or (
            pid is not None and pid.upper() in CONTROL_NAMES
        )
        batch = got["batch"]
        if batch is None and pattern is not None:
            m = pattern.search(plate)
            batch = m.group(1) if m else None
        cols["sample_id"].append(f"{plate}_{well}")
        cols["source"].append(got["source"] or layout_source or cfg.source or UNKNOWN)
        cols["batch"].append(batch or layout_batch or UNKNOWN)
        cols["plate"].append(plate)
        cols["well"].append(well)
        cols["site"].append(0)  # profiles are well-level
        cols["perturbation_id"].append(pid)
        cols["perturbation_type"].append(
            "control" if control else ("compound" if pid is not None else None)
        )
        cols["inchikey"].append(got["inchikey"])
        cols["smiles"].append(got["smiles"])
        conc = got["concentration"]
        try:
            cols["concentration"].append(float(conc) if conc is not None else None)
        except ValueError:
            raise ManifestError(
                f"{path}: well {plate}/{well} has concentration {conc!r}, not a number"
            ) from None
        moa = got["moa"]
        cols["moa"].append(None if control or (moa or "").upper() in CONTROL_NAMES else moa)
        cols["target"].append(None if control else got["target"])
    return _TableMeta(path=path, columns=cols)


def import_profiles(
    cfg: ProfileImportConfig,
    progress: Callable[[str], None] | None = None,
    address: str | None = None,
) -> ProfileImportSummary:
    """Import the tables of ``cfg`` into one profile manifest (module docstring); with
    ``address`` (a Ray cluster, or ``local``) the feature pass runs as Ray Data tasks, one table
    each."""
    say = progress or (lambda message: None)
    tables = find_tables(cfg.tables)
    layout = feature_layout(tables, cfg.features)
    join = _Join(cfg.join, cfg.on) if cfg.join else None
    notes = _Annotations(cfg.annotations) if cfg.annotations else None
    # pass 1: metadata only (groups are assigned over the whole dataset)
    metas: list[_TableMeta] = []
    for i, path in enumerate(tables, start=1):
        metas.append(_table_metadata(path, cfg, join, notes, jump=None))
        if i == len(tables) or i % max(1, len(tables) // 10) == 0:
            say(f"  read the metadata of {i}/{len(tables)} table(s)")
    jump = None
    if cfg.metadata:
        from bioscale.data.importers.jump import JumpMetadata

        plates = {p for m in metas for p in m.columns["plate"]}
        jump = JumpMetadata.load(cfg.metadata, plates=plates)
        metas = [_table_metadata(m.path, cfg, join, notes, jump=jump) for m in metas]
    where: dict[str, Path] = {}
    perturbations: dict[str, str | None] = {}
    controls: set[str] = set()
    for m in metas:
        for sid in m.columns["sample_id"]:
            if sid in where:
                raise ManifestError(
                    f"well {sid} appears twice ({where[sid]} and {m.path}): one row per well "
                    "(aggregate sites or cells to wells first, e.g. pycytominer.aggregate)"
                )
            where[sid] = m.path
        for pid, moa, kind in zip(
            m.columns["perturbation_id"],
            m.columns["moa"],
            m.columns["perturbation_type"],
            strict=True,
        ):
            if pid is None:
                continue
            if kind == "control":
                controls.add(pid)
            if perturbations.get(pid) is None:
                perturbations[pid] = moa
    if not where:
        raise ManifestError(f"{', '.join(map(str, tables[:3]))}: no wells to import")
    groups = assign_groups(perturbations, controls, cfg.novel_fraction)
    # pass 2: features, a block at a time, into the manifest's row groups
    counts: dict[str, int] = {}
    columns = []
    for m in metas:
        cols = dict(m.columns)
        cols["group"] = [groups.get(p, "extra") if p else "extra" for p in cols["perturbation_id"]]
        for g in cols["group"]:
            counts[g] = counts.get(g, 0) + 1
        columns.append(cols)
    if address is None:
        with mf.ProfileWriter(cfg.out, layout.features) as writer:
            for i, (m, cols) in enumerate(zip(metas, columns, strict=True), start=1):
                _write_table(writer, m.path, cols, layout.features, cfg.block_mb)
                say(f"  wrote {writer.n_rows:,} wells ({i}/{len(metas)} table(s))")
    else:
        _write_with_ray(metas, columns, layout.features, cfg, address, say)
    return ProfileImportSummary(
        path=Path(cfg.out),
        n_wells=len(where),
        n_features=len(layout.features),
        n_tables=len(tables),
        n_annotated=sum(1 for m in metas for p in m.columns["perturbation_id"] if p),
        groups=counts,
        excluded_columns=layout.excluded,
    )


def _write_table(writer, path: Path, cols: dict[str, list], features: list[str], block_mb: float):
    """One table's features, a block at a time, into ``writer`` with its rows' metadata."""
    types = dict.fromkeys(features, pa.float32())
    start, pending = 0, []
    for batch in _batches(path, features, types, block_mb):
        # (rows, F) float32, a null → NaN; one copy (a per-column loop is ~10× slower)
        pending.append(batch.to_tensor(null_to_nan=True, row_major=True).to_numpy())
        if sum(len(p) for p in pending) >= _ROWS_PER_WRITE:  # row groups of ~1024
            start = _flush(writer, cols, start, pending)
    start = _flush(writer, cols, start, pending)
    if start != len(cols["sample_id"]):
        raise ManifestError(f"{path} changed while it was imported: import it again")


def _write_part(item: dict[str, Any], *, features: list[str], block_mb: float) -> dict[str, Any]:
    """A Ray Data task: one table into its part file (a manifest of its own rows)."""
    import json

    cols = json.loads(item["columns"])
    with mf.ProfileWriter(item["part"], features) as writer:
        _write_table(writer, Path(item["path"]), cols, features, block_mb)
    return {"index": item["index"], "rows": len(cols["sample_id"])}


def _write_with_ray(metas, columns, features, cfg, address: str, say) -> None:
    """Pass 2 on a Ray cluster: every table is written to a part file by a Ray Data task, then
    the parts are joined, row group by row group, into the manifest (tables in order). The tables
    and ``--out`` must be on storage every node sees."""
    import json
    import shutil

    import pyarrow.parquet as pq
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    parts = Path(cfg.out).with_suffix(".parts")
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    items = [
        {
            "index": i,
            "path": str(Path(m.path).resolve()),
            "part": str((parts / f"part-{i:05d}.parquet").resolve()),
            "columns": json.dumps(cols),
        }
        for i, (m, cols) in enumerate(zip(metas, columns, strict=True))
    ]
    try:
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
            _write_part, fn_kwargs={"features": features, "block_mb": cfg.block_mb}, num_cpus=1
        )
        for done, _ in enumerate(ds.iter_rows(), start=1):
            if done == len(items) or done % max(1, len(items) // 10) == 0:
                say(f"  wrote {done}/{len(items)} table(s) on the cluster")
        schema = mf.profile_schema(len(features), features)
        tmp = Path(cfg.out).with_suffix(".parquet.tmp")
        with pq.ParquetWriter(tmp, schema, use_dictionary=list(mf.METADATA_COLUMNS)) as writer:
            for item in items:
                pf = pq.ParquetFile(item["part"])
                for g in range(pf.num_row_groups):
                    writer.write_table(pf.read_row_group(g).cast(schema))
        tmp.replace(cfg.out)
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def _flush(writer, cols: dict[str, list], start: int, pending: list[np.ndarray]) -> int:
    """Write the ``pending`` feature blocks with their rows' metadata; the next row."""
    if not pending:
        return start
    x = np.concatenate(pending) if len(pending) > 1 else pending[0]
    n = len(x)
    writer.write({c: v[start : start + n] for c, v in cols.items()}, x)
    pending.clear()
    return start + n


@register_writer("profiles", kind="profiles")
def _write(cfg: ImportConfig) -> Path:
    """The registry's entry: one table (or folder), the shared import settings."""
    return import_profiles(
        ProfileImportConfig(
            tables=(cfg.input,),
            out=cfg.out,
            metadata=cfg.metadata,
            source=cfg.source,
            novel_fraction=cfg.novel_fraction,
        )
    ).path
