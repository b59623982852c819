"""The scaling report: one self-contained HTML page a scientist can read — curves with interval
bands and dashed extrapolation, exponents with intervals, backtest errors, forecasts, objective
comparisons, predictions of a new run (its 95% prediction interval beside the mean curve's 95%
confidence interval), the law ``--law auto`` chose per curve, one plain sentence per curve, the
trials' per-epoch training curves, what a user must act on (issues) and the trial table, each row
linked to its MLflow run."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioscale.scaling.fit import FitResult
from bioscale.scaling.forecast import Forecast
from bioscale.scaling.runs import TrialRuns
from bioscale.uri import redact_uri

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:49%;border:1px solid #ddd}
img.wide{max-width:100%}
.note{color:#666;font-size:13px}
figure{display:inline-block;margin:4px;font-size:12px;text-align:center}
figure img{width:160px;max-width:none;image-rendering:pixelated}"""


@dataclass(frozen=True, kw_only=True)
class VisPanel:
    """One objective's feature visualisations (``bioscale visualize``) in the report.

    Attributes:
        title: what was visualised, e.g. ``supervised · resnet:18 (N = 11,000,000)``.
        note: where it comes from (run, settings).
        items: per target: caption, image PNG, transparency PNG (files beside the report).
    """

    title: str
    note: str
    items: list[tuple[str, Path, Path]]


def vis_section(panels: Sequence[VisPanel]) -> str:
    """The report's feature-visualisation section; empty without panels."""
    if not panels:
        return ""
    blocks = []
    for panel in panels:
        figures = "".join(
            f'<figure><img src="{html.escape(image.name)}" alt="{html.escape(caption)}">'
            f'<img src="{html.escape(alpha.name)}" alt="transparency of {html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            for caption, image, alpha in panel.items
        )
        blocks.append(
            f"<h3>{html.escape(panel.title)}</h3><p class=note>{html.escape(panel.note)}</p>"
            f"{figures}"
        )
    return (
        "<h2>Feature visualisations (MACO)</h2><p class=note>Per objective, the largest rung "
        "with visualisations: each class logit maximised by optimising only the Fourier phase "
        "of an image whose magnitude spectrum is the data's mean amplitude spectrum (Fel et al. "
        "2023, arXiv 2306.06805), with random crops and noise each step; beside each image its "
        "transparency map, the |gradient| accumulated over the steps (brighter: pixels the "
        "logit depends on more). Cell Painting images are dye composites (DNA blue, ER green, "
        "RNA cyan, AGP magenta, Mito red). Captions give the logit of the whole image before → "
        "after. Made by <code>bioscale visualize</code>.</p>" + "".join(blocks)
    )


#: a report forecasts, per curve, the scale that cuts its best observed error by this fraction
DEFAULT_ERROR_CUT = 0.1


def _ci(ci: list[float | None] | None, fmt: str = ".3g") -> str:
    if not ci:
        return "no interval"
    return "[" + ", ".join("—" if v is None else format(v, fmt) for v in ci) + "]"


def default_target(fit: FitResult) -> float | None:
    """A target in the metric's terms: the best observed error cut by ``DEFAULT_ERROR_CUT``."""
    if not fit.points:
        return None
    err = 1.0 - fit.y if fit.direction == "higher" else fit.y
    goal = float(err.min()) * (1.0 - DEFAULT_ERROR_CUT)
    return 1.0 - goal if fit.direction == "higher" else goal


