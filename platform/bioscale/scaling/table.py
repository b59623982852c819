"""Tidy trial tables (one row per trial) from CSV, Parquet or an MLflow experiment, and the curves a
fit is made on: grouped by ``group`` columns and by the other axes, or the frontier.

Missing and non-finite values are counted and reported (``Curves.issues``), never silently
dropped. ``design_gaps`` tells, across the curve families of one request, the curves the design
meant but the data cannot fit (issues) from the single points an L-shaped design means (notes).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioscale.errors import BioscaleError, TrackingError
from bioscale.uri import redact_uri

if TYPE_CHECKING:
    from bioscale.scaling.fit import FitResult

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
#: Test splits of ``probe/<task>/<split>/<metric>`` (ARCHITECTURE); a probe's validation split is
#: ``val`` (``probe/3dpc_<task>/val/acc``).
TEST_SPLITS = ("seen_compounds", "novel_compounds", "heldout_source", "test")
#: The trial's early-stopping criterion (the objective's validation loss), logged by every trial.
VAL_LOSS = "val/best_loss"


def load_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV or Parquet table (by suffix; empty CSV cells are None).

    Raises:
        BioscaleError: the file is missing, empty, binary, or not a table of its suffix.
    """
    path = Path(path)
    if not path.exists():
        raise BioscaleError(f"table {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".tsv"):
        raise BioscaleError(f"cannot read {path}: expected a .csv, .tsv or .parquet table")
    import pyarrow as pa

    if suffix in (".csv", ".tsv"):
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096)
        except OSError as err:
            raise BioscaleError(f"cannot read table {path} ({err.strerror})") from None
        if not head.strip():
            raise BioscaleError(f"table {path} is empty: write a header row and one row per trial")
        if _is_binary(head):
            raise BioscaleError(
                f"table {path} is not a UTF-8 text {suffix[1:].upper()} (binary content): "
                "export the trials as CSV, or give a .parquet file"
            )
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            import pyarrow.csv as pacsv

            parse = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            rows = pacsv.read_csv(path, parse_options=parse).to_pylist()
    except (pa.ArrowException, OSError) as err:
        why = " ".join(str(err).split())[:160]
        why = "".join(c if c.isprintable() else "?" for c in why)
        raise BioscaleError(f"cannot read table {path} ({why}); fix or re-export it") from None
    if not rows:
        raise BioscaleError(f"table {path} has a header but no rows")
    return rows


def _is_binary(head: bytes) -> bool:
    """NUL bytes, or bytes that are not UTF-8 (pyarrow reads UTF-8 text only)."""
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start < len(head) - 4  # not a multi-byte character cut at the 4 KiB mark
    return False


