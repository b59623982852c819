"""Retrieval mean average precision against negative controls, with ``copairs`` (the field's
library; Kalinin et al. 2024, "A versatile information retrieval framework for evaluating profile
strength and similarity").

Each compound well is a query; its positives are the wells that should retrieve it (replicates of
the same compound, or wells of *other* compounds with the same MoA) and its negatives are the
evaluation control wells (``bioscale.data.splits`` role ``eval_control``: negative-control wells
no diet trains on). Cosine similarity ranks them; AP per well, mAP per compound, a p-value per
compound from copairs' permutation null (FDR-corrected), and:

- ``retrieval/<task>/map``: mean over compounds of the per-compound mAP;
- ``retrieval/<task>/fraction_retrieved``: share of compounds with corrected p < threshold.

``query_reference_map`` is the other shape of the same metric: query items rank a reference
library (rediscovery: a query compound's consensus profile ranks the known compounds; genetic
matching: an ORF ranks the CRISPR knockouts), positives of the query's class against references
of other classes, with the same per-query p-values and ``fraction_retrieved``.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: The reference-index column copairs' phenotypic-activity recipe uses: -1 for queries, a unique
#: value per control, so controls are never each other's positives or negatives.
_REF = "ref"


def map_against_controls(
    z: np.ndarray,
    compound: np.ndarray,
    is_control: np.ndarray,
    *,
    same: str = "compound",
    label: np.ndarray | None = None,
    null_size: int,
    threshold: float,
    seed: int,
) -> dict[str, float] | None:
    """mAP of compound wells against control wells.

    Args:
        z: (n, d) embeddings (compound and control wells).
        compound: (n,) compound codes.
        is_control: (n,) True for negative-control wells.
        same: ``compound``: positives are replicates of the query's compound; ``label``:
            positives are wells of other compounds sharing the query's ``label``.
        label: (n,) class codes (-1: unlabelled) when ``same == "label"``.
        null_size: copairs null-distribution size.
        threshold: corrected p-value threshold of ``fraction_retrieved``.
        seed: seed of the null distributions.

    Returns:
        ``{"map": .., "fraction_retrieved": ..}``, or ``None`` when no query has a positive.
    """
    import pandas as pd
    from copairs.map import average_precision

    controls = np.asarray(is_control, dtype=bool)
    if not controls.any():
        raise ValueError("retrieval against controls needs control wells among the probe rows")
    keep = controls.copy()
    meta = pd.DataFrame(
        {
            "compound": np.where(controls, -1, compound).astype(np.int64),
            _REF: np.where(controls, np.arange(len(z)), -1).astype(np.int64),
        }
    )
    if same == "compound":
        keep |= ~controls
        pos_sameby, pos_diffby = ["compound", _REF], []
        neg_diffby = ["compound", _REF]
    elif same == "label":
        if label is None:
            raise ValueError("same='label' needs label codes")
        keep |= ~controls & (label >= 0)
        meta["label"] = np.where(controls, -1, label).astype(np.int64)
        pos_sameby, pos_diffby = ["label", _REF], ["compound"]
        neg_diffby = ["label", _REF]
    else:
        raise ValueError(f"same must be 'compound' or 'label', got {same!r}")
    meta = meta[keep].reset_index(drop=True)
    feats = np.asarray(z[keep], dtype=np.float64)
    ap = average_precision(meta, feats, pos_sameby, pos_diffby, [], neg_diffby, progress_bar=False)
    ap = ap[(ap[_REF] < 0) & (ap["n_pos_pairs"] > 0)]
    if ap.empty:
        return None
    per_compound = _mean_average_precision(
        ap, ["compound"], null_size=null_size, threshold=threshold, seed=seed
    )
    return {
        "map": float(per_compound["mean_average_precision"].mean()),
        "fraction_retrieved": float(per_compound["below_corrected_p"].mean()),
    }


#: CPython 3.11's AST construction can fail spuriously when threads parse at once (this
#: ``SystemError``; python/cpython#106905): copairs reads its cached null distributions with
#: ``np.load`` from a thread pool, and numpy parses each file's header with ``ast.literal_eval``,
#: so a trial's mAP failed now and then (1 of 16 demo trials once). The computation is
#: deterministic: it is simply run again.
_PARSER_RACE = "AST constructor recursion depth mismatch"
_ATTEMPTS = 3


def _mean_average_precision(ap, sameby: list[str], **kwargs):
    """copairs' ``mean_average_precision``, run again when CPython's parser race hits it."""
    from copairs.map import mean_average_precision

    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return mean_average_precision(ap, sameby, progress_bar=False, **kwargs)
        except SystemError as err:
            if _PARSER_RACE not in str(err) or attempt == _ATTEMPTS:
                raise
            log.warning("copairs mAP hit CPython's parser race (%s); running it again", err)
    raise AssertionError("unreachable")


def _per_query_map(
    ap, by: str, *, null_size: int, threshold: float, seed: int
) -> dict[str, float] | None:
    """copairs' per-``by`` mAP with permutation p-values (FDR-corrected) → map, fraction."""
    ap = ap[(ap["query"] == 1) & (ap["n_pos_pairs"] > 0)]
    if ap.empty:
        return None
    per_query = _mean_average_precision(
        ap, [by], null_size=null_size, threshold=threshold, seed=seed
    )
    return {
        "map": float(per_query["mean_average_precision"].mean()),
        "fraction_retrieved": float(per_query["below_corrected_p"].mean()),
    }


def consensus(z: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean embedding per group code: ``(codes (g,), means (g, d))`` (a compound's consensus
    profile, the unit Pheno-CA's rediscovery ranks)."""
    codes, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(codes), z.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse.ravel(), z)
    return codes, sums / np.bincount(inverse.ravel())[:, None]


def query_reference_map(
    z: np.ndarray,
    item: np.ndarray,
    cls: np.ndarray,
    is_query: np.ndarray,
    *,
    distance: str = "cosine",
    null_size: int,
    threshold: float,
    seed: int,
) -> dict[str, float] | None:
    """mAP of query items ranking a reference library: for each query, the references of the same
    class are positives and the references of other classes negatives (never other queries).

    Args:
        z: (n, d) one embedding per item (queries and references).
        item: (n,) item codes (one AP per query item).
        cls: (n,) class codes (-1: unlabelled, dropped).
        is_query: (n,) True for queries, False for references.
        distance: copairs similarity (``cosine``; ``abs_cosine`` when a match may be reversed).
        null_size, threshold, seed: copairs' null distribution and FDR threshold.

    Returns:
        ``{"map": .., "fraction_retrieved": ..}`` over queries with a positive, or ``None``.
    """
    import pandas as pd
    from copairs.map import average_precision
    from copairs.matching import UnpairedException

    keep = np.asarray(cls) >= 0
    meta = pd.DataFrame(
        {
            "item": np.asarray(item, dtype=np.int64)[keep],
            "cls": np.asarray(cls, dtype=np.int64)[keep],
            "query": np.asarray(is_query, dtype=np.int64)[keep],
        }
    )
    if meta["query"].sum() == 0 or (meta["query"] == 0).sum() == 0:
        return None
    # a pair always joins one query and one reference: "query" differs within every pair
    try:
        ap = average_precision(
            meta,
            np.asarray(z[keep], dtype=np.float64),
            ["cls"],
            ["query"],
            [],
            ["cls", "query"],
            distance=distance,
            progress_bar=False,
        )
    except UnpairedException:  # no positive or no negative pair at all
        return None
    return _per_query_map(ap, "item", null_size=null_size, threshold=threshold, seed=seed)
