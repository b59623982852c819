"""Evaluation settings and the probe batch's codes, apart from the code that evaluates.

``ProbeConfig`` (a study's ``probe:`` section, with ``tasks`` from ``eval:``) is checked against
the two registries it names, declared here and filled by the modules that implement them:
``TASKS`` by ``bioscale.eval.tasks`` and ``READOUTS`` by ``bioscale.eval.readout`` (importing
``bioscale.eval`` registers both). No torch and no evaluation code is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bioscale.errors import ConfigError
from bioscale.registry import Registry

#: Integer codes of the probe roles inside a probe batch (column ``role``); stable: new roles get
#: new codes. ``control``: negative-control wells, the reference of normalisation and retrieval.
ROLE_CODES = {"probe_train": 0, "probe_val": 1, "probe_test": 2, "novel_test": 3, "control": 4}
#: Probe-batch columns ``target_0..target_{K-1}``: a row's target codes, -1 padding.
TARGET_PREFIX = "target_"


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """Evaluation settings (the study's ``probe:`` section; ``tasks`` comes from ``eval:``).

    Attributes:
        cs: inverse L2 strengths of the linear readout, chosen on validation.
        topk: the k of top-k accuracy.
        max_iter: lbfgs iterations of the linear readout.
        tasks: evaluation tasks (``TASKS``); a study sets them from ``eval:``.
        readouts: probe readouts (``READOUTS``): ``linear`` by default;
            ``mlp`` (the paper's readout) costs more than a small demo trial's whole training,
            so it is opt-in (``probe: {readouts: [linear, mlp]}``, or ``bioscale evaluate``).
        normalise: ``robust_z``: per-plate median/MAD of the control wells; ``none``: raw.
        sphere: ZCA-whiten after the robust z-score, fitted on the pooled controls.
        shrinkage: covariance shrinkage of the sphering in [0, 1]; ``None``: Ledoit-Wolf.
        clip: clip robust z-scores to ±clip (``None``: no clipping).
        heldout_source: report the ``heldout_source`` split when the data has several sources.
        mlp_hidden, mlp_dropout, mlp_epochs, mlp_patience, mlp_lr, mlp_weight_decay,
            mlp_batch_size: the MLP readout (paper: 2048 hidden, GELU, dropout 0.1).
        leakage_c: inverse L2 strength of the plate/source leakage probes.
        retrieval_null_size: size of copairs' null distribution for mAP p-values.
        retrieval_threshold: p-value threshold of ``fraction_retrieved`` (FDR-corrected).
        embed_batch_size: rows per batch when re-evaluation embeds with Ray Data.
        seed: seed of the MLP readout and the retrieval null distributions.
        selection: which embedding the probes read. ``last``: the backbone's embedding.
            ``search``: every layer of ``layers`` is embedded in the same pass and each probe
            task picks (layer, regularisation) on ``probe_val`` (``bioscale.eval.layer_search``);
            logged as the trial param ``probe_selection`` so the two are never mixed up.
        layers: the layers a search reads: ``all``, or layer names / indices (negative from the
            deepest) of ``bioscale.eval.layers.layer_names``.
    """

    cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    topk: tuple[int, ...] = (1, 10)
    max_iter: int = 500
    tasks: tuple[str, ...] = ("moa",)
    readouts: tuple[str, ...] = ("linear",)
    normalise: Literal["robust_z", "none"] = "robust_z"
    sphere: bool = True
    shrinkage: float | None = None
    clip: float | None = 30.0
    heldout_source: bool = True
    mlp_hidden: int = 2048
    mlp_dropout: float = 0.1
    mlp_epochs: int = 60
    mlp_patience: int = 8
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 1e-4
    mlp_batch_size: int = 256
    leakage_c: float = 1.0
    retrieval_null_size: int = 10000
    retrieval_threshold: float = 0.05
    embed_batch_size: int = 256
    seed: int = 0
    selection: Literal["last", "search"] = "last"
    layers: Literal["all"] | tuple[str | int, ...] = "all"

    def __post_init__(self) -> None:
        if self.layers != "all":
            if not self.layers or len(set(self.layers)) != len(self.layers):
                raise ConfigError(
                    f"probe.layers: 'all' or a list of distinct layers, got {list(self.layers)}"
                )
            if self.selection != "search":
                raise ConfigError("probe.layers applies to probe.selection: search")

        if not self.cs or min(self.cs) <= 0:
            raise ConfigError("probe.cs: give at least one positive C")
        if not self.topk or min(self.topk) < 1:
            raise ConfigError("probe.topk: k must be >= 1")
        if self.shrinkage is not None and not 0.0 <= self.shrinkage <= 1.0:
            raise ConfigError(f"probe.shrinkage must be in [0, 1] or null, got {self.shrinkage}")
        for name in self.readouts:
            READOUTS.get(name)
        if self.mlp_hidden < 1 or self.mlp_epochs < 1 or self.mlp_batch_size < 1:
            raise ConfigError("probe: mlp_hidden, mlp_epochs and mlp_batch_size must be >= 1")
        for name in self.tasks:
            TASKS.get(name)


@dataclass(frozen=True, kw_only=True)
class EvalTask:
    """One evaluation task: ``run(rows, cfg)`` → metrics (frozen names)."""

    name: str
    #: (``bioscale.eval.tasks.ProbeRows``, ``ProbeConfig``) → metrics
    run: Callable[[Any, ProbeConfig], dict[str, float]]
    description: str
    #: what of the data the task reads (``plates``: wells on plates with negative controls;
    #: ``labels``: task labels; ``targets``: compound targets): it applies to every data kind
    #: that provides them (``bioscale.data.kinds.DataKind.provides``)
    needs: frozenset[str]
    requires: str  # what the data must have, for messages
    #: the manifest's ``SampleIndex`` → why the task cannot run on it (``None``: it can); a study
    #: that lists the task fails at plan time with the reason, a default task list drops it
    refusal: Callable[[Any], str | None] | None = None
    #: run only when a study lists the task in ``eval:``; a study without ``eval:`` leaves it out
    opt_in: bool = False


#: Evaluation tasks by name: the one list a study's ``eval:`` is checked against.
TASKS: Registry[EvalTask] = Registry("evaluation task")
#: Probe readouts by name; each is ``fit(z_train, y_train, z_val, y_val, cfg) → FittedReadout``
#: (``bioscale.eval.readout``) with ``y_*`` (n, K) label codes (-1 padding).
READOUTS: Registry[Callable[..., Any]] = Registry("probe readout")
