"""Rung ``features:raw``: the raw features as a trial (N = 0, no training) — one trial for a
whole grid, refused where it cannot apply. Its end-to-end run is in ``test_bbbc021_study.py``."""

from __future__ import annotations

import pytest

from bioscale.errors import ConfigError
from bioscale.study.plan import plan
from bioscale.study.spec import StudySpec

pytestmark = pytest.mark.timeout(120)


def _study(manifest, **extra) -> StudySpec:
    return StudySpec.from_dict(
        {
            "name": "raw",
            "data": {"manifest": str(manifest)},
            "grids": [
                {
                    "rung": ["features:raw", "debug"],
                    "diet": [{"replicates": 0.5}, {"replicates": 1.0}],
                    "objective": ["supervised", "ibp"],
                }
            ],
            "seeds": [0, 1],
            "train": {"budget": {"epochs": 2}},
            **extra,
        }
    )


def test_one_untrained_trial_stands_for_every_diet_objective_and_seed(synth_manifest):
    p = plan(_study(synth_manifest), synth_manifest)
    raw = [t for t in p.trials if t.point.rung == "features:raw"]
    assert len(raw) == 1 and len(p.trials) == 1 + 2 * 2 * 2
    t = raw[0]
    assert (
        t.params["N"] == 0 and t.params["N_heads"] == 0 and t.params["model_family"] == "features"
    )
    assert t.loop.max_epochs == 0 and t.flops_total == 0 and t.params["D_samples"] == 0
    assert t.loop.input_shape[0] > 0  # the manifest's feature width
    reasons = [why for point, why in p.dropped if point.rung == "features:raw"]
    assert len(reasons) == 7 and all("is not trained" in r for r in reasons)


def test_features_raw_is_refused_where_it_cannot_apply(synth_manifest):
    with pytest.raises(ConfigError, match="no layers to search"):
        plan(_study(synth_manifest, probe={"selection": "search"}), synth_manifest)
