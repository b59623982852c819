"""One small study through Ray Tune/Train/Data into MLflow (the session's shared finished study)."""

import json

import pytest

from bioscale.names import KIND, NODE_IDS, PARENT, TRIAL_KEY, TRIAL_PARAMS

# the first test also pays for the session's study (Ray start, 4 trials)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def trial_runs(study):
    tracker, result = study["tracker"], study["result"]
    return tracker.runs(result.experiment_id, "trial")


def test_every_trial_is_one_finished_child_run_with_the_frozen_names(finished_study):
    result = finished_study["result"]
    # chance for the MoA probe: one MoA in n (the synthetic screen has as many compounds per MoA)
    chance = 1.0 / finished_study["spec"].data.synthetic.n_moa
    novel_top1 = []
    assert result.failed == 0 and result.finished == result.planned == 4
    runs = trial_runs(finished_study)
    assert len(runs) == 4
    keys = set()
    for run in runs:
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags[KIND] == "trial" and tags[PARENT] == result.parent_run_id
        assert tags[NODE_IDS]
        keys.add(tags[TRIAL_KEY])
        assert set(TRIAL_PARAMS) <= set(run.data.params)
        metrics = run.data.metrics
        for split in ("seen_compounds", "novel_compounds"):
            for k in ("top1", "top10"):
                assert 0.0 <= metrics[f"probe/moa/{split}/{k}"] <= 1.0
        # Embeddings that carry the MoA signal, aligned with their rows: above chance on the novel
        # compounds' 48 probe-test wells (random embeddings: 1/6 ± 0.05). Two epochs of at most
        # 3 steps barely move the backbone from its initialisation (whose random projection of
        # the synthetic features already scores ~0.5), so this shows no gain from training, and
        # the seen compounds' 18 test wells are too few for a margin (measured 0.11-0.28).
        novel_top1.append(metrics["probe/moa/novel_compounds/top1"])
        assert novel_top1[-1] >= 1.5 * chance, (run.data.params["objective"], novel_top1[-1])
        assert metrics["compute/flops"] > 0 and metrics["perf/samples_per_s"] > 0
        assert {"train/loss", "val/loss", "perf/overhead_seconds"} <= set(metrics)
    assert len(keys) == 4
    assert sum(novel_top1) / len(novel_top1) >= 2 * chance, novel_top1


def test_step_metrics_have_one_point_per_epoch(finished_study):
    client = finished_study["tracker"].client
    run = trial_runs(finished_study)[0]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]


def test_parent_run_and_progress(finished_study):
    client = finished_study["tracker"].client
    parent = client.get_run(finished_study["result"].parent_run_id)
    assert parent.data.tags[KIND] == "study" and parent.info.status == "FINISHED"
    assert sum("✓ trial" in m for m in finished_study["messages"]) == 4


def test_report_and_fit_runs(finished_study):
    analysis = finished_study["analysis"]
    assert analysis.report.exists() and "<h1>Scaling study" in analysis.report.read_text()
    fits = json.loads(analysis.fits_json.read_text())["fits"]
    assert {f["group"]["objective"] for f in fits} == {"supervised", "ibp"}
    tracker, result = finished_study["tracker"], finished_study["result"]
    assert len(tracker.runs(result.experiment_id, "fit")) == len(fits)
    assert len(tracker.runs(result.experiment_id, "report")) == 1


def test_running_again_logs_nothing_new(finished_study):
    from bioscale.study.runner import run_study

    before = len(trial_runs(finished_study))
    again = run_study(finished_study["spec"], finished_study["out"], progress=lambda m: None)
    assert again.skipped == again.planned == 4 and again.finished == 0
    assert len(trial_runs(finished_study)) == before
