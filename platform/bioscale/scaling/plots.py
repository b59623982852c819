"""Scaling plots: measured points, fitted curves with their 95% bootstrap band (the mean curve's
confidence band, shaded) beside the 95% prediction band of a new run (dotted; ``predict.bands``),
extrapolation dashed, forecasts marked; one colour per group; log-log axes of the error
(1 − metric for higher-is-better metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bioscale.scaling.fit import FitResult
from bioscale.scaling.forecast import Forecast

AXIS_LABELS = {"D": "training samples D (wells)", "N": "backbone parameters N"}
#: the dashed extrapolation runs to this multiple of the largest observed scale
EXTRAPOLATE = 10.0


def _label(fit: FitResult) -> str:
    label = ", ".join(f"{v}" for v in fit.group.values()) or "all"
    if fit.params is None:
        return f"{label} (no fit: {fit.note.split(';')[0]})"
    spec = fit.spec
    exps = [spec.exponent(fit.params, i) for i in range(len(fit.axis))]
    ci = spec.exponent_ci(fit.ci95) if len(fit.axis) == 1 else None
    text = ", ".join(f"{n}={e:.3g}" for n, e in zip(spec.exponent_symbols, exps, strict=False))
    if ci:
        text += " [" + ", ".join("—" if v is None else f"{v:.3g}" for v in ci) + "]"
    flag = " — plateau" if fit.plateau and fit.plateau["plateau"] else ""
    return f"{label}: {text}{flag}"


def _prediction_band(fit: FitResult, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A new run's 95% band at ``x`` (``predict.bands``), or None where it cannot be estimated."""
    from bioscale.errors import BioscaleError
    from bioscale.scaling.predict import bands

    try:
        return bands(fit, x)[2]
    except BioscaleError:
        return None


def _err(fit: FitResult, y: np.ndarray) -> np.ndarray:
    return 1.0 - y if fit.direction == "higher" else y


