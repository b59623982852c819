"""Does ``bioscale study suggest`` reach a forecast interval for less compute than a uniform grid?

Curves are drawn from a known saturating power law (err = E + A·D^−α) with log-normal seed noise.
The uniform grid runs every scale of the axis (``--scales`` points, geometric from 100 to 10⁴
samples) with ``--seeds`` seeds; its forecast's 95% interval (the D at which the error reaches the
target) is the width to reach. ``suggest`` starts from one seed at five of the eight scales (every
other one and the largest: the fewest a bootstrap interval needs) and adds one trial at a time,
from the same scales or one geometric step beyond the largest, refitting after each. A trial's
FLOPs are proportional to D (a fixed rung and epochs).

Two measures:

- per repeat (the issue's protocol): the FLOPs suggest spent when its interval first became as
  narrow as that repeat's grid, over the grid's FLOPs (inf where it never did, refused, or
  proposed nothing); median with min–max;
- matched FLOPs (``--matched``): suggest goes on to the grid's FLOPs, and the median over repeats
  of its interval width at a fraction of the grid's FLOPs is compared with the grid's median
  width. One repeat's first passage profits from a lucky interval; the medians do not.

``--fixed`` adds the median widths of fixed designs built by hand from the same five starting runs
(more runs at the largest scale, one step beyond it, cheap repeats, combinations): what a user
could run without ``suggest``.

    .venv/bin/python benchmarks/suggest_sim.py --repeats 20 [--matched] [--fixed]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bioscale.errors import BioscaleError
from bioscale.scaling.fit import fit_law
from bioscale.scaling.forecast import invert
from bioscale.scaling.suggest import FORECAST_CAP, Candidate, suggest
from bioscale.scaling.synthetic import law_table

TRUTH = {"E": 0.1, "A": 2.0, "alpha": 0.35}
TARGET = 0.15  # reached at D ≈ 3.8e4 samples: 3.8× beyond the largest scale
N_BOOT = 200
#: fractions of the grid's FLOPs at which ``--matched`` compares median widths
FRACTIONS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _width(fit) -> float:
    """Decades spanned by the forecast's 95% interval: log10(hi / lo) of the bootstrap draws'
    forecasts, a draw that never reaches the target counted at ``FORECAST_CAP`` × the largest
    scale (as ``suggest`` measures it)."""
    j = 0  # the one axis, D
    values = invert(fit, fit.boot, TARGET, j, np.zeros(1)) if fit.boot is not None else None
    if values is None:
        return np.inf
    cap = fit.x[:, j].max() * FORECAST_CAP
    if np.all(values >= cap):
        return np.inf
    z = np.log10(np.minimum(values, cap))
    lo, hi = np.quantile(z, [0.025, 0.975])
    return float(hi - lo)


def _start(scales: np.ndarray) -> list[float]:
    """The runs suggest starts from: one seed at every other scale and the largest."""
    return list(scales[[0, 2, 4, 6, 7]] if len(scales) == 8 else scales[:5])


def _measure(d: float, seeds: int, noise: float, rng: np.random.Generator) -> list[float]:
    return [r["loss"] for r in law_table("power", TRUTH, [d], seeds=seeds, noise=noise, rng=rng)]


def one_repeat(rep: int, scales: np.ndarray, seeds: int, noise: float, max_steps: int, matched):
    """(first-passage FLOP ratio, the grid's width, trials at first passage, why not reached,
    [(FLOP fraction, width)] along suggest's path)."""
    rng = np.random.default_rng(rep)
    ux, uy = [], []
    for d in scales:
        uy += _measure(d, seeds, noise, rng)
        ux += [d] * seeds
    goal = _width(fit_law(ux, uy, law="power", n_boot=N_BOOT))
    uniform_flops = float(np.sum(ux))
    x = _start(scales)
    y = [v for d in x for v in _measure(d, 1, noise, rng)]
    step = scales[-1] / scales[-2]
    pool = [*scales, scales[-1] * step]
    ratio, trials, why, path = np.inf, len(x), f"not there in {max_steps} trials", []
    for _ in range(max_steps):
        fit = fit_law(x, y, law="power", n_boot=N_BOOT)
        w = _width(fit)
        path.append((float(np.sum(x)) / uniform_flops, w))
        if w <= goal and np.isinf(ratio):
            ratio, trials, why = path[-1][0], len(x), ""
            if not matched:
                break
        if matched and path[-1][0] >= 1.0:
            why = "not there within the grid's FLOPs" if np.isinf(ratio) else why
            break
        cands = [Candidate(curve=0, at={"D": float(d)}, flops=float(d)) for d in pool]
        try:
            s = suggest([fit], TARGET, cands, k=1, repeat=True)
        except BioscaleError as e:  # e.g. no draw reaches the target yet: nothing to shrink
            why = f"suggest refused: {e}" if np.isinf(ratio) else why
            break
        if not s.picks:
            why = "suggest proposed nothing" if np.isinf(ratio) else why
            break
        d = s.picks[0].candidate.at["D"]
        x.append(d)
        y += _measure(d, 1, noise, rng)
    return ratio, goal, trials, why, path


def fixed_designs(scales: np.ndarray) -> dict[str, list[float]]:
    """Name → the runs added to the five starting ones."""
    big, beyond, s2 = scales[-1], scales[-1] ** 2 / scales[-2], scales[2]
    cheap = [scales[0]] * 5 + [s2] * 5
    return {
        "none": [],
        "+1 at the largest": [big],
        "+2 at the largest": [big] * 2,
        "+3 at the largest": [big] * 3,
        "+1 one step beyond": [beyond],
        "+2 one step beyond": [beyond] * 2,
        "+1 beyond, +1 at the largest": [beyond, big],
        "+10 cheap (5 at each of the 2 smallest)": cheap,
        "+10 cheap, +1 beyond": [*cheap, beyond],
        "+10 cheap, +2 at the largest": [*cheap, big, big],
        "the 3 other scales (8 × 1)": list(scales[[1, 3, 5]]),
        "8 × 2": [*scales, *scales[[1, 3, 5]]],
        "+2 at the second-largest, +1 at the largest": [scales[-2]] * 2 + [big],
    }


def run_fixed(scales: np.ndarray, repeats: int, noise: float, uniform_flops: float) -> None:
    start = _start(scales)
    print("fixed designs (median width over the repeats):")
    for name, extra in fixed_designs(scales).items():
        x = start + extra
        ws = []
        for rep in range(repeats):
            rng = np.random.default_rng(10_000 + rep)
            y = [v for d in x for v in _measure(d, 1, noise, rng)]
            ws.append(_width(fit_law(x, y, law="power", n_boot=N_BOOT)))
        print(
            f"  {name}: {float(np.sum(x)) / uniform_flops:.2f}× the grid's FLOPs, "
            f"{np.median(ws):.3f} decades",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--scales", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.02, help="seed noise, SD of log error")
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument(
        "--matched", action="store_true", help="also compare median widths at matched FLOPs"
    )
    ap.add_argument("--fixed", action="store_true", help="also measure fixed designs")
    args = ap.parse_args()
    scales = np.geomspace(100, 1e4, args.scales)
    t0 = time.perf_counter()
    ratios, goals, paths = [], [], []
    for rep in range(args.repeats):
        ratio, goal, n, why, path = one_repeat(
            rep, scales, args.seeds, args.noise, args.max_steps, args.matched
        )
        ratios.append(ratio)
        goals.append(goal)
        paths.append(path)
        print(
            f"repeat {rep}: width to reach {goal:.3f} decades, {n} trials, FLOP ratio {ratio:.3f}"
            + (f" ({why})" if why else ""),
            flush=True,
        )
    r = np.array(ratios)
    print(
        f"suggest / uniform FLOPs to the same forecast-interval width: median {np.median(r):.3f} "
        f"(min {r.min():.3f}, max {r.max():.3f}) over {len(r)} repeats, "
        f"{int(np.isinf(r).sum())} of which did not get there (inf), {int((r >= 1).sum())} at "
        f"or above the grid's FLOPs; {time.perf_counter() - t0:.0f} s"
    )
    if args.matched:
        g = float(np.median(goals))
        print(f"matched FLOPs: the grid's median width {g:.3f} decades; suggest's median width at")
        first = None
        for f in FRACTIONS:
            # each repeat's width at the last refit within f × the grid's FLOPs
            ws = [[w for x, w in p if x <= f + 1e-9][-1] for p in paths]
            m = float(np.median(ws))
            first = f if first is None and m <= g else first
            print(f"  {f:.1f}× the grid's FLOPs: {m:.3f} decades")
        print(
            "suggest's median width reaches the grid's at "
            + (f"{first:.1f}× its FLOPs" if first else "no fraction up to 1.0×")
        )
    if args.fixed:
        print(f"the grid's median width {float(np.median(goals)):.3f} decades")
        run_fixed(scales, args.repeats, args.noise, float(args.seeds * np.sum(scales)))


if __name__ == "__main__":
    main()
