"""Will a study fit the cluster it is pointed at, and what will it cost?

``bioscale study plan --address`` reads the cluster's nodes and checks the study's ``resources:``
against them: a worker that fits on no node, a trial whose workers the whole cluster cannot place,
how many trials can run at once (leaving CPU for Ray Data's tasks, without which a trial hangs
instead of failing). It estimates GPU-hours from the trials' measured FLOPs and the device's peak,
and refuses a study over its ``budget:`` cap unless told to proceed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bioscale.errors import BioscaleError, ConfigError
from bioscale.hardware import DEVICE_PEAK_TFLOPS  # the table lives beside the workers
from bioscale.study.spec import ComputeBudget, ResourceSpec

#: CPU a trial's Tune driver function reserves (runner: ``tune.with_resources(..., {"CPU": 0.01})``).
TRIAL_DRIVER_CPU = 0.01
_EPS = 1e-9


class BudgetError(BioscaleError):
    """A study's estimated GPU-hours exceed its ``budget:`` cap."""


@dataclass(frozen=True, kw_only=True)
class Node:
    """One alive node's schedulable resources."""

    node_id: str
    cpus: float
    gpus: float
    accelerator: str | None = None


@dataclass(frozen=True, kw_only=True)
class Cluster:
    address: str
    nodes: list[Node]

    @classmethod
    def from_ray_nodes(cls, address: str, nodes: Iterable[Mapping[str, Any]]) -> Cluster:
        """From ``ray.nodes()``: alive nodes, their CPU/GPU and ``accelerator_type:<X>``."""
        out = []
        for n in nodes:
            if not n.get("Alive", False):
                continue
            res = n.get("Resources", {})
            accel = next(
                (k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")), None
            )
            out.append(
                Node(
                    node_id=n["NodeID"],
                    cpus=float(res.get("CPU", 0.0)),
                    gpus=float(res.get("GPU", 0.0)),
                    accelerator=accel,
                )
            )
        return cls(address=address, nodes=out)

    @property
    def accelerators(self) -> list[str]:
        return sorted({n.accelerator for n in self.nodes if n.accelerator})


#: How long a Ray address may take to accept a TCP connection, and then to let a driver join,
#: before it counts as unreachable (``ray.init`` itself retries a silent GCS for minutes).
CONNECT_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 25.0


_JOINED: set[str] = set()  # addresses this process has already checked


def check_ray_address(
    address: str, timeout_s: float = CONNECT_TIMEOUT_S, join_timeout_s: float = JOIN_TIMEOUT_S
) -> None:
    """Fail fast, naming the address, when a Ray cluster address does not answer.

    ``host:port`` (the GCS, ``ray start --head`` prints it) and ``ray://host:port`` (Ray Client)
    are probed with one TCP connection, then by joining from a short-lived process that is given
    ``join_timeout_s``; ``auto`` and ``local`` are left to ``ray.init``."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    from urllib.parse import urlsplit

    if address in ("auto", "local") or address in _JOINED:
        return
    text = address if "://" in address else f"ray://{address}"
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if parts.scheme not in ("ray", "ray+tls") or not host or not port:
        raise BioscaleError(
            f"{address!r} is not a Ray cluster address; give host:port of its head (the GCS port, "
            "6379 by default), ray://host:10001 for Ray Client, or auto"
        )
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise BioscaleError(
            f"cannot reach the Ray cluster at {address} (no answer from {host}:{port} within "
            f"{timeout_s:g} s: {err}). Check that the cluster is up and the address and port are "
            "right (`ray status` on the head prints them)."
        ) from None
    # the port answers; whether a Ray head answers on it, only a join tells (in its own process
    # group, so that a join stuck in Ray's retries is stopped with everything it started)
    probe = f"import ray; ray.init(address={address!r}, log_to_driver=False, logging_level='ERROR')"
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", probe],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=join_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise BioscaleError(
                f"the Ray cluster at {address} did not let a driver join within "
                f"{join_timeout_s:g} s: {host}:{port} accepts connections but no Ray head answers "
                "there. Check the port (the head's GCS port, 6379 by default; `ray status` on the "
                "head prints the address)."
            ) from None
        err.seek(0)
        last = (err.read().strip().splitlines() or ["no output"])[-1]
    if code != 0:
        raise BioscaleError(
            f"cannot join the Ray cluster at {address} ({last}). Check the address, and for a "
            "token-authenticated cluster set RAY_AUTH_MODE=token with its token "
            "(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)."
        )
    _JOINED.add(address)


def read_cluster(address: str) -> Cluster:
    """Join ``address`` briefly as a driver and read its nodes (needs ``RAY_AUTH_MODE=token`` and
    the token on a token-authenticated cluster)."""
    import ray

    if ray.is_initialized():
        return Cluster.from_ray_nodes(address, ray.nodes())
    check_ray_address(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise BioscaleError(
            f"cannot reach the Ray cluster at {address} ({err}). Check the address, and for a "
            "token-authenticated cluster set RAY_AUTH_MODE=token with its token (~/.ray/auth_token, "
            "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)."
        ) from None
    try:
        return Cluster.from_ray_nodes(address, ray.nodes())
    finally:
        ray.shutdown()


@dataclass(frozen=True, kw_only=True)
class FitReport:
    """``problems``: the study cannot run on this cluster as it is; ``notes``: it runs, slower."""

    concurrent_trials: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems


def _place_trial(free: list[list[float]], res: ResourceSpec, *, extras: bool = True) -> bool:
    """Reserve one trial's worker bundles, its driver and one data task (``extras``) on ``free``
    ([cpu, gpu] per node), as Ray's placement strategies would; False (nothing reserved) if it
    cannot."""
    n, cpu, gpu = res.workers_per_trial, res.cpus_per_worker, res.gpus_per_worker
    trial = [row[:] for row in free]
    strategy = res.placement_strategy
    if strategy == "STRICT_PACK":
        hosts = [r for r in trial if r[0] + _EPS >= n * cpu and r[1] + _EPS >= n * gpu]
        if not hosts:
            return False
        hosts[0][0] -= n * cpu
        hosts[0][1] -= n * gpu
    else:
        used: set[int] = set()
        for _ in range(n):
            candidates = [
                i for i, r in enumerate(trial) if r[0] + _EPS >= cpu and r[1] + _EPS >= gpu
            ]
            if strategy in ("SPREAD", "STRICT_SPREAD"):
                fresh = [i for i in candidates if i not in used]
                if strategy == "STRICT_SPREAD" or fresh:
                    candidates = fresh
            if not candidates:
                return False
            trial[candidates[0]][0] -= cpu
            trial[candidates[0]][1] -= gpu
            used.add(candidates[0])
    for extra in (TRIAL_DRIVER_CPU, res.data_cpus_per_task) if extras else ():
        row = max(trial, key=lambda r: r[0])
        if row[0] + _EPS < extra:
            return False
        row[0] -= extra
    free[:] = trial
    return True


def _streams_fed(cluster: Cluster, trials: int, res: ResourceSpec) -> bool:
    """Whether ``trials`` streaming trials each get CPU for their Ray Data tasks. Ray Data shares
    the CPU left on each node after the Train workers' reservations among the concurrent
    streaming executions in whole CPUs (an integer division), so where less than one CPU per
    stream is left every stream gets none and its trial waits for data forever."""
    free = [[n.cpus, n.gpus] for n in cluster.nodes]
    for _ in range(trials):
        if not _place_trial(free, res, extras=False):
            return False
    return sum(math.floor(row[0] / trials + _EPS) for row in free) >= 1


def check_fit(res: ResourceSpec, cluster: Cluster, *, streaming: bool = False) -> FitReport:
    """What of ``res`` fits ``cluster`` as it is now (an autoscaling cluster may grow).
    ``streaming``: trials stream their training data (image kinds) while their workers train."""
    problems: list[str] = []
    notes: list[str] = []
    if not cluster.nodes:
        return FitReport(
            concurrent_trials=0, problems=[f"the cluster at {cluster.address} has no alive node"]
        )
    worker = f"{res.cpus_per_worker:g} CPU" + (
        f" + {res.gpus_per_worker:g} GPU" if res.gpus_per_worker else ""
    )
    biggest = max(cluster.nodes, key=lambda n: (n.gpus, n.cpus))
    if not any(
        n.cpus + _EPS >= res.cpus_per_worker and n.gpus + _EPS >= res.gpus_per_worker
        for n in cluster.nodes
    ):
        gpus = sum(n.gpus for n in cluster.nodes)
        problems.append(
            f"a worker needs {worker} and no node has that (largest: {biggest.cpus:g} CPU, "
            f"{biggest.gpus:g} GPU; the cluster has {gpus:g} GPU in all). Lower "
            "resources.cpus_per_worker / gpus_per_worker or add bigger nodes."
        )
        return FitReport(concurrent_trials=0, problems=problems)
    free = [[n.cpus, n.gpus] for n in cluster.nodes]
    concurrent = 0
    while concurrent < res.max_concurrent_trials and _place_trial(free, res):
        concurrent += 1
    if streaming:
        while concurrent > 1 and not _streams_fed(cluster, concurrent, res):
            concurrent -= 1
    if concurrent == 0:
        total_cpu = sum(n.cpus for n in cluster.nodes)
        problems.append(
            f"one trial needs {res.workers_per_trial} worker(s) of {worker} placed "
            f"{res.placement_strategy}, plus {TRIAL_DRIVER_CPU:g} CPU for its driver and "
            f"{res.data_cpus_per_task:g} CPU for Ray Data, and the cluster ({len(cluster.nodes)} "
            f"node(s), {total_cpu:g} CPU) cannot place that; lower resources.workers_per_trial "
            "or the CPUs per worker, or add nodes."
        )
    elif concurrent < res.max_concurrent_trials:
        notes.append(
            f"only {concurrent} of resources.max_concurrent_trials={res.max_concurrent_trials} "
            "trials fit at once (with CPU left for Ray Data); the rest wait their turn unless "
            "the cluster scales up."
        )
    if res.gpus_per_worker == 0 and any(n.gpus for n in cluster.nodes):
        notes.append(
            "the cluster has GPUs but resources.gpus_per_worker is 0: trials train on CPU."
        )
    return FitReport(concurrent_trials=concurrent, problems=problems, notes=notes)


@dataclass(frozen=True, kw_only=True)
class GpuEstimate:
    total_flops: float
    device: str
    peak_flops: float  # FLOP/s
    mfu: float
    gpu_hours: float
    cap: float | None = None

    @property
    def over_budget(self) -> bool:
        return self.cap is not None and self.gpu_hours > self.cap

    def describe(self) -> str:
        cap = f" (budget {self.cap:g} GPU-hours)" if self.cap is not None else ""
        return (
            f"estimated {self.gpu_hours:.3g} GPU-hours on {self.device} "
            f"({self.total_flops:.3g} FLOPs at {self.mfu:.0%} of {self.peak_flops / 1e12:g} "
            f"TFLOP/s peak){cap}"
        )


def gpu_hours(total_flops: float, peak_flops: float, mfu: float) -> float:
    """Accelerator-hours to execute ``total_flops`` (FLOPs) at ``mfu`` × ``peak_flops`` (FLOP/s).

    Data parallelism splits the same FLOPs over more devices, so the device-hours do not change
    with ``workers_per_trial``; only utilisation does.
    """
    return total_flops / (peak_flops * mfu) / 3600.0


def estimate(
    total_flops: float,
    budget: ComputeBudget | None,
    *,
    cluster: Cluster | None = None,
    device: str | None = None,
    cap: float | None = None,
) -> GpuEstimate | None:
    """GPU-hours of ``total_flops`` on ``device`` (default: the budget's, else the cluster's
    accelerator); ``None`` when no device is known and the budget gives no peak."""
    mfu = budget.mfu if budget else ComputeBudget(gpu_hours=1.0).mfu
    name = device or (budget.device if budget else None)
    if name is None and cluster is not None and cluster.accelerators:
        name = cluster.accelerators[0]
    peak_tflops = budget.peak_tflops if budget and budget.peak_tflops else None
    if peak_tflops is None:
        if name is None:
            if cap is not None or budget is not None:
                raise ConfigError(
                    "budget: cannot estimate GPU-hours without a device: set budget.device "
                    f"(one of {', '.join(DEVICE_PEAK_TFLOPS)}) or budget.peak_tflops, or plan "
                    "against a GPU cluster (--address)"
                )
            return None
        if name not in DEVICE_PEAK_TFLOPS:
            raise ConfigError(
                f"budget.device: unknown device {name!r}; known: {', '.join(DEVICE_PEAK_TFLOPS)} "
                "(or set budget.peak_tflops)"
            )
        peak_tflops = DEVICE_PEAK_TFLOPS[name]
    cap = cap if cap is not None else (budget.gpu_hours if budget else None)
    peak = peak_tflops * 1e12
    return GpuEstimate(
        total_flops=total_flops,
        device=name or f"a {peak_tflops:g} TFLOP/s device",
        peak_flops=peak,
        mfu=mfu,
        gpu_hours=gpu_hours(total_flops, peak, mfu),
        cap=cap,
    )


def enforce_budget(est: GpuEstimate | None, proceed: bool) -> None:
    """Refuse a study over its cap unless ``proceed``."""
    if est is None or not est.over_budget or proceed:
        return
    raise BudgetError(
        f"the study is over its budget: {est.describe()}. Shrink the grid or the epochs, raise "
        "budget.gpu_hours (or --budget), or pass --proceed to run it anyway."
    )


def total_flops(trials: Iterable[Any]) -> float:
    """Planned FLOPs of ``trials`` (``Trial.flops_total``: measured per sample × planned samples)."""
    return math.fsum(t.flops_total for t in trials)