def plot_fits(
    fits: Sequence[FitResult],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    forecasts: Sequence[Forecast] = (),
    extrapolate: float = EXTRAPOLATE,
) -> Path:
    """One PNG of the fits' error against their (last) axis, log-log.

    For a two-axis law each distinct value of the first axis is its own curve along the second.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.6), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    i = 0
    shown_pi = False
    for fit in fits:
        x_all, y_all = fit.x, fit.y
        k = len(fit.axis)
        # along D where the law has it (else its last axis); one curve per value of the others
        along = fit.axis.index("D") if "D" in fit.axis else k - 1
        others = [j for j in range(k) if j != along]
        slices = [None] if k == 1 else sorted({tuple(row[others]) for row in x_all})
        for sl in slices:
            colour = colours[i % len(colours)]
            i += 1
            mask = np.ones(len(y_all), bool)
            if sl is not None:
                mask = np.all(x_all[:, others] == np.asarray(sl), axis=1)
            x, y = x_all[mask, along], y_all[mask]
            label = _label(fit) + (
                ""
                if sl is None
                else " @ "
                + ", ".join(f"{fit.axis[j]}={v:.3g}" for j, v in zip(others, sl, strict=True))
            )
            ax.scatter(x, _err(fit, y), color=colour, s=14, zorder=3)
            if fit.params is None or len(x) == 0:
                ax.plot([], [], color=colour, label=label)
                continue
            xs_in = np.geomspace(x.min(), x.max(), 80)
            xs_out = np.geomspace(x.max(), x.max() * extrapolate, 40)
            pts_in, pts_out = xs_in, xs_out
            if sl is not None:
                pts_in, pts_out = (
                    _points(k, along, others, sl, xs_in),
                    _points(k, along, others, sl, xs_out),
                )
            ax.plot(xs_in, _err(fit, fit.predict(pts_in)), color=colour, label=label)
            flagged = fit.plateau and (fit.plateau["plateau"] or fit.plateau["non_monotonic"])
            if not flagged:
                ax.plot(xs_out, _err(fit, fit.predict(pts_out)), color=colour, ls="--", lw=1)
            band = fit.band(np.concatenate([pts_in, pts_out]))
            xs = np.concatenate([xs_in, xs_out])
            if band is not None:
                lo, hi = sorted((_err(fit, band[0]), _err(fit, band[1])), key=np.sum)
                ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, lw=0)
            pi = _prediction_band(fit, np.concatenate([pts_in, pts_out]))
            if pi is not None:
                for edge in (_err(fit, pi[0]), _err(fit, pi[1])):
                    ax.plot(xs, edge, color=colour, ls=":", lw=0.9)
                shown_pi = True
    for fc in forecasts:
        if fc.value is not None and fc.status in ("reachable", "beyond_range"):
            t_err = 1.0 - fc.target if fits and fits[0].direction == "higher" else fc.target
            ax.plot([fc.value], [t_err], marker="*", color="k", ms=9, zorder=4)
    if shown_pi:
        ax.plot([], [], color="grey", ls=":", lw=0.9, label="95% prediction band (a new run)")
        ax.fill_between([], [], [], color="grey", alpha=0.15, lw=0, label="95% band of the curve")
    axis = fits[0].axis[-1] if fits else ""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def layer_search_table(
    rows: Sequence[dict], task: str
) -> dict[str, list[tuple[str, float, dict[int, float], float | None]]]:
    """Per objective, per rung (by N): the mean validation top-1 of each layer over the trials
    with ``probe_selection = search`` (at the rung's largest ``D_samples``) and the most often
    chosen layer: ``{objective: [(rung, N, {layer index: val top-1}, best index), ...]}``."""
    prefix = f"probe/{task}/layer/"
    found: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("probe_selection") != "search" or f"probe/{task}/best_layer" not in row:
            continue
        found.setdefault((str(row.get("objective", "")), str(row.get("rung", ""))), []).append(row)
    out: dict[str, list[tuple[str, float, dict[int, float], float | None]]] = {}
    for (objective, rung), group in sorted(found.items()):
        most = max(r.get("D_samples", 0) for r in group)
        group = [r for r in group if r.get("D_samples", 0) == most]
        curve: dict[int, list[float]] = {}
        for r in group:
            for key, value in r.items():
                if key.startswith(prefix) and key.endswith("/val_top1"):
                    curve.setdefault(int(key[len(prefix) :].split("/")[0]), []).append(value)
        best = [r[f"probe/{task}/best_layer"] for r in group]
        chosen = max(set(best), key=best.count) if best else None
        mean = {i: float(np.mean(v)) for i, v in sorted(curve.items())}
        out.setdefault(objective, []).append((rung, float(group[0].get("N", 0)), mean, chosen))
    for entries in out.values():
        entries.sort(key=lambda e: e[1])
    return out


def plot_layer_search(
    rows: Sequence[dict], out_dir: str | Path, *, task: str, title: str
) -> list[Path]:
    """The layer-by-scale heat map of layer search: one panel per objective, one column per rung
    (ordered by N), each layer a cell at its relative depth (0 = first feature layer, top = the
    embedding) coloured by its probe-validation top-1; a dot marks the most often chosen layer.
    Returns ``[layer_search_<task>.png]``, or ``[]`` when no trial searched layers."""
    table = layer_search_table(rows, task)
    if not table:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    values = [v for entries in table.values() for _, _, c, _ in entries for v in c.values()]
    norm = Normalize(vmin=min(values), vmax=max(values))
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(
        1, len(table), figsize=(2.2 + 2.4 * len(table), 4.2), dpi=120, squeeze=False
    )
    for ax, (objective, entries) in zip(axes[0], table.items(), strict=True):
        for col, (_, _, curve, best) in enumerate(entries):
            count = max(curve) + 1
            for i, v in curve.items():
                ax.bar(col, 1.0 / count, bottom=i / count, width=0.9, color=cmap(norm(v)))
            if best is not None:
                ax.plot(col, (best + 0.5) / count, "o", color="white", mec="black", ms=6)
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels([f"{r}\nN={n:,.0f}" for r, n, _, _ in entries], fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(objective, fontsize=9)
        ax.set_ylabel("relative layer depth (top: embedding)")
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap),
        ax=axes[0].tolist(),
        shrink=0.8,
        label=f"{task} probe top-1 on probe_val",
    )
    fig.suptitle(f"{title}: layer search, {task} (dot: chosen layer)", fontsize=10)
    path = Path(out_dir) / f"layer_search_{task}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return [path]


def _points(k: int, along: int, others: list[int], values, xs: np.ndarray) -> np.ndarray:
    """(len(xs), k) points: ``xs`` on axis ``along``, the slice's ``values`` on the others."""
    pts = np.empty((len(xs), k))
    pts[:, along] = xs
    for j, v in zip(others, values, strict=True):
        pts[:, j] = v
    return pts
