"""Stable ranking hashes: the same on every machine, Python version and process (no ``hash()``)."""

from __future__ import annotations

import hashlib


def rank_key(key: str, salt: str | int) -> int:
    """A 64-bit integer from sha256(salt | key); sorting by it gives a reproducible shuffle."""
    digest = hashlib.sha256(f"{salt}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def sample_key(plate: str, well: str, site: int | None) -> str:
    """The identity of a sample for ranking: plate/well/site, independent of ``sample_id`` format."""
    return f"{plate}/{well}/{site if site is not None else 0}"
