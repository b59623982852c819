"""The ``ray job submit`` entry points and their runtime environment; the capacity checks of
``bioscale study plan --address`` on a described cluster (no Ray started)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from bioscale.study import capacity
from bioscale.study.spec import ComputeBudget, ResourceSpec

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(120)


def test_runtime_env_uploads_code_and_studies_only_and_installs_nothing(tmp_path):
    """Package the working directory exactly as ``ray job submit --working-dir .`` does (without
    the .gitignore, so the runtime env's own excludes are what keeps things out)."""
    from ray._private.runtime_env.packaging import create_package

    env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert not {"pip", "uv", "conda", "py_modules", "container", "image_uri"} & set(env)
    # what the upload must leave behind, planted where users have it
    planted = [
        ".venv/lib/big.so",
        "bioscale-out/s/mlflow.db",
        "bioscale-out/s/ray_results/trial-x/checkpoint_000001/state.pt",
        "data/jump/manifest.parquet",
        "mlruns/0/meta.yaml",
    ]
    for rel in planted:
        (tmp_path / "ws" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ws" / rel).write_bytes(b"x" * 1024)
    for rel in ("jobs", "platform", "clusters"):
        subprocess.run(["cp", "-r", str(REPO / rel), str(tmp_path / "ws" / rel)], check=True)
    package = tmp_path / "pkg.zip"
    create_package(str(tmp_path / "ws"), package, include_gitignore=False, excludes=env["excludes"])
    names = set(zipfile.ZipFile(package).namelist())
    assert not {n for n in names if any(n.startswith(p.split("/")[0] + "/") for p in planted)}
    assert {"jobs/run_study.py", "jobs/studies/demo.yaml"} <= names
    assert "platform/bioscale/data/manifest.py" in names  # /data/ is anchored, not every data/
    assert package.stat().st_size < 5 * 1024**2


def test_demo_study_is_the_packaged_one():
    link = REPO / "jobs" / "studies" / "demo.yaml"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "platform" / "bioscale" / "studies" / "demo.yaml").resolve()


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("run_study.py", ["--help"], "bioscale study run"),
        ("run_study.py", ["--resume", "--help"], "bioscale study resume"),
        ("fit_scaling.py", ["study.yaml", "--help"], "bioscale study report"),
        ("fit_scaling.py", ["--help"], "bioscale fit"),
        ("evaluate.py", ["--help"], "bioscale evaluate"),
        ("prepare_data.py", ["synth", "profiles", "--help"], "bioscale data synth profiles"),
    ],
)
def test_job_entry_points_are_thin_wrappers_of_the_cli(script, args, expect):
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"usage: {expect}" in done.stdout


def _cluster(*nodes: tuple[float, float, str | None]) -> capacity.Cluster:
    return capacity.Cluster(
        address="test",
        nodes=[
            capacity.Node(node_id=f"n{i}", cpus=c, gpus=g, accelerator=a)
            for i, (c, g, a) in enumerate(nodes)
        ],
    )


def test_capacity_says_what_will_not_fit():
    cpu_only = _cluster((8, 0, None), (8, 0, None))
    gpu_worker = ResourceSpec(workers_per_trial=1, cpus_per_worker=4, gpus_per_worker=1)
    report = capacity.check_fit(gpu_worker, cpu_only)
    assert not report.fits and "needs 4 CPU + 1 GPU and no node has that" in report.problems[0]

    gpus = _cluster((8, 0, None), (8, 1, "L4"), (8, 1, "L4"))
    too_wide = ResourceSpec(workers_per_trial=3, cpus_per_worker=4, gpus_per_worker=1)
    report = capacity.check_fit(too_wide, gpus)
    assert not report.fits and "one trial needs 3 worker(s)" in report.problems[0]

    four = ResourceSpec(
        workers_per_trial=1, cpus_per_worker=4, gpus_per_worker=1, max_concurrent_trials=4
    )
    report = capacity.check_fit(four, gpus)
    assert report.fits and report.concurrent_trials == 2
    assert "only 2 of resources.max_concurrent_trials=4" in report.notes[0]


def test_capacity_leaves_cpu_for_ray_data_and_honours_strict_spread():
    # 2 trials × (1 CPU worker + 0.01 driver) fill 2 CPUs exactly: no CPU left for data tasks
    tight = ResourceSpec(cpus_per_worker=1.0, max_concurrent_trials=2, data_cpus_per_task=0.25)
    assert capacity.check_fit(tight, _cluster((2, 0, None))).concurrent_trials == 1
    spread = ResourceSpec(
        workers_per_trial=2, cpus_per_worker=0.5, placement_strategy="STRICT_SPREAD"
    )
    assert not capacity.check_fit(spread, _cluster((4, 0, None))).fits
    assert capacity.check_fit(spread, _cluster((2, 0, None), (2, 0, None))).fits


def test_gpu_hours_from_flops_and_device_peak():
    # 1e18 FLOPs at 30 % of an A100's 312 TFLOP/s: 1e18 / 93.6e12 / 3600 ≈ 2.97 GPU-hours
    est = capacity.estimate(1e18, ComputeBudget(gpu_hours=2.0, device="A100"))
    assert est.gpu_hours == pytest.approx(1e18 / (312e12 * 0.3) / 3600)
    assert est.over_budget
    with pytest.raises(capacity.BudgetError, match="over its budget"):
        capacity.enforce_budget(est, proceed=False)
    capacity.enforce_budget(est, proceed=True)
    # the device defaults to the accelerator the cluster reports
    cluster = _cluster((8, 0, None), (8, 8, "H100"))
    assert capacity.estimate(1e18, None, cluster=cluster).device == "H100"
    with pytest.raises(Exception, match="unknown device 'TPU9'"):
        capacity.estimate(1e18, ComputeBudget(gpu_hours=1, device="TPU9"))


def test_streaming_trials_each_need_a_whole_leftover_cpu_for_ray_data():
    # Ray Data shares the CPU the Train workers leave in whole CPUs among concurrent streams:
    # two image trials of one 0.5-CPU worker on 2 CPUs leave 1 CPU, 0 each → run one at a time
    half = ResourceSpec(cpus_per_worker=0.5, max_concurrent_trials=2, data_cpus_per_task=0.1)
    assert capacity.check_fit(half, _cluster((2, 0, None))).concurrent_trials == 2
    assert capacity.check_fit(half, _cluster((2, 0, None)), streaming=True).concurrent_trials == 1
    assert capacity.check_fit(half, _cluster((3, 0, None)), streaming=True).concurrent_trials == 2
