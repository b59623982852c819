"""The GPU path, checked on CPU: the bare gpu_check script, MFU, DDP and batch-feed options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from bioscale.config import from_mapping, to_mapping
from bioscale.data import manifest as mf
from bioscale.data.splits import SampleIndex, SplitConfig
from bioscale.errors import ConfigError
from bioscale.hardware import DEVICE_PEAK_TFLOPS, device_peak_flops, mfu, peak_tflops
from bioscale.study.spec import StudySpec
from bioscale.train import loop
from bioscale.train.context import LocalContext
from bioscale.train.precision import StepNumerics, prepare_layout
from bioscale.train.runtime import (
    DdpConfig,
    FeedConfig,
    WorkerRuntime,
    prepare_model_kwargs,
    train_batch_kwargs,
)
from bioscale.train.step import make_optimizer, network_for, train_step

REPO = Path(__file__).resolve().parents[1]

GRIDS = [{"rung": ["debug"], "diet": [{"replicates": 1.0}], "objective": ["ibp"]}]
#: What a bare GPU machine may lack; the check must not need any of it.
BLOCKED = ("ray", "mlflow", "sklearn", "scipy", "copairs", "pyarrow", "pandas")

_BLOCKER = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, runpy, sys
    BLOCKED = set({blocked!r})
    tried = []

    class Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # as if not installed: find_spec finds nothing usable, importing raises
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return importlib.machinery.ModuleSpec(name, self)
            return None

        def create_module(self, spec):
            tried.append(spec.name)
            raise ModuleNotFoundError(f"No module named {{spec.name!r}}", name=spec.name)

        def exec_module(self, module):
            raise AssertionError("unreachable")

    sys.meta_path.insert(0, Absent())
    sys.argv = ["gpu_check.py", *{argv!r}]
    try:
        runpy.run_path({script!r}, run_name="__main__")
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m])
    print("BLOCKED-LOADED", loaded, file=sys.stderr)
    sys.exit(code)
    """
)


def test_gpu_check_cpu_smoke_runs_without_ray_mlflow_sklearn_pandas():
    script = str(REPO / "benchmarks" / "gpu_check.py")
    code = _BLOCKER.format(blocked=BLOCKED, argv=["--cpu-smoke", "--json"], script=script)
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform"), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "BLOCKED-LOADED []" in done.stderr
    report = json.loads(done.stdout)
    assert report["device"] == "cpu"
    rows = {r["rung"]: r for r in report["rungs"]}
    assert set(rows) == {"vit:debug", "resnet:debug"}
    for r in rows.values():
        assert r["images_per_s"] > 0 and r["gflops_per_image"] > 0
        assert r["precision"] == "bf16" and np.isfinite(r["loss"])
        assert r["mfu"] is None  # no peak for a CPU: never a made-up number