def describe_fit(fit: FitResult, metric_label: str) -> str:
    """One plain sentence on how a group scales along the fit's axis."""
    what = {"D": "training data", "N": "model size"}.get(fit.axis[-1], fit.axis[-1])
    name = ", ".join(str(v) for v in fit.group.values()) or "all trials"
    if not fit.points:
        return f"{name}: no points along {what}."
    xs = fit.x[:, -1]
    span = f"{xs.min():,.0f}–{xs.max():,.0f}"
    if fit.params is None:
        return f"{name}: no fit along {what} ({fit.note})."
    pl = fit.plateau or {}
    if pl.get("plateau") or pl.get("non_monotonic"):
        return (
            f"{name}: {metric_label} has stopped improving along {what} ({span}): "
            f"{pl['reason']}; it sits at {pl['level']:.3f}, so more {what} alone will not help "
            "and no power law is extrapolated through it."
        )
    spec = fit.spec
    if spec.describe is not None:
        clause = spec.describe(fit.params, fit.ci95, fit.axis[-1])
        text = f"{name}: {metric_label} {clause}, over {span}."
    else:
        alpha = spec.exponent(fit.params, len(fit.axis) - 1)
        ename = spec.exponent_names[len(fit.axis) - 1]
        ci = fit.ci95.get(ename[0]) if len(ename) == 1 else None
        floor = fit.params.get(spec.floor_name, 0.0) if spec.floor_name else 0.0
        gain = 1.0 - 2.0 ** (-alpha)
        tail = (  # a law without a floor (pure_power) claims none
            f", toward a floor of {floor:.3f} in error; each doubling of {what} removes "
            f"{gain:.0%} of the error above that floor."
            if spec.floor_name
            else f" (a law without a floor); each doubling of {what} removes {gain:.0%} of the "
            "error."
        )
        text = (
            f"{name}: {metric_label} error falls as {fit.axis[-1]}^−{alpha:.2f}"
            + (f" (95% CI {_ci(ci, '.2f')})" if ci else "")
            + f" over {span}{tail}"
        )
    bt = fit.backtest
    if bt:
        inside = bt.get("in_interval") or []
        text += (
            f" Backtest: fitted without the largest scale it predicts it within "
            f"{bt['mean_abs_error']:.3f} ({bt['mean_rel_error']:.0%})"
            + (
                ", inside its 95% interval."
                if inside and all(inside)
                else ", outside its 95% interval — treat forecasts with care."
            )
        )
    return text


def describe_forecast(fc: Forecast) -> str:
    name = ", ".join(str(v) for v in fc.group.values()) or "all trials"
    axis = fc.axis[0]
    if fc.status in ("reachable", "beyond_range") and fc.value is not None:
        text = (
            f"{name}: reaches {fc.target:.3g} at {axis} ≈ {fc.value:,.3g} (95% CI {_ci(fc.ci95)})"
        )
        return text + (" — far beyond the data." if fc.status == "beyond_range" else ".")
    if fc.status == "unreachable":
        return f"{name}: {fc.target:.3g} is out of reach along {axis} (floor {fc.floor:.3g} {_ci(fc.floor_ci95)}). {fc.note}"
    return f"{name}: whether {fc.target:.3g} is reachable along {axis} is uncertain. {fc.note}"


def law_check_section(checks: Sequence[dict[str, Any]]) -> str:
    """The report's "power law or straight line in log x" section; empty without checks."""
    if not checks:
        return ""
    from bioscale.scaling.selection import AICC_MARGIN, describe_law_check

    def num(v: float | None, fmt: str) -> str:
        return "—" if v is None else "+∞" if v == float("inf") else format(v, fmt)

    rows = [
        {
            "group": ", ".join(f"{k}={v}" for k, v in c["group"].items()),
            "axis": ",".join(c["axis"]),
            "runs": c["n_points"],
            "AICc power": num(c["aicc_power"], ".1f"),
            "AICc log_linear": num(c["aicc_log_linear"], ".1f"),
            "ΔAICc": num(c["delta_aicc"], "+.1f"),
            "verdict": c["verdict"],
            "backtest |error| power": num(c["backtest_abs_error_power"], ".3g"),
            "backtest |error| log_linear": num(c["backtest_abs_error_log_linear"], ".3g"),
        }
        for c in checks
    ]
    items = "".join(f"<li>{html.escape(describe_law_check(c))}</li>" for c in checks)
    return (
        "<h2>Power law or straight line in log x?</h2><p class=note>Per curve, the power law "
        "err = E + A·x^(−α) against <code>log_linear</code>, err = a + b·log10 x (the line "
        "Pheno-CA compared against). Criterion: AICc (small-sample Akaike information criterion) "
        "of a Gaussian likelihood of the log residuals, the noise variance counted as a "
        "parameter, over every run; ΔAICc = AICc(log_linear) − AICc(power). log_linear "
        f"<b>fits as well</b> when ΔAICc ≤ {AICC_MARGIN:g} (|ΔAICc| ≤ {AICC_MARGIN:g}: the data "
        "cannot tell the two apart; below −2 the line fits better; above 2 the power law does). "
        "Backtest errors (each law refitted without the largest scale, predicting it) are shown "
        f"for information.</p><ul>{items}</ul>{_table(rows, list(rows[0]))}"
    )


