"""Profile preprocessing: the Pheno-CA recipe and pycytominer's, fitted without leakage.

A study's ``data.preprocess`` (profiles) transforms every well's features before any model sees
them, in this order, each step optional:

1. ``normalize``: per plate, against that plate's negative-control wells — ``mad_robustize``
   ((x − median) / (1.4826·MAD), pycytominer's ``RobustMAD``) or ``standardize`` ((x − mean) /
   sd). Controls are label-free, so every control well of the plate is used.
2. ``feature_select``: pycytominer's operations ``variance_threshold`` (``freq_cut``,
   ``unique_cut``), ``correlation_threshold`` (``corr_threshold``), ``drop_na_columns``
   (``na_cutoff``) and ``blocklist`` (the standard CellProfiler blocklist).
3. ``clip``: to ±clip (Pheno-CA: 30).
4. ``pca_variance``: PCA whitening keeping that fraction of the variance (Pheno-CA: 0.999).

Statistics that look at more than controls (feature selection, PCA) are fitted on training-pool
wells only (role ``pool``: never a probe, early-stopping, evaluation-control or novel-compound
well), up to ``fit_wells`` of them chosen by a stable hash — the same wells for every trial, so the
transform is the study's, fitted once by the driver and handed to every trial. Its identity (the
sha256 of its arrays) is logged with every trial (``bioscale.preprocess_sha``) and the fitted
transform is saved with the study (``preprocess.npz``); ``bioscale data preprocess`` writes a
preprocessed manifest to inspect.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bioscale.data.hashing import rank_key
from bioscale.errors import ConfigError, ManifestError

SELECT_OPERATIONS = ("variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist")
FIT_SALT = "bioscale-preprocess-fit"


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """A study's ``data.preprocess`` (module docstring); every step off by default."""

    normalize: Literal["none", "mad_robustize", "standardize"] = "none"
    feature_select: tuple[str, ...] = ()
    corr_threshold: float = 0.9
    freq_cut: float = 0.05
    unique_cut: float = 0.01
    na_cutoff: float = 0.05
    clip: float | None = None
    pca_variance: float | None = None
    #: at most this many training-pool wells fit feature selection and PCA (a stable choice)
    fit_wells: int = 50_000

    def __post_init__(self) -> None:
        bad = [op for op in self.feature_select if op not in SELECT_OPERATIONS]
        if bad:
            raise ConfigError(
                f"data.preprocess.feature_select: unknown operation {bad[0]!r}; choose from "
                f"{', '.join(SELECT_OPERATIONS)}"
            )
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"data.preprocess.clip must be > 0 (Pheno-CA: 30), got {self.clip}")
        if self.pca_variance is not None and not 0.0 < self.pca_variance <= 1.0:
            raise ConfigError(
                "data.preprocess.pca_variance is the fraction of variance kept, in (0, 1] "
                f"(Pheno-CA: 0.999), got {self.pca_variance}"
            )
        if not 0.0 < self.corr_threshold <= 1.0 or not 0.0 <= self.na_cutoff <= 1.0:
            raise ConfigError("data.preprocess: corr_threshold in (0, 1], na_cutoff in [0, 1]")
        if self.fit_wells < 2:
            raise ConfigError("data.preprocess.fit_wells must be >= 2")

    @property
    def enabled(self) -> bool:
        return (
            self.normalize != "none"
            or bool(self.feature_select)
            or self.clip is not None
            or self.pca_variance is not None
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class FittedPreprocess:
    """A fitted transform: ``apply(x, plates)`` maps raw (B, F) features to (B, n_out)."""

    config: PreprocessConfig
    feature_names: tuple[str, ...]  # the manifest's F features
    plates: tuple[str, ...]  # the plates ``center``/``scale`` rows belong to (normalize)
    center: np.ndarray | None  # (P, F) float32
    scale: np.ndarray | None  # (P, F) float32
    keep: np.ndarray  # (F',) int64 indices of the features kept
    pca_mean: np.ndarray | None = None  # (F',)
    pca_components: np.ndarray | None = None  # (K, F'), rows scaled to whiten
    n_fit_wells: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def n_out(self) -> int:
        return len(self.pca_components) if self.pca_components is not None else len(self.keep)

    @property
    def output_names(self) -> list[str]:
        if self.pca_components is not None:
            return [f"PC{i + 1}" for i in range(self.n_out)]
        return [self.feature_names[i] for i in self.keep]

    def plate_codes(self, plates: np.ndarray) -> np.ndarray:
        lookup = {p: i for i, p in enumerate(self.plates)}
        try:
            return np.fromiter((lookup[str(p)] for p in plates), np.int64, count=len(plates))
        except KeyError as err:
            raise ManifestError(
                f"plate {err.args[0]!r} was not in the manifest the preprocessing was fitted on"
            ) from None

    def apply(self, x: np.ndarray, plate_codes: np.ndarray | None = None) -> np.ndarray:
        """Raw features (B, F) of wells on plates ``plate_codes`` (indices into ``plates``)."""
        x = np.asarray(x, dtype=np.float32)
        if self.center is not None:
            if plate_codes is None:
                raise ValueError("per-plate normalisation needs each row's plate")
            x = (x - self.center[plate_codes]) / self.scale[plate_codes]
        x = x[:, self.keep]
        if self.config.clip is not None:
            np.clip(x, -self.config.clip, self.config.clip, out=x)
        if self.pca_components is not None:
            x = (x - self.pca_mean) @ self.pca_components.T
        return np.ascontiguousarray(x, dtype=np.float32)

    # ------------------------------------------------------------------------ saved form
    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "feature_names": np.array(self.feature_names, dtype=object).astype(str),
            "plates": np.array(self.plates, dtype=object).astype(str),
            "keep": self.keep,
        }
        for name in ("center", "scale", "pca_mean", "pca_components"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def sha(self) -> str:
        """sha256 of the configuration and every fitted array: the transform's identity."""
        digest = hashlib.sha256(repr(sorted(asdict(self.config).items())).encode())
        for name, value in sorted(self.arrays().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> Path:
        import json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        meta = np.array(
            json.dumps(
                {
                    "config": asdict(self.config),
                    "n_fit_wells": self.n_fit_wells,
                    "notes": list(self.notes),
                    "sha": self.sha(),
                }
            )
        )
        np.savez_compressed(buf, meta=meta, **self.arrays())
        path.write_bytes(buf.getvalue())
        return path


def load_fitted(path: str | Path) -> FittedPreprocess:
    """A transform saved by :meth:`FittedPreprocess.save` (its sha is checked)."""
    import json

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files if k != "meta"}
    cfg = meta["config"]
    cfg["feature_select"] = tuple(cfg["feature_select"])
    fitted = FittedPreprocess(
        config=PreprocessConfig(**cfg),
        feature_names=tuple(str(n) for n in arrays["feature_names"]),
        plates=tuple(str(p) for p in arrays["plates"]),
        center=arrays.get("center"),
        scale=arrays.get("scale"),
        keep=arrays["keep"].astype(np.int64),
        pca_mean=arrays.get("pca_mean"),
        pca_components=arrays.get("pca_components"),
        n_fit_wells=int(meta["n_fit_wells"]),
        notes=tuple(meta["notes"]),
    )
    if fitted.sha() != meta["sha"]:
        raise ManifestError(f"{path} is damaged: its arrays do not match the sha it records")
    return fitted


def _features(path: str | Path, ids: list[str]) -> np.ndarray:
    from bioscale.data.manifest import read_features

    return read_features(path, ids)[1].astype(np.float32) if ids else np.zeros((0, 0), np.float32)


def fit_preprocess(
    path: str | Path, index: Any, cfg: PreprocessConfig, feature_names: list[str] | None = None
) -> FittedPreprocess:
    """Fit ``cfg`` on manifest ``path`` (``index``: its ``SampleIndex`` with the study's roles)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bioscale.data import manifest as mf

    schema = pq.read_schema(path)  # the width without hashing the file (inspect would)
    ftype = schema.field(mf.FEATURES).type if mf.FEATURES in schema.names else None
    width = ftype.list_size if ftype is not None and pa.types.is_fixed_size_list(ftype) else None
    if width is None:
        raise ManifestError(f"data.preprocess applies to profile manifests; {path} holds images")
    names = list(feature_names or mf.feature_names(schema) or [])
    if len(names) != width:
        names = [f"feature_{j}" for j in range(width)]
    notes: list[str] = []
    groups = np.asarray(index.group).astype(str)
    roles = np.asarray(index.role).astype(str)
    plates_all = np.asarray(index.plate).astype(str)
    ids_all = np.asarray(index.sample_id).astype(str)
    plates = tuple(sorted(set(plates_all)))
    center = scale = None
    if cfg.normalize != "none":
        from pycytominer.operations.transform import RobustMAD

        is_control = groups == "control"
        lacking = sorted(set(plates) - set(plates_all[is_control]))
        if lacking:
            raise ManifestError(
                f"data.preprocess.normalize: plate(s) {', '.join(lacking[:5])} of {path} have no "
                "control wells to normalise against; use normalize: none"
            )
        ctrl_ids = list(ids_all[is_control])
        ctrl_x = _features(path, ctrl_ids)
        ctrl_plates = plates_all[is_control]
        center = np.zeros((len(plates), width), np.float32)
        scale = np.ones((len(plates), width), np.float32)
        for i, plate in enumerate(plates):
            x = pd.DataFrame(ctrl_x[ctrl_plates == plate], columns=names)
            if cfg.normalize == "mad_robustize":
                fitted = RobustMAD().fit(x)
                center[i] = fitted.median.to_numpy(np.float32)
                scale[i] = fitted.mad.to_numpy(np.float32) + np.float32(fitted.epsilon)
            else:
                center[i] = x.mean().to_numpy(np.float32)
                sd = x.std(ddof=0).to_numpy(np.float32)
                scale[i] = np.where(sd > 0, sd, np.float32(1.0))
        scale = np.where(scale > 0, scale, np.float32(1e-18)).astype(np.float32)
    keep = np.arange(width, dtype=np.int64)
    fitted = FittedPreprocess(
        config=cfg, feature_names=tuple(names), plates=plates, center=center, scale=scale, keep=keep
    )
    pca_mean = pca_components = None
    n_fit = 0
    if cfg.feature_select or cfg.pca_variance is not None:
        pool = np.flatnonzero((roles == "pool") & (groups != "control"))
        if len(pool) < 2:
            raise ManifestError(
                f"data.preprocess: {path} has {len(pool)} training-pool wells; feature selection "
                "and PCA are fitted on them (and only them) and need at least 2"
            )
        pool = sorted(pool, key=lambda r: rank_key(str(ids_all[r]), FIT_SALT))[: cfg.fit_wells]
        n_fit = len(pool)
        x = fitted.apply(_features(path, list(ids_all[pool])), fitted.plate_codes(plates_all[pool]))
        if cfg.feature_select:
            from pycytominer import feature_select

            frame = pd.DataFrame(x, columns=names)
            selected = feature_select(
                frame,
                features=names,
                operation=list(cfg.feature_select),
                na_cutoff=cfg.na_cutoff,
                corr_threshold=cfg.corr_threshold,
                freq_cut=cfg.freq_cut,
                unique_cut=cfg.unique_cut,
            )
            kept = set(selected.columns)
            keep = np.array([j for j, n in enumerate(names) if n in kept], dtype=np.int64)
            if len(keep) == 0:
                raise ManifestError("data.preprocess.feature_select removed every feature")
            notes.append(f"feature selection kept {len(keep)} of {width} features")
            x = x[:, keep]
        if cfg.clip is not None:
            np.clip(x, -cfg.clip, cfg.clip, out=x)
        if cfg.pca_variance is not None:
            from sklearn.decomposition import PCA

            finite = np.isfinite(x).all(axis=1)
            pca = PCA(
                n_components=cfg.pca_variance if cfg.pca_variance < 1.0 else None,
                whiten=True,
                svd_solver="full",
                random_state=0,
            ).fit(x[finite].astype(np.float64))
            pca_mean = pca.mean_.astype(np.float32)
            scale_k = np.sqrt(np.maximum(pca.explained_variance_, 1e-12))
            pca_components = (pca.components_ / scale_k[:, None]).astype(np.float32)
            notes.append(
                f"PCA whitening kept {len(pca_components)} components "
                f"({100 * pca.explained_variance_ratio_.sum():.2f} % of the variance)"
            )
    return FittedPreprocess(
        config=cfg,
        feature_names=tuple(names),
        plates=plates,
        center=center,
        scale=scale,
        keep=keep,
        pca_mean=pca_mean,
        pca_components=pca_components,
        n_fit_wells=n_fit,
        notes=tuple(notes),
    )


def apply_batch(batch: dict[str, np.ndarray], *, fitted: FittedPreprocess) -> dict[str, np.ndarray]:
    """A Ray Data batch ``{"x": (B, F), "_plate": (B,), ...}`` → ``x`` preprocessed, ``_plate``
    dropped (``map_batches(batch_format="numpy")``)."""
    out = dict(batch)
    codes = out.pop(PLATE_COLUMN, None)
    out["x"] = fitted.apply(out["x"], codes)
    return out


#: The column a trial's profile rows carry the plate code of the preprocessing in.
PLATE_COLUMN = "_preprocess_plate"


def write_preprocessed(
    manifest: str | Path, out: str | Path, fitted: FittedPreprocess, batch_rows: int = 8192
) -> Path:
    """Every well of ``manifest`` through ``fitted`` into a new profile manifest ``out`` (same
    metadata, the transformed features named as ``output_names``), streamed ``batch_rows`` wells
    at a time; the transform is saved beside it (``<out stem>.preprocess.npz``)."""
    import pyarrow.parquet as pq

    from bioscale.data import manifest as mf

    pf = pq.ParquetFile(manifest, pre_buffer=False)
    columns = [*mf.METADATA_COLUMNS, mf.FEATURES]
    with mf.ProfileWriter(out, fitted.output_names) as writer:
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            meta = {c: batch.column(c).to_pylist() for c in mf.METADATA_COLUMNS}
            feats = batch.column(mf.FEATURES)
            width = feats.type.list_size
            x = feats.flatten().to_numpy(zero_copy_only=False).reshape(len(batch), width)
            codes = (
                fitted.plate_codes(np.asarray(meta["plate"])) if fitted.center is not None else None
            )
            writer.write(meta, fitted.apply(x, codes))
    out = Path(out)
    fitted.save(out.with_name(out.stem + ".preprocess.npz"))
    return out
