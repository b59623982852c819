"""The evaluation suite: one registry of tasks run on the frozen embeddings of the probe rows.

A probe batch (``bioscale.study.plan.probe_targets`` builds its rows) carries, per sample, int64
columns: ``role`` (``ROLE_CODES``), ``label`` (MoA code, -1 none), ``target_0..target_{K-1}``
(target codes, -1 padding: a compound may have several targets), and the codes ``plate``,
``source``, ``compound`` and ``well``. Sites of one well are averaged first; embeddings are then
normalised against the control wells (``bioscale.eval.normalise``) and every task of
``ProbeConfig.tasks`` reads what it needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bioscale.eval.layer_search import Layer, is_embedding_column, layers_of
from bioscale.eval.probe import ROLE_CODES, ProbeConfig, probe_task
from bioscale.registry import Registry

log = logging.getLogger(__name__)

#: Columns of a probe batch besides ``x``/``emb`` (targets: ``target_<i>``).
CODE_COLUMNS = ("role", "label", "plate", "source", "compound", "well")
TARGET_PREFIX = "target_"


@dataclass(frozen=True, kw_only=True)
class ProbeRows:
    """The probe rows of one trial, one row per well, embeddings normalised."""

    z: np.ndarray  # (n, d) normalised embeddings
    role: np.ndarray  # (n,) ROLE_CODES
    moa: np.ndarray  # (n, 1) MoA codes, -1 none
    target: np.ndarray  # (n, K) target codes, -1 padding (K = 0 without targets)
    plate: np.ndarray | None  # (n,) codes
    source: np.ndarray | None
    compound: np.ndarray | None
    #: with ``probe.selection: search``: every searched layer, normalised like ``z``
    layers: tuple[Layer, ...] | None = None

    @property
    def is_control(self) -> np.ndarray:
        return self.role == ROLE_CODES["control"]

    def need(self, task: str, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"evaluation task {task!r} needs the probe column(s) {', '.join(missing)}, "
                "which this probe batch lacks (build probe rows with study.plan.probe_targets)"
            )


def target_columns(columns: dict[str, np.ndarray]) -> list[str]:
    names = [k for k in columns if k.startswith(TARGET_PREFIX)]
    return sorted(names, key=lambda k: int(k[len(TARGET_PREFIX) :]))


def to_wells(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Average the embeddings of sites (or crops) of one well; one row per (well, role).

    Sites of a well keep separate rows when their roles differ (roles are fixed per site).
    Without a ``well`` column, or with one row per well already, the columns are returned as is.
    """
    if "well" not in columns:
        return columns
    keys = np.stack([columns["well"], columns["role"]], axis=1)
    uniq, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    if len(uniq) == len(keys):
        return columns
    inverse = inverse.ravel()
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    out = {k: v[first] for k, v in columns.items() if not is_embedding_column(k)}
    for key, emb in columns.items():
        if is_embedding_column(key):  # ``emb`` and, with layer search, every layer's
            sums = np.zeros((len(uniq), emb.shape[1]), dtype=np.float64)
            np.add.at(sums, inverse, emb)
            out[key] = (sums / counts).astype(np.float32)
    return out


def probe_rows(columns: dict[str, np.ndarray], cfg: ProbeConfig) -> ProbeRows:
    """Embedded probe batch (``emb`` (n, d) plus the code columns) → normalised ``ProbeRows``."""
    from bioscale.eval.normalise import normalise_embeddings

    cols = to_wells(columns)
    role = cols["role"]
    plate = cols.get("plate")
    controls = role == ROLE_CODES["control"]
    method = cfg.normalise
    if method != "none" and not controls.any():
        log.warning("no control wells among the probe rows: embeddings are probed unnormalised")
        method = "none"
    if method != "none" and plate is None:
        raise ValueError("normalisation against controls needs the probe column 'plate'")

    def normalised(emb: np.ndarray) -> np.ndarray:
        return normalise_embeddings(
            emb,
            plate if plate is not None else np.zeros(len(role), dtype=np.int64),
            controls,
            method=method,
            sphere=cfg.sphere,
            shrinkage=cfg.shrinkage,
            clip=cfg.clip,
        )

    layers = None
    if cfg.selection == "search":
        found = layers_of(cols)
        if not found:
            raise ValueError(
                "probe.selection: search needs per-layer embeddings in the probe batch "
                "(embed with bioscale.eval.layers; columns layer:<index>/<count>:<name>)"
            )
        layers = tuple(
            Layer(name=la.name, index=la.index, count=la.count, z=normalised(la.z)) for la in found
        )
    z = normalised(cols["emb"])
    targets = target_columns(cols)
    return ProbeRows(
        z=z,
        role=role,
        moa=cols["label"][:, None],
        target=(
            np.stack([cols[k] for k in targets], axis=1)
            if targets
            else np.full((len(role), 0), -1, dtype=np.int64)
        ),
        plate=plate,
        source=cols.get("source"),
        compound=cols.get("compound"),
        layers=layers,
    )


