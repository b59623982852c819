"""Profile import at scale: ``bioscale data import profiles`` vs pyarrow reading the same files.

Generates a JUMP-like table set, ``profiles/<source>/<batch>/<plate>/<plate>.parquet`` (or
``.csv.gz``): 384 wells a plate, 20 plates a batch, 5 batches a source, columns
``Metadata_Source, Metadata_Plate, Metadata_Well, Metadata_JCP2022`` and ``F`` float32 features
(``Cells_``/``Cytoplasm_``/``Nuclei_``), then times, each in a fresh process so that its peak RSS
is its own (``os.wait4``):

(a) ``bioscale data import profiles profiles/ --out manifest.parquet`` (a metadata pass, then the
    features streamed into the manifest's row groups): wall seconds, wells/s, peak RSS;
(b) the baseline: pyarrow reading every column of every table, one after another, discarding the
    result (``pq.ParquetFile(path).read()``, the fastest whole-file read: ``pq.read_table`` goes
    through the dataset layer and is ~2.5× slower on 4,700-column files; ``pyarrow.csv.read_csv``):
    wall seconds, peak RSS.

Both run with the page cache warm (the files are read once before either), alternately when
``--repeats`` is above 1 (the best run of each is kept). Prints (a)/(b) in wall and in CPU seconds
(user + system: the stable number on a shared machine); the goals are peak RSS under 2 GiB at any
table size and (a) within 2× of (b).

    python benchmarks/import_profiles.py [--wells 200000] [--features 4700]
        [--format parquet|csv] [--repeats 1] [--dir TMP] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

WELLS_PER_PLATE = 384
PLATES_PER_BATCH = 20
BATCHES_PER_SOURCE = 5
COMPARTMENTS = ("Cells", "Cytoplasm", "Nuclei")
RSS_GOAL_GIB = 2.0
RATIO_GOAL = 2.0
SUFFIX = {"parquet": ".parquet", "csv": ".csv.gz"}
METADATA = ("Metadata_Source", "Metadata_Plate", "Metadata_Well", "Metadata_JCP2022")

BASELINE = """
import sys, time
from pathlib import Path
fmt, root = sys.argv[1], Path(sys.argv[2])
if fmt == "parquet":
    import pyarrow.parquet as pq
    read = lambda path: pq.ParquetFile(path).read()
else:
    import pyarrow.csv as pacsv
    read = pacsv.read_csv
for path in sorted(root.rglob("*" + {"parquet": ".parquet", "csv": ".csv.gz"}[fmt])):
    read(path)
