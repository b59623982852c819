"""MLflow tracking URIs: which stores bioscale can use, and a fast check that a tracking server
answers before any MLflow client call (whose own HTTP retries take minutes to give up).

Shared by the study driver and the scaling analysis; imports no MLflow.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bioscale.errors import TrackingError
from bioscale.uri import redact_uri

#: URI schemes of MLflow tracking stores (a database scheme may name a driver: postgresql+psycopg2)
KNOWN_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")
#: seconds the health check waits for a tracking server's answer
HEALTH_TIMEOUT_S = 10.0
#: MLflow's HTTP request timeout (s) once a server answered; bioscale does its own retrying
HTTP_REQUEST_TIMEOUT_S = 30

_FIX = (
    "use http(s)://HOST:PORT for a tracking server or sqlite:////ABSOLUTE/PATH/mlflow.db for a "
    "local store (tracking.uri / --tracking-uri / MLFLOW_TRACKING_URI)"
)


def is_server(uri: str) -> bool:
    """True for a tracking server (``http://``, ``https://``)."""
    return uri.startswith(("http://", "https://"))


def check_scheme(uri: str) -> None:
    """Raise ``TrackingError`` for a URI whose scheme no MLflow store has."""
    scheme = urllib.parse.urlparse(uri).scheme.lower().split("+")[0]
    if scheme and len(scheme) > 1 and scheme not in KNOWN_SCHEMES:  # one letter: a Windows drive
        raise TrackingError(
            f"MLflow tracking URI {redact_uri(uri)!r} has an unknown scheme {scheme!r} (known: "
            f"{', '.join(KNOWN_SCHEMES)}); {_FIX}"
        )


def configure_http(uri: str) -> None:
    """For a tracking server: turn off MLflow's own HTTP retries (7, doubling: minutes per call,
    and a re-sent create makes a second run) and bound each request, unless the user set them."""
    if is_server(uri):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_REQUEST_TIMEOUT_S))


def check_reachable(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise ``TrackingError`` unless a tracking server answers ``GET /health`` within
    ``timeout`` seconds; other stores are not contacted."""
    if not is_server(uri):
        return
    # /health needs no login; urllib cannot open a URL that carries user:password@ itself
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    url = urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", "")
    )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"MLflow tracking server {redact_uri(uri)} is not reachable ({reason}). Start it, or fix "
            "tracking.uri / --tracking-uri / MLFLOW_TRACKING_URI (null or unset: a local SQLite "
            "store)."
        ) from None


def check_readable_store(uri: str) -> None:
    """For reading runs: the URI's scheme is known, a server answers, and a SQLite file exists
    (MLflow would silently create an empty one)."""
    check_scheme(uri)
    configure_http(uri)
    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        path = Path(urllib.parse.unquote(uri[len("sqlite:///") :]))
        path = path if path.is_absolute() else Path.cwd() / path
        if not path.exists():
            raise TrackingError(f"no MLflow store at {path} (from {redact_uri(uri)}); {_FIX}")