@dataclass(frozen=True, kw_only=True)
class EvalTask:
    """One evaluation task: ``run(rows, cfg)`` → metrics (frozen names)."""

    name: str
    run: Callable[[ProbeRows, ProbeConfig], dict[str, float]]
    description: str
    kinds: tuple[str, ...]  # data kinds (``data.kind``) the task applies to
    requires: str  # what the data must have, for messages


#: Cell Painting data kinds (wells on plates, with negative controls).
HCS = ("profiles", "cellpainting")


TASKS: Registry[EvalTask] = Registry("evaluation task")


def _task(name: str, description: str, *, kinds: tuple[str, ...] = HCS, requires: str = ""):
    def add(fn: Callable[[ProbeRows, ProbeConfig], dict[str, float]]):
        TASKS.register(
            name,
            EvalTask(
                name=name,
                run=fn,
                description=description,
                kinds=kinds,
                requires=requires or "plates with negative-control wells",
            ),
        )
        return fn

    return add


@_task(
    "moa",
    "MoA (natural images: class) probes, linear + MLP: seen/novel compounds, held-out source",
    kinds=(*HCS, "natural"),
    requires="task labels",
)
def _moa(rows: ProbeRows, cfg: ProbeConfig) -> dict[str, float]:
    return probe_task(rows.z, rows.role, rows.moa, rows.source, "moa", cfg, rows.layers)


@_task(
    "target",
    "target deconvolution probes; multi-label: a hit if any true target is in the top k",
    requires="compound targets",
)
def _target(rows: ProbeRows, cfg: ProbeConfig) -> dict[str, float]:
    if rows.target.shape[1] == 0 or not (rows.target >= 0).any():
        log.warning("evaluation task 'target': no probe row has a target label; skipped")
        return {}
    return probe_task(rows.z, rows.role, rows.target, rows.source, "target", cfg, rows.layers)


@_task("leakage", "plate/source predicted from embeddings, train/test wells of the same compounds")
def _leakage(rows: ProbeRows, cfg: ProbeConfig) -> dict[str, float]:
    from bioscale.eval.leakage import leakage_probe

    rows.need("leakage", "plate", "source", "compound")
    wells = ~rows.is_control
    out: dict[str, float] = {}
    for factor, codes in (("plate", rows.plate), ("source", rows.source)):
        result = leakage_probe(rows.z[wells], codes[wells], rows.compound[wells], c=cfg.leakage_c)
        if result is None:
            log.info("leakage/%s: one %s only; nothing to leak", factor, factor)
            continue
        out[f"leakage/{factor}/acc"] = result["acc"]
        out[f"leakage/{factor}/chance"] = result["chance"]
    return out


def _retrieval(rows: ProbeRows, cfg: ProbeConfig, task: str, same: str) -> dict[str, float]:
    from bioscale.eval.retrieval import map_against_controls

    rows.need(f"{task}_retrieval", "compound")
    result = map_against_controls(
        rows.z,
        rows.compound,
        rows.is_control,
        same=same,
        label=rows.moa[:, 0],
        null_size=cfg.retrieval_null_size,
        threshold=cfg.retrieval_threshold,
        seed=cfg.seed,
    )
    if result is None:
        log.warning("retrieval/%s: no query well has a positive; skipped", task)
        return {}
    return {f"retrieval/{task}/{k}": v for k, v in result.items()}


@_task("replicate_retrieval", "replicate retrieval mAP against controls (copairs)")
def _replicate(rows: ProbeRows, cfg: ProbeConfig) -> dict[str, float]:
    return _retrieval(rows, cfg, "replicate", "compound")


@_task("moa_retrieval", "same-MoA retrieval mAP (other compounds) against controls (copairs)")
def _moa_retrieval(rows: ProbeRows, cfg: ProbeConfig) -> dict[str, float]:
    return _retrieval(rows, cfg, "moa", "label")


def default_tasks(kind: str) -> tuple[str, ...]:
    """Every registered task that applies to data of ``kind`` (a study without ``eval:``)."""
    return tuple(name for name in TASKS if kind in TASKS.get(name).kinds)


def evaluate(columns: dict[str, np.ndarray], cfg: ProbeConfig) -> dict[str, float]:
    """Run ``cfg.tasks`` on an embedded probe batch.

    Args:
        columns: ``emb`` (n, d) frozen embeddings plus the probe code columns (module docstring).
        cfg: evaluation settings.

    Returns:
        Every task's metrics, plus ``perf/eval_seconds`` (wall seconds of this call).
    """
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    metrics: dict[str, float] = {}
    # small, many-iteration solves (lbfgs, eigh): a multi-threaded BLAS spins and is ~50-80x
    # slower on a busy machine than one thread (measured on the demo's target probe)
    with threadpool_limits(limits=1, user_api="blas"):
        rows = probe_rows(columns, cfg)
        for name in cfg.tasks:
            t_task = time.perf_counter()
            metrics |= TASKS.get(name).run(rows, cfg)
            log.info("evaluation task %s: %.2f s", name, time.perf_counter() - t_task)
    metrics["perf/eval_seconds"] = time.perf_counter() - t0
    return metrics
