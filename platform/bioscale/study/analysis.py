"""After a study: its trial runs → scaling fits (per objective, along D and along N) → plots, an HTML
report, fit JSON, and ``fit``/``report`` child runs in MLflow."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioscale.scaling.fit import FitResult, fit_law
from bioscale.scaling.plots import plot_fits
from bioscale.scaling.report import render
from bioscale.scaling.runs import runs_table, write_csv
from bioscale.study.tracking import Tracker

PRIMARY_METRIC = "probe/moa/novel_compounds/top1"
#: (axis name, x column, columns that define a curve along it)
AXES = (("D", "D_samples", ("objective", "rung")), ("N", "N", ("objective", "diet")))


@dataclass(frozen=True, kw_only=True)
class Analysis:
    report: Path
    fits_json: Path
    plots: list[Path]
    table: Path
    fits: list[FitResult]


def fit_axes(
    rows: list[dict[str, Any]], metric: str, direction: str = "higher", law: str = "power"
) -> list[FitResult]:
    """One fit per curve: along D at each fixed (objective, rung) and along N at each fixed
    (objective, diet), wherever the grid has at least two scales on that curve."""
    fits = []
    for axis, xcol, keys in AXES:
        groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if metric in row and xcol in row:
                groups[tuple(row[k] for k in keys)].append(row)
        for gkey, members in sorted(groups.items()):
            if len({m[xcol] for m in members}) < 2:
                continue
            fits.append(
                fit_law(
                    [m[xcol] for m in members],
                    [m[metric] for m in members],
                    law=law,
                    direction=direction,
                    metric=metric,
                    axis=axis,
                    group=dict(zip(keys, gkey, strict=True)),
                )
            )
    return fits


def analyse(
    tracker: Tracker,
    experiment_id: str,
    parent_id: str,
    study: str,
    out_dir: Path,
    metric: str = PRIMARY_METRIC,
) -> Analysis:
    """Fit, plot, report and log; returns where everything went."""
    report_dir = Path(out_dir) / "report"
    rows = runs_table(tracker.client, experiment_id)
    table = write_csv(rows, report_dir / "trials.csv")
    fits = fit_axes(rows, metric)
    plots = []
    for axis in ("D", "N"):
        on_axis = [f for f in fits if f.axis == [axis]]
        if on_axis:
            plots.append(
                plot_fits(
                    on_axis,
                    report_dir / f"scaling_{axis}.png",
                    title=f"{study}: {metric} vs {axis}",
                    ylabel="error = 1 − top-1 (novel compounds)",
                )
            )
    fits_json = report_dir / "fits.json"
    fits_json.write_text(json.dumps({"fits": [f.to_json() for f in fits]}, indent=2) + "\n")
    report = render(
        study=study,
        tracking_uri=tracker.uri,
        rows=rows,
        fits=fits,
        plots=plots,
        metric=metric,
        metric_label="MoA top-1 on novel compounds",
        out=report_dir / "report.html",
    )

    for f in fits:
        ident = hashlib.sha256(
            json.dumps([f.group, f.axis, f.law, f.metric], sort_keys=True).encode()
        ).hexdigest()[:16]
        name = f"fit {f.axis[0]} · " + ", ".join(str(v) for v in f.group.values())
        run_id = tracker.child_run(experiment_id, parent_id, "fit", name, ident)
        tracker.log_params(
            run_id,
            {
                "law": f.law,
                "axis": ",".join(f.axis),
                "metric": f.metric,
                "direction": f.direction,
                "group": json.dumps(f.group),
                "n_points": f.n_points,
                "n_scales": f.n_scales,
            },
        )
        metrics = {f"fit/{k}": v for k, v in (f.params or {}).items()}
        if f.loss is not None:
            metrics["fit/loss"] = f.loss
        tracker.log_metrics(run_id, metrics)
        tracker.client.set_tag(run_id, "bioscale.fit_note", f.note)
        tracker.finish(run_id)
    report_run = tracker.child_run(
        experiment_id, parent_id, "report", f"report · {study}", f"report-{study}"
    )
    tracker.log_artifacts(report_run, [report, fits_json, table, *plots])
    tracker.finish(report_run)
    return Analysis(report=report, fits_json=fits_json, plots=plots, table=table, fits=fits)
