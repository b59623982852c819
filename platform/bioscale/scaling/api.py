"""The scaling analysis in a few calls, shared by the CLI, the study report and the notebooks:
table → curves → fits (with intervals, backtests, plateau checks) → forecasts and comparisons."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bioscale.errors import BioscaleError
from bioscale.scaling.compare import compare_by
from bioscale.scaling.fit import N_BOOT, FitResult, check_law_axes, fit_law
from bioscale.scaling.forecast import Forecast, forecast
from bioscale.scaling.predict import Prediction
from bioscale.scaling.table import curves, load_experiment, load_table
from bioscale.scaling.trust import PLATEAU_K, with_trust


@dataclass(frozen=True, kw_only=True)
class FitSet:
    """Fits of one table and what was wrong with its rows; with ``law="auto"``, per curve the law
    chosen and every candidate's backtest score (``selection.choose_law``)."""

    fits: list[FitResult]
    issues: list[str] = field(default_factory=list)
    law_choices: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fits": [f.to_json() for f in self.fits], "issues": self.issues}
        if self.law_choices:
            out["law_choices"] = self.law_choices
        return out


def load_rows(
    source: str | Path | None = None,
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> list[dict[str, Any]]:
    """A table from a CSV/Parquet file, or from an MLflow experiment's trial runs."""
    if experiment is not None:
        return load_experiment(experiment, tracking_uri)
    if source is None:
        raise ValueError("give a table path or an MLflow experiment")
    return load_table(source)


def fit_table(
    rows: Sequence[dict[str, Any]],
    *,
    metric: str,
    axes: Sequence[str] = ("D",),
    law: str = "power",
    direction: str = "lower",
    group: Sequence[str] = (),
    split_by: Sequence[str] | None = None,
    frontier: bool = False,
    frontier_select: str | None = None,
    n_boot: int = N_BOOT,
    bootstrap_scheme: str = "seeds",
    holdout: int = 1,
    plateau_k: int = PLATEAU_K,
) -> FitSet:
    """One fit per curve of the table (``table.curves``), each with 95% bootstrap intervals, a
    backtest on its ``holdout`` largest scales and a plateau check over its last ``plateau_k``
    scales.

    Args:
        rows: the tidy table (one row per trial).
        metric: the metric column.
        axes: the fit's axes, e.g. ``["D"]`` or ``["N", "D"]`` for ``chinchilla``.
        law: a ``LAWS`` name, or ``auto``: per curve, the law with the best backtest on the
            curve's own points (``selection.choose_law``), named in ``FitSet.law_choices`` and
            in each fit's note; its fit is a ``predict.AutoFit`` whose prediction band averages
            the candidate laws (``predict.average_laws``; weights in ``law_choices`` as
            ``pi95_weights``).
        direction: ``lower`` (losses, errors) or ``higher`` (accuracies, fitted through 1 − y).
        group: columns that get one curve per value (``["objective"]``); none: one group ``{}``.
        split_by: columns that further split curves; default the other primary axes.
        frontier: fit one value per scale instead of splitting: that of the run with the best
            validation score (``table.frontier_selection``; each fit's note names the column).
        frontier_select: the column the frontier selects runs on (default: chosen from the
            metric, e.g. ``val/best_loss``), ``COLUMN`` or ``COLUMN:lower|higher``.
        n_boot: bootstrap replicates per fit.
        bootstrap_scheme: ``seeds`` or ``cases`` (``scaling.bootstrap``).
        holdout: largest scales held out by the backtest.
        plateau_k: scales without improvement that flag a plateau.
    """
    from bioscale.scaling.predict import fit_auto
    from bioscale.scaling.selection import AUTO, AUTO_LAWS

    if law == AUTO:
        if len(axes) not in AUTO_LAWS:
            raise BioscaleError(
                f"--law auto has no candidate laws for {len(axes)} axes ({','.join(axes)}): "
                "give one axis (e.g. --axis D) or N,D"
            )
    else:
        check_law_axes(law, list(axes))
    found = curves(
        rows,
        metric=metric,
        axes=axes,
        group=group,
        split_by=split_by,
        frontier=frontier,
        direction=direction,
        frontier_select=frontier_select,
    )
    chosen = found.selection.describe(metric) if found.selection else ""
    fits, choices = [], []
    for curve in found.curves:
        common = dict(
            direction=direction,
            metric=metric,
            axis=list(axes),
            group=curve.group,
            seeds=curve.seeds,
            n_boot=n_boot,
            bootstrap_scheme=bootstrap_scheme,
        )
        if law == AUTO:  # pi95 averages the candidate laws, weighted by their backtests
            fit, choice = fit_auto(curve.x, curve.y, **common)
            choices.append(choice)
        else:
            fit = fit_law(curve.x, curve.y, law=law, **common)
        for extra in (chosen, choices[-1]["note"] if law == AUTO else ""):
            if extra:
                fit = replace(fit, note=f"{fit.note}; {extra}" if fit.note else extra)
        fits.append(with_trust(fit, holdout=holdout, plateau_k=plateau_k, n_boot=n_boot))
    return FitSet(fits=fits, issues=found.issues, law_choices=choices)


def predict_fits(
    fits: Sequence[FitResult],
    *,
    at: Sequence[dict[str, float]] = (),
    at_rows: Sequence[dict[str, Any]] | None = None,
    seed: int = 0,
) -> list[Prediction]:
    """Predictions with ``ci95`` (mean curve) and ``pi95`` (a new run) (``predict.predict``).

    Args:
        fits: fitted curves (``fit_table``).
        at: points ``{axis: value}`` predicted for every fit.
        at_rows: instead, one prediction per row: each row names the fit's group columns and its
            axes (``--at-table``); a row is predicted by the fit whose group it matches.
        seed: the random seed of the new-run draws.

    Raises:
        BioscaleError: a row lacks a group column or an axis, or matches no fitted group.
    """
    from bioscale.scaling.predict import predict

    if at_rows is None:
        return [p for fit in fits for p in predict(fit, list(at), seed=seed)]
    out: list[Prediction] = []
    for i, row in enumerate(at_rows, start=1):
        fit = _fit_for_row(fits, row, i)
        out.extend(predict(fit, [_point(row, fit.axis, i)], seed=seed))
    return out


def _fit_for_row(fits: Sequence[FitResult], row: dict[str, Any], i: int) -> FitResult:
    columns = sorted({k for f in fits for k in f.group})
    missing = [c for c in columns if c not in row or row[c] is None]
    if missing:
        raise BioscaleError(
            f"prediction table row {i}: no value for group column(s) {', '.join(missing)}; the "
            f"fits are grouped by {', '.join(columns)}: add those columns"
        )
    for fit in fits:
        if all(str(row[k]) == str(v) for k, v in fit.group.items()):
            return fit
    known = "; ".join(", ".join(f"{k}={v}" for k, v in f.group.items()) for f in fits)
    asked = ", ".join(f"{c}={row[c]}" for c in columns)
    raise BioscaleError(f"prediction table row {i}: no fitted curve for {asked} (fitted: {known})")


def _point(row: dict[str, Any], axes: Sequence[str], i: int) -> dict[str, float]:
    out = {}
    for a in axes:
        v = row.get(a)
        try:
            out[a] = float(v)
        except (TypeError, ValueError):
            raise BioscaleError(
                f"prediction table row {i}: axis column {a!r} must hold a number, got {v!r}; "
                f"the table needs one column per axis ({', '.join(axes)})"
            ) from None
    return out


def forecast_fits(
    fits: Sequence[FitResult],
    target: float,
    *,
    along: str | None = None,
    at: dict[str, float] | None = None,
) -> list[Forecast]:
    """The scale at which each fit reaches ``target`` (``forecast.forecast``)."""
    return [forecast(f, target, along=along, at=at) for f in fits]


def compare_fits(fits: Sequence[FitResult], column: str = "objective") -> list[dict[str, Any]]:
    """Exponent differences and crossovers between fits that differ only in ``column``."""
    return compare_by(list(fits), column)


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats → null (never Infinity/NaN), numpy scalars → Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(_clean(payload), indent=2, allow_nan=False) + "\n"


def write_json(payload: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(payload))
    return path


@dataclass(frozen=True, kw_only=True)
class CurveSpec:
    """One family of curves in a report: fits along ``axes``, split by ``split_by``."""

    axes: tuple[str, ...]
    split_by: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Report:
    report: Path
    fits_json: Path
    forecasts_json: Path
    plots: list[Path]
    fits: list[FitResult]
    forecasts: list[Forecast]
    comparisons: list[dict[str, Any]]
    issues: list[str]
    law_checks: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    law_choices: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def report_table(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    title: str,
    source: str,
    metric: str,
    metric_label: str | None = None,
    ylabel: str | None = None,
    direction: str = "lower",
    law: str = "power",
    group: Sequence[str] = ("objective",),
    specs: Sequence[CurveSpec] = (CurveSpec(axes=("D",)),),
    targets: Sequence[float] | None = None,
    n_boot: int = N_BOOT,
    footnote: str = "",
    trial_columns: Sequence[str] | None = None,
    vis_panels: Sequence[Any] = (),
    trial_runs: Any = None,
    sections: Sequence[tuple[str, str, Sequence[Path]]] = (),
) -> Report:
    """Fit every curve family, forecast, compare objectives, check per one-axis curve whether
    ``log_linear`` fits as well as ``power`` (``selection.law_check``; in fits.json as
    ``law_checks``), predict a new run at 2× and 10× each curve's largest scale
    (``predict_fits``; predictions.json), plot, and write report.html, fits.json and
    forecasts.json into ``out_dir``. With ``law="auto"`` the law chosen per curve is in
    fits.json (``law_choices``) and the report. fits.json's ``issues`` (and ``Report.issues``)
    are what a user must act on; its ``notes`` only explain, e.g. an L design's single points
    (``table.design_gaps``).

    Args:
        targets: metric values to forecast for every curve; default, per curve, the value that
            cuts its best observed error by 10% (``report.default_target``).
        vis_panels: ``report.VisPanel`` feature visualisations, whose PNGs are in ``out_dir``.
        trial_runs: the trials' MLflow runs (``runs.TrialRuns``): per-epoch training curves,
            a link per trial row, trials that did not finish as issues; None for a table.
        sections: further figures, ``(title, note, PNGs in out_dir)`` each, shown after the
            curves (e.g. a tracking study's accuracy per appearance condition).
        The rest as in ``fit_table``; ``group`` columns missing from the table are ignored.
    """
    from bioscale.scaling.alignment import (
        accuracy_column,
        alignment_columns,
        describe_trends,
        plot_alignment,
    )
    from bioscale.scaling.plots import plot_fits, plot_layer_search, plot_training_curves
    from bioscale.scaling.report import default_target, render
    from bioscale.scaling.selection import law_check
    from bioscale.scaling.table import design_gaps

    out_dir = Path(out_dir)
    columns = {k for r in rows for k in r}
    group = [g for g in group if g in columns]
    fits: list[FitResult] = []
    issues: list[str] = []
    plots: list[Path] = []
    forecasts: list[Forecast] = []
    law_checks: list[dict[str, Any]] = []
    predictions: list[Prediction] = []
    law_choices: list[dict[str, Any]] = []
    # issues: what a user must act on; notes: what only explains (``table.design_gaps``)
    notes: list[str] = []
    families: list[tuple[Sequence[str], list[FitResult]]] = []
    for spec in specs:
        found = fit_table(
            rows,
            metric=metric,
            axes=spec.axes,
            law=law,
            direction=direction,
            group=group,
            split_by=spec.split_by,
            n_boot=n_boot,
        )
        issues.extend(i for i in found.issues if i not in issues)
        law_choices.extend(found.law_choices)
        kept = [f for f in found.fits if f.n_scales >= 2]
        families.append((spec.axes, found.fits))
        fits.extend(kept)
        law_checks.extend(c for c in map(law_check, kept) if c is not None)
        spec_fc = []
        for fit in kept:
            for t in targets if targets is not None else [default_target(fit)]:
                if t is None:
                    continue
                try:
                    spec_fc.append(forecast(fit, t))
                except BioscaleError as err:  # e.g. a target this curve already meets
                    issues.append(f"no forecast: {err}")
        forecasts.extend(spec_fc)
        for fit in kept:
            try:
                predictions.extend(predict_fits([fit], at=_beyond(fit)))
            except BioscaleError as err:  # e.g. no residual degrees of freedom
                notes.append(f"no prediction: {err}")
        if kept:
            name = "_".join(spec.axes)
            plots.append(
                plot_fits(
                    kept,
                    out_dir / f"scaling_{name}.png",
                    title=f"{title}: {metric} vs {', '.join(spec.axes)}",
                    ylabel=ylabel or (f"1 − {metric}" if direction == "higher" else metric),
                    forecasts=spec_fc,
                )
            )
    gaps = design_gaps(rows, families)
    issues.extend(gaps.issues)
    notes[:0] = gaps.notes
    if trial_runs is not None:
        issues.extend(trial_runs.issues())
    comparisons = compare_fits(fits, "objective") if "objective" in group else []
    # trials that searched layers: a layer-by-scale heat map per objective, for the metric's task
    parts = metric.split("/")
    task = parts[1] if parts[0] == "probe" and len(parts) > 2 else None
    layer_plots = plot_layer_search(rows, out_dir, task=task, title=title) if task else []
    # biological alignment beside accuracy: per objective, against N
    aligned = alignment_columns(rows)
    align_plots = plot_alignment(rows, out_dir, metric=metric, title=title)
    align_accuracy = accuracy_column(rows, metric)
    # per-epoch val/loss and train/* of every trial: one panel per (objective, rung)
    train_plots = (
        [] if trial_runs is None else plot_training_curves(rows, trial_runs.histories, out_dir)
    )
    if trial_columns is not None and aligned:
        trial_columns = [*trial_columns, *(c for c in aligned if c not in trial_columns)]
    fits_payload: dict[str, Any] = {
        "fits": [f.to_json() for f in fits],
        "issues": issues,
        "notes": notes,
        "law_checks": law_checks,
    }
    if law_choices:
        fits_payload["law_choices"] = law_choices
    fits_json = write_json(fits_payload, out_dir / "fits.json")
    write_json({"predictions": [p.to_json() for p in predictions]}, out_dir / "predictions.json")
    forecasts_json = write_json(
        {"forecasts": [f.to_json() for f in forecasts], "comparisons": comparisons},
        out_dir / "forecasts.json",
    )
    report = render(
        study=title,
        tracking_uri=source,
        rows=list(rows),
        fits=fits,
        plots=plots,
        metric=metric,
        metric_label=metric_label or metric,
        out=out_dir / "report.html",
        forecasts=forecasts,
        comparisons=comparisons,
        issues=issues,
        notes=notes,
        trial_runs=trial_runs,
        training_plots=train_plots,
        sections=sections,
        trial_columns=trial_columns,
        footnote=footnote,
        layer_plots=layer_plots,
        alignment_plots=align_plots,
        alignment_trends=describe_trends(rows, aligned),
        alignment_accuracy=align_accuracy,
        vis_panels=vis_panels,
        law_checks=law_checks,
        predictions=predictions,
        law_choices=law_choices,
    )
    return Report(
        report=report,
        fits_json=fits_json,
        forecasts_json=forecasts_json,
        plots=plots
        + [p for _, _, images in sections for p in images]
        + layer_plots
        + align_plots
        + train_plots,
        fits=fits,
        forecasts=forecasts,
        comparisons=comparisons,
        issues=issues,
        law_checks=law_checks,
        predictions=predictions,
        law_choices=law_choices,
        notes=notes,
    )


#: the report predicts a new run at these multiples of a curve's largest observed scale
REPORT_PREDICT_AT = (2.0, 10.0)


def _beyond(fit: FitResult) -> list[dict[str, float]]:
    """Points at ``REPORT_PREDICT_AT`` × the fit's largest last-axis scale, the other axes at
    their largest; none for a fit without parameters."""
    if fit.params is None or not fit.points:
        return []
    top = {a: float(fit.x[:, i].max()) for i, a in enumerate(fit.axis)}
    last = fit.axis[-1]
    return [{**top, last: top[last] * m} for m in REPORT_PREDICT_AT]
