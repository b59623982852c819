"""``bioscale fit``, ``forecast`` and ``report`` on CSV, Parquet and MLflow experiments."""

import json

import numpy as np
import pytest

from bioscale.cli import main
from bioscale.scaling.runs import write_csv
from bioscale.scaling.synthetic import law_table

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    rows = []
    for obj, alpha in (("ibp", 0.45), ("supervised", 0.25)):
        rows += law_table(
            "power",
            dict(E=0.1, A=2.0, alpha=alpha),
            np.geomspace(100, 1e5, 6),
            seeds=2,
            noise=0.01,
            direction="higher",
            metric="acc",
            group={"objective": obj, "N": 1000},
        )
    rows[1]["acc"] = float("nan")
    out = tmp_path_factory.mktemp("tables")
    csv_path = write_csv(rows, out / "trials.csv")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), out / "trials.parquet")
    return {"csv": csv_path, "parquet": out / "trials.parquet"}


def test_fit_writes_the_frozen_json_and_reports_missing_values(table, tmp_path, capsys):
    out = tmp_path / "fits.json"
    argv = [
        "fit", str(table["csv"]), "--metric", "acc", "--axis", "D", "--law", "power",
        "--group", "objective", "--direction", "higher", "--bootstrap", "30",
        "--json", str(out), "--plot", str(tmp_path / "fits.png"), "--compare", "objective",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "missing or non-finite acc" in capsys.readouterr().err
    payload = json.loads(out.read_text())
    fits = {f["group"]["objective"]: f for f in payload["fits"]}
    assert set(fits) == {"ibp", "supervised"}
    ibp = fits["ibp"]
    assert ibp["axis"] == ["D"] and ibp["law"] == "power" and ibp["direction"] == "higher"
    assert set(ibp["params"]) == set(ibp["ci95"]) == {"E", "A", "alpha"}
    assert ibp["ci95"]["alpha"][0] < 0.45 < ibp["ci95"]["alpha"][1]
    assert ibp["n_scales"] == 6 and ibp["backtest"]["held_out"] == [[1e5]]
    assert payload["comparisons"][0]["difference"] == pytest.approx(0.2, abs=0.06)
    assert (tmp_path / "fits.png").exists()


def test_no_group_means_one_group(table, capsys):
    assert main(["fit", str(table["parquet"]), "--metric", "acc", "--direction", "higher",
                 "--frontier", "--bootstrap", "0"]) == 0  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    assert [f["group"] for f in payload["fits"]] == [{}]


def test_forecast_statuses_from_a_parquet_table(table, tmp_path):
    out = tmp_path / "fc.json"
    argv = [
        "forecast", str(table["parquet"]), "--metric", "acc", "--axis", "D", "--law", "power",
        "--direction", "higher", "--group", "objective", "--target", "0.85",
        "--bootstrap", "30", "--json", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    fcs = {f["group"]["objective"]: f for f in json.loads(out.read_text())["forecasts"]}
    assert fcs["ibp"]["status"] in ("reachable", "beyond_range") and fcs["ibp"]["axis"] == ["D"]
    argv[argv.index("0.85")] = "0.95"  # error 0.05 < floor 0.1
    assert main(argv) == 0
    for fc in json.loads(out.read_text())["forecasts"]:
        assert fc["status"] == "unreachable" and fc["value"] is None and fc["reachable"] is False


def test_report_from_a_table(table, tmp_path):
    argv = ["report", str(table["csv"]), "--out", str(tmp_path), "--metric", "acc",
            "--direction", "higher", "--bootstrap", "20"]  # fmt: skip
    assert main(argv) == 0
    html = (tmp_path / "report.html").read_text()
    assert "Forecasts" in html and "Objective comparisons" in html and "Backtest" in html
    assert json.loads((tmp_path / "forecasts.json").read_text())["forecasts"]


def _frontier_rows(val_twin: bool) -> list[dict]:
    """Two runs per scale: the one with the better validation score reports
    1 − (0.2 + 2·D^−0.3); the other scored 0.05 higher on the test split by luck."""
    rows = []
    for d in np.geomspace(100, 1e5, 6):
        good = 1.0 - (0.2 + 2.0 * d**-0.3)
        for lucky in (False, True):
            row = {
                "D": float(d),
                "lr": 1e-3 if lucky else 1e-4,
                "probe/moa/novel_compounds/top1": good + (0.05 if lucky else 0.0),
                "val/best_loss": 2.0 if lucky else 1.0,
            }
            if val_twin:  # the probe's own validation split, preferred over the loss
                row["probe/moa/val/top1"] = 0.3 if lucky else 0.4
                row["val/best_loss"] = 1.0 if lucky else 2.0
            rows.append(row)
    return rows


@pytest.mark.parametrize(("val_twin", "column"), [(False, "val/best_loss"), (True, "val/top1")])
def test_frontier_selects_on_validation_and_reports_test(tmp_path, capsys, val_twin, column):
    path = write_csv(_frontier_rows(val_twin), tmp_path / "runs.csv")
    argv = ["fit", str(path), "--metric", "probe/moa/novel_compounds/top1", "--direction",
            "higher", "--frontier", "--bootstrap", "0"]  # fmt: skip
    assert main(argv) == 0
    (fit,) = json.loads(capsys.readouterr().out)["fits"]
    assert fit["params"]["E"] == pytest.approx(0.2, abs=1e-3)  # not 0.15: the lucky runs
    assert fit["params"]["alpha"] == pytest.approx(0.3, abs=1e-3)
    assert f"run with the {'lowest' if column == 'val/best_loss' else 'highest'}" in fit["note"]
    assert column in fit["note"]
    # selecting on the test score itself is possible, and biased: it takes the lucky runs
    assert main([*argv, "--frontier-select", "probe/moa/novel_compounds/top1"]) == 0
    (biased,) = json.loads(capsys.readouterr().out)["fits"]
    assert biased["params"]["E"] == pytest.approx(0.15, abs=1e-3)


def test_help_does_not_import_heavy_packages():
    import subprocess
    import sys

    code = (
        "import sys; from bioscale.cli import build_parser; build_parser();"
        "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_fit_and_report_from_an_mlflow_experiment(finished_study, tmp_path):
    uri = finished_study["result"].tracking_uri
    name = finished_study["spec"].name
    out = tmp_path / "fits.json"
    argv = ["fit", "--experiment", name, "--tracking-uri", uri, "--metric",
            "probe/moa/novel_compounds/top1", "--direction", "higher", "--group", "objective",
            "--bootstrap", "10", "--json", str(out)]  # fmt: skip
    assert main(argv) == 1  # no curve has enough scales to fit: said on stderr, JSON written
    fits = json.loads(out.read_text())["fits"]
    assert {f["group"]["objective"] for f in fits} == {"supervised", "ibp"}
    assert all(f["params"] is None and "distinct scales" in f["note"] for f in fits)
    rep = tmp_path / "report"
    argv = ["report", "--experiment", name, "--tracking-uri", uri, "--out", str(rep),
            "--bootstrap", "10"]  # fmt: skip
    assert main(argv) == 0
    assert (rep / "report" / "report.html").exists()
    tracker = finished_study["tracker"]
    exp = finished_study["result"].experiment_id
    assert len(tracker.runs(exp, "report")) == 1  # re-reporting updates, never piles up


def test_the_report_metric_falls_back_to_seen_compounds_where_nothing_is_novel():
    # natural images: a class no objective trained on cannot be named, so trials have no
    # novel-compound probe and the study is reported on held-out wells of seen classes
    from bioscale.study.analysis import PRIMARY_METRIC, SEEN_METRIC, _primary_metric

    novel = [{PRIMARY_METRIC: 0.4, SEEN_METRIC: 0.8}, {PRIMARY_METRIC: float("nan")}]
    natural = [{SEEN_METRIC: 0.8, "N": 1.0}, {SEEN_METRIC: 0.9}]
    assert _primary_metric(novel) == PRIMARY_METRIC
    assert _primary_metric(natural) == SEEN_METRIC
    assert _primary_metric([{"N": 1.0}]) == PRIMARY_METRIC  # nothing to report: say the default
