"""Real data end to end: BBBC021's CellProfiler profiles imported, baselined and studied.

``jobs/studies/bbbc021.yaml`` runs on the imported manifest through Ray Tune/Train and MLflow,
with its grid cut to one rung and one diet (three trials, one per objective) and fewer epochs to
keep the suite short; everything else — splits, evaluation tasks, the NSC/NSCB benchmark — is the
study file's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
CHANCE = 1 / 12  # 12 MoAs


@pytest.fixture(scope="module")
def bbbc021_study(realdata, ray_local, tmp_path_factory):
    from bioscale.cli import main
    from bioscale.study.runner import run_study
    from bioscale.study.spec import StudySpec

    table = realdata / "profiles" / "bbbc021" / "BBBC021_feature_selected_mad_robustize.csv"
    if not table.exists():
        pytest.skip(f"BBBC021 profiles not found at {table}")
    out = tmp_path_factory.mktemp("bbbc021")
    manifest = out / "bbbc021.parquet"
    argv = ["data", "import", "profiles", str(table), "--out", str(manifest)]
    assert main([*argv, "--batch-pattern", r"^(Week\d+)_"]) == 0
    study = yaml.safe_load((REPO / "jobs" / "studies" / "bbbc021.yaml").read_text())
    study["data"]["manifest"] = str(manifest)
    study["grids"] = [
        {
            "rung": ["mlp:w256-l3"],
            "diet": [{"replicates": 1.0}],
            "objective": study_objectives(study),
        }
    ]
    study["train"]["budget"] = {"epochs": 15}
    study["resources"] = {"cpus_per_worker": 0.5, "max_concurrent_trials": 2}
    # the table is MAD-robustised already; Pheno-CA's clip exercises data.preprocess end to end
    study["data"]["preprocess"] = {"clip": 30.0}
    spec = StudySpec.from_dict(study)
    baseline = out / "baseline.json"
    with_study = out / "study.yaml"
    with_study.write_text(yaml.safe_dump(study))
    assert (
        main(
            ["data", "baseline", str(manifest), "--study", str(with_study), "--json", str(baseline)]
        )
        == 0
    )
    result = run_study(spec, out / "run", progress=lambda m: None)
    return spec, result, json.loads(baseline.read_text())


def study_objectives(study: dict) -> list:
    return sorted(
        {o if isinstance(o, str) else o["name"] for g in study["grids"] for o in g["objective"]}
    )


def test_bbbc021_trials_learn_moa_and_report_the_standard_benchmark(bbbc021_study):
    from bioscale.study.tracking import Tracker

    spec, result, baseline = bbbc021_study
    assert result.failed == 0 and result.finished == 3
    runs = {
        r.data.params["objective"]: r.data.metrics
        for r in Tracker(result.tracking_uri).runs(result.experiment_id, "trial")
    }
    assert set(runs) == {"supervised", "ibp", "mae"}
    for objective, metrics in runs.items():
        # every trial is scored on the treatment-level benchmark and the probes
        assert metrics["nsc/moa/n_treatments"] >= 50, objective
        assert 0.0 <= metrics["nscb/moa/top1"] <= 1.0
        assert metrics["retrieval/moa/map"] > 0
    # task supervision on real profiles names a held-out well's MoA well above chance
    assert runs["supervised"]["probe/moa/seen_compounds/top1"] > 3 * CHANCE
    assert runs["supervised"]["nsc/moa/top1"] > 3 * CHANCE
    # the raw-features baseline used the study's splits and tasks: the same metric names
    assert baseline["tasks"] == list(spec.probe.tasks)
    assert {"nsc/moa/top1", "nscb/moa/top1", "probe/moa/seen_compounds/top1"} <= set(
        baseline["metrics"]
    )
    assert baseline["metrics"]["nsc/moa/top1"] > 3 * CHANCE
    # the study keeps the transform its trials were fed (and bioscale evaluate reuses)
    from bioscale.data.preprocess import load_fitted

    kept = load_fitted(result.out_dir / "preprocess.npz")
    assert kept.config.clip == 30.0 and kept.n_out == 189
    tracker = Tracker(result.tracking_uri)
    names = [a.path for a in tracker.client.list_artifacts(result.parent_run_id)]
    assert "preprocess.npz" in names