"""


def feature_names(n: int) -> list[str]:
    """``n`` CellProfiler-like names, spread over the three compartments."""
    return [f"{COMPARTMENTS[i % 3]}_Feature_{i:05d}" for i in range(n)]


def generate(root: Path, wells: int, features: int, fmt: str, seed: int = 0) -> int:
    """Write ``wells`` wells as JUMP-layout plate tables under ``root``; the bytes written."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = feature_names(features)
    rows = "ABCDEFGHIJKLMNOP"
    well_names = [f"{rows[i // 24]}{i % 24 + 1:02d}" for i in range(WELLS_PER_PLATE)]
    n_compounds = max(1, wells // 4)
    total, plate, done = 0, 0, 0
    while done < wells:
        n = min(WELLS_PER_PLATE, wells - done)
        batch_i = plate // PLATES_PER_BATCH
        source = f"source_{batch_i // BATCHES_PER_SOURCE + 1}"
        batch = f"batch_{batch_i:03d}"
        name = f"PLATE{plate:05d}"
        folder = root / source / batch / name
        folder.mkdir(parents=True)
        pids = rng.integers(0, n_compounds, n)
        x = rng.standard_normal((features, n), dtype=np.float32)  # (F, n): a row per column
        table = pa.Table.from_arrays(
            [
                pa.array([source] * n),
                pa.array([name] * n),
                pa.array(well_names[:n]),
                pa.array([f"JCP2022_{p:06d}" for p in pids]),
                *(pa.array(col) for col in x),
            ],
            names=[*METADATA, *names],
        )
        path = folder / f"{name}{SUFFIX[fmt]}"
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            with pa.CompressedOutputStream(str(path), "gzip") as out:
                pacsv.write_csv(table, out)
        total += path.stat().st_size
        done += n
        plate += 1
    return total


def measure(cmd: list[str], log: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (GiB) of ``cmd`` in a fresh process (its own
    ``rusage``, so ``ru_maxrss`` is that process's peak)."""
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"{' '.join(cmd[:6])}… exited {proc.returncode}:\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20  # Linux: KiB


def warm(root: Path) -> None:
    """Read every table once so both paths start with the page cache warm."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def run(args: argparse.Namespace, work: Path) -> dict:
    root = work / "profiles"
    t0 = time.perf_counter()
    nbytes = generate(root, args.wells, args.features, args.format)
    gen_s = time.perf_counter() - t0
    n_tables = sum(1 for _ in root.rglob(f"*{SUFFIX[args.format]}"))
    warm(root)
    out = work / "manifest.parquet"
    imp = [sys.executable, "-m", "bioscale.cli", "data", "import", "profiles", str(root)]
    imp += ["--out", str(out)]
    base = [sys.executable, "-c", BASELINE, args.format, str(root)]
    imports, baselines = [], []
    for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both
        baselines.append(measure(base, work / "baseline.log"))
        imports.append(measure(imp, work / "import.log"))
        manifest_bytes = out.stat().st_size
        out.unlink()
    import_s, import_cpu = min(s for s, _, _ in imports), min(c for _, c, _ in imports)
    baseline_s, baseline_cpu = min(s for s, _, _ in baselines), min(c for _, c, _ in baselines)
    import_rss = max(r for _, _, r in imports)
    return {
        "wells": args.wells,
        "features": args.features,
        "format": args.format,
        "tables": n_tables,
        "table_gib": nbytes / 2**30,
        "manifest_gib": manifest_bytes / 2**30,
        "generate_s": gen_s,
        "repeats": args.repeats,
        "import_s": import_s,
        "wells_per_s": args.wells / import_s,
        "import_cpu_s": import_cpu,
        "import_rss_gib": import_rss,
        "baseline_s": baseline_s,
        "baseline_cpu_s": baseline_cpu,
        "baseline_rss_gib": max(r for _, _, r in baselines),
        "ratio": import_s / baseline_s,
        "cpu_ratio": import_cpu / baseline_cpu,
        "rss_goal_met": import_rss < RSS_GOAL_GIB,
        "ratio_goal_met": import_s / baseline_s <= RATIO_GOAL,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wells", type=int, default=200_000, help="wells in all (384 a plate)")
    parser.add_argument("--features", type=int, default=4_700, help="float features per well")
    parser.add_argument("--format", choices=sorted(SUFFIX), default="parquet")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each; best kept")
    parser.add_argument("--dir", default=None, help="where to generate (a temporary folder)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    if args.wells < 1 or args.features < 1 or args.repeats < 1:
        parser.error("--wells, --features and --repeats must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="bioscale-import-bench-", dir=args.dir))
    try:
        r = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(r))
        return
    print(
        f"{r['wells']:,} wells × {r['features']:,} features, {r['format']}: {r['tables']} tables, "
        f"{r['table_gib']:.2f} GiB (generated in {r['generate_s']:.0f} s); manifest "
        f"{r['manifest_gib']:.2f} GiB; best of {r['repeats']}, page cache warm"
    )
    print(f"{'path':<36} {'wall s':>8} {'CPU s':>8} {'wells/s':>10} {'peak RSS':>12}")
    print(
        f"{'(a) bioscale data import profiles':<36} {r['import_s']:>8.1f} "
        f"{r['import_cpu_s']:>8.1f} {r['wells_per_s']:>10,.0f} {r['import_rss_gib']:>8.2f} GiB"
    )
    print(
        f"{'(b) pyarrow reading every table':<36} {r['baseline_s']:>8.1f} "
        f"{r['baseline_cpu_s']:>8.1f} {r['wells'] / r['baseline_s']:>10,.0f} "
        f"{r['baseline_rss_gib']:>8.2f} GiB"
    )
    print(
        f"(a)/(b) = {r['ratio']:.2f}× wall, {r['cpu_ratio']:.2f}× CPU (goal ≤ {RATIO_GOAL:g}×: "
        f"{'met' if r['ratio_goal_met'] else 'MISSED'}); peak RSS goal < {RSS_GOAL_GIB:g} GiB: "
        f"{'met' if r['rss_goal_met'] else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
