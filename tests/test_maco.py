"""MACO: only the phase moves (the magnitude spectrum stays the data's), a run raises its target
logit, and it works on RGB and 5-channel Cell Painting models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bioscale.eval.maco import (
    MacoConfig,
    composite,
    logit_objective,
    maco,
    mean_amplitude_spectrum,
    phase_to_image,
)


def _tiny(chans: int, seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(chans, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 4),
    ).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@pytest.mark.parametrize("chans", [3, 5])
def test_maco_raises_the_target_logit(chans):
    data = np.random.default_rng(0).random((8, chans, 24, 24)).astype(np.float32)
    cfg = MacoConfig(steps=40, image_size=32, crops=4, box_size=(0.5, 0.7))
    mag = mean_amplitude_spectrum(data, cfg.image_size)
    assert mag.shape == (chans, 32, 17)
    net = _tiny(chans)
    img, alpha, m = maco(logit_objective(net, 2), mag, input_size=16, cfg=cfg)
    assert img.shape == alpha.shape == (chans, 32, 32)
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert (alpha >= 0).all() and alpha.sum() > 0
    # the visualisation drives the target logit past every data image's
    with torch.no_grad():
        data_logits = net(torch.nn.functional.interpolate(torch.as_tensor(data), size=16))[:, 2]
    assert m["maco/objective_end"] > m["maco/objective_start"]
    assert m["maco/objective_end"] > float(data_logits.max())
    assert composite(img).shape == (32, 32, 3)


def test_the_image_keeps_the_magnitude_it_is_given():
    # before the sigmoid, the image's amplitude spectrum is the template's up to one scale
    mag = torch.rand(3, 16, 9) + 0.1
    phase = torch.randn(3, 16, 9)
    logit_img = torch.logit(phase_to_image(mag, phase, (0.0, 1.0)).clamp(1e-6, 1 - 1e-6))
    spec = torch.fft.rfft2(logit_img).abs()
    inner = (slice(None), slice(1, 16), slice(1, 8))  # bins irfft2 keeps as given (not DC/Nyquist)
    ratio = spec[inner] / mag[inner]
    assert float(ratio.std() / ratio.mean()) < 1e-3


def test_composite_mixes_dyes():
    img = np.zeros((5, 4, 4))
    img[0, 0, 0] = 1.0  # DNA → blue
    img[4, 1, 1] = 1.0  # Mito → red
    rgb = composite(img)
    assert rgb[0, 0, 2] > 0 and rgb[0, 0, 0] == 0
    assert rgb[1, 1, 0] > 0 and rgb[1, 1, 2] == 0
    with pytest.raises(ValueError, match="dye"):
        composite(img, dyes=("DNA", "ER", "RNA", "AGP", "Golgi"))


def test_config_and_spectrum_shape_are_checked():
    from bioscale.errors import ConfigError

    with pytest.raises(ConfigError, match="box_size"):
        MacoConfig(box_size=(0.3, 0.2))
    with pytest.raises(ValueError, match="mean_amplitude_spectrum"):
        maco(lambda x: x.sum(), np.ones((3, 16, 9)), input_size=8, cfg=MacoConfig(image_size=32))
