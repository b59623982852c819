"""``bioscale data check``: decode every file of an image manifest and report raw statistics;
for a profile manifest, count the non-finite and constant features.

Per sample and channel: shape, dtype, min, max and mean of the raw decoded values (before any
illumination correction or normalisation). A missing, truncated or unreadable file is reported
with its sample and path, and checking goes on, so one run lists every bad file.

Runs in this process (``workers=1``), in a local process pool (``workers>1``; each worker decodes
a contiguous chunk of rows), or on a Ray cluster (``address``: Ray Data ``map_batches`` over the
manifest, repartitioned so every node decodes).

Profile manifests (a ``features`` column, :func:`check_profiles`) are streamed in batches of
bounded size, so memory does not grow with the number of wells: per feature the NaN, +Inf and
-Inf counts and whether it is constant (zero variance over its finite values), the wells holding
any non-finite value, and the first of them named with their first bad feature.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bioscale.data import manifest as mf
from bioscale.data.hashing import rank_key
from bioscale.data.images import ImageReadError, read_image
from bioscale.data.manifest import PATH_PREFIX, dyes_of
from bioscale.errors import ManifestError

Progress = Callable[[int, int, int], None]  # (done, total, bad)
_ID_COLUMNS = ("sample_id", "plate", "well", "site")


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """Reports in manifest order (one dict per sample) and the bad files found."""

    reports: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bad(self) -> list[dict]:
        """``{"sample_id", "file", "error"}`` for every unreadable file."""
        return [
            {"sample_id": r["sample_id"], **e} for r in self.reports for e in r.get("errors", [])
        ]


def check_row(row: dict, dyes: list[str]) -> dict:
    """Decode one sample's files; its report (``errors`` only when some file failed)."""
    report = {c: row.get(c) for c in _ID_COLUMNS}
    channels, errors = {}, []
    for dye in dyes:
        path = row.get(f"{PATH_PREFIX}{dye}")
        try:
            if not path:
                raise ImageReadError(f"no file for dye {dye}")
            img = read_image(path)
        except ImageReadError as err:
            errors.append({"dye": dye, "file": path, "error": str(err)})
            continue
        channels[dye] = {
            "shape": list(img.shape),
            "dtype": str(img.dtype),
            "min": img.min().item(),
            "max": img.max().item(),
            "mean": float(img.mean(dtype=np.float64)),
        }
    report["channels"] = channels
    if errors:
        report["errors"] = errors
    return report


def _check_chunk(rows: list[dict], dyes: list[str]) -> list[dict]:
    return [check_row(r, dyes) for r in rows]


def _check_batch_ray(batch, dyes: list[str]):  # pyarrow.Table → {"report": JSON strings}
    import pyarrow as pa

    return pa.table({"report": [json.dumps(check_row(r, dyes)) for r in batch.to_pylist()]})


def select_rows(rows: list[dict], sample: int | None) -> list[dict]:
    """All rows, or ``sample`` of them chosen by a stable hash of the sample id, in manifest order."""
    if sample is None or sample >= len(rows):
        return rows
    chosen = set(
        sorted(range(len(rows)), key=lambda i: rank_key(rows[i]["sample_id"], "check"))[:sample]
    )
    return [r for i, r in enumerate(rows) if i in chosen]


def check_manifest(
    manifest: str,
    *,
    sample: int | None = None,
    workers: int = 1,
    address: str | None = None,
    progress: Progress | None = None,
    chunk: int = 16,
) -> CheckResult:
    """Check every (or ``sample``) site of ``manifest``; see the module docstring."""
    t0 = time.perf_counter()
    try:
        schema = pq.read_schema(manifest)
    except (OSError, ValueError) as err:
        raise ManifestError(f"cannot read manifest {manifest}: {err}") from None
    dyes = dyes_of(schema, str(manifest))
    columns = [*_ID_COLUMNS, *(f"{PATH_PREFIX}{d}" for d in dyes)]
    rows = select_rows(pq.read_table(manifest, columns=columns).to_pylist(), sample)
    if address is not None:
        reports = list(_run_ray(manifest, rows, dyes, address, progress))
    else:
        reports = []
        for part in _run_local(rows, dyes, workers, chunk):
            reports.extend(part)
            if progress:
                progress(len(reports), len(rows), sum("errors" in r for r in reports))
    return CheckResult(reports=reports, seconds=time.perf_counter() - t0)


