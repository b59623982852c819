"""``bioscale study``: plan (the dry run), run, resume and report a scaling study."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bioscale.cli.common import load_spec, out_dir, ray_options
from bioscale.errors import BioscaleError
from bioscale.uri import redact_uri


def cmd_plan(args: argparse.Namespace) -> int:
    from bioscale.study.dryrun import dry_run

    spec = load_spec(args.study)
    dry_run(
        spec, out_dir(args, spec), address=args.address, budget=args.budget, proceed=args.proceed
    )
    return 0


def run_and_report(spec, out: Path, args: argparse.Namespace, report: bool = True):
    """Run ``spec`` (``study run``/``resume``/``demo``), then fit and report it unless ``report``
    is false; returns the ``StudyRun`` and the ``Analysis`` (or ``None``)."""
    from bioscale.study.analysis import analyse
    from bioscale.study.runner import run_study
    from bioscale.study.tracking import open_tracker

    result = run_study(
        spec,
        out,
        address=args.address,
        num_cpus=args.num_cpus,
        verbose=args.verbose,
        resume=getattr(args, "resume", False),
        proceed=getattr(args, "proceed", False),
    )
    print(
        f"trials: {result.finished} finished, {result.skipped} already done, "
        f"{result.failed} failed ({result.seconds:.0f} s)"
    )
    analysis = None
    if report:
        tracker = open_tracker(spec, result.out_dir)
        analysis = analyse(
            tracker,
            result.experiment_id,
            result.parent_run_id,
            spec.name,
            result.out_dir,
            metric=spec.analysis.metric,
            law=spec.analysis.law,
        )
    return result, analysis


def print_where(result, analysis) -> None:
    print(f"\nreport:       {analysis.report}")
    for p in analysis.plots:
        print(f"plot:         {p}")
    print(f"fits (JSON):  {analysis.fits_json}")
    print(f"trial table:  {analysis.table}")
    print(f"MLflow store: {redact_uri(result.tracking_uri)}")
    from bioscale.scaling.runs import mlflow_ui

    # the study's runs table (trials nested under the study run), not the UI's GenAI overview
    ui = mlflow_ui(result.tracking_uri)
    if ui is not None and ui.launch:
        print(f"browse it:    {ui.launch}   (then open {ui.runs_table(result.experiment_id)})")
    elif ui is not None:
        print(f"runs table:   {ui.runs_table(result.experiment_id)}")


def cmd_resume(args: argparse.Namespace) -> int:
    """``study resume``: ``study run`` that insists the study exists (see run_study)."""
    args.resume = True
    return cmd_run(args)


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.study)
    out = out_dir(args, spec)
    result, analysis = run_and_report(spec, out, args, report=not args.no_report)
    if analysis is not None:
        print_where(result, analysis)
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from bioscale.study.analysis import analyse
    from bioscale.study.tracking import open_tracker

    spec = load_spec(args.study)
    out = out_dir(args, spec).resolve()
    tracker = open_tracker(spec, out)
    experiment_id = tracker.experiment(spec.name)
    parents = tracker.runs(experiment_id, "study")
    if not parents:
        raise BioscaleError(
            f"no study run for {spec.name!r} in {redact_uri(tracker.uri)}; run it first"
        )
    analysis = analyse(
        tracker,
        experiment_id,
        parents[0].info.run_id,
        spec.name,
        out,
        metric=spec.analysis.metric,
        law=spec.analysis.law,
    )
    print(f"report: {analysis.report}")
    return 0


def _parse_target(text: str) -> tuple[str, float]:
    metric, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not metric or not math.isfinite(number):
        raise BioscaleError(
            f"--target {text!r}: give METRIC=VALUE, e.g. --target probe/moa/novel_compounds/top1=0.5"
        )
    return metric, number


def _study_rows(spec, args: argparse.Namespace) -> list[dict]:
    """The study's finished trials: ``--table`` (a report's trials.csv), else its MLflow runs."""
    from bioscale.models.features import TRAINLESS_FAMILY
    from bioscale.scaling.api import load_rows
    from bioscale.scaling.runs import runs_table
    from bioscale.study.tracking import open_tracker

    if args.table:
        rows = load_rows(args.table)
    else:
        out = out_dir(args, spec).resolve()
        tracker = open_tracker(spec, out)
        rows = runs_table(tracker.client, tracker.experiment(spec.name))
        if not rows:
            raise BioscaleError(
                f"no finished trials of {spec.name!r} in {redact_uri(tracker.uri)}; run the "
                "study first (or pass --table TRIALS.csv)"
            )
    return [r for r in rows if r.get("model_family") != TRAINLESS_FAMILY]


def cmd_suggest(args: argparse.Namespace) -> int:
    """``study suggest``: the next trials that most shrink a forecast's interval per FLOP."""
    from bioscale.scaling.api import fit_table
    from bioscale.scaling.suggest import grids_block, suggest
    from bioscale.study.capacity import estimate
    from bioscale.study.suggest import study_candidates

    spec = load_spec(args.study)
    metric, target = _parse_target(args.target)
    rows = _study_rows(spec, args)
    if not any(metric in r for r in rows):
        raise BioscaleError(f"--target: no trial logged {metric!r}; check the metric's name")
    budget = args.budget_flops
    if args.budget_gpu_hours is not None:
        per_flop = estimate(1.0, spec.budget, device=args.device)
        if per_flop is None:
            raise BioscaleError(
                "--budget-gpu-hours needs a device: pass --device (e.g. H100) or set the study's "
                "budget.device"
            )
        budget = args.budget_gpu_hours / per_flop.gpu_hours
    fits = fit_table(
        rows,
        metric=metric,
        axes=("D",),
        law=args.law,
        direction=args.direction,
        group=["objective"],
        split_by=["rung"],
    ).fits
    cands = study_candidates(spec, rows, fits)
    if not cands:
        raise BioscaleError(
            "no candidate trials: suggest proposes new diets and seeds on a curve along D (one "
            "objective at one rung with several diets); the study has none with flops_per_sample"
        )
    s = suggest(fits, target, cands, k=args.k, budget_flops=budget)
    print(f"forecast: the D (samples) at which {metric} reaches {target:g}")
    for fit, ci, noise in zip(fits, s.ci95, s.noise, strict=True):
        if ci is not None:
            where = ", ".join(f"{k}={v}" for k, v in fit.group.items())
            print(
                f"  {where}: now 95% CI [{ci[0]:.4g}, {ci[1]:.4g}]; seed noise {noise[0]:.3g} ({noise[1]})"
            )
    for why in s.skipped:
        print(f"  skipped {why}")
    print(f"total interval width now: {s.width:.3f} decades")
    for n, p in enumerate(s.picks, 1):
        t = p.candidate.trial
        print(
            f"{n}. rung {t['rung']}, objective {t['objective']}, diet {t['diet']}"
            + (f", another seed ({t['seed']})" if "seed" in t else "")
            + " "
            f"(D ≈ {p.candidate.at['D']:.4g}, {p.candidate.flops:.3g} FLOPs): expected 95% CI "
            f"[{p.ci95[0]:.4g}, {p.ci95[1]:.4g}], total width {p.width:.3f} decades, "
            f"{p.flops_total:.3g} FLOPs so far"
        )
    if not s.picks:
        print("no candidate shrinks the interval within the budget")
        return 0
    out = Path(args.write) if args.write else out_dir(args, spec) / "suggest" / "grids.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# bioscale study suggest: append these entries to the study's grids: list\n"
        + grids_block(s.picks)
    )
    print(f"grids block:  {out}")
    return 0


