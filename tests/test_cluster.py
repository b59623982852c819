"""A real two-node Ray cluster on loopback with token auth, a real MLflow tracking server, and
studies submitted to it the way users do (``ray job submit``), including the failures a shared
cluster sees: a Train worker killed mid-trial, the driver killed mid-study, MLflow going away.

One module fixture starts everything once (head + second node + ``mlflow server``) and stops every
process it started, by process group, at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.cluster]

TINY_DATA = {
    "synthetic": {
        "seed": 0,
        "n_moa": 6,
        "compounds_per_moa": 4,
        "n_extra": 16,
        "n_unlabelled_moa": 2,
        "plates_per_batch": 2,
        "n_features": 32,
    }
}


def tiny_study(name: str, diets: list[float], **overrides) -> dict:
    study = {
        "name": name,
        "data": TINY_DATA,
        "grids": [
            {
                "rung": ["debug"],
                "diet": [{"replicates": r, "extra": "all"} for r in diets],
                "objective": ["supervised"],
            }
        ],
        "train": {"budget": {"epochs": 2}, "batch_size": 64, "lr": {"value": 1.0e-3}},
        "resources": {
            "workers_per_trial": 1,
            "cpus_per_worker": 0.5,
            "max_concurrent_trials": 2,
            "data_cpus_per_task": 0.1,
        },
    }
    for key, value in overrides.items():
        study[key] = {**study.get(key, {}), **value} if isinstance(value, dict) else value
    return study


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class LoopbackCluster:
    """What the fixture started: addresses, the environment clients need, and the processes."""

    root: Path
    gcs_address: str
    dashboard_url: str
    mlflow_url: str
    mlflow_db: Path
    env: dict[str, str]
    groups: list[subprocess.Popen] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)

    def write_study(self, study: dict) -> Path:
        path = self.root / "studies" / f"{study['name']}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(study, sort_keys=False))
        return path

    def bioscale(self, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
        """A ``bioscale`` driver process (its own process group) joined to this cluster."""
        return subprocess.Popen(
            [str(BIN / "bioscale"), *args],
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            **kw,
        )

    def python(self, code: str, timeout: float = 60) -> object:
        """Run ``code`` as a Ray driver of this cluster in a fresh process; return what it prints
        as JSON on its last line (this process never joins the cluster itself)."""
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**self.env, "RAY_ADDRESS": self.gcs_address},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"driver failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def nodes(self, timeout: float = 60) -> list[str]:
        """The ids of the cluster's live nodes ([] while it cannot be reached)."""
        code = (
            "import json, ray; ray.init(log_to_driver=False); "
            "print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])))"
        )
        try:
            return self.python(code, timeout=timeout)
        except (RuntimeError, subprocess.TimeoutExpired):
            return []

    def tracker(self):
        from bioscale.study.tracking import Tracker

        return Tracker(self.mlflow_url)


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # one process group per node: stopped as a group, by its id
    )


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group this module started (SIGTERM, then SIGKILL after 10 s)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(proc.pid):
            break


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _node_ports() -> list[str]:
    """A node's own ports: two nodes share one IP here, so none may be a default."""
    (nm, om, agent_http, agent_grpc, renv, metrics) = _free_ports(6)
    return [
        f"--node-manager-port={nm}",
        f"--object-manager-port={om}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={renv}",
        f"--metrics-export-port={metrics}",
        "--min-worker-port=0",  # workers bind random free ports
        "--max-worker-port=0",
    ]


