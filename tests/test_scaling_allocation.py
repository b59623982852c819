"""Compute-optimal allocation against the Chinchilla law's closed-form optima, the data-constrained
law (Muennighoff et al. 2023) on a simulated study, and ``bioscale forecast --budget-flops``."""

import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq, minimize

from bioscale.cli import main
from bioscale.scaling.allocation import (
    FlopsModel,
    allocate,
    fit_flops_model,
    optima_crossing,
    optimum,
    row_flops_per_sample,
)
from bioscale.scaling.api import fit_table
from bioscale.scaling.constrained import effective_data, repeat_vs_new, with_epochs_seen
from bioscale.scaling.fit import FitResult
from bioscale.scaling.laws import LAWS
from bioscale.scaling.runs import write_csv
from bioscale.scaling.synthetic import law_table

pytestmark = pytest.mark.timeout(120)

#: Hoffmann et al. 2022, approach 3
HOFFMANN = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
CHIN = LAWS.get("chinchilla")


def closed_form(p: dict, budget: float, k: float, q: float = 1.0, epochs: float = 1.0):
    """argmin of A/N^α + B/D^β on k·N^q·D·epochs = C: N^(α+qβ) = αA/(qβB)·(C/(k·e))^β."""
    a, b = p["alpha"], p["beta"]
    c = budget / (k * epochs)
    n = (a * p["A"] / (q * b * p["B"]) * c**b) ** (1.0 / (a + q * b))
    return n, c / n**q


@pytest.mark.parametrize(("k", "q", "epochs"), [(6.0, 1.0, 1.0), (6.0, 1.0, 8.0), (2.0, 1.15, 3.0)])
def test_optimum_matches_the_closed_form(k, q, epochs):
    theta = CHIN.to_theta(HOFFMANN)[None, :]
    for budget in (1e18, 5.76e23, 1e26):
        best = optimum(CHIN, theta, budget, FlopsModel(k=k, p=q), epochs=epochs)
        n, d = closed_form(HOFFMANN, budget, k, q, epochs)
        assert best.n[0] == pytest.approx(n, rel=1e-4) and best.d[0] == pytest.approx(d, rel=1e-4)
        assert best.epochs[0] == epochs and not best.at_edge[0]
        loss = HOFFMANN["E"] + HOFFMANN["A"] / n ** HOFFMANN["alpha"] + HOFFMANN["B"] / d**0.28
        assert best.err[0] == pytest.approx(loss, rel=1e-9)
    # Hoffmann et al.'s approach-3 exponent: N_opt ∝ C^(β/(α+β)) = C^0.452
    n1 = optimum(CHIN, theta, 1e20, FlopsModel(k=6.0, p=1.0)).n[0]
    n2 = optimum(CHIN, theta, 1e22, FlopsModel(k=6.0, p=1.0)).n[0]
    assert math.log10(n2 / n1) / 2 == pytest.approx(0.28 / 0.62, abs=1e-4)


def test_flops_per_sample_model_from_rungs_and_totals():
    n = np.array([1e4, 1e5, 1e6, 1e5])
    model = fit_flops_model(n, 2.0 * n**1.1)
    assert model.p == pytest.approx(1.1, abs=1e-9) and model.k == pytest.approx(2.0, rel=1e-9)
    one = fit_flops_model([1e5, 1e5], [6e5, 6e5])
    assert (one.k, one.p) == (6.0, 1.0) and "one rung" in one.note
    assert row_flops_per_sample({"compute/flops": 1.2e9, "train/samples_seen": 2e3}) == 6e5
    assert row_flops_per_sample({"compute/flops": 1.2e9, "D_samples": 100, "epochs": 20}) == 6e5
    assert math.isnan(row_flops_per_sample({"N": 10}))
    with pytest.raises(Exception, match="flops_per_sample"):
        fit_flops_model([1e5], [float("nan")])


