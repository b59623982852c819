"""Embedding normalisation against negative controls, as image-based profiling does it.

The controls are the evaluation control wells of the probe rows (``bioscale.data.splits`` role
``eval_control``), never wells a diet trains on. Per plate, every feature is centred on the
plate's control median and scaled by the controls' MAD (robust z-score; pycytominer's
``mad_robustize``), which removes the plate's technical offset and gain. Optionally the result is
then sphered (ZCA-whitened) with a covariance fitted on the controls pooled across plates:
per-plate control sets (8 of a JUMP plate's 16 control wells, by default) are far too
few for a full-rank covariance of a 256-1024-wide embedding, so the pooled covariance is shrunk
toward a scaled identity (Ledoit-Wolf by default, or a fixed shrinkage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: MAD → standard deviation of a normal distribution (1 / Φ⁻¹(3/4)).
MAD_TO_SD = 1.4826


@dataclass(frozen=True, kw_only=True)
class Normaliser:
    """A fitted normalisation: per-plate control statistics and an optional sphering map."""

    plates: np.ndarray  # (P,) plate codes with their own control statistics
    centre: np.ndarray  # (P, d) control medians per plate
    scale: np.ndarray  # (P, d) control MAD·1.4826 per plate, floored at eps
    pooled_centre: np.ndarray  # (d,) for plates without controls
    pooled_scale: np.ndarray  # (d,)
    clip: float | None
    mean: np.ndarray | None  # (d,) pooled control mean after robust z (sphering only)
    whiten: np.ndarray | None  # (d, d) ZCA map Σ^(-1/2) of the shrunk control covariance

    def transform(self, emb: np.ndarray, plate: np.ndarray) -> np.ndarray:
        """(n, d) embeddings of wells on ``plate`` (n,) → (n, d) normalised float64."""
        out = np.empty(emb.shape, dtype=np.float64)
        lookup = {int(p): i for i, p in enumerate(self.plates)}
        for p in np.unique(plate):
            rows = plate == p
            i = lookup.get(int(p))
            centre = self.pooled_centre if i is None else self.centre[i]
            scale = self.pooled_scale if i is None else self.scale[i]
            out[rows] = (emb[rows] - centre) / scale
        if self.clip is not None:
            np.clip(out, -self.clip, self.clip, out=out)
        if self.whiten is not None:
            out = (out - self.mean) @ self.whiten
        return out


def _robust_stats(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    centre = np.median(x, axis=0)
    scale = MAD_TO_SD * np.median(np.abs(x - centre), axis=0)
    return centre, np.maximum(scale, eps)


def fit_normaliser(
    emb: np.ndarray,
    plate: np.ndarray,
    is_control: np.ndarray,
    *,
    sphere: bool = True,
    shrinkage: float | None = None,
    clip: float | None = 30.0,
    eps: float = 1e-6,
) -> Normaliser:
    """Fit per-plate robust z-scores on the control wells, then (optionally) sphering.

    Args:
        emb: (n, d) embeddings.
        plate: (n,) integer plate codes.
        is_control: (n,) True for negative-control wells.
        sphere: ZCA-whiten with the pooled, shrunk control covariance after the robust z-score.
        shrinkage: weight of the scaled identity in the covariance, in [0, 1]; ``None`` picks it
            by Ledoit-Wolf.
        clip: clip robust z-scores to ±clip before sphering (profiles: ±30, SEEDS §1); ``None``
            keeps them.
        eps: floor of the MAD scale (features that are constant on a plate's controls).

    Raises:
        ValueError: without control wells (nothing to normalise against).
    """
    controls = np.asarray(is_control, dtype=bool)
    if controls.sum() < 2:
        raise ValueError(
            "normalisation against controls needs at least 2 evaluation control wells among the "
            f"probe rows, got {int(controls.sum())}; raise data.splits.eval_controls (the share "
            "of each plate's control wells reserved for evaluation), or set probe.normalise: "
            "none for data without negative controls"
        )
    plates = np.unique(plate[controls])
    stats = [_robust_stats(emb[controls & (plate == p)], eps) for p in plates]
    pooled_centre, pooled_scale = _robust_stats(emb[controls], eps)
    norm = Normaliser(
        plates=plates,
        centre=np.stack([c for c, _ in stats]),
        scale=np.stack([s for _, s in stats]),
        pooled_centre=pooled_centre,
        pooled_scale=pooled_scale,
        clip=clip,
        mean=None,
        whiten=None,
    )
    if not sphere:
        return norm
    z = norm.transform(emb[controls], plate[controls])
    mean, whiten = _zca(z, shrinkage)
    return Normaliser(**{**norm.__dict__, "mean": mean, "whiten": whiten})


def _zca(z: np.ndarray, shrinkage: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) control rows → their mean (d,) and Σ^(-1/2) (d, d) of the shrunk covariance."""
    from sklearn.covariance import LedoitWolf, ShrunkCovariance

    if shrinkage is None:
        est = LedoitWolf(assume_centered=False).fit(z)
    else:
        est = ShrunkCovariance(shrinkage=shrinkage, assume_centered=False).fit(z)
    vals, vecs = np.linalg.eigh(est.covariance_)
    floor = max(float(vals.max()), 1.0) * 1e-8  # a zero-variance direction stays finite
    whiten = (vecs / np.sqrt(np.maximum(vals, floor))) @ vecs.T
    return est.location_, whiten


def normalise_embeddings(
    emb: np.ndarray,
    plate: np.ndarray,
    is_control: np.ndarray,
    *,
    method: str,
    sphere: bool,
    shrinkage: float | None,
    clip: float | None,
) -> np.ndarray:
    """(n, d) embeddings → (n, d) normalised as configured (``method`` ``robust_z`` or ``none``)."""
    if method == "none":
        return np.asarray(emb, dtype=np.float64)
    return fit_normaliser(
        emb, plate, is_control, sphere=sphere, shrinkage=shrinkage, clip=clip
    ).transform(emb, plate)
