"""How often do bootstrap 95% intervals hold the truth, on study designs bioscale meets?

Tables are drawn from a known saturating power law (err = E + A·D^−α, E = 0.1, A = 2, α = 0.35)
with log-normal seed noise (2%, ``--noise``), at up to 8 scales geometric from 100 to 10⁴
samples. Designs: every scale with 3, 2 or 1 seeds, and mixes of repeated and single-run scales
like those a study grown one trial at a time has (``bioscale study suggest``). Each table is
fitted with ``--refits`` bootstrap refits under each scheme, and the intervals are checked
against the truth: E, A, α, and the forecast — the D at which the error falls to 0.15
(3.8 × the largest scale). Prints, per design and scheme, the coverage of each and the median
(10th–90th percentile) width of the forecast's interval in decades.

    .venv/bin/python benchmarks/bootstrap_coverage.py [--tables 40] [--refits 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bioscale.scaling.fit import fit_law
from bioscale.scaling.forecast import invert
from bioscale.scaling.synthetic import law_table

TRUTH = {"E": 0.1, "A": 2.0, "alpha": 0.35}
TARGET = 0.15
D_STAR = (TRUTH["A"] / (TARGET - TRUTH["E"])) ** (1 / TRUTH["alpha"])
S = np.geomspace(100, 1e4, 8)
#: design name → [(scale, seeds)]
DESIGNS = {
    "8 scales × 3 seeds": [(d, 3) for d in S],
    "7 scales × 2 seeds": [(d, 2) for d in S[:7]],
    "8 scales × 1 seed": [(d, 1) for d in S],
    "mix: 8,6,1,2,1 seeds at 5 scales": [(S[0], 8), (S[2], 6), (S[4], 1), (S[6], 2), (S[7], 1)],
    "mix: 3,3,1,1,1": [(S[0], 3), (S[2], 3), (S[4], 1), (S[6], 1), (S[7], 1)],
    "mix: 2,1,1,2,1": [(S[0], 2), (S[2], 1), (S[4], 1), (S[6], 2), (S[7], 1)],
    "mix: 1,1,1,3,3": [(S[0], 1), (S[2], 1), (S[4], 1), (S[6], 3), (S[7], 3)],
}


def one_table(design, noise: float, rng: np.random.Generator):
    x, y = [], []
    for d, m in design:
        y += [r["loss"] for r in law_table("power", TRUTH, [d], seeds=m, noise=noise, rng=rng)]
        x += [d] * m
    return x, y


def check(fit) -> dict[str, float]:
    """1/0 per quantity (truth inside the 95% interval) and the forecast's width in decades."""
    out = {k: float(lo <= TRUTH[k] <= hi) for k, (lo, hi) in fit.ci95.items()}
    v = invert(fit, fit.boot, TARGET, 0, np.zeros(1))
    z = np.log10(np.minimum(v, fit.x[:, 0].max() * 1e3))  # a draw never reaching it: far off
    lo, hi = np.quantile(z, [0.025, 0.975])
    out["forecast"] = float(lo <= np.log10(D_STAR) <= hi)
    out["width"] = float(hi - lo)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=40)
    ap.add_argument("--refits", type=int, default=100)
    ap.add_argument("--noise", type=float, default=0.02, help="seed noise, SD of log error")
    ap.add_argument("--schemes", default="seeds,cases")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(
        f"{args.tables} tables per design, {args.refits} refits; coverage of the 95% intervals "
        f"(forecast: D where err = {TARGET}, truth {D_STAR:.3g})"
    )
    print("| design | scheme | forecast | E | A | α | forecast width, decades |")
    print("|---|---|---|---|---|---|---|")
    for name, design in DESIGNS.items():
        for scheme in args.schemes.split(","):
            rows = []
            for t in range(args.tables):
                x, y = one_table(design, args.noise, np.random.default_rng(1000 + t))
                fit = fit_law(
                    x, y, law="power", n_boot=args.refits, boot_seed=t, bootstrap_scheme=scheme
                )
                rows.append(check(fit))
            cov = {k: np.mean([r[k] for r in rows]) for k in ("forecast", "E", "A", "alpha")}
            w = np.array([r["width"] for r in rows])
            print(
                f"| {name} | {scheme} | {cov['forecast']:.0%} | {cov['E']:.0%} | {cov['A']:.0%} "
                f"| {cov['alpha']:.0%} | {np.median(w):.2f} ({np.quantile(w, 0.1):.2f}–"
                f"{np.quantile(w, 0.9):.2f}) |",
                flush=True,
            )
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
