"""What the plan measures with torch, out of the plan's process: a rung's parameter counts and its
training-step FLOPs under an objective, its feature layers' names, and whether this machine's CPU
computes bf16 natively.

``bioscale study plan`` never imports torch: when torch is not loaded yet, the measurements run in
one helper process (``python -m bioscale.train.measure``, started on the first request and kept
for the rest of the process, one JSON request and one JSON answer a line). Where torch is already
loaded (a trial driver, a notebook, the tests) they run in place. Both run the same functions, so
the numbers, and the trial keys built from them, are the same either way.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from bioscale import errors
from bioscale.errors import BioscaleError


def size_and_flops(
    rung: str, input_shape: tuple[int, ...], objective: dict[str, Any], num_classes: dict[str, int]
) -> tuple[int, int, str, float]:
    """``(N, N_heads, family, flops_per_sample)`` of ``rung`` under ``objective``
    (``{"name": ..., "params": {...}}``) with heads for ``num_classes``: backbone and head
    parameters, the rung's family and the FLOPs of one training step per sample
    (``bioscale.models.flops.training_step_flops`` on a batch of 4)."""
    request = {
        "op": "size_and_flops",
        "rung": rung,
        "input_shape": list(input_shape),
        "objective": objective,
        "num_classes": num_classes,
    }
    n, n_heads, family, flops = _ask(request)  # as measured: JSON keeps ints and floats apart
    return n, n_heads, family, flops


def cpu_bf16_native() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    return bool(_ask({"op": "cpu_bf16_native"}))


def layer_names(rung: str, input_shape: tuple[int, ...]) -> list[str]:
    """The feature layers of ``rung``'s backbone on ``input_shape`` inputs, shallow to deep
    (``bioscale.eval.layers.layer_names``, on a parameter-free build)."""
    return list(_ask({"op": "layer_names", "rung": rung, "input_shape": list(input_shape)}))


def _measure_layer_names(request: dict[str, Any]) -> list[str]:
    import torch

    from bioscale.models.ladder import get_rung
    from bioscale.models.layers import layer_names as names_of

    with torch.device("meta"):  # layer names need no parameters
        backbone = get_rung(request["rung"]).build(tuple(request["input_shape"]))
    return names_of(backbone)


def _measure_size_and_flops(request: dict[str, Any]) -> list[Any]:
    import torch

    from bioscale.models.flops import training_step_flops
    from bioscale.models.ladder import count_parameters, get_rung
    from bioscale.objectives import registry as objectives
    from bioscale.train.step import Network

    input_shape = tuple(request["input_shape"])
    num_classes = request["num_classes"]
    obj = request["objective"]
    objective = objectives.build(obj["name"], obj["params"])
    rung_cfg = get_rung(request["rung"])
    backbone = objective.prepare_backbone(rung_cfg.build(input_shape))
    heads = objective.build_heads(backbone.embed_dim, num_classes)
    net = Network(backbone, heads)
    gen = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(4, *input_shape, generator=gen)}
    for col, n in num_classes.items():
        batch[col] = torch.randint(0, max(n, 1), (4,), generator=gen)
    batch |= objective.extra_inputs(input_shape, 4, gen)  # e.g. the CV-RNN's ground truth
    if objective.needs_maps:  # every image with a map: the most a step can cost
        batch["map"] = torch.rand(4, *input_shape[1:], generator=gen)
        batch["has_map"] = torch.ones(4, dtype=torch.bool)
    flops = training_step_flops(net, objective, batch)
    return [count_parameters(backbone), count_parameters(heads), rung_cfg.family, flops]


def _measure_cpu_bf16_native(request: dict[str, Any]) -> bool:
    import torch

    from bioscale.train.precision import bf16_native

    return bf16_native(torch.device("cpu"))


_OPS = {
    "size_and_flops": _measure_size_and_flops,
    "cpu_bf16_native": _measure_cpu_bf16_native,
    "layer_names": _measure_layer_names,
}


def _answer(request: dict[str, Any]) -> Any:
    return _OPS[request["op"]](request)


def _ask(request: dict[str, Any]) -> Any:
    if "torch" in sys.modules:  # already paid for: measure here
        return _answer(request)
    return _helper().ask(request)


class _Helper:
    """The helper process and its pipe (one request at a time)."""

    def __init__(self) -> None:
        src = str(Path(__file__).resolve().parents[2])  # the folder holding ``bioscale``
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bioscale.train.measure"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            # its own session: Ctrl-C in the terminal interrupts the driver, which closes this
            # helper itself (a helper interrupted mid-read would print a traceback to the user)
            start_new_session=True,
        )
        self._lock = threading.Lock()

    def ask(self, request: dict[str, Any]) -> Any:
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            try:
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
                line = self._proc.stdout.readline()
            except BrokenPipeError:
                line = ""
        if not line:
            raise BioscaleError(
                f"the measuring process (python -m bioscale.train.measure) exited with code "
                f"{self._proc.poll()} before answering {request['op']}; its error is printed "
                "above (run bioscale again; if it persists, check that torch imports)"
            )
        answer = json.loads(line)
        if "error" in answer:
            err = answer["error"]
            kind = getattr(errors, err["type"], None)
            if isinstance(kind, type) and issubclass(kind, BioscaleError):
                raise kind(err["message"])
            raise BioscaleError(
                f"measuring {request['op']} failed: {err['type']}: {err['message']}"
            )
        return answer["ok"]

    @property
    def exited(self) -> bool:
        return self._proc.poll() is not None

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


_HELPER: _Helper | None = None
_HELPER_LOCK = threading.Lock()


def _helper() -> _Helper:
    global _HELPER
    with _HELPER_LOCK:
        if _HELPER is None or _HELPER.exited:  # first use, or the last one died: a new one
            _HELPER = _Helper()
            atexit.register(_HELPER.close)
        return _HELPER


def main() -> None:
    """Answer requests on stdin, one JSON line each, until stdin closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver ends it by closing stdin
    out = sys.stdout
    sys.stdout = sys.stderr  # a library's print must not corrupt the answers
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer: dict[str, Any] = {"ok": _answer(request)}
        except Exception as err:  # every failure goes back to the plan, named
            answer = {"error": {"type": type(err).__name__, "message": str(err)}}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
