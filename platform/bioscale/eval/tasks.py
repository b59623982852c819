"""The evaluation suite: one registry of tasks run on the frozen embeddings of the probe rows.

A probe batch (``bioscale.study.plan.probe_targets`` builds its rows) carries, per sample, int64
columns: ``role`` (``ROLE_CODES``), ``label`` (MoA code, -1 none), ``target_0..target_{K-1}``
(target codes, -1 padding: a compound may have several targets), and the codes ``plate``,
``source``, ``batch``, ``compound``, ``concentration`` and ``well``; with genetic wells also
``ptype`` (perturbation type) and ``gene`` (``bioscale.eval.probe_sets``). Sites of one well are
averaged first; embeddings are then normalised against the evaluation control wells (role
``control``: wells no diet trains on; ``bioscale.eval.normalise``) and every task of
``ProbeConfig.tasks`` reads what it needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# TASKS, EvalTask and the probe-batch codes live in bioscale.eval.config (importable by their
# old path here); the tasks below register themselves into TASKS
from bioscale.eval.config import ROLE_CODES, TARGET_PREFIX, TASKS, EvalTask, ProbeConfig
from bioscale.eval.layer_search import Layer, is_embedding_column, layers_of
from bioscale.eval.probe import probe_task

log = logging.getLogger(__name__)

#: Columns of a probe batch besides ``x``/``emb`` (targets: ``target_<i>``; ``ptype`` and
#: ``gene`` only when the data has genetic perturbations).
CODE_COLUMNS = (
    "role",
    "label",
    "plate",
    "source",
    "batch",
    "compound",
    "concentration",
    "well",
    "ptype",
    "gene",
)
#: ``ptype`` codes of genetic perturbations (``bioscale.eval.probe_sets.PTYPE_CODES``).
GENETIC_PTYPES = (1, 2)


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
    #: with genetic wells: (n,) perturbation-type codes and (n,) gene codes (-1: not genetic)
    ptype: np.ndarray | None = None
    gene: np.ndarray | None = None
    #: (n,) batch codes and (n,) concentration codes (-1: no concentration)
    batch: np.ndarray | None = None
    concentration: np.ndarray | None = None

    @property
    def is_control(self) -> np.ndarray:
        return self.role == ROLE_CODES["control"]

    @property
    def is_genetic(self) -> np.ndarray:
        if self.ptype is None or self.gene is None:
            return np.zeros(len(self.role), dtype=bool)
        return np.isin(self.ptype, GENETIC_PTYPES) & (self.gene >= 0)

    @property
    def is_compound(self) -> np.ndarray:
        """Compound wells: neither controls nor genetic perturbations."""
        return ~self.is_control & ~self.is_genetic

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
    """Average the embeddings of sites (or crops) of one well; one row per well.

    Roles are fixed per well (``bioscale.data.splits``), so every site of a well has the same
    role. Rows come out in well-code order (codes over the sorted well keys of the manifest), so
    no evaluation depends on the order of rows in the manifest file. Without a ``well`` column the
    columns are returned as they are.

    Raises:
        ValueError: sites of one well carry different roles (probe rows not built by
            ``bioscale.eval.probe_sets.probe_set_targets`` from the manifest's roles).
    """
    if "well" not in columns:
        return columns
    uniq, first, inverse = np.unique(columns["well"], return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    mixed = columns["role"] != columns["role"][first][inverse]
    if mixed.any():
        well = int(columns["well"][np.flatnonzero(mixed)[0]])
        raise ValueError(
            f"probe batch: sites of well code {well} carry different roles; a well's sites share "
            "its role (build probe rows with bioscale.eval.probe_sets.probe_set_targets)"
        )
    if len(uniq) == len(inverse):  # one row per well already: only put them in well order
        order = np.argsort(columns["well"], kind="stable")
        return {k: v[order] for k, v in columns.items()}
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
        ptype=cols.get("ptype"),
        gene=cols.get("gene"),
        batch=cols.get("batch"),
        concentration=cols.get("concentration"),
    )


#: What most tasks read: wells on plates with negative controls, and their task labels.
PLATES = frozenset({"plates", "labels"})


def _task(
    name: str,
    description: str,
    *,
    needs: frozenset[str] = PLATES,
    requires: str = "",
    refusal: Callable[[Any], str | None] | None = None,
    opt_in: bool = False,
):
    def add(fn: Callable[[ProbeRows, ProbeConfig], dict[str, float]]):
        TASKS.register(
            name,
            EvalTask(
                name=name,
                run=fn,
                description=description,
                needs=needs,
                requires=requires or "plates with negative-control wells",
                refusal=refusal,
                opt_in=opt_in,
            ),
        )
        return fn

    return add


@_task(
    "moa",
    "MoA (natural images: class) probes, linear + MLP: seen/novel compounds, held-out source",
    needs=frozenset({"labels"}),
    requires="task labels",
)
def _moa(rows: ProbeRows, cfg: ProbeConfig) -> dict[str, float]:
    return probe_task(rows.z, rows.role, rows.moa, rows.source, "moa", cfg, rows.layers)


@_task(
    "target",
    "target deconvolution probes; multi-label: a hit if any true target is in the top k",
    needs=PLATES | {"targets"},
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
    wells = rows.is_compound
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
    keep = ~rows.is_genetic
    result = map_against_controls(
        rows.z[keep],
        rows.compound[keep],
        rows.is_control[keep],
        same=same,
        label=rows.moa[keep, 0],
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


@_task(
    "rediscovery",
    "novel (query) compounds rank the known seen compounds by cosine similarity of consensus "
    "profiles; same-MoA compounds are the hits (copairs)",
    requires="novel compounds whose MoA seen compounds share",
)
def _rediscovery(rows: ProbeRows, cfg: ProbeConfig) -> dict[str, float]:
    from bioscale.eval.retrieval import consensus, query_reference_map

    rows.need("rediscovery", "compound")
    labelled = rows.is_compound & (rows.moa[:, 0] >= 0)
    reference = labelled & np.isin(
        rows.role, [ROLE_CODES[r] for r in ("probe_train", "probe_val", "probe_test")]
    )
    query = labelled & (rows.role == ROLE_CODES["novel_test"])
    used = query | reference
    if not query.any() or not reference.any():
        log.warning("retrieval/rediscovery: no novel query or no seen reference compound; skipped")
        return {}
    # one consensus profile per compound; a compound is a query or a reference, never both
    codes, means = consensus(rows.z[used], rows.compound[used])
    _, first = np.unique(rows.compound[used], return_index=True)  # same order as ``codes``
    pick = np.flatnonzero(used)[first]
    result = query_reference_map(
        means,
        codes,
        rows.moa[pick, 0],
        query[pick],
        null_size=cfg.retrieval_null_size,
        threshold=cfg.retrieval_threshold,
        seed=cfg.seed,
    )
    if result is None:
        log.warning("retrieval/rediscovery: no query compound has a known same-MoA compound")
        return {}
    return {f"retrieval/rediscovery/{k}": v for k, v in result.items()}


@_task(
    "nsc",
    "BBBC021 MoA benchmark (Ljosa et al. 2013): treatment (compound, concentration) medians, "
    "MoA of the nearest treatment by cosine excluding the same compound (nsc) or the same "
    "compound or batch (nscb)",
    requires="plates with negative-control wells, MoA labels, batches",
    opt_in=True,
)
def _nsc(rows: ProbeRows, cfg: ProbeConfig) -> dict[str, float]:
    """Every probe-role well of a labelled compound (seen compounds' reserved probe wells,
    ``probe_train``/``probe_val``/``probe_test``, and every well of novel compounds,
    ``novel_test``) enters its treatment's median; control and genetic wells do not. The
    embeddings are ``rows.z``, normalised as every task reads them (``probe:`` settings)."""
    from bioscale.eval.nsc import moa_benchmark

    rows.need("nsc", "compound", "batch", "concentration")
    treated = rows.is_compound & (rows.moa[:, 0] >= 0)
    if not treated.any():
        log.warning(
            "evaluation task 'nsc': no labelled compound well among the probe rows; skipped"
        )
        return {}
    out = moa_benchmark(
        rows.z[treated],
        rows.compound[treated],
        rows.concentration[treated],
        rows.batch[treated],
        rows.moa[treated, 0],
    )
    for name, why in (("nsc", "another compound"), ("nscb", "another compound in no shared batch")):
        if f"{name}/moa/top1" not in out:
            log.warning("%s/moa: no treatment has a candidate (%s); skipped", name, why)
    return out


def _genetic_refusal(index: Any) -> str | None:
    from bioscale.eval.probe_sets import genetic_rows

    if len(genetic_rows(index)) == 0:
        return (
            "the manifest has no genetic perturbations (perturbation_type orf or crispr with the "
            "gene in 'target')"
        )
    return None


@_task(
    "genetic",
    "genetic (ORF/CRISPR) wells vs negative controls: replicate mAP (copairs), cosine distance, "
    "Z'; ORF-CRISPR same-gene matching",
    requires="genetic perturbations (perturbation_type orf/crispr with the gene in 'target')",
    refusal=_genetic_refusal,
)
def _genetic(rows: ProbeRows, cfg: ProbeConfig) -> dict[str, float]:
    from bioscale.eval.genetic import genetic_metrics

    genetic = rows.is_genetic
    if not genetic.any():
        log.warning(
            "evaluation task 'genetic': not applicable, the probe rows have no genetic "
            "perturbation (ORF/CRISPR with a gene); skipped"
        )
        return {}
    if not rows.is_control.any():
        log.warning("evaluation task 'genetic': no control wells to separate from; skipped")
        return {}
    keep = genetic | rows.is_control
    found = genetic_metrics(
        rows.z[keep],
        rows.gene[keep],
        rows.ptype[keep],
        rows.is_control[keep],
        null_size=cfg.retrieval_null_size,
        threshold=cfg.retrieval_threshold,
        seed=cfg.seed,
    )
    return {f"retrieval/genetic/{k}": v for k, v in found.items()}


def default_tasks(provides: frozenset[str]) -> tuple[str, ...]:
    """Every registered task that applies to data of ``kind`` (a study without ``eval:``) and is
    not opt-in (``EvalTask.opt_in``); tasks that also need something of the manifest
    (``EvalTask.refusal``) are dropped at plan time when it lacks it (``applicable``)."""
    return tuple(
        name for name in TASKS if TASKS.get(name).needs <= provides and not TASKS.get(name).opt_in
    )


def applicable(
    tasks: tuple[str, ...], index: Any, *, explicit: bool
) -> tuple[tuple[str, ...], list[str]]:
    """The tasks a manifest can run, and why the others cannot.

    Args:
        tasks: task names (a study's ``probe.tasks``).
        index: the manifest's ``bioscale.data.splits.SampleIndex``.
        explicit: the study listed ``tasks`` in ``eval:`` (a refusal is then an error).

    Returns:
        ``(kept, reasons)``: ``reasons`` holds ``"<task>: <why>"`` for each task dropped.

    Raises:
        ConfigError: ``explicit`` and a listed task cannot run on the manifest.
    """
    from bioscale.errors import ConfigError

    kept, reasons = [], []
    for name in tasks:
        refusal = TASKS.get(name).refusal
        why = refusal(index) if refusal is not None else None
        if why is None:
            kept.append(name)
        elif explicit:
            raise ConfigError(f"eval: task {name!r} cannot run on this data: {why}")
        else:
            reasons.append(f"{name}: {why}")
    return tuple(kept), reasons


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
