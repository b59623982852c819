"""The BBBC021 mechanism-of-action benchmark: nearest-neighbour MoA accuracy over treatments.

Ljosa et al. 2013 ("Comparison of methods for image-based profiling of cellular morphological
responses to small-molecule treatment", J. Biomol. Screen. 18(10)): a *treatment* is one
(compound, concentration); its profile is the median, feature by feature, of its replicate
wells; negative controls are no treatment. Each treatment's MoA is predicted as the MoA of its
nearest other treatment by cosine similarity, among candidates that exclude

- ``nsc`` (not same compound): every treatment of the query's compound (other concentrations of
  one compound would otherwise match trivially);
- ``nscb`` (not same compound or batch): also every treatment that shares a batch with the query
  (a treatment whose wells span several batches excludes every candidate with any of them), so
  batch effects cannot carry the match.

The accuracy is the share of query treatments whose nearest candidate has the query's MoA, over
the queries that have at least one eligible candidate; queries without one are not scored
(``n_treatments`` says how many were). On BBBC021 that is 103 treatments of 12 MoAs (38
compounds): chance is about 1/12. Some later papers (Ando et al. 2017) also drop the two MoAs
whose compounds all sit in one batch from NSCB (92 treatments); here they stay, scored like every
other query with a candidate (they can only miss).

Ties in similarity go to the candidate that sorts first by (compound, concentration) code, so
the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Query treatments compared at once ((chunk, T) similarities in memory).
CHUNK = 1024


@dataclass(frozen=True, kw_only=True)
class Treatments:
    """Treatment-level profiles: one row per (compound, concentration)."""

    profiles: np.ndarray  # (T, d) float64 median of the treatment's wells
    compound: np.ndarray  # (T,) compound codes (0..C-1, sorted compound values)
    moa: np.ndarray  # (T,) MoA codes (0..M-1, sorted MoA values)
    batches: np.ndarray  # (T, B) bool: the treatment has a well in batch b
    n_wells: np.ndarray  # (T,) replicate wells per treatment


def _codes(values: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(np.asarray(values), return_inverse=True)
    return inverse.ravel().astype(np.int64)


def treatment_profiles(
    z: np.ndarray,
    compound: np.ndarray,
    concentration: np.ndarray,
    batch: np.ndarray,
    moa: np.ndarray,
) -> Treatments:
    """Median profile of each (compound, concentration) over its wells.

    Args:
        z: (n, d) well embeddings or profiles (treated wells only: controls are no treatment).
        compound: (n,) compound of each well (any sortable values).
        concentration: (n,) concentration of each well (values or codes; one value for wells
            without a concentration makes one treatment of the compound).
        batch: (n,) batch of each well.
        moa: (n,) MoA of each well.

    Raises:
        ValueError: the arrays disagree in length, no well is given, or the wells of one
            treatment carry different MoAs (one compound, one MoA: fix the labels).
    """
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    if z.ndim != 2 or n == 0:
        raise ValueError(f"treatment profiles need (n, d) wells with n >= 1, got shape {z.shape}")
    columns = {"compound": compound, "concentration": concentration, "batch": batch, "moa": moa}
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"{name}: {len(values)} values for {n} wells")
    comp, dose, bat, label = (_codes(v) for v in columns.values())
    keys, treatment = np.unique(np.stack([comp, dose], axis=1), axis=0, return_inverse=True)
    treatment = treatment.ravel()
    order = np.argsort(treatment, kind="stable")
    bounds = np.flatnonzero(np.diff(treatment[order])) + 1
    groups = np.split(order, bounds)  # wells of each treatment, in treatment-code order

    profiles = np.stack([np.median(z[rows], axis=0) for rows in groups])
    t_moa = np.empty(len(groups), dtype=np.int64)
    batches = np.zeros((len(groups), int(bat.max()) + 1), dtype=bool)
    moa_values = np.unique(np.asarray(moa))
    for t, rows in enumerate(groups):
        found = np.unique(label[rows])
        if len(found) > 1:
            c = np.asarray(compound)[rows[0]]
            raise ValueError(
                f"treatment (compound {c}, concentration {np.asarray(concentration)[rows[0]]}) "
                f"has wells of several MoAs ({', '.join(map(str, moa_values[found]))}); a "
                "compound has one MoA: fix the labels"
            )
        t_moa[t] = found[0]
        batches[t, bat[rows]] = True
    return Treatments(
        profiles=profiles,
        compound=keys[:, 0],
        moa=t_moa,
        batches=batches,
        n_wells=np.bincount(treatment),
    )


def nearest_treatment(treatments: Treatments, *, exclude_batch: bool) -> np.ndarray:
    """(T,) index of each treatment's nearest eligible treatment by cosine similarity, -1 where
    none is eligible (module docstring: ``exclude_batch`` False is NSC, True is NSCB)."""
    from sklearn.preprocessing import normalize

    unit = normalize(treatments.profiles)  # unit rows; a zero profile stays zero (cosine 0)
    batches = treatments.batches.astype(np.float64)
    out = np.full(len(unit), -1, dtype=np.int64)
    for start in range(0, len(unit), CHUNK):
        q = slice(start, start + CHUNK)
        sim = unit[q] @ unit.T  # (chunk, T) cosine similarities
        excluded = treatments.compound[q, None] == treatments.compound[None, :]
        if exclude_batch:
            excluded |= (batches[q] @ batches.T) > 0  # shares at least one batch
        sim[excluded] = -np.inf
        eligible = ~excluded.all(axis=1)
        best = np.argmax(sim, axis=1)  # the first of tied candidates
        out[q] = np.where(eligible, best, -1)
    return out


def moa_accuracy(treatments: Treatments, *, exclude_batch: bool) -> tuple[float | None, int]:
    """``(accuracy, n_scored)``: share of the scored queries whose nearest eligible treatment has
    their MoA (``None`` when no query has an eligible candidate), and how many were scored."""
    nearest = nearest_treatment(treatments, exclude_batch=exclude_batch)
    scored = nearest >= 0
    n = int(scored.sum())
    if n == 0:
        return None, 0
    hits = treatments.moa[scored] == treatments.moa[nearest[scored]]
    return float(hits.mean()), n


def moa_benchmark(
    z: np.ndarray,
    compound: np.ndarray,
    concentration: np.ndarray,
    batch: np.ndarray,
    moa: np.ndarray,
) -> dict[str, float]:
    """NSC and NSCB MoA accuracy of treated wells (arguments: ``treatment_profiles``).

    Returns:
        ``nsc/moa/top1``, ``nsc/moa/n_treatments``, ``nscb/moa/top1``, ``nscb/moa/n_treatments``;
        a variant with no scorable query (e.g. NSCB on one batch) is left out, never NaN.
    """
    treatments = treatment_profiles(z, compound, concentration, batch, moa)
    out: dict[str, float] = {}
    for name, exclude_batch in (("nsc", False), ("nscb", True)):
        acc, n = moa_accuracy(treatments, exclude_batch=exclude_batch)
        if acc is not None:
            out[f"{name}/moa/top1"] = acc
            out[f"{name}/moa/n_treatments"] = float(n)
    return out
