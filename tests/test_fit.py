import json

import numpy as np
import pytest

from bioscale.scaling.fit import fit_law, huber
from bioscale.study.analysis import fit_axes


def test_huber_is_quadratic_then_linear():
    r = np.array([0.0, 5e-4, 1e-2])
    h = huber(r, delta=1e-3)
    assert h[1] == pytest.approx(0.5 * 5e-4**2)
    assert h[2] == pytest.approx(1e-3 * (1e-2 - 0.5e-3))


@pytest.mark.parametrize("E,A,alpha", [(0.1, 2.0, 0.35), (0.02, 5.0, 0.6), (0.3, 1.0, 0.3)])
def test_recovers_a_known_exponent(E, A, alpha):
    rng = np.random.default_rng(0)
    x = np.repeat(np.geomspace(100, 1e5, 7), 2)
    y = (E + A * x**-alpha) * np.exp(rng.normal(0, 0.01, len(x)))
    fit = fit_law(x, y, law="power")
    assert fit.params["alpha"] == pytest.approx(alpha, abs=0.05)
    assert fit.params["E"] == pytest.approx(E, abs=0.02)
    assert fit.n_scales == 7 and fit.n_points == 14


def test_higher_is_better_metrics_fit_their_error():
    x = np.geomspace(100, 1e4, 6)
    acc = 1.0 - (0.2 + 3.0 * x**-0.5)
    fit = fit_law(x, acc, law="power", direction="higher")
    assert fit.params["alpha"] == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(fit.predict(x), acc, rtol=1e-3)


def test_too_few_scales_returns_no_params_and_says_why():
    fit = fit_law([1, 2, 4], [0.5, 0.4, 0.3], law="power")
    assert fit.params is None and "at least 4" in fit.note
    out = fit.to_json()
    assert out["axis"] == ["D"] and out["ci95"] == {"E": None, "A": None, "alpha": None}
    json.dumps(out)


def test_pure_power_law():
    x = np.geomspace(10, 1e4, 5)
    fit = fit_law(x, 3.0 * x**-0.25, law="pure_power")
    assert fit.params["alpha"] == pytest.approx(0.25, abs=1e-3)


def test_fit_axes_builds_one_curve_per_objective_and_axis():
    rows = []
    for obj, alpha in (("supervised", 0.1), ("ibp", 0.4)):
        for d in (100, 200, 400, 800):
            rows.append(
                {
                    "objective": obj,
                    "rung": "r1",
                    "diet": f"rep={d}",
                    "N": 1000,
                    "D_samples": d,
                    "m": 1 - (0.2 + d**-alpha),
                }
            )
        for n in (1000, 4000, 16000, 64000):
            rows.append(
                {
                    "objective": obj,
                    "rung": f"r{n}",
                    "diet": "rep=800",
                    "N": n,
                    "D_samples": 800,
                    "m": 1 - (0.2 + n**-alpha),
                }
            )
    fits = fit_axes(rows, "m")
    by = {(f.axis[0], f.group["objective"]): f for f in fits}
    assert by[("D", "ibp")].params["alpha"] == pytest.approx(0.4, abs=0.05)
    assert by[("N", "supervised")].params["alpha"] == pytest.approx(0.1, abs=0.05)
