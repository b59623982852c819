"""What a study costs over the for-loop script a scientist would otherwise write.

    python benchmarks/study_overhead.py [--repeats 2] [--epochs 10] [--json]

The same trials (a small profile ladder on a synthetic screen: rungs × diets × objectives, the
same epochs and evaluation suite) run

(a) bare: one Python process, data read once into memory, the library's own plan, loop
    (``bioscale.train.loop.run`` on a ``LocalContext``) and final evaluation
    (``bioscale.eval.final.final_metrics``) called one trial after another — the honest baseline;
(b) bioscale: ``bioscale study run`` of the same study, one trial at a time (so both are
    sequential), from a fresh process: Ray start-up, Ray Tune, Ray Data, MLflow included.

Runs are interleaved (a b a b …) so a busy machine slows both alike; the report gives the median
wall-time ratio (b)/(a) with its min–max, and, from the MLflow runs of (b), where a trial's time
goes: training loop, evaluation and the rest (its fixed cost: start-up, data, tracking).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STUDY = {
    "name": "overhead",
    "data": {
        "synthetic": {
            "seed": 0,
            "n_moa": 12,
            "compounds_per_moa": 4,
            "n_extra": 48,
            "plates_per_batch": 2,
        }
    },
    "grids": [
        {
            "rung": ["mlp:w64-l1", "mlp:w256-l3"],
            "diet": [{"replicates": 0.25, "extra": "all"}, {"replicates": 1.0, "extra": "all"}],
            "objective": ["supervised", "ibp"],
        }
    ],
    "seeds": [0],
    "train": {"budget": {"epochs": 10}, "batch_size": 128},
    "resources": {"max_concurrent_trials": 1, "cpus_per_worker": 1},
    "tracking": {"uri": None},
}


def bare(spec_path: Path, out: Path) -> tuple[float, int]:
    """(a): wall seconds of planning and running every trial in this process."""
    import functools

    import numpy as np

    from bioscale.data import manifest as mf
    from bioscale.eval.final import final_metrics
    from bioscale.study.plan import plan, trial_data
    from bioscale.study.runner import ensure_manifest
    from bioscale.study.spec import StudySpec
    from bioscale.train import loop
    from bioscale.train.context import LocalContext

    t0 = time.perf_counter()
    spec = StudySpec.load(spec_path)
    manifest = ensure_manifest(spec, out, progress=lambda m: None)
    study_plan = plan(spec, manifest)
    ids, x = mf.read_features(manifest)
    row_of = {s: i for i, s in enumerate(ids)}
    index = study_plan.manifest.index
    order = np.array([row_of[s] for s in index.sample_id])  # index row → feature row

    def columns(targets) -> dict[str, np.ndarray]:
        cols = {k: np.asarray(v) for k, v in targets.columns.items()}
        return {"x": x[order[targets.rows]], **cols}

    for trial in study_plan.trials:
        data, _ = trial_data(index, trial.point)
        ctx = LocalContext(
            train=columns(data.train),
            evals={"val": columns(data.val), "probe": columns(data.probe)},
            batch_size=trial.loop.batch_size,
            seed=trial.loop.seed,
        )
        loop.run(trial.loop, ctx, final=functools.partial(final_metrics, final=trial.final))
    return time.perf_counter() - t0, len(study_plan.trials)


def bioscale_run(spec_path: Path, out: Path) -> tuple[float, dict[str, float]]:
    """(b): wall seconds of ``bioscale study run`` in a fresh process, and the mean per-trial
    split of its time from its MLflow runs."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bioscale.cli", "study", "run", str(spec_path), "--out", str(out)]
    proc = subprocess.run([*cmd, "--no-report"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"study run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(STUDY["name"])
    runs = client.search_runs([exp.experiment_id], "tags.`bioscale.kind` = 'trial'")
    per = {"trial": [], "training loop": [], "evaluation": [], "rest": []}
    for r in runs:
        m = r.data.metrics
        trial, train, ev = m["perf/trial_seconds"], m["compute/seconds"], m["perf/eval_seconds"]
        per["trial"].append(trial)
        per["training loop"].append(train)
        per["evaluation"].append(ev)
        per["rest"].append(trial - train - ev)
    split = {k: statistics.mean(v) for k, v in per.items()}
    split["outside trials"] = wall - sum(per["trial"])
    return wall, split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    STUDY["train"]["budget"]["epochs"] = args.epochs
    with tempfile.TemporaryDirectory(prefix="bioscale-overhead-") as tmp:
        root = Path(tmp)
        spec_path = root / "study.yaml"
        spec_path.write_text(yaml.safe_dump(STUDY))
        ratios, rows = [], []
        for i in range(args.repeats):  # a b a b …: a busy machine slows both alike
            a, n = bare(spec_path, root / f"a{i}")
            b, split = bioscale_run(spec_path, root / f"b{i}")
            ratios.append(b / a)
            rows.append({"bare_s": a, "bioscale_s": b, "trials": n, "split": split})
            print(
                f"repeat {i + 1}: bare {a:.1f} s, bioscale {b:.1f} s ({n} trials)", file=sys.stderr
            )
    result = {
        "trials": rows[0]["trials"],
        "epochs": args.epochs,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "bare_s": [r["bare_s"] for r in rows],
        "bioscale_s": [r["bioscale_s"] for r in rows],
        "per_trial_s": {
            k: statistics.median(r["split"][k] for r in rows) for k in rows[0]["split"]
        },
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"{result['trials']} trials × {args.epochs} epochs, one at a time: (b)/(a) = "
        f"{result['ratio_median']:.2f} (min {result['ratio_min']:.2f}, max "
        f"{result['ratio_max']:.2f}; {args.repeats} interleaved repeats)"
    )
    split = result["per_trial_s"]
    print(
        f"per trial (b): {split['trial']:.1f} s = training loop {split['training loop']:.1f} s + "
        f"evaluation {split['evaluation']:.1f} s + fixed cost {split['rest']:.1f} s "
        f"(start-up, data, tracking); outside trials {split['outside trials']:.1f} s (Ray start, "
        "planning, MLflow)"
    )


if __name__ == "__main__":
    main()
