"""What bioscale's training path costs over a bare PyTorch loop on the same model, batch and data.

    python benchmarks/train_overhead.py [--model mlp:w1024-l9,mlp:w256-l3] [--epochs 6]
                                        [--batch-size 256] [--precision fp32,bf16] [--json]

(a) bare: the rung's backbone + a linear head, AdamW, every batch read from the manifest into memory
first, no Ray. (b) bioscale: the same model, batch size and number of epochs as a one-trial study
through Ray Tune → Ray Train (1 worker) fed by Ray Data from the same manifest. Both report
samples/s in steady state (epochs after the first); the ratio b/a is the platform's efficiency. The
per-trial fixed overhead (Ray start excluded: trial wall time minus time in the training loop, i.e.
worker start, dataset planning and probing) is reported separately, in seconds. Rungs whose bare
step is under 20 ms report their per-batch overhead in milliseconds instead of a ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def bare_loop(
    rung: str, x: np.ndarray, y: np.ndarray, *, batch_size: int, epochs: int, precision: str
) -> tuple[float, float]:
    """(steady-state samples/s, median step ms) of a plain loop over in-memory tensors."""
    from bioscale.models.ladder import get_rung

    torch.manual_seed(0)
    backbone = get_rung(rung).build((x.shape[1],))
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.embed_dim, int(y.max()) + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    rates, steps = [], []
    for epoch in range(epochs):
        order = torch.randperm(len(xs))
        t_epoch = time.perf_counter()
        for start in range(0, len(xs), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps.append(time.perf_counter() - t0)
        if epoch > 0:
            rates.append(len(xs) / (time.perf_counter() - t_epoch))
    return float(np.median(rates)), 1000 * float(np.median(steps))


def bioscale_trial(
    rung: str,
    manifest: Path,
    out: Path,
    *,
    batch_size: int,
    epochs: int,
    precision: str,
    d_samples: int,
) -> dict[str, float]:
    """Steady-state samples/s and fixed overhead of one trial through the study driver."""
    from mlflow.tracking import MlflowClient

    from bioscale.study.runner import run_study
    from bioscale.study.spec import StudySpec

    spec = StudySpec.from_dict(
        {
            "name": f"overhead-{rung.replace(':', '-')}",
            "data": {"manifest": str(manifest)},
            "grids": [
                {
                    "rung": [rung],
                    "diet": [{"replicates": 1.0, "extra": "all"}],
                    "objective": ["ibp"],
                }
            ],
            "train": {
                "budget": {"epochs": epochs},
                "batch_size": batch_size,
                "lr": {"value": 1e-3},
                "precision": precision,
                "checkpoint_every": 0,
            },
            # the worker gets the CPUs (hence the intra-op threads: Ray sets OMP_NUM_THREADS to
            # an actor's CPUs) the bare loop trains with in this process
            "resources": {"max_concurrent_trials": 1, "cpus_per_worker": torch.get_num_threads()},
        }
    )
    result = run_study(spec, out / rung.replace(":", "-"), progress=lambda m: None)
    client = MlflowClient(result.tracking_uri)
    (run,) = client.search_runs([result.experiment_id], "tags.`bioscale.kind` = 'trial'")
    history = sorted(
        client.get_metric_history(run.info.run_id, "perf/samples_per_s"), key=lambda m: m.step
    )
    steady = [m.value for m in history if m.step > 1]
    metrics = run.data.metrics
    return {
        "samples_per_s": float(np.median(steady)),
        "fixed_overhead_s": metrics["perf/overhead_seconds"],
        "trial_s": metrics["perf/trial_seconds"],
        "d_samples": d_samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rungs", "--model", default="mlp:w1024-l9,mlp:w256-l3", help="rung(s), comma-separated"
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--precision", default="fp32", help="fp32, bf16, or both comma-separated (fp32,bf16)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bioscale.data import manifest as mf
    from bioscale.data.synth import SynthProfilesConfig, generate_profiles
    from bioscale.study.plan import load_index, plan, trial_data
    from bioscale.study.spec import StudySpec

    with tempfile.TemporaryDirectory(prefix="bioscale-overhead-") as tmp:
        tmp = Path(tmp)
        manifest = generate_profiles(SynthProfilesConfig(), tmp / "data")
        rows = []
        for rung, precision in [
            (r, p) for r in args.rungs.split(",") for p in args.precision.split(",")
        ]:
            if precision not in ("fp32", "bf16"):
                parser.error(f"--precision {precision!r}: choose fp32 or bf16")
            # the trial's exact training rows (the IBP diet), so both loops see the same data
            spec = StudySpec.from_dict(
                {
                    "name": "x",
                    "data": {"manifest": str(manifest)},
                    "grids": [{"rung": [rung], "diet": [{"extra": "all"}], "objective": ["ibp"]}],
                }
            )
            study_plan = plan(spec, manifest)
            index = load_index(spec, manifest)
            data, _ = trial_data(index, study_plan.trials[0].point)
            ids, x = mf.read_features(manifest, list(index.sample_id[data.train.rows]))
            y = data.train.columns["y"]
            bare, step_ms = bare_loop(
                rung, x, y, batch_size=args.batch_size, epochs=args.epochs, precision=precision
            )
            trial = bioscale_trial(
                rung,
                manifest,
                tmp / precision,
                batch_size=args.batch_size,
                epochs=args.epochs,
                precision=precision,
                d_samples=len(ids),
            )
            row = {
                "rung": rung,
                "precision": precision,
                "threads": torch.get_num_threads(),
                "bare_samples_per_s": bare,
                "bioscale_samples_per_s": trial["samples_per_s"],
                "bare_step_ms": step_ms,
                "fixed_overhead_s": trial["fixed_overhead_s"],
                "trial_s": trial["trial_s"],
            }
            batches = math.ceil(len(ids) / args.batch_size)
            if step_ms >= 20.0:
                row["ratio"] = trial["samples_per_s"] / bare
            else:  # too fast for a meaningful ratio: extra milliseconds per batch instead
                row["ratio"] = None
                row["overhead_ms_per_batch"] = (
                    1000 * (len(ids) / trial["samples_per_s"] - len(ids) / bare) / batches
                )
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{'rung':<14}{'prec':>5}{'bare/s':>10}{'bioscale/s':>12}{'ratio':>8}{'step ms':>9}"
        f"{'fixed s':>9}"
    )
    for r in rows:
        ratio = (
            f"{r['ratio']:.2f}"
            if r["ratio"] is not None
            else f"+{r['overhead_ms_per_batch']:.1f}ms"
        )
        print(
            f"{r['rung']:<14}{r['precision']:>5}{r['bare_samples_per_s']:>10.0f}"
            f"{r['bioscale_samples_per_s']:>12.0f}"
            f"{ratio:>8}{r['bare_step_ms']:>9.1f}{r['fixed_overhead_s']:>9.1f}"
        )


if __name__ == "__main__":
    main()
