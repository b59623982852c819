"""The scaling report's issues, notes, training curves and MLflow links: an L-shaped design's
single points are quiet notes, not issues, while a failed trial is one; every trial's per-epoch
``val/loss`` and ``train/*`` are drawn from its MLflow history, one line per trial; each trial row
links to its MLflow run and the heading to the study's runs table."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from bioscale.scaling.api import CurveSpec, fit_table, report_table
from bioscale.scaling.plots import training_figure, training_grid, training_panels
from bioscale.scaling.runs import mlflow_ui, read_trial_runs, runs_table
from bioscale.scaling.table import design_gaps

pytestmark = pytest.mark.timeout(120)

METRIC = "probe/moa/novel_compounds/top1"
RUNGS = {"mlp:a": 1_000, "mlp:b": 4_000, "mlp:c": 16_000, "mlp:d": 64_000}
DIETS = {"rep=0.125": 500, "rep=0.25": 1_000, "rep=0.5": 2_000, "rep=1": 4_000}
#: the study's curve families: along D per rung, along N per diet (``study.analysis.CURVES``)
FAMILIES = (CurveSpec(axes=("D",), split_by=("rung",)), CurveSpec(axes=("N",), split_by=("diet",)))


def _accuracy(N: float, D: float, rng: np.random.Generator) -> float:
    """1 − err with err = 0.05 + 3·D^−0.3 + 5·N^−0.3, 1% log-normal noise."""
    return 1.0 - (0.05 + 3.0 * D**-0.3 + 5.0 * N**-0.3) * math.exp(rng.normal(0.0, 0.01))


def l_design(objectives=("ibp", "supervised"), seeds: int = 2) -> list[dict]:
    """Rung mlp:b at every diet, every rung at the full diet: 7 points per objective."""
    rng = np.random.default_rng(0)
    rows = []
    for objective in objectives:
        for rung, N in RUNGS.items():
            for diet, D in DIETS.items():
                if rung != "mlp:b" and diet != "rep=1":
                    continue
                for seed in range(seeds):
                    rows.append(
                        {
                            "objective": objective,
                            "rung": rung,
                            "N": N,
                            "diet": diet,
                            "D_samples": D,
                            "seed": seed,
                            METRIC: _accuracy(N, D, rng),
                        }
                    )
    return rows


def _families(rows):
    return [
        (
            spec.axes,
            fit_table(
                rows,
                metric=METRIC,
                axes=spec.axes,
                direction="higher",
                group=["objective"],
                split_by=spec.split_by,
                n_boot=0,
            ).fits,
        )
        for spec in FAMILIES
    ]


def test_an_l_design_has_no_issues_and_a_failed_trial_is_one(tmp_path):
    """~3 s (mostly the scaling plots): two table reports of a 28-trial L design."""
    rows = l_design()
    clean = report_table(
        rows, tmp_path / "clean", title="l", source="t.csv", metric=METRIC,
        direction="higher", specs=FAMILIES, n_boot=0,
    )  # fmt: skip
    assert clean.issues == []
    assert clean.notes[:2] == [
        "6 group(s) are single points of the N arm of the design: not fitted along D "
        "(objective ibp, supervised × rung mlp:a, mlp:c, mlp:d)",
        "6 group(s) are single points of the D arm of the design: not fitted along N "
        "(objective ibp, supervised × diet rep=0.125, rep=0.25, rep=0.5)",
    ]
    saved = json.loads(clean.fits_json.read_text())
    assert saved["issues"] == [] and saved["notes"] == clean.notes
    assert {(f.group["objective"], f.axis[0]) for f in clean.fits} == {
        (o, a) for o in ("ibp", "supervised") for a in ("D", "N")
    }
    page = clean.report.read_text()
    issues_html = page.split("<h2>Data issues</h2>")[1].split("<h2>")[0]
    assert "<ul><li>none</li></ul>" in issues_html and "single points of the N arm" in issues_html
    # a report of a table has no MLflow runs: its training-curve section is one line saying so
    training = page.split("<h2>Training curves</h2>")[1].split("<h2>")[0]
    assert "Not shown: this report was built from a table" in training and "<img" not in training

    failed = [dict(r) for r in rows]
    bad = next(
        i
        for i, r in enumerate(failed)
        if (r["rung"], r["diet"], r["seed"]) == ("mlp:b", "rep=0.25", 1)
    )
    failed[bad][METRIC] = float("nan")
    broken = report_table(
        failed, tmp_path / "failed", title="l", source="t.csv", metric=METRIC,
        direction="higher", specs=FAMILIES, n_boot=0,
    )  # fmt: skip
    assert len(broken.issues) == 1, broken.issues
    assert f"1 row(s) have a missing or non-finite {METRIC} (rows {bad})" in broken.issues[0]
    assert broken.notes[:2] == clean.notes[:2]


def _with(rows, rung, diets, rng):
    N = {**RUNGS, "mlp:e": 256_000}[rung]
    D = {**DIETS, "rep=0.375": 1_500}
    return rows + [
        {"objective": "ibp", "rung": rung, "N": N, "diet": d, "D_samples": D[d], "seed": 0,
         METRIC: _accuracy(N, D[d], rng)}
        for d in diets
    ]  # fmt: skip


def test_design_gaps_name_the_curves_that_need_action():
    """~0.5 s: fits without bootstrap of four variants of the L design (one objective)."""
    rng = np.random.default_rng(1)
    base = l_design(objectives=("ibp",), seeds=1)
    # rung mlp:e at a diet no other rung has: one scale along D and along N, in no fit
    gaps = design_gaps(rows := _with(base, "mlp:e", ["rep=0.375"], rng), _families(rows))
    assert gaps.issues == [
        "objective=ibp, rung=mlp:e, diet=rep=0.375: one scale along D and along N: its trials "
        "are in no fit; add scales along D or along N"
    ]
    # rung mlp:c at three diets: a D curve the power law (4 parameters) cannot fit; the N pairs
    # (mlp:b, mlp:c) at rep=0.25 and rep=0.5 are on no fitted D curve of mlp:c either
    gaps = design_gaps(rows := _with(base, "mlp:c", ["rep=0.25", "rep=0.5"], rng), _families(rows))
    too_few = "too few for the power law (needs at least 4 distinct scales, has"
    assert [i.split(" scales along ")[0] for i in gaps.issues] == [
        "objective=ibp, rung=mlp:c: 3",
        "objective=ibp, diet=rep=0.25: 2",
        "objective=ibp, diet=rep=0.5: 2",
    ]
    assert all(too_few in i for i in gaps.issues)
    # with a fourth diet mlp:c has a fitted D curve: the N pairs it shares with mlp:b are notes
    diets = ["rep=0.125", "rep=0.25", "rep=0.5"]
    gaps = design_gaps(rows := _with(base, "mlp:c", diets, rng), _families(rows))
    assert gaps.issues == []
    assert gaps.notes[-1] == (
        "3 group(s) have too few scales along N for a fit, and each of their points is on a "
        "fitted curve along D: not fitted along N (objective ibp × diet rep=0.125, rep=0.25, "
        "rep=0.5)"
    )
    # failed trials cost rung mlp:b its D curve: three of its four diets have no metric
    lost = [dict(r) for r in base]
    for r in lost:
        if r["rung"] == "mlp:b" and r["diet"] != "rep=1":
            r[METRIC] = None
    gaps = design_gaps(lost, _families(lost))
    assert gaps.issues == [
        f"objective=ibp, rung=mlp:b: meant as a curve along D (4 scales in the design) but only "
        f"1 have a usable {METRIC}: no curve; rerun or fix the failed trials"
    ]


def test_panels_cap_their_trials_across_diets():
    """~1 ms: 30 trials in one (objective, rung) panel, capped at 24."""
    rows = [
        {"objective": "ibp", "rung": "mlp:a", "N": 1_000, "diet": diet, "D_samples": D,
         "seed": seed, "run_id": f"{diet}-{seed}"}
        for diet, D in (("rep=1", 4_000), ("rep=0.25", 1_000), ("rep=0.5", 2_000))
        for seed in range(10)
    ]  # fmt: skip
    (panel,) = training_panels(rows, max_trials=24)["ibp"]
    assert panel.diets == ["rep=0.25", "rep=0.5", "rep=1"]  # fewest training samples first
    assert panel.left_out == 6 and len(panel.trials) == 24
    for diet in panel.diets:
        assert sorted(t["seed"] for t in panel.trials if t["diet"] == diet) == list(range(8))


def _epochs(i: int) -> int:
    return 3 + i % 4


def _val(i: int, epoch: int) -> float:
    return 2.0 + 1.0 / epoch + 0.01 * i


def _train(i: int, epoch: int) -> float:
    return 1.5 / epoch + 0.01 * i


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite MLflow store written with the MLflow client as the study driver writes one: a
    study run; per objective the 7 trials of the L design (per-epoch ``train/loss``,
    ``train/ce``, IBP's ``train/invariance``, ``val/loss``; the final probe metric); an IBP trial
    that FAILED; a supervised trial KILLED once and then FINISHED under the same trial key."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    out = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    eid = client.create_experiment("report-curves", artifact_location=(out / "art").as_uri())
    parent = client.create_run(eid, tags={"bioscale.kind": "study"}).info.run_id
    rng = np.random.default_rng(2)
    trials = []

    def trial(objective, rung, diet, i, status="FINISHED", key=None):
        run = client.create_run(
            eid,
            tags={
                "bioscale.kind": "trial",
                "mlflow.parentRunId": parent,
                "bioscale.trial_key": key or f"key-{i}",
            },
        ).info.run_id
        N, D = RUNGS[rung], DIETS[diet]
        params = {"objective": objective, "rung": rung, "diet": diet, "N": N, "D_samples": D,
                  "seed": 0, "model_family": "mlp"}  # fmt: skip
        metrics = []
        for e in range(1, _epochs(i) + 1):
            metrics += [
                Metric("train/loss", _train(i, e), 0, e),
                Metric("train/ce", _train(i, e) - (0.1 if objective == "ibp" else 0.0), 0, e),
                Metric("val/loss", _val(i, e), 0, e),
            ]
            if objective == "ibp":
                metrics.append(Metric("train/invariance", 0.1, 0, e))
        last = _epochs(i)
        metrics += [
            Metric("train/epochs", last, 0, last),
            Metric("train/best_epoch", last, 0, last),
        ]
        if status == "FINISHED":
            metrics.append(Metric(METRIC, _accuracy(N, D, rng), 0, last))
        client.log_batch(run, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(run, status)
        return {**params, "run_id": run, "status": status, "i": i}

    i = 0
    for objective in ("ibp", "supervised"):
        for rung in RUNGS:
            for diet in DIETS:
                if rung == "mlp:b" or diet == "rep=1":
                    if (objective, rung, diet) == ("supervised", "mlp:c", "rep=1"):
                        trials.append(trial(objective, rung, diet, i, "KILLED", key="again"))
                        i += 1
                        trials.append(trial(objective, rung, diet, i, key="again"))
                    else:
                        trials.append(trial(objective, rung, diet, i))
                    i += 1
    trials.append(trial("ibp", "mlp:c", "rep=0.5", i, "FAILED"))
    return SimpleNamespace(uri=uri, eid=eid, parent=parent, trials=trials, out=out)


@pytest.fixture(scope="module")
def analysed(store):
    """The study analysis of ``store``: fits (no bootstrap), training curves, report (~6 s)."""
    from bioscale.study.analysis import analyse
    from bioscale.study.tracking import Tracker

    tracker = Tracker(store.uri, artifact_root=store.out / "mlartifacts")
    return analyse(tracker, store.eid, store.parent, "report-curves", store.out, n_boot=0)


def test_failed_trials_are_the_only_issues_of_a_study(store, analysed):
    issues = json.loads(analysed.fits_json.read_text())["issues"]
    failed = next(t for t in store.trials if t["status"] == "FAILED")
    assert len(issues) == 1, issues  # the KILLED trial finished on its retry: not an issue
    assert issues[0].startswith(
        "trial objective=ibp, rung=mlp:c, diet=rep=0.5, seed=0 ended FAILED "
        f"(MLflow run {failed['run_id']})"
    )


def test_training_curves_draw_one_line_per_trial_from_the_mlflow_history(store, analysed):
    from mlflow.tracking import MlflowClient

    assert {"training_curves.png", "training_terms.png"} <= {p.name for p in analysed.plots}
    assert all(p.stat().st_size > 10_000 for p in analysed.plots if p.name.startswith("train"))
    client = MlflowClient(tracking_uri=store.uri)
    rows = runs_table(client, store.eid)
    runs = read_trial_runs(client, store.eid, rows, store.uri)
    finished = {t["run_id"]: t for t in store.trials if t["status"] == "FINISHED"}
    assert set(runs.histories) == set(finished)
    for run_id, t in finished.items():
        epochs = range(1, _epochs(t["i"]) + 1)
        assert runs.histories[run_id]["val/loss"] == [(e, _val(t["i"], e)) for e in epochs]
        assert runs.histories[run_id]["train/loss"] == [(e, _train(t["i"], e)) for e in epochs]
        assert "train/epochs" not in runs.histories[run_id]  # a total, not a per-epoch curve

    panels = training_panels(rows)
    main_rows, term_rows = training_grid(panels, runs.histories)
    # supervised's train/ce is its loss (no panel); IBP's ce and invariance differ from it
    assert term_rows == [("ibp", ("train/ce",)), ("ibp", ("train/invariance",))]
    fig = training_figure(panels, runs.histories, main_rows)
    try:
        drawn = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert len(drawn) == 8  # 2 objectives × 4 rungs
        for ax in drawn:
            objective, rung = ax.get_title().split(" · ")
            mine = [
                t for t in finished.values() if (t["objective"], t["rung"]) == (objective, rung)
            ]
            val, train = ax.collections
            assert val.get_linestyle() != train.get_linestyle()
            for collection, curve in ((val, _val), (train, _train)):
                lines = collection.get_segments()
                assert len(lines) == len(mine)  # one line per trial
                expected = sorted(
                    [(e, curve(t["i"], e)) for e in range(1, _epochs(t["i"]) + 1)] for t in mine
                )
                assert sorted(line.tolist() for line in lines) == [
                    [list(p) for p in c] for c in expected
                ]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_each_trial_row_links_to_its_mlflow_run(store, analysed):
    page = analysed.report.read_text()
    ui = "http://127.0.0.1:5000"
    trials = page.split("<h2>Trials (")[1]
    assert trials.startswith(
        f'14) · <a href="{ui}/#/experiments/{store.eid}/runs?workflowType=machine_learning">'
    )
    assert f"--backend-store-uri {store.uri} --port 5000" in trials
    table_rows = re.findall(r"<tr>(.*?)</tr>", trials.split("</table>")[0])[1:]
    assert len(table_rows) == 14
    for t in store.trials:
        link = f'<a href="{ui}/#/experiments/{store.eid}/runs/{t["run_id"]}">'
        hits = [r for r in table_rows if link in r]
        if t["status"] != "FINISHED":
            assert not hits  # not a row of the table (the failed one is an issue)
            continue
        (row,) = hits
        for value in (t["objective"], t["rung"], t["diet"]):
            assert f"<td class=l>{value}</td>" in row


def test_the_ui_of_a_store_and_what_study_run_prints(capsys):
    from bioscale.cli.study import print_where

    sqlite = mlflow_ui("sqlite:////srv/out/mlflow.db")
    assert sqlite.run("3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert (
        sqlite.launch
        == ".venv/bin/mlflow ui --backend-store-uri sqlite:////srv/out/mlflow.db --port 5000"
    )
    server = mlflow_ui("https://bioscale:s3cret@mlflow.example.org/prefix/?token=x")
    assert server.base == "https://mlflow.example.org/prefix" and server.launch is None
    assert server.runs_table("7") == (
        "https://mlflow.example.org/prefix/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert mlflow_ui("postgresql://u:p@db/mlflow") is None

    analysis = SimpleNamespace(report="r.html", plots=[], fits_json="f.json", table="t.csv")
    for uri in ("sqlite:////srv/out/mlflow.db", "https://bioscale:s3cret@mlflow.example.org"):
        print_where(SimpleNamespace(tracking_uri=uri, experiment_id="7"), analysis)
    out = capsys.readouterr().out
    assert (
        "browse it:    .venv/bin/mlflow ui --backend-store-uri sqlite:////srv/out/mlflow.db "
        "--port 5000   (then open http://127.0.0.1:5000/#/experiments/7/runs?"
        "workflowType=machine_learning)"
    ) in out
    assert (
        "runs table:   https://mlflow.example.org/#/experiments/7/runs?workflowType=machine_learning"
    ) in out
    assert "s3cret" not in out