@pytest.fixture(scope="module")
def cluster():
    """A Ray head and a second node on 127.0.0.1 (token auth, explicit ports, 256 MiB object
    stores) plus ``mlflow server`` on a loopback port with a SQLite backend store."""
    root = Path(tempfile.mkdtemp(prefix="bsc-"))  # short: Ray's socket paths must stay < 108 chars
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # jobs run with the head's PATH
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_V2_ENABLED": "1",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
        "RAY_AIR_NEW_OUTPUT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    gcs, dashboard, client, mlflow_port = _free_ports(4)
    # each node its own temp dir: nodes sharing one would garbage-collect each other's runtime
    # env packages (a job's working directory vanishing under it)
    common = ["--node-ip-address=127.0.0.1", "--block"]
    store = str(256 * 1024**2)
    procs: list[subprocess.Popen] = []
    mlflow_db = root / "mlflow.db"
    state = LoopbackCluster(
        root=root,
        gcs_address=f"127.0.0.1:{gcs}",
        dashboard_url=f"http://127.0.0.1:{dashboard}",
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        mlflow_db=mlflow_db,
        env=env,
        groups=procs,
    )
    try:
        procs.append(
            _start(
                [
                    str(BIN / "ray"),
                    "start",
                    "--head",
                    f"--port={gcs}",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dashboard}",
                    f"--ray-client-server-port={client}",
                    "--num-cpus=2",
                    f"--object-store-memory={store}",
                    *_node_ports(),
                    *common,
                    f"--temp-dir={root / 'head'}",
                ],
                env,
                root / "head.log",
            )
        )
        procs.append(
            _start(
                [
                    str(BIN / "mlflow"),
                    "server",
                    "--host=127.0.0.1",
                    f"--port={mlflow_port}",
                    f"--backend-store-uri=sqlite:///{mlflow_db}",
                    f"--artifacts-destination={root / 'mlartifacts'}",
                    "--workers=1",
                ],
                env,
                root / "mlflow.log",
            )
        )
        _wait_for(lambda: state.nodes(timeout=20), 120, "the Ray head", interval=1.0)
        procs.append(
            _start(
                [
                    str(BIN / "ray"),
                    "start",
                    f"--address={state.gcs_address}",
                    "--num-cpus=2",
                    f"--object-store-memory={store}",
                    *_node_ports(),
                    *common,
                    f"--temp-dir={root / 'node2'}",
                ],
                env,
                root / "worker.log",
            )
        )
        state.node_ids = _wait_for(
            lambda: (ids := state.nodes(timeout=20)) and len(ids) >= 2 and ids, 120, "the 2nd node"
        )
        _wait_for(lambda: _healthy(state.mlflow_url), 120, "the MLflow server", interval=0.5)
        yield state
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _ray_cli(
    cluster: LoopbackCluster, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), *args],
        env={**cluster.env, "RAY_ADDRESS": cluster.dashboard_url},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _trial_runs(tracker, name: str) -> list:
    exp = tracker.client.get_experiment_by_name(name)
    return tracker.runs(exp.experiment_id, "trial") if exp else []


@pytest.mark.timeout(420)
def test_job_submit_runs_a_study_on_both_nodes_into_the_tracking_server(cluster):
    """`ray job submit` of jobs/run_study.py with jobs/runtime_env.yaml: the job succeeds, each
    trial's two workers ran on both nodes, and the server holds the parent and every trial once.
    Secrets in the job's environment never reach the MLflow store."""
    from bioscale.names import KIND, NODE_IDS, PARENT, TRIAL_KEY

    study = tiny_study(
        "cluster-submit",
        [0.5, 1.0],
        resources={"workers_per_trial": 2, "placement_strategy": "SPREAD"},
        tracking={"uri": cluster.mlflow_url},
    )
    path = cluster.write_study(study)
    out = cluster.root / "out" / study["name"]
    secret_a, secret_b = secrets.token_hex(16), secrets.token_hex(16)
    entry = (
        f"AWS_SECRET_ACCESS_KEY={secret_a} MLFLOW_TRACKING_PASSWORD={secret_b} "
        f"python jobs/run_study.py {path} --out {out} --no-report"
    )
    t0 = time.monotonic()
    submitted = _ray_cli(
        cluster,
        "job",
        "submit",
        "--submission-id=bioscale-submit-test",
        "--working-dir=.",
        "--runtime-env=jobs/runtime_env.yaml",
        "--",
        *entry.split(),
        timeout=360,
    )
    seconds = time.monotonic() - t0
    status = _ray_cli(cluster, "job", "status", "bioscale-submit-test", timeout=60)
    if "succeeded" not in status.stdout.lower():
        logs = _ray_cli(cluster, "job", "logs", "bioscale-submit-test", timeout=60).stdout
        pytest.fail(f"job did not succeed: {status.stdout[-500:]}\n{logs[-6000:]}")
    logs = submitted.stdout
    assert "2 trials planned, 0 already finished" in logs and "trials: 2 finished" in logs
    print(f"job submit of a 2-trial study on 2 nodes: {seconds:.1f} s")

    tracker = cluster.tracker()
    exp = tracker.client.get_experiment_by_name(study["name"])
    (parent,) = tracker.runs(exp.experiment_id, "study")
    assert parent.info.status == "FINISHED"
    runs = _trial_runs(tracker, study["name"])
    keys = [r.data.tags[TRIAL_KEY] for r in runs]
    assert len(runs) == 2 and len(set(keys)) == 2  # every trial exactly once
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags[KIND] == "trial" and run.data.tags[PARENT] == parent.info.run_id
        assert set(run.data.tags[NODE_IDS].split(",")) == set(cluster.node_ids)
        assert 0 <= run.data.metrics["probe/moa/novel_compounds/top1"] <= 1
    # no credential from the job's environment lands in the MLflow store (DB or artifacts)
    stored = cluster.mlflow_db.read_bytes() + b"".join(
        p.read_bytes() for p in (cluster.root / "mlartifacts").rglob("*") if p.is_file()
    )
    for secret in (secret_a, secret_b):
        assert secret.encode() not in stored
        for run in runs:
            assert secret not in json.dumps([run.data.params, run.data.tags])


