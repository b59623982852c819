"""Forecast inversion and its statuses, backtests, plateau flags, objective comparisons."""

import json

import numpy as np
import pytest

from bioscale.scaling.api import compare_fits, dumps, fit_table, forecast_fits
from bioscale.scaling.fit import fit_law
from bioscale.scaling.forecast import forecast
from bioscale.scaling.synthetic import law_table
from bioscale.scaling.trust import backtest, detect_plateau, with_trust

pytestmark = pytest.mark.timeout(120)
TRUTH = dict(E=0.1, A=2.0, alpha=0.35)
SCALES = np.geomspace(100, 1e5, 7)


@pytest.fixture(scope="module")
def power_fit():
    rows = law_table("power", TRUTH, SCALES, seeds=3, noise=0.01, rng=0)
    x = [r["D"] for r in rows]
    y = [r["loss"] for r in rows]
    return with_trust(fit_law(x, y, law="power", n_boot=80, seeds=[r["seed"] for r in rows]))


def test_forecast_inverts_the_law(power_fit):
    target = 0.15
    fc = forecast(power_fit, target)
    exact = (TRUTH["A"] / (target - TRUTH["E"])) ** (1 / TRUTH["alpha"])  # 3.0e4 samples
    assert fc.status == "reachable" and fc.reachable is True
    assert fc.value == pytest.approx(exact, rel=0.15)
    lo, hi = fc.ci95
    assert lo < fc.value < hi
    p = power_fit.params
    assert fc.value == pytest.approx((p["A"] / (target - p["E"])) ** (1 / p["alpha"]), rel=1e-3)
    assert fc.floor == pytest.approx(p["E"]) and fc.axis == ["D"]


def test_unreachable_target_has_null_value_and_no_infinity(power_fit):
    fc = forecast(power_fit, 0.05)  # below the floor E = 0.1
    assert fc.status == "unreachable" and fc.reachable is False and fc.value is None
    assert fc.floor_ci95[0] > 0.05
    text = dumps({"forecasts": [fc.to_json()]})
    assert "Infinity" not in text and json.loads(text)["forecasts"][0]["value"] is None


def test_target_inside_the_floor_interval_is_uncertain(power_fit):
    lo, hi = power_fit.ci95["E"]
    fc = forecast(power_fit, (lo + hi) / 2)
    assert fc.status == "uncertain" and fc.reachable is None
    assert fc.ci95 is None or fc.ci95[1] is None or fc.ci95[1] > 1e6


def test_far_forecasts_are_flagged_beyond_range(power_fit):
    target = float(power_fit.predict(np.array([3e7]))[0])  # reached at 300× the largest scale
    assert target > power_fit.ci95["E"][1]
    fc = forecast(power_fit, target)
    assert fc.value == pytest.approx(3e7, rel=1e-2)
    assert fc.status == "beyond_range" and fc.reachable is True and fc.value > 100 * SCALES[-1]


def test_higher_is_better_targets_and_floors_are_in_the_metrics_terms():
    rows = law_table("power", TRUTH, SCALES, seeds=2, noise=0.01, direction="higher", metric="acc")
    fits = fit_table(rows, metric="acc", direction="higher", n_boot=40).fits
    (fc,) = forecast_fits(fits, 0.85)  # error 0.15
    assert fits[0].group == {} and fc.status == "reachable"
    assert fc.floor == pytest.approx(0.9, abs=0.01) and fc.floor_ci95[0] <= fc.floor_ci95[1]
    (unreach,) = forecast_fits(fits, 0.95)
    assert unreach.status == "unreachable" and unreach.value is None


def test_chinchilla_forecast_along_d_at_fixed_n():
    truth = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
    pts = [[n, d] for n in np.geomspace(1e6, 1e9, 5) for d in np.geomspace(1e7, 1e10, 5)]
    rows = law_table("chinchilla", truth, pts, axes=("N", "D"), seeds=1, noise=0.005)
    fits = fit_table(rows, metric="loss", axes=["N", "D"], law="chinchilla", n_boot=30).fits
    floor_at = truth["E"] + truth["A"] / 1e9 ** truth["alpha"]  # 2.03 at N = 1e9
    fc = forecast(fits[0], 2.2, at={"N": 1e9})
    assert fc.axis == ["D"] and fc.fixed == {"N": 1e9}
    assert fc.floor == pytest.approx(floor_at, rel=0.02)
    p = fits[0].params
    fitted_floor = p["E"] + p["A"] / 1e9 ** p["alpha"]
    assert fc.value == pytest.approx((p["B"] / (2.2 - fitted_floor)) ** (1 / p["beta"]), rel=1e-3)
    exact = (truth["B"] / (2.2 - floor_at)) ** (1 / truth["beta"])  # 1.6e12: far out, so loose
    assert exact / 2 < fc.value < exact * 2
    assert forecast(fits[0], 1.5, at={"N": 1e9}).status == "unreachable"


def test_backtest_predicts_the_held_out_scale(power_fit):
    bt = backtest(power_fit, holdout=1, n_boot=40)
    assert bt["held_out"] == [[SCALES[-1]]] and bt["n_train_scales"] == 6
    assert bt["mean_rel_error"] < 0.05
    assert bt["in_interval"] is not None and len(bt["ci95"]) == 1
    assert power_fit.backtest is not None  # attached by with_trust
    too_small = fit_law(SCALES[:4], 0.1 + 2 * SCALES[:4] ** -0.35, law="power", n_boot=0)
    assert backtest(too_small) is None


