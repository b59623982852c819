"""After a study: its trial runs → scaling fits (per objective, along D and along N) with intervals,
backtests, plateau checks, forecasts and objective comparisons → plots, the trials' training
curves, an HTML report (each trial linked to its MLflow run), fit and forecast JSON, and
``fit``/``report`` child runs in MLflow."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioscale.models.features import TRAINLESS_FAMILY
from bioscale.scaling.api import CurveSpec, FitSet, fit_table, report_table
from bioscale.scaling.fit import N_BOOT, FitResult
from bioscale.scaling.forecast import Forecast
from bioscale.scaling.runs import read_trial_runs, runs_table, write_csv
from bioscale.study.tracking import Tracker

PRIMARY_METRIC = "probe/moa/novel_compounds/top1"
SEEN_METRIC = "probe/moa/seen_compounds/top1"
#: tracking studies (videos): the network's own answers on out-of-distribution test videos
TRACK_METRIC = "track/ood/accuracy"
_TRACK_NOTE = (
    "Tracking: the trained network's own answer (does the object that started on the start "
    "marker end on the end marker?) on held-out test videos; trials train on one appearance "
    "condition, <i>ood</i> pools the test conditions whose shape or colour changes out of the "
    "training distribution; <code>track/ood_gap</code> = in-distribution minus ood accuracy. "
    "Chance is 0.5."
)


def _baseline_note(baselines: list[dict], metric: str, split: str) -> str:
    """The report's sentence on the untrained rungs' scores (the raw-features baseline)."""
    parts = []
    for row in baselines:
        value = row.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            parts.append(f"{row.get('rung')}: MoA top-1 on {split} {value:.3f}")
    if not parts:
        return ""
    return (
        " Baseline (untrained: the input features as they are, no curve): "
        + "; ".join(parts)
        + " — a learned representation must beat it."
    )


def _primary_metric(rows: list[dict]) -> str:
    """Novel-compound MoA top-1 where trials have it, else the seen-compound one."""

    def has(name: str) -> bool:
        return any(isinstance(r.get(name), float | int) and math.isfinite(r[name]) for r in rows)

    if has(TRACK_METRIC) and not has(PRIMARY_METRIC) and not has(SEEN_METRIC):
        return TRACK_METRIC
    return PRIMARY_METRIC if has(PRIMARY_METRIC) or not has(SEEN_METRIC) else SEEN_METRIC


def _tracking_conditions(rows: list[dict]) -> dict[str, str]:
    """``track/<condition>/accuracy`` column → condition, for every condition trials logged."""
    names = sorted({k for r in rows for k in r if k.startswith("track/")})
    return {
        k: k.split("/")[1]
        for k in names
        if k.endswith("/accuracy") and k.count("/") == 2 and k.split("/")[1] != "ood"
    }


#: curve families: along D at each fixed (objective, rung), along N at each fixed (objective, diet)
CURVES = (CurveSpec(axes=("D",), split_by=("rung",)), CurveSpec(axes=("N",), split_by=("diet",)))
_PROBE_NOTE = (
    "Probe: L2 logistic regression on frozen backbone embeddings, fit on fixed probe wells of "
    "<i>seen</i> compounds, its C chosen on probe-validation wells; <i>seen_compounds</i> = "
    "held-out wells of those compounds, <i>novel_compounds</i> = compounds no objective trained on."
)


@dataclass(frozen=True, kw_only=True)
class Analysis:
    report: Path
    fits_json: Path
    plots: list[Path]
    table: Path
    fits: list[FitResult]
    forecasts_json: Path | None = None
    forecasts: list[Forecast] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)


def fit_axes(
    rows: list[dict[str, Any]],
    metric: str,
    direction: str = "higher",
    law: str = "power",
    n_boot: int = N_BOOT,
) -> list[FitResult]:
    """One fit per curve: along D at each fixed (objective, rung) and along N at each fixed
    (objective, diet), wherever the grid has at least two scales on that curve."""
    fits: list[FitResult] = []
    for spec in CURVES:
        found: FitSet = fit_table(
            rows,
            metric=metric,
            axes=spec.axes,
            law=law,
            direction=direction,
            group=["objective"],
            split_by=spec.split_by,
            n_boot=n_boot,
        )
        fits.extend(f for f in found.fits if f.n_scales >= 2)
    return fits


def _fit_ident(f: FitResult) -> str:
    return hashlib.sha256(
        json.dumps([f.group, f.axis, f.law, f.metric], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def log_fits(tracker: Tracker, experiment_id: str, parent_id: str, fits: list[FitResult]) -> None:
    """One ``fit`` child run per fit: params, fitted values and interval bounds as metrics."""
    for f in fits:
        name = f"fit {','.join(f.axis)} · " + ", ".join(str(v) for v in f.group.values())
        run_id = tracker.child_run(experiment_id, parent_id, "fit", name, _fit_ident(f))
        tracker.log_params(
            run_id,
            {
                "law": f.law,
                "axis": ",".join(f.axis),
                "metric": f.metric,
                "direction": f.direction,
                "group": json.dumps(f.group, default=str),
                "n_points": f.n_points,
                "n_scales": f.n_scales,
            },
        )
        metrics = {f"fit/{k}": v for k, v in (f.params or {}).items()}
        for k, ci in f.ci95.items():
            if ci:
                metrics.update({f"fit/{k}_ci95_lo": ci[0], f"fit/{k}_ci95_hi": ci[1]})
        if f.loss is not None:
            metrics["fit/loss"] = f.loss
        if f.backtest:
            metrics["fit/backtest_mean_abs_error"] = f.backtest["mean_abs_error"]
            metrics["fit/backtest_mean_rel_error"] = f.backtest["mean_rel_error"]
        tracker.log_metrics(run_id, metrics)
        tracker.client.set_tag(run_id, "bioscale.fit_note", f.note[:4000])
        if f.plateau:
            tracker.client.set_tag(run_id, "bioscale.plateau", str(f.plateau["plateau"]))
        tracker.finish(run_id)


def analyse(
    tracker: Tracker,
    experiment_id: str,
    parent_id: str,
    study: str,
    out_dir: Path,
    metric: str | None = None,
    targets: list[float] | None = None,
    n_boot: int = N_BOOT,
    law: str = "power",
) -> Analysis:
    """Fit, forecast, plot, report and log; returns where everything went. ``metric`` defaults
    to MoA top-1 on novel compounds, or on held-out wells of seen ones where no trial has a
    novel-compound probe (natural images: a class never trained on cannot be named), or
    out-of-distribution tracking accuracy for videos; ``law``: the one-axis law of every curve
    (a study's ``analysis.law``)."""
    from bioscale.eval.visualize import report_panels
    from bioscale.scaling.plots import training_panels

    report_dir = Path(out_dir) / "report"
    rows = runs_table(tracker.client, experiment_id)
    metric = metric or _primary_metric(rows)
    split = metric.split("/")[2].replace("_", " ") if metric.count("/") == 3 else metric
    tracking = metric.startswith("track/")
    table = write_csv(rows, report_dir / "trials.csv")
    # untrained rungs (features:raw) sit on no curve (N = 0, nothing trained): the report states
    # them as the baseline every curve must beat
    baselines = [r for r in rows if r.get("model_family") == TRAINLESS_FAMILY]
    rows = [r for r in rows if r.get("model_family") != TRAINLESS_FAMILY]
    # ``bioscale visualize`` output under <out>/visualize/: one panel per objective
    panels = report_panels(rows, out_dir, report_dir)
    # per-epoch histories of the trials the training-curve panels draw; failed trials as issues
    drawn = [t for ps in training_panels(rows).values() for p in ps for t in p.trials]
    trial_runs = read_trial_runs(tracker.client, experiment_id, drawn, tracker.uri)
    if tracking:  # videos: one curve per model family; every test condition's own curves
        from bioscale.scaling.plots import plot_condition_curves

        report_dir.mkdir(parents=True, exist_ok=True)
        conditions = _tracking_conditions(rows)
        labels = {
            "metric_label": "tracking accuracy, out-of-distribution test videos",
            "ylabel": "error = 1 − accuracy (ood test videos)",
            "group": ("objective", "model_family"),
            "footnote": _TRACK_NOTE,
            "columns": [metric, "track/ood_gap", *conditions],
            "sections": [
                (
                    "Tracking accuracy per condition",
                    "Mean over seeds of each test condition's accuracy: along D at each family's "
                    "data-scaling rung, along N at each family's largest diet (no fit).",
                    plot_condition_curves(
                        rows,
                        report_dir,
                        metrics=conditions,
                        family="model_family",
                        title=study,
                        ylabel="tracking accuracy",
                    ),
                )
            ],
        }
    else:
        labels = {
            "metric_label": f"MoA top-1 on {split}",
            "ylabel": f"error = 1 − top-1 ({split})",
            "group": ("objective",),
            "footnote": _PROBE_NOTE + _baseline_note(baselines, metric, split),
            "columns": [metric, metric.replace("/top1", "/top10"), SEEN_METRIC],
            "sections": [],
        }
    built = report_table(
        rows,
        report_dir,
        title=study,
        source=tracker.uri,
        metric=metric,
        law=law,
        metric_label=labels["metric_label"],
        ylabel=labels["ylabel"],
        direction="higher",
        group=labels["group"],
        specs=CURVES,
        targets=targets,
        n_boot=n_boot,
        footnote=labels["footnote"],
        trial_columns=[
            "rung",
            "N",
            "objective",
            "diet",
            "D_samples",
            "D_compounds",
            "seed",
            "epochs",
            "lr",
            *dict.fromkeys(labels["columns"]),
            "probe_selection",
            "probe/moa/best_layer",
            "compute/flops",
            "perf/trial_seconds",
        ],
        vis_panels=panels,
        trial_runs=trial_runs,
        sections=labels["sections"],
    )
    log_fits(tracker, experiment_id, parent_id, built.fits)
    report_run = tracker.child_run(
        experiment_id, parent_id, "report", f"report · {study}", f"report-{study}"
    )
    shown = [p for panel in panels for _, image, alpha in panel.items for p in (image, alpha)]
    tracker.log_artifacts(
        report_run,
        [built.report, built.fits_json, built.forecasts_json, table, *built.plots, *shown],
    )
    tracker.finish(report_run)
    return Analysis(
        report=built.report,
        fits_json=built.fits_json,
        plots=built.plots,
        table=table,
        fits=built.fits,
        forecasts_json=built.forecasts_json,
        forecasts=built.forecasts,
        comparisons=built.comparisons,
    )
