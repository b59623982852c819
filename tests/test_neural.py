"""Neural predictivity: the folder format, the noise ceiling and cross-validated PLS scores on
synthetic recordings whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bioscale.eval.neural import (
    NeuralConfig,
    NeuralDataError,
    assembly_arrays,
    fold_ids,
    load_neural_dataset,
    score_layers,
    score_model,
    split_half_ceiling,
    write_neural_dataset,
)

CFG = NeuralConfig(n_components=8, folds=5, seed=0, ceiling_splits=5)


def _recording(n=80, neurons=12, latent=6, reps=6, noise=0.0, seed=0):
    """Latent z → responses z·W; trials add Gaussian noise (σ = ``noise``); a linear layer of z,
    and a layer of pure noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, latent))
    signal = z @ rng.normal(size=(latent, neurons)) / np.sqrt(latent)
    trials = signal[:, :, None] + noise * rng.normal(size=(n, neurons, reps))
    features = {
        "noise": rng.normal(size=(n, 40)),
        "good": z @ rng.normal(size=(latent, 30)),
    }
    return features, trials.mean(axis=2), trials


def test_identical_repeats_reach_the_ceiling():
    feats, resp, trials = _recording(noise=0.0)
    out = score_layers(feats, resp, name="toy", cfg=CFG, repeats=trials)
    m = out.metrics
    assert m["neural/toy/ceiling"] == pytest.approx(1.0, abs=1e-6)
    assert m["neural/toy/raw"] > 0.98
    assert m["neural/toy/score"] == pytest.approx(m["neural/toy/raw"] / m["neural/toy/ceiling"])
    assert out.best_layer_name == "good" and m["neural/toy/best_layer"] == 1.0
    assert out.layer_validation["good"] > out.layer_validation["noise"]
    assert m["neural/toy/n_images"] == 80 and m["neural/toy/n_neurons"] == 12
    assert m["neural/toy/seconds"] > 0


def test_noisy_recordings_limit_a_perfect_model_to_the_root_of_the_ceiling():
    # a model with the noise-free signal can reach at most r = √reliability against noisy means
    feats, resp, trials = _recording(n=300, noise=1.5, reps=6, seed=1)
    m = score_layers({"good": feats["good"]}, resp, name="toy", cfg=CFG, repeats=trials).metrics
    assert 0.4 < m["neural/toy/ceiling"] < 0.9
    assert m["neural/toy/raw"] == pytest.approx(np.sqrt(m["neural/toy/ceiling"]), abs=0.06)
    # raw / ceiling overshoots 1 for this perfect model; raw / √ceiling reads ≈ 1
    assert m["neural/toy/score"] > 1.05
    assert m["neural/toy/explained"] == pytest.approx(1.0, abs=0.08)


def test_shuffled_responses_score_near_zero():
    feats, resp, _ = _recording(n=120, noise=0.0, seed=2)
    shuffled = resp[np.random.default_rng(3).permutation(len(resp))]
    m = score_layers(feats, shuffled, name="shuf", cfg=CFG).metrics
    assert abs(m["neural/shuf/raw"]) < 0.15
    assert "neural/shuf/ceiling" not in m  # no repeats, no ceiling: score is the raw r
    assert "neural/shuf/explained" not in m
    assert m["neural/shuf/score"] == m["neural/shuf/raw"]


def test_split_half_ceiling_matches_the_analytic_reliability():
    # signal variance 1, trial noise σ² = 2, R = 4 repeats → reliability 1 / (1 + σ²/R) = 2/3
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(2000, 5))
    trials = signal[:, :, None] + np.sqrt(2.0) * rng.normal(size=(2000, 5, 4))
    ceil = split_half_ceiling(trials, splits=4, seed=0)
    assert ceil == pytest.approx(np.full(5, 2 / 3), abs=0.04)