def _node_processes(cluster: LoopbackCluster, title: str) -> list[int]:
    """Pids of this cluster's processes whose title contains ``title``: descendants of the node
    processes this module started, so another Ray on this machine is never touched."""
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            titles[int(proc.name)] = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    roots = {p.pid for p in cluster.groups}

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid in roots:
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid, t in titles.items() if title in t and ours(pid)]


def _registered_checkpoint(out: Path) -> bool:
    for snapshot in out.glob("ray_results/trial-*/checkpoint_manager_snapshot.json"):
        try:
            if "checkpoint_" in snapshot.read_text():
                return True
        except OSError:
            continue
    return False


@contextlib.contextmanager
def _driver(cluster: LoopbackCluster, *args: str):
    """A ``bioscale`` driver that is killed (its process group) if the test fails early."""
    proc = cluster.bioscale(*args)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"driver did not finish in {timeout:.0f} s:\n{out[-4000:]}")
    return out


@pytest.mark.timeout(420)
def test_killed_train_worker_resumes_from_its_checkpoint_on_the_same_run(cluster):
    study = tiny_study(
        "cluster-worker-kill",
        [1.0],
        train={"budget": {"epochs": 60}, "checkpoint_every": 3},
        # the Ray Train worker group (one-worker trials otherwise train in their Tune trial)
        resources={"max_failures": 2, "trial_runner": "ray_train"},
        tracking={"uri": cluster.mlflow_url},
    )
    path = cluster.write_study(study)
    out = cluster.root / "out" / study["name"]
    args = ("--out", str(out), "--no-report", "--address", cluster.gcs_address)
    with _driver(cluster, "study", "run", str(path), *args) as driver:
        # kill the worker as soon as Ray Train has registered a checkpoint (its snapshot lists
        # one): a checkpoint on storage that the controller has not taken yet does not count
        _wait_for(lambda: _registered_checkpoint(out), 240, "a registered checkpoint", 0.05)
        (worker,) = _wait_for(
            lambda: _node_processes(cluster, "RayTrainWorker"), 30, "the worker", 0.05
        )
        os.kill(worker, signal.SIGKILL)
        log = _finish(driver, 300)
    assert driver.returncode == 0, log[-4000:]

    tracker = cluster.tracker()
    (run,) = _trial_runs(tracker, study["name"])  # one run, however often the worker restarted
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    resumed = metrics["train/resumed_from_epoch"]
    assert resumed >= 3 and resumed % 3 == 0, resumed  # restarted from a checkpoint, not epoch 0
    assert resumed < 60, "the worker was killed after the trial had finished training"
    assert metrics["train/epochs"] == 60
    steps = [m.step for m in tracker.client.get_metric_history(run.info.run_id, "train/loss")]
    # every epoch once: the epochs trained again after the restart were not logged twice
    assert sorted(steps) == list(range(1, 61))
    print(f"worker killed; trial resumed from epoch {resumed:.0f} and finished 60 epochs")


