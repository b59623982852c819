"""Neural predictivity: how well a model's layers predict recorded responses (SEEDS §3, IT
predictivity of arXiv 2306.03779, after Brain-Score's PLS protocol).

A neural dataset is a folder a user fills from their recordings::

    <root>/
      stimuli/          the images shown (PNG/JPEG); row i of the arrays is the i-th file in
                        sorted name order, unless meta.json lists ``stimuli`` in row order
      responses.npy     (images, neurons) float, trial-averaged
      repeats.npy       optional (images, neurons, repeats) float, single trials, NaN-padded
                        where an image had fewer repeats; enables the noise ceiling
      meta.json         {"name": "...", "region": "IT", "time_window_ms": [70, 170],
                         "source": "lab / paper / DOI"}

``import_assembly`` converts a Brain-Score-style NetCDF assembly (xarray) into this layout.

Scoring, per dataset: images are split into ``folds`` folds by a seeded permutation. For each
outer fold, the training images are split once more: one inner fold is the validation fold,
every layer's PLS (``n_components`` = 25, ``scale=False``) is fit on the rest and scored there
(median over neurons of Pearson r), and the best layer is refit on all training images and predicts
the held-out fold. The layer is thus chosen without the test images. Every image is predicted once;
per-neuron Pearson r of the held-out predictions, median over neurons, is the raw score. With
repeats, the ceiling is the split-half reliability with the Spearman–Brown correction (median over
neurons, mean over ``ceiling_splits`` random halvings), and two normalised scores are logged:

- ``score`` = raw / ceiling, Brain-Score's ceiled convention (compare with published ceiled
  numbers). A model that predicts the noise-free signal exactly reaches raw r ≈ √ceiling, so
  ``score`` ≈ 1/√ceiling for it and can exceed 1 when the recordings are noisy.
- ``explained`` = raw / √ceiling, r corrected for the attenuation by trial noise (Spearman's
  correction): ≈ the correlation with the noise-free response, ≈ 1 for a perfect model whatever
  the noise (above 1 only by sampling error). Compare models across datasets of different
  reliability with it.

Without repeats there is no ceiling: ``score`` = raw and no ``explained``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioscale.errors import BioscaleError, ConfigError

log = logging.getLogger(__name__)

RESPONSES = "responses.npy"
REPEATS = "repeats.npy"
META = "meta.json"
STIMULI = "stimuli"
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
META_KEYS = ("name", "region", "time_window_ms", "source", "stimuli")


class NeuralDataError(BioscaleError, ValueError):
    """A neural dataset folder is missing a file or its arrays disagree."""


@dataclass(frozen=True, kw_only=True)
class NeuralDataset:
    """A loaded neural dataset.

    Attributes:
        name: short name used in metric keys (``neural/<name>/score``).
        stimuli: image paths in row order.
        responses: (images, neurons) float64 trial-averaged responses.
        repeats: (images, neurons, repeats) float64 single trials (NaN-padded), or None.
        region, time_window_ms, source: metadata as the user wrote it.
    """

    name: str
    stimuli: tuple[Path, ...]
    responses: np.ndarray
    repeats: np.ndarray | None = None
    region: str = ""
    time_window_ms: tuple[float, float] | None = None
    source: str = ""


def write_neural_dataset(
    root: str | Path,
    *,
    images: list[str | Path],
    responses: np.ndarray,
    repeats: np.ndarray | None = None,
    name: str,
    region: str = "",
    time_window_ms: tuple[float, float] | None = None,
    source: str = "",
) -> Path:
    """Write the folder layout: copy ``images`` into ``stimuli/`` (row order kept in meta.json)."""
    root = Path(root)
    (root / STIMULI).mkdir(parents=True, exist_ok=True)
    names = []
    for i, src in enumerate(images):
        src = Path(src)
        dst = f"{i:06d}_{src.name}"
        shutil.copyfile(src, root / STIMULI / dst)
        names.append(dst)
    np.save(root / RESPONSES, np.asarray(responses, dtype=np.float32))
    if repeats is not None:
        np.save(root / REPEATS, np.asarray(repeats, dtype=np.float32))
    meta = {
        "name": name,
        "region": region,
        "time_window_ms": list(time_window_ms) if time_window_ms else None,
        "source": source,
        "stimuli": names,
    }
    (root / META).write_text(json.dumps(meta, indent=1))
    load_neural_dataset(root)  # validate what was written
    return root


def load_neural_dataset(root: str | Path) -> NeuralDataset:
    """Read and validate a neural dataset folder.

    Raises:
        NeuralDataError: naming the missing or inconsistent file and how to fix it.
    """
    root = Path(root)
    if not root.is_dir():
        raise NeuralDataError(f"neural dataset {root} is not a folder (see bioscale.eval.neural)")
    meta_path = root / META
    if not meta_path.is_file():
        raise NeuralDataError(
            f"{meta_path} is missing: write a JSON file with "
            '{"name": ..., "region": ..., "time_window_ms": [start, end], "source": ...}'
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise NeuralDataError(f"{meta_path} is not valid JSON: {err}") from err
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise NeuralDataError(f"{meta_path}: unknown key(s) {unknown}; known: {list(META_KEYS)}")
    name = str(meta.get("name") or root.name)
    if "/" in name:
        raise NeuralDataError(f"{meta_path}: name {name!r} must not contain '/' (metric keys)")

    stim_dir = root / STIMULI
    if not stim_dir.is_dir():
        raise NeuralDataError(
            f"{stim_dir} is missing: put the images shown to the animal there (PNG or JPEG)"
        )
    if meta.get("stimuli") is not None:
        stimuli = tuple(stim_dir / s for s in meta["stimuli"])
        absent = [str(p) for p in stimuli if not p.is_file()]
        if absent:
            raise NeuralDataError(
                f"{meta_path} lists stimuli missing from {stim_dir}: {absent[:3]}"
            )
    else:
        stimuli = tuple(sorted(p for p in stim_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS))
    if not stimuli:
        raise NeuralDataError(f"{stim_dir} holds no PNG/JPEG images")

    resp_path = root / RESPONSES
    if not resp_path.is_file():
        raise NeuralDataError(
            f"{resp_path} is missing: save the trial-averaged responses as a float array of "
            f"shape (images, neurons) with numpy.save, rows in the order of {stim_dir}"
        )
    responses = np.load(resp_path, allow_pickle=False).astype(np.float64)
    if responses.ndim != 2 or responses.shape[0] != len(stimuli):
        raise NeuralDataError(
            f"{resp_path} has shape {responses.shape}; expected ({len(stimuli)}, neurons): "
            f"one row per image in {stim_dir}"
        )
    if not np.isfinite(responses).all():
        raise NeuralDataError(
            f"{resp_path} holds NaN or inf: drop those neurons or images before scoring"
        )
    repeats = None
    rep_path = root / REPEATS
    if rep_path.is_file():
        repeats = np.load(rep_path, allow_pickle=False).astype(np.float64)
        if repeats.ndim != 3 or repeats.shape[:2] != responses.shape:
            raise NeuralDataError(
                f"{rep_path} has shape {repeats.shape}; expected {(*responses.shape, 'repeats')} "
                "(NaN where an image had fewer repeats)"
            )
    window = meta.get("time_window_ms")
    return NeuralDataset(
        name=name,
        stimuli=stimuli,
        responses=responses,
        repeats=repeats,
        region=str(meta.get("region") or ""),
        time_window_ms=tuple(float(t) for t in window) if window else None,
        source=str(meta.get("source") or ""),
    )


def load_stimuli(dataset: NeuralDataset, size: int) -> np.ndarray:
    """(images, 3, size, size) float32 in [0, 1], in row order."""
    from bioscale.data.natural import load_image

    return np.stack([load_image(str(p), size) for p in dataset.stimuli])


# ---------------------------------------------------------------------- Brain-Score assemblies


def assembly_arrays(
    assembly, *, stimulus_coord: str = "stimulus_id"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A Brain-Score ``NeuroidAssembly`` (xarray DataArray with dims ``presentation`` × ``neuroid``
    [× ``time_bin``]) → (stimulus ids, (images, neurons) means, (images, neurons, repeats) trials).

    Several time bins are averaged (select the window first with ``assembly.sel``); presentations
    are grouped by ``stimulus_coord``, repeats NaN-padded to the largest count."""
    if "time_bin" in assembly.dims:
        assembly = assembly.mean("time_bin")
    missing = [d for d in ("presentation", "neuroid") if d not in assembly.dims]
    if missing:
        raise NeuralDataError(
            f"assembly lacks dimension(s) {missing}; got {assembly.dims} (Brain-Score layout)"
        )
    values = assembly.transpose("presentation", "neuroid").values.astype(np.float64)
    ids = [str(s) for s in assembly[stimulus_coord].values]
    order = sorted(set(ids))
    rows: dict[str, list[int]] = {s: [] for s in order}
    for i, s in enumerate(ids):
        rows[s].append(i)
    n_rep = max(len(r) for r in rows.values())
    repeats = np.full((len(order), values.shape[1], n_rep), np.nan)
    for j, s in enumerate(order):
        repeats[j, :, : len(rows[s])] = values[rows[s]].T
    return order, np.nanmean(repeats, axis=2), repeats


