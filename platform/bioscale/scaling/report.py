"""The study report: one self-contained HTML page a scientist can read (grid, curves, exponents,
one sentence per objective on how it scales)."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path
from typing import Any

from bioscale.scaling.fit import FitResult

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:49%;border:1px solid #ddd}
.note{color:#666;font-size:13px}"""


def describe_fit(fit: FitResult, metric_label: str) -> str:
    """One plain sentence on how a group scales along the fit's axis."""
    what = {"D": "training data", "N": "model size"}.get(fit.axis[0], fit.axis[0])
    name = ", ".join(str(v) for v in fit.group.values())
    lo, hi = min(p[0] for p in fit.points), max(p[0] for p in fit.points)
    span = f"{lo:,.0f}–{hi:,.0f}"
    if fit.params is None:
        return f"{name}: no fit along {what} ({fit.note})."
    alpha, floor = fit.params["alpha"], fit.params["E"]
    err_hi = (
        float(1.0 - fit.predict([hi])[0])
        if fit.direction == "higher"
        else float(fit.predict([hi])[0])
    )
    if alpha < 0.02 or err_hi - floor < 0.01:
        return (
            f"{name}: {metric_label} error has plateaued along {what} ({span}): "
            f"it sits at its fitted floor E = {floor:.3f}, so more {what} alone will not help."
        )
    gain = 1.0 - 2.0 ** (-alpha)
    return (
        f"{name}: {metric_label} error falls as {fit.axis[0]}^−{alpha:.2f} over {span}, toward a "
        f"floor E = {floor:.3f}; each doubling of {what} removes {gain:.0%} of the error above "
        "that floor."
    )


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th class=l>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            text = f"{v:.4g}" if isinstance(v, float) else str(v)
            cells.append(f"<td class=l>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


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
) -> Path:
    """Write ``out`` (report.html) next to its plots; return its path."""
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
        metric.replace("/top1", "/top10"),
        "probe/moa/seen_compounds/top1",
        "compute/flops",
        "perf/trial_seconds",
    ]
    fit_rows = []
    for f in fits:
        p = f.params or {}
        fit_rows.append(
            {
                "group": ", ".join(f"{k}={v}" for k, v in f.group.items()),
                "axis": f.axis[0],
                "law": f.law,
                "alpha": p.get("alpha", "—"),
                "E (floor)": p.get("E", "—"),
                "A": p.get("A", "—"),
                "points": f.n_points,
                "scales": f.n_scales,
                "huber loss": f.loss if f.loss is not None else "—",
                "note": f.note,
            }
        )
    sentences = "".join(f"<li>{html.escape(describe_fit(f, metric_label))}</li>" for f in fits)
    images = "".join(
        f'<img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}">' for p in plots
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>bioscale · {html.escape(study)}</title>
<style>{_CSS}</style></head><body>
<h1>Scaling study: {html.escape(study)}</h1>
<p class=note>Generated {dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")} from the MLflow store
<code>{html.escape(tracking_uri)}</code>. Metric: <b>{html.escape(metric)}</b> ({html.escape(metric_label)});
curves fit its error (1 − accuracy) with a saturating power law err = E + A·x<sup>−α</sup>
(Huber loss on log residuals, L-BFGS from a grid of starts). E is the irreducible error the law
extrapolates to; α the exponent.</p>
<h2>How each objective scales</h2><ul>{sentences}</ul>
<h2>Curves</h2>{images}
<h2>Fitted laws</h2>{_table(fit_rows, list(fit_rows[0]) if fit_rows else [])}
<p class=note>Intervals (bootstrap), backtests and forecasts are not computed by this report;
the fit JSON carries null for them.</p>
<h2>Trials ({len(rows)})</h2>{_table(rows, trial_cols)}
<p class=note>Probe: L2 logistic regression on frozen backbone embeddings, fit on fixed probe wells of
<i>seen</i> compounds, its C chosen on probe-validation wells; <i>seen_compounds</i> = held-out wells
of those compounds, <i>novel_compounds</i> = compounds no objective trained on.</p>
</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