def _direct_checkpoint(out: Path) -> bool:
    return any(out.glob("ray_results/trial-*/direct/checkpoint_[0-9][0-9][0-9][0-9][0-9][0-9]"))


@pytest.mark.timeout(420)
def test_killed_trial_process_resumes_from_its_checkpoint_on_the_same_run(cluster):
    """A one-worker trial trains in its Tune trial's own process: killed mid-training, Tune
    retries it (``max_failures``) and it resumes from the checkpoint it keeps in the storage."""
    study = tiny_study(
        "cluster-trial-kill",
        [1.0],
        train={"budget": {"epochs": 60}, "checkpoint_every": 3},
        resources={"max_failures": 2},
        tracking={"uri": cluster.mlflow_url},
    )
    path = cluster.write_study(study)
    out = cluster.root / "out" / study["name"]
    args = ("--out", str(out), "--no-report", "--address", cluster.gcs_address)
    with _driver(cluster, "study", "run", str(path), *args) as driver:
        _wait_for(lambda: _direct_checkpoint(out), 240, "a trial checkpoint", 0.05)
        (trial,) = _wait_for(
            lambda: _node_processes(cluster, "ImplicitFunc"), 30, "the trial process", 0.05
        )
        os.kill(trial, signal.SIGKILL)
        log = _finish(driver, 300)
    assert driver.returncode == 0, log[-4000:]
    assert not _node_processes(cluster, "RayTrainWorker")  # no worker group was started
    tracker = cluster.tracker()
    (run,) = _trial_runs(tracker, study["name"])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    resumed = metrics["train/resumed_from_epoch"]
    assert 3 <= resumed < 60 and resumed % 3 == 0, resumed
    assert metrics["train/epochs"] == 60
    steps = [m.step for m in tracker.client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 61))  # every epoch logged once
    print(f"trial process killed; it resumed from epoch {resumed:.0f} and finished 60 epochs")