def import_assembly(
    netcdf: str | Path,
    stimuli_dir: str | Path,
    out: str | Path,
    *,
    name: str,
    region: str = "",
    time_window_ms: tuple[float, float] | None = None,
    source: str = "",
    stimulus_coord: str = "stimulus_id",
) -> Path:
    """Convert a Brain-Score NetCDF assembly plus its stimulus images into a neural dataset folder.

    Needs ``xarray`` and a NetCDF engine (``pip install xarray netCDF4``). Each stimulus id must
    have an image ``stimuli_dir/<id>.<png|jpg|jpeg>`` (unpack Brain-Score's stimulus-set zip
    there). ``time_window_ms`` selects time bins whose start lies within it before averaging."""
    try:
        import xarray
    except ImportError as err:
        raise NeuralDataError(
            "importing a NetCDF assembly needs xarray: pip install xarray netCDF4 — or write "
            "the folder layout (stimuli/, responses.npy, repeats.npy, meta.json) yourself"
        ) from err
    ds = xarray.open_dataset(netcdf)
    names = list(ds.data_vars)
    if not names:
        raise NeuralDataError(f"{netcdf} holds no data variable")
    assembly = ds[names[0]]
    if time_window_ms is not None and "time_bin_start" in assembly.coords:
        start = assembly["time_bin_start"]
        assembly = assembly.where(
            (start >= time_window_ms[0]) & (start < time_window_ms[1]), drop=True
        )
    ids, responses, repeats = assembly_arrays(assembly, stimulus_coord=stimulus_coord)
    stimuli_dir = Path(stimuli_dir)
    images = []
    for sid in ids:
        found = [stimuli_dir / f"{sid}{ext}" for ext in IMAGE_EXTS]
        found = [p for p in found if p.is_file()]
        if not found:
            raise NeuralDataError(
                f"no image for stimulus {sid!r} in {stimuli_dir} (expected {sid}.png or .jpg)"
            )
        images.append(found[0])
    return write_neural_dataset(
        out,
        images=images,
        responses=responses,
        repeats=repeats if repeats.shape[2] > 1 else None,
        name=name,
        region=region,
        time_window_ms=time_window_ms,
        source=source,
    )