def test_bootstrap_intervals_of_the_optimum_cover_the_truth():
    truth = dict(E=0.1, A=20.0, alpha=0.3, B=30.0, beta=0.35)
    pts = [[n, d] for n in np.geomspace(1e4, 1e6, 4) for d in np.geomspace(1e3, 1e5, 4)]
    rows = law_table("chinchilla", truth, pts, axes=("N", "D"), seeds=2, noise=0.01, rng=3)
    (fit,) = fit_table(rows, metric="loss", axes=["N", "D"], law="chinchilla", n_boot=60).fits
    budget = 6.0 * 4 * 1e6 * 1e5  # 4 epochs of the largest trial
    alloc = allocate(fit, budget, FlopsModel(k=6.0, p=1.0), epochs=4.0)
    n, d = closed_form(truth, budget, 6.0, epochs=4.0)
    assert alloc.n_ci95[0] < n < alloc.n_ci95[1] and alloc.d_ci95[0] < d < alloc.d_ci95[1]
    loss = truth["E"] + truth["A"] / n**0.3 + truth["B"] / d**0.35
    assert alloc.value_ci95[0] < loss < alloc.value_ci95[1]
    assert alloc.n * alloc.d * 4 * 6.0 == pytest.approx(budget, rel=1e-9)


def _fit(params: dict, objective: str) -> FitResult:
    """A fit that is exactly ``params`` (a known law, no noise, no refits)."""
    return FitResult(
        group={"objective": objective}, law="chinchilla", axis=["N", "D"], direction="lower",
        metric="loss", params=params, ci95={}, n_points=1, n_scales=1, loss=0.0,
        points=[(1e5, 1e4, 1.0)],
    )  # fmt: skip


def test_crossing_of_two_objectives_optima_matches_the_closed_form():
    a = dict(E=0.1, A=20.0, alpha=0.3, B=30.0, beta=0.35)  # worse small, better large
    b = dict(E=0.2, A=8.0, alpha=0.3, B=8.0, beta=0.3)
    fa, fb = FlopsModel(k=6.0, p=1.0), FlopsModel(k=12.0, p=1.0)  # b costs twice per sample

    def gap(log_c: float) -> float:
        c = math.exp(log_c)
        (na, da), (nb, db) = closed_form(a, c, 6.0), closed_form(b, c, 12.0)
        la = a["E"] + a["A"] / na ** a["alpha"] + a["B"] / da ** a["beta"]
        lb = b["E"] + b["A"] / nb ** b["alpha"] + b["B"] / db ** b["beta"]
        return math.log(la) - math.log(lb)

    exact = math.exp(brentq(gap, math.log(1e9), math.log(1e22)))
    out = optima_crossing(
        _fit(a, "ibp"), _fit(b, "supervised"), fa, fb, budgets=np.geomspace(1e9, 1e22, 120)
    )
    assert out["crossover_flops"] == pytest.approx(exact, rel=0.01)
    assert out["leader_at_max"] == {"objective": "ibp"} and out["p_crossover"] is None


def test_effective_data_is_muennighoffs_formula():
    # U = 100 unique samples, R = 15 repeats, R* = 15: 100 + 100·15·(1 − e^−1) = 1048.18
    assert effective_data(100, 15, 15.0) == pytest.approx(1048.1808382, rel=1e-9)
    assert effective_data(100, 0, 15.0) == 100.0  # one epoch: nothing repeated
    assert effective_data(100, 1e6, 15.0) == pytest.approx(1600.0)  # saturates at U(1 + R*)
    law = LAWS.get("data_constrained")
    p = dict(E=0.2, A=50.0, alpha=0.35, B=80.0, beta=0.3, R_star=8.0)
    x = np.array([[1e6, 1e4, 1.0], [1e6, 1e4, 5.0]])
    d_eff = 1e4 + 1e4 * 8.0 * (1 - np.exp(-np.array([0.0, 4.0]) / 8.0))
    np.testing.assert_allclose(
        law.predict(law.to_theta(p), x), 0.2 + 50 / 1e6**0.35 + 80 / d_eff**0.3, rtol=1e-12
    )


