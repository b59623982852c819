"""Credentials in a tracking URI never reach what bioscale shows: messages, logs, report.html."""

from __future__ import annotations

import pytest

from bioscale.uri import redact_uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "https://bioscale:s3cret@mlflow.example.org:5000",
            "https://***@mlflow.example.org:5000",
        ),
        # a SQL store as the tracking URI; "@" inside the password, a secret driver option
        (
            "postgresql+psycopg2://mlflow:p@ss@db:5432/mlflow?sslmode=require&sslpassword=k3y",
            "postgresql+psycopg2://***@db:5432/mlflow?sslmode=require&sslpassword=***",
        ),
        # a bare token as the user part
        ("https://ghp_T0KEN@mlflow.example.org/", "https://***@mlflow.example.org/"),
        # signed and token query parameters; the others stay as written (not re-encoded)
        (
            "https://h/x?X-Amz-Credential=AK%2F1&X-Amz-Signature=ab12&run=a%20b&access_token=t",
            "https://h/x?X-Amz-Credential=***&X-Amz-Signature=***&run=a%20b&access_token=***",
        ),
        ("http://u:p@[::1", "http://***@[::1"),  # urlsplit rejects it; still redacted
    ],
)
def test_redact_uri_removes_user_information_and_secret_parameters(uri, shown):
    assert redact_uri(uri) == shown


@pytest.mark.parametrize(
    "uri",
    [
        "http://mlflow.bioscale.svc.cluster.local:5000",
        "sqlite:////mnt/shared/out/run@2/mlflow.db",  # "@" in a path is not user information
        "sqlite:///mlflow.db",
        "/mnt/shared/out/trials.csv",
        "http://h/?key",  # a parameter without a value
        "",
    ],
)
def test_redact_uri_leaves_uris_without_credentials_unchanged(uri):
    assert redact_uri(uri) == uri


def test_report_built_from_a_credentialed_uri_does_not_contain_the_password(tmp_path):
    from bioscale.scaling.report import render

    page = render(
        study="demo",
        tracking_uri="https://bioscale:hunter2@mlflow.example.org/?token=tok3n",
        rows=[],
        fits=[],
        plots=[],
        metric="probe/moa/test/top1",
        metric_label="MoA top-1",
        out=tmp_path / "report.html",
    ).read_text()
    assert "hunter2" not in page and "tok3n" not in page and "bioscale:" not in page
    assert "https://***@mlflow.example.org/?token=***" in page
