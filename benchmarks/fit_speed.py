"""Chinchilla fit speed: a 240-point two-axis table (8 model sizes × 6 data sizes × 5 seeds,
generated from Hoffmann et al. 2022's published law with 2% noise), fitted with 95% bootstrap
intervals by ``bioscale.scaling.fit_law`` (coarse grid, 64 starts refined together, bootstrap
refits each started from θ̂ and the other optima found), against a naive baseline measured in the
same run: a
4,500-start grid (5 e × 6 a × 5 α × 6 b × 5 β), each start an L-BFGS-B run with finite-difference
gradients and no intervals, as in the published recipe.

Budget (issue 6): under 60 s on 2 cores. Wall-clock and CPU seconds are both printed: on a shared
machine the CPU time is the stable number. The baseline is timed on a random sample of its starts
and scaled to all 4,500 (``--full-baseline`` runs them all; ~2-3 minutes on 2 cores).

    python benchmarks/fit_speed.py [--bootstrap 1000] [--baseline-starts 150] [--full-baseline]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from bioscale.scaling.fit import fit_law, huber
from bioscale.scaling.laws import LAWS
from bioscale.scaling.synthetic import law_table

TRUTH = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)  # Hoffmann et al. 2022, approach 3
BUDGET_S = 60.0


def table() -> tuple[np.ndarray, np.ndarray]:
    """240 points: (240, 2) scales (N parameters, D tokens) and (240,) losses."""
    pts = [[n, d] for n in np.geomspace(1e7, 1e10, 8) for d in np.geomspace(1e8, 1e11, 6)]
    rows = law_table("chinchilla", TRUTH, pts, axes=("N", "D"), seeds=5, noise=0.02, rng=0)
    return np.array([[r["N"], r["D"]] for r in rows]), np.array([r["loss"] for r in rows])


def naive_grid() -> np.ndarray:
    """(4500, 5) starts in θ = (e, a, α, b, β)."""
    return np.array(
        list(
            itertools.product(
                (-1.0, -0.5, 0.0, 0.5, 1.0),
                (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
                (0.0, 0.5, 1.0, 1.5, 2.0),
                (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
                (0.0, 0.5, 1.0, 1.5, 2.0),
            )
        )
    )


def naive_fit(x: np.ndarray, y: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, float]:
    """The published recipe: L-BFGS-B from every start, numerical gradients, keep the best."""
    law = LAWS.get("chinchilla")
    logX, logy = np.log(x).T, np.log(y)

    def objective(theta: np.ndarray) -> float:
        return float(np.sum(huber(law.log_predict(theta, logX) - logy)))

    best = None
    for start in starts:
        res = minimize(objective, start, method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    return best.x, float(best.fun)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument("--baseline-starts", type=int, default=150, help="naive starts timed")
    parser.add_argument("--full-baseline", action="store_true", help="time all 4,500 starts")
    args = parser.parse_args()
    x, y = table()

    t0, c0 = time.perf_counter(), time.process_time()
    fit_law(x, y, law="chinchilla", axis=["N", "D"], n_boot=0)
    point_s, point_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_law(x, y, law="chinchilla", axis=["N", "D"], n_boot=args.bootstrap)
    ours, ours_cpu = time.perf_counter() - t0, time.process_time() - c0

    grid = naive_grid()
    sample = (
        grid
        if args.full_baseline
        else grid[np.random.default_rng(0).choice(len(grid), args.baseline_starts, replace=False)]
    )
    with threadpool_limits(limits=1, user_api="blas"):  # same BLAS setting as ours: a fair ratio
        t0, c0 = time.perf_counter(), time.process_time()
        _, naive_loss = naive_fit(x, y, sample)
        naive = (time.perf_counter() - t0) * len(grid) / len(sample)
        naive_cpu = (time.process_time() - c0) * len(grid) / len(sample)

    print(f"table: {len(y)} points, {len(np.unique(x, axis=0))} (N, D) scales, 5 seeds each")
    print(f"bioscale fit_law, point fit only: {point_s:.2f} s ({point_cpu:.2f} s CPU)")
    print(f"bioscale fit_law with {args.bootstrap} bootstrap refits ({fit.bootstrap['starts']} "
          "start(s) each):")  # fmt: skip
    verdict = "PASS" if ours < BUDGET_S else "FAIL"
    print(f"  {ours:.1f} s, {ours_cpu:.1f} s CPU  (budget {BUDGET_S:.0f} s: {verdict})")
    for k, v in fit.params.items():
        lo, hi = fit.ci95[k]
        print(f"  {k:>5} = {v:9.4g}  95% CI [{lo:.4g}, {hi:.4g}]  truth {TRUTH[k]:g}")
    how = "all starts" if args.full_baseline else f"{len(sample)} starts timed, scaled to 4,500"
    print(f"naive 4,500-start grid, no intervals ({how}): {naive:.1f} s, {naive_cpu:.1f} s CPU")
    print(f"  best loss on the timed starts {naive_loss:.5g}, bioscale's {fit.loss:.5g}")
    print(f"speed-up: {naive_cpu / ours_cpu:.1f}× less CPU time, with intervals")


if __name__ == "__main__":
    main()
