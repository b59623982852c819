"""Create the non-admin MLflow user bioscale's Ray pods log in as, or reset its password.

Run once per install (and again after rotating the ``mlflow-client`` Secret) by the
``mlflow-create-user`` Job of ``kuberay/mlflow.yaml``, inside the MLflow image
(``mlflow.Dockerfile``), against a server started with ``--app-name basic-auth``:

    MLFLOW_TRACKING_URI         the server, e.g. http://mlflow:5000
    MLFLOW_TRACKING_USERNAME    the basic-auth admin (``admin_username`` of basic_auth.ini)
    MLFLOW_TRACKING_PASSWORD    its password (Secret ``mlflow-auth``, key ``admin-password``)
    BIOSCALE_MLFLOW_USERNAME    the user to create (Secret ``mlflow-client``, key ``username``)
    BIOSCALE_MLFLOW_PASSWORD    its password (Secret ``mlflow-client``, key ``password``)

Idempotent: an existing user keeps its permissions and gets the Secret's password. The user is a
plain (non-admin) account: with workspaces off it may create experiments and manages the ones it
creates (basic auth grants the creator MANAGE); it never administers users. Credentials are read
from the environment only, never from the command line.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request, verify_rest_response

REQUIRED = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "BIOSCALE_MLFLOW_USERNAME",
    "BIOSCALE_MLFLOW_PASSWORD",
)
# the basic-auth REST API (mlflow/server/auth/routes.py: CREATE_USER, GET_USER,
# UPDATE_USER_PASSWORD)
CREATE_USER = "/api/2.0/mlflow/users/create"
GET_USER = "/api/2.0/mlflow/users/get"
UPDATE_USER_PASSWORD = "/api/2.0/mlflow/users/update-password"


class AuthApi:
    """The requests ``mlflow.server.auth.client.AuthServiceClient`` sends, without importing
    ``mlflow.server.auth`` (its import builds the server app and needs Flask-WTF). Logs in with
    MLFLOW_TRACKING_USERNAME/PASSWORD, as every MLflow client does."""

    def __init__(self, tracking_uri: str) -> None:
        self.host_creds = get_default_host_creds(tracking_uri)

    def call(self, endpoint: str, method: str, **kwargs: Any) -> dict[str, Any]:
        resp = verify_rest_response(
            http_request(self.host_creds, endpoint, method, **kwargs), endpoint
        )
        return resp.json() if resp.content else {}

    def get_user(self, username: str) -> dict[str, Any]:
        return self.call(GET_USER, "GET", params={"username": username})["user"]

    def create_user(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        return self.call(CREATE_USER, "POST", json=body)["user"]

    def update_user_password(self, username: str, password: str) -> None:
        self.call(UPDATE_USER_PASSWORD, "PATCH", json={"username": username, "password": password})


def ensure_user(api: AuthApi, username: str, password: str) -> str:
    """Create ``username`` (non-admin) or set its password; return ``"created"`` or
    ``"updated"``. Refuses an admin account: the pods must not log in as one."""
    try:
        user = api.get_user(username)
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        api.create_user(username, password)
        return "created"
    if user["is_admin"]:
        raise SystemExit(
            f"MLflow user {username!r} is an admin; the Ray pods must log in as a plain user. "
            "Put another username in the mlflow-client Secret and run this Job again."
        )
    api.update_user_password(username, password)
    return "updated"


def main() -> int:
    env = os.environ  # MLflow's credentials helper reads MLFLOW_TRACKING_USERNAME/PASSWORD too
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        print(
            f"missing environment variable(s) {', '.join(missing)}: set them from the mlflow-auth "
            "and mlflow-client Secrets (clusters/kuberay/mlflow.yaml, Job mlflow-create-user)",
            file=sys.stderr,
        )
        return 2
    username = env["BIOSCALE_MLFLOW_USERNAME"]
    if username == env["MLFLOW_TRACKING_USERNAME"]:
        print(
            f"the mlflow-client user {username!r} is the basic-auth admin; create the client "
            "Secret with another username (clusters/README.md)",
            file=sys.stderr,
        )
        return 2
    done = ensure_user(
        AuthApi(env["MLFLOW_TRACKING_URI"]), username, env["BIOSCALE_MLFLOW_PASSWORD"]
    )
    print(f"MLflow user {username!r} {done} (non-admin)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
