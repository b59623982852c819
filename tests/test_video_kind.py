"""The video kind refuses manifests a FeatureTracker study cannot use, naming the fix, before any
compute; and plays a video manifest's parts as the study machinery expects."""

from __future__ import annotations

from collections import Counter

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bioscale.data import kinds
from bioscale.data.featuretracker import FeatureTrackerConfig
from bioscale.data.splits import SplitConfig
from bioscale.errors import ManifestError
from bioscale.study.spec import DataSpec

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    cfg = FeatureTrackerConfig(videos=32, test_videos=4, frames=4, seed=0)
    out = tmp_path_factory.mktemp("ft")
    return kinds.get("video").synthesize(cfg, out).manifest


def _rewrite(path, tmp_path, change):
    table = change(pq.read_table(path))
    dest = path.parent / f"{tmp_path.name}.parquet"  # beside the shards its paths point at
    pq.write_table(table, dest)
    return dest


def test_roles_answers_and_the_tracking_evaluation(manifest):
    data = DataSpec(kind="video", manifest=str(manifest), splits=SplitConfig(early_stop_val=4))
    opened = kinds.open_manifest(data, manifest)
    assert opened.sample_shape == (4, 3, 32, 32)
    index = opened.index
    roles = dict(Counter(index.role.tolist()))
    # no probe wells; 4 early-stopping videos per answer; every test video held out
    assert roles == {"pool": 24, "es_val": 8, "novel_test": 36}
    evaluation = kinds.get("video").head_evaluation(data, index)
    assert evaluation.in_distribution == "shape-id_color-id" and len(evaluation.conditions) == 9
    assert "shape-none_color-none" not in evaluation.ood and len(evaluation.ood) == 5


def test_a_pool_of_several_conditions_is_refused(manifest, tmp_path):
    def two_conditions(table):
        cond = table.column("condition").to_pylist()
        group = table.column("group").to_pylist()
        first = group.index("train")
        cond[first] = "shape-none_color-none"
        return table.set_column(table.schema.get_field_index("condition"), "condition", [cond])

    bad = _rewrite(manifest, tmp_path, two_conditions)
    with pytest.raises(ManifestError, match="trains on one appearance condition"):
        kinds.open_manifest(DataSpec(kind="video", manifest=str(bad)), bad)


def test_a_manifest_without_test_videos_of_its_condition_is_refused(manifest, tmp_path):
    def drop_in_distribution_tests(table):
        keep = pc.or_(
            pc.equal(table.column("group"), "train"),
            pc.not_equal(table.column("condition"), "shape-id_color-id"),
        )
        return table.filter(keep)

    bad = _rewrite(manifest, tmp_path, drop_in_distribution_tests)
    with pytest.raises(ManifestError, match="no test videos of the training condition"):
        kinds.open_manifest(DataSpec(kind="video", manifest=str(bad)), bad)