def test_gpu_check_refuses_without_a_gpu(monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check = runpy.run_path(str(REPO / "benchmarks" / "gpu_check.py"))
    assert check["main"]([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_gpu_check_shell_script_is_executable_and_uses_bare_python3():
    sh = REPO / "benchmarks" / "gpu_check.sh"
    assert os.access(sh, os.X_OK)
    text = sh.read_text()
    assert "PYTHON:-python3" in text and "/platform" in text and ".venv" not in text


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("Tesla T4", 65.0),
        ("AMD Instinct MI300X", 1307.0),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_device_names_map_to_dense_bf16_peaks(name, peak):
    assert peak_tflops(name) == peak


def test_capacity_reads_the_same_peak_table():
    from bioscale.study import capacity

    assert capacity.DEVICE_PEAK_TFLOPS is DEVICE_PEAK_TFLOPS


def test_mfu_formula_and_no_peak_on_cpu():
    # 4 devices of 100 FLOP/s each doing 1,000 FLOPs in 5 s: 200 FLOP/s of 400 → 0.5
    assert mfu(1_000.0, 5.0, 100.0, devices=4) == pytest.approx(0.5)
    assert mfu(1_000.0, 5.0, None) is None
    assert mfu(0.0, 5.0, 100.0) is None
    assert device_peak_flops(torch.device("cpu")) is None


def _trial(synth_manifest):
    from bioscale.data.diets import Diet
    from bioscale.study.plan import GridPoint, trial_data
    from bioscale.study.spec import ObjectiveSpec

    index = SampleIndex.from_table(mf.read_metadata(synth_manifest), SplitConfig())
    _, x = mf.read_features(synth_manifest)
    point = GridPoint(
        rung="debug", diet=Diet(replicates=1.0), objective=ObjectiveSpec(name="ibp"), seed=0
    )
    td, num_classes = trial_data(index, point)
    cfg = loop.LoopConfig(
        rung="debug",
        input_shape=(x.shape[1],),
        objective="ibp",
        num_classes=num_classes,
        max_epochs=2,
        lr=3e-3,
        weight_decay=1e-6,
        batch_size=64,
        seed=0,
        flops_per_sample=1.0e6,
        checkpoint_every=0,
        report_interval_s=0.0,
    )
    ctx = LocalContext(
        train={"x": x[td.train.rows], **td.train.columns},
        evals={
            "val": {"x": x[td.val.rows], **td.val.columns},
            "probe": {"x": x[td.probe.rows], **td.probe.columns},
        },
        batch_size=64,
    )
    return cfg, ctx


def test_loop_logs_mfu_only_with_a_known_peak(synth_manifest, monkeypatch):
    cfg, ctx = _trial(synth_manifest)
    final = loop.run(cfg, ctx)
    assert "perf/mfu" not in final  # CPU: no peak, no MFU
    assert all("perf/mfu" not in m for r in ctx.reports for m in r.get("history", []))
    assert final["compute/flops"] == cfg.flops_per_sample * final["train/samples_seen"]

    peak = 1.0e9  # a fake device of 1 GFLOP/s
    monkeypatch.setattr(loop, "device_peak_flops", lambda device: peak)
    cfg, ctx = _trial(synth_manifest)
    final = loop.run(cfg, ctx)
    expected = final["compute/flops"] / final["compute/seconds"] / peak
    assert final["perf/mfu"] == pytest.approx(expected)
    epochs = [m for r in ctx.reports for m in r.get("history", [])]
    assert len(epochs) == cfg.max_epochs
    for m in epochs:  # per epoch: FLOPs/s from the epoch's samples/s
        assert m["perf/mfu"] == pytest.approx(cfg.flops_per_sample * m["perf/samples_per_s"] / peak)


def test_channels_last_bf16_step_on_cpu_and_compile_off_by_default():
    cpu = torch.device("cpu")
    net, objective = network_for("resnet:debug", (5, 32, 32), "supervised", {}, {"y": 3})
    numerics = StepNumerics(precision="bf16", channels_last=True, device=cpu)
    net = prepare_layout(net, numerics.channels_last, image_input=True, compile_model=False)
    optimizer = make_optimizer(net, lr=1e-3, weight_decay=0.05, device=cpu)
    assert "fused" not in optimizer.defaults or not optimizer.defaults["fused"]
    batch = {"x": numerics.inputs(torch.randn(4, 5, 32, 32)), "y": torch.tensor([0, 1, 2, 0])}
    assert batch["x"].is_contiguous(memory_format=torch.channels_last)
    before = net.backbone.conv1[0].weight.detach().clone()
    terms = train_step(net, objective, optimizer, batch, numerics)
    assert torch.isfinite(terms["loss"]) and terms["loss"].requires_grad
    assert not torch.equal(before, net.backbone.conv1[0].weight)
    assert net.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    spec = StudySpec.from_dict({"name": "s", "data": {"synthetic": {}}, "grids": GRIDS})
    assert spec.train.compile is False and spec.train.channels_last is True
    flagged = StudySpec.from_dict(
        {"name": "s", "data": {"synthetic": {}}, "grids": GRIDS, "train": {"compile": True}}
    )
    assert flagged.train.compile is True


@pytest.mark.skipif(
    os.environ.get("BIOSCALE_COMPILE_TEST") != "1",
    reason="torch.compile of even the debug rung takes ~20 s on a 2-core CPU (over the 10 s "
    "budget for this file); set BIOSCALE_COMPILE_TEST=1 to run it",
)
def test_compiled_step_trains_on_cpu():
    cpu = torch.device("cpu")
    net, objective = network_for("debug", (32,), "supervised", {}, {"y": 4})
    model = torch.compile(net)
    optimizer = make_optimizer(net, lr=1e-2, weight_decay=0.0, device=cpu)
    numerics = StepNumerics(precision="fp32", channels_last=False, device=cpu)
    batch = {"x": torch.randn(8, 32), "y": torch.randint(0, 4, (8,))}
    first = float(train_step(model, objective, optimizer, batch, numerics)["loss"].detach())
    for _ in range(20):
        last = float(train_step(model, objective, optimizer, batch, numerics)["loss"].detach())
    assert last < first


def test_ddp_options_reach_prepare_model_kwargs():
    import inspect

    import ray.train.torch

    kwargs = prepare_model_kwargs(
        DdpConfig(bucket_cap_mb=50, gradient_as_bucket_view=False, static_graph=True)
    )
    assert kwargs == {
        "parallel_strategy": "ddp",
        "parallel_strategy_kwargs": {
            "bucket_cap_mb": 50,
            "gradient_as_bucket_view": False,
            "static_graph": True,
        },
    }
    # Ray Train's prepare_model takes these names, and DDP takes the inner ones
    assert set(kwargs) <= set(inspect.signature(ray.train.torch.prepare_model).parameters)
    ddp_params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    assert set(kwargs["parallel_strategy_kwargs"]) <= set(ddp_params)


def test_feed_options_reach_iter_torch_batches_kwargs():
    import inspect

    from ray.data import DataIterator

    feed = FeedConfig(prefetch_batches=4)
    gpu = train_batch_kwargs(feed, device=torch.device("cuda", 0), batch_size=32, seed=1, epoch=2)
    cpu = train_batch_kwargs(feed, device=torch.device("cpu"), batch_size=32, seed=1, epoch=2)
    assert gpu["pin_memory"] is True and cpu["pin_memory"] is False  # auto: pin on CUDA only
    assert gpu["prefetch_batches"] == 4 and gpu["batch_size"] == 32
    assert (
        gpu["local_shuffle_seed"]
        != train_batch_kwargs(feed, device="cpu", batch_size=32, seed=1, epoch=3)[
            "local_shuffle_seed"
        ]
    )
    off = train_batch_kwargs(
        FeedConfig(pin_memory="off"), device=torch.device("cuda", 0), batch_size=8, seed=0, epoch=0
    )
    assert off["pin_memory"] is False
    assert set(gpu) <= set(inspect.signature(DataIterator.iter_torch_batches).parameters)


def test_train_spec_ddp_and_feed_keys_are_checked():
    spec = StudySpec.from_dict(
        {
            "name": "s",
            "data": {"synthetic": {}},
            "grids": GRIDS,
            "train": {"ddp": {"bucket_cap_mb": 50}, "feed": {"prefetch_batches": 3}},
        }
    )
    runtime = spec.train.worker_runtime()
    assert runtime.ddp.bucket_cap_mb == 50 and runtime.ddp.gradient_as_bucket_view is True
    assert runtime.feed.prefetch_batches == 3
    assert from_mapping(WorkerRuntime, to_mapping(runtime), "runtime") == runtime
    with pytest.raises(ConfigError, match="bucket_cap"):
        StudySpec.from_dict(
            {
                "name": "s",
                "data": {"synthetic": {}},
                "grids": GRIDS,
                "train": {"ddp": {"bucket_cap": 50}},
            }
        )
    with pytest.raises(ConfigError, match="bucket_cap_mb"):
        DdpConfig(bucket_cap_mb=0)
