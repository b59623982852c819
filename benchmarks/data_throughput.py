"""Image data throughput: bare TIFF decoding vs the bioscale Ray Data decode vs packed shards.

On the same real-format sites (5 dyes, 1080×1080 uint16, LZW — rendered by the synthetic
generator at that size, or the real site with ``--real``):

(a) a bare ``tifffile.imread`` loop over every file in one process;
(b) bioscale's training input (``read_sites`` → ``decoded_sites``: row selection, decode,
    percentile normalisation, random 256-pixel crops in Ray Data tasks) with 1 and 2 decode
    tasks, steady state (after the first site) and end to end (with Ray Data's start-up);
(c) streaming the packed shards (``bioscale data pack``) in one process.

Prints sites/s, (b) per worker / (a), the speed-up of 2 workers over 1, and (c) / (a) per core.
Run: ``.venv/bin/python benchmarks/data_throughput.py [--json] [--sites 24]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

DYES = ["DNA", "ER", "RNA", "AGP", "Mito"]


def make_sites(out: Path, n_sites: int, real: Path | None) -> Path:
    """A manifest of ``n_sites`` 1080×1080 5-dye LZW sites (synthetic, or copies of the real one)."""
    from bioscale.data.importers import ImportConfig, import_dataset
    from bioscale.data.synth_images import SynthImagesConfig, generate_images

    if real is None:
        wells = max(1, -(-n_sites // 4))  # 2 plates × 2 sites per well
        cfg = SynthImagesConfig(
            seed=0,
            size=1080,
            cell_radius=36.0,
            n_moa=1,
            compounds_per_moa=wells,
            n_unlabelled_moa=0,
            n_extra=0,
            controls_per_plate=0,
            sites_per_well=2,
        )
        return generate_images(cfg, out).manifest
    site = real / "cellpainting" / "BR00143976_C03_site3"
    rows = [
        "FileName_OrigDNA,FileName_OrigER,FileName_OrigRNA,FileName_OrigAGP,FileName_OrigMito,"
        "Metadata_Plate,Metadata_Well,Metadata_Site"
    ]
    for i in range(n_sites):  # distinct files, so no page cache sharing between "sites"
        for d, ch in zip(DYES, (5, 2, 6, 3, 4), strict=True):
            shutil.copy(
                site / "images" / f"r03c03f03p01-ch{ch}sk1fk1fl1.tiff", out / f"s{i}_{d}.tiff"
            )
        rows.append(",".join(f"s{i}_{d}.tiff" for d in DYES) + f",BR00143976,C03,{i + 1}")
    (out / "load.csv").write_text("\n".join(rows) + "\n")
    return import_dataset(
        "cellprofiler",
        ImportConfig(input=str(out / "load.csv"), root=str(out), out=str(out / "manifest.parquet")),
    ).path


def bare_loop(manifest: Path) -> float:
    """(a) sites/s of ``tifffile.imread`` over every file, one process."""
    import tifffile

    rows = pq.read_table(manifest).to_pylist()
    t0 = time.perf_counter()
    for r in rows:
        for d in DYES:
            tifffile.imread(r[f"path_{d}"])
    return len(rows) / (time.perf_counter() - t0)


def ray_decode(manifest: Path, workers: int, crop: int, k: int) -> tuple[float, float]:
    """(b) sites/s of bioscale's training input (``read_sites`` → ``decoded_sites``: selection,
    decode, percentile normalisation, random crops) with ``workers`` concurrent decode tasks:
    (end to end including Ray Data's planning and start-up, steady state after the first site)."""
    import numpy as np

    from bioscale.data.images import ImageConfig
    from bioscale.data.pipeline import decoded_sites, read_sites

    ids = np.array(pq.read_table(manifest, columns=["sample_id"]).column(0).to_pylist())
    t0 = time.perf_counter()
    ds = decoded_sites(
        read_sites(manifest, DYES, cpus_per_task=0.1),
        ids,
        {"y": np.zeros(len(ids), dtype=np.int64)},
        image=ImageConfig(crop=crop, crops_per_site=k),
        dyes=DYES,
        training=True,
        seed=0,
        batch_size=2,
        cpus_per_task=0.5,
        select_cpus=0.1,
        decode_tasks=workers,
    )
    crops, first = 0, None
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if first is None:
            first, first_sites = time.perf_counter(), len(batch["x"]) / k
        crops += len(batch["x"])
    end = time.perf_counter()
    assert crops == len(ids) * k, (crops, len(ids) * k)
    return len(ids) / (end - t0), (len(ids) - first_sites) / (end - first)


def packed_stream(shards: Path, k: int) -> tuple[float, float]:
    """(c) crops/s and site-equivalents/s streaming the shards into float32 batches, one process."""
    from bioscale.data.pack import iter_packed

    t0 = time.perf_counter()
    crops = sum(len(b["x"]) for b in iter_packed(shards, batch_size=64, columns=["sample_id"]))
    seconds = time.perf_counter() - t0
    return crops / seconds, crops / k / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=24)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--crops-per-site", type=int, default=4)
    p.add_argument("--real", action="store_true", help="copies of the real site instead")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray

    from bioscale.data.pack import PackConfig, pack_manifest

    work = Path(tempfile.mkdtemp(prefix="bioscale-bench-"))
    try:
        real = None
        if args.real:
            real = Path(
                os.environ.get(
                    "BIOSCALE_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "data"
                )
            )
        t0 = time.perf_counter()
        manifest = make_sites(work / "sites", args.sites, real) if real is None else None
        if real is not None:
            (work / "sites").mkdir()
            manifest = make_sites(work / "sites", args.sites, real)
        n = pq.read_metadata(manifest).num_rows
        gen_s = time.perf_counter() - t0
        bare_loop(manifest)  # warm the page cache: every variant reads from memory
        a = bare_loop(manifest)
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
        ray_decode(manifest, 1, args.crop, args.crops_per_site)  # warm-up: workers, imports
        b1_total, b1 = ray_decode(manifest, 1, args.crop, args.crops_per_site)
        b2_total, b2 = ray_decode(manifest, 2, args.crop, args.crops_per_site)
        ray.shutdown()
        t0 = time.perf_counter()
        pack_manifest(
            manifest,
            work / "shards",
            PackConfig(crop=args.crop, crops_per_site=args.crops_per_site, workers=2),
        )
        pack_s = time.perf_counter() - t0
        packed_stream(work / "shards", args.crops_per_site)
        c_crops, c_sites = packed_stream(work / "shards", args.crops_per_site)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "sites": n,
        "site_shape": [5, 1080, 1080],
        "source": "real" if args.real else "synthetic",
        "crop": args.crop,
        "crops_per_site": args.crops_per_site,
        "cpu_cores": os.cpu_count(),
        "a_bare_tifffile_sites_per_s": a,
        "b_ray_decode_1_worker_sites_per_s": b1,
        "b_ray_decode_2_workers_sites_per_s": b2,
        "b_ray_decode_1_worker_end_to_end_sites_per_s": b1_total,
        "b_ray_decode_2_workers_end_to_end_sites_per_s": b2_total,
        "c_packed_crops_per_s": c_crops,
        "c_packed_site_equivalents_per_s": c_sites,
        "ratio_b1_per_worker_over_a": b1 / a,
        "speedup_b2_over_b1": b2 / b1,
        "ratio_c_over_a_per_core": c_sites / a,
        "generate_seconds": gen_s,
        "pack_seconds": pack_s,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"{n} sites of 5×1080×1080 uint16 LZW ({result['source']}), {os.cpu_count()} cores")
    print(f"(a) bare tifffile.imread loop, 1 process     {a:8.1f} sites/s")
    print(
        f"(b) Ray Data decode+crop, 1 worker           {b1:8.1f} sites/s   {b1 / a:5.2f}× (a)"
        f"   (end to end {b1_total:.1f} sites/s)"
    )
    print(
        f"(b) Ray Data decode+crop, 2 workers          {b2:8.1f} sites/s   {b2 / b1:5.2f}× 1 worker"
        f"   (end to end {b2_total:.1f} sites/s)"
    )
    print(
        f"(c) packed shards, 1 process                 {c_sites:8.1f} sites/s   {c_sites / a:5.1f}× (a)"
        f"   ({c_crops:.0f} crops/s of 5×{args.crop}×{args.crop})"
    )
    print(f"generating the sites took {gen_s:.0f} s, packing them {pack_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
