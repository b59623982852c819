"""One driver per study: an exclusive lock on the output folder and a lease on the study run.

Two drivers writing one study would each treat the other's RUNNING trials as interrupted, write
into their runs and train them again, so a trial key could end with two FINISHED runs. Before a
driver touches MLflow it takes

- ``<out>/.bioscale.lock``: an advisory ``flock`` held for the driver's lifetime. The kernel drops
  it when the process dies, so a driver that was killed leaves no lock to clean up; the file keeps
  the holder's host, pid and start time for the message a second driver gets.
- on a tracking server (where two output folders can share one study), the study run's
  ``bioscale.lease`` tag: the holder's identity and a heartbeat renewed every
  ``LEASE_RENEW_S``. A lease whose heartbeat is older than ``LEASE_STALE_S`` belongs to a driver
  that is gone and is taken over (and said so).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bioscale.errors import BioscaleError
from bioscale.names import LEASE

LOCK_FILE = ".bioscale.lock"
#: seconds between lease heartbeats, and the age past which a lease is stale (its driver gone)
LEASE_RENEW_S = 30.0
LEASE_STALE_S = 180.0


class StudyBusyError(BioscaleError):
    """Another driver holds the study."""


@dataclass(frozen=True, kw_only=True)
class Holder:
    """Who holds a study: enough to find the process and to tell a stale claim."""

    host: str
    pid: int
    started: str  # ISO 8601, UTC
    heartbeat: float = 0.0  # time.time() of the last lease renewal

    @classmethod
    def me(cls) -> Holder:
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            heartbeat=time.time(),
        )

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError):
            return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """The exclusive lock on a study's output folder (a context manager)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self._fh: Any = None
        self.holder = Holder.me()
        #: the earlier holder whose lock this one replaced (a driver that died), if any
        self.took_over: Holder | None = None

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 (held open for the driver's lifetime)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            other = Holder.from_json(fh.read())
            fh.close()
            who = other.describe() if other else "an unknown process"
            raise StudyBusyError(
                f"output folder {self.path.parent} is in use by another bioscale driver ({who}). "
                "Wait for it to finish, or stop it (Ctrl-C, or `kill <pid>` on its host) and run "
                "`bioscale study resume`; a driver that has died releases the lock by itself."
            ) from None
        fh.seek(0)
        earlier = Holder.from_json(fh.read())
        if earlier is not None and (earlier.host, earlier.pid) != (self.holder.host, os.getpid()):
            self.took_over = earlier
        fh.seek(0)
        fh.truncate()
        fh.write(self.holder.to_json())
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is None:
            return
        try:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.flush()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class StudyLease:
    """The lease tag on a study run (tracking servers): claimed, renewed in the background,
    released at the end. ``client`` is an ``MlflowClient``."""

    def __init__(self, client: Any, run_id: str, *, renew_s: float = LEASE_RENEW_S) -> None:
        self.client = client
        self.run_id = run_id
        self.renew_s = renew_s
        self.holder = Holder.me()
        self.took_over: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _current(self) -> Holder | None:
        tags = self.client.get_run(self.run_id).data.tags
        return Holder.from_json(tags[LEASE]) if tags.get(LEASE) else None

    def acquire(self, *, stale_s: float = LEASE_STALE_S) -> StudyLease:
        other = self._current()
        if other is not None and (other.host, other.pid) != (self.holder.host, self.holder.pid):
            age = time.time() - other.heartbeat
            same_host_dead = other.host == self.holder.host and not _process_alive(other.pid)
            if age < stale_s and not same_host_dead:
                raise StudyBusyError(
                    f"study run {self.run_id} is held by another bioscale driver "
                    f"({other.describe()}; last heartbeat {age:.0f} s ago). Wait for it to "
                    "finish or stop it; a lease without a heartbeat for "
                    f"{stale_s:.0f} s is taken over by the next `bioscale study resume`."
                )
            self.took_over = other
        self._write()
        self._thread = threading.Thread(target=self._renew, name="bioscale-lease", daemon=True)
        self._thread.start()
        return self

    def _write(self) -> None:
        beat = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
        self.client.set_tag(self.run_id, LEASE, beat.to_json())

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self._write()
            except Exception:  # a missed heartbeat is retried; the study goes on
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            current = self._current()
            if current is not None and (current.host, current.pid) == (
                self.holder.host,
                self.holder.pid,
            ):
                self.client.set_tag(self.run_id, LEASE, "")
        except Exception:  # an unreachable server at exit: the lease goes stale
            pass
