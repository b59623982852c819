"""copairs' mAP is run again when CPython's parser race (python/cpython#106905) hits its threaded
null-distribution reads; any other error still fails the evaluation."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(60)


def _wells():
    """4 compounds × 3 replicate wells around their own centres, and 6 control wells."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    z = np.concatenate([np.repeat(centres, 3, axis=0), np.zeros((6, 8))])
    z += 0.3 * rng.normal(size=z.shape)
    compound = np.concatenate([np.repeat(np.arange(4), 3), np.full(6, -1)])
    return z, compound, compound < 0


def _map():
    from bioscale.eval import retrieval

    z, compound, controls = _wells()
    return retrieval.map_against_controls(
        z, compound, controls, null_size=200, threshold=0.05, seed=0
    )


def test_the_parser_race_is_retried_and_gives_copairs_answer(monkeypatch):
    import copairs.map

    real = copairs.map.mean_average_precision
    expected = _map()
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=33, after=30)")
        return real(*args, **kwargs)

    monkeypatch.setattr(copairs.map, "mean_average_precision", flaky)
    assert _map() == expected and expected["map"] > 0.5
    assert len(calls) == 2


def test_other_system_errors_are_not_swallowed(monkeypatch):
    import copairs.map

    def broken(*args, **kwargs):
        raise SystemError("something else")

    monkeypatch.setattr(copairs.map, "mean_average_precision", broken)
    with pytest.raises(SystemError, match="something else"):
        _map()