def test_ceiling_ignores_nan_padding():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(500, 3))
    trials = signal[:, :, None] + rng.normal(size=(500, 3, 6))
    padded = trials.copy()
    padded[::2, :, 4:] = np.nan  # half the images have 4 repeats, the rest 6
    ceil = split_half_ceiling(padded, splits=4)
    assert np.isfinite(ceil).all() and (ceil > 0.6).all()


def test_folds_are_balanced_and_seeded():
    a, b = fold_ids(23, 5, 7), fold_ids(23, 5, 7)
    assert (a == b).all()
    assert sorted(np.bincount(a)) == [4, 4, 5, 5, 5]
    assert not (fold_ids(23, 5, 8) == a).all()


def _write(tmp_path, n=30, neurons=4, reps=True):
    from PIL import Image

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for i in range(n):
        p = src / f"img{i:03d}.png"
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    trials = rng.normal(size=(n, neurons, 3))
    return write_neural_dataset(
        tmp_path / "ds",
        images=paths,
        responses=trials.mean(axis=2),
        repeats=trials if reps else None,
        name="toyv4",
        region="V4",
        time_window_ms=(70, 170),
        source="synthetic",
    )


def test_folder_roundtrip_and_model_scoring(tmp_path):
    import torch

    root = _write(tmp_path)
    ds = load_neural_dataset(root)
    assert ds.name == "toyv4" and ds.region == "V4" and ds.time_window_ms == (70.0, 170.0)
    assert ds.responses.shape == (30, 4) and ds.repeats.shape == (30, 4, 3)

    conv = torch.nn.Conv2d(3, 4, 3, stride=2)

    def extract(x):
        h = conv(x)
        return {"conv": h, "pool": h.mean(dim=(2, 3))}

    out = score_model(extract, ds, cfg=NeuralConfig(n_components=3, image_size=16))
    assert set(out.layer_validation) == {"conv", "pool"}
    assert {"neural/toyv4/score", "neural/toyv4/ceiling", "neural/toyv4/best_layer"} <= set(
        out.metrics
    )
    # random responses: nothing to predict
    assert abs(out.metrics["neural/toyv4/raw"]) < 0.6


def test_reader_errors_name_the_missing_file(tmp_path):
    root = _write(tmp_path, reps=False)
    (root / "responses.npy").unlink()
    with pytest.raises(NeuralDataError, match=r"responses\.npy is missing.*numpy\.save"):
        load_neural_dataset(root)
    np.save(root / "responses.npy", np.zeros((29, 4)))
    with pytest.raises(NeuralDataError, match=r"shape \(29, 4\); expected \(30, neurons\)"):
        load_neural_dataset(root)
    np.save(root / "responses.npy", np.zeros((30, 4)))
    np.save(root / "repeats.npy", np.zeros((30, 5, 2)))
    with pytest.raises(NeuralDataError, match=r"repeats\.npy has shape"):
        load_neural_dataset(root)
    (root / "repeats.npy").unlink()
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "regoin": "IT"}))
    with pytest.raises(NeuralDataError, match="regoin"):
        load_neural_dataset(root)
    (root / "meta.json").unlink()
    with pytest.raises(NeuralDataError, match=r"meta\.json is missing"):
        load_neural_dataset(root)


def test_config_rejects_too_few_folds():
    from bioscale.errors import ConfigError

    with pytest.raises(ConfigError, match="folds"):
        NeuralConfig(folds=2)


def test_brainscore_assembly_groups_repeats():
    xarray = pytest.importorskip("xarray")
    values = np.arange(5 * 2, dtype=float).reshape(5, 2)
    asm = xarray.DataArray(
        values,
        dims=("presentation", "neuroid"),
        coords={"stimulus_id": ("presentation", ["b", "a", "b", "a", "b"])},
    )
    ids, mean, reps = assembly_arrays(asm)
    assert ids == ["a", "b"]
    assert reps.shape == (2, 2, 3) and np.isnan(reps[0, :, 2]).all()
    assert mean[0].tolist() == [(2 + 6) / 2, (3 + 7) / 2]
