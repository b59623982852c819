"""``video``: one sample is a short RGB video with a tracking answer (FeatureTracker, arXiv
2410.02094): ``sample_id, path_video, label, condition, group``
(``bioscale.data.featuretracker``).

How a video manifest plays the parts the study machinery knows (``metadata``): the answer
(``positive``: the target ends on the end marker, or ``negative``) is the label, and in the
``train`` group also the "compound" diets keep a fraction of (so every diet stays balanced and
smaller diets are subsets of larger ones); every video is its own well; the appearance condition
is the ``batch``. ``test`` videos are held out from every role that trains (``novel``), one
"compound" per (condition, answer), and are what the trial's own read-out is scored on per
condition (``head_evaluation``: ``bioscale.eval.tracking``). No linear probes run on videos, so the
probe roles reserve nothing by default; early stopping validates on ``early_stop_val`` training-
pool videos per answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bioscale.data.kinds import (
    DataCpus,
    DataKind,
    Synthesized,
    Synthetic,
    TrialSets,
    Wording,
    register,
)
from bioscale.data.splits import SplitConfig

#: ``label`` → the answer the tracking objective's ``y`` head learns (class 1: positive)
ANSWERS = {1: "positive", 0: "negative"}


@register
class Video(DataKind):
    name = "video"
    provides = frozenset({"tracks"})
    novel_labels = False
    probes = False
    # no probe wells; 32 training-pool videos per answer for early stopping
    default_splits = SplitConfig(probe_train=0, probe_val=0, probe_test=0, early_stop_val=32)
    wording = Wording(label="tracking answer", novel="test videos", held_out="held-out videos")
    synthetic = Synthetic(
        help="FeatureTracker videos: track an object whose shape and colour morph",
        config="bioscale.data.featuretracker:FeatureTrackerConfig",
        aliases=("featuretracker",),
    )

    def synthesize(self, config: Any, out: str | Path) -> Synthesized:
        from bioscale.data import featuretracker as ft

        def progress(done: int, total: int) -> None:
            print(f"  videos written: {done}/{total}", flush=True)

        path = ft.generate_featuretracker(config, out, progress=progress)
        test = config.test_condition_names
        return Synthesized(
            manifest=Path(path),
            summary=(
                f"wrote {config.videos} training videos ({config.condition}) and "
                f"{config.test_videos} test videos per condition in {len(test)} conditions"
            ),
        )

    def inspect(self, path: str | Path):
        from bioscale.data import featuretracker as ft

        return ft.inspect(path)

    def metadata(self, path: str | Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from bioscale.data.featuretracker import VIDEO_COLUMNS
        from bioscale.data.manifest import METADATA_COLUMNS

        table = pq.read_table(path, columns=list(VIDEO_COLUMNS))
        n = table.num_rows
        ids = table.column("sample_id")
        labels = np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
        answer = np.array([ANSWERS[int(v)] for v in labels], dtype=object)
        condition = np.asarray(table.column("condition").to_pylist(), dtype=object)
        group = np.asarray(table.column("group").to_pylist(), dtype=object)
        test = group == "test"
        perturbation = np.where(test, "test/" + condition + "/" + answer, answer)
        const = pa.array(["video"] * n, pa.string())
        columns = {
            "sample_id": ids,
            "source": const,
            "batch": pa.array(condition.tolist(), pa.string()),
            "plate": const,
            "well": ids,
            "site": pa.array([0] * n, pa.int32()),
            "perturbation_id": pa.array(perturbation.tolist(), pa.string()),
            "perturbation_type": pa.array(["video"] * n, pa.string()),
            "inchikey": pa.nulls(n, pa.string()),
            "smiles": pa.nulls(n, pa.string()),
            "concentration": pa.nulls(n, pa.float64()),
            "moa": pa.array(answer.tolist(), pa.string()),
            "target": pa.nulls(n, pa.string()),
            "group": pa.array(np.where(test, "novel", "seen").tolist(), pa.string()),
        }
        return pa.table({c: columns[c] for c in METADATA_COLUMNS})

    def check(self, data: Any, path: str | Path) -> None:
        """One training condition, test videos of it, both answers in the pool."""
        from bioscale.errors import ManifestError

        index = _pool_summary(path)
        if len(index["train_conditions"]) != 1:
            raise ManifestError(
                f"video manifest {path}: the training pool (group train) holds videos of "
                f"{len(index['train_conditions'])} conditions ({', '.join(index['train_conditions'])}); "
                "a FeatureTracker study trains on one appearance condition: generate it with "
                "`bioscale data synth featuretracker --condition ...`"
            )
        if index["train_answers"] != {0, 1}:
            raise ManifestError(
                f"video manifest {path}: the training pool needs positive and negative videos"
            )
        if index["train_conditions"][0] not in index["test_conditions"]:
            raise ManifestError(
                f"video manifest {path}: no test videos of the training condition "
                f"{index['train_conditions'][0]}: the in-distribution accuracy (and track/ood_gap) "
                "need them; regenerate with --test-conditions all"
            )

    def head_evaluation(self, data: Any, index: Any):
        from bioscale.data.featuretracker import is_ood
        from bioscale.eval.tracking import TrackingEval

        conditions = tuple(sorted({str(c) for c in index.batch}))
        train = sorted({str(c) for c in index.batch[index.where(groups=frozenset({"seen"}))]})
        tested = {str(c) for c in index.batch[index.where(groups=frozenset({"novel"}))]}
        ood = tuple(c for c in conditions if c in tested and is_ood(c))
        return TrackingEval(conditions=conditions, in_distribution=train[0], ood=ood)

    def sample_shape(self, data: Any, info: Any, path: str | Path) -> tuple[int, ...]:
        from bioscale.data.featuretracker import video_shape

        frames, height, width, channels = video_shape(path)
        return (frames, channels, height, width)

    def any_sample_shape(self, data: Any) -> tuple[int, ...]:
        return (32, 3, 32, 32)

    def datasets(
        self,
        data: Any,
        manifest: str,
        index: Any,
        sets: TrialSets,
        cpus: DataCpus,
        skips: Any = None,
        prepared: Any = None,
    ) -> dict[str, Any]:
        """The training videos are gathered from their shards by Ray Data tasks and held in the
        object store; validation and test videos are read in this process (two fewer Ray Data
        executions per trial)."""
        from bioscale.data.featuretracker import MASK_COLUMN, has_masks
        from bioscale.data.pipeline import read_parquet, select_rows

        root = str(Path(manifest).resolve().parent)
        ids = index.sample_id
        # the ground-truth groups of every frame travel with training and validation videos
        # (the CV-RNN's synchrony term reads them), never with the test videos
        masks = has_masks(manifest)
        keep = ["sample_id", "path_video", *([MASK_COLUMN] if masks else [])]
        rows = read_parquet(str(manifest), columns=keep, num_cpus=cpus.select)
        # test videos in a fixed shuffled order: every evaluation batch mixes conditions and
        # answers, so a network that normalises with batch statistics (the CV-RNN, as published)
        # cannot adapt its threshold to one condition's batch
        mixed = np.random.default_rng(0).permutation(len(sets.probe.rows))
        train = select_rows(
            rows, ids[sets.train.rows], sets.train.columns, keep, cpus_per_task=cpus.select
        ).map_batches(
            _decode,
            batch_format="numpy",
            batch_size=32,
            num_cpus=cpus.select,
            fn_kwargs={"root": root, "masks": masks},
        )
        return {
            "train": train.materialize(),
            "val": _video_rows(manifest, root, ids[sets.val.rows], sets.val.columns, masks),
            "probe": _video_rows(
                manifest,
                root,
                ids[sets.probe.rows][mixed],
                {k: v[mixed] for k, v in sets.probe.columns.items()},
                False,
            ),
        }


def _decode(batch: dict[str, np.ndarray], *, root: str, masks: bool) -> dict[str, np.ndarray]:
    from bioscale.data.featuretracker import decode_videos

    out = decode_videos(batch, root=root, masks=masks)
    out.pop("sample_id", None)
    return out


def _video_rows(
    manifest: str, root: str, sample_ids: np.ndarray, labels: dict[str, np.ndarray], masks: bool
):
    """A small labelled set of videos (with their ground-truth ``mask`` when ``masks``) as a Ray
    Dataset, in ``sample_ids`` order."""
    from bioscale.data.featuretracker import MASK_COLUMN, decode_videos
    from bioscale.data.pipeline import labelled_dataset, rows_in_order

    paths = ["path_video", *([MASK_COLUMN] if masks else [])]
    table = rows_in_order(manifest, sample_ids, paths)
    batch = {c: np.asarray(table.column(c).to_pylist(), dtype=object) for c in paths}
    decoded = decode_videos(batch, root=root, masks=masks)
    return labelled_dataset({k: decoded[k] for k in ("x", "mask") if k in decoded}, labels)


def _pool_summary(path: str | Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["label", "condition", "group"])
    group = np.asarray(table.column("group").to_pylist(), dtype=object)
    condition = np.asarray(table.column("condition").to_pylist(), dtype=object)
    label = np.asarray(table.column("label").to_pylist())
    train = group == "train"
    return {
        "train_conditions": sorted({str(c) for c in condition[train]}),
        "test_conditions": {str(c) for c in condition[~train]},
        "train_answers": {int(v) for v in label[train]},
    }