def _second_drivers_are_refused(cluster, path: Path, args: tuple, out: Path, first) -> None:
    """While ``first`` drives the study: a driver on the same output folder is refused by the
    folder's lock, and one on another folder (same study, same server) by the study's lease; both
    name the first driver."""
    same = subprocess.run(
        [str(BIN / "bioscale"), "study", "run", str(path), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert same.returncode == 2, same.stdout + same.stderr
    assert "in use by another bioscale driver" in same.stderr
    assert f"pid {first.pid}" in same.stderr and "started" in same.stderr
    other = out.parent / f"{out.name}-elsewhere"
    elsewhere = subprocess.run(
        [str(BIN / "bioscale"), "study", "run", str(path), "--out", str(other), "--no-report"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert elsewhere.returncode == 2, elsewhere.stdout + elsewhere.stderr
    assert "held by another bioscale driver" in elsewhere.stderr
    assert f"pid {first.pid}" in elsewhere.stderr


@pytest.mark.timeout(480)
def test_a_second_driver_is_refused_and_a_killed_drivers_study_resumes_its_unfinished_trials(
    cluster,
):
    study = tiny_study(
        "cluster-driver-kill",
        [0.25, 0.5, 1.0],
        train={"budget": {"epochs": 6}, "checkpoint_every": 2},
        resources={"max_concurrent_trials": 1},
        tracking={"uri": cluster.mlflow_url},
    )
    path = cluster.write_study(study)
    out = cluster.root / "out" / study["name"]
    args = ("--out", str(out), "--no-report", "--address", cluster.gcs_address)
    tracker = cluster.tracker()

    def one_done_one_running():
        runs = _trial_runs(tracker, study["name"])
        done = [r for r in runs if r.info.status == "FINISHED"]
        return done if done and len(runs) > len(done) else None

    with _driver(cluster, "study", "run", str(path), *args) as driver:
        _wait_for(lambda: _trial_runs(tracker, study["name"]), 240, "a trial run", 0.2)
        _second_drivers_are_refused(cluster, path, args, out, first=driver)
        done = _wait_for(one_done_one_running, 300, "a finished and a running trial", 0.5)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver only: the cluster keeps running
        driver.communicate()
    before = {r.info.run_id: r for r in _trial_runs(tracker, study["name"])}

    with _driver(cluster, "study", "resume", str(path), *args) as resumed:
        log = _finish(resumed, 360)
    assert resumed.returncode == 0, log[-4000:]
    assert f"3 trials planned, {len(done)} already finished" in log
    assert "took over study" in log  # the killed driver's lease named a process that is gone
    runs = _trial_runs(tracker, study["name"])
    keys = [r.data.tags["bioscale.trial_key"] for r in runs]
    assert len(runs) == 3 and len(set(keys)) == 3, "a trial was logged twice"
    assert set(before) <= {r.info.run_id for r in runs}  # the interrupted run was continued
    for run in runs:
        assert run.info.status == "FINISHED"
    for old in done:  # finished trials were neither rerun nor logged again
        now = tracker.client.get_run(old.info.run_id)
        assert now.info.end_time == old.info.end_time
        assert now.data.metrics == old.data.metrics
    for run in runs:  # the continued trial too: every epoch once, none lost, none twice
        history = tracker.client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(1, 7)), run.info.run_name


def _study_status(tracker, name: str) -> str:
    exp = tracker.client.get_experiment_by_name(name)
    (study,) = tracker.runs(exp.experiment_id, "study")
    return tracker.client.get_run(study.info.run_id).info.status


def _one_finished_run_per_key_with_every_epoch(tracker, name: str, n_trials: int, epochs: int):
    runs = _trial_runs(tracker, name)
    keys = [r.data.tags["bioscale.trial_key"] for r in runs]
    assert len(runs) == n_trials and len(set(keys)) == n_trials, "a trial key has two runs"
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        steps = [m.step for m in tracker.client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(1, epochs + 1)), (run.info.run_name, steps)


@pytest.mark.timeout(420)
def test_ctrl_c_mid_trial_ends_killed_with_exit_130_and_resume_finishes(cluster):
    study = tiny_study(
        "cluster-ctrl-c",
        [1.0],
        train={"budget": {"epochs": 30}, "checkpoint_every": 3},
        resources={"max_concurrent_trials": 1},
        tracking={"uri": cluster.mlflow_url},
    )
    path = cluster.write_study(study)
    out = cluster.root / "out" / study["name"]
    args = ("--out", str(out), "--address", cluster.gcs_address)
    tracker = cluster.tracker()
    with _driver(cluster, "study", "run", str(path), *args) as driver:
        # a one-worker trial keeps its checkpoints itself (CheckpointStore), not Ray Train
        _wait_for(lambda: _direct_checkpoint(out), 240, "a trial checkpoint", 0.05)
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        log = _finish(driver, 120)
    assert driver.returncode == 130, log[-4000:]
    assert "study interrupted" in log and "bioscale study resume" in log, log[-2000:]
    assert "Traceback" not in log
    assert not (out / "report").exists(), "an interrupted study wrote a report"
    assert _study_status(tracker, study["name"]) == "KILLED"
    statuses = sorted(r.info.status for r in _trial_runs(tracker, study["name"]))
    assert statuses and "KILLED" in statuses and "RUNNING" not in statuses, statuses

    with _driver(cluster, "study", "resume", str(path), *args, "--no-report") as resumed:
        log = _finish(resumed, 300)
    assert resumed.returncode == 0, log[-4000:]
    assert _study_status(tracker, study["name"]) == "FINISHED"
    _one_finished_run_per_key_with_every_epoch(tracker, study["name"], 1, 30)


class _Proxy:
    """A TCP proxy in front of the MLflow server that can drop every connection (an outage)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.down = threading.Event()
        self.dropped = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down.is_set():
                self.dropped += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                client.close()  # RST: what a dead server behind a load balancer looks like
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.down.is_set() and (data := src.recv(65536)):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            src.close()
            dst.close()

    def close(self) -> None:
        self.server.close()


@pytest.mark.timeout(240)
def test_tracking_server_outage_is_retried_with_backoff_and_loses_no_metric(cluster):
    """The driver's tracker writing to the real server through a proxy that drops every
    connection for a while (a restarting server behind a load balancer)."""
    from bioscale.study.tracking import Tracker

    proxy = _Proxy(int(cluster.mlflow_url.rsplit(":", 1)[1]))
    try:
        tracker = Tracker(f"http://127.0.0.1:{proxy.port}", retry_seconds=60)
        exp = tracker.experiment("cluster-mlflow-outage")
        run = tracker.start_trial(exp, "none", "key", "outage", {"rung": "debug"})
        tracker.log_metrics(run, {"train/loss": 1.0}, step=1)
        proxy.down.set()
        reopen = threading.Timer(6.0, proxy.down.clear)
        reopen.start()
        t0 = time.monotonic()
        for epoch in (2, 3):  # written while the server is away, then retried
            tracker.log_metrics(run, {"train/loss": float(epoch)}, step=epoch)
        tracker.log_metrics(run, {"probe/moa/novel_compounds/top1": 0.5}, step=3)
        tracker.finish(run)
        waited = time.monotonic() - t0
        reopen.join()
    finally:
        proxy.close()
    assert proxy.dropped >= 1 and waited >= 5
    direct = cluster.tracker()
    history = direct.client.get_metric_history(run, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0), (3, 3.0)]
    final = direct.client.get_run(run)
    assert final.info.status == "FINISHED"
    assert final.data.metrics["probe/moa/novel_compounds/top1"] == 0.5
    print(f"MLflow outage: {proxy.dropped} connections dropped, writes retried for {waited:.1f} s")


@pytest.mark.timeout(240)
def test_an_outage_longer_than_retry_seconds_delays_trial_writes_without_blocking(cluster):
    """The study driver's background writer against the real server: an outage three times its
    retry window neither blocks the callback that submits nor loses a write."""
    from bioscale.study.spool import TrialWriter, spool_path
    from bioscale.study.tracking import Tracker

    proxy = _Proxy(int(cluster.mlflow_url.rsplit(":", 1)[1]))
    messages: list[str] = []
    try:
        tracker = Tracker(f"http://127.0.0.1:{proxy.port}", retry_seconds=2)
        exp = tracker.experiment("cluster-mlflow-writer")
        parent = tracker.study_run(exp, "cluster-mlflow-writer", "sha")
        writer = TrialWriter(tracker, exp, parent, progress=messages.append, pause_s=0.5)
        writer.start("wkey", "writer-trial", {"rung": "debug"}, None)
        writer.metrics("wkey", {"train/loss": 1.0}, step=1)
        proxy.down.set()
        reopen = threading.Timer(6.0, proxy.down.clear)
        reopen.start()
        t0 = time.monotonic()
        for epoch in (2, 3):
            writer.metrics("wkey", {"train/loss": float(epoch)}, step=epoch)
        writer.finish("wkey", "FINISHED")
        submitted = time.monotonic() - t0
        spooled = writer.close(spool_path(cluster.root), wait_s=60)
        reopen.join()
    finally:
        proxy.close()
    assert submitted < 1.0 and spooled == 0
    assert any("not taking writes" in m for m in messages) and any("is back" in m for m in messages)
    direct = cluster.tracker()
    (run,) = _trial_runs(direct, "cluster-mlflow-writer")
    history = direct.client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert direct.client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.timeout(240)
def test_plan_against_the_cluster_says_what_fits(cluster):
    fits = cluster.write_study(tiny_study("cluster-plan", [1.0]))
    gpu = cluster.write_study(
        tiny_study("cluster-plan-gpu", [1.0], resources={"gpus_per_worker": 1})
    )
    out = str(cluster.root / "out" / "plan")
    args = ("--out", out, "--address", cluster.gcs_address)
    ok = subprocess.run(
        [str(BIN / "bioscale"), "study", "plan", str(fits), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert ok.returncode == 0, ok.stderr
    assert "2 node(s), 4 CPU, 0 GPU" in ok.stdout and "fits: 2 trial(s) at once" in ok.stdout
    refused = subprocess.run(
        [str(BIN / "bioscale"), "study", "plan", str(gpu), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert refused.returncode == 2
    assert (
        "will not fit" in refused.stderr
        and "0.5 CPU + 1 GPU and no node has that" in refused.stderr
    )
