"""``bioscale data``: synthetic datasets, importers, manifest checks and packing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def add_commands(sub) -> None:
    """``data synth``, ``data import``, ``data check``, ``data pack``."""

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