def test_plateau_is_flagged_and_not_extrapolated():
    x = np.repeat(np.geomspace(100, 1e5, 6), 3)
    seeds = [0, 1, 2] * 6
    rng = np.random.default_rng(1)
    err = np.where(x < 5e3, 0.2 + 2 * x**-0.35, 0.2 + 2 * 5e3**-0.35)  # flat after 5e3
    y = err + rng.normal(0, 0.002, len(x))
    fit = with_trust(fit_law(x, y, law="power", seeds=seeds, n_boot=30))
    assert fit.plateau["plateau"] is True and "flagged" in fit.note
    fc = forecast(fit, 0.2)
    assert fc.status == "unreachable" and "not extrapolated" in fc.note
    assert forecast(fit, 0.5).status == "reachable"
    steady = with_trust(fit_law(x, 0.2 + 2 * x**-0.35, law="power", n_boot=0))
    assert steady.plateau["plateau"] is False


def test_non_monotonic_curves_are_flagged():
    x = np.geomspace(100, 1e5, 6)
    y = np.array([0.5, 0.4, 0.33, 0.3, 0.32, 0.36])
    pl = detect_plateau(fit_law(x, y, law="power", n_boot=0), k=2)
    assert pl["non_monotonic"] is True and pl["plateau"] is True


def test_objective_comparison_gives_exponent_difference_and_crossover():
    rows = law_table(
        "power",
        dict(E=0.05, A=1.0, alpha=0.5),
        SCALES,
        seeds=2,
        noise=0.01,
        group={"objective": "ibp"},
        rng=1,
    )
    rows += law_table(
        "power",
        dict(E=0.05, A=0.2, alpha=0.2),
        SCALES,
        seeds=2,
        noise=0.01,
        group={"objective": "supervised"},
        rng=2,
    )
    fits = fit_table(rows, metric="loss", group=["objective"], n_boot=40).fits
    (cmp,) = compare_fits(fits, "objective")
    assert cmp["difference"] == pytest.approx(0.3, abs=0.07)
    assert cmp["ci95"][0] > 0  # ibp's exponent is larger, with confidence
    # 1·x^−0.5 = 0.2·x^−0.2 at x = 5^(1/0.3) ≈ 214: ibp overtakes within the data
    assert cmp["crossover"] == pytest.approx(5 ** (1 / 0.3), rel=0.3)
    assert cmp["within_observed"] and cmp["leader_after"] == {"objective": "ibp"}
    assert "excludes 0, ibp improves faster along D" in cmp["note"]


def test_comparison_says_when_the_interval_includes_zero():
    rows = []
    for i, objective in enumerate(("ibp", "supervised")):  # one law, two noisy draws of it
        rows += law_table(
            "pure_power",
            dict(A=1.0, alpha=0.3),
            SCALES,
            seeds=2,
            noise=0.02,
            group={"objective": objective},
            rng=10 + i,
        )
    fits = fit_table(rows, metric="loss", law="pure_power", group=["objective"], n_boot=60).fits
    (cmp,) = compare_fits(fits, "objective")
    assert cmp["ci95"][0] < 0 < cmp["ci95"][1]
    assert "includes 0, these runs do not tell the two exponents apart" in cmp["note"]


def test_without_intervals_a_target_below_the_fitted_floor_is_unreachable():
    x = np.geomspace(100, 1e5, 6)
    fit = fit_law(x, 0.1 + 2.0 * x**-0.35, law="power", n_boot=0)  # floor E = 0.1
    assert fit.boot is None
    below = forecast(fit, 0.05)
    assert below.status == "unreachable" and below.reachable is False and below.value is None
    assert "floor" in below.note and below.floor == pytest.approx(0.1, rel=1e-3)
    above = forecast(fit, 0.15)  # reachable by the point estimate, but no interval to say so
    assert above.status == "uncertain" and above.reachable is None
    assert above.value == pytest.approx((2.0 / 0.05) ** (1 / 0.35), rel=1e-2)  # 3.7e4


def test_bad_targets_and_axes_are_refused_with_the_reason(power_fit):
    from bioscale.errors import BioscaleError

    worst = float(power_fit.y.max())
    with pytest.raises(BioscaleError, match="already met by every observed point"):
        forecast(power_fit, worst + 0.01)  # a loss every run already beats
    with pytest.raises(BioscaleError, match="finite"):
        forecast(power_fit, float("nan"))
    with pytest.raises(BioscaleError, match=r"cannot forecast along 'Q'.*axes are D"):
        forecast(power_fit, 0.15, along="Q")


def test_a_law_without_a_floor_is_not_described_as_falling_toward_one():
    from bioscale.scaling.report import describe_fit

    x = np.geomspace(100, 1e4, 6)
    pure = describe_fit(fit_law(x, 2.0 * x**-0.3, law="pure_power", n_boot=0), "loss")
    assert "floor of" not in pure and "(a law without a floor)" in pure
    assert "D^−0.30" in pure
    saturating = describe_fit(fit_law(x, 0.1 + 2.0 * x**-0.3, law="power", n_boot=0), "loss")
    assert "toward a floor of 0.100" in saturating
