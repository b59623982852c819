"""``scaling.suggest``: which trial most shrinks a forecast's interval per FLOP (against the
closed-form least-squares answer), the ``grids:`` block of ``bioscale study suggest``, and the
objective-decision backtest on simulated crossing curves."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from bioscale.cli import main
from bioscale.data.diets import Diet
from bioscale.errors import BioscaleError
from bioscale.scaling.fit import fit_law
from bioscale.scaling.runs import write_csv
from bioscale.scaling.suggest import Candidate, decision_section, decisions, suggest
from bioscale.scaling.synthetic import law_table
from bioscale.study.plan import expand
from bioscale.study.spec import StudySpec

pytestmark = pytest.mark.timeout(120)
DEMO = Path(__file__).parent.parent / "jobs" / "studies" / "demo.yaml"
SCALES = np.geomspace(1e2, 1e4, 6)
TARGET = 0.02  # pure_power A=2, α=0.35: reached at D ≈ 5e5, 50× beyond the data


@pytest.fixture(scope="module")
def line_fit():
    rows = law_table("pure_power", {"A": 2.0, "alpha": 0.35}, SCALES, seeds=2, noise=0.02, rng=3)
    x = [r["D"] for r in rows]
    return fit_law(x, [r["loss"] for r in rows], law="pure_power", n_boot=200)


def _ols_ratio(fit, d_new: float, u_star: float) -> float:
    """√ of the forecast variance after/before one more point at ``d_new``, for a straight line in
    log-log space: Var ŷ(u*) ∝ 1/n + (u* − ū)²/Sxx (least squares; delta method)."""

    def v(u):
        return 1 / len(u) + (u_star - u.mean()) ** 2 / ((u - u.mean()) ** 2).sum()

    u = np.log(fit.x[:, 0])
    return float(np.sqrt(v(np.append(u, np.log(d_new))) / v(u)))


@pytest.mark.parametrize("cost", ["equal", "proportional to D"])
def test_suggest_picks_what_least_squares_says_shrinks_the_forecast_most_per_flop(line_fit, cost):
    ds = [float(np.exp(np.log(SCALES).mean())), 1e4, 2e4, 1e5]  # centroid, largest, beyond
    flops = [1.0 if cost == "equal" else d for d in ds]
    cands = [Candidate(curve=0, at={"D": d}, flops=f) for d, f in zip(ds, flops, strict=True)]
    s = suggest([line_fit], TARGET, cands, k=1)
    u_star = np.log(2.0 / TARGET) / 0.35
    gain = [(1 - _ols_ratio(line_fit, d, u_star)) / f for d, f in zip(ds, flops, strict=True)]
    best = ds[int(np.argmax(gain))]
    # equal cost: the farthest point (1e5); cost ∝ D: the largest measured scale (1e4)
    assert best == (1e5 if cost == "equal" else 1e4)
    assert s.picks[0].candidate.at["D"] == best
    assert s.picks[0].width < s.width
    lo, hi = s.picks[0].ci95
    assert s.ci95[0][0] < lo < hi < s.ci95[0][1]


def test_suggest_respects_k_and_the_flop_budget(line_fit):
    cands = [Candidate(curve=0, at={"D": d}, flops=d) for d in (1e3, 1e4, 2e4, 1e5)]
    s = suggest([line_fit], TARGET, cands, k=4)
    assert len(s.picks) == 4 and len({p.candidate.at["D"] for p in s.picks}) == 4
    assert all(a.width > b.width for a, b in zip(s.picks, s.picks[1:], strict=False))
    within = suggest([line_fit], TARGET, cands, k=4, budget_flops=2.5e4)
    assert within.picks and within.picks[-1].flops_total <= 2.5e4
    with pytest.raises(BioscaleError, match="--k"):
        suggest([line_fit], TARGET, cands, k=0)
    with pytest.raises(BioscaleError, match="already met"):
        suggest([line_fit], 10.0, cands)


def _demo_trials(tmp_path: Path) -> Path:
    """A trials table of demo.yaml's data-scaling grid (mlp:w256-l3, five diets, two objectives)
    from known power laws, with one model-scaling trial off the curve."""
    rows = []
    reps = [0.0625, 0.125, 0.25, 0.5, 1.0]
    for obj, alpha in (("supervised", 0.3), ("ibp", 0.45)):
        diets = [Diet(replicates=r, extra=0 if obj == "supervised" else "all") for r in reps]
        table = law_table(
            "power",
            {"E": 0.2, "A": 6.0, "alpha": alpha},
            [2880 * r for r in reps],
            seeds=2,
            noise=0.02,
            direction="higher",
            metric="probe/moa/novel_compounds/top1",
            rng=1,
        )
        for row in table:
            i = reps.index(row["D"] / 2880)
            row.update(
                rung="mlp:w256-l3",
                objective=obj,
                diet=diets[i].label(),
                D_samples=int(row.pop("D")),
                flops_per_sample=3.0e5,
                epochs=40,
                model_family="mlp",
            )
        rows += table
    rows.append({**rows[-1], "rung": "mlp:w1024-l3", "flops_per_sample": 4.0e6})
    return write_csv(rows, tmp_path / "trials.csv")


def test_study_suggest_writes_a_grids_block_the_study_accepts(tmp_path, capsys):
    block = tmp_path / "grids.yaml"
    argv = ["study", "suggest", str(DEMO), "--table", str(_demo_trials(tmp_path))]
    argv += ["--target", "probe/moa/novel_compounds/top1=0.7", "--k", "3", "--write", str(block)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "expected 95% CI" in out and "decades" in out
    added = yaml.safe_load(block.read_text())["grids"]
    assert 1 <= len(added) <= 3
    study = yaml.safe_load(DEMO.read_text())
    measured = {d["replicates"] for g in study["grids"] for d in g["diet"]}
    before = len(expand(StudySpec.from_dict(study))[0])
    study["grids"] += added
    spec = StudySpec.from_dict(study)
    for grid in spec.grids[-len(added) :]:
        assert grid.rung == ["mlp:w256-l3"]
        assert grid.objective[0].name in {"supervised", "ibp"}
        if grid.seeds is None:  # a new diet
            assert grid.diet[0].replicates not in measured
        else:  # another seed at a measured diet: the table's trials ran seeds 0 and 1
            assert grid.diet[0].replicates in measured and grid.seeds == [2]
    # every entry adds exactly one trial
    assert len(expand(spec)[0]) == before + len(added)
    assert main([*argv[:-6], "--target", "top1", "--write", str(block)]) == 2
    assert "METRIC=VALUE" in capsys.readouterr().err


def _family(rung: str, laws: dict[str, tuple[float, float]], scales, boot: int = 60):
    fits = []
    for obj, (a, alpha) in laws.items():
        rows = law_table("pure_power", {"A": a, "alpha": alpha}, scales, seeds=2, noise=0.003)
        x, y = [r["D"] for r in rows], [r["loss"] for r in rows]
        fits.append(
            fit_law(x, y, law="pure_power", group={"objective": obj, "rung": rung}, n_boot=boot)
        )
    return fits


def test_decision_backtest_on_crossing_curves_matches_the_hand_count():
    # a: 2·D^−0.5, b: 0.6·D^−0.3 cross at D = (2/0.6)^5 ≈ 412: b leads at 320, a at 640
    crossing = {"a": (2.0, 0.5), "b": (0.6, 0.3)}
    scales = 10 * 2.0 ** np.arange(7)  # 10 … 640
    fits = _family("r1", crossing, scales)  # held out 640 (a wins); baseline at 320 says b
    fits += _family("r2", {"a": (1.0, 0.5), "b": (2.0, 0.3)}, scales)  # a leads everywhere
    fits += _family("r3", crossing, scales[:-1])  # up to 320 (b wins, b at 160): crosses later
    d = decisions(fits)
    by = {r["group"]["rung"]: r for r in d["families"]}
    assert by["r1"]["truth"] == by["r1"]["fit_call"] == "a" and by["r1"]["baseline_call"] == "b"
    assert by["r2"]["truth"] == by["r2"]["fit_call"] == by["r2"]["baseline_call"] == "a"
    assert by["r3"]["truth"] == by["r3"]["fit_call"] == by["r3"]["baseline_call"] == "b"
    assert (d["n_decisions"], d["fit_correct"], d["baseline_correct"]) == (3, 3, 2)
    assert d["fit_rate"] == 1.0 and d["baseline_rate"] == pytest.approx(2 / 3)
    # the ranking at 10× the largest scale: unchanged for r1, r2 (a leads at 640 and 6400); for
    # r3 b leads at 320 and a at 3200
    assert by["r1"]["p_rank_change"] < 0.05 and by["r2"]["p_rank_change"] < 0.05
    assert by["r3"]["p_rank_change"] > 0.95
    html = decision_section(fits)
    assert "<h2>Decisions</h2>" in html and "fit 3/3" in html and "ranking 2/3" in html


def test_decisions_say_why_a_family_cannot_be_backtested():
    scales = 10 * 2.0 ** np.arange(4)  # four scales: three below the largest, too few to fit
    d = decisions(_family("r", {"a": (2.0, 0.5), "b": (0.6, 0.3)}, scales, boot=0))
    assert d["n_decisions"] == 0 and d["fit_rate"] is None
    assert "needs at least 4 distinct scales" in d["families"][0]["note"]


def test_a_matched_design_with_each_objective_its_own_sample_counts_is_backtested():
    """The same five diets give b 3.6× a's samples (as IBP's unlabelled wells do), so no scale is
    common. a: 0.8·D^−0.25 at 100 … 1600; b: 0.13 + D^−0.5 at 360 … 5760. b leads at the
    second-largest diet (0.149 against a's 0.150), a at the largest (0.127 against 0.143): the
    fit on the four smaller diets calls a, the ranking at the second-largest calls b."""
    diets = 100 * 2.0 ** np.arange(5)
    fits = []
    for obj, x, err in (
        ("a", diets, 0.8 * diets**-0.25),
        ("b", 3.6 * diets, 0.13 + (3.6 * diets) ** -0.5),
    ):
        fits.append(fit_law(x, err, law="power", group={"objective": obj, "rung": "r"}, n_boot=0))
    d = decisions(fits)
    (row,) = d["families"]
    assert (row["truth"], row["fit_call"], row["baseline_call"]) == ("a", "a", "b")
    assert row["x_held_out"] == pytest.approx([1600, 5760]) and "matched design" in row["note"]
    assert (d["n_decisions"], d["fit_correct"], d["baseline_correct"]) == (1, 1, 0)
    assert "winner at (a 1.6e+03, b 5.76e+03): a" in decision_section(fits)