def _run_local(rows: list[dict], dyes: list[str], workers: int, chunk: int) -> Iterator[list[dict]]:
    chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
    if workers <= 1:
        for c in chunks:
            yield _check_chunk(c, dyes)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        yield from pool.map(_check_chunk, chunks, [dyes] * len(chunks))


def _run_ray(
    manifest: str, rows: list[dict], dyes: list[str], address: str, progress: Progress | None
) -> Iterator[dict]:
    import pyarrow as pa
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    table = pa.Table.from_pylist(rows)
    # one block per task, split here (Dataset.repartition would add a shuffle stage)
    n = max(1, min(len(rows), 4 * int(ray.cluster_resources().get("CPU", 1))))
    bounds = [round(i * len(rows) / n) for i in range(n + 1)]
    ds = ray.data.from_arrow(
        [table.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]
    )
    out = ds.map_batches(
        _check_batch_ray, batch_format="pyarrow", batch_size=8, fn_kwargs={"dyes": dyes}
    )
    by_id: dict[str, dict] = {}
    bad = 0
    for r in out.iter_rows():
        report = json.loads(r["report"])
        by_id[report["sample_id"]] = report
        bad += "errors" in report
        if progress:
            progress(len(by_id), len(rows), bad)
    yield from (by_id[r["sample_id"]] for r in rows)  # manifest order


def format_report(result: CheckResult) -> str:
    """A human-readable summary: per-dye ranges over all samples, then every bad file."""
    lines = []
    dyes: dict[str, list[dict]] = {}
    for r in result.reports:
        for d, c in r["channels"].items():
            dyes.setdefault(d, []).append(c)
    n = len(result.reports)
    lines.append(f"checked {n} sample(s) in {result.seconds:.1f} s")
    for d, cs in dyes.items():
        shapes = sorted({tuple(c["shape"]) for c in cs})
        dtypes = sorted({c["dtype"] for c in cs})
        lines.append(
            f"  {d:<12} {len(cs):>6} files  shape {' '.join('×'.join(map(str, s)) for s in shapes)}"
            f"  {'/'.join(dtypes)}  min {min(c['min'] for c in cs)}  max {max(c['max'] for c in cs)}"
            f"  mean {np.mean([c['mean'] for c in cs]):.1f}"
        )
    bad = result.bad
    lines.append(f"{len(bad)} bad file(s) in {len({b['sample_id'] for b in bad})} sample(s)")
    return "\n".join(lines)


#: Features are read in batches of about this many bytes (float32), whatever the row groups hold.
PROFILE_BATCH_BYTES = 32 << 20
_PROFILE_ID_COLUMNS = ("sample_id", "plate", "well")


@dataclass(frozen=True, kw_only=True)
class ProfileCheckResult:
    """What :func:`check_profiles` found in a profile manifest.

    Attributes:
        manifest: the manifest checked.
        n_wells: rows (well profiles) read.
        feature_names: one name per feature: the manifest's (``bioscale.feature_names``) or, when
            it stores none, ``"feature <j>"`` (``names_stored`` says which).
        names_stored: whether the manifest stores its feature names.
        nan, posinf, neginf: (n_features,) int64 counts of NaN, +Inf and -Inf per feature (a
            null value counts as NaN).
        finite_min, finite_max: (n_features,) float64 range of the finite values (NaN where a
            feature has none).
        nonfinite_wells: wells holding at least one non-finite value.
        bad_wells: the first of them in manifest order: ``sample_id, plate, well``, their first
            bad ``feature`` (name), ``index`` and ``value`` (``"nan"``, ``"inf"`` or ``"-inf"``),
            and ``n_bad`` (their non-finite features).
        seconds: wall time of the check.
    """

    manifest: str
    n_wells: int
    feature_names: list[str]
    names_stored: bool
    nan: np.ndarray
    posinf: np.ndarray
    neginf: np.ndarray
    finite_min: np.ndarray
    finite_max: np.ndarray
    nonfinite_wells: int
    bad_wells: list[dict]
    seconds: float = 0.0

    @property
    def nonfinite(self) -> np.ndarray:
        """Indices of the features holding any NaN or ±Inf."""
        return np.flatnonzero(self.nan + self.posinf + self.neginf)

    @property
    def constant(self) -> np.ndarray:
        """Indices of the features whose finite values all agree (zero variance; a feature
        without any finite value is not constant but non-finite)."""
        return np.flatnonzero(self.finite_min == self.finite_max)

    @property
    def ok(self) -> bool:
        """No non-finite value anywhere (constant features are a warning only)."""
        return self.nonfinite_wells == 0

    def as_dict(self) -> dict:
        """The JSON report: every non-finite and constant feature, the named bad wells."""
        return {
            "manifest": self.manifest,
            "kind": "profiles",
            "n_wells": self.n_wells,
            "n_features": len(self.feature_names),
            "feature_names_stored": self.names_stored,
            "nonfinite_wells": self.nonfinite_wells,
            "nonfinite_features": [
                {
                    "feature": self.feature_names[j],
                    "index": int(j),
                    "nan": int(self.nan[j]),
                    "posinf": int(self.posinf[j]),
                    "neginf": int(self.neginf[j]),
                }
                for j in self.nonfinite
            ],
            "constant_features": [
                {
                    "feature": self.feature_names[j],
                    "index": int(j),
                    "value": float(self.finite_min[j]),
                }
                for j in self.constant
            ],
            "bad_wells": self.bad_wells,
            "seconds": round(self.seconds, 3),
        }


