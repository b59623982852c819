"""Video ladders (``cvrnn``, ``r3d``): shapes, sizes, the synchrony term, measured FLOPs, and a
CV-RNN that learns FeatureTracker's no-morph condition."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bioscale.data.featuretracker import FeatureTrackerConfig, generate_video
from bioscale.models.flops import training_step_flops
from bioscale.models.ladder import count_parameters, get_rung
from bioscale.models.video import CVRNN_SIZES, R3D_SIZES
from bioscale.models.video_nets import synchrony_loss

pytestmark = pytest.mark.timeout(300)

VIDEO = (32, 3, 32, 32)  # FeatureTracker: 32 frames of 32×32 RGB
LADDERS = {
    "cvrnn": [f"cvrnn:{s}" for s in CVRNN_SIZES],
    "r3d": [f"r3d:{s}" for s in R3D_SIZES],
}


@pytest.fixture(autouse=True)
def one_thread():
    """The recurrent nets run thousands of small ops; one thread avoids two threads synchronising
    on every op (tens of times slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class BCETracking:
    """The tracking loss for these tests: BCE of a Linear head on the embedding + the backbone's
    auxiliary terms (weight 1, the paper's ``loss_coef1``)."""

    def __init__(self, head: torch.nn.Module) -> None:
        self.head = head

    def loss_terms(self, model, batch):
        masks = {"masks": batch["masks"]} if "masks" in batch else {}
        logits = self.head(model(batch["x"], **masks))[:, 0]
        bce = F.binary_cross_entropy_with_logits(logits, batch["y"])
        return {"loss": bce + sum(model.aux_terms.values()), "bce": bce, **model.aux_terms}


def paper_masks(info: dict, shape: tuple[int, ...]) -> np.ndarray:
    """(T, 3, H, W) float32 ground-truth groups drawn as the published mask frames
    (``utils_drawing.plot_frame_mask``): channel 0 the start/end markers' rims, 1 the
    distractors, 2 the target, each object's cells overwriting what lies under them."""
    t, h, w = shape[:3]
    masks = np.zeros((t, 3, h, w), dtype=np.float32)
    box = info["box"]
    rim = np.zeros((box, box), dtype=bool)
    rim[0], rim[-1], rim[:, 0], rim[:, -1] = True, True, True, True
    rows, cols = np.nonzero(rim)
    for marker in (info["start_marker"], info["end_marker"]):
        masks[:, 0, marker[0] + rows, marker[1] + cols] = 1
    positions = np.concatenate([info["target"][None], info["distractors"]])
    for obj in [*range(1, len(positions)), 0]:  # distractors in order, the target last
        f, i, j = np.nonzero(info["shapes"][obj])
        r, c = positions[obj, f, 0] + i, positions[obj, f, 1] + j
        masks[f, :, r, c] = 0
        masks[f, 2 if obj == 0 else 1, r, c] = 1
    return masks


def videos(n: int, seed: int, cfg: FeatureTrackerConfig):
    """n no-morph videos, alternately positive and negative: x (n, T, 3, H, W) in [0, 1],
    masks (n, T, 3, H, W), labels (n,)."""
    rng = np.random.default_rng(seed)
    xs, ms, ys = [], [], []
    for i in range(n):
        frames, info = generate_video(rng, shape="none", color="none", positive=i % 2 == 0, cfg=cfg)
        xs.append(frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        ms.append(paper_masks(info, frames.shape))
        ys.append(info["label"])
    return (
        torch.from_numpy(np.stack(xs)),
        torch.from_numpy(np.stack(ms)),
        torch.tensor(ys, dtype=torch.float32),
    )


@pytest.mark.parametrize("family", sorted(LADDERS))
def test_every_rung_embeds_videos_and_N_grows(family):
    torch.manual_seed(0)
    sizes = []
    for name in LADDERS[family]:
        rung = get_rung(name)
        assert rung.family == family
        net = rung.build(VIDEO).eval()
        with torch.no_grad():
            emb = net(torch.rand(2, *VIDEO))
        assert emb.shape == (2, net.embed_dim) and torch.isfinite(emb).all()
        assert net.aux_terms == {}
        sizes.append(count_parameters(net))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    # the non-debug rungs span at least 1.5 decades of N (the x axis of a scaling fit)
    assert math.log10(sizes[-1] / sizes[1]) >= 1.5


@pytest.mark.parametrize("name", ["cvrnn:debug", "r3d:debug"])
def test_rungs_refuse_image_shapes(name):
    with pytest.raises(ValueError, match=rf"{name} needs video inputs \(T, C, H, W\)"):
        get_rung(name).build((3, 32, 32))


def test_cvrnn_needs_rgb():
    with pytest.raises(ValueError, match=r"cvrnn:xs needs RGB videos.*got 4 channels"):
        get_rung("cvrnn:xs").build((32, 4, 32, 32))


def test_r18_is_torchvisions_r3d_18_trunk():
    from torchvision.models.video import r3d_18

    torch.manual_seed(0)
    ours = get_rung("r3d:r18").build(VIDEO).eval()
    theirs = r3d_18(weights=None).eval()
    theirs.fc = torch.nn.Identity()
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert len(ours_state) == len(theirs_state)
    loaded = {}
    for (key, mine), value in zip(ours_state.items(), theirs_state.values(), strict=True):
        assert mine.shape == value.shape, key
        loaded[key] = value
    ours.load_state_dict(loaded)
    x = torch.rand(1, 8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x.transpose(1, 2)), rtol=1e-4, atol=1e-5)


def test_cvrnn_refuses_single_videos():
    net = get_rung("cvrnn:debug").build((4, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 2 videos per forward"):
        net(torch.rand(1, 4, 3, 8, 8))


def test_cvrnn_synchrony_term_is_differentiable():
    torch.manual_seed(0)
    cfg = FeatureTrackerConfig(frames=6, size=16, distractors=2)
    x, masks, _ = videos(2, seed=3, cfg=cfg)
    net = get_rung("cvrnn:debug").build(tuple(x.shape[1:]))
    emb = net(x, masks=masks)
    assert emb.shape == (2, 1)
    term = net.aux_terms["synchrony"]
    assert term.shape == () and term.requires_grad
    # a sum over 6 frames of terms in [0, 1]
    assert 0 < term.item() < 6
    term.backward()
    # the phases the term reads come from the complex pathway (decode ← h ← A_w ← preproc)
    for param in (net.cell.decode_gate.conv.weight, net.cell.h_gate.conv.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    net(x)  # without masks there is no ground truth to synchronise to
    assert net.aux_terms == {}


def test_synchrony_loss_by_hand():
    """Three groups (background, distractors, target) on an 8×8 frame, the markers in none:
    phases equal within groups and 120° apart across them give 0 (full synchrony, the mean phases
    cancel); one phase everywhere gives (0 + |3|²/(2·3)) / (1 + 3/2) = 0.6."""
    masks = torch.zeros(1, 3, 8, 8)
    masks[0, 0, 0, :] = 1  # markers: row 0
    masks[0, 1, 1:4] = 1  # distractors: rows 1-3
    masks[0, 2, 4:6] = 1  # target: rows 4-5; background: rows 6-7
    spread = torch.zeros(1, 1, 8, 8)
    spread[0, 0, 1:4] = 2 * math.pi / 3
    spread[0, 0, 4:6] = -2 * math.pi / 3
    assert synchrony_loss(spread, masks).item() == pytest.approx(0.0, abs=1e-4)
    same = torch.full((1, 1, 8, 8), 0.3)
    assert synchrony_loss(same, masks).item() == pytest.approx(0.6, abs=1e-4)
    # the marker pixels belong to no group: their phases do not count
    noisy = spread.clone()
    noisy[0, 0, 0] = torch.rand(8) * 2 * math.pi - math.pi
    assert synchrony_loss(noisy, masks).item() == pytest.approx(0.0, abs=1e-4)
    # per frame over a (B, T, ...) stack: the batch mean of each frame
    stack = torch.stack([spread, same], dim=1)  # (1, 2, 1, 8, 8)
    frames = synchrony_loss(stack, torch.stack([masks, masks], dim=1))
    torch.testing.assert_close(frames, torch.tensor([0.0, 0.6]), atol=1e-4, rtol=0)


def _step_flops(name: str, shape: tuple[int, ...], with_masks: bool = False) -> float:
    torch.manual_seed(0)
    net = get_rung(name).build(shape)
    batch = {"x": torch.rand(2, *shape), "y": torch.tensor([0.0, 1.0])}
    if with_masks:
        batch["masks"] = (torch.rand(2, shape[0], 3, *shape[2:]) > 0.8).float()
    return training_step_flops(net, BCETracking(torch.nn.Linear(net.embed_dim, 1)), batch)


@pytest.mark.parametrize("family", sorted(LADDERS))
def test_flops_are_measured_and_grow_along_the_ladder(family):
    small = (8, 3, 16, 16)  # FLOPs scale with the video; a small one keeps the test fast
    flops = [_step_flops(name, small, with_masks=family == "cvrnn") for name in LADDERS[family]]
    assert flops[0] > 0 and flops == sorted(flops) and len(set(flops)) == len(flops)


def test_cvrnn_step_flops_match_a_hand_count():
    """One training step of cvrnn:debug (D = 4 channels, 3×3 E/I kernels) on (T, 3, H, W) videos
    with masks, counted conv by conv: a forward conv costs 2·C_in·C_out·k²·outputs; backward
    costs the forward again for the weight gradient and once more for the input gradient where
    the input needs one (not for the video, the random-phase first frame, or the zero state at
    t = 0). Complex convolutions are real ones: 3 (Re, Im, |z|) or 2 (W_re, W_im)."""
    t, h, w = 4, 8, 8
    d, k, b, p = 4, 3, 2, h * w

    def conv(cin, cout, ks, n):
        return 2 * cin * cout * ks * ks * n * p

    once = {
        "preproc": (conv(3, d, 3, b * t), False),
        "a_w_gate": (conv(d, 2 * d, 3, b * t), True),
        "i_w_gate": (conv(d, d, 1, b * t), True),
        "complex_preproc": (conv(3, d, 3, 3 * b), False),
        "readout_conv": (conv(d, 1, 3, b), True),
        "target_conv": (conv(2, 1, 5, b), True),
    }
    per_step = {  # (flops, needs an input gradient at t = 0)
        "h_gate": (conv(d, d, 3, 3 * b), True),
        "decode_gate": (conv(d, 1, 3, 3 * b), True),
        "a_u_gate": (conv(d, 2 * d, 3, b), False),
        "w_inh": (conv(d, d, k, b), True),
        "w_exc": (conv(d, d, k, b), True),
        "i_u_gate": (conv(d, d, 1, b), False),
        "e_w_gate": (conv(d, d, 1, b), False),
        "e_u_gate": (conv(d, d, 1, b), True),
    }
    total = sum(2 * f + (f if grad_in else 0) for f, grad_in in once.values())
    for step in range(t):
        total += sum(2 * f + (f if grad_in or step > 0 else 0) for f, grad_in in per_step.values())
    total += 3 * 2 * b  # the head Linear(1, 1): forward, input and weight gradients
    measured = _step_flops("cvrnn:debug", (t, 3, h, w), with_masks=True)
    assert measured == total / b


def test_video_module_imports_without_torch():
    code = (
        "import sys, bioscale.models.video as v; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert v.RUNGS.get('cvrnn:paper').family == 'cvrnn'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cvrnn_learns_the_no_morph_condition():
    """cvrnn:debug trained on 512 no-morph videos (BCE + the synchrony term, the paper's weight 1)
    tracks 256 held-out ones above chance. A small configuration keeps it to seconds on a CPU:
    8 frames of 16×16, one distractor, 5 path points a frame. In it the end marker of a
    positive lies near the start marker (the target moves little in 8 frames), so this shows the
    model and its loss train end to end, not tracking through crossings."""
    cfg = FeatureTrackerConfig(frames=8, size=16, distractors=1, skip=5)
    x_train, m_train, y_train = videos(512, seed=1, cfg=cfg)
    x_test, _, y_test = videos(256, seed=2, cfg=cfg)
    torch.manual_seed(0)
    net = get_rung("cvrnn:debug").build(tuple(x_train.shape[1:]))
    head = torch.nn.Linear(net.embed_dim, 1)
    objective = BCETracking(head)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(130):
        idx = torch.randperm(len(x_train), generator=gen)[:32]
        batch = {"x": x_train[idx], "masks": m_train[idx], "y": y_train[idx]}
        terms = objective.loss_terms(net, batch)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        predicted = (head(net(x_test))[:, 0] > 0).float()
    accuracy = (predicted == y_test).float().mean().item()
    assert y_test.mean().item() == 0.5  # balanced: chance is 0.5
    assert accuracy >= 0.65, accuracy