# ------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True, kw_only=True)
class NeuralConfig:
    """Predictivity settings.

    Attributes:
        n_components: PLS components (published: 25); lowered per fit to what the data allow.
        folds: K of the K-fold split by image.
        seed: seed of the fold permutation and the ceiling's halvings.
        ceiling_splits: random split-halves averaged for the ceiling.
        image_size: stimulus side in pixels when a model is run on the stimuli.
    """

    n_components: int = 25
    folds: int = 5
    seed: int = 0
    ceiling_splits: int = 10
    image_size: int = 64

    def __post_init__(self) -> None:
        if self.n_components < 1:
            raise ConfigError(f"neural.n_components must be >= 1, got {self.n_components}")
        if self.folds < 3:
            raise ConfigError(
                f"neural.folds must be >= 3 (test, validation, fit), got {self.folds}"
            )
        if self.ceiling_splits < 1:
            raise ConfigError("neural.ceiling_splits must be >= 1")


@dataclass(frozen=True)
class NeuralScore:
    """Metrics (frozen names, floats) plus what MLflow metrics cannot hold.

    Attributes:
        metrics: ``neural/<name>/{score, raw, ceiling, explained, best_layer, n_images,
            n_neurons, seconds}`` (``ceiling``, ``explained`` only with repeats);
            ``best_layer`` is the index (in the order given) of the layer most outer folds chose.
        best_layer_name: that layer's name.
        layer_validation: per layer, mean over outer folds of its validation median r.
        per_neuron_r: (neurons,) held-out Pearson r.
    """

    metrics: dict[str, float]
    best_layer_name: str
    layer_validation: dict[str, float] = field(default_factory=dict)
    per_neuron_r: np.ndarray = field(default_factory=lambda: np.zeros(0))


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each column of (n, k) ``a`` with the same column of ``b`` (0 where constant)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=0) / den
    return np.where(den > 0, r, 0.0)


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """(n,) fold index of each image: a seeded permutation dealt round-robin into ``folds``."""
    if n < folds:
        raise NeuralDataError(f"{n} images cannot make {folds} folds")
    ids = np.empty(n, dtype=np.int64)
    ids[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return ids


def numerical_rank(x: np.ndarray) -> int:
    """Rank of the column-centred (n, d) matrix, from the eigenvalues of its (n, n) Gram matrix."""
    xc = x - x.mean(axis=0)
    eig = np.linalg.eigvalsh(xc @ xc.T)
    if eig[-1] <= 0:
        return 0
    return int((eig > eig[-1] * max(xc.shape) * 1e-10).sum())


def pls_predict(
    x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray, n_components: int
) -> np.ndarray:
    """Fit scikit-learn PLS (``scale=False``, as Brain-Score) and predict (m, neurons).

    The component count is capped at the numerical rank of the centred activations: components
    past the rank are fit to rounding noise and wreck the predictions (e.g. a layer of 512 units
    spanning a 6-dimensional subspace)."""
    from sklearn.cross_decomposition import PLSRegression

    k = max(1, min(n_components, numerical_rank(x_fit)))
    pls = PLSRegression(n_components=k, scale=False, max_iter=500)
    pls.fit(x_fit, y_fit)
    return pls.predict(x_new).reshape(len(x_new), -1)


def split_half_ceiling(repeats: np.ndarray, *, splits: int = 10, seed: int = 0) -> np.ndarray:
    """Per-neuron split-half reliability, Spearman–Brown corrected: (neurons,).

    For each of ``splits`` random halvings of every image's available (non-NaN) repeats, the
    Pearson r across images between the two half-means, corrected to the full repeat count with
    r_SB = 2r / (1 + r); averaged over halvings. Images with fewer than 2 repeats are left out."""
    n_neur = repeats.shape[1]
    valid = ~np.isnan(repeats)
    counts = valid.sum(axis=2)  # (images, neurons)
    rows = (counts >= 2).all(axis=1)
    if rows.sum() < 3:
        raise NeuralDataError("the noise ceiling needs >= 3 images with >= 2 repeats each")
    rep = repeats[rows]
    rng = np.random.default_rng(seed)
    out = np.zeros(n_neur)
    for _ in range(splits):
        # random keys, NaN trials last; the first half of the valid trials → half A
        keys = np.where(~np.isnan(rep), rng.random(rep.shape), np.inf)
        order = np.argsort(keys, axis=2)
        ranked = np.take_along_axis(rep, order, axis=2)
        c = counts[rows][:, :, None]
        pos = np.arange(rep.shape[2])[None, None, :]
        in_a = pos < c // 2
        in_b = (pos >= c // 2) & (pos < c)
        a = np.where(in_a, ranked, 0.0).sum(axis=2) / np.maximum(in_a.sum(axis=2), 1)
        b = np.where(in_b, ranked, 0.0).sum(axis=2) / np.maximum(in_b.sum(axis=2), 1)
        r = pearson_columns(a, b)
        out += 2 * r / np.maximum(1 + r, 1e-12)  # Spearman–Brown to the full repeat count
    return np.nan_to_num(out / splits)


def score_layers(
    features: Mapping[str, np.ndarray],
    responses: np.ndarray,
    *,
    name: str,
    cfg: NeuralConfig | None = None,
    repeats: np.ndarray | None = None,
) -> NeuralScore:
    """Cross-validated PLS predictivity of each layer; the layer is chosen on validation folds.

    Args:
        features: ``{layer: (images, d)}`` activations in row order (layers in depth order).
        responses: (images, neurons) trial-averaged responses.
        name: dataset name in the metric keys.
        cfg: settings (published defaults when None).
        repeats: (images, neurons, repeats) NaN-padded trials for the noise ceiling.
    """
    cfg = cfg or NeuralConfig()
    start = time.perf_counter()
    if not features:
        raise ValueError("score_layers needs at least one layer of features")
    layers = list(features)
    n = responses.shape[0]
    xs = {k: np.asarray(v, dtype=np.float64).reshape(len(v), -1) for k, v in features.items()}
    bad = {k: v.shape[0] for k, v in xs.items() if v.shape[0] != n}
    if bad:
        raise ValueError(f"layers with a row count other than the {n} images: {bad}")
    y = np.asarray(responses, dtype=np.float64)
    folds = fold_ids(n, cfg.folds, cfg.seed)
    pred = np.zeros_like(y)
    chosen: list[int] = []
    val_scores = np.zeros((cfg.folds, len(layers)))
    for k in range(cfg.folds):
        test = folds == k
        val_fold = (k + 1) % cfg.folds
        val, fit = folds == val_fold, (~test) & (folds != val_fold)
        for j, layer in enumerate(layers):
            p = pls_predict(xs[layer][fit], y[fit], xs[layer][val], cfg.n_components)
            val_scores[k, j] = np.median(pearson_columns(p, y[val]))
        best = int(np.argmax(val_scores[k]))
        chosen.append(best)
        train = ~test
        pred[test] = pls_predict(
            xs[layers[best]][train], y[train], xs[layers[best]][test], cfg.n_components
        )
    per_neuron = pearson_columns(pred, y)
    raw = float(np.median(per_neuron))
    best_idx = int(np.bincount(chosen, minlength=len(layers)).argmax())
    prefix = f"neural/{name}"
    metrics = {
        f"{prefix}/raw": raw,
        f"{prefix}/best_layer": float(best_idx),
        f"{prefix}/n_images": float(n),
        f"{prefix}/n_neurons": float(y.shape[1]),
    }
    if repeats is not None:
        ceiling = float(
            np.median(split_half_ceiling(repeats, splits=cfg.ceiling_splits, seed=cfg.seed))
        )
        metrics[f"{prefix}/ceiling"] = ceiling
        metrics[f"{prefix}/score"] = raw / ceiling if ceiling > 0 else float("nan")
        metrics[f"{prefix}/explained"] = raw / np.sqrt(ceiling) if ceiling > 0 else float("nan")
    else:
        metrics[f"{prefix}/score"] = raw
    metrics[f"{prefix}/seconds"] = time.perf_counter() - start
    return NeuralScore(
        metrics=metrics,
        best_layer_name=layers[best_idx],
        layer_validation={layer: float(val_scores[:, j].mean()) for j, layer in enumerate(layers)},
        per_neuron_r=per_neuron,
    )


def collect_layers(
    extract: Callable, images: np.ndarray, *, batch_size: int = 64, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """Run ``extract`` ((B, C, H, W) tensor → ``{layer: (B, ...)}`` tensors, no grad) over
    (n, C, H, W) images; returns ``{layer: (n, d)}`` float32 flattened activations."""
    import torch

    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.as_tensor(images[i : i + batch_size], device=device)
            for layer, act in extract(x).items():
                parts.setdefault(layer, []).append(act.reshape(len(x), -1).float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def score_model(
    extract: Callable,
    dataset: NeuralDataset,
    *,
    cfg: NeuralConfig | None = None,
    device: str = "cpu",
) -> NeuralScore:
    """Score a model on a neural dataset: load the stimuli at ``cfg.image_size``, collect
    ``extract``'s layers, and run ``score_layers`` (with the ceiling when repeats exist)."""
    cfg = cfg or NeuralConfig()
    start = time.perf_counter()
    images = load_stimuli(dataset, cfg.image_size)
    feats = collect_layers(extract, images, device=device)
    result = score_layers(
        feats, dataset.responses, name=dataset.name, cfg=cfg, repeats=dataset.repeats
    )
    result.metrics[f"neural/{dataset.name}/seconds"] = time.perf_counter() - start
    return result
