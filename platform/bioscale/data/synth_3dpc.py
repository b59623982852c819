"""A small synthetic stand-in for 3D-PC (arXiv 2406.04138) in its ImageFolder layout, so the
3D-PC probes run offline: ``<out>/<task>/<split>/<0|1>/<name>.png`` with splits train, val, test
and (optionally) human.

Tasks, each binary with a known answer from the scene geometry:

- ``depth`` (depth order): two blocks standing on a ground plane seen in perspective (nearer
  blocks sit lower and look larger, far ones fade into the haze, near ones occlude far ones); a red
  dot marks one block and a blue dot the other. Label 1: the red-marked block is nearer.
- ``vpt_basic`` (visual perspective taking): a top-down room with a viewer (a purple body with a
  white nose showing where it faces), a green target and a grey wall. Label 1: the viewer can see
  the target — it lies within ±60° of the facing direction and the wall does not cut the line of
  sight.
- ``vpt_strategy``: the same question with the shortcut cues removed — the viewer always faces the
  target and the wall always sits across the middle of the line of sight, shifted sideways by a
  random amount; only whether the wall's end passes the line decides the answer.

Classes are balanced per split; every split draws fresh scenes from one seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TASKS_3DPC = ("depth", "vpt_basic", "vpt_strategy")
FOV_DEG = 60.0  # half-angle of the viewer's field of view


@dataclass(frozen=True, kw_only=True)
class Synth3DPCConfig:
    """Sizes of the synthetic 3D-PC splits.

    Attributes:
        seed: generator seed.
        size: image side in pixels.
        train, val, test, human: images per class in each split (human 0: no human split).
        tasks: which tasks to write.
    """

    seed: int = 0
    size: int = 32
    train: int = 60
    val: int = 20
    test: int = 20
    human: int = 10
    tasks: tuple[str, ...] = TASKS_3DPC

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS_3DPC))
        if unknown:
            raise ValueError(f"unknown 3D-PC task(s) {unknown}; known: {list(TASKS_3DPC)}")
        if min(self.train, self.val, self.test) < 1 or self.human < 0:
            raise ValueError("train, val and test need >= 1 image per class (human >= 0)")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy / size, xx / size  # in [0, 1)


def render_depth(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """(size, size, 3) float in [0, 1]: two blocks on a ground plane, red dot on the nearer one
    when ``label`` is 1."""
    yy, xx = _grid(size)
    horizon = 0.3
    sky = np.array([0.75, 0.85, 0.95])
    img = np.where((yy < horizon)[..., None], sky, np.array([0.45, 0.55, 0.35]))
    img = img + 0.03 * rng.normal(size=img.shape)
    while True:
        z = np.sort(rng.uniform(1.5, 7.0, size=2))  # near, far (camera units)
        if z[1] / z[0] > 1.4:
            break
    blocks = []
    for depth in z:
        bottom = horizon + 0.6 / depth  # ground contact row: lower when nearer
        height, width = 0.9 / depth, rng.uniform(0.5, 0.9) / depth
        cx = rng.uniform(0.15, 0.85)
        colour = rng.uniform(0.2, 0.8, size=3)
        haze = min(1.0, (depth - 1.5) / 8.0)  # far blocks fade toward the sky colour
        blocks.append((bottom, height, width, cx, (1 - haze) * colour + haze * sky))
    for bottom, height, width, cx, colour in blocks[::-1]:  # far first: the near block occludes
        body = (yy < bottom) & (yy > bottom - height) & (np.abs(xx - cx) < width / 2)
        img[body] = colour
    near_is_red = label == 1
    for k, (bottom, height, _, cx, _) in enumerate(blocks):
        # the dot sits on a visible part of the block: its top for the far one (above the near)
        dy = bottom - 0.5 * height if k == 0 else bottom - 0.85 * height
        red = (k == 0) == near_is_red
        dot = (yy - dy) ** 2 + (xx - cx) ** 2 < (0.06) ** 2
        img[dot] = [1.0, 0.0, 0.0] if red else [0.0, 0.2, 1.0]
    return np.clip(img, 0, 1)


def _segment_hits(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether segment p–q crosses segment a–b (2D)."""

    def cross(o, u, v):
        return (u[0] - o[0]) * (v[1] - o[1]) - (u[1] - o[1]) * (v[0] - o[0])

    d1, d2 = cross(a, b, p), cross(a, b, q)
    d3, d4 = cross(p, q, a), cross(p, q, b)
    return (d1 * d2 < 0) and (d3 * d4 < 0)