@pytest.fixture(scope="module")
def constrained_study():
    """A study differing in rung, diet and epochs, drawn from a known R* = 6."""
    truth = dict(E=0.15, A=30.0, alpha=0.35, B=60.0, beta=0.3, R_star=6.0)
    pts = [
        [n, u, e]
        for n in np.geomspace(1e5, 1e7, 3)
        for u in np.geomspace(2e3, 5e4, 4)
        for e in (1, 3, 9, 27)
    ]
    rows = law_table(
        "data_constrained", truth, pts, axes=("N", "D_samples", "epochs"), noise=0.01, rng=0
    )
    for r in rows:
        r["flops_per_sample"] = 6.0 * r["N"]
        r["train/samples_seen"] = r["D_samples"] * r["epochs"]
    (fit,) = fit_table(
        with_epochs_seen(rows), metric="loss", axes=["N", "D", "epochs_seen"],
        law="data_constrained", n_boot=60,
    ).fits  # fmt: skip
    return truth, rows, fit


def test_data_constrained_study_recovers_r_star_and_compares_epochs_with_new_data(
    constrained_study,
):
    truth, _, fit = constrained_study
    lo, hi = fit.ci95["R_star"]
    assert lo < truth["R_star"] < hi and hi / lo < 2.0
    at = {"N": 1e7, "D": 5e4, "epochs_seen": 9.0}
    rv = repeat_vs_new(fit, 6.0 * 1e7, at=at)
    law = LAWS.get("data_constrained")
    err = law.predict(law.to_theta(truth), np.array([[1e7, 5e4, 9], [1e7, 5e4, 18], [1e7, 1e5, 9]]))
    assert rv.epochs_gain_ci95[0] < err[0] - err[1] < rv.epochs_gain_ci95[1]
    assert rv.data_gain_ci95[0] < err[0] - err[2] < rv.data_gain_ci95[1]
    # at 9 epochs with R* = 6, new data is worth about 3.6× more than repeating: a clear call
    assert rv.data_gain > 2 * rv.epochs_gain > 0 and rv.p_new_data_better == 1.0
    assert rv.extra_flops == 6e7 * 5e4 * 9 and "more unique data is the better buy" in rv.sentence()


def test_a_cap_on_unique_data_buys_epochs(constrained_study):
    truth, _, _ = constrained_study
    law = LAWS.get("data_constrained")
    theta = law.to_theta(truth)[None, :]
    fm = FlopsModel(k=6.0, p=1.0)
    free = optimum(law, theta, 1e17, fm)
    assert free.epochs[0] == 1.0  # unlimited data: never repeat
    capped = optimum(law, theta, 1e17, fm, unique_max=1e5)
    assert capped.err[0] > free.err[0]  # repeats are worth less than new data

    def loss(z):  # (log N, log epochs) → error, with D = C/(6·N·epochs) ≤ 1e5
        log_d = math.log(1e17 / 6.0) - z[0] - z[1]
        if log_d > math.log(1e5) or z[1] < 0:
            return 1e9
        return law.predict(theta[0], np.exp([[z[0], log_d, z[1]]]))[0]

    starts = [(a, b) for a in (14.0, 18.0, 22.0) for b in (0.5, 3.0, 5.0)]
    exact = min((minimize(loss, s, method="Nelder-Mead", options={"xatol": 1e-9}) for s in starts),
                key=lambda r: r.fun)  # fmt: skip
    assert capped.n[0] == pytest.approx(math.exp(exact.x[0]), rel=0.02)
    assert (
        capped.epochs[0] == pytest.approx(math.exp(exact.x[1]), rel=0.02) and capped.epochs[0] > 3
    )
    assert capped.d[0] == pytest.approx(1e5, rel=1e-6) and capped.err[0] == pytest.approx(
        exact.fun, rel=1e-5
    )


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    rows = []
    pts = [[n, d] for n in np.geomspace(1e4, 1e6, 4) for d in np.geomspace(1e3, 1e5, 4)]
    for obj, p in (
        ("ibp", dict(E=0.1, A=20.0, alpha=0.3, B=30.0, beta=0.35)),
        ("supervised", dict(E=0.2, A=8.0, alpha=0.3, B=8.0, beta=0.3)),
    ):
        part = law_table("chinchilla", p, pts, axes=("N", "D_samples"), noise=0.01, rng=1)
        for r in part:
            r.update(objective=obj, epochs=10, flops_per_sample=6.0 * r["N"])
        rows += part
    return write_csv(rows, tmp_path_factory.mktemp("alloc") / "trials.csv")