def compute_optimal_section(
    fits: Sequence[FitResult],
    rows: Sequence[dict[str, Any]],
    out_dir: Path,
    budgets: Sequence[float] | None = None,
) -> tuple[str, list[Path]]:
    """The report's compute-optimal section for joint (N×D) fits, with the isoFLOP plot it
    writes into ``out_dir``; empty without joint fits. Budgets default to 1, 10 and 100× the
    largest trial's compute (``allocation.DEFAULT_BUDGET_MULTIPLES``)."""
    joint = [f for f in fits if f.params is not None and len(f.axis) >= 2]
    if not joint:
        return "", []
    from bioscale.errors import BioscaleError
    from bioscale.scaling.allocation import (
        allocate_fits,
        default_budgets,
        describe_crossing,
        plot_isoflops,
    )

    head = "<h2>Compute-optimal allocation</h2>"
    try:
        budgets = list(budgets) if budgets else default_budgets(rows, joint)
        found = allocate_fits(joint, rows, budgets)
        plot = plot_isoflops(
            joint, rows, budgets, out_dir / "isoflops.png", title="isoFLOP curves (star: optimum)"
        )
    except BioscaleError as err:
        return f"{head}<p class=note>not computed: {html.escape(str(err))}</p>", []
    models = {
        ", ".join(map(str, a.group.values())) or "all trials": a.flops for a in found.allocations
    }
    compute = "; ".join(
        f"{name}: flops_per_sample = {m.k:.3g}·N^{m.p:.3g} ({m.note})" for name, m in models.items()
    )
    items = "".join(f"<li>{html.escape(a.sentence())}</li>" for a in found.allocations)
    cross = "".join(f"<li>{html.escape(describe_crossing(c))}</li>" for c in found.crossings)
    repeat = "".join(f"<li>{html.escape(r.sentence())}</li>" for r in found.repeat_vs_new)
    return (
        f"{head}<p class=note>At each budget C the (N, D) that minimises the fitted joint law "
        "along the isoFLOP curve C = flops_per_sample(N) × D × epochs, with D the unique "
        "training samples and epochs the passes over them (fixed at the group's median for "
        "chinchilla, chosen for data_constrained); flops_per_sample is the rungs' measured "
        f"FLOPs per sample fitted as k·N^p ({html.escape(compute)}). Intervals: 95% over the "
        f"bootstrap refits.</p><ul>{items}</ul>"
        + (f"<h3>Where objectives' optima cross</h3><ul>{cross}</ul>" if cross else "")
        + (f"<h3>More epochs or more unique data?</h3><ul>{repeat}</ul>" if repeat else "")
        + f'<img src="{html.escape(plot.name)}" alt="isoFLOP curves">',
        [plot],
    )


def law_choice_section(choices: Sequence[dict[str, Any]]) -> str:
    """The report's "law chosen per curve" section (``--law auto``); empty without choices."""
    if not choices:
        return ""
    from bioscale.scaling.selection import describe_choice

    laws = list(dict.fromkeys(k for c in choices for k in c["candidates"]))
    rows = [
        {
            "group": ", ".join(f"{k}={v}" for k, v in c["group"].items()) or "all",
            "chosen": c["law"],
            **{
                f"backtest |error| {k}": "—"
                if c["candidates"].get(k) is None
                else f"{c['candidates'][k]:.3g}"
                for k in laws
            },
        }
        for c in choices
    ]
    items = "".join(f"<li>{html.escape(describe_choice(c))}</li>" for c in choices)
    return (
        "<h2>Law chosen per curve (law auto)</h2><p class=note>Per curve, each candidate law is "
        f"backtested on the curve's own points only ({html.escape(choices[0]['criterion'])}); "
        f"the law with the smallest error is fitted.</p><ul>{items}</ul>"
        f"{_table(rows, list(rows[0]))}"
    )


def prediction_section(predictions: Sequence[Any]) -> str:
    """The report's predictions table: value, the mean curve's ci95 beside a new run's pi95."""
    if not predictions:
        return ""
    rows = [
        {
            "group": ", ".join(f"{k}={v}" for k, v in p.group.items()) or "all",
            "law": p.law,
            "at": ", ".join(f"{k}={v:,.4g}" for k, v in p.at.items()),
            "predicted": "—" if p.value is None else f"{p.value:.4g}",
            "95% CI (mean curve)": _ci(p.ci95, ".4g"),
            "95% PI (a new run)": _ci(p.pi95, ".4g"),
            "noise from": (p.noise or {}).get("source", "—"),
        }
        for p in predictions
    ]
    notes = "".join(
        f"<li>{html.escape(n)}</li>" for n in dict.fromkeys(p.note for p in predictions)
    )
    return (
        "<h2>Predictions for a new run</h2><p class=note>At 2× and 10× each curve's largest "
        "observed scale: the confidence interval is where the fitted mean curve lies (bootstrap "
        "refits); the prediction interval is where one new run's value lies, the curve's "
        "uncertainty plus seed-to-seed noise (dotted in the plots, beside the shaded confidence "
        f"band).</p>{_table(rows, list(rows[0]))}<ul>{notes}</ul>"
    )


