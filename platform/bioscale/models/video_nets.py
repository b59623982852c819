"""Video backbones as torch modules (see ``bioscale.models.video`` for the ladders).

Both take ``(B, T, C, H, W)`` float32 videos in [0, 1] and return ``(B, embed_dim)`` embeddings;
after every forward they set ``aux_terms`` (named scalar loss terms the objective adds to its loss).

``CVRNN`` is the complex-valued recurrent network of FeatureTracker (arXiv 2410.02094; MIT code at
S4b1n3/feature_tracker, ``featuretracker_models/models/CVInT.py`` class ``CVInT`` and its cell
``rCell``, complex layers from ``featuretracker_models/utils/complex_functions.py``). Complex values
are pairs of real tensors ``(re, im)``; the paper's complex layers apply *real* kernels to the real
part, the imaginary part and the magnitude, so every complex convolution here is a real convolution
on a stacked batch, which ``bioscale.models.flops`` counts at its true cost.

``VideoResNet3D`` is the 3D ResNet of Tran et al. 2018 built from torchvision's video-resnet blocks
(``BasicBlock`` + ``Conv3DSimple``) at any stage widths; widths (64, 128, 256, 512) with two blocks
per stage is torchvision's ``r3d_18`` trunk, parameter for parameter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init
from torchvision.models.video.resnet import BasicBlock, Conv3DSimple

#: Below this a real or imaginary part is replaced by it before taking an angle, so the angle's
#: gradient stays finite (``complex_functions.stable_angle``).
_ANGLE_EPS = 1e-7
#: Added to |z|² before the square root: |z|'s gradient is finite at z = 0 (torch's complex
#: ``abs``, which the paper uses, returns 0 there); it moves |z| by at most 1e-7.
_ABS_EPS2 = 1e-14
#: Added to every group's summed cosines and sines in the synchrony loss, as the paper's code does.
_SYNC_EPS = 1e-6

Complex = tuple[torch.Tensor, torch.Tensor]


def _abs(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(re * re + im * im + _ABS_EPS2)


def _stable(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v.abs() < _ANGLE_EPS, _ANGLE_EPS, v)


def stable_angle(z: Complex) -> torch.Tensor:
    """arg z in (−π, π], with parts of magnitude < 1e-7 set to 1e-7 first (the paper's
    ``stable_angle``)."""
    return torch.atan2(_stable(z[1]), _stable(z[0]))


def _polar(magnitude: torch.Tensor, z: Complex) -> Complex:
    """``magnitude · exp(i · stable_angle(z))``."""
    re, im = _stable(z[0]), _stable(z[1])
    scale = magnitude / torch.sqrt(re * re + im * im)
    return re * scale, im * scale


def _cadd(a: Complex, b: Complex) -> Complex:
    return a[0] + b[0], a[1] + b[1]


class ComplexConv2d(nn.Module):
    """The paper's complex convolution (``ComplexConvolution2D`` with ``apply_layer``): one real
    kernel W, ψ = W∗Re z + i·W∗Im z, magnitude ½|ψ| + ½·W∗|z|, phase arg ψ; the magnitude then
    goes through InstanceNorm (affine) and ReLU. No bias (the paper's ``biases=False``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, z: Complex) -> Complex:
        re, im = z
        n = re.shape[0]
        # the three real convolutions as one call on a (3B, ...) batch: same FLOPs, one kernel
        psi_re, psi_im, chi = self.conv(torch.cat([re, im, _abs(re, im)])).split(n)
        magnitude = 0.5 * _abs(psi_re, psi_im) + 0.5 * chi
        return _polar(F.relu(self.norm(magnitude)), (psi_re, psi_im))


class RealToComplexConv2d(nn.Module):
    """The paper's ``RealToComplexConvolution2D`` (``apply_layer_from_real``): two real kernels on
    a real input, ψ = W_re∗x + i·W_im∗x; magnitude |ψ| → InstanceNorm (affine) → ReLU, phase
    arg ψ. No bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.out_channels = out_channels
        # W_re and W_im stacked on the output channels: two convolutions in one call
        self.conv = nn.Conv2d(
            in_channels, 2 * out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x: torch.Tensor) -> Complex:
        psi_re, psi_im = self.conv(x).split(self.out_channels, dim=1)
        return _polar(F.relu(self.norm(_abs(psi_re, psi_im))), (psi_re, psi_im))


class CVRNNCell(nn.Module):
    """One recurrent step: the paper's ``rCell`` with ``use_attention=True``.

    A complex attention pathway carries the phases: ff = A_w(x_t) (real → complex),
    h = H(ff + c_{t−1}) (the new complex state c_t), phase_t = arg D(h) (one channel, the map the
    synchrony loss reads), and the attention gate sigmoid(IN(|ff + A_u(e_{t−1}) + h|)) multiplies
    the excitatory state before the E/I update: inhibition
    i_t = (1−g_i)·i + g_i·softplus(x_t − softplus(BN(W_inh∗(a·e)) · (α·i + μ))),
    excitation e_t = (1−g_e)·e + g_e·softplus(BN(W_exc∗i_t) · (κ·i_t + γ)), with 1×1-conv gates
    g_i = σ(U_x x_t + U_i i), g_e = σ(U_i' i + U_e (a·e)). Every map has ``hidden`` channels.
    """

    def __init__(self, hidden: int, kernel_size: int) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.a_w_gate = RealToComplexConv2d(hidden, hidden)
        self.a_u_gate = RealToComplexConv2d(hidden, hidden)
        self.h_gate = ComplexConv2d(hidden, hidden)
        self.decode_gate = ComplexConv2d(hidden, 1)
        self.bn_amp = nn.InstanceNorm2d(hidden, affine=True)
        self.i_w_gate = nn.Conv2d(hidden, hidden, 1)
        self.i_u_gate = nn.Conv2d(hidden, hidden, 1)
        self.e_w_gate = nn.Conv2d(hidden, hidden, 1)
        self.e_u_gate = nn.Conv2d(hidden, hidden, 1)
        self.w_exc = nn.Parameter(torch.empty(hidden, hidden, kernel_size, kernel_size))
        self.w_inh = nn.Parameter(torch.empty(hidden, hidden, kernel_size, kernel_size))
        # (hidden, 1, 1) per-channel E/I mixing parameters
        self.alpha = nn.Parameter(torch.ones(hidden, 1, 1))
        self.mu = nn.Parameter(torch.zeros(hidden, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(hidden, 1, 1))
        self.kappa = nn.Parameter(torch.ones(hidden, 1, 1))
        # batch statistics at train and test time, as published (track_running_stats=False)
        self.bn_inh = nn.BatchNorm2d(hidden, eps=1e-3, track_running_stats=False)
        self.bn_exc = nn.BatchNorm2d(hidden, eps=1e-3, track_running_stats=False)
        init.orthogonal_(self.w_exc)
        init.orthogonal_(self.w_inh)
        for gate in (self.i_w_gate, self.i_u_gate, self.e_w_gate, self.e_u_gate):
            init.orthogonal_(gate.weight)
            init.constant_(gate.bias, -1.0)
        for bn in (self.bn_inh, self.bn_exc):
            init.constant_(bn.weight, 0.1)

    def forward(
        self,
        x_t: torch.Tensor,
        ff: Complex,
        iw: torch.Tensor,
        cinput: Complex,
        inhibition: torch.Tensor,
        excitation: torch.Tensor,
        decode: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Complex]:
        """One step; ``ff`` = A_w(x_t) and ``iw`` = U_x x_t come precomputed for all frames at
        once (they do not depend on the state). Returns (i_t, e_t, phase_t (B, 1, H, W), c_t);
        phase_t, read only by the synchrony loss, is ``None`` unless ``decode``."""
        hidden = self.h_gate(_cadd(ff, cinput))
        phase = stable_angle(self.decode_gate(hidden)) if decode else None
        att = _cadd(_cadd(ff, self.a_u_gate(excitation)), hidden)
        att_gate = torch.sigmoid(self.bn_amp(_abs(*att)))
        gated_exc = att_gate * excitation

        inh_intx = self.bn_inh(F.conv2d(gated_exc, self.w_inh, padding=self.padding))
        inh_hat = F.softplus(x_t - F.softplus(inh_intx * (self.alpha * inhibition + self.mu)))
        inh_gate = torch.sigmoid(iw + self.i_u_gate(inhibition))
        new_inh = (1 - inh_gate) * inhibition + inh_gate * inh_hat

        exc_gate = torch.sigmoid(self.e_w_gate(inhibition) + self.e_u_gate(gated_exc))
        exc_intx = self.bn_exc(F.conv2d(new_inh, self.w_exc, padding=self.padding))
        exc_hat = F.softplus(exc_intx * (self.kappa * new_inh + self.gamma))
        new_exc = (1 - exc_gate) * excitation + exc_gate * exc_hat
        return new_inh, new_exc, phase, hidden


def synchrony_loss(phase: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The paper's synchrony loss (``complex_functions.synch_loss``) of each frame, batch mean.

    Three groups: background, distractors, target (the marker pixels belong to none). Within each
    group the phases should agree (1 − mean resultant length, averaged over groups); across groups
    the mean phases should spread (Σ_{m=1}^{⌊K/2⌋} |Σ_g exp(i·m·θ_g)|² / (2K·m²)); the sum is
    divided by its upper bound 1 + ½K·Σ_{m=1}^{⌊K/2⌋} 1/m².

    Args:
        phase: (..., 1, H, W) phases in (−π, π] (the cell's decoded phase maps), e.g.
            (B, T, 1, H, W).
        masks: (..., 3, H, W); channel 0 the start/end markers, 1 the distractors, 2 the target
            (nonzero = member), the layout of the published mask frames.

    Returns:
        (...)[1:] — the batch mean (over the first axis) per frame: shape (T,) for (B, T, ...).
    """
    phase = phase + math.pi
    members = masks[..., 1:, :, :] != 0  # (..., 2, H, W) distractors, target
    background = ~(members.any(dim=-3) | (masks[..., 0, :, :] != 0))
    groups = torch.cat([background.unsqueeze(-3), members], dim=-3).to(phase.dtype)  # K = 3
    k = groups.shape[-3]
    size = groups.sum((-2, -1))  # (..., K)
    size = torch.where(size == 0, torch.ones_like(size), size)
    bound = 1 + 0.5 * k * sum(1.0 / m**2 for m in range(1, k // 2 + 1))
    masked = phase * groups
    cos = (groups * torch.cos(masked) + _SYNC_EPS).sum((-2, -1))  # (..., K)
    sin = (groups * torch.sin(masked) + _SYNC_EPS).sum((-2, -1))
    synch = 1 - (torch.sqrt(cos**2 + sin**2) / size).sum(-1) / k
    mean_angles = torch.atan2(sin, cos)
    desynch = sum(
        (torch.cos(m * mean_angles).sum(-1) ** 2 + torch.sin(m * mean_angles).sum(-1) ** 2)
        / (2 * k * m**2)
        for m in range(1, k // 2 + 1)
    )
    return ((synch + desynch) / bound).mean(dim=0)


class CVRNN(nn.Module):
    """The paper's ``CVInT``: (B, T, 3, H, W) videos → (B, 1) readout.

    A (1, 3, 3) Conv3d + softplus drives the cell at every frame; the complex state starts from the
    first frame with uniformly random phases (the paper's default "random phase" start) through a
    complex convolution. After the last frame, Conv(excitation → 1 channel) is stacked with the
    first frame's blue channel (where the frames draw the end marker), a 5×5 conv mixes the two,
    and a spatial mean gives the paper's readout; standardised by a parameter-free BatchNorm it is
    the embedding (width 1), and the paper's final ``Linear(1, 1)`` is the objective's head. ``aux_terms["synchrony"]`` = Σ over frames of ``synchrony_loss`` when the
    forward is given the ground-truth ``masks``, as the paper's training step adds it.
    """

    #: Batch keys beyond ``x`` the forward uses when present (``forward(x, masks=...)``).
    aux_inputs = ("masks",)

    def __init__(self, *, hidden: int, kernel_size: int, in_channels: int = 3) -> None:
        super().__init__()
        self.embed_dim = 1
        self.hidden = hidden
        self.preproc = nn.Conv3d(in_channels, hidden, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.complex_preproc = ComplexConv2d(in_channels, hidden)
        self.cell = CVRNNCell(hidden, kernel_size)
        self.readout_conv = nn.Conv2d(hidden, 1, 3, padding=1)
        self.target_conv = nn.Conv2d(2, 1, 5, padding=2)
        init.zeros_(self.target_conv.bias)
        # standardises the pooled readout (no parameters): head ∘ norm is still an affine map of
        # the paper's readout, but the head's Linear(1, 1) starts at unit-scale inputs (the raw
        # readout varies by ~1e-2 across videos at initialisation, which stalls its training).
        # Batch statistics at test time too, like the cell's BatchNorms (running statistics
        # lag the readout's drift during training)
        self.readout_norm = nn.BatchNorm1d(1, affine=False, track_running_stats=False)
        self.aux_terms: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
        x: (B, T, 3, H, W) float32 in [0, 1].
        masks: optional (B, T, 3, H, W) ground-truth groups (see ``synchrony_loss``).
        """
        b, t, _, h, w = x.shape
        if b < 2:
            raise ValueError(
                "CVRNN needs at least 2 videos per forward: its BatchNorms use the batch's "
                "statistics at test time too (as published); batch the videos"
            )
        drive = F.softplus(self.preproc(x.transpose(1, 2))).transpose(1, 2)  # (B, T, D, H, W)
        frames = drive.reshape(b * t, self.hidden, h, w)
        # state-independent parts of every step, for all frames in one batch
        ff_re, ff_im = self.cell.a_w_gate(frames)
        iw = self.cell.i_w_gate(frames)
        # per-frame views by unbind (one stacking backward, not a zero-filled gradient per frame)
        shape = (b, t, self.hidden, h, w)
        drive_t, ff_re, ff_im, iw = (v.reshape(shape).unbind(1) for v in (drive, ff_re, ff_im, iw))

        first = x[:, 0]  # (B, 3, H, W)
        phases = (torch.rand_like(first) * 2 - 1) * math.pi
        cinput = self.complex_preproc((first * torch.cos(phases), first * torch.sin(phases)))
        inhibition = torch.zeros_like(drive[:, 0])
        excitation = torch.zeros_like(drive[:, 0])
        decode = masks is not None
        phase_maps = []
        for step in range(t):
            inhibition, excitation, phase, cinput = self.cell(
                drive_t[step],
                (ff_re[step], ff_im[step]),
                iw[step],
                cinput,
                inhibition,
                excitation,
                decode=decode,
            )
            phase_maps.append(phase)
        self.aux_terms = {}
        if decode:
            # Σ over frames of the per-frame batch mean, as the paper's training step adds it
            phases = torch.stack(phase_maps, dim=1)  # (B, T, 1, H, W)
            self.aux_terms["synchrony"] = synchrony_loss(phases, masks).sum()
        marker = x[:, 0, 2:3]  # (B, 1, H, W) the first frame's blue channel
        out = self.target_conv(torch.cat([self.readout_conv(excitation), marker], dim=1))
        return self.readout_norm(out.mean(dim=(2, 3)))  # (B, 1)


class VideoResNet3D(nn.Module):
    """3D ResNet trunk (Tran et al. 2018, torchvision ``VideoResNet`` without its ``fc``).

    Stem Conv3d(C → w₀, (3, 7, 7), stride (1, 2, 2)) + BN + ReLU; then one stage per width of
    torchvision ``BasicBlock``s with full 3×3×3 ``Conv3DSimple`` convolutions, stride 2 in time
    and space from the second stage on (1×1×1 projection shortcuts where the shape changes);
    global average pool → (B, widths[-1]). Initialised as torchvision does.
    """

    aux_inputs: tuple[str, ...] = ()

    def __init__(
        self, *, widths: tuple[int, ...], blocks: tuple[int, ...], in_channels: int = 3
    ) -> None:
        super().__init__()
        self.embed_dim = widths[-1]
        self.stem = nn.Sequential(
            nn.Conv3d(
                in_channels,
                widths[0],
                kernel_size=(3, 7, 7),
                stride=(1, 2, 2),
                padding=(1, 3, 3),
                bias=False,
            ),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(inplace=True),
        )
        inplanes = widths[0]
        stages = []
        for i, (width, depth) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != width:
                downsample = nn.Sequential(
                    nn.Conv3d(inplanes, width, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm3d(width),
                )
            layer = [BasicBlock(inplanes, width, Conv3DSimple, stride, downsample)]
            layer += [BasicBlock(width, width, Conv3DSimple) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layer))
            inplanes = width
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.aux_terms: dict[str, torch.Tensor] = {}
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                init.ones_(m.weight)
                init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) → (B, widths[-1])."""
        self.aux_terms = {}
        h = self.layers(self.stem(x.transpose(1, 2)))  # (B, C, T, H, W) for Conv3d
        return self.pool(h).flatten(1)