def test_cli_forecast_budget_flops_end_to_end(table, tmp_path, capsys):
    out, plot = tmp_path / "alloc.json", tmp_path / "iso.png"
    argv = [
        "forecast", str(table), "--metric", "loss", "--axis", "N,D", "--law", "chinchilla",
        "--group", "objective", "--budget-flops", "6e13", "--budget-flops", "6e14",
        "--bootstrap", "20", "--json", str(out), "--isoflops-plot", str(plot),
    ]  # fmt: skip
    assert main(argv) == 0 and plot.stat().st_size > 0
    payload = json.loads(out.read_text())
    allocs = {(a["group"]["objective"], a["budget_flops"]): a for a in payload["allocations"]}
    assert set(allocs) == {(o, c) for o in ("ibp", "supervised") for c in (6e13, 6e14)}
    ibp = allocs[("ibp", 6e14)]
    n, d = closed_form(dict(E=0.1, A=20.0, alpha=0.3, B=30.0, beta=0.35), 6e14, 6.0, epochs=10)
    assert ibp["epochs"] == 10 and ibp["compute"]["p"] == pytest.approx(1.0)
    assert n / 3 < ibp["N"] < n * 3 and d / 3 < ibp["D"] < d * 3  # 10× beyond the data
    assert ibp["N_ci95"][0] < ibp["N"] < ibp["N_ci95"][1]
    (cross,) = payload["crossings"]
    assert {cross["a"]["objective"], cross["b"]["objective"]} == {"ibp", "supervised"}
    assert "forecasts" not in payload and payload["repeat_vs_new"] == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --target VALUE"),
        (["--budget-flops", "-1"], "positive number of FLOPs"),
        (["--budget-flops", "1e15", "--law", "power", "--axis", "D"], "needs a joint law"),
    ],
)
def test_cli_budget_errors_name_the_fix(table, capsys, extra, message):
    argv = ["forecast", str(table), "--metric", "loss", "--axis", "N,D", "--law", "chinchilla"]
    assert main([*argv, "--bootstrap", "0", *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_budget_without_flops_columns_says_what_to_log(tmp_path, capsys):
    pts = [[n, d] for n in np.geomspace(1e4, 1e6, 4) for d in np.geomspace(1e3, 1e5, 4)]
    rows = law_table("chinchilla", dict(E=0.1, A=20.0, alpha=0.3, B=30.0, beta=0.35), pts,
                     axes=("N", "D"), noise=0.01)  # fmt: skip
    path = write_csv(rows, tmp_path / "noflops.csv")
    argv = ["forecast", str(path), "--metric", "loss", "--axis", "N,D", "--law", "chinchilla",
            "--budget-flops", "1e15", "--bootstrap", "0"]  # fmt: skip
    assert main(argv) == 2
    assert "flops_per_sample" in capsys.readouterr().err


def test_report_section_lists_optima_crossings_and_isoflop_plot(table, tmp_path):
    from bioscale.scaling.report import compute_optimal_section
    from bioscale.scaling.table import load_table

    rows = load_table(table)
    fits = fit_table(
        rows, metric="loss", axes=["N", "D"], law="chinchilla", group=["objective"], n_boot=0
    ).fits
    html, plots = compute_optimal_section(fits, rows, tmp_path, budgets=[6e13])
    assert plots == [tmp_path / "isoflops.png"] and plots[0].stat().st_size > 0
    assert "ibp: at 6e+13 FLOPs, N ≈" in html and "supervised: at 6e+13 FLOPs" in html
    assert "compute-optimal curves" in html and "6·N^1" in html
    single = [f for f in fits if f.group["objective"] == "ibp"]
    one_axis = fit_table(rows, metric="loss", axes=["D"], n_boot=0).fits
    assert compute_optimal_section(one_axis, rows, tmp_path) == ("", [])
    assert "ibp vs" not in compute_optimal_section(single, rows, tmp_path, budgets=[6e13])[0]


def test_a_three_axis_law_plots_one_curve_per_model_size_and_epoch_count(
    constrained_study, tmp_path
):
    from bioscale.scaling.plots import plot_fits

    _, _, fit = constrained_study
    path = plot_fits([fit], tmp_path / "dc.png", title="data-constrained", ylabel="error")
    assert path.exists() and path.stat().st_size > 10_000
