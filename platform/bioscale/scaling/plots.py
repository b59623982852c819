"""Scaling plots: measured points, fitted curves with their 95% bootstrap band (the mean curve's
confidence band, shaded) beside the 95% prediction band of a new run (dotted; ``predict.bands``),
extrapolation dashed, forecasts marked; one colour per group; log-log axes of the error
(1 − metric for higher-is-better metrics). Also the layer-search heat maps and the trials'
per-epoch training curves."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


#: at most this many trials are drawn per training-curve panel, spread over the panel's diets
MAX_PANEL_TRIALS = 24
#: the training-curve figures ``plot_training_curves`` writes
TRAINING_CURVES_PNG = "training_curves.png"
TRAINING_TERMS_PNG = "training_terms.png"


@dataclass(frozen=True, kw_only=True)
class TrainingPanel:
    """One (objective, rung) panel of the training curves: the trials drawn in it (``trials``)
    and the objective's diets in order of training samples (``diets``: they fix the colours, the
    same in every panel of the objective), each with its median D (``diet_D``)."""

    objective: str
    rung: str
    N: float
    trials: list[dict[str, Any]]
    diets: list[str]
    diet_D: dict[str, float]
    left_out: int = 0


def training_panels(
    rows: Sequence[dict[str, Any]], max_trials: int = MAX_PANEL_TRIALS
) -> dict[str, list[TrainingPanel]]:
    """Per objective, one panel per rung in order of N. A panel holds every trial of its
    (objective, rung) up to ``max_trials``; beyond, ``max_trials`` taken in turn from each diet
    (fewest training samples first), lowest seeds first, and ``left_out`` counts the rest."""
    by_panel: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("run_id"):
            by_panel[(str(row.get("objective", "")), str(row.get("rung", "")))].append(row)
    sizes: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (objective, _), trials in by_panel.items():
        for t in trials:
            sizes[objective][str(t.get("diet", ""))].append(_num(t.get("D_samples")))
    diet_D = {
        objective: {d: float(np.median(v)) for d, v in by_diet.items()}
        for objective, by_diet in sizes.items()
    }
    out: dict[str, list[TrainingPanel]] = defaultdict(list)
    for (objective, rung), trials in sorted(by_panel.items()):
        median = diet_D[objective]
        diets = sorted(median, key=lambda d: (median[d], d))
        by_diet: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for t in sorted(trials, key=lambda r: (_num(r.get("seed")), str(r.get("run_id")))):
            by_diet[str(t.get("diet", ""))].append(t)
        chosen: list[dict[str, Any]] = []
        queues = [list(by_diet[d]) for d in diets if d in by_diet]
        while len(chosen) < max_trials and any(queues):
            for queue in queues:
                if queue and len(chosen) < max_trials:
                    chosen.append(queue.pop(0))
        n = float(np.median([_num(t.get("N")) for t in trials]))
        out[objective].append(
            TrainingPanel(
                objective=objective,
                rung=rung,
                N=n,
                trials=chosen,
                diets=diets,
                diet_D=median,
                left_out=len(trials) - len(chosen),
            )
        )
    for panels in out.values():
        panels.sort(key=lambda p: (p.N if math.isfinite(p.N) else math.inf, p.rung))
    return dict(out)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def plot_training_curves(
    rows: Sequence[dict[str, Any]],
    histories: dict[str, dict[str, list[tuple[int, float]]]],
    out_dir: str | Path,
    *,
    max_trials: int = MAX_PANEL_TRIALS,
) -> list[Path]:
    """The trials' per-epoch curves (``runs.metric_histories``), one small panel per (objective,
    rung) (``training_panels``; a row of panels per objective, rungs in order of N), one line per
    trial coloured by its diet (darker: fewer training samples): ``val/loss`` solid,
    ``train/loss`` dashed, epoch on x → ``training_curves.png``. Other ``train/<term>`` terms
    (e.g. ``train/ce``, ``train/invariance``) in ``training_terms.png``, a row of panels per
    (objective, term). Returns the PNGs written; ``[]`` when no trial has a history."""
    panels = training_panels(rows, max_trials)
    drawn = [t for ps in panels.values() for p in ps for t in p.trials]
    if not any(histories.get(t["run_id"]) for t in drawn):
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    main_rows, term_rows = training_grid(panels, histories)
    paths = [_save(training_figure(panels, histories, main_rows), out_dir / TRAINING_CURVES_PNG)]
    if term_rows:
        paths.append(
            _save(training_figure(panels, histories, term_rows), out_dir / TRAINING_TERMS_PNG)
        )
    return paths


def training_grid(
    panels: dict[str, list[TrainingPanel]],
    histories: dict[str, dict[str, list[tuple[int, float]]]],
) -> tuple[list[tuple[str, tuple[str, ...]]], list[tuple[str, tuple[str, ...]]]]:
    """The figures' rows of panels: (objective, metric keys drawn) — ``val/loss`` with
    ``train/loss`` per objective; then per objective each other ``train/<term>`` it logged, except
    a term that equals ``train/loss`` in every trial (supervised: loss = ce), which adds nothing."""
    main_rows = [(objective, ("val/loss", "train/loss")) for objective in panels]
    term_rows = []
    for objective, ps in panels.items():
        logged = [histories.get(t["run_id"], {}) for p in ps for t in p.trials]
        keys = sorted({k for h in logged for k in h if k.startswith("train/")} - {"train/loss"})
        term_rows += [(objective, (k,)) for k in keys if not _same(logged, k, "train/loss")]
    return main_rows, term_rows


def _same(histories: Sequence[dict[str, list[tuple[int, float]]]], a: str, b: str) -> bool:
    """Whether metric ``a`` equals metric ``b`` at every epoch of every history."""
    for h in histories:
        x, y = h.get(a, []), h.get(b, [])
        if len(x) != len(y) or not np.allclose(np.asarray(x, float), np.asarray(y, float)):
            return False
    return True


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)
    return path


def training_figure(
    panels: dict[str, list[TrainingPanel]],
    histories: dict[str, dict[str, list[tuple[int, float]]]],
    grid: list[tuple[str, tuple[str, ...]]],
) -> Any:
    """A matplotlib figure: a row of panels per (objective, metric keys) of ``grid``, a panel per
    rung; per panel and key one ``LineCollection`` holding a line per trial, the first key solid,
    the second dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    ncols = max(len(panels[objective]) for objective, _ in grid)
    fig, axes = plt.subplots(
        len(grid),
        ncols,
        figsize=(0.4 + 2.6 * ncols, 0.5 + 2.1 * len(grid)),
        dpi=110,
        squeeze=False,
    )
    cmap = plt.get_cmap("viridis")
    styles = ("-", "--")
    for r, (objective, keys) in enumerate(grid):
        row_panels = panels[objective]
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(row_panels):
                ax.set_visible(False)
                continue
            panel = row_panels[c]
            shade = {d: 0.85 * i / max(len(panel.diets) - 1, 1) for i, d in enumerate(panel.diets)}
            for key, ls in zip(keys, styles, strict=False):
                # one collection per line style: a panel of many trials draws as fast as one
                lines, colours = [], []
                for trial in panel.trials:
                    points = histories.get(trial["run_id"], {}).get(key)
                    if points:
                        lines.append(np.asarray(points, dtype=float))
                        colours.append(cmap(shade[str(trial.get("diet", ""))]))
                if lines:
                    ax.add_collection(
                        LineCollection(lines, colors=colours, linestyles=ls, lw=0.9, alpha=0.85)
                    )
            ax.autoscale_view()
            more = f" (+{panel.left_out} not drawn)" if panel.left_out else ""
            ax.set_title(f"{objective} · {panel.rung}{more}", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.grid(True, alpha=0.3)
            if c == 0:
                ax.set_ylabel(keys[0] if len(keys) == 1 else "loss", fontsize=7)
            if r == len(grid) - 1 or c >= len(panels[grid[r + 1][0]]):
                ax.set_xlabel("epoch", fontsize=7)
            if c == len(row_panels) - 1:  # the objective's diets, beside its row
                handles = [Line2D([], [], color=cmap(shade[d]), lw=1.2) for d in panel.diets]
                labels = [f"{d} · D={panel.diet_D[d]:,.0f}" for d in panel.diets]
                ax.legend(
                    handles,
                    labels,
                    fontsize=5,
                    title=f"{objective}: diet",
                    title_fontsize=5.5,
                    loc="upper left",
                    bbox_to_anchor=(1.02, 1.0),
                )
    both = all(len(keys) == 2 for _, keys in grid)
    fig.suptitle(
        f"{grid[0][1][0]} (solid) and {grid[0][1][1]} (dashed) per epoch; colour: diet"
        if both
        else "train/<term> per epoch (the objectives' loss terms); colour: diet",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _mean_by(rows: Sequence[dict], x: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``metric`` over the rows (seeds) at each value of ``x``, in order of ``x``."""
    found: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        xv, yv = r.get(x), r.get(metric)
        if isinstance(xv, int | float) and isinstance(yv, int | float) and math.isfinite(yv):
            found[float(xv)].append(float(yv))
    xs = np.array(sorted(found))
    return xs, np.array([np.mean(found[v]) for v in xs])


def plot_condition_curves(
    rows: Sequence[dict],
    out_dir: str | Path,
    *,
    metrics: dict[str, str],
    family: str,
    title: str,
    ylabel: str,
) -> list[Path]:
    """Per-condition curves of the metrics ``metrics`` (column → condition label): along D, one
    panel per ``family`` value at its curve's rung (the rung with the most diets), and along N,
    one panel per family at the largest diet; one line per condition (mean over seeds), no fit.
    Returns ``[conditions_D.png, conditions_N.png]`` (those with at least two scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_family: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_family[str(r.get(family))].append(r)
    if not by_family or not metrics:
        return []
    out_dir = Path(out_dir)
    cmap = plt.get_cmap("tab10")
    written = []
    for axis, column in (("D", "D_samples"), ("N", "N")):
        panels = []
        for fam, fam_rows in sorted(by_family.items()):
            if axis == "D":  # the rung this family's data-scaling curve was run at
                diets: dict[str, set] = defaultdict(set)
                for r in fam_rows:
                    diets[str(r.get("rung"))].add(r.get("diet"))
                rung = max(diets, key=lambda k: len(diets[k]))
                chosen = [r for r in fam_rows if str(r.get("rung")) == rung]
                where = f"{fam}: {rung}"
            else:  # every rung at the family's largest diet
                top = max(float(r.get("D_samples") or 0) for r in fam_rows)
                chosen = [r for r in fam_rows if float(r.get("D_samples") or 0) == top]
                where = f"{fam}: D = {top:,.0f}"
            if len({r.get(column) for r in chosen}) >= 2:
                panels.append((where, chosen))
        if not panels:
            continue
        fig, axes = plt.subplots(
            1, len(panels), figsize=(1.5 + 3.6 * len(panels), 3.6), dpi=120, squeeze=False
        )
        for ax, (where, chosen) in zip(axes[0], panels, strict=True):
            scales: set[float] = set()
            for i, (col, label) in enumerate(metrics.items()):
                xs, ys = _mean_by(chosen, column, col)
                if len(xs):
                    ax.plot(xs, ys, "o-", color=cmap(i % 10), ms=3, lw=1.2, label=label)
                    scales.update(xs.tolist())
            ax.set_xscale("log")
            ax.set_xticks(sorted(scales), [f"{v:,.0f}" for v in sorted(scales)], fontsize=7)
            ax.minorticks_off()
            ax.set_xlabel("training samples D" if axis == "D" else AXIS_LABELS[axis], fontsize=8)
            ax.set_title(where, fontsize=9)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(ylabel, fontsize=8)
        axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(f"{title}: per condition along {axis}", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"conditions_{axis}.png"
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