def training_section(
    rows: Sequence[dict[str, Any]], trial_runs: TrialRuns | None, plots: Sequence[Path]
) -> str:
    """The report's training-curve section: the figures ``plots.plot_training_curves`` drew, or
    one line saying why there are none (a report of a table has no MLflow runs)."""
    head = "<h2>Training curves</h2>"
    if trial_runs is None:
        return (
            f"{head}<p class=note>Not shown: this report was built from a table, which holds no "
            "per-epoch metrics; a report of the study's MLflow experiment (<code>bioscale study "
            "report</code>, <code>bioscale report --experiment NAME</code>) draws them.</p>"
        )
    if not plots:
        return f"{head}<p class=note>No trial logged per-epoch val/loss or train/* metrics.</p>"
    from bioscale.scaling.plots import MAX_PANEL_TRIALS, training_panels

    left_out = sum(p.left_out for ps in training_panels(rows).values() for p in ps)
    capped = (
        f" {left_out} trial(s) are not drawn: a panel draws at most {MAX_PANEL_TRIALS}, taken in "
        "turn from each diet, lowest seeds first."
        if left_out
        else ""
    )
    images = "".join(
        f'<img class=wide src="{html.escape(p.name)}" alt="{html.escape(p.stem)}">' for p in plots
    )
    return (
        f"{head}<p class=note>One panel per objective and rung (in order of N), one line per "
        "trial (diet × seed; colour: diet, darker = fewer training samples): "
        "<code>val/loss</code> (the objective's selection term on the early-stopping wells) "
        "solid, <code>train/loss</code> (mean over the epoch's samples) dashed; "
        + (
            "the objectives' other <code>train/&lt;term&gt;</code> terms in the second figure. "
            if len(plots) > 1
            else "no objective logged a <code>train/&lt;term&gt;</code> that differs from its "
            "loss (supervised: loss = ce), so there is no second figure. "
        )
        + f"Read from the MLflow metric history of {len(trial_runs.histories)} trial runs in "
        f"{trial_runs.seconds:.1f} s.{capped}</p>{images}"
    )


def trials_section(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], trial_runs: TrialRuns | None
) -> str:
    """The trial table; with MLflow runs, each row links to its run and the heading to the
    experiment's runs table (``runs.MlflowUI``)."""
    ui = trial_runs.ui if trial_runs is not None else None
    head = f"<h2>Trials ({len(rows)})</h2>"
    if trial_runs is None or ui is None:
        note = (
            "<p class=note>Run ids are MLflow's; this store has no UI address bioscale knows, "
            "so they are not linked.</p>"
            if trial_runs is not None
            else ""
        )
        shown = list(columns) if trial_runs is None else ["run_id", *columns]
        return head + note + _table(list(rows), shown)
    exp = trial_runs.experiment_id
    head = (
        f'<h2>Trials ({len(rows)}) · <a href="{html.escape(ui.runs_table(exp))}">MLflow runs '
        "table</a></h2>"
    )
    serve = (
        f"<p class=note>Links open the MLflow UI at {html.escape(ui.base)}; start it with "
        f"<code>{html.escape(ui.launch)}</code>.</p>"
        if ui.launch
        else ""
    )
    links = [
        f'<a href="{html.escape(ui.run(exp, str(r["run_id"])))}">{html.escape(str(r["run_id"])[:8])}</a>'
        if r.get("run_id")
        else ""
        for r in rows
    ]
    return head + serve + _table(list(rows), list(columns), links=links)


