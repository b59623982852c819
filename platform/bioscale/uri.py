"""URIs as bioscale shows them: credentials never reach a message, a log line or a report.

A tracking URI may carry a secret (``postgresql://mlflow:pw@db/mlflow``,
``https://user:token@mlflow.example.org``, a signed ``?X-Amz-Signature=...``); every place that
prints, logs or writes one passes it through :func:`redact_uri` first. The URI itself, with its
credentials, still goes to MLflow unchanged.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

#: What replaces a URI's user information and each secret query value.
REDACTED = "***"

# query parameter names that carry a secret: access_token, api_key, X-Amz-Signature,
# X-Amz-Credential, X-Amz-Security-Token, X-Goog-Signature, Azure SAS `sig`, sslpassword, ...
_SECRET_PARAM = re.compile(r"token|secret|passw|pwd|key|sig|credential|auth|session", re.I)
# fallback for strings urlsplit rejects (e.g. an unclosed IPv6 bracket): scheme://userinfo@
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/?#]*@", re.I)


def redact_uri(uri: str) -> str:
    """``uri`` with its user information (``user:password@``, ``token@``) and the values of
    token-like query parameters replaced by ``***``; anything else (a plain path, ``sqlite:///``)
    comes back unchanged. Never raises: it guards error messages.

    >>> redact_uri("https://bioscale:s3cret@mlflow.example.org:5000/?access_token=abc&x=1")
    'https://***@mlflow.example.org:5000/?access_token=***&x=1'
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return _USERINFO.sub(rf"\1{REDACTED}@", uri)
    netloc = parts.netloc
    if "@" in netloc:
        # userinfo ends at the last "@" of the authority (RFC 3986 §3.2)
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(_redact_param(p) for p in parts.query.split("&")) if parts.query else ""
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # untouched, byte for byte (urlunsplit would normalise "sqlite:///x")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_param(param: str) -> str:
    name, sep, value = param.partition("=")
    return f"{name}={REDACTED}" if sep and value and _SECRET_PARAM.search(name) else param
