"""The raw-features baseline: the evaluation suite on a profile manifest's features as they are.

"The CellProfiler features as they are" is the baseline any learned representation must beat.
:func:`raw_feature_metrics` reads the same fixed probe sets a study's trials are evaluated on
(``bioscale.eval.probe_sets``: the study's ``data.splits``), takes each well's ``features`` as its
embedding and runs the same tasks with the same settings (``probe:``, normalisation against the
plate's control wells included) — without Ray, in this process. ``bioscale data baseline``
writes the result as ``{"metrics": {...}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bioscale.errors import ManifestError
from bioscale.eval.config import ProbeConfig


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """The baseline's metrics and what they were measured on."""

    metrics: dict[str, float]
    manifest: str
    manifest_sha: str
    n_features: int
    n_wells: int  # wells the evaluation read (probe sets and evaluation controls)
    tasks: tuple[str, ...]
    dropped: tuple[str, ...]  # tasks this manifest cannot feed, with why

    def as_json(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "manifest": self.manifest,
            "manifest_sha": self.manifest_sha,
            "n_features": self.n_features,
            "n_wells": self.n_wells,
            "tasks": list(self.tasks),
            "dropped": list(self.dropped),
        }


def raw_feature_metrics(
    manifest: str | Path,
    *,
    splits: Any = None,
    probe: ProbeConfig | None = None,
    explicit: bool = False,
    preprocess: Any = None,
) -> Baseline:
    """Evaluate ``manifest``'s raw features as a trial's embedding is evaluated.

    Args:
        manifest: a profile manifest.
        splits: the probe-set sizes (``bioscale.data.splits.SplitConfig``; default: the default).
        probe: the evaluation settings and ``tasks`` (default: every task profiles can feed).
        explicit: the tasks were asked for by name: one the data cannot feed is an error (as in a
            study's ``eval:``) instead of being dropped.
        preprocess: a study's ``data.preprocess`` (``bioscale.data.preprocess``): the features
            are evaluated as that study's trials are fed them (fitted on its training pool).
    """
    from bioscale.data import kinds
    from bioscale.data import manifest as mf
    from bioscale.data.splits import SampleIndex, SplitConfig
    from bioscale.eval.probe_sets import probe_set_targets
    from bioscale.eval.tasks import applicable, default_tasks, evaluate

    info = mf.inspect(manifest)
    if info.n_features is None:
        raise ManifestError(
            f"manifest {manifest} holds images, not profiles: the raw-features baseline reads "
            "a profile manifest's features"
        )
    bad = mf.non_finite_features(manifest)
    if bad:
        first = next(iter(bad.items()))
        raise ManifestError(
            f"manifest {manifest}: {len(bad)} well(s) hold NaN/Inf features (first: {first[0]}, "
            f"{first[1]}); run `bioscale data check {manifest}` and fix or drop them"
        )
    index = SampleIndex.from_table(mf.read_metadata(manifest), splits or SplitConfig())
    kind = kinds.get(info.kind)
    probe = probe or ProbeConfig(tasks=default_tasks(kind.provides))
    tasks, reasons = applicable(probe.tasks, index, explicit=explicit)
    probe = replace(probe, tasks=tasks)
    targets = probe_set_targets(index)
    ids = [str(s) for s in index.sample_id[targets.rows]]
    _, features = mf.read_features(manifest, ids)
    if preprocess is not None and preprocess.enabled:
        from bioscale.data.preprocess import fit_preprocess

        fitted = fit_preprocess(manifest, index, preprocess)
        features = fitted.apply(features, fitted.plate_codes(index.plate[targets.rows]))
    columns = {k: np.asarray(v) for k, v in targets.columns.items()}
    columns["emb"] = features.astype(np.float32)
    metrics = evaluate(columns, probe)
    return Baseline(
        metrics={k: float(v) for k, v in metrics.items()},
        manifest=info.path,
        manifest_sha=info.sha,
        n_features=int(info.n_features),
        n_wells=len(ids),
        tasks=tuple(tasks),
        dropped=tuple(reasons),
    )