def add_commands(sub) -> None:
    """``study plan``, ``study run``, ``study resume``, ``study report``, ``study suggest``."""
    study = sub.add_parser("study", help="plan, run and report scaling studies").add_subparsers(
        dest="study_cmd", required=True
    )
    p_plan = study.add_parser("plan", help="print every trial with N, D, FLOPs; runs nothing")
    p_plan.add_argument("study", help="study YAML")
    p_plan.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_plan.add_argument(
        "--address", default=None, help="check resources against this Ray cluster's nodes"
    )
    p_plan.add_argument(
        "--budget", type=float, default=None, help="GPU-hour cap (overrides the study's budget:)"
    )
    p_plan.add_argument(
        "--proceed", action="store_true", help="accept a study over its GPU-hour budget"
    )
    p_plan.set_defaults(func=cmd_plan)
    p_run = study.add_parser("run", help="run the study on Ray, log to MLflow, fit and report")
    p_run.add_argument("study", help="study YAML")
    p_run.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_run.add_argument("--no-report", action="store_true", help="skip the fits and the report")
    p_run.add_argument("--proceed", action="store_true", help="run even if over its budget:")
    ray_options(p_run)
    p_run.set_defaults(func=cmd_run)
    p_resume = study.add_parser(
        "resume",
        help="finish an interrupted study: only unfinished trials run, from their checkpoints, "
        "on their MLflow runs",
    )
    p_resume.add_argument("study", help="study YAML")
    p_resume.add_argument(
        "--out", default=None, help="output folder (default: bioscale-out/<name>)"
    )
    p_resume.add_argument("--no-report", action="store_true", help="skip the fits and the report")
    p_resume.add_argument("--proceed", action="store_true", help="run even if over its budget:")
    ray_options(p_resume)
    p_resume.set_defaults(func=cmd_resume)
    p_rep = study.add_parser("report", help="fit and report a study's finished trials again")
    p_rep.add_argument("study", help="study YAML")
    p_rep.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_rep.set_defaults(func=cmd_report)
    p_sug = study.add_parser(
        "suggest", help="the next trials that most shrink a forecast's interval per FLOP"
    )
    p_sug.add_argument("study", help="study YAML")
    p_sug.add_argument("--target", required=True, help="METRIC=VALUE: the forecast to sharpen")
    p_sug.add_argument("--k", type=int, default=4, help="at most this many trials (default 4)")
    budget = p_sug.add_mutually_exclusive_group()
    budget.add_argument("--budget-flops", type=float, default=None, help="FLOPs the picks may use")
    budget.add_argument(
        "--budget-gpu-hours", type=float, default=None, help="GPU-hours the picks may use"
    )
    p_sug.add_argument("--device", default=None, help="device of --budget-gpu-hours (e.g. H100)")
    p_sug.add_argument("--law", default="power", help="scaling law of the curves (default power)")
    p_sug.add_argument(
        "--direction", choices=["higher", "lower"], default="higher", help="is higher better?"
    )
    p_sug.add_argument(
        "--table", default=None, help="trials CSV (default: the study's MLflow runs)"
    )
    p_sug.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_sug.add_argument(
        "--write", default=None, help="grids block path (default <out>/suggest/grids.yaml)"
    )
    p_sug.set_defaults(func=cmd_suggest)
