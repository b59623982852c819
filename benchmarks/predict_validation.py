"""How well does ``bioscale predict`` extrapolate published scaling curves, and do its pi95 hold?

The curves are the language/NMT curves of Alabdulmohsin, Neyshabur & Zhai, "Revisiting Neural
Scaling Laws in Language and Vision" (NeurIPS 2022), as aggregated by ColPret
(``scaling_curves/revisiting_lang.csv`` of the shared data; see its PROVENANCE): 20 curves, one
per (Task, Model), each with the paper's own split into fit points (``Training`` 1) and
extrapolation points (``Training`` 0). Exact duplicate rows are dropped (the aggregation repeats
each LM point 4×), so there is one run per scale and pi95 comes from the residual fallback.

Per curve and law (``pure_power``, ``power``, ``log_linear``, ``m4``, and ``auto``: the law chosen
by the backtest on the curve's fit points, its pi95 averaged over the candidate laws), the law is
fitted to the fit points with ``--bootstrap`` refits, and the extrapolation points are predicted:
the RMSE of the predicted values, and the share of the held-out points inside pi95. The held-out
points are used for nothing else. Prints the README's table, the law chosen per curve with its
pi95 weights, and, for comparison, auto with the chosen law's own band only.

    .venv/bin/python benchmarks/predict_validation.py [--bootstrap 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bioscale.scaling.fit import fit_law
from bioscale.scaling.predict import fit_auto, predict

LAWS = ("pure_power", "power", "log_linear", "m4")
COLUMNS = (*LAWS, "auto")
#: auto with only the chosen law's own band (before the candidate laws were averaged into pi95)
OWN = "auto, chosen law's band"
DEFAULT_TABLE = (
    Path(os.environ.get("BIOSCALE_REALDATA", Path(__file__).resolve().parents[2] / "shared/data"))
    / "scaling_curves"
    / "revisiting_lang.csv"
)


def load_curves(path: Path) -> list[dict[str, Any]]:
    """One dict per (Domain, Task, Model): name, fit points (x, y), held-out points (xe, ye)."""
    import pandas as pd

    d = pd.read_csv(path).drop_duplicates()
    out = []
    for (domain, task, model), g in d.groupby(["Domain", "Task", "Model"], sort=True):
        fit_pts, ext = g[g.Training == 1], g[g.Training == 0]
        out.append(
            {
                "name": f"{domain} {model if domain != 'BB' else task}",
                "x": fit_pts["Seen Examples"].to_numpy(float),
                "y": fit_pts["Loss"].to_numpy(float),
                "xe": ext["Seen Examples"].to_numpy(float),
                "ye": ext["Loss"].to_numpy(float),
            }
        )
    return out


def _score(fit, xe: np.ndarray, ye: np.ndarray, seed: int) -> dict[str, Any]:
    preds = predict(fit, [{"D": float(v)} for v in xe], seed=seed)
    value = np.array([p.value for p in preds])
    pi = np.array([p.pi95 for p in preds], dtype=float)
    inside = (pi[:, 0] <= ye) & (ye <= pi[:, 1])
    return {
        "rmse": float(np.sqrt(np.mean((value - ye) ** 2))),
        "inside": int(inside.sum()),
        "held": len(ye),
        "width": float(np.median(pi[:, 1] - pi[:, 0])),
    }


def validate_curve(curve: dict[str, Any], n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Every law's RMSE and pi95 coverage on one curve's held-out points."""
    x, y, xe, ye = curve["x"], curve["y"], curve["xe"], curve["ye"]
    out: dict[str, Any] = {"name": curve["name"]}
    for law in LAWS:
        fit = fit_law(x, y, law=law, n_boot=n_boot, boot_seed=seed)
        out[law] = _score(fit, xe, ye, seed)
    auto, choice = fit_auto(x, y, n_boot=n_boot, boot_seed=seed)
    out["auto"] = _score(auto, xe, ye, seed)
    out[OWN] = _score(auto.member(auto.law).fit, xe, ye, seed)
    out["chosen"] = choice["law"]
    out["weights"] = choice["pi95_weights"]
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def print_table(results: list[dict[str, Any]]) -> None:
    def stat(col: str) -> tuple[float, float, float]:
        rmse = np.median([r[col]["rmse"] for r in results])
        inside = sum(r[col]["inside"] for r in results)
        held = sum(r[col]["held"] for r in results)
        per_curve = np.mean([r[col]["inside"] / r[col]["held"] for r in results])
        return float(rmse), inside / held, float(per_curve)

    stats = {c: stat(c) for c in (*COLUMNS, OWN)}
    held = sum(r["auto"]["held"] for r in results)
    best = min(COLUMNS, key=lambda c: stats[c][0])
    rmse_cells = [f"**{stats[c][0]:.4f}**" if c == best else f"{stats[c][0]:.4f}" for c in COLUMNS]
    print(f"| | {' | '.join(COLUMNS)} |")
    print(f"|---|{'---|' * len(COLUMNS)}")
    print(f"| median RMSE over the {len(results)} curves | {' | '.join(rmse_cells)} |")
    print(
        f"| pi95 coverage, all {held} held-out points | "
        f"{' | '.join(_pct(stats[c][1]) for c in COLUMNS)} |"
    )
    print(f"| pi95 coverage, mean per curve | {' | '.join(_pct(stats[c][2]) for c in COLUMNS)} |")
    print()
    own = stats[OWN]
    print(
        f"{OWN}: pi95 coverage {_pct(own[1])} of all held-out points, {_pct(own[2])} mean per curve"
    )
    ratio = np.median([r["auto"]["width"] / r[OWN]["width"] for r in results])
    ratio_m4 = np.median([r["auto"]["width"] / r["m4"]["width"] for r in results])
    print(f"median pi95 width per curve, auto / {OWN}: {ratio:.2f}×; auto / m4: {ratio_m4:.2f}×")
    auto = np.array([r["auto"]["rmse"] for r in results])
    pure = np.array([r["pure_power"]["rmse"] for r in results])
    m4 = np.array([r["m4"]["rmse"] for r in results])
    equal = np.isclose(auto, pure, rtol=1e-9, atol=0.0)
    print(
        f"auto's RMSE below pure_power's on {int(np.sum((auto < pure) & ~equal))} of "
        f"{len(results)} curves (equal on {int(equal.sum())}), at or below m4's on "
        f"{int(np.sum(auto <= m4 + 1e-12))}"
    )
    counts = {}
    for r in results:
        counts[r["chosen"]] = counts.get(r["chosen"], 0) + 1
    print(
        "auto chose "
        + ", ".join(f"{k} {v}×" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    )
    print()
    width = max(len(r["name"]) for r in results)
    print(f"{'curve':{width}s}  chosen      RMSE auto / m4 / pure_power   pi95 auto (own)  weights")
    for r in results:
        w = ", ".join(f"{k} {v:.2f}" for k, v in r["weights"].items() if v >= 0.01)
        a, o = r["auto"], r[OWN]
        print(
            f"{r['name']:{width}s}  {r['chosen']:10s}  {a['rmse']:.4f} / {r['m4']['rmse']:.4f} / "
            f"{r['pure_power']['rmse']:.4f}      {a['inside']:2d}/{a['held']:<2d} ({o['inside']:2d})"
            f"      {w}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="revisiting_lang.csv")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap refits per fit")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--curves", type=int, default=None, help="only the first N curves")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap and new-run draw seed")
    args = ap.parse_args()
    if not args.table.is_file():
        raise SystemExit(
            f"no table at {args.table}: give --table PATH/revisiting_lang.csv or set "
            "BIOSCALE_REALDATA to the shared data folder"
        )
    curves = load_curves(args.table)[: args.curves]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        n = len(curves)
        results = list(pool.map(validate_curve, curves, [args.bootstrap] * n, [args.seed] * n))
    print(
        f"{len(curves)} curves, {args.bootstrap} bootstrap refits per fit, seed {args.seed}, "
        f"{args.workers} worker(s): {time.perf_counter() - t0:.0f} s\n"
    )
    print_table(results)


if __name__ == "__main__":
    main()
