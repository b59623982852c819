"""The ``bioscale`` command. Thin: parses arguments and calls the library; heavy imports happen
inside each command so ``bioscale --help`` stays instant."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from bioscale.errors import BioscaleError


def _default_out(name: str) -> Path:
    return Path("bioscale-out") / name


def _load_spec(path: str):
    from bioscale.study.spec import StudySpec

    return StudySpec.load(path)


def cmd_synth_profiles(args: argparse.Namespace) -> int:
    from bioscale.data.synth import SynthProfilesConfig, generate_profiles

    path = generate_profiles(SynthProfilesConfig(seed=args.seed), args.out)
    print(f"wrote {path} and JUMP-style metadata in {Path(args.out) / 'metadata'}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bioscale.study.plan import plan
    from bioscale.study.runner import ensure_manifest

    spec = _load_spec(args.study)
    out = Path(args.out or _default_out(spec.name))
    study_plan = plan(spec, ensure_manifest(spec, out))
    print(format_plan(study_plan))
    return 0


def format_plan(study_plan) -> str:
    spec = study_plan.spec
    res = spec.resources
    lines = [
        f"study {spec.name!r} on {study_plan.manifest.path} "
        f"({study_plan.manifest.n_rows:,} samples, manifest sha {study_plan.manifest.sha[:12]})",
        f"resources per trial: {res.workers_per_trial} worker(s) × {res.cpus_per_worker:g} CPU"
        f" + {res.gpus_per_worker:g} GPU; up to {res.max_concurrent_trials} trials at once",
        "",
    ]
    header = (
        f"{'#':>3}  {'rung':<14}{'N':>10}  {'objective':<12}{'diet':<34}{'seed':>4}"
        f"{'D_samples':>10}{'D_cmpds':>8}{'epochs':>7}{'FLOPs':>11}  key"
    )
    lines += [header, "-" * len(header)]
    total = 0.0
    for t in study_plan.trials:
        p = t.params
        total += t.flops_total
        lines.append(
            f"{t.index + 1:>3}  {p['rung']:<14}{p['N']:>10,}  {p['objective']:<12}"
            f"{p['diet']:<34}{p['seed']:>4}{p['D_samples']:>10,}{p['D_compounds']:>8,}"
            f"{p['epochs']:>7}{t.flops_total:>11.3g}  {t.key[:12]}"
        )
    lines += [
        "",
        f"{len(study_plan.trials)} trials; total compute at most {total:.3g} FLOPs "
        "(forward+backward, measured per sample; early stopping can only lower it)",
    ]
    for point, why in study_plan.dropped:
        lines.append(f"dropped: {point.describe()} — {why}")
    return "\n".join(lines)


def _run_and_report(spec, out: Path, args: argparse.Namespace, report: bool = True):
    from bioscale.study.analysis import analyse
    from bioscale.study.runner import run_study
    from bioscale.study.tracking import Tracker

    result = run_study(
        spec, out, address=args.address, num_cpus=args.num_cpus, verbose=args.verbose
    )
    print(
        f"trials: {result.finished} finished, {result.skipped} already done, "
        f"{result.failed} failed ({result.seconds:.0f} s)"
    )
    analysis = None
    if report:
        tracker = Tracker(result.tracking_uri, artifact_root=result.out_dir / "mlartifacts")
        analysis = analyse(
            tracker, result.experiment_id, result.parent_run_id, spec.name, result.out_dir
        )
    return result, analysis


def _print_where(result, analysis) -> None:
    print(f"\nreport:       {analysis.report}")
    for p in analysis.plots:
        print(f"plot:         {p}")
    print(f"fits (JSON):  {analysis.fits_json}")
    print(f"trial table:  {analysis.table}")
    print(f"MLflow store: {result.tracking_uri}")
    if result.tracking_uri.startswith("sqlite:"):
        print(
            f"browse it:    .venv/bin/mlflow ui --backend-store-uri {result.tracking_uri} "
            "--port 5000   (then open http://127.0.0.1:5000)"
        )


def cmd_run(args: argparse.Namespace) -> int:
    spec = _load_spec(args.study)
    out = Path(args.out or _default_out(spec.name))
    result, analysis = _run_and_report(spec, out, args, report=not args.no_report)
    if analysis is not None:
        _print_where(result, analysis)
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from bioscale.study.analysis import analyse
    from bioscale.study.runner import tracking_uri
    from bioscale.study.tracking import Tracker

    spec = _load_spec(args.study)
    out = Path(args.out or _default_out(spec.name)).resolve()
    tracker = Tracker(tracking_uri(spec, out), artifact_root=out / "mlartifacts")
    experiment_id = tracker.experiment(spec.name)
    parents = tracker.runs(experiment_id, "study")
    if not parents:
        raise BioscaleError(f"no study run for {spec.name!r} in {tracker.uri}; run it first")
    analysis = analyse(tracker, experiment_id, parents[0].info.run_id, spec.name, out)
    print(f"report: {analysis.report}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from bioscale.study.spec import StudySpec

    t0 = time.perf_counter()
    demo = resources.files("bioscale").joinpath("studies/demo.yaml")
    spec = StudySpec.load(str(demo))
    out = Path(args.out)
    print(f"bioscale demo: {len(spec.grids)} grids of study {spec.name!r} into {out.resolve()}")
    result, analysis = _run_and_report(spec, out, args)
    print("\nhow each objective scales:")
    from bioscale.scaling.report import describe_fit

    for fit in analysis.fits:
        print(f"  · [{fit.axis[0]}] {describe_fit(fit, 'MoA top-1 (novel compounds)')}")
    _print_where(result, analysis)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    return 1 if result.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bioscale",
        description="Neural scaling studies for biological vision and phenotypic drug discovery "
        "on Ray, tracked in MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def ray_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--address", default=None, help="Ray cluster to join (default: start a local instance)"
        )
        p.add_argument(
            "--num-cpus",
            type=int,
            default=None,
            help="logical CPUs of the local Ray instance (default: max(4, 2 × cores))",
        )
        p.add_argument(
            "-v", "--verbose", action="store_true", help="show Ray's own logs and progress bars"
        )

    demo = sub.add_parser("demo", help="run the embedded demo study end to end")
    demo.add_argument("--out", default="bioscale-demo", help="output folder (default: %(default)s)")
    ray_options(demo)
    demo.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_cmd", required=True)
    synth = data.add_parser("synth", help="generate synthetic data").add_subparsers(
        dest="synth_kind", required=True
    )
    prof = synth.add_parser("profiles", help="a synthetic Cell Painting profile screen")
    prof.add_argument("--out", required=True, help="output folder")
    prof.add_argument("--seed", type=int, default=0)
    prof.set_defaults(func=cmd_synth_profiles)

    study = sub.add_parser("study", help="plan, run and report scaling studies").add_subparsers(
        dest="study_cmd", required=True
    )
    p_plan = study.add_parser("plan", help="print every trial with N, D, FLOPs; runs nothing")
    p_plan.add_argument("study", help="study YAML")
    p_plan.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_plan.set_defaults(func=cmd_plan)
    p_run = study.add_parser("run", help="run the study on Ray, log to MLflow, fit and report")
    p_run.add_argument("study", help="study YAML")
    p_run.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_run.add_argument("--no-report", action="store_true", help="skip the fits and the report")
    ray_options(p_run)
    p_run.set_defaults(func=cmd_run)
    p_rep = study.add_parser("report", help="fit and report a study's finished trials again")
    p_rep.add_argument("study", help="study YAML")
    p_rep.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_rep.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BioscaleError as err:
        print(f"bioscale: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "bioscale: interrupted; finished trials are in MLflow and are skipped on re-run",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
