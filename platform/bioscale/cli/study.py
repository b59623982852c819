"""``bioscale study``: plan (the dry run), run, resume and report a scaling study."""

from __future__ import annotations

import argparse
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
            tracker, result.experiment_id, result.parent_run_id, spec.name, result.out_dir
        )
    return result, analysis


def print_where(result, analysis) -> None:
    print(f"\nreport:       {analysis.report}")
    for p in analysis.plots:
        print(f"plot:         {p}")
    print(f"fits (JSON):  {analysis.fits_json}")
    print(f"trial table:  {analysis.table}")
    print(f"MLflow store: {redact_uri(result.tracking_uri)}")
    # MLflow 3's UI opens on its GenAI overview; this page is the study's runs table (the
    # trials nested under the study run)
    runs_page = f"#/experiments/{result.experiment_id}/runs?workflowType=machine_learning"
    if result.tracking_uri.startswith("sqlite:"):
        print(
            f"browse it:    .venv/bin/mlflow ui --backend-store-uri {result.tracking_uri} "
            f"--port 5000   (then open http://127.0.0.1:5000/{runs_page})"
        )
    elif result.tracking_uri.startswith(("http://", "https://")):
        print(f"runs table:   {redact_uri(result.tracking_uri).rstrip('/')}/{runs_page}")


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
    analysis = analyse(tracker, experiment_id, parents[0].info.run_id, spec.name, out)
    print(f"report: {analysis.report}")
    return 0


def add_commands(sub) -> None:
    """``study plan``, ``study run``, ``study resume``, ``study report``."""
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
