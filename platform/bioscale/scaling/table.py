"""Tidy trial tables (one row per trial) from CSV, Parquet or an MLflow experiment, and the curves a
fit is made on: grouped by ``group`` columns and by the other axes, or the frontier.

Missing and non-finite values are counted and reported (``Curves.issues``), never silently
dropped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioscale.errors import BioscaleError

#: Axis name → the table columns it may be called, in order of preference.
AXIS_COLUMNS: dict[str, tuple[str, ...]] = {
    "D": ("D", "D_samples"),
    "N": ("N",),
    "D_samples": ("D_samples",),
    "D_compounds": ("D_compounds",),
    "flops": ("flops", "compute/flops"),
}
#: The independent axes: by default a fit along one is made per value of the others.
PRIMARY_AXES = ("N", "D")


def load_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV or Parquet table (by suffix; empty CSV cells are None)."""
    path = Path(path)
    if not path.exists():
        raise BioscaleError(f"table {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix.lower() in (".csv", ".tsv"):
        import pyarrow.csv as pacsv

        parse = pacsv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        return pacsv.read_csv(path, parse_options=parse).to_pylist()
    raise BioscaleError(f"cannot read {path}: expected a .csv, .tsv or .parquet table")


def load_experiment(name: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Rows of an MLflow experiment's FINISHED trial runs (``scaling.runs.runs_table``)."""
    import os

    from mlflow.tracking import MlflowClient

    from bioscale.scaling.runs import runs_table

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise BioscaleError(f"no MLflow experiment {name!r} in {uri or 'the default store'}")
    return runs_table(client, exp.experiment_id)


def axis_column(rows: Sequence[dict[str, Any]], axis: str) -> str:
    """The column that holds ``axis`` (``D`` → ``D`` or ``D_samples``)."""
    columns = {k for row in rows for k in row}
    for col in AXIS_COLUMNS.get(axis, (axis,)):
        if col in columns:
            return col
    raise BioscaleError(
        f"no column for axis {axis!r} (looked for {', '.join(AXIS_COLUMNS.get(axis, (axis,)))}); "
        f"columns: {', '.join(sorted(columns))}"
    )


@dataclass(frozen=True, kw_only=True)
class Curve:
    """The points of one fit: scales ``x`` (n, K), metric ``y`` (n,), seeds (or None)."""

    group: dict[str, Any]
    x: np.ndarray
    y: np.ndarray
    seeds: list[Any] | None


@dataclass(frozen=True, kw_only=True)
class Curves:
    curves: list[Curve]
    issues: list[str] = field(default_factory=list)


def _number(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _describe(rows: list[int]) -> str:
    shown = ", ".join(str(i) for i in rows[:8])
    return shown + (f", … ({len(rows)} in all)" if len(rows) > 8 else "")


def curves(
    rows: Sequence[dict[str, Any]],
    *,
    metric: str,
    axes: Sequence[str],
    group: Sequence[str] = (),
    split_by: Sequence[str] | None = None,
    frontier: bool = False,
    direction: str = "lower",
) -> Curves:
    """Split a table into curves.

    Args:
        rows: the table.
        metric: the metric column.
        axes: the fit's axes (``["D"]``, ``["N", "D"]``).
        group: columns whose every value gets its own curve (``["objective"]``).
        split_by: further columns a curve is made per value of; default the primary axes the fit
            is not along (a fit along D per N). Ignored with ``frontier``.
        frontier: fit the best value at each scale (over everything not in ``group``) instead.
        direction: ``lower`` or ``higher``: which value is best, for the frontier.
    """
    if not rows:
        raise BioscaleError("the table has no rows")
    if not any(metric in r for r in rows):
        known = sorted({k for r in rows for k in r})
        raise BioscaleError(f"no metric column {metric!r}; columns: {', '.join(known)}")
    cols = [axis_column(rows, a) for a in axes]
    if split_by is None:
        split_by = [] if frontier else [a for a in PRIMARY_AXES if a not in axes]
        split_by = [axis_column(rows, a) for a in split_by if _has_axis(rows, a)]
    keys = [*group, *([] if frontier else split_by)]
    issues: list[str] = []
    missing_group = [i for i, r in enumerate(rows) if any(r.get(k) is None for k in keys)]
    if missing_group:
        issues.append(
            f"{len(missing_group)} row(s) lack a value for {', '.join(keys)} and were not fitted "
            f"(rows {_describe(missing_group)})"
        )
    bad_metric = [i for i, r in enumerate(rows) if not math.isfinite(_number(r.get(metric)))]
    if bad_metric:
        issues.append(
            f"{len(bad_metric)} row(s) have a missing or non-finite {metric} (rows "
            f"{_describe(bad_metric)}); they are dropped from their fits"
        )
    for col in cols:
        bad = [i for i, r in enumerate(rows) if not _number(r.get(col)) > 0]
        if bad:
            issues.append(
                f"{len(bad)} row(s) have a missing, non-finite or non-positive {col} (rows "
                f"{_describe(bad)}); they are dropped from their fits"
            )
    buckets: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    skip = set(missing_group)
    for i, r in enumerate(rows):
        if i not in skip:
            buckets[tuple(r.get(k) for k in keys)].append(r)
    out = []
    for gkey, members in sorted(buckets.items(), key=lambda kv: tuple(map(str, kv[0]))):
        x = np.array([[_number(m.get(c)) for c in cols] for m in members])
        y = np.array([_number(m.get(metric)) for m in members])
        seeds = [m.get("seed") for m in members] if any("seed" in m for m in members) else None
        if frontier:
            x, y, seeds = _frontier(x, y, direction)
        out.append(Curve(group=dict(zip(keys, gkey, strict=True)), x=x, y=y, seeds=seeds))
    return Curves(curves=out, issues=issues)


def _has_axis(rows: Sequence[dict[str, Any]], axis: str) -> bool:
    columns = {k for r in rows for k in r}
    return any(c in columns for c in AXIS_COLUMNS.get(axis, (axis,)))


def _frontier(x: np.ndarray, y: np.ndarray, direction: str) -> tuple[np.ndarray, np.ndarray, None]:
    """Best finite y at each distinct scale: (m, K), (m,)."""
    ok = np.isfinite(y)
    best: dict[tuple, float] = {}
    for xi, yi in zip(map(tuple, x[ok]), y[ok], strict=True):
        if xi not in best or (yi > best[xi] if direction == "higher" else yi < best[xi]):
            best[xi] = float(yi)
    xs = sorted(best)
    return np.array(xs, dtype=float).reshape(-1, x.shape[1]), np.array([best[k] for k in xs]), None
