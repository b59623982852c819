"""``bioscale fit``, ``forecast``, ``predict`` and ``report``: scaling laws fitted to a trial table, an MLflow
experiment or a study's finished trials."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bioscale.cli.study import cmd_report
from bioscale.errors import BioscaleError
from bioscale.uri import redact_uri


def _scaling_rows(args: argparse.Namespace):
    from bioscale.scaling.api import load_rows

    if args.table is None and args.experiment is None:
        raise BioscaleError("give a table (CSV or Parquet) or --experiment NAME")
    return load_rows(args.table, experiment=args.experiment, tracking_uri=args.tracking_uri)


def _check_bootstrap(args: argparse.Namespace) -> None:
    if args.bootstrap < 0:
        raise BioscaleError(
            f"--bootstrap {args.bootstrap}: the number of bootstrap replicates must be ≥ 0 "
            "(0: no intervals; default 200)"
        )


def _scaling_fits(args: argparse.Namespace, rows=None):
    from bioscale.scaling.api import fit_table

    _check_bootstrap(args)
    found = fit_table(
        _scaling_rows(args) if rows is None else rows,
        metric=args.metric,
        axes=[a.strip() for a in args.axis.split(",")],
        law=args.law,
        direction=args.direction,
        group=args.group or [],
        split_by=args.by,
        frontier=args.frontier,
        frontier_select=args.frontier_select,
        n_boot=args.bootstrap,
        bootstrap_scheme=args.bootstrap_scheme,
        holdout=args.holdout,
        plateau_k=args.plateau_k,
    )
    for issue in found.issues:
        print(f"bioscale: data: {issue}", file=sys.stderr)
    if not found.fits:
        raise BioscaleError(f"nothing to fit in the table ({'; '.join(found.issues)})")
    return found


def _unfitted(found) -> int:
    """Print why each curve that could not be fitted was not; 1 if any, else 0 (the exit code)."""
    failed = [f for f in found.fits if f.params is None]
    for f in failed:
        name = ", ".join(f"{k}={v}" for k, v in f.group.items()) or "the table"
        print(
            f"bioscale: error: no {f.law} fit of {f.metric} for {name}: {f.note}", file=sys.stderr
        )
    return 1 if failed else 0


def _emit(payload: dict, path: str | None) -> None:
    from bioscale.scaling.api import dumps, write_json

    if path:
        print(f"wrote {write_json(payload, path)}")
    else:
        print(dumps(payload), end="")


def cmd_fit(args: argparse.Namespace) -> int:
    from bioscale.scaling.api import compare_fits

    found = _scaling_fits(args)
    payload = found.to_json()
    if args.compare:
        payload["comparisons"] = compare_fits(found.fits, args.compare)
    _emit(payload, args.json)
    if args.plot:
        from bioscale.scaling.plots import plot_fits

        path = plot_fits(
            found.fits, args.plot, title=f"{args.metric} vs {args.axis}", ylabel=args.metric
        )
        print(f"wrote {path}")
    return _unfitted(found)


def _at(values: list[str] | None) -> dict[str, float]:
    out = {}
    for item in values or []:
        name, _, value = item.partition("=")
        if not value:
            raise BioscaleError(f"--at takes AXIS=VALUE (e.g. N=1e8), got {item!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise BioscaleError(f"--at {item!r}: the value must be a number (e.g. N=1e8)") from None
    return out


def cmd_forecast(args: argparse.Namespace) -> int:
    import math

    from bioscale.scaling.api import forecast_fits

    if args.target is None and not args.budget_flops:
        raise BioscaleError(
            "give --target VALUE (the scale at which the metric reaches it) and/or "
            "--budget-flops C (the compute-optimal N and D at C FLOPs)"
        )
    if args.target is not None and not math.isfinite(args.target):
        raise BioscaleError(f"--target {args.target}: give a finite metric value to reach")
    at = _at(args.at)
    if not args.budget_flops:
        found = _scaling_fits(args)
        forecasts = forecast_fits(found.fits, args.target, along=args.along, at=at)
        _emit({"forecasts": [f.to_json() for f in forecasts], "issues": found.issues}, args.json)
        return _unfitted(found)
    from bioscale.scaling.allocation import allocate_fits, plot_isoflops
    from bioscale.scaling.constrained import with_epochs_seen

    for c in args.budget_flops:
        if not (math.isfinite(c) and c > 0):
            raise BioscaleError(f"--budget-flops {c}: give a positive number of FLOPs (e.g. 1e18)")
    if args.unique_data is not None and not args.unique_data >= 1:
        raise BioscaleError(
            f"--unique-data {args.unique_data}: give the unique samples available (≥ 1)"
        )
    rows = with_epochs_seen(_scaling_rows(args))
    found = _scaling_fits(args, rows)
    payload: dict = {}
    if args.target is not None:
        forecasts = forecast_fits(found.fits, args.target, along=args.along, at=at)
        payload["forecasts"] = [f.to_json() for f in forecasts]
    allocated = allocate_fits(found.fits, rows, args.budget_flops, unique_max=args.unique_data)
    payload |= allocated.to_json()
    payload["issues"] = [*found.issues, *allocated.issues]
    _emit(payload, args.json)
    if args.isoflops_plot:
        path = plot_isoflops(
            found.fits,
            rows,
            args.budget_flops,
            args.isoflops_plot,
            title=f"{args.metric}: isoFLOP curves ({args.law})",
            unique_max=args.unique_data,
        )
        print(f"wrote {path}")
    return _unfitted(found)


def _points(values: list[str] | None) -> list[dict[str, float]]:
    """``--at D=1e6,N=1e7`` (repeatable) → one point per occurrence."""
    points = []
    for item in values or []:
        points.append(_at([part for part in item.split(",") if part.strip()]))
    return points


def cmd_predict(args: argparse.Namespace) -> int:
    """``bioscale predict``: a new run's metric at given scales, with the mean curve's 95%
    interval (ci95) and a new run's (pi95), in ARCHITECTURE's prediction JSON."""
    from bioscale.scaling.api import load_rows, predict_fits

    if bool(args.at) == bool(args.at_table):
        raise BioscaleError(
            "give the points to predict: --at D=1e6[,N=1e7] (repeatable) or --at-table "
            "POINTS.csv (one row per point: the group columns and the axis columns), not both"
        )
    points = _points(args.at)
    at_rows = load_rows(args.at_table) if args.at_table else None
    found = _scaling_fits(args)
    predictions = predict_fits(found.fits, at=points, at_rows=at_rows)
    notes = list(dict.fromkeys(p.note for p in predictions if p.note))
    for choice in found.law_choices:
        name = ", ".join(f"{k}={v}" for k, v in choice["group"].items()) or "the table"
        print(f"bioscale: {name}: {choice['note']}", file=sys.stderr)
    for note in notes:
        print(f"bioscale: note: {note}", file=sys.stderr)
    payload = {
        "predictions": [p.to_json() for p in predictions],
        "notes": notes,
        "issues": found.issues,
    }
    if found.law_choices:
        payload["law_choices"] = found.law_choices
    _emit(payload, args.json)
    return _unfitted(found)


def cmd_scaling_report(args: argparse.Namespace) -> int:
    """``bioscale report``: a study YAML or MLflow study experiment (fits logged under the study's
    parent run), or a CSV/Parquet table."""
    import math

    source = args.study_or_table
    if source and source.endswith((".yaml", ".yml")):
        args.study = source
        return cmd_report(args)
    _check_bootstrap(args)
    if args.target is not None and not math.isfinite(args.target):
        raise BioscaleError(f"--target {args.target}: give a finite metric value to forecast")
    out = Path(args.out).resolve()
    targets = [args.target] if args.target is not None else None
    if args.experiment is not None:
        from bioscale.study.analysis import analyse
        from bioscale.study.tracking import open_tracker
        from bioscale.tracking_uri import check_readable_store

        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if uri:
            check_readable_store(uri)
        tracker = open_tracker(None, out, uri=uri)
        exp = tracker.client.get_experiment_by_name(args.experiment)
        if exp is None:
            raise BioscaleError(
                f"no MLflow experiment {args.experiment!r} in {redact_uri(tracker.uri)}"
            )
        parents = tracker.runs(exp.experiment_id, "study")
        if not parents:
            raise BioscaleError(f"experiment {args.experiment!r} has no study run to report")
        analysis = analyse(
            tracker,
            exp.experiment_id,
            parents[0].info.run_id,
            args.experiment,
            out,
            metric=args.metric,
            targets=targets,
            n_boot=args.bootstrap,
        )
        print(f"report: {analysis.report}")
        return 0
    from bioscale.scaling.api import CurveSpec, load_rows, report_table

    if source is None:
        raise BioscaleError("give a study YAML, a table (CSV or Parquet) or --experiment NAME")
    if not args.metric:
        raise BioscaleError("a table report needs --metric")
    built = report_table(
        load_rows(source),
        out,
        title=Path(source).stem,
        source=str(Path(source).resolve()),
        metric=args.metric,
        direction=args.direction,
        law=args.law,
        group=args.group or ["objective"],
        specs=[CurveSpec(axes=tuple(a.split(","))) for a in (args.axis or ["D"])],
        targets=targets,
        n_boot=args.bootstrap,
    )
    for issue in built.issues:
        print(f"bioscale: data: {issue}", file=sys.stderr)
    print(f"report: {built.report}")
    return 0


def scaling_options(p: argparse.ArgumentParser, *, axis_default: str | None = "D") -> None:
    p.add_argument("--experiment", default=None, help="read an MLflow experiment's trials")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: env)")
    p.add_argument(
        "--law",
        default="power",
        help="power | pure_power | m4 | log_linear | broken_power | chinchilla (N,D) | auto "
        "(per curve, the law with the best backtest on the curve's own points)",
    )
    p.add_argument(
        "--direction", choices=("lower", "higher"), default="lower", help="metric direction"
    )
    p.add_argument("--group", action="append", help="a column with one fit per value")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates")
    if axis_default is None:
        return
    p.add_argument("--axis", default=axis_default, help="D, N or N,D (default: %(default)s)")
    p.add_argument("--by", action="append", help="split curves by this column too")
    p.add_argument(
        "--frontier",
        action="store_true",
        help="fit one run per scale: the one with the best validation score",
    )
    p.add_argument(
        "--frontier-select",
        default="auto",
        metavar="COLUMN[:lower|higher]",
        help="the column the frontier picks runs by (default auto: the metric's validation "
        "split, else val/best_loss)",
    )
    p.add_argument(
        "--bootstrap-scheme",
        choices=("seeds", "cases"),
        default="seeds",
        help="seeds: each scale's mean plus seed deviations pooled over the scales with repeats "
        "(residuals where one run); cases: resample runs (default: %(default)s)",
    )
    p.add_argument("--holdout", type=int, default=1, help="largest scales the backtest holds")
    p.add_argument("--plateau-k", type=int, default=2, help="scales without gain = plateau")


def add_commands(sub) -> None:
    """``fit``, ``forecast``, ``predict``, ``report``."""
    p_fit = sub.add_parser("fit", help="fit scaling laws to a table or MLflow experiment")
    p_fit.add_argument("table", nargs="?", help="CSV or Parquet table, one row per trial")
    p_fit.add_argument("--metric", required=True, help="metric column")
    scaling_options(p_fit)
    p_fit.add_argument("--compare", default=None, help="compare fits differing in this column")
    p_fit.add_argument("--json", default=None, help="write the fit JSON here (default: stdout)")
    p_fit.add_argument("--plot", default=None, help="write a PNG of the fits here")
    p_fit.set_defaults(func=cmd_fit)
    p_fc = sub.add_parser("forecast", help="the scale at which a fitted metric reaches a target")
    p_fc.add_argument("table", nargs="?", help="CSV or Parquet table, one row per trial")
    p_fc.add_argument("--metric", required=True, help="metric column")
    p_fc.add_argument("--target", type=float, default=None, help="metric value to reach")
    scaling_options(p_fc)
    p_fc.add_argument("--along", default=None, help="axis that grows (default: the last)")
    p_fc.add_argument("--at", action="append", help="other axes fixed, e.g. N=1e8")
    p_fc.add_argument("--json", default=None, help="write the forecast JSON here")
    p_fc.add_argument(
        "--budget-flops",
        type=float,
        action="append",
        metavar="C",
        help="repeatable: the compute-optimal N and D at C FLOPs, C = flops_per_sample(N) × D × "
        "epochs (needs --law chinchilla --axis N,D, or --law data_constrained --axis "
        "N,D,epochs_seen)",
    )
    p_fc.add_argument(
        "--unique-data",
        type=float,
        default=None,
        metavar="U",
        help="data_constrained: the unique samples available; beyond them compute buys epochs",
    )
    p_fc.add_argument("--isoflops-plot", default=None, help="write a PNG of the isoFLOP curves")
    p_fc.set_defaults(func=cmd_forecast)
    p_pr = sub.add_parser(
        "predict", help="a new run's metric at given scales, with confidence and prediction bands"
    )
    p_pr.add_argument("table", nargs="?", help="CSV or Parquet table, one row per trial")
    p_pr.add_argument("--metric", required=True, help="metric column")
    scaling_options(p_pr)
    p_pr.add_argument(
        "--at", action="append", help="a point to predict, e.g. D=1e6 or N=1e7,D=1e6 (repeatable)"
    )
    p_pr.add_argument(
        "--at-table",
        default=None,
        help="CSV/Parquet of points: the group columns and the axis columns, one row per point",
    )
    p_pr.add_argument("--json", default=None, help="write the prediction JSON here")
    p_pr.set_defaults(func=cmd_predict)
    p_sr = sub.add_parser("report", help="HTML scaling report of a study or a table")
    p_sr.add_argument("study_or_table", nargs="?", help="study YAML, or CSV/Parquet table")
    p_sr.add_argument("--out", required=True, help="output folder")
    p_sr.add_argument("--metric", default=None, help="metric (a study's default: MoA top-1)")
    p_sr.add_argument("--target", type=float, default=None, help="metric value to forecast")
    p_sr.add_argument("--axis", action="append", help="curve family, repeatable (default: D)")
    scaling_options(p_sr, axis_default=None)
    p_sr.set_defaults(func=cmd_scaling_report)
