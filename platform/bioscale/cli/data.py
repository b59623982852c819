"""``bioscale data``: synthetic datasets, importers, manifest checks and packing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def synth_parser(name: str, kind) -> argparse.ArgumentParser:
    """``bioscale data synth <name>``'s options: ``--out`` and one flag per field of the kind's
    synthetic config (``--sites-per-well 2``; booleans as ``--expert-maps/--no-expert-maps``)."""
    import dataclasses

    config = kind.synthetic.config_class()
    parser = argparse.ArgumentParser(
        prog=f"bioscale data synth {name}",
        description=f"{kind.synthetic.help} ({config.__module__}.{config.__name__}).",
    )
    parser.add_argument("--out", required=True, help="output folder")
    for f in dataclasses.fields(config):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default
            )
        elif isinstance(default, int | float | str):
            parser.add_argument(
                flag, dest=f.name, type=type(default), default=default, help=f"default {default}"
            )
    return parser


def cmd_synth(args: argparse.Namespace) -> int:
    from bioscale.data import kinds

    kind = kinds.synthetic_kinds()[args.synth_kind]
    options = vars(synth_parser(args.synth_kind, kind).parse_args(args.options))
    out = options.pop("out")
    result = kind.synthesize(kind.synthetic.config_class()(**options), out)
    print(result.summary)
    print(f"manifest: {result.manifest}")
    return 0


def cmd_import_natural(args: argparse.Namespace) -> int:
    from bioscale.data.importers import ImportConfig, import_manifest

    cfg = ImportConfig(
        input=args.input,
        out=args.out,
        novel_fraction=args.novel_fraction,
        images=args.images,
        sigma_px=args.sigma_px,
    )
    print(f"wrote {import_manifest(f'natural-{args.layout}', cfg)}")
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


def cmd_import_profiles(args: argparse.Namespace) -> int:
    from bioscale.data.importers.profiles import ProfileImportConfig, import_profiles
    from bioscale.errors import ConfigError

    on: list[tuple[str, str]] = []
    for pair in (args.on or "").split(",") if args.on else []:
        left, eq, right = pair.partition("=")
        if not eq or not left or not right:
            raise ConfigError(f"--on {args.on!r}: give LEFT=RIGHT pairs, e.g. Plate=Plate_DAPI")
        on.append((left, right))
    cfg = ProfileImportConfig(
        tables=tuple(args.tables),
        out=args.out,
        metadata=args.metadata,
        annotations=args.annotations,
        join=args.join,
        on=tuple(on),
        features=tuple(args.features.split(",")) if args.features else None,
        source=args.source,
        batch_pattern=args.batch_pattern,
        novel_fraction=args.novel_fraction,
    )
    summary = import_profiles(
        cfg, progress=lambda m: print(m, file=sys.stderr, flush=True), address=args.address
    )
    groups = ", ".join(f"{g} {n}" for g, n in sorted(summary.groups.items()))
    if summary.excluded_columns:
        shown = ", ".join(summary.excluded_columns[:5])
        print(
            f"bioscale: left out {len(summary.excluded_columns)} non-numeric column(s) that are "
            f"not Metadata_ columns: {shown}",
            file=sys.stderr,
        )
    print(
        f"wrote {summary.path}: {summary.n_wells:,} wells × {summary.n_features:,} features from "
        f"{summary.n_tables} table(s); {summary.n_annotated:,} with a perturbation; groups: {groups}"
    )
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    import json

    from bioscale.eval.baseline import raw_feature_metrics

    splits, probe, explicit, preprocess = None, None, False, None
    if args.study:
        from bioscale.study.spec import StudySpec

        spec = StudySpec.load(args.study)
        splits, probe, explicit = spec.data.splits, spec.probe, spec.eval is not None
        preprocess = spec.data.preprocess  # the features as the study's trials see them
    if args.eval:
        from dataclasses import replace

        from bioscale.eval.config import ProbeConfig

        probe = replace(probe or ProbeConfig(), tasks=tuple(args.eval.split(",")))
        explicit = True
    result = raw_feature_metrics(
        args.manifest, splits=splits, probe=probe, explicit=explicit, preprocess=preprocess
    )
    for reason in result.dropped:
        print(f"bioscale: task not applicable, skipped: {reason}", file=sys.stderr)
    print(
        f"raw features of {result.manifest} ({result.n_features:,} features, "
        f"{result.n_wells:,} probe and control wells):"
    )
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:<44} {value:.4g}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result.as_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bioscale.data import manifest as mf
    from bioscale.data.preprocess import PreprocessConfig, fit_preprocess, write_preprocessed
    from bioscale.data.splits import SampleIndex, SplitConfig

    cfg, splits = PreprocessConfig(), SplitConfig()
    if args.study:
        from bioscale.study.spec import StudySpec

        spec = StudySpec.load(args.study)
        cfg, splits = spec.data.preprocess, spec.data.splits
    flags = {
        "normalize": args.normalize,
        "feature_select": tuple(args.feature_select.split(",")) if args.feature_select else None,
        "clip": args.clip,
        "pca_variance": args.pca_variance,
    }
    cfg = replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    if not cfg.enabled:
        from bioscale.errors import ConfigError

        raise ConfigError(
            "data preprocess: nothing to do; set --normalize, --feature-select, --clip or "
            "--pca-variance, or --study with a data.preprocess section"
        )
    index = SampleIndex.from_table(mf.read_metadata(args.manifest), splits)
    print("fitting on the training-pool wells ...", file=sys.stderr, flush=True)
    fitted = fit_preprocess(args.manifest, index, cfg)
    out = write_preprocessed(args.manifest, args.out, fitted)
    for note in fitted.notes:
        print(f"  {note}")
    print(
        f"wrote {out}: {fitted.n_out} features per well (fitted on {fitted.n_fit_wells} "
        f"training-pool wells; transform sha {fitted.sha()[:12]}, saved beside it)"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import json
    import time

    from bioscale.data.check import (
        check_manifest,
        check_profiles,
        format_profile_report,
        format_report,
        is_profile_manifest,
        profile_problems,
    )

    last = [0.0]

    def progress(done: int, total: int, bad: int) -> None:
        now = time.monotonic()
        if total >= 50 and (now - last[0] > 1.0 or done == total):
            last[0] = now
            print(f"checked {done}/{total} samples, {bad} bad", file=sys.stderr, flush=True)

    if is_profile_manifest(args.manifest):
        if args.sample is not None or args.workers != 1 or args.address is not None:
            print(
                "bioscale: note: --sample, --workers and --address apply to image manifests; "
                "a profile manifest is streamed whole in this process",
                file=sys.stderr,
            )
        prof = check_profiles(args.manifest, progress=progress)
        for line in profile_problems(prof):
            print(f"bioscale: {line}", file=sys.stderr)
        if args.json:
            json.dump(prof.as_dict(), sys.stdout)
            sys.stdout.write("\n")
        else:
            print(format_profile_report(prof))
        return 0 if prof.ok else 1
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
        dyes=args.dyes.split(",") if args.dyes else None,
        crop=args.crop,
        crops_per_site=args.crops_per_site,
        crop_mode=args.crop_mode,
        dtype=args.dtype,
        normalise=args.normalise,
        downsample=args.downsample,
        illumination=args.illumination,
        bad_samples=args.bad_samples,
        max_skipped=args.max_skipped,
        seed=args.seed,
        shard_mb=args.shard_mb,
        workers=args.workers,
    )

    def progress(done: int, total: int) -> None:  # about every tenth of the sites
        if done == total or (done * 10) // total != ((done - 1) * 10) // total:
            print(f"  packed {done}/{total} sites", file=sys.stderr, flush=True)

    result = pack_manifest(args.manifest, args.out, cfg, progress=progress)
    for sid, error in result.skipped.items():
        print(f"bioscale: skipped unreadable site {sid}: {error}", file=sys.stderr)
    skipped = f", {len(result.skipped)} unreadable site(s) skipped" if result.skipped else ""
    print(
        f"packed {result.n_sites} sites into {result.n_crops} crops of {result.crop_shape} "
        f"{cfg.dtype} in {result.n_shards} shard(s) ({result.seconds:.1f} s{skipped}); "
        f"packed manifest {result.manifest}"
    )
    return 0


def add_commands(sub) -> None:
    """``data synth``, ``data import``, ``data check``, ``data pack``."""
    from bioscale.data.image_config import BAD_SAMPLE_POLICIES, CROP_MODES, NORMALISE_KINDS

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_cmd", required=True)
    from bioscale.data import kinds

    generators = kinds.synthetic_kinds()
    synth = data.add_parser(
        "synth",
        help="generate a synthetic dataset of a data kind",
        description="Generate a synthetic dataset: "
        + "; ".join(f"{n}: {k.synthetic.help}" for n, k in generators.items() if n == k.name)
        + ". `bioscale data synth KIND --help` lists KIND's options.",
        add_help=True,
    )
    synth.add_argument("synth_kind", metavar="KIND", choices=list(generators))
    synth.add_argument("options", nargs=argparse.REMAINDER, help="--out DIR and KIND's options")
    synth.set_defaults(func=cmd_synth)

    imp = data.add_parser("import", help="import datasets into a manifest").add_subparsers(
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

    pr = imp.add_parser(
        "profiles",
        help="well-level profile tables (CellProfiler/pycytominer/JUMP CSV, CSV.gz, Parquet)",
        description="Import well-level profile tables into a profile manifest "
        "(bioscale.data.importers.profiles explains the column mapping and the defaults).",
    )
    pr.add_argument("tables", nargs="+", help="tables, or folders searched for them")
    pr.add_argument("--out", required=True, help="manifest to write (.parquet)")
    pr.add_argument("--metadata", default=None, help="folder of JUMP tables and annotations")
    pr.add_argument("--annotations", default=None, help="MoA/target by compound (and dose)")
    pr.add_argument("--join", default=None, help="a plate map to join (CSV, CSV.gz, Parquet)")
    pr.add_argument(
        "--on",
        default=None,
        help="join columns LEFT=RIGHT[,LEFT=RIGHT] (LEFT: the profile table's, e.g. Plate)",
    )
    pr.add_argument(
        "--features", default=None, help="feature column prefixes, e.g. Cells_,Cytoplasm_,Nuclei_"
    )
    pr.add_argument("--source", default=None, help="source name when the tables carry none")
    pr.add_argument(
        "--batch-pattern",
        default=None,
        help="regex whose first group is the batch in the plate name, e.g. '^(Week\\d+)_'",
    )
    pr.add_argument("--novel-fraction", type=float, default=0.25)
    pr.add_argument(
        "--address",
        default=None,
        help="write the features with Ray Data on this cluster (tables and --out on storage "
        "every node sees)",
    )
    pr.set_defaults(func=cmd_import_profiles)

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
        "check",
        help="decode every file of an image manifest (stats and bad files), or count the "
        "non-finite and constant features of a profile manifest",
    )
    chk.add_argument("manifest")
    chk.add_argument(
        "--json",
        action="store_true",
        help="JSON on stdout: one object per sample (images), one report (profiles)",
    )
    chk.add_argument("--sample", type=int, default=None, help="check N samples (stable choice)")
    chk.add_argument("--workers", type=int, default=1, help="local decode processes")
    chk.add_argument("--address", default=None, help="run on this Ray cluster (Ray Data)")
    chk.set_defaults(func=cmd_check)

    pp = data.add_parser(
        "preprocess",
        help="normalise, select, clip and whiten a profile manifest's features into a new one",
    )
    pp.add_argument("manifest", help="a profile manifest")
    pp.add_argument("--out", required=True, help="the preprocessed manifest to write")
    pp.add_argument("--study", default=None, help="use this study's data.preprocess and splits")
    pp.add_argument("--normalize", choices=["none", "mad_robustize", "standardize"], default=None)
    pp.add_argument(
        "--feature-select",
        default=None,
        help="comma-separated: variance_threshold,correlation_threshold,drop_na_columns,blocklist",
    )
    pp.add_argument("--clip", type=float, default=None, help="clip to ±CLIP (Pheno-CA: 30)")
    pp.add_argument(
        "--pca-variance", type=float, default=None, help="PCA-whiten keeping this variance"
    )
    pp.set_defaults(func=cmd_preprocess)

    bl = data.add_parser(
        "baseline",
        help="the evaluation suite on a profile manifest's raw features (no training, no Ray)",
    )
    bl.add_argument("manifest", help="a profile manifest")
    bl.add_argument(
        "--study",
        default=None,
        help="take splits, data.preprocess, probe settings and eval: from this study",
    )
    bl.add_argument("--eval", default=None, help="comma-separated tasks (default: every task)")
    bl.add_argument("--json", default=None, help='write {"metrics": {...}} here')
    bl.set_defaults(func=cmd_baseline)

    pk = data.add_parser("pack", help="decode, normalise and crop once into Parquet shards")
    pk.add_argument("manifest")
    pk.add_argument("--out", required=True, help="shard folder")
    pk.add_argument("--dyes", help="comma-separated channel order (default: every dye)")
    pk.add_argument("--crop", type=int, default=256, help="pixels, after downsampling")
    pk.add_argument("--crops-per-site", type=int, default=4)
    pk.add_argument("--crop-mode", choices=list(CROP_MODES), default="random")
    pk.add_argument("--dtype", choices=["uint16", "float16"], default="uint16")
    pk.add_argument("--normalise", choices=list(NORMALISE_KINDS), default="percentile")
    pk.add_argument("--downsample", type=int, default=1)
    pk.add_argument("--illumination", action="store_true", help="divide by illum_<Dye>")
    pk.add_argument(
        "--bad-samples",
        choices=list(BAD_SAMPLE_POLICIES),
        default="error",
        help="an unreadable site: stop (error) or leave it out and list it (skip)",
    )
    pk.add_argument(
        "--max-skipped", type=float, default=0.01, help="fraction of sites skip may leave out"
    )
    pk.add_argument("--seed", type=int, default=0, help="seed of the random crops")
    pk.add_argument("--shard-mb", type=float, default=128.0, help="target shard size (MiB)")
    pk.add_argument("--workers", type=int, default=1, help="local decode processes")
    pk.set_defaults(func=cmd_pack)
