"""Probes on frozen embeddings (Pheno-CA tasks; split and metric names frozen in ARCHITECTURE).

Readouts (``bioscale.eval.readout``) are fit on the ``probe_train`` wells of ``seen`` compounds,
selected on ``probe_val`` (never on a test split — the published code picked epochs on test), and
reported on:

- ``seen_compounds``: the held-out ``probe_test`` wells of seen compounds;
- ``novel_compounds``: every well of compounds no objective trained on;
- ``heldout_source`` (data with several sources): the readout is refit on the probe_train wells
  outside one source (the last in sorted order), selected on the probe_val wells outside it, and
  scored on every probe-set well of seen compounds inside it — a source the readout never saw
  (linear readout only, to keep evaluation cheap).

Metrics: ``top1``, ``top10`` and ``macro_f1``. Multi-label tasks (targets): a row is a top-k hit
when *any* of its true labels is among the k most probable classes; for macro-F1 a row's
prediction is its top-1 class, and its true class is that class when it is one of the row's labels
(else the row's first label). The linear readout's keys are ``probe/<task>/<split>/<metric>``, the
MLP's ``probe/<task>_mlp/<split>/<metric>``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

# ROLE_CODES and ProbeConfig live in bioscale.eval.config; imported here by their old path too
from bioscale.eval.config import ROLE_CODES, ProbeConfig

if TYPE_CHECKING:
    from bioscale.eval.layer_search import Layer

log = logging.getLogger(__name__)

SPLITS = {"seen_compounds": ROLE_CODES["probe_test"], "novel_compounds": ROLE_CODES["novel_test"]}
HELDOUT_SOURCE = "heldout_source"


def topk_accuracy(proba: np.ndarray, classes: np.ndarray, y: np.ndarray, k: int) -> float:
    """Share of rows whose true class (``y`` (n,), or (n, K) label sets with -1 padding) is among
    the k most probable (a class the probe never saw counts as a miss)."""
    from bioscale.eval.readout import hits_at_k

    if len(y) == 0:
        return float("nan")
    labels = y[:, None] if y.ndim == 1 else y
    return float(hits_at_k(proba, classes, labels, k).mean())


def macro_f1(proba: np.ndarray, classes: np.ndarray, labels: np.ndarray) -> float:
    """Macro-F1 of the top-1 prediction; multi-label rows count the prediction as their true class
    when it is one of their labels (else their first label)."""
    from sklearn.metrics import f1_score

    if len(labels) == 0:
        return float("nan")
    pred = classes[np.argmax(proba, axis=1)]
    hit = ((labels == pred[:, None]) & (labels >= 0)).any(axis=1)
    true = np.where(hit, pred, labels[:, 0])
    return float(f1_score(true, pred, average="macro", zero_division=0))


def score(proba: np.ndarray, classes: np.ndarray, labels: np.ndarray, cfg: ProbeConfig) -> dict:
    """``{top<k>: .., macro_f1: ..}`` of (n, C) probabilities against (n, K) label sets."""
    out = {f"top{k}": topk_accuracy(proba, classes, labels, k) for k in cfg.topk}
    out["macro_f1"] = macro_f1(proba, classes, labels)
    return out


def _fit_and_score(
    name: str,
    z: np.ndarray,
    labels: np.ndarray,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    tests: dict[str, np.ndarray],
    cfg: ProbeConfig,
) -> tuple[dict[str, float], dict[str, dict[str, float]], float]:
    """Standardise on the fit rows, fit and select one readout, score it on each test mask;
    also returns the selected readout's top-1 on the validation rows (what it was chosen by)."""
    from sklearn.preprocessing import StandardScaler

    from bioscale.eval.readout import READOUTS

    scaler = StandardScaler().fit(z[fit_rows])

    def scaled(rows: np.ndarray) -> np.ndarray:
        return np.nan_to_num(scaler.transform(z[rows]), nan=0.0, posinf=0.0, neginf=0.0)

    fitted = READOUTS.get(name)(
        scaled(fit_rows), labels[fit_rows], scaled(val_rows), labels[val_rows], cfg
    )
    scores = {
        split: score(fitted.predict_proba(scaled(rows)), fitted.classes, labels[rows], cfg)
        for split, rows in tests.items()
        if rows.any()  # e.g. natural images have no novel classes
    }
    val_top1 = topk_accuracy(
        fitted.predict_proba(scaled(val_rows)), fitted.classes, labels[val_rows], 1
    )
    return fitted.selected, scores, val_top1


