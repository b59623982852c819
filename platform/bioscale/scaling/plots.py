"""Scaling plots: measured points and fitted curves, one colour per group, log-log axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioscale.scaling.fit import FitResult

AXIS_LABELS = {"D": "training samples D (wells)", "N": "backbone parameters N"}


def plot_fits(fits: list[FitResult], path: str | Path, *, title: str, ylabel: str) -> Path:
    """One PNG: error (1 − metric for higher-is-better metrics) against the axis, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, fit in enumerate(fits):
        colour = colours[i % len(colours)]
        label = ", ".join(f"{v}" for v in fit.group.values())
        x = np.array([p[0] for p in fit.points])
        y = np.array([p[1] for p in fit.points])
        err = 1.0 - y if fit.direction == "higher" else y
        ax.scatter(x, err, color=colour, zorder=3)
        if fit.params is not None:
            xs = np.geomspace(x.min(), x.max(), 100)
            ys = fit.predict(xs)
            ys = 1.0 - ys if fit.direction == "higher" else ys
            label += f": α={fit.params['alpha']:.2f}, E={fit.params.get('E', 0.0):.3f}"
            ax.plot(xs, ys, color=colour, label=label)
        else:
            ax.plot([], [], color=colour, label=f"{label} (no fit: {fit.note})")
    axis = fits[0].axis[0] if fits else ""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