def is_profile_manifest(manifest: str) -> bool:
    """Whether ``manifest`` holds well profiles (a ``features`` column) rather than image paths."""
    return mf.FEATURES in _read_schema(manifest).names


def _read_schema(manifest: str) -> pa.Schema:
    try:
        return pq.read_schema(manifest)
    except (OSError, ValueError) as err:
        raise ManifestError(f"cannot read manifest {manifest}: {err}") from None


def _feature_batches(
    pf: pq.ParquetFile, manifest: str, width: int, rows: int
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """``(batch, (n, F) float32 features)`` of ``rows`` wells at a time; null values read as NaN.
    A file pyarrow cannot decode (e.g. a null profile in the fixed-width column, which Parquet
    does not round-trip) is a ManifestError naming the manifest."""
    columns = [*_PROFILE_ID_COLUMNS, mf.FEATURES]
    try:
        for batch in pf.iter_batches(batch_size=rows, columns=columns):
            col = batch.column(mf.FEATURES)
            flat = col.values.slice(col.offset * width, len(batch) * width)
            yield batch, flat.to_numpy(zero_copy_only=False).reshape(len(batch), width)
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"manifest {manifest}: cannot read its profiles: {err}") from None


def _bad_value(x: float) -> str:
    return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")


def check_profiles(
    manifest: str,
    *,
    progress: Progress | None = None,
    max_named: int = 10,
    batch_bytes: int = PROFILE_BATCH_BYTES,
) -> ProfileCheckResult:
    """Stream a profile manifest and count its non-finite and constant features.

    Args:
        manifest: a profile manifest (``features``: ``fixed_size_list<float>[F]``).
        progress: called after every batch with (wells done, wells in all, bad wells so far).
        max_named: how many bad wells to name (the first in manifest order).
        batch_bytes: feature bytes per batch (memory: a few times this, whatever the row groups
            hold).
    """
    t0 = time.perf_counter()
    schema = _read_schema(manifest)
    mf.validate_table(schema, source=str(manifest))
    if mf.FEATURES not in schema.names:
        raise ManifestError(f"{manifest} is not a profile manifest: it has no 'features' column")
    ftype = schema.field(mf.FEATURES).type
    if not (pa.types.is_fixed_size_list(ftype) and pa.types.is_floating(ftype.value_type)):
        raise ManifestError(
            f"manifest {manifest}: 'features' is {ftype}, not a fixed-width list of floats "
            "(fixed_size_list<float32>[F]); re-import the tables with `bioscale data import`"
        )
    width = ftype.list_size
    stored = mf.feature_names(schema)
    names = stored if stored is not None else [f"feature {j}" for j in range(width)]
    # no pre-buffering (it caches every column chunk read until the file is done: memory grows to
    # the whole manifest) and a buffered stream (pages read as needed, not whole row groups)
    pf = pq.ParquetFile(
        manifest, pre_buffer=False, buffer_size=max(1 << 16, min(batch_bytes, 8 << 20))
    )
    total = pf.metadata.num_rows
    tally = _Tally(width, names, max_named)
    rows_per_batch = max(1, batch_bytes // (4 * max(1, width)))
    for batch, values in _feature_batches(pf, manifest, width, rows_per_batch):
        tally.add(batch, values)
        if progress:
            progress(tally.n_wells, total, tally.n_bad)
    some = tally.any_finite
    return ProfileCheckResult(
        manifest=str(manifest),
        n_wells=tally.n_wells,
        feature_names=list(names),
        names_stored=stored is not None,
        nan=tally.nan,
        posinf=tally.posinf,
        neginf=tally.neginf,
        finite_min=np.where(some, tally.lo, np.nan),
        finite_max=np.where(some, tally.hi, np.nan),
        nonfinite_wells=tally.n_bad,
        bad_wells=tally.bad_wells,
        seconds=time.perf_counter() - t0,
    )


class _Tally:
    """Running per-feature counts and finite ranges over the batches of a profile manifest."""

    def __init__(self, width: int, names: list[str], max_named: int) -> None:
        self.names, self.max_named = names, max_named
        self.nan = np.zeros(width, np.int64)
        self.posinf = np.zeros(width, np.int64)
        self.neginf = np.zeros(width, np.int64)
        self.lo = np.full(width, np.inf)  # over finite values; ±inf until one is seen
        self.hi = np.full(width, -np.inf)
        self.any_finite = np.zeros(width, bool)
        self.bad_wells: list[dict] = []
        self.n_wells = self.n_bad = 0

    def add(self, batch: pa.RecordBatch, values: np.ndarray) -> None:
        """Count one batch: ``values`` (n, F) float32, ``batch`` its id columns."""
        self.n_wells += len(values)
        finite = np.isfinite(values)
        if finite.all():  # the common case: a range, nothing to count
            self.any_finite[:] = True
            self.lo = np.minimum(self.lo, values.min(axis=0))
            self.hi = np.maximum(self.hi, values.max(axis=0))
            return
        self.nan += np.isnan(values).sum(axis=0)
        self.posinf += (values == np.inf).sum(axis=0)
        self.neginf += (values == -np.inf).sum(axis=0)
        self.any_finite |= finite.any(axis=0)
        self.lo = np.fmin(self.lo, np.where(finite, values, np.inf).min(axis=0))
        self.hi = np.fmax(self.hi, np.where(finite, values, -np.inf).max(axis=0))
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        self.n_bad += len(bad_rows)
        for r in bad_rows[: max(0, self.max_named - len(self.bad_wells))]:
            j = int(np.flatnonzero(~finite[r])[0])
            self.bad_wells.append(
                {
                    **{c: batch.column(c)[int(r)].as_py() for c in _PROFILE_ID_COLUMNS},
                    "feature": self.names[j],
                    "index": j,
                    "value": _bad_value(float(values[r, j])),
                    "n_bad": int((~finite[r]).sum()),
                }
            )


def format_profile_report(result: ProfileCheckResult) -> str:
    """A human-readable summary of :func:`check_profiles`: counts, then the features and wells."""
    names = result.feature_names
    lines = [
        f"checked {result.n_wells} well(s) x {len(names)} feature(s) in {result.seconds:.1f} s"
        + ("" if result.names_stored else " (the manifest stores no feature names: by index)")
    ]
    bad = result.nonfinite
    lines.append(
        f"{result.nonfinite_wells} well(s) with non-finite values; {len(bad)} feature(s) hold "
        f"{int(result.nan.sum())} NaN, {int(result.posinf.sum())} +Inf, "
        f"{int(result.neginf.sum())} -Inf"
    )
    worst = sorted(bad, key=lambda j: -(result.nan[j] + result.posinf[j] + result.neginf[j]))
    for j in worst[:10]:
        lines.append(
            f"  {names[j]}: {result.nan[j]} NaN, {result.posinf[j]} +Inf, {result.neginf[j]} -Inf"
        )
    if len(worst) > 10:
        lines.append(f"  ... {len(worst) - 10} more feature(s) (--json lists them all)")
    lines.append(f"{len(result.constant)} constant feature(s)")
    return "\n".join(lines)


def profile_problems(result: ProfileCheckResult, limit: int = 10) -> list[str]:
    """One line per named bad well, then a warning naming the constant features (for stderr,
    beside the summary or the JSON)."""
    lines = [
        f"non-finite profile: sample {w['sample_id']} (plate {w['plate']}, well {w['well']}): "
        f"{w['n_bad']} feature(s), first {w['feature']} = {w['value']}"
        for w in result.bad_wells
    ]
    if result.nonfinite_wells > len(result.bad_wells):
        lines.append(
            f"non-finite profile: ... {result.nonfinite_wells - len(result.bad_wells)} more well(s)"
        )
    constant = [result.feature_names[j] for j in result.constant]
    if constant:
        more = f", ... ({len(constant) - limit} more)" if len(constant) > limit else ""
        lines.append(
            f"warning: {len(constant)} constant feature(s) (zero variance over the finite "
            f"values): {', '.join(constant[:limit])}{more}"
        )
    return lines
