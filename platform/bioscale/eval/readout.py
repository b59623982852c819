"""Readouts trained on frozen embeddings: a linear probe and the paper's MLP (SEEDS §1).

Both are fit on one set of rows and selected on another (never on a test split — the published
code picked epochs on test): the linear probe's inverse L2 strength ``C`` and the MLP's epoch are
the ones with the best validation top-1. Multi-label rows (a compound with several targets) are
trained on once per label; a prediction is a hit when any of the row's labels is predicted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

# READOUTS is declared beside ProbeConfig (which checks names against it); filled here
from bioscale.eval.config import READOUTS

if TYPE_CHECKING:
    from bioscale.eval.config import ProbeConfig


@dataclass(frozen=True, kw_only=True)
class FittedReadout:
    """A selected readout: class probabilities for new rows and what was selected."""

    classes: np.ndarray  # (C,) label codes in the probability columns' order
    predict_proba: Callable[[np.ndarray], np.ndarray]  # (n, d) → (n, C)
    selected: dict[str, float]  # e.g. {"C": 0.1} or {"epoch": 12}


def expand_labels(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) rows and (n, K) label codes (-1 padding) → one training row per valid label."""
    rows, cols = np.nonzero(labels >= 0)
    return z[rows], labels[rows, cols]


def hits_at_k(proba: np.ndarray, classes: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(n,) whether any of a row's labels (n, K; -1 padding) is among its k most probable classes
    (a label the readout never saw is a miss)."""
    k = min(k, proba.shape[1])
    top = classes[np.argsort(-proba, axis=1)[:, :k]]  # (n, k)
    valid = labels >= 0
    return ((top[:, :, None] == labels[:, None, :]) & valid[:, None, :]).any(axis=(1, 2))


def _val_top1(fitted_proba: np.ndarray, classes: np.ndarray, labels: np.ndarray) -> float:
    return float(hits_at_k(fitted_proba, classes, labels, 1).mean()) if len(labels) else 0.0


@READOUTS.register("linear")
def fit_linear(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_val: np.ndarray,
    y_val: np.ndarray,
    cfg: ProbeConfig,
) -> FittedReadout:
    """L2 logistic regression (multinomial, lbfgs); ``C`` from ``cfg.cs`` by validation top-1.

    The C path is walked from strong to weak regularisation with warm starts (same optimum,
    a fraction of the iterations)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, y = expand_labels(z_train, y_train)
    clf = LogisticRegression(max_iter=cfg.max_iter, warm_start=True)
    best: tuple[float, float, LogisticRegression] | None = None
    for c in sorted(cfg.cs):
        clf.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        score = _val_top1(clf.predict_proba(z_val), clf.classes_, y_val)
        if best is None or score > best[0]:
            best = (score, c, copy.deepcopy(clf))
    assert best is not None  # cfg.cs is non-empty (ProbeConfig validates it)
    _, c, chosen = best
    return FittedReadout(
        classes=chosen.classes_, predict_proba=chosen.predict_proba, selected={"C": float(c)}
    )


@READOUTS.register("mlp")
def fit_mlp(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_val: np.ndarray,
    y_val: np.ndarray,
    cfg: ProbeConfig,
) -> FittedReadout:
    """The Pheno-CA readout: Linear(d→H)→GELU→Dropout→Linear(H→H)→GELU→Dropout→Linear(H→C),
    H = ``cfg.mlp_hidden`` (2048 in the paper), dropout ``cfg.mlp_dropout`` (0.1), AdamW,
    cross-entropy; the epoch with the best validation top-1 is kept (patience
    ``cfg.mlp_patience`` epochs)."""
    import torch
    from torch import nn

    x_np, y_np = expand_labels(z_train, y_train)
    classes, y_idx = np.unique(y_np, return_inverse=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    d, h, p = x_np.shape[1], cfg.mlp_hidden, cfg.mlp_dropout
    net = nn.Sequential(
        nn.Linear(d, h),
        nn.GELU(),
        nn.Dropout(p),
        nn.Linear(h, h),
        nn.GELU(),
        nn.Dropout(p),
        nn.Linear(h, len(classes)),
    )
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.mlp_lr, weight_decay=cfg.mlp_weight_decay)
    x = torch.as_tensor(x_np, dtype=torch.float32)
    y = torch.as_tensor(y_idx, dtype=torch.int64)
    xv = torch.as_tensor(z_val, dtype=torch.float32)

    def proba(z: torch.Tensor) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            return torch.softmax(net(z), dim=1).numpy()

    best_score, best_epoch, best_state, bad = -1.0, 0, None, 0
    for epoch in range(1, cfg.mlp_epochs + 1):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg.mlp_batch_size):
            idx = order[start : start + cfg.mlp_batch_size]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        score = _val_top1(proba(xv), classes, y_val)
        if score > best_score:
            best_score, best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            bad += 1
            if bad >= cfg.mlp_patience:
                break
    net.load_state_dict(best_state)
    return FittedReadout(
        classes=classes,
        predict_proba=lambda z: proba(torch.as_tensor(z, dtype=torch.float32)),
        selected={"epoch": float(best_epoch)},
    )
