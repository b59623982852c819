"""What a study costs over the for-loop script a scientist would otherwise write.

    python benchmarks/study_overhead.py [--repeats 2] [--epochs 10] [--loopback] [--json]

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

``--loopback`` runs (b) on a two-node Ray cluster on 127.0.0.1 (a head and a second node with one
CPU each, their own temp dirs and ports, started with ``ray start`` and stopped by their process
group), as the cluster tests do: trials are scheduled across nodes and their data crosses the
object store, which a local instance never does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
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


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_ports() -> list[str]:
    """A node's own ports: two nodes share one IP, so none may be a default."""
    nm, om, agent_http, agent_grpc, renv, metrics = _free_ports(6)
    return [
        f"--node-manager-port={nm}",
        f"--object-manager-port={om}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={renv}",
        f"--metrics-export-port={metrics}",
        "--min-worker-port=0",
        "--max-worker-port=0",
    ]


@contextlib.contextmanager
def loopback_cluster(root: Path):
    """A Ray head and a second node on 127.0.0.1, one CPU each, with token auth; yields the
    head's address and the environment its clients need."""
    import secrets

    ray = str(Path(sys.executable).parent / "ray")
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_V2_ENABLED": "1",
    }
    env.pop("RAY_ADDRESS", None)
    (gcs,) = _free_ports(1)
    address = f"127.0.0.1:{gcs}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1"]
    common += [f"--object-store-memory={256 * 1024**2}", "--block"]
    head = [ray, "start", "--head", f"--port={gcs}", "--include-dashboard=false", *common]
    node = [ray, "start", f"--address={address}", *common]
    procs = []
    try:
        for name, cmd in (("head", head), ("node2", node)):
            log = (root / f"{name}.log").open("wb")
            cmd = [*cmd, *_node_ports(), f"--temp-dir={root / name}"]
            procs.append(
                subprocess.Popen(
                    cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            _wait_nodes(address, len(procs), env)
        yield address, env
    finally:
        for proc in reversed(procs):  # each node its own process group, stopped by its id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


def _wait_nodes(address: str, n: int, env: dict, timeout: float = 120.0) -> None:
    probe = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False); "
        "print(sum(1 for x in ray.nodes() if x['Alive']))"
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise SystemExit(f"the loopback cluster did not reach {n} node(s) at {address}")


def bioscale_run(
    spec_path: Path, out: Path, address: str | None = None, env: dict | None = None
) -> tuple[float, dict[str, float]]:
    """(b): wall seconds of ``bioscale study run`` in a fresh process (on the cluster at
    ``address``, or a local instance), and the mean per-trial split of its time from its MLflow
    runs."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bioscale.cli", "study", "run", str(spec_path), "--out", str(out)]
    if address is not None:
        cmd += ["--address", address]
    proc = subprocess.run([*cmd, "--no-report"], capture_output=True, text=True, env=env)
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
    parser.add_argument(
        "--loopback", action="store_true", help="run (b) on a two-node cluster on 127.0.0.1"
    )
    args = parser.parse_args()
    STUDY["train"]["budget"]["epochs"] = args.epochs
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bso-")))
        address, env = (
            stack.enter_context(loopback_cluster(root)) if args.loopback else (None, None)
        )
        spec_path = root / "study.yaml"
        spec_path.write_text(yaml.safe_dump(STUDY))
        ratios, rows = [], []
        for i in range(args.repeats):  # a b a b …: a busy machine slows both alike
            a, n = bare(spec_path, root / f"a{i}")
            b, split = bioscale_run(spec_path, root / f"b{i}", address, env)
            ratios.append(b / a)
            rows.append({"bare_s": a, "bioscale_s": b, "trials": n, "split": split})
            print(
                f"repeat {i + 1}: bare {a:.1f} s, bioscale {b:.1f} s ({n} trials)", file=sys.stderr
            )
    result = {
        "trials": rows[0]["trials"],
        "epochs": args.epochs,
        "where": "loopback two-node cluster" if args.loopback else "local Ray instance",
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
        f"{result['trials']} trials × {args.epochs} epochs, one at a time, (b) on a "
        f"{result['where']}: (b)/(a) = "
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
