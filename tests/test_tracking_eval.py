"""Tracking metrics per condition from the network's own read-out, against hand-counted answers."""

from __future__ import annotations

import numpy as np
import pytest

from bioscale.eval.tracking import TrackingEval, tracking_metrics

pytestmark = pytest.mark.timeout(60)

CONDITIONS = ("shape-id_color-id", "shape-none_color-none", "shape-ood_color-id")


def test_accuracy_balanced_accuracy_and_ood_gap_match_a_hand_count():
    cfg = TrackingEval(
        conditions=CONDITIONS, in_distribution="shape-id_color-id", ood=("shape-ood_color-id",)
    )
    # id: 4 videos, all right; none: 4 videos, 3 right; ood: 6 videos (4 positives, 2 negatives),
    # the network answers "positive" to every one: 4/6 right, balanced (1.0 + 0.0) / 2
    label = np.array([1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0])
    logit = np.array([2.0, -1, 3, -2, 1, -1, -1, -3, 1, 1, 1, 1, 1, 1])
    condition = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    m = tracking_metrics({"label": label, "logit": logit, "condition": condition}, cfg)
    assert m["track/shape-id_color-id/accuracy"] == 1.0
    assert m["track/shape-none_color-none/accuracy"] == 0.75
    assert m["track/shape-none_color-none/balanced_accuracy"] == 0.75
    assert m["track/shape-ood_color-id/accuracy"] == pytest.approx(4 / 6)
    assert m["track/shape-ood_color-id/balanced_accuracy"] == 0.5
    assert m["track/ood/accuracy"] == pytest.approx(4 / 6)
    assert m["track/ood_gap"] == pytest.approx(1.0 - 4 / 6)


def test_conditions_without_test_videos_are_refused():
    with pytest.raises(ValueError, match="no test videos"):
        TrackingEval(conditions=CONDITIONS[:2], in_distribution="x", ood=())
