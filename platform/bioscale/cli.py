"""The ``bioscale`` command. Thin: parses arguments and calls the library; heavy imports happen
inside each command so ``bioscale --help`` stays instant."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from bioscale.errors import BioscaleError
from bioscale.uri import redact_uri


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


def cmd_synth_images(args: argparse.Namespace) -> int:
    from bioscale.data.synth_images import SynthImagesConfig, generate_images

    cfg = SynthImagesConfig(seed=args.seed, size=args.size, sites_per_well=args.sites_per_well)
    result = generate_images(cfg, args.out)
    print(
        f"wrote {result.n_sites} sites ({result.n_files} LZW TIFFs) under {result.images}, "
        f"load data {result.load_data}, JUMP-style metadata in {result.metadata}"
    )
    print(f"imported manifest: {result.manifest}")
    return 0


def cmd_synth_natural(args: argparse.Namespace) -> int:
    from bioscale.data.natural import SynthNaturalConfig, generate_natural

    cfg = SynthNaturalConfig(seed=args.seed, per_class=args.per_class, size=args.size)
    print(f"wrote {generate_natural(cfg, args.out)} (images, maps for part of them)")
    return 0


def cmd_import_natural(args: argparse.Namespace) -> int:
    from bioscale.data import natural

    out = Path(args.out)
    if args.layout == "folder":
        path = natural.import_folder(args.input, out / "manifest.parquet", args.novel_fraction)
    elif args.layout == "clickme":
        shards = (
            sorted(Path(args.input).glob("*.tfrecord*"))
            if Path(args.input).is_dir()
            else [Path(args.input)]
        )
        path = natural.import_clickme(shards, out, args.novel_fraction)
    else:
        if args.images is None:
            raise BioscaleError(
                "data import natural fixations needs --images DIR, the folder the fixations "
                "file's image paths are relative to"
            )
        path = natural.import_fixations(args.input, args.images, out, sigma_px=args.sigma_px)
    print(f"wrote {path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from bioscale.data.importers import ImportConfig, import_dataset

    cfg = ImportConfig(
        input=args.load_data,
        out=args.out,
        root=args.root,
        illum_root=args.illum_root,
        metadata=args.metadata,
        source=args.source,
        dyes=tuple(args.dyes.split(",")) if args.dyes else None,
        novel_fraction=args.novel_fraction,
    )
    summary = import_dataset(args.format, cfg)
    groups = ", ".join(f"{g} {n}" for g, n in sorted(summary.groups.items()))
    print(
        f"wrote {summary.path}: {summary.n_sites} sites, dyes {', '.join(summary.dyes)}; "
        f"{summary.n_annotated} with a perturbation from the metadata; groups: {groups}"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import json
    import time

    from bioscale.data.check import check_manifest, format_report

    last = [0.0]

    def progress(done: int, total: int, bad: int) -> None:
        now = time.monotonic()
        if total >= 50 and (now - last[0] > 1.0 or done == total):
            last[0] = now
            print(f"checked {done}/{total} samples, {bad} bad", file=sys.stderr, flush=True)

    result = check_manifest(
        args.manifest,
        sample=args.sample,
        workers=args.workers,
        address=args.address,
        progress=progress,
    )
    for b in result.bad:
        print(
            f"bioscale: bad file: sample {b['sample_id']} dye {b['dye']}: {b['error']}",
            file=sys.stderr,
        )
    if args.json:
        json.dump(result.reports, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_report(result))
    return 1 if result.bad else 0


def cmd_pack(args: argparse.Namespace) -> int:
    from bioscale.data.pack import PackConfig, pack_manifest

    cfg = PackConfig(
        crop=args.crop,
        crops_per_site=args.crops_per_site,
        dtype=args.dtype,
        normalise=args.normalise,
        downsample=args.downsample,
        illumination=args.illumination,
        seed=args.seed,
        shard_mb=args.shard_mb,
        workers=args.workers,
    )
    result = pack_manifest(args.manifest, args.out, cfg)
    print(
        f"packed {result.n_sites} sites into {result.n_crops} crops of {result.crop_shape} "
        f"{cfg.dtype} in {result.n_shards} shard(s) ({result.seconds:.1f} s); "
        f"packed manifest {result.manifest}"
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bioscale.study.plan import plan
    from bioscale.study.runner import check_locations, ensure_manifest

    spec = _load_spec(args.study)
    out = Path(args.out or _default_out(spec.name))
    check_locations(spec, out)
    if args.address:  # an unreachable cluster is said before the plan's work, not after
        from bioscale.study.capacity import check_ray_address

        check_ray_address(args.address)
    study_plan = plan(spec, ensure_manifest(spec, out))
    print(format_plan(study_plan))
    _check_capacity(spec, study_plan, args)
    return 0


def _check_capacity(spec, study_plan, args: argparse.Namespace) -> None:
    """``plan --address``: what fits the cluster; GPU-hours against ``budget:``/``--budget``."""
    from bioscale.study import capacity

    cluster = capacity.read_cluster(args.address) if args.address else None
    fit = (
        capacity.check_fit(spec.resources, cluster, streaming=spec.data.kind != "profiles")
        if cluster
        else None
    )
    if cluster is not None and fit is not None:
        cpus = sum(n.cpus for n in cluster.nodes)
        gpus = sum(n.gpus for n in cluster.nodes)
        kinds = f" ({', '.join(cluster.accelerators)})" if cluster.accelerators else ""
        print(
            f"\ncluster {cluster.address}: {len(cluster.nodes)} node(s), {cpus:g} CPU, "
            f"{gpus:g} GPU{kinds}"
        )
        for note in fit.notes:
            print(f"note: {note}")
        if fit.fits:
            print(f"fits: {fit.concurrent_trials} trial(s) at once")
    est = capacity.estimate(
        capacity.total_flops(study_plan.trials), spec.budget, cluster=cluster, cap=args.budget
    )
    if est is not None:
        print(f"compute: {est.describe()}")
    if fit is not None and not fit.fits:
        raise BioscaleError(
            f"the study will not fit the cluster at {cluster.address}:\n  - "
            + "\n  - ".join(fit.problems)
        )
    capacity.enforce_budget(est, args.proceed)


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
    for point, why in study_plan.skipped:
        lines.append(f"evaluation skipped: {point.describe()} — {why}")
    return "\n".join(lines)


def _run_and_report(spec, out: Path, args: argparse.Namespace, report: bool = True):
    from bioscale.study.analysis import analyse
    from bioscale.study.runner import run_study
    from bioscale.study.tracking import Tracker

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
    print(f"MLflow store: {redact_uri(result.tracking_uri)}")
    if result.tracking_uri.startswith("sqlite:"):
        print(
            f"browse it:    .venv/bin/mlflow ui --backend-store-uri {result.tracking_uri} "
            "--port 5000   (then open http://127.0.0.1:5000)"
        )


def cmd_resume(args: argparse.Namespace) -> int:
    """``study resume``: ``study run`` that insists the study exists (see run_study)."""
    args.resume = True
    return cmd_run(args)


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
        raise BioscaleError(
            f"no study run for {spec.name!r} in {redact_uri(tracker.uri)}; run it first"
        )
    analysis = analyse(tracker, experiment_id, parents[0].info.run_id, spec.name, out)
    print(f"report: {analysis.report}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Re-evaluate finished trials from their final checkpoints into their own MLflow runs."""
    import numpy as np

    from bioscale.eval.extract import final_checkpoint, reevaluate, trial_folder
    from bioscale.objectives.base import Targets
    from bioscale.study.datasets import trial_datasets
    from bioscale.study.plan import TrialData, load_index, plan, probe_targets
    from bioscale.study.runner import ensure_manifest, init_ray, tracking_uri
    from bioscale.study.spec import StudySpec
    from bioscale.study.tracking import Tracker

    spec = _load_spec(args.study)
    if args.task:  # tasks to (re)compute now, instead of the study's eval: list
        data = spec.to_dict()
        data["eval"], data["probe"]["tasks"] = list(args.task), list(args.task)
        spec = StudySpec.from_dict(data, where=f"{args.study} with --task")
    out = Path(args.out or _default_out(spec.name)).resolve()
    manifest = ensure_manifest(spec, out)
    tracker = Tracker(tracking_uri(spec, out), artifact_root=out / "mlartifacts")
    finished = tracker.finished_trial_keys(tracker.experiment(spec.name))  # {trial key: run id}
    wanted = set(args.run or finished.values())
    unknown = wanted - set(finished.values())
    if unknown:
        raise BioscaleError(
            f"no FINISHED trial run {', '.join(sorted(unknown))} in study {spec.name!r} "
            f"({redact_uri(tracker.uri)})"
        )
    trials = {t.key: t for t in plan(spec, manifest).trials}
    index = load_index(spec, manifest)
    probe = probe_targets(index)
    empty = Targets(rows=probe.rows[:0], columns={k: v[:0] for k, v in probe.columns.items()})
    init_ray(args.address, args.num_cpus, args.verbose)
    dataset = trial_datasets(
        spec, str(manifest), index, TrialData(train=empty, val=empty, probe=probe)
    )["probe"]
    for key, run_id in sorted(finished.items()):
        if run_id not in wanted:
            continue
        trial = trials.get(key)
        if trial is None:
            raise BioscaleError(
                f"trial run {run_id} was trained from another grid, data or training config "
                f"than {args.study}; evaluate it with the study file it ran with"
            )
        metrics = reevaluate(
            tracker,
            run_id,
            probe_dataset=dataset,
            loop_config=trial.loop,
            checkpoint=final_checkpoint(trial_folder(out, key, spec.storage)),
            cfg=spec.probe,
            pool_size=args.actors,
        )
        shown = {k: v for k, v in metrics.items() if np.isfinite(v)}
        print(f"{run_id} ({trial.point.describe()}): {len(shown)} metrics logged")
        for name in sorted(shown):
            print(f"  {name} = {shown[name]:.4f}")
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    """MACO feature visualisations of a finished trial's class logits, logged to its run."""
    from bioscale.eval.maco import MacoConfig
    from bioscale.eval.visualize import visualize_run

    spec = _load_spec(args.study)
    out = Path(args.out or _default_out(spec.name)).resolve()
    given = {
        "steps": args.steps,
        "lr": args.lr,
        "image_size": args.image_size,
        "crops": args.crops,
        "seed": args.seed,
    }
    cfg = MacoConfig(**{k: v for k, v in given.items() if v is not None})
    result = visualize_run(
        spec,
        out,
        args.run,
        cfg=cfg,
        targets=args.target,
        images=args.images,
        device=args.device,
    )
    print(f"{len(result.targets)} visualisation(s) in {result.folder}")
    return 0


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


