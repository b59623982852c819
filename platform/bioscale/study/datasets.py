"""A trial's Ray Datasets (train, val, probe; held_out for map-based alignment), built in the
trial process by the study's data kind (``bioscale.data.kinds``).

The driver decides which rows and labels a trial uses (``study.plan.trial_data``); the kind turns
them into Ray Datasets that Ray Train shards across the trial's workers.
"""

from __future__ import annotations

from typing import Any

from bioscale.data.splits import SampleIndex
from bioscale.study.payload import build_datasets, reads_maps
from bioscale.study.plan import TrialData
from bioscale.study.spec import StudySpec


def trial_datasets(
    spec: StudySpec,
    manifest: str,
    index: SampleIndex,
    data: TrialData,
    skips=None,
    prepared: Any = None,
) -> dict[str, Any]:
    """``{"train": streamed or materialised, "val": materialised, "probe": materialised}``, and
    for image studies whose ``alignment:`` reads human maps, ``"held_out"`` (materialised): the
    probe-test images in the objective's label space. ``skips``: a ``SkipLedger`` actor that
    unreadable image sites are dropped into (``data.image.bad_samples: skip``)."""
    return build_datasets(
        spec.data,
        spec.resources,
        reads_maps(spec),
        manifest,
        index,
        data,
        skips=skips,
        prepared=prepared,
    )
