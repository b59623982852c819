"""GPU check: images/s and MFU of a ViT and a ResNet rung through bioscale's training step.

    PYTHONPATH=platform python3 benchmarks/gpu_check.py [--rungs vit:base,resnet:r50]
        [--image-size 224] [--channels 5] [--batch-size N] [--steps 30] [--warmup 10]
        [--objective supervised] [--compile] [--no-channels-last] [--peak-tflops T] [--json]
    PYTHONPATH=platform python3 benchmarks/gpu_check.py --cpu-smoke    # tiny rungs, a few steps

Each rung runs the step trials run (``bioscale.train.step``: the rung from ``models.ladder``, the
objective's heads and loss, AdamW over the loop's parameter groups, bf16 autocast and
channels_last from ``train.precision``) on one synthetic batch already on the device, so it
measures compute, not data loading. Warm-up steps (allocator, cuDNN autotuning, compilation) are
excluded. FLOPs per image are measured with ``bioscale.models.flops`` on the device, as a trial
counts them; MFU = FLOPs/s ÷ the device's dense bf16 peak (``bioscale.hardware``).

Imports torch, timm and bioscale modules that need nothing else, so it runs with a GPU machine's
own ``python3`` (no Ray, MLflow, scikit-learn or network). Without a CUDA GPU it exits with
status 2 unless ``--cpu-smoke``. Target on H100/H200-class GPUs: MFU ≥ 40% for the ViT rung.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from bioscale.hardware import mfu, peak_tflops
from bioscale.models.flops import training_step_flops
from bioscale.models.ladder import count_parameters
from bioscale.train.precision import StepNumerics, prepare_layout
from bioscale.train.step import configure_backends, make_optimizer, network_for, train_step

#: Per-image batch sizes by family for an 80–141 GB GPU at 224 px (ViT patch 8: 784 tokens).
GPU_BATCH = {"vit": 128, "resnet": 256, "convnext": 256}
NUM_CLASSES = 1000
VIT_TARGET_MFU = 0.40


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rungs", default="vit:base,resnet:r50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--channels", type=int, default=5, help="dyes (input channels)")
    p.add_argument("--batch-size", type=int, default=None, help="default: by family")
    p.add_argument("--steps", type=int, default=30, help="timed steps per rung")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    p.add_argument("--objective", default="supervised")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the device's peak")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny debug rungs on the CPU for a few steps (tests the path; no MFU)",
    )
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.rungs, args.image_size, args.batch_size = "vit:debug,resnet:debug", 32, 4
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_rung(rung: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Time ``args.steps`` training steps of ``rung`` after ``args.warmup`` untimed ones."""
    torch.manual_seed(0)
    shape = (args.channels, args.image_size, args.image_size)
    net, objective = network_for(rung, shape, args.objective, {}, {"y": NUM_CLASSES})
    family = rung.split(":", 1)[0]
    batch_size = args.batch_size or GPU_BATCH.get(family, 128)
    net = net.to(device)
    probe = {
        "x": torch.randn(2, *shape, device=device),
        "y": torch.randint(0, NUM_CLASSES, (2,), device=device),
    }
    flops_per_image = training_step_flops(net, objective, probe)  # fp32, before any layout change
    numerics = StepNumerics(
        precision=args.precision, channels_last=args.channels_last, device=device
    )
    net = prepare_layout(net, numerics.channels_last, image_input=True, compile_model=False)
    model = torch.compile(net) if args.compile else net
    optimizer = make_optimizer(net, lr=1e-4, weight_decay=0.05, device=device)
    batch = {
        "x": numerics.inputs(torch.randn(batch_size, *shape, device=device)),
        "y": torch.randint(0, NUM_CLASSES, (batch_size,), device=device),
    }
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        train_step(model, objective, optimizer, batch, numerics)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        terms = train_step(model, objective, optimizer, batch, numerics)
    loss = float(terms["loss"].detach())  # waits for the last step
    _sync(device)
    seconds = time.perf_counter() - t0
    if not math.isfinite(loss):
        raise RuntimeError(f"{rung}: the loss is {loss} after {args.steps} steps")
    images = args.steps * batch_size
    peak = args.peak_tflops or (
        peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    )
    utilisation = mfu(flops_per_image * images, seconds, peak * 1e12 if peak else None)
    return {
        "rung": rung,
        "N": count_parameters(net.backbone),
        "batch_size": batch_size,
        "image_size": args.image_size,
        "precision": numerics.precision,
        "compile": args.compile,
        "images_per_s": images / seconds,
        "step_ms": 1000 * seconds / args.steps,
        "gflops_per_image": flops_per_image / 1e9,
        "tflops_per_s": flops_per_image * images / seconds / 1e12,
        "peak_tflops": peak,
        "mfu": utilisation,
        "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "loss": loss,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu_smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", 0)
    else:
        print(
            "gpu_check: no CUDA GPU is visible to torch "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); run it on a GPU "
            "machine, or pass --cpu-smoke for a tiny CPU run that only tests the path",
            file=sys.stderr,
        )
        return 2
    configure_backends(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = [run_rung(rung, args, device) for rung in args.rungs.split(",")]
    if args.json:
        print(json.dumps({"device": name, "torch": torch.__version__, "rungs": rows}, indent=2))
        return 0
    print(
        f"device: {name}, torch {torch.__version__}, {args.steps} timed steps after {args.warmup}"
    )
    print(
        f"{'rung':<14}{'batch':>6}{'images/s':>11}{'step ms':>9}{'GFLOP/img':>11}"
        f"{'TFLOP/s':>9}{'MFU':>7}"
    )
    for r in rows:
        util = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(
            f"{r['rung']:<14}{r['batch_size']:>6}{r['images_per_s']:>11.1f}{r['step_ms']:>9.1f}"
            f"{r['gflops_per_image']:>11.2f}{r['tflops_per_s']:>9.2f}{util:>7}"
        )
    if any(r["mfu"] is None for r in rows):
        print(f"MFU n/a: no known dense bf16 peak for {name!r} (set --peak-tflops)")
    for r in rows:
        if r["rung"].startswith("vit:") and r["mfu"] is not None and r["precision"] == "bf16":
            verdict = "met" if r["mfu"] >= VIT_TARGET_MFU else "NOT met"
            print(f"{r['rung']}: MFU target {VIT_TARGET_MFU:.0%} at bf16 {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