def probe_task(
    z: np.ndarray,
    role: np.ndarray,
    labels: np.ndarray,
    source: np.ndarray | None,
    task: str,
    cfg: ProbeConfig,
    layers: Sequence[Layer] | None = None,
) -> dict[str, float]:
    """Fit, select and score every readout of ``cfg.readouts`` on one task.

    Args:
        z: (n, d) normalised embeddings of the probe rows.
        role: (n,) role codes (``ROLE_CODES``).
        labels: (n, K) task label codes, -1 padding (K = 1 for single-label tasks); rows without
            any label (controls, compounds whose label no seen compound has) are ignored.
        source: (n,) source codes, or ``None`` (no ``heldout_source`` split).
        task: task name for the metric keys.
        cfg: probe settings.
        layers: with layer search, the normalised embeddings of every searched layer (``z`` is
            then unused): each readout picks (layer, regularisation) on ``probe_val`` and is
            scored with that choice (``bioscale.eval.layer_search``).

    Returns:
        ``probe/<task>[_mlp]/<split>/<metric>`` for every split, ``probe/<task>/C`` (linear) and
        ``probe/<task>_mlp/epoch`` (MLP); with ``layers`` also ``<prefix>/best_layer``,
        ``<prefix>/best_layer_depth`` and ``<prefix>/layer/<i>/val_top1`` per searched layer.
    """
    labelled = (labels >= 0).any(axis=1)
    train = labelled & (role == ROLE_CODES["probe_train"])
    val = labelled & (role == ROLE_CODES["probe_val"])
    if not train.any() or not val.any():
        raise ValueError(f"probe {task!r}: no labelled probe_train or probe_val rows")
    tests = {name: labelled & (role == code) for name, code in SPLITS.items()}

    heldout = None
    if cfg.heldout_source and source is not None:
        sources = np.unique(source[labelled])
        if len(sources) > 1:
            inside = source == sources[-1]
            seen_sets = [ROLE_CODES[r] for r in ("probe_train", "probe_val", "probe_test")]
            reserved = labelled & np.isin(role, seen_sets)
            heldout = (train & ~inside, val & ~inside, reserved & inside)
            if not all(m.any() for m in heldout):
                log.warning("probe %s: a held-out source leaves an empty set; skipped", task)
                heldout = None

    metrics: dict[str, float] = {}
    for name in cfg.readouts:
        prefix = f"probe/{task}" if name == "linear" else f"probe/{task}_{name}"
        if layers is None:
            chosen = z
            selected, scores, _ = _fit_and_score(name, z, labels, train, val, tests, cfg)
        else:
            from bioscale.eval.layer_search import search_layers

            found = search_layers(
                layers,
                lambda z_layer, name=name: _fit_and_score(
                    name, z_layer, labels, train, val, tests, cfg
                ),
            )
            chosen, selected, scores = found.layer.z, found.selected, found.scores
            metrics |= found.metrics(prefix)
        if heldout is not None and name == "linear":
            # the held-out source reuses the layer chosen on probe_val (its C is chosen again)
            _, more, _ = _fit_and_score(
                name, chosen, labels, heldout[0], heldout[1], {HELDOUT_SOURCE: heldout[2]}, cfg
            )
            scores |= more
        metrics |= {f"{prefix}/{key}": value for key, value in selected.items()}
        for split, values in scores.items():
            metrics |= {f"{prefix}/{split}/{metric}": v for metric, v in values.items()}
    return metrics


def linear_probe(
    emb: np.ndarray, role: np.ndarray, label: np.ndarray, task: str, cfg: ProbeConfig
) -> dict[str, float]:
    """The linear readout alone on raw embeddings, single-label, without ``heldout_source``.

    Args:
        emb: (n, d) float32 frozen embeddings of the probe sets.
        role: (n,) role codes (``ROLE_CODES``).
        label: (n,) integer task labels (-1: unlabelled).
        task: task name for the metric keys (``moa``).
        cfg: probe settings.

    Returns:
        ``probe/<task>/<split>/{top<k>, macro_f1}`` for both splits, plus ``probe/<task>/C``.
    """
    from dataclasses import replace

    single = replace(cfg, readouts=("linear",), heldout_source=False)
    return probe_task(np.asarray(emb, dtype=np.float64), role, label[:, None], None, task, single)