def _table(
    rows: list[dict[str, Any]], columns: list[str], links: Sequence[str] | None = None
) -> str:
    """An HTML table of ``rows``; ``links``: per row, the HTML of a leading ``run`` cell."""
    head = "".join(f"<th class=l>{html.escape(c)}</th>" for c in columns)
    if links is not None:
        head = "<th class=l>run</th>" + head
    body = []
    for i, row in enumerate(rows):
        cells = [] if links is None else [f"<td class=l>{links[i]}</td>"]
        for c in columns:
            v = row.get(c, "")
            text = f"{v:.4g}" if isinstance(v, float) else str(v)
            cells.append(f"<td class=l>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def fit_rows(fits: Sequence[FitResult]) -> list[dict[str, Any]]:
    out = []
    for f in fits:
        p = f.params or {}
        bt = f.backtest or {}
        out.append(
            {
                "group": ", ".join(f"{k}={v}" for k, v in f.group.items()),
                "axis": ",".join(f.axis),
                "law": f.law,
                **{k: f"{v:.4g} {_ci(f.ci95.get(k))}" for k, v in p.items()},
                "points": f.n_points,
                "scales": f.n_scales,
                "backtest |error|": bt.get("mean_abs_error", "—"),
                "held-out in 95% CI": "—" if not bt else str(bt.get("in_interval")),
                "plateau": "—" if not f.plateau else str(f.plateau["plateau"]),
                "note": f.note,
            }
        )
    return out


def extra_sections(sections: Sequence[tuple[str, str, Sequence[Path]]]) -> str:
    """``(title, note, images)`` sections, in order."""
    out = []
    for title, note, images in sections:
        imgs = "".join(
            f'<img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}">' for p in images
        )
        out.append(f"<h2>{html.escape(title)}</h2><p class=note>{html.escape(note)}</p>{imgs}")
    return "\n".join(out)


def render(
    *,
    study: str,
    tracking_uri: str,
    rows: list[dict[str, Any]],
    fits: list[FitResult],
    plots: list[Path],
    metric: str,
    metric_label: str,
    out: Path,
    forecasts: Sequence[Forecast] = (),
    comparisons: Sequence[dict[str, Any]] = (),
    issues: Sequence[str] = (),
    notes: Sequence[str] = (),
    trial_runs: TrialRuns | None = None,
    training_plots: Sequence[Path] = (),
    trial_columns: Sequence[str] | None = None,
    footnote: str = "",
    layer_plots: Sequence[Path] = (),
    alignment_plots: Sequence[Path] = (),
    alignment_trends: Sequence[str] = (),
    alignment_accuracy: str | None = None,
    vis_panels: Sequence[VisPanel] = (),
    law_checks: Sequence[dict[str, Any]] = (),
    budgets: Sequence[float] | None = None,
    predictions: Sequence[Any] = (),
    law_choices: Sequence[dict[str, Any]] = (),
    sections: Sequence[tuple[str, str, Sequence[Path]]] = (),
) -> Path:
    """Write ``out`` (report.html) next to its plots; return its path. ``layer_plots``: the layer
    search heat maps (a section of their own, only when trials searched layers).
    ``alignment_plots`` / ``alignment_trends``: accuracy against biological alignment per objective
    and one sentence per objective on alignment against N (``bioscale.scaling.alignment``; a
    section only when trials logged alignment metrics), ``alignment_accuracy`` the accuracy
    column the plots use. ``vis_panels``: feature visualisations, one panel per objective (a
    section only when there are some). ``law_checks``: per curve, whether ``log_linear`` fits
    as well as ``power`` (``scaling.selection.law_check``; a section only when there are some).
    ``predictions``: ``predict.Prediction`` of a new run, shown with both intervals;
    ``law_choices``: the law ``--law auto`` chose per curve (``selection.choose_law``).
    ``budgets``: FLOP budgets of the compute-optimal section (joint N×D fits only; default
    ``allocation.DEFAULT_BUDGET_MULTIPLES`` of the largest trial's compute). ``issues``: what a
    user must act on; ``notes``: what only explains (e.g. an L design's single points, from
    ``table.design_gaps``), shown quietly below them. ``trial_runs``: the trials' MLflow runs
    (``runs.TrialRuns``): each trial row links to its run, the heading to the runs table;
    ``training_plots``: their training curves (``plots.plot_training_curves``); without
    ``trial_runs`` (a report of a table) the section says why it is empty."""
    trial_cols = list(trial_columns or [])
    if not trial_cols:
        trial_cols = [
            "rung",
            "N",
            "objective",
            "diet",
            "D_samples",
            "D_compounds",
            "seed",
            "epochs",
            "lr",
            metric,
            "compute/flops",
            "perf/trial_seconds",
        ]
    ftable = fit_rows(fits)
    columns: list[str] = []
    for r in ftable:
        columns.extend(k for k in r if k not in columns)
    sentences = "".join(f"<li>{html.escape(describe_fit(f, metric_label))}</li>" for f in fits)
    fc_items = "".join(f"<li>{html.escape(describe_forecast(fc))}</li>" for fc in forecasts)
    cmp_rows = [
        {
            "a": ", ".join(map(str, c["a"].values())),
            "b": ", ".join(map(str, c["b"].values())),
            "axis": ",".join(c["axis"]),
            "exponent a − b": c.get("difference", "—"),
            "95% CI": _ci(c.get("ci95")),
            "crossover": c.get("crossover") or "none in range",
            "crossover 95% CI": _ci(c.get("crossover_ci95")),
            "P(cross)": c.get("p_crossover", "—"),
            "note": c.get("note", ""),
        }
        for c in comparisons
    ]
    images = "".join(
        f'<img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}">' for p in plots
    )
    layer_section = ""
    if layer_plots:
        layer_images = "".join(
            f'<img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}">' for p in layer_plots
        )
        layer_section = (
            "<h2>Layer search</h2><p class=note>Trials with <code>probe_selection = search</code> "
            "probe every layer and report the test metric of the (layer, C) chosen on the "
            "probe-validation wells; each cell is a layer at its relative depth, coloured by its "
            "validation top-1 (mean over seeds, at each rung's largest diet); a dot marks the "
            "chosen layer. Their metrics are not comparable with last-layer trials "
            f"(<code>probe_selection = last</code>).</p>{layer_images}"
        )
    alignment_section = ""
    if alignment_plots or alignment_trends:
        align_images = "".join(
            f'<img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}">'
            for p in alignment_plots
        )
        trend_items = "".join(f"<li>{html.escape(t)}</li>" for t in alignment_trends)
        accuracy = html.escape(alignment_accuracy or "no probe accuracy logged")
        alignment_section = (
            "<h2>Biological alignment beside accuracy</h2><p class=note>Per objective, "
            f"<code>{accuracy}</code> against each alignment metric the trials logged "
            "(<code>align/*</code>: importance maps vs human maps; <code>adv/*</code>: minimal "
            "L2 attack and its alignment; <code>neural/&lt;dataset&gt;/score</code>: neural "
            "predictivity; <code>probe/3dpc_&lt;task&gt;/test/acc</code>: 3D-PC probes); each "
            "point a trial coloured by N, the line joins the means of each N in order of N. "
            "Trends are Spearman ρ between N and the metric over the objective's trials.</p>"
            f"<ul>{trend_items}</ul>{align_images}"
        )
    from bioscale.scaling.suggest import decision_section

    issue_list = "".join(f"<li>{html.escape(i)}</li>" for i in issues) or "<li>none</li>"
    note_list = "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>bioscale · {html.escape(study)}</title>
<style>{_CSS}</style></head><body>
<h1>Scaling study: {html.escape(study)}</h1>
<p class=note>Generated {dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")} from
<code>{html.escape(redact_uri(tracking_uri))}</code>. Metric: <b>{html.escape(metric)}</b> ({html.escape(metric_label)}).
Curves fit its error with a scaling law (Huber loss on log residuals, L-BFGS from a grid of
starts); bands are 95% bootstrap intervals (seed deviations pooled over the scales with repeats,
residuals where a scale has one run); dashed lines extrapolate beyond the data; a star marks a forecast.</p>
<h2>How each curve scales</h2><ul>{sentences}</ul>
<h2>Curves</h2>{images}
{extra_sections(sections)}
{training_section(rows, trial_runs, training_plots)}
{layer_section}
{alignment_section}
{vis_section(vis_panels)}
<h2>Fitted laws (95% intervals)</h2>{_table(ftable, columns)}
{law_choice_section(law_choices)}
{law_check_section(law_checks)}
{prediction_section(predictions)}
<h2>Forecasts</h2><ul>{fc_items or "<li>none</li>"}</ul>
{compute_optimal_section(fits, rows, out.parent, budgets)[0]}
<h2>Objective comparisons</h2>{_table(cmp_rows, list(cmp_rows[0])) if cmp_rows else "<p class=note>none: no two fitted curves differ only in objective.</p>"}
{decision_section(fits)}
<h2>Data issues</h2><p class=note>What to act on: trials that failed or did not finish,
missing or non-finite values, curves the design meant that cannot be fitted.</p>
<ul>{issue_list}</ul>{note_list}
{trials_section(rows, trial_cols, trial_runs)}
{f"<p class=note>{footnote}</p>" if footnote else ""}
</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
