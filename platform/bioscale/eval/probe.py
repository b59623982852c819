"""Linear probes on frozen embeddings (Pheno-CA tasks; split names frozen in ARCHITECTURE).

The probe is fit on the ``probe_train`` wells of ``seen`` compounds, its L2 strength chosen on
``probe_val`` (never on a test split — the published code picked epochs on test), and reported on
``seen_compounds`` (the held-out ``probe_test`` wells of seen compounds) and ``novel_compounds``
(every well of compounds no objective trained on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Integer codes of the probe roles inside a probe batch (column ``role``).
ROLE_CODES = {"probe_train": 0, "probe_val": 1, "probe_test": 2, "novel_test": 3}
SPLITS = {"seen_compounds": ROLE_CODES["probe_test"], "novel_compounds": ROLE_CODES["novel_test"]}


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """Linear probe settings: inverse L2 strengths tried on validation, and the k of top-k."""

    cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    topk: tuple[int, ...] = (1, 10)
    max_iter: int = 500


def topk_accuracy(proba: np.ndarray, classes: np.ndarray, y: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the k most probable (a class the probe never saw
    counts as a miss)."""
    if len(y) == 0:
        return float("nan")
    k = min(k, proba.shape[1])
    top = classes[np.argsort(-proba, axis=1)[:, :k]]
    return float(np.mean((top == y[:, None]).any(axis=1)))


def linear_probe(
    emb: np.ndarray, role: np.ndarray, label: np.ndarray, task: str, cfg: ProbeConfig
) -> dict[str, float]:
    """Fit, select and score an L2 logistic-regression probe.

    Args:
        emb: (n, d) float32 frozen embeddings of the probe sets.
        role: (n,) role codes (``ROLE_CODES``).
        label: (n,) integer task labels.
        task: task name for the metric keys (``moa``).
        cfg: probe settings.

    Returns:
        ``probe/<task>/<split>/top<k>`` for both splits, plus ``probe/<task>/C``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train = role == ROLE_CODES["probe_train"]
    val = role == ROLE_CODES["probe_val"]
    scaler = StandardScaler().fit(emb[train])
    z = np.nan_to_num(scaler.transform(emb), nan=0.0, posinf=0.0, neginf=0.0)

    best = None
    for c in cfg.cs:
        clf = LogisticRegression(C=c, max_iter=cfg.max_iter)
        clf.fit(z[train], label[train])
        val_acc = topk_accuracy(clf.predict_proba(z[val]), clf.classes_, label[val], 1)
        if best is None or val_acc > best[0]:
            best = (val_acc, c, clf)
    _, c, clf = best
    metrics: dict[str, float] = {f"probe/{task}/C": float(c)}
    for split, code in SPLITS.items():
        rows = role == code
        proba = clf.predict_proba(z[rows])
        for k in cfg.topk:
            metrics[f"probe/{task}/{split}/top{k}"] = topk_accuracy(
                proba, clf.classes_, label[rows], k
            )
    return metrics