def _visible(viewer, facing, target, wall_a, wall_b) -> bool:
    to_t = target - viewer
    ang = np.degrees(np.arccos(np.clip(to_t @ facing / np.linalg.norm(to_t), -1, 1)))
    return ang < FOV_DEG and not _segment_hits(viewer, target, wall_a, wall_b)


def _vpt_scene(rng: np.random.Generator, strategy: bool):
    viewer = rng.uniform(0.2, 0.8, size=2)
    target = rng.uniform(0.15, 0.85, size=2)
    if np.linalg.norm(target - viewer) < 0.35:
        return None
    sight = target - viewer
    if strategy:
        facing = sight / np.linalg.norm(sight)
        normal = np.array([-facing[1], facing[0]])
        half = rng.uniform(0.08, 0.15)
        centre = viewer + 0.5 * sight + normal * rng.uniform(-0.2, 0.2)
        wall_a, wall_b = centre - normal * half, centre + normal * half
    else:
        theta = rng.uniform(0, 2 * np.pi)
        facing = np.array([np.cos(theta), np.sin(theta)])
        centre = rng.uniform(0.2, 0.8, size=2)
        phi = rng.uniform(0, np.pi)
        half = rng.uniform(0.1, 0.25)
        d = np.array([np.cos(phi), np.sin(phi)]) * half
        wall_a, wall_b = centre - d, centre + d
    return viewer, facing, target, wall_a, wall_b


def render_vpt(rng: np.random.Generator, label: int, size: int, *, strategy: bool) -> np.ndarray:
    """(size, size, 3) float in [0, 1]: a top-down scene whose viewer sees the target iff
    ``label`` is 1 (rejection-sampled until the geometry gives that answer)."""
    while True:
        scene = _vpt_scene(rng, strategy)
        if scene is not None and _visible(*scene) == bool(label):
            break
    viewer, facing, target, wall_a, wall_b = scene
    yy, xx = _grid(size)
    img = np.broadcast_to(np.array([0.85, 0.8, 0.7]), (size, size, 3)).copy()
    img += 0.03 * rng.normal(size=img.shape)
    # wall: pixels within 0.025 of the segment
    ab = wall_b - wall_a
    t = np.clip(((xx - wall_a[0]) * ab[0] + (yy - wall_a[1]) * ab[1]) / (ab @ ab), 0, 1)
    dist = np.hypot(xx - wall_a[0] - t * ab[0], yy - wall_a[1] - t * ab[1])
    img[dist < 0.025] = [0.4, 0.4, 0.4]
    img[(xx - target[0]) ** 2 + (yy - target[1]) ** 2 < 0.05**2] = [0.1, 0.75, 0.2]
    img[(xx - viewer[0]) ** 2 + (yy - viewer[1]) ** 2 < 0.06**2] = [0.5, 0.2, 0.6]
    nose = viewer + 0.07 * facing
    img[(xx - nose[0]) ** 2 + (yy - nose[1]) ** 2 < 0.03**2] = [1.0, 1.0, 1.0]
    return np.clip(img, 0, 1)


def render(task: str, rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """One (size, size, 3) scene of ``task`` with answer ``label``."""
    if task == "depth":
        return render_depth(rng, label, size)
    if task in ("vpt_basic", "vpt_strategy"):
        return render_vpt(rng, label, size, strategy=task == "vpt_strategy")
    raise ValueError(f"unknown 3D-PC task {task!r}; known: {list(TASKS_3DPC)}")


def generate_3dpc(cfg: Synth3DPCConfig, out_dir: str | Path) -> Path:
    """Write ``<out>/<task>/<split>/<0|1>/<i>.png`` for every task and split; returns ``out``."""
    from PIL import Image

    out = Path(out_dir)
    rng = np.random.default_rng(cfg.seed)
    splits = {"train": cfg.train, "val": cfg.val, "test": cfg.test, "human": cfg.human}
    for task in cfg.tasks:
        for split, per_class in splits.items():
            if per_class == 0:  # no folder: an empty split folder is an invalid task folder
                continue
            for label in (0, 1):
                folder = out / task / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    img = render(task, rng, label, cfg.size)
                    Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    return out
