#!/usr/bin/env bash
# GPU check: images/s and MFU of a ViT and a ResNet rung at bf16 through bioscale's training step.
# Runs with the machine's own python3 (torch + timm only; no venv, Ray, MLflow or network), from
# any directory; PYTHON=... picks another interpreter. Flags go to benchmarks/gpu_check.py, e.g.
# --compile, --steps 50, --batch-size 64, --rungs vit:large,resnet:r101, --json.
# A few minutes at most on an H100/H200.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c "import torch, timm" 2>/dev/null; then
    echo "gpu_check: $python cannot import torch and timm; install them or set PYTHON=" >&2
    exit 2
fi
PYTHONPATH="$root/platform${PYTHONPATH:+:$PYTHONPATH}" exec "$python" \
    "$root/benchmarks/gpu_check.py" "$@"
