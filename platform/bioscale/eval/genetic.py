"""Genetic separability (Pheno-CA, SEEDS §1): are a model's embeddings of genetic perturbations
(ORF overexpression, CRISPR knockout) told apart from the negative controls, and do the ORF and
the CRISPR of one gene find each other?

A genetic perturbation is one (gene, ``ptype``) pair; its wells are its replicates. Against the
negative-control wells (the paper compared ORF eGFP with LacZ and CRISPR PLK1 with non-targeting
guides, i.e. a perturbation with its plate's negative control):

- ``retrieval/genetic/map``, ``retrieval/genetic/fraction_retrieved``: replicate mAP of each
  perturbation's wells against the control wells (``copairs``; ``retrieval.map_against_controls``);
- ``retrieval/genetic/cosine_distance``: mean cosine distance between a perturbation's wells and
  the control wells, averaged over perturbations; ``retrieval/genetic/replicate_cosine_distance``
  is the same between the perturbation's own wells. Embeddings are normalised against the
  controls (centred on them), so the distance to controls sits near 1 whatever the model: a
  separable perturbation is one whose replicate distance is well below it;
- ``retrieval/genetic/zprime``: median over perturbations of Z′ = 1 − 3(σ_p + σ_c)/|μ_p − μ_c|
  (Zhang et al. 1999) of the wells projected on the axis from the control mean to the
  perturbation mean, cross-fitted: each well is projected on the axis fitted without it (leave
  one well out), so the axis never fits the noise of the wells it scores (an in-sample axis
  gives pure noise in d dimensions a gap of ~√d and a Z′ near 1).

ORF ↔ CRISPR matching, when a gene has both: each ORF consensus profile ranks the CRISPR
consensus profiles by absolute cosine similarity (overexpression and knockout of a gene may move
a profile in opposite directions; the JUMP gene–compound matching convention), the same gene's
CRISPR being the one positive: ``retrieval/genetic/orf_crispr_map`` and
``retrieval/genetic/orf_crispr_fraction_retrieved`` (``retrieval.query_reference_map``).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: ``ptype`` codes of a probe batch (``bioscale.eval.probe_sets.PTYPE_CODES``).
ORF, CRISPR = 1, 2


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def zprime(values: np.ndarray, controls: np.ndarray) -> float:
    """Z′ factor of two 1-D samples (``nan`` with fewer than two values in either)."""
    if len(values) < 2 or len(controls) < 2:
        return float("nan")
    gap = abs(values.mean() - controls.mean())
    spread = 3.0 * (values.std(ddof=1) + controls.std(ddof=1))
    return float(1.0 - spread / gap) if gap > 0 else float("-inf")


def crossfit_projections(wells: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-well-out projections on the control → perturbation axis.

    Args:
        wells: (n, d) embeddings of one perturbation's wells, n >= 2.
        controls: (m, d) embeddings of the control wells, m >= 2.

    Returns:
        ``(p (n,), c (m,))``: each well's offset from the control mean, projected on the unit axis
        from the control mean to the perturbation mean, the axis fitted without that well. The
        offset from the control mean makes the scores translation-invariant; without a
        perturbation effect both sides then shift alike (by ~d/m over the axis length).
    """
    n, m = len(wells), len(controls)
    mean_p, mean_c = wells.mean(axis=0), controls.mean(axis=0)
    loo_p = (n * mean_p - wells) / (n - 1)  # (n, d) perturbation mean without well i
    loo_c = (m * mean_c - controls) / (m - 1)  # (m, d) control mean without well j
    p = np.einsum("id,id->i", wells - mean_c, _unit(loo_p - mean_c))
    c = np.einsum("jd,jd->j", controls - mean_c, _unit(mean_p - loo_c))
    return p, c


def separability(z: np.ndarray, pert: np.ndarray, is_control: np.ndarray) -> dict[str, float]:
    """Cosine distances (to the controls, between replicates) and Z′ per perturbation,
    summarised (module docstring).

    Args:
        z: (n, d) normalised embeddings of genetic and control wells.
        pert: (n,) perturbation codes (ignored on control rows).
        is_control: (n,) True for negative-control wells.
    """
    unit = _unit(np.asarray(z, dtype=np.float64))
    ctrl = unit[is_control]
    ctrl_raw = np.asarray(z, dtype=np.float64)[is_control]
    distances, replicate, zs = [], [], []
    for code in np.unique(pert[~is_control]):
        rows = ~is_control & (pert == code)
        distances.append(1.0 - float((unit[rows] @ ctrl.T).mean()))
        n = int(rows.sum())
        if n > 1:
            sim = unit[rows] @ unit[rows].T
            replicate.append(1.0 - float((sim.sum() - np.trace(sim)) / (n * (n - 1))))
        if n > 1 and len(ctrl_raw) > 1:
            zs.append(
                zprime(*crossfit_projections(np.asarray(z, dtype=np.float64)[rows], ctrl_raw))
            )
    finite = [v for v in zs if np.isfinite(v)]
    return {
        "cosine_distance": float(np.mean(distances)),
        "replicate_cosine_distance": float(np.mean(replicate)) if replicate else float("nan"),
        "zprime": float(np.median(finite)) if finite else float("nan"),
    }


def genetic_metrics(
    z: np.ndarray,
    gene: np.ndarray,
    ptype: np.ndarray,
    is_control: np.ndarray,
    *,
    null_size: int,
    threshold: float,
    seed: int,
) -> dict[str, float]:
    """Every metric of the module docstring, keys without the ``retrieval/genetic/`` prefix.

    Args:
        z: (n, d) normalised embeddings of genetic and control wells.
        gene: (n,) gene codes of the genetic wells (any value on control rows).
        ptype: (n,) ``ptype`` codes (``ORF``, ``CRISPR``; any value on control rows).
        is_control: (n,) True for negative-control wells.
        null_size, threshold, seed: copairs' null distribution and FDR threshold.
    """
    from bioscale.eval.retrieval import consensus, map_against_controls, query_reference_map

    controls = np.asarray(is_control, dtype=bool)
    pert = np.where(controls, -1, gene * 3 + ptype).astype(np.int64)  # one code per (gene, type)
    out: dict[str, float] = {}
    found = map_against_controls(
        z, pert, controls, same="compound", null_size=null_size, threshold=threshold, seed=seed
    )
    if found is None:
        log.warning("retrieval/genetic: no genetic perturbation has two wells; mAP skipped")
    else:
        out |= found
    out |= separability(z, pert, controls)

    genetic = ~controls
    codes, means = consensus(np.asarray(z, dtype=np.float64)[genetic], pert[genetic])
    code_gene, code_type = codes // 3, codes % 3
    both = np.intersect1d(code_gene[code_type == ORF], code_gene[code_type == CRISPR])
    if len(both) < 2:
        log.info("retrieval/genetic: fewer than two genes with both ORF and CRISPR; no matching")
        return out
    pair = np.isin(code_type, (ORF, CRISPR))
    matched = query_reference_map(
        means[pair],
        codes[pair],
        code_gene[pair],
        code_type[pair] == ORF,
        distance="abs_cosine",
        null_size=null_size,
        threshold=threshold,
        seed=seed,
    )
    if matched is not None:
        out |= {f"orf_crispr_{k}": v for k, v in matched.items()}
    return out
