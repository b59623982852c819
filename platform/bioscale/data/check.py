"""``bioscale data check``: decode every file of an image manifest and report raw statistics.

Per sample and channel: shape, dtype, min, max and mean of the raw decoded values (before any
illumination correction or normalisation). A missing, truncated or unreadable file is reported
with its sample and path, and checking goes on, so one run lists every bad file.

Runs in this process (``workers=1``), in a local process pool (``workers>1``; each worker decodes
a contiguous chunk of rows), or on a Ray cluster (``address``: Ray Data ``map_batches`` over the
manifest, repartitioned so every node decodes).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

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
