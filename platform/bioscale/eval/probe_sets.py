"""The probe rows of every trial: the fixed probe sets plus the evaluation control wells, with
their codes.

Identical for every diet, seed and objective (a pure function of the manifest and its roles).
The control rows are the ``eval_control`` wells (``bioscale.data.splits``), which no diet trains
on: normalisation statistics and retrieval negatives never come from wells an objective saw.
Columns (int64, aligned with ``rows``; see ``bioscale.eval.tasks``):

- ``role``: ``ROLE_CODES`` (``control`` for the evaluation control wells);
- ``label``: MoA code over the MoAs of ``seen`` compounds (-1: control);
- ``target_0..target_{K-1}``: target codes over the targets of ``seen`` compounds (-1 padding;
  the manifest's ``target`` may list several, ``|``-separated);
- ``plate``, ``source``, ``batch``, ``compound``, ``well``: codes over the whole manifest (sorted
  names);
- ``concentration``: code over the manifest's distinct concentrations, ascending (-1: none).

When the manifest has genetic perturbations (``perturbation_type`` ``orf``/``crispr`` with a gene
in ``target``), their wells follow the controls as ``novel_test`` rows (label and targets -1) and
two more columns say what they are:

- ``ptype``: index in ``manifest.PERTURBATION_TYPES`` (``PTYPE_CODES``);
- ``gene``: code of the perturbed gene over the sorted genes of the genetic wells (-1: none).
"""

from __future__ import annotations

import numpy as np

from bioscale.data.manifest import PERTURBATION_TYPES
from bioscale.data.splits import SampleIndex
from bioscale.eval.config import ROLE_CODES, TARGET_PREFIX
from bioscale.objectives.base import Targets

#: Separator of several targets in the manifest's ``target`` column (Drug Repurposing Hub style).
TARGET_SEPARATOR = "|"
#: ``ptype`` codes of a probe batch: ``compound`` 0, ``orf`` 1, ``crispr`` 2, ``control`` 3.
PTYPE_CODES = {t: i for i, t in enumerate(PERTURBATION_TYPES)}
GENETIC_TYPES = ("orf", "crispr")


def split_targets(value: object) -> list[str]:
    """``"EGFR|ERBB2"`` → ``["EGFR", "ERBB2"]``; empty or missing → ``[]``."""
    if not value:
        return []
    return [t.strip() for t in str(value).split(TARGET_SEPARATOR) if t.strip()]


def _codes(values: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(values.astype(str), return_inverse=True)
    return inverse.astype(np.int64)


def _concentration_codes(index: SampleIndex) -> np.ndarray:
    """(n,) code of each sample's concentration over the distinct ones, ascending; -1 for none."""
    if index.concentration is None:
        return np.full(len(index), -1, dtype=np.int64)
    values = np.array([np.nan if c is None else float(c) for c in index.concentration])
    known = np.isfinite(values)
    codes = np.full(len(values), -1, dtype=np.int64)
    codes[known] = np.unique(values[known], return_inverse=True)[1].ravel()
    return codes


def genetic_rows(index: SampleIndex) -> np.ndarray:
    """Rows of genetic perturbations (``orf``/``crispr``) that name their gene in ``target``."""
    if index.perturbation_type is None:
        return np.zeros(0, dtype=np.int64)
    genetic = np.isin(index.perturbation_type.astype(str), GENETIC_TYPES)
    named = np.array([bool(split_targets(t)) for t in index.target], dtype=bool)
    return np.flatnonzero(genetic & named)


def probe_set_targets(index: SampleIndex) -> Targets:
    """Probe-set rows of labelled compounds (a novel compound whose MoA no seen compound has
    cannot be probed), the evaluation control wells and every genetic well, with the columns of
    the module docstring."""
    genetic = genetic_rows(index)
    seen = index.where(groups=frozenset({"seen"}))
    vocab = sorted({m for m in index.moa[seen] if m})
    lookup = {m: i for i, m in enumerate(vocab)}
    probe_roles = tuple(r for r in ROLE_CODES if r != "control")
    rows = np.setdiff1d(index.where(role=probe_roles), genetic)
    label = np.array([lookup.get(m, -1) for m in index.moa[rows]], dtype=np.int64)
    rows, label = rows[label >= 0], label[label >= 0]
    controls = index.where(role="eval_control")
    role = np.array(
        [ROLE_CODES[r] for r in index.role[rows]] + [ROLE_CODES["control"]] * len(controls),
        dtype=np.int64,
    )
    all_rows = np.concatenate([rows, controls])
    label = np.concatenate([label, np.full(len(controls), -1, dtype=np.int64)])

    target_vocab = sorted({t for v in index.target[seen] for t in split_targets(v)})
    t_lookup = {t: i for i, t in enumerate(target_vocab)}
    target_lists = [
        [t_lookup[t] for t in split_targets(index.target[i]) if t in t_lookup]
        if r < len(rows)
        else []
        for r, i in enumerate(all_rows)
    ]
    width = max((len(t) for t in target_lists), default=0)
    targets = np.full((len(all_rows), width), -1, dtype=np.int64)
    for r, codes in enumerate(target_lists):
        targets[r, : len(codes)] = codes

    if len(genetic):
        all_rows = np.concatenate([all_rows, genetic])
        n_gen = len(genetic)
        role = np.concatenate([role, np.full(n_gen, ROLE_CODES["novel_test"], dtype=np.int64)])
        label = np.concatenate([label, np.full(n_gen, -1, dtype=np.int64)])
        targets = np.concatenate([targets, np.full((n_gen, width), -1, dtype=np.int64)])

    wells = np.array([k.rsplit("/", 1)[0] for k in index.key], dtype=object)  # plate/well
    columns = {
        "role": role,
        "label": label,
        **{f"{TARGET_PREFIX}{j}": targets[:, j] for j in range(width)},
        "plate": _codes(index.plate)[all_rows],
        "source": _codes(index.source)[all_rows],
        "batch": _codes(index.batch)[all_rows],
        "compound": _codes(index.perturbation_id)[all_rows],
        "concentration": _concentration_codes(index)[all_rows],
        "well": _codes(wells)[all_rows],
    }
    if len(genetic):
        kinds = index.perturbation_type[all_rows].astype(str)
        columns["ptype"] = np.array([PTYPE_CODES.get(k, -1) for k in kinds], dtype=np.int64)
        genes = [split_targets(index.target[i])[0] for i in genetic]
        gene_lookup = {g: j for j, g in enumerate(sorted(set(genes)))}
        gene = np.full(len(all_rows), -1, dtype=np.int64)
        gene[len(all_rows) - len(genetic) :] = [gene_lookup[g] for g in genes]
        columns["gene"] = gene
    return Targets(rows=all_rows, columns=columns)