def load_experiment(name: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Rows of an MLflow experiment's FINISHED trial runs (``scaling.runs.runs_table``).

    The store is checked first (``bioscale.tracking_uri.check_readable_store``): an unknown
    scheme, a server that does not answer or a missing SQLite file fail within seconds.
    """
    import os

    from bioscale.tracking_uri import check_readable_store

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_readable_store(uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from bioscale.scaling.runs import runs_table

    where = redact_uri(uri) if uri else "the default store"
    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise BioscaleError(f"no MLflow experiment {name!r} in {where}")
        return runs_table(client, exp.experiment_id)
    except MlflowException as err:
        why = " ".join(str(err).split())[:200]
        raise TrackingError(
            f"cannot read experiment {name!r} from MLflow store {where} ({why}); check "
            "--tracking-uri / MLFLOW_TRACKING_URI"
        ) from None


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
class Selection:
    """How a frontier picks its run at each scale: the best ``column`` (``direction``)."""

    column: str
    direction: str
    reason: str

    def describe(self, metric: str) -> str:
        what = "lowest" if self.direction == "lower" else "highest"
        if self.column == metric:
            return f"frontier: at each scale the run with the {what} {metric} ({self.reason})"
        return (
            f"frontier: at each scale the {metric} of the run with the {what} {self.column} "
            f"({self.reason})"
        )


@dataclass(frozen=True, kw_only=True)
class Curves:
    curves: list[Curve]
    issues: list[str] = field(default_factory=list)
    selection: Selection | None = None


def frontier_selection(
    rows: Sequence[dict[str, Any]], metric: str, direction: str, select: str | None = None
) -> Selection:
    """The column a frontier selects on, so that the value reported at each scale is not the best
    of several noisy test scores (the winner's curse).

    ``select`` ``None`` or ``"auto"``: a validation metric selects on itself; otherwise the
    metric's validation split (``probe/<task>/<split>/<m>`` → ``probe/<task>/val/<m>``) if the
    table has it, else ``val/best_loss`` (lower is better), else — for a column bioscale does not
    know as a test metric — the metric itself, said so in the reason. A probe test metric with no
    validation column is refused. ``"COLUMN"`` or ``"COLUMN:lower|higher"`` selects on that
    column (default direction: lower for ``val/`` losses, else the metric's).
    """
    columns = {k for r in rows for k in r}
    if select not in (None, "auto"):
        col, _, how = str(select).rpartition(":") if ":" in str(select) else (select, "", "")
        if col not in columns:
            raise BioscaleError(
                f"--frontier-select {col!r}: no such column; give a validation column such as "
                f"{VAL_LOSS} (columns: {', '.join(sorted(columns))})"
            )
        how = how or ("lower" if col.startswith("val/") else direction)
        if how not in ("lower", "higher"):
            raise BioscaleError(
                f"--frontier-select {select!r}: the direction must be lower or higher"
            )
        return Selection(column=col, direction=how, reason="chosen with --frontier-select")
    parts = metric.split("/")
    if parts[0] == "val" or "val" in parts[1:-1]:
        return Selection(column=metric, direction=direction, reason="a validation metric")
    if len(parts) >= 3 and parts[-2] in TEST_SPLITS:
        twin = "/".join([*parts[:-2], "val", parts[-1]])
        if twin in columns:
            return Selection(column=twin, direction=direction, reason="its validation split")
    if VAL_LOSS in columns:
        return Selection(column=VAL_LOSS, direction="lower", reason="the validation loss")
    if parts[0] == "probe" and len(parts) >= 3 and parts[-2] in TEST_SPLITS:
        raise BioscaleError(
            f"--frontier on the test metric {metric}: the table has no validation column to pick "
            f"the runs with (looked for {twin} and {VAL_LOSS}); pass --frontier-select COLUMN, or "
            f"--frontier-select {metric} to select on the test score itself (biased upward)"
        )
    return Selection(
        column=metric,
        direction=direction,
        reason=f"no validation column ({VAL_LOSS}) in the table: selected on the reported values",
    )


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
    frontier_select: str | None = None,
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
        direction: ``lower`` or ``higher``: the metric's direction.
        frontier_select: the column the frontier picks its runs with (``frontier_selection``).
    """
    if not rows:
        raise BioscaleError("the table has no rows")
    if not any(metric in r for r in rows):
        known = sorted({k for r in rows for k in r})
        raise BioscaleError(f"no metric column {metric!r}; columns: {', '.join(known)}")
    cols = [axis_column(rows, a) for a in axes]
    for col in [*cols, metric]:
        values = [r.get(col) for r in rows if r.get(col) is not None]
        if values and all(math.isnan(_number(v)) for v in values):
            raise BioscaleError(
                f"column {col!r} is not numeric (e.g. {values[0]!r}); "
                + ("give a numeric scale column" if col in cols else "give a numeric metric")
            )
    selection = frontier_selection(rows, metric, direction, frontier_select) if frontier else None
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
        if selection is not None:
            sel = np.array([_number(m.get(selection.column)) for m in members])
            x, y, seeds = _frontier(x, y, sel, selection.direction)
        out.append(Curve(group=dict(zip(keys, gkey, strict=True)), x=x, y=y, seeds=seeds))
    if selection is not None and selection.column != metric:
        unsel = [
            i for i, r in enumerate(rows) if not math.isfinite(_number(r.get(selection.column)))
        ]
        if unsel:
            issues.append(
                f"{len(unsel)} row(s) have no {selection.column} and cannot be chosen for the "
                f"frontier (rows {_describe(unsel)})"
            )
    return Curves(curves=out, issues=issues, selection=selection)


def _has_axis(rows: Sequence[dict[str, Any]], axis: str) -> bool:
    columns = {k for r in rows for k in r}
    return any(c in columns for c in AXIS_COLUMNS.get(axis, (axis,)))


def _frontier(
    x: np.ndarray, y: np.ndarray, sel: np.ndarray, direction: str
) -> tuple[np.ndarray, np.ndarray, None]:
    """At each distinct scale of x (n, K), the y of the row with the best ``sel`` (n,) among rows
    with finite y and sel: (m, K), (m,)."""
    ok = np.isfinite(y) & np.isfinite(sel)
    best: dict[tuple, tuple[float, float]] = {}
    for xi, yi, si in zip(map(tuple, x[ok]), y[ok], sel[ok], strict=True):
        better = xi not in best or (si > best[xi][0] if direction == "higher" else si < best[xi][0])
        if better:
            best[xi] = (float(si), float(yi))
    xs = sorted(best)
    ys = np.array([best[k][1] for k in xs])
    return np.array(xs, dtype=float).reshape(-1, x.shape[1]), ys, None


@dataclass(frozen=True, kw_only=True)
class DesignGaps:
    """What ``design_gaps`` found: ``issues`` a user must act on, ``notes`` that only explain."""

    issues: list[str]
    notes: list[str]


def _group_name(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "all trials"


def _design(
    rows: Sequence[dict[str, Any]], group: dict[str, Any], cols: Sequence[str]
) -> tuple[set[int], int]:
    """The rows of ``group`` (its columns at its values) and how many distinct positive scales
    (along ``cols``) they span, whatever their metric."""
    members = {i for i, r in enumerate(rows) if all(r.get(k) == v for k, v in group.items())}
    scales = set()
    for i in members:
        x = tuple(_number(rows[i].get(c)) for c in cols)
        if all(v > 0 and math.isfinite(v) for v in x):
            scales.add(x)
    return members, len(scales)


def _values(groups: Sequence[dict[str, Any]], limit: int = 4) -> str:
    """``rung mlp:a, mlp:b × objective ibp, supervised``: each column's values over ``groups``."""
    parts = []
    for key in dict.fromkeys(k for g in groups for k in g):
        seen = list(dict.fromkeys(str(g.get(key)) for g in groups))
        shown = ", ".join(seen[:limit]) + (f", … ({len(seen)})" if len(seen) > limit else "")
        parts.append(f"{key} {shown}")
    return " × ".join(parts)


def design_gaps(
    rows: Sequence[dict[str, Any]],
    families: Sequence[tuple[Sequence[str], Sequence[FitResult]]],
) -> DesignGaps:
    """Which of a request's curves the user must act on, and which gaps the design means.

    ``families`` are the fits of one request, per family of curves (its axes, e.g. ``("D",)``
    split by rung, and ``("N",)`` split by diet). A curve's *design scales* are the distinct
    positive scales along its axes of its rows in the table, whatever their metric; its *fitted
    scales* (``FitResult.n_scales``) those with a usable metric. Per curve:

    - issue: the design has ≥ 2 scales but fewer than 2 were fitted (failed or missing trials
      cost the curve);
    - the design has one scale: a note when each of its rows is a point of a curve of another
      family whose design has ≥ 2 scales (an L-shaped design: rung X at the full diet is a
      single point along D and a point of the N curve); otherwise an issue: the design varies
      it along no axis with ≥ 2 scales, so its trials are in no fit (one issue for trials that
      are such a point in several families);
    - ≥ 2 scales were fitted, too few for the law (no fit): a note when each of its rows is a
      point of a *fitted* curve of another family (two grids that happen to share a diet);
      otherwise an issue.

    Notes are one line per (family, covering family): "6 group(s) are single points of the N
    arm of the design: not fitted along D (…)".
    """
    info = []
    for axes, fits in families:
        cols = [axis_column(rows, a) for a in axes]
        info.append([(f, *_design(rows, f.group, cols)) for f in fits])
    planned = [set().union(*(m for _, m, n in fam if n >= 2)) for fam in info]
    fitted = [set().union(*(m for f, m, _ in fam if f.params is not None)) for fam in info]
    issues: list[str] = []
    single: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    short: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    orphans: dict[frozenset[int], list[tuple[int, dict[str, Any], int]]] = {}

    def arm(i: int, members: set[int], covered: list[set[int]]) -> int | None:
        others = (j for j in range(len(families)) if j != i and members <= covered[j])
        return next(others, None) if members else None

    for i, ((axes, _), fam) in enumerate(zip(families, info, strict=True)):
        along = ",".join(axes)
        for f, members, n_design in fam:
            name = _group_name(f.group)
            if n_design >= 2 and f.n_scales < 2:
                issues.append(
                    f"{name}: meant as a curve along {along} ({n_design} scales in the design) "
                    f"but only {f.n_scales} have a usable {f.metric or 'metric'}: no curve; "
                    "rerun or fix the failed trials"
                )
            elif n_design < 2:
                j = arm(i, members, planned)
                if j is not None:
                    single[(i, j)].append(f.group)
                else:  # the same trials are a single point of every family: one issue
                    orphans.setdefault(frozenset(members), []).append((i, f.group, n_design))
            elif f.params is None:
                j = arm(i, members, fitted)
                if j is not None:
                    short[(i, j)].append(f.group)
                    continue
                why = f.note.split(";")[0]
                issues.append(
                    f"{name}: {f.n_scales} scales along {along}, too few for the {f.law} law "
                    f"({why}): no fit; add scales along {along} or choose a law with fewer "
                    "parameters"
                )

    def axes_of(k: int) -> str:
        return ",".join(families[k][0])

    for seen in orphans.values():
        group = {k: v for _, g, _ in seen for k, v in g.items()}
        scales = "one scale" if max(n for *_, n in seen) else "no positive scale"
        single_along = " and along ".join(axes_of(i) for i, _, _ in seen)
        rest = [axes_of(j) for j in range(len(families)) if j not in {i for i, _, _ in seen}]
        elsewhere = f" and on no curve along {' or '.join(rest)}" if rest else ""
        every = " or along ".join(axes_of(j) for j in range(len(families)))
        issues.append(
            f"{_group_name(group)}: {scales} along {single_along}{elsewhere}: its trials are "
            f"in no fit; add scales along {every}"
        )

    notes = [
        f"{len(groups)} group(s) are single points of the {axes_of(j)} arm of the design: not "
        f"fitted along {axes_of(i)} ({_values(groups)})"
        for (i, j), groups in single.items()
    ] + [
        f"{len(groups)} group(s) have too few scales along {axes_of(i)} for a fit, and each of "
        f"their points is on a fitted curve along {axes_of(j)}: not fitted along {axes_of(i)} "
        f"({_values(groups)})"
        for (i, j), groups in short.items()
    ]
    return DesignGaps(issues=issues, notes=notes)
