"""Batch leakage: how well a linear probe reads the plate or source off an embedding.

Training and test wells come from the *same* compounds (each compound's wells are split in two
halves at random), so the phenotype cannot explain the accuracy: only technical signal can. Chance
is the majority share of the test wells. A model that scales by memorising plates shows up here.
"""

from __future__ import annotations

import warnings

import numpy as np


def compound_halves(compound: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n,) compound codes → train/test masks: half of each compound's wells, drawn at random
    (seeded), go to training — row order often follows plates, so no fixed alternation."""
    rng = np.random.default_rng(seed)
    train = np.zeros(len(compound), dtype=bool)
    for c in np.unique(compound):
        rows = rng.permutation(np.flatnonzero(compound == c))
        train[rows[: (len(rows) + 1) // 2]] = True
    # a compound with one well has no test well and keeps its training well
    return train, ~train


def leakage_probe(
    z: np.ndarray, factor: np.ndarray, compound: np.ndarray, *, c: float, max_iter: int = 500
) -> dict[str, float] | None:
    """Accuracy of an L2 logistic regression predicting ``factor`` from ``z``.

    Args:
        z: (n, d) normalised embeddings of compound wells (no controls).
        factor: (n,) codes of the technical factor (plate, source).
        compound: (n,) compound codes; halves are drawn within each compound.
        c: inverse L2 strength.
        max_iter: lbfgs iterations.

    Returns:
        ``{"acc": .., "chance": ..}``, or ``None`` when the factor has one level (nothing to leak).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, test = compound_halves(compound)
    if len(np.unique(factor[train])) < 2 or not test.any():
        return None
    scaler = StandardScaler().fit(z[train])
    clf = LogisticRegression(C=c, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(z[train]), factor[train])
    acc = float(np.mean(clf.predict(scaler.transform(z[test])) == factor[test]))
    _, counts = np.unique(factor[test], return_counts=True)
    return {"acc": acc, "chance": float(counts.max() / counts.sum())}
