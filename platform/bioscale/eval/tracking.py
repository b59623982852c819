"""Tracking accuracy per appearance condition: the trained model's own answer on held-out videos.

FeatureTracker (Muzellec et al. 2024, arXiv 2410.02094) asks, per video, whether the object that
started on the start marker ends on the end marker. A trial is trained on one appearance
condition (the in-distribution one) and tested on held-out videos of every condition; what is
measured is the network's own read-out (its ``y`` head: one logit, positive = "ends on the
marker"), not a probe of frozen embeddings, because the question is whether the trained tracker
generalises to appearances it never saw.

Metrics (ARCHITECTURE ``track/<condition>/<metric>``, ``track/ood_gap``):

- ``track/<condition>/accuracy`` and ``track/<condition>/balanced_accuracy`` (the mean of the
  true-positive and true-negative rates) for every test condition;
- ``track/ood/accuracy`` / ``track/ood/balanced_accuracy``: pooled over the out-of-distribution
  conditions (any whose shape or colour level is ``ood``), the curve a study fits against N and D;
- ``track/ood_gap``: accuracy on the in-distribution condition's test videos minus the pooled
  out-of-distribution accuracy (positive: the tracker relies on appearances it was trained on).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

#: The pooled out-of-distribution "condition" of the metric names.
OOD = "ood"


@dataclass(frozen=True, kw_only=True)
class TrackingEval:
    """Which conditions a trial's probe batch holds: ``conditions[code]`` names the condition of a
    probe row whose ``batch`` code is ``code``; ``in_distribution`` is the training condition;
    ``ood`` the conditions pooled into ``track/ood/*``."""

    conditions: tuple[str, ...]
    in_distribution: str
    ood: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = sorted({self.in_distribution, *self.ood} - set(self.conditions))
        if unknown:
            raise ValueError(f"tracking evaluation: conditions {unknown} have no test videos")


def scores(
    net: Any, batches: Iterable[dict[str, torch.Tensor]], device: torch.device
) -> dict[str, np.ndarray]:
    """The network's positive-class logit of every probe row, with its label and condition code
    (``logit``, ``label``, ``condition``); rows come in the batches' order."""
    import torch

    net.eval()
    out: dict[str, list[np.ndarray]] = {"logit": [], "label": [], "condition": []}
    with torch.no_grad():
        for batch in batches:
            _, heads = net(batch["x"].to(device))
            out["logit"].append(heads["y"].float().reshape(-1).cpu().numpy())
            out["label"].append(batch["label"].cpu().numpy().astype(np.int64))
            out["condition"].append(batch["batch"].cpu().numpy().astype(np.int64))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _accuracies(label: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score

    if len(label) == 0:
        return {}
    out = {"accuracy": float(np.mean(predicted == label))}
    if len(np.unique(label)) == 2:  # one class alone has no balanced accuracy
        out["balanced_accuracy"] = float(balanced_accuracy_score(label, predicted))
    return out


def tracking_metrics(found: dict[str, np.ndarray], cfg: TrackingEval) -> dict[str, float]:
    """The module docstring's metrics from ``scores``' output (a logit > 0 answers "positive")."""
    label, code = found["label"], found["condition"]
    predicted = (found["logit"] > 0).astype(np.int64)
    metrics: dict[str, float] = {}
    for c, name in enumerate(cfg.conditions):
        rows = code == c
        for metric, value in _accuracies(label[rows], predicted[rows]).items():
            metrics[f"track/{name}/{metric}"] = value
    ood_codes = [cfg.conditions.index(n) for n in cfg.ood]
    if ood_codes:
        rows = np.isin(code, ood_codes)
        for metric, value in _accuracies(label[rows], predicted[rows]).items():
            metrics[f"track/{OOD}/{metric}"] = value
        in_dist = metrics.get(f"track/{cfg.in_distribution}/accuracy")
        if in_dist is not None and f"track/{OOD}/accuracy" in metrics:
            metrics["track/ood_gap"] = in_dist - metrics[f"track/{OOD}/accuracy"]
    return metrics


def evaluate_tracking(
    net: Any, batches: Iterable[dict[str, torch.Tensor]], device: torch.device, cfg: TrackingEval
) -> dict[str, float]:
    """``tracking_metrics`` of the network on the probe batches (the held-out test videos)."""
    return tracking_metrics(scores(net, batches, device), cfg)
