"""A trial's Ray Datasets (train, val, probe) for each kind of data, built in the trial process.

The driver decides which rows and labels a trial uses (``study.plan.trial_data``); this module turns
them into Ray Datasets that Ray Train shards across the trial's workers.
"""

from __future__ import annotations

from typing import Any

from bioscale.data.pipeline import (
    MAP_DYE,
    decoded_natural,
    decoded_sites,
    manifest_has_maps,
    profile_rows,
    read_profiles,
    read_sites,
    with_labels,
)
from bioscale.data.splits import SampleIndex
from bioscale.eval.trial_alignment import MAP_EVALUATIONS
from bioscale.study.plan import TrialData, study_dyes
from bioscale.study.spec import StudySpec


def trial_datasets(
    spec: StudySpec, manifest: str, index: SampleIndex, data: TrialData, skips=None
) -> dict[str, Any]:
    """``{"train": streamed or materialised, "val": materialised, "probe": materialised}``, and
    for image studies whose ``alignment:`` reads human maps, ``"held_out"`` (materialised): the
    probe-test images in the objective's label space. ``skips``: a ``SkipLedger`` actor that
    unreadable image sites are dropped into (``data.image.bad_samples: skip``)."""
    res = spec.resources
    ids = index.sample_id
    sets = (("train", data.train), ("val", data.val), ("probe", data.probe))
    maps_read = spec.alignment is not None and set(MAP_EVALUATIONS) & set(spec.alignment.enabled())
    if data.held_out is not None and maps_read:  # saliency/adversarial alignment's images
        sets += (("held_out", data.held_out),)
    if spec.data.kind == "profiles":
        # The training diet is read, selected and labelled by Ray Data tasks and held in the object
        # store (profiles are small), so the Train workers never wait on data tasks. The two small
        # evaluation sets are read straight from the rows they need: two fewer Ray Data
        # executions per trial, which on a small machine cost more than the trial's training.
        profiles = read_profiles(manifest, cpus_per_task=res.data_cpus_per_task)
        datasets = {
            "train": with_labels(
                profiles,
                ids[data.train.rows],
                data.train.columns,
                cpus_per_task=res.data_cpus_per_task,
            ).materialize(),
            "val": profile_rows(manifest, ids[data.val.rows], data.val.columns),
            "probe": profile_rows(manifest, ids[data.probe.rows], data.probe.columns),
        }
    elif spec.data.kind == "natural":
        image = spec.data.image
        datasets = {}
        for name, t in sets:
            training = name == "train"
            ds = decoded_natural(
                manifest,
                ids[t.rows],
                t.columns,
                size=image.crop,
                flip=training,
                seed=None if training else 0,
                batch_size=image.decode_batch_size,
                cpus_per_task=image.decode_cpus,
                select_cpus=res.data_cpus_per_task,
                maps=spec.data.maps,
            )
            datasets[name] = ds if training else ds.materialize()
    else:
        # Images stream: training crops are decoded as the workers consume them (fresh random
        # crops every pass); the small evaluation sets are decoded once (centre crops).
        image = spec.data.image
        dyes = study_dyes(spec, manifest)
        with_maps = manifest_has_maps(manifest)
        sites = read_sites(
            manifest, [*dyes, MAP_DYE] if with_maps else dyes, cpus_per_task=res.data_cpus_per_task
        )
        datasets = {}
        for name, t in sets:
            training = name == "train"
            ds = decoded_sites(
                sites,
                ids[t.rows],
                t.columns,
                dyes=dyes,
                crop=image.crop,
                crops_per_site=image.crops_per_site if training else 1,
                crop_mode="random" if training else "centre",
                downsample=image.downsample,
                normalise=image.normalise,
                seed=None if training else 0,
                batch_size=image.decode_batch_size,
                cpus_per_task=image.decode_cpus,
                select_cpus=res.data_cpus_per_task,
                with_maps=with_maps,
                skips=skips,
            )
            datasets[name] = ds if training else ds.materialize()
    return datasets