def _scaling_fits(args: argparse.Namespace):
    from bioscale.scaling.api import fit_table

    _check_bootstrap(args)
    found = fit_table(
        _scaling_rows(args),
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

    if not math.isfinite(args.target):
        raise BioscaleError(f"--target {args.target}: give a finite metric value to reach")
    at = _at(args.at)
    found = _scaling_fits(args)
    forecasts = forecast_fits(found.fits, args.target, along=args.along, at=at)
    _emit({"forecasts": [f.to_json() for f in forecasts], "issues": found.issues}, args.json)
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
        from bioscale.study.tracking import Tracker
        from bioscale.tracking_uri import check_readable_store

        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if uri:
            check_readable_store(uri)
        tracker = Tracker(uri, artifact_root=out / "mlartifacts")
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
    img = synth.add_parser(
        "images", help="synthetic 5-dye Cell Painting sites (LZW TIFFs, LoadData CSV, metadata)"
    )
    img.add_argument("--out", required=True, help="output folder")
    img.add_argument("--seed", type=int, default=0)
    img.add_argument("--size", type=int, default=128, help="site size in pixels (default 128)")
    img.add_argument("--sites-per-well", type=int, default=2)
    img.set_defaults(func=cmd_synth_images)
    nat = synth.add_parser(
        "natural", help="objects whose class is a small mark, with 'human' maps of the mark"
    )
    nat.add_argument("--out", required=True, help="output folder")
    nat.add_argument("--seed", type=int, default=0)
    nat.add_argument("--per-class", type=int, default=40)
    nat.add_argument("--size", type=int, default=64)
    nat.set_defaults(func=cmd_synth_natural)

    imp = data.add_parser("import", help="import image datasets into a manifest").add_subparsers(
        dest="import_format", required=True
    )
    cp = imp.add_parser(
        "cellprofiler", help="a CellProfiler LoadData CSV or CytoTable/CellProfiler Parquet"
    )
    cp.add_argument("load_data", help="LoadData .csv or CytoTable .parquet")
    cp.add_argument("--out", required=True, help="manifest to write (.parquet)")
    cp.add_argument(
        "--root", default=None, help="folder relative PathNames (or bare FileNames) resolve against"
    )
    cp.add_argument(
        "--illum-root", default=None, help="folder of Illum .npy files (default --root)"
    )
    cp.add_argument(
        "--metadata",
        default=None,
        help="folder of JUMP tables and Drug Repurposing Hub annotations",
    )
    cp.add_argument("--source", default=None, help="source name when the data carry none")
    cp.add_argument("--dyes", default=None, help="keep these dyes in this order, e.g. DNA,ER,RNA")
    cp.add_argument("--novel-fraction", type=float, default=0.25)
    cp.set_defaults(func=cmd_import, format="cellprofiler")

    nimp = imp.add_parser("natural", help="natural images with human importance maps")
    nimp.add_argument("layout", choices=["folder", "clickme", "fixations"])
    nimp.add_argument(
        "input", help="folder (images/<class>/), TFRecord file/folder, or fixations JSON"
    )
    nimp.add_argument("--out", required=True, help="output folder (manifest.parquet inside)")
    nimp.add_argument("--images", default=None, help="fixations: the images folder")
    nimp.add_argument("--sigma-px", type=float, default=25.0, help="fixations: blur σ in px")
    nimp.add_argument("--novel-fraction", type=float, default=0.0)
    nimp.set_defaults(func=cmd_import_natural)

    chk = data.add_parser(
        "check", help="decode every file of an image manifest; report stats and bad files"
    )
    chk.add_argument("manifest")
    chk.add_argument("--json", action="store_true", help="one JSON object per sample on stdout")
    chk.add_argument("--sample", type=int, default=None, help="check N samples (stable choice)")
    chk.add_argument("--workers", type=int, default=1, help="local decode processes")
    chk.add_argument("--address", default=None, help="run on this Ray cluster (Ray Data)")
    chk.set_defaults(func=cmd_check)

    pk = data.add_parser("pack", help="decode, normalise and crop once into Parquet shards")
    pk.add_argument("manifest")
    pk.add_argument("--out", required=True, help="shard folder")
    pk.add_argument("--crop", type=int, default=256)
    pk.add_argument("--crops-per-site", type=int, default=4)
    pk.add_argument("--dtype", choices=["uint16", "float16"], default="uint16")
    pk.add_argument(
        "--normalise", choices=["percentile", "plate_controls", "none"], default="percentile"
    )
    pk.add_argument("--downsample", type=int, default=1)
    pk.add_argument("--illumination", action="store_true", help="divide by illum_<Dye>")
    pk.add_argument("--seed", type=int, default=0, help="seed of the random crops")
    pk.add_argument("--shard-mb", type=float, default=128.0, help="target shard size (MiB)")
    pk.add_argument("--workers", type=int, default=1, help="local decode processes")
    pk.set_defaults(func=cmd_pack)

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
    p_ev = sub.add_parser(
        "evaluate",
        help="recompute or add evaluation metrics of finished trials from their checkpoints",
    )
    p_ev.add_argument("study", help="study YAML the trials ran with")
    p_ev.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_ev.add_argument(
        "--run", action="append", help="MLflow run id of a trial (repeatable; default: all)"
    )
    p_ev.add_argument(
        "--task", action="append", help="evaluation task (repeatable; default: the study's eval)"
    )
    p_ev.add_argument("--actors", type=int, default=1, help="embedding actors (Ray Data pool)")
    ray_options(p_ev)
    p_ev.set_defaults(func=cmd_evaluate)

    p_vis = sub.add_parser(
        "visualize",
        help="MACO feature visualisations of a finished trial's class logits (PNGs, logged to "
        "its MLflow run; `study report` shows them)",
    )
    p_vis.add_argument("study", help="study YAML the trial ran with")
    p_vis.add_argument("--run", required=True, metavar="RUN_ID", help="MLflow run id of the trial")
    p_vis.add_argument(
        "--target",
        action="extend",
        nargs="+",
        metavar="CLASS",
        help="class label or index of the classifier head (repeatable; default: the first 4)",
    )
    # None: MacoConfig's published defaults (1000 steps, 256 px, 6 crops, NAdam lr 1.0, seed 0)
    p_vis.add_argument(
        "--steps", type=int, default=None, metavar="N", help="optimisation steps (1000)"
    )
    p_vis.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="S",
        help="side of the optimised image in px (256)",
    )
    p_vis.add_argument(
        "--crops", type=int, default=None, metavar="K", help="random crops per step (6)"
    )
    p_vis.add_argument(
        "--lr", type=float, default=None, metavar="X", help="NAdam learning rate (1.0)"
    )
    p_vis.add_argument("--seed", type=int, default=None, help="seed of phase, crops, noise (0)")
    p_vis.add_argument(
        "--images",
        type=int,
        default=64,
        metavar="M",
        help="manifest images the magnitude spectrum is averaged over (default 64)",
    )
    p_vis.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if present"
    )
    p_vis.add_argument("--out", default=None, help="output folder (default: bioscale-out/<name>)")
    p_vis.set_defaults(func=cmd_visualize)

    def scaling_options(p: argparse.ArgumentParser, *, axis_default: str | None = "D") -> None:
        p.add_argument("--experiment", default=None, help="read an MLflow experiment's trials")
        p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: env)")
        p.add_argument("--law", default="power", help="power | pure_power | chinchilla | ...")
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
            help="seeds: resample seeds within each scale (residuals where one run); cases: "
            "resample runs (default: %(default)s)",
        )
        p.add_argument("--holdout", type=int, default=1, help="largest scales the backtest holds")
        p.add_argument("--plateau-k", type=int, default=2, help="scales without gain = plateau")

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
    p_fc.add_argument("--target", type=float, required=True, help="metric value to reach")
    scaling_options(p_fc)
    p_fc.add_argument("--along", default=None, help="axis that grows (default: the last)")
    p_fc.add_argument("--at", action="append", help="other axes fixed, e.g. N=1e8")
    p_fc.add_argument("--json", default=None, help="write the forecast JSON here")
    p_fc.set_defaults(func=cmd_forecast)
    p_sr = sub.add_parser("report", help="HTML scaling report of a study or a table")
    p_sr.add_argument("study_or_table", nargs="?", help="study YAML, or CSV/Parquet table")
    p_sr.add_argument("--out", required=True, help="output folder")
    p_sr.add_argument("--metric", default=None, help="metric (a study's default: MoA top-1)")
    p_sr.add_argument("--target", type=float, default=None, help="metric value to forecast")
    p_sr.add_argument("--axis", action="append", help="curve family, repeatable (default: D)")
    scaling_options(p_sr, axis_default=None)
    p_sr.set_defaults(func=cmd_scaling_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BioscaleError as err:
        code = getattr(err, "exit_code", 2)  # 130: interrupted (StudyInterrupted)
        print(f"bioscale: {'error: ' if code == 2 else ''}{err}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(
            "bioscale: interrupted; nothing it was doing is complete. Finished trials are in "
            "MLflow and are skipped on re-run; `bioscale study resume` continues a study.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
