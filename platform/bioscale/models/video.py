"""Video model ladders for FeatureTracker-style tracking (arXiv 2410.02094): ``cvrnn`` and ``r3d``.

Inputs are ``(T, C, H, W)`` float32 videos in [0, 1] per sample (FeatureTracker: 32 frames of
32×32 RGB). Backbones return ``(B, embed_dim)`` embeddings and set ``aux_terms`` (named scalar loss
terms) after every forward; heads come from the objective.

- ``cvrnn:<size>``: the paper's complex-valued recurrent network (``CVInT``: a recurrent
  excitatory/inhibitory cell whose excitation is gated by a complex-valued attention pathway, one
  step per frame) with its synchrony loss as ``aux_terms["synchrony"]``. That term needs the
  ground-truth groups of every frame (``forward(x, masks=...)``, masks (B, T, 3, H, W): markers,
  distractors, target, the published mask frames; the backbone's ``aux_inputs`` names the batch
  keys it reads); without them ``aux_terms`` is empty. ``cvrnn:paper`` is the
  published configuration (32 hidden channels, 7×7 E/I kernels: ``--dimensions 32
  --fb_kernel_size 7`` of the paper's training script, one recurrent step per frame); the smaller
  rungs shrink both.
- ``r3d:<size>``: 3D ResNets (Tran et al. 2018) from torchvision's video-resnet blocks, the
  standard video baseline the paper compares against (its ``r3d`` is torchvision's ``r3d_18``).
  ``r3d:r18`` is that trunk; smaller rungs scale the stage widths (one block per stage below m).
  Their three stride-2 stages take 32×32×32 videos to 4×2×2 before pooling.

Importing this module is cheap: torch loads only when a rung is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from bioscale.models.ladder import RUNGS


def _video_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(input_shape) != 4:
        raise ValueError(
            f"rung {name} needs video inputs (T, C, H, W), got shape {tuple(input_shape)}"
        )
    t, c, h, w = input_shape
    return t, c, h, w


@dataclass(frozen=True, kw_only=True)
class CVRNNRung:
    """One size of the CV-RNN.

    Attributes:
        name: rung name (``cvrnn:paper``).
        hidden: channels of every recurrent map (the paper's ``dimensions``).
        kernel_size: spatial size of the excitatory and inhibitory kernels (``fb_kernel_size``).
    """

    name: str
    hidden: int
    kernel_size: int
    family: str = "cvrnn"

    def build(self, input_shape: tuple[int, ...]):
        """Backbone for (T, 3, H, W) videos; one recurrent step per frame; ``embed_dim`` = 1."""
        _, chans, _, _ = _video_shape(self.name, input_shape)
        if chans != 3:
            raise ValueError(
                f"rung {self.name} needs RGB videos (T, 3, H, W): its readout reads the end "
                f"marker from the blue channel; got {chans} channels"
            )
        from bioscale.models.video_nets import CVRNN

        return CVRNN(hidden=self.hidden, kernel_size=self.kernel_size, in_channels=chans)


@dataclass(frozen=True, kw_only=True)
class R3DRung:
    """One size of the 3D ResNet.

    Attributes:
        name: rung name (``r3d:r18``).
        widths: channels of the four stages (the stem has the first stage's width).
        blocks: basic blocks per stage.
    """

    name: str
    widths: tuple[int, int, int, int]
    blocks: tuple[int, int, int, int]
    family: str = "r3d"

    def build(self, input_shape: tuple[int, ...]):
        """Backbone for (T, C, H, W) videos; ``embed_dim`` = the last stage's width."""
        _, chans, _, _ = _video_shape(self.name, input_shape)
        from bioscale.models.video_nets import VideoResNet3D

        return VideoResNet3D(widths=self.widths, blocks=self.blocks, in_channels=chans)


#: CV-RNN sizes: (hidden channels, E/I kernel size); ``paper`` as published.
CVRNN_SIZES = {
    "debug": (4, 3),
    "xs": (4, 5),
    "s": (8, 7),
    "m": (16, 7),
    "paper": (32, 7),
}
#: 3D ResNet sizes: (stage widths, blocks per stage); ``r18`` = torchvision's ``r3d_18``.
R3D_SIZES = {
    "debug": ((4, 8, 16, 32), (1, 1, 1, 1)),
    "xs": ((8, 16, 32, 64), (1, 1, 1, 1)),
    "s": ((16, 32, 64, 128), (1, 1, 1, 1)),
    "m": ((32, 64, 128, 256), (2, 2, 2, 2)),
    "r18": ((64, 128, 256, 512), (2, 2, 2, 2)),
}

for _size, (_hidden, _kernel) in CVRNN_SIZES.items():
    RUNGS.register(
        f"cvrnn:{_size}", CVRNNRung(name=f"cvrnn:{_size}", hidden=_hidden, kernel_size=_kernel)
    )
for _size, (_widths, _blocks) in R3D_SIZES.items():
    RUNGS.register(f"r3d:{_size}", R3DRung(name=f"r3d:{_size}", widths=_widths, blocks=_blocks))
