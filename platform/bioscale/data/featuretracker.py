"""FeatureTracker (Muzellec et al. 2024, arXiv 2410.02094): videos in which one object must be
tracked while every object's shape and colour change, and the video manifest that holds them.

A video shows ``1 + distractors`` objects moving along smooth random paths, a red start marker
where the target (object 0) starts and a blue end marker. Label 1: the end marker sits where the
target ends; label 0: it sits where the distractor ending nearest the target's end ends. Nothing
but the motion tells the two apart, and the objects' appearance changes on the way.

The rules are those of the published generator (S4b1n3/feature_tracker, MIT, ``feature_tracker/``,
defaults from ``gen_stim.sh``), written anew in numpy:

- paths (``spline_scaled_curve_generator_class.GenCoord.get_coordinates`` as called by
  ``utils_coordinates.get_full_length_coordinates``): 65 segments of 5 collinear points; the
  heading of segment i+1 is ``rigidity · (heading_i ± turn)`` in degrees, the sign fixed per path,
  ``turn`` drawn from ``arange(0, delta_angle_max, 0.95)``; the first heading is
  ``arctan2(y, x)`` of a random point of [0, 200)², a value in radians that the recursion reads as
  degrees (as published); the 326 points are min–max scaled, each axis on its own, to
  [0, size − box], reversed with probability ½, and a random run of ``frames · skip`` of them
  (every ``skip``-th) is the object's path; positions are floored to pixels.
- objects (``utils_shapes``): a box of ``2·radius + 3`` pixels whose centre ``2·radius + 1``
  pixels start filled (``Squares``, shape ``none``) or random (``Shape_ID``/``Shape_OOD``);
  ``id`` shapes morph each frame by a birth-only Game-of-Life rule (a dead cell with exactly 3 live
  neighbours is born, none dies), ``ood`` shapes by a death-only rule (a live cell with fewer than
  2 or more than 3 neighbours dies, none is born) — growth in distribution, erosion out of it; an
  emptied shape is re-seeded; the last frame (``end``) morphs once more and clears the box's rim.
- colours (``utils_color.generate_all_colors``, ``generate_data.py``): ``none`` is green
  (0, 255, 0); otherwise each object has a random start hue (an integer degree) that turns by
  ``360 · color_speed`` degrees a frame, folded into [0°, 180°) for ``id`` and [180°, 360°) for
  ``ood`` (full saturation and value; RGB = ⌊255·c⌋ as ``colorsys``).
- drawing (``utils_drawing.plot_frame``): black frames; the markers are the rims of a box at the
  target's first position (red) and at the end position (blue), drawn first in every frame; then
  the distractors in order and the target last, each cell overwriting what lies under it.
- negatives (``generate_data.py``): the end marker goes to the end of the distractor nearest
  (Euclidean, in pixels) the target's end.
- ground-truth masks (``utils_drawing.plot_frame_mask``, the groups of the CV-RNN's synchrony
  loss): drawn in the same order as the frames, one ``MASK_CODES`` label a pixel: 1 the markers'
  rims, 2 a distractor's live cell, 3 the target's, 0 the rest.

Where bioscale departs from the published code: (1) the published code also draws the nearest
distractor a second time under another shape and colour (``coordinates_3``), so one object is the
union of two; here every path is one object. (2) A distractor ending on the target's very pixel is
never the negatives' end marker (the video would be a positive); positives and negatives are held
to the same condition (some distractor ends elsewhere), so paths say nothing about the label.
(3) Each video draws its own paths: the published script draws them in one unseeded stream.

Determinism: a video's paths come from (seed, group, index) and its appearance from (seed, group,
condition, index): growing ``videos`` or adding test conditions changes no existing video, the
first k training videos of a larger pool are those of a smaller one, and test video i shows the
same paths in every condition (as the published test sets do), so the conditions' accuracies are
paired. Label: even indices are positives, odd ones negatives.

Manifest (the ``video`` kind): ``sample_id, path_video, label, condition, group`` and, in
manifests that carry masks, ``path_mask``; ``path_video`` (``path_mask``) is ``<shard>.npy#<row>``
relative to the manifest's folder (absolute paths are read too); each video shard is a uint8
(n, T, H, W, 3) array, each mask shard a uint8 (n, T, H, W) array of ``MASK_CODES`` with the same
rows. ``group``: ``train`` (the pool diets draw from, in the training condition) or ``test``
(held-out videos of every test condition).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bioscale.data.hashing import rank_key
from bioscale.errors import ConfigError, ManifestError

SHAPE_LEVELS = ("none", "id", "ood")
COLOR_LEVELS = ("none", "id", "ood")
GROUPS = ("train", "test")
VIDEO_COLUMNS = ("sample_id", "path_video", "label", "condition", "group")
#: The optional column after ``VIDEO_COLUMNS``: each video's mask, ``<shard>.npy#<row>``.
MASK_COLUMN = "path_mask"
#: Labels of a mask pixel (``mask_frames``); 1–3 are the published mask frames' channels 0–2.
MASK_CODES = {"background": 0, "marker": 1, "distractor": 2, "target": 3}
#: Parquet schema-metadata keys of a video manifest.
META_KIND = b"bioscale.kind"
META_VIDEO_SHAPE = b"bioscale.video_shape"
META_GENERATOR = b"bioscale.generator"
SHARDS = "shards"

CURVE_SEGMENTS = 65  # GenCoord: length_curve = nTimes·3 = 66 points asked → 65 grown segments
SEGMENT_POINTS = 5  # GenCoord: each heading advances the path by 5 points
CURVE_POINTS = CURVE_SEGMENTS * SEGMENT_POINTS + 1  # 326 points per path
WIGGLE = 0.95  # degrees: GenCoord's wiggle_room, the step of the turn grid
START_POINT_RANGE = 200.0  # GenCoord.get_points: the seed point is uniform in [0, 200)²
FIXED_COLOR = (0, 255, 0)  # generate_data.py: colorspace_fixed
START_COLOR = (255, 0, 0)  # plot_frame: the start marker
END_COLOR = (0, 0, 255)  # plot_frame: the end marker
_SALT = "bioscale-featuretracker"


def condition_name(shape: str, color: str) -> str:
    """``"shape-<shape>_color-<color>"``, e.g. ``shape-id_color-ood``."""
    if shape not in SHAPE_LEVELS or color not in COLOR_LEVELS:
        raise ConfigError(
            f"FeatureTracker condition: shape and colour are each one of "
            f"{', '.join(SHAPE_LEVELS)}, not shape {shape!r}, colour {color!r}"
        )
    return f"shape-{shape}_color-{color}"


CONDITIONS = tuple(condition_name(s, c) for s in SHAPE_LEVELS for c in COLOR_LEVELS)
_CONDITION = re.compile(r"shape-(\w+?)_color-(\w+)")


def parse_condition(name: str) -> tuple[str, str]:
    """``"shape-id_color-ood"`` → ``("id", "ood")``."""
    found = _CONDITION.fullmatch(str(name))
    if found is None or found.group(1) not in SHAPE_LEVELS or found.group(2) not in COLOR_LEVELS:
        raise ConfigError(
            f"unknown FeatureTracker condition {name!r}; the conditions are {', '.join(CONDITIONS)}"
        )
    return found.group(1), found.group(2)


def is_ood(name: str) -> bool:
    """Whether a condition's shape or colour changes out of distribution."""
    return "ood" in parse_condition(name)


@dataclass(frozen=True, kw_only=True)
class FeatureTrackerConfig:
    """What ``bioscale data synth featuretracker`` generates (defaults: ``gen_stim.sh``).

    Attributes:
        videos: training videos (group ``train``, in ``condition``), half positives, half
            negatives; the published set has 50,000 per class.
        condition: the appearance condition of the training videos (``CONDITIONS``).
        test_videos: held-out videos per test condition (group ``test``), half of each label.
        test_conditions: ``all`` or a comma list of conditions to write test videos for.
        seed: the generator seed; every video has its own seed derived from it.
        frames: frames per video (the published ``path_length``).
        size: frame height and width in pixels.
        distractors: distractor objects (``num_distractors``).
        radius: an object's half-width: its shape lives in a box of 2·radius + 3 pixels whose
            centre 2·radius + 1 pixels hold the starting shape; markers are that box's rim.
        skip: path points advanced per frame (``skip_param``, 1–5 published): the speed.
        delta_angle_max: degrees; turns between segments are drawn from [0, this) in steps of
            0.95° (GenCoord's ``delta_angle_max``; 180 in the published "irregular" paths).
        rigidity: GenCoord's ``rigidity``: each heading is this times (previous heading ± turn).
        color_speed: hue turns per frame, as a fraction of the colour circle (1/64 published).
        shard_size: videos per shard file.
    """

    videos: int = 512
    condition: str = "shape-id_color-id"
    test_videos: int = 64
    test_conditions: str = "all"
    seed: int = 0
    frames: int = 32
    size: int = 32
    distractors: int = 10
    radius: int = 1
    skip: int = 1
    delta_angle_max: float = 90.0
    rigidity: float = 0.95
    color_speed: float = 1.0 / 64.0
    shard_size: int = 1024

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, rule: str) -> None:
            if not ok:
                value = getattr(self, field)
                raise ConfigError(f"featuretracker {field} must be {rule}, got {value!r}")

        for field in (
            "videos",
            "test_videos",
            "seed",
            "frames",
            "size",
            "distractors",
            "radius",
            "skip",
            "shard_size",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"featuretracker {field} must be an integer, got {value!r}")
        for field in ("condition", "test_conditions"):
            need(isinstance(getattr(self, field), str), field, "a string")
        for field in ("delta_angle_max", "rigidity", "color_speed"):
            value = getattr(self, field)
            need(
                isinstance(value, int | float) and not isinstance(value, bool),
                field,
                "a number",
            )
            need(bool(np.isfinite(value)), field, "finite")
        need(self.videos >= 2 and self.videos % 2 == 0, "videos", "an even number >= 2")
        need(self.test_videos >= 0 and self.test_videos % 2 == 0, "test_videos", "even and >= 0")
        need(self.seed >= 0, "seed", ">= 0")
        need(self.radius >= 1, "radius", ">= 1 pixel")
        need(
            self.size > self.box,
            "size",
            f"> {self.box} pixels (an object's box at radius {self.radius}) so objects can move",
        )
        need(1 <= self.skip <= 5, "skip", "1 to 5 (path points per frame)")
        need(
            self.frames >= 2 and self.frames * self.skip <= CURVE_POINTS,
            "frames",
            f">= 2 with frames · skip <= {CURVE_POINTS} (the points of a path)",
        )
        need(self.distractors >= 1, "distractors", ">= 1 (negatives end on a distractor)")
        need(self.delta_angle_max > 0, "delta_angle_max", "> 0 degrees")
        need(0 < self.rigidity <= 1, "rigidity", "in (0, 1]")
        need(self.color_speed >= 0, "color_speed", ">= 0 (turns of the colour circle per frame)")
        need(self.shard_size >= 1, "shard_size", ">= 1 video")
        try:
            parse_condition(self.condition)
        except ConfigError as err:
            raise ConfigError(f"featuretracker condition: {err}") from None
        _ = self.test_condition_names  # validates the list

    @property
    def box(self) -> int:
        """Side of an object's box (and of a marker) in pixels: 2·radius + 3 (5 published)."""
        return 2 * self.radius + 3

    @property
    def test_condition_names(self) -> tuple[str, ...]:
        """The test conditions in order (``all``: ``CONDITIONS``)."""
        if self.test_conditions.strip() == "all":
            return CONDITIONS
        names = tuple(n.strip() for n in self.test_conditions.split(",") if n.strip())
        if not names:
            raise ConfigError(
                "featuretracker test_conditions: 'all' or a comma list of "
                f"{', '.join(CONDITIONS)}; got {self.test_conditions!r}"
            )
        for name in names:
            try:
                parse_condition(name)
            except ConfigError as err:
                raise ConfigError(f"featuretracker test_conditions: {err}") from None
        if len(set(names)) != len(names):
            raise ConfigError(f"featuretracker test_conditions lists a condition twice: {names}")
        return names

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """(T, H, W, 3)."""
        return (self.frames, self.size, self.size, 3)


# ------------------------------------------------------------------------------------ paths


@lru_cache(maxsize=8)
def _decay(rigidity: float) -> np.ndarray:
    """(S, S) upper-triangular rigidity^(k − j + 1) (j ≤ k): unrolls the heading recursion,
    heading_{k+1} = Σ_{j≤k} rigidity^(k−j+1) · sign · turn_j + rigidity^(k+1) · heading_0
    (row 0 is the seed angle's weight)."""
    j, k = np.meshgrid(np.arange(CURVE_SEGMENTS), np.arange(CURVE_SEGMENTS), indexing="ij")
    decay = np.where(j <= k, float(rigidity) ** (k - j + 1.0), 0.0)
    decay.flags.writeable = False
    return decay


def _paths(rng: np.random.Generator, n: int, cfg: FeatureTrackerConfig) -> np.ndarray:
    """(n, T, 2) int64 top-left pixels (row, column) of n objects' boxes, in [0, size − box]
    (GenCoord.get_coordinates + get_full_length_coordinates)."""
    seed_point = rng.random((n, 2)) * START_POINT_RANGE
    heading = np.arctan2(seed_point[:, 1], seed_point[:, 0])  # radians, read as degrees
    sign = np.where(rng.integers(0, 2, n) == 0, 1.0, -1.0)  # 'add' or 'sub', per path
    n_turns = len(np.arange(0.0, cfg.delta_angle_max, WIGGLE))
    turns = rng.integers(0, n_turns, (n, CURVE_SEGMENTS)) * WIGGLE  # degrees
    # heading_{i+1} = rigidity · (heading_i + sign · turn_i), heading_0 the seed angle
    decay = _decay(cfg.rigidity)
    headings = heading[:, None] * decay[0] + (sign[:, None] * turns) @ decay
    rad = np.radians(headings)
    steps = np.repeat(np.stack([np.cos(rad), np.sin(rad)], axis=1), SEGMENT_POINTS, axis=2)
    points = np.zeros((n, 2, CURVE_POINTS))  # (n, row/column, P); the seed point is irrelevant
    np.cumsum(steps, axis=2, out=points[:, :, 1:])  # after scaling, so the path starts at 0
    lo, hi = points.min(axis=2, keepdims=True), points.max(axis=2, keepdims=True)
    room = cfg.size - cfg.box
    points = (points - lo) / np.where(hi > lo, hi - lo, 1.0) * room  # each axis to [0, room]
    backwards = rng.integers(0, 2, n).astype(bool)
    points[backwards] = points[backwards, :, ::-1]
    span = cfg.frames * cfg.skip
    first = rng.integers(0, CURVE_POINTS - span + 1, n)
    take = first[:, None] + np.arange(0, span, cfg.skip)[None, :]  # (n, T)
    window = np.take_along_axis(points, take[:, None, :], axis=2).transpose(0, 2, 1)  # (n, T, 2)
    return np.clip(np.floor(window), 0, room).astype(np.int64)


def _nearest_other(ends: np.ndarray, target_end: np.ndarray) -> int | None:
    """Index of the distractor end (D, 2) nearest ``target_end`` among those on another pixel
    (first on ties), or ``None`` when all sit on the target's pixel."""
    dist = np.sqrt(((ends - target_end) ** 2).sum(axis=1).astype(np.float64))
    dist[(ends == target_end).all(axis=1)] = np.inf
    best = int(np.argmin(dist))
    return None if not np.isfinite(dist[best]) else best


# ----------------------------------------------------------------------------------- shapes


@lru_cache(maxsize=8)
def _adjacency(g: int) -> np.ndarray:
    """(g², g²) int16: 1 where two cells of a g × g box are 8-neighbours (no wrap)."""
    rows, cols = np.divmod(np.arange(g * g), g)
    near = (np.abs(rows[:, None] - rows[None, :]) <= 1) & (
        np.abs(cols[:, None] - cols[None, :]) <= 1
    )
    adjacency = (near & ~np.eye(g * g, dtype=bool)).astype(np.int16)
    adjacency.flags.writeable = False
    return adjacency


def _neighbours(grid: np.ndarray) -> np.ndarray:
    """(n, G, G) bool → live 8-neighbours of every cell (int16; nothing beyond the box)."""
    n, g, _ = grid.shape
    return (grid.reshape(n, g * g).astype(np.int16) @ _adjacency(g)).reshape(n, g, g)


def grow(grid: np.ndarray) -> np.ndarray:
    """In-distribution morph (``Shape_ID.update``): a dead cell with exactly 3 live neighbours
    is born; no cell dies. (n, G, G) bool."""
    return grid | (~grid & (_neighbours(grid) == 3))


def erode(grid: np.ndarray) -> np.ndarray:
    """Out-of-distribution morph (``Shape_OOD.update``): a live cell with fewer than 2 or more
    than 3 live neighbours dies; no cell is born. (n, G, G) bool."""
    count = _neighbours(grid)
    return grid & ((count == 2) | (count == 3))


def _reseed(rng: np.random.Generator, grid: np.ndarray, inner: int) -> None:
    """Give every empty shape of ``grid`` (n, G, G) a fresh random centre, in place."""
    empty = ~grid.any(axis=(1, 2))
    if empty.any():
        grid[empty, 1:-1, 1:-1] = rng.integers(0, 2, (int(empty.sum()), inner, inner)) == 1


def _shapes(rng: np.random.Generator, n: int, level: str, cfg: FeatureTrackerConfig) -> np.ndarray:
    """(n, T, G, G) bool: each object's cells in each frame (``utils_shapes``)."""
    g, inner, t_last = cfg.box, cfg.box - 2, cfg.frames - 1
    out = np.zeros((n, cfg.frames, g, g), dtype=bool)
    if level == "none":
        out[:, :, 1:-1, 1:-1] = True  # Squares: the centre filled, every frame
        return out
    morph = grow if level == "id" else erode
    grid = np.zeros((n, g, g), dtype=bool)
    grid[:, 1:-1, 1:-1] = rng.integers(0, 2, (n, inner, inner)) == 1
    out[:, 0] = grid
    for t in range(1, cfg.frames):
        grid = morph(grid)
        _reseed(rng, grid, inner)
        if t == t_last:  # end(): re-seed once more if still empty, then clear the rim
            _reseed(rng, grid, inner)
            grid[:, 0, :] = grid[:, -1, :] = grid[:, :, 0] = grid[:, :, -1] = False
        out[:, t] = grid
    return out


# ---------------------------------------------------------------------------------- colours


def hsv_to_rgb(hue: np.ndarray) -> np.ndarray:
    """Hue in [0, 1) at full saturation and value → uint8 RGB (..., 3), ⌊255·c⌋ of
    ``colorsys.hsv_to_rgb`` (its arithmetic, so the bytes agree)."""
    h6 = np.asarray(hue, dtype=np.float64) * 6.0
    sector = np.floor(h6)
    f = h6 - sector
    q, t, one, zero = 1.0 - f, 1.0 - (1.0 - f), np.ones_like(f), np.zeros_like(f)
    table = [
        (one, t, zero),
        (q, one, zero),
        (zero, one, t),
        (zero, q, one),
        (t, zero, one),
        (one, zero, q),
    ]
    sector = sector.astype(np.int64) % 6
    rgb = np.zeros((*f.shape, 3))
    for s, channels in enumerate(table):
        pick = sector == s
        for c in range(3):
            rgb[..., c][pick] = channels[c][pick]
    return (rgb * 255.0).astype(np.uint8)


def _colors(
    rng: np.random.Generator, n: int, level: str, cfg: FeatureTrackerConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, T, 3) uint8 colours and (n, T) hues in degrees (``None`` for ``none``)."""
    if level == "none":
        return np.broadcast_to(np.array(FIXED_COLOR, np.uint8), (n, cfg.frames, 3)).copy(), None
    start = rng.integers(0, 360, n)  # degrees
    turned = (np.arange(cfg.frames) * cfg.color_speed) * 360.0 % 360.0  # generate_trajectory
    hue = (turned[None, :] + start[:, None]) % 180.0 + (0.0 if level == "id" else 180.0)
    return hsv_to_rgb(hue / 360.0), hue


# ---------------------------------------------------------------------------------- drawing


def _rim(box: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a box's rim (a marker), relative to its top-left pixel."""
    ring = np.zeros((box, box), dtype=bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    return np.nonzero(ring)


def _draw(
    cfg: FeatureTrackerConfig,
    positions: np.ndarray,
    shapes: np.ndarray,
    colors: np.ndarray | None,
    start: np.ndarray,
    end: np.ndarray,
) -> tuple[np.ndarray | None, np.ndarray]:
    """(T, H, W, 3) uint8 frames (``plot_frame``) and (T, H, W) uint8 ``MASK_CODES``
    (``plot_frame_mask``), painted together: markers, distractors in order, target last, each
    over what lies under it. ``colors`` ``None``: the mask alone (frames ``None``)."""
    frames = None if colors is None else np.zeros(cfg.video_shape, dtype=np.uint8)
    mask = np.zeros(cfg.video_shape[:3], dtype=np.uint8)
    rows, cols = _rim(cfg.box)
    for marker, color in ((start, START_COLOR), (end, END_COLOR)):
        r, c = marker[0] + rows, marker[1] + cols
        mask[:, r, c] = MASK_CODES["marker"]
        if frames is not None:
            frames[:, r, c] = color
    for k in [*range(1, len(positions)), 0]:
        t, i, j = np.nonzero(shapes[k])
        r, c = positions[k, t, 0] + i, positions[k, t, 1] + j
        mask[t, r, c] = MASK_CODES["target" if k == 0 else "distractor"]
        if frames is not None:
            frames[t, r, c] = colors[k, t]
    return frames, mask


def mask_frames(info: dict, cfg: FeatureTrackerConfig) -> np.ndarray:
    """A video's ground-truth groups, (T, H, W) uint8 ``MASK_CODES``, from its ``info``
    (``generate_video``): the published mask frames (``plot_frame_mask``; channel c of theirs is
    code c + 1 here), painted by the loops that paint the frames.

    Args:
        info: ``generate_video``'s ground truth (``target``, ``distractors``, ``shapes``,
            ``start_marker``, ``end_marker``).
        cfg: the config that generated the video (frames, size, box).
    """
    missing = [
        k
        for k in ("target", "distractors", "shapes", "start_marker", "end_marker")
        if k not in info
    ]
    if missing:
        raise ConfigError(
            f"mask_frames: info lacks {', '.join(missing)}; pass the info generate_video returns"
        )
    target, distractors = np.asarray(info["target"]), np.asarray(info["distractors"])
    if target.ndim != 2 or distractors.ndim != 3 or distractors.shape[1:] != target.shape:
        raise ConfigError(
            f"mask_frames: info's target {target.shape} and distractors {distractors.shape} "
            "must be (T, 2) and (D, T, 2) pixels; pass the info generate_video returns"
        )
    positions = np.concatenate([target[None], distractors]).astype(np.int64)
    shapes = np.asarray(info["shapes"], dtype=bool)
    start = np.asarray(info["start_marker"], dtype=np.int64).reshape(2)
    end = np.asarray(info["end_marker"], dtype=np.int64).reshape(2)
    objects = len(positions)
    want_positions = (objects, cfg.frames, 2)
    want_shapes = (objects, cfg.frames, cfg.box, cfg.box)
    if positions.shape != want_positions or shapes.shape != want_shapes:
        raise ConfigError(
            f"mask_frames: info holds positions {positions.shape} and shapes {shapes.shape}, "
            f"the config {want_positions} and {want_shapes} (frames={cfg.frames}, "
            f"radius={cfg.radius}); pass the config that generated the video"
        )
    room = cfg.size - cfg.box
    corners = np.concatenate([positions.reshape(-1, 2), start[None], end[None]])
    if corners.min() < 0 or corners.max() > room:
        raise ConfigError(
            f"mask_frames: info places boxes outside [0, {room}] (size={cfg.size}, "
            f"radius={cfg.radius}); pass the config that generated the video"
        )
    return _draw(cfg, positions, shapes, None, start, end)[1]


def generate_video(
    rng: np.random.Generator,
    *,
    shape: str,
    color: str,
    positive: bool,
    cfg: FeatureTrackerConfig,
    appearance: np.random.Generator | None = None,
) -> tuple[np.ndarray, dict]:
    """One FeatureTracker video by the published rules (module docstring).

    Args:
        rng: draws the paths (and the appearance when ``appearance`` is not given).
        shape, color: the condition's levels (``SHAPE_LEVELS``, ``COLOR_LEVELS``).
        positive: whether the end marker sits on the target's end.
        cfg: sizes and rule parameters.
        appearance: draws the shapes and colours, so the same paths can be shown in another
            condition.

    Returns:
        ``frames`` (T, H, W, 3) uint8 and ``info``, the ground truth: ``target`` (T, 2) and
        ``distractors`` (D, T, 2) top-left pixels (row, column) of each object's box,
        ``start_marker``/``end_marker`` (2,) top-left pixels of the markers, ``nearest`` (the
        distractor ending nearest the target's end, not on its pixel), ``shapes`` (1 + D, T, G, G)
        bool cells (object 0 the target), ``colors`` (1 + D, T, 3) uint8, ``hues`` (1 + D, T)
        degrees or ``None``, ``label``, ``shape``, ``color``, ``box``, ``mask`` (T, H, W) uint8
        ``MASK_CODES`` (``mask_frames``).
    """
    condition_name(shape, color)
    n = 1 + cfg.distractors
    while True:
        positions = _paths(rng, n, cfg)
        nearest = _nearest_other(positions[1:, -1], positions[0, -1])
        if nearest is not None:
            break
    look = rng if appearance is None else appearance
    shapes = _shapes(look, n, shape, cfg)
    colors, hues = _colors(look, n, color, cfg)
    start = positions[0, 0]
    end = positions[0, -1] if positive else positions[1 + nearest, -1]
    frames, mask = _draw(cfg, positions, shapes, colors, start, end)
    info = {
        "target": positions[0],
        "distractors": positions[1:],
        "start_marker": start.copy(),
        "end_marker": end.copy(),
        "nearest": nearest,
        "shapes": shapes,
        "colors": colors,
        "hues": hues,
        "label": int(positive),
        "shape": shape,
        "color": color,
        "box": cfg.box,
        "mask": mask,
    }
    return frames, info


# ---------------------------------------------------------------------------- the dataset


def video_seed(seed: int, *parts: str | int) -> np.random.Generator:
    """A generator seeded from ``seed`` and a video's identity (stable on every machine)."""
    key = rank_key("/".join(str(p) for p in parts), _SALT)
    return np.random.default_rng(np.random.SeedSequence([seed, key]))


def _plan(cfg: FeatureTrackerConfig) -> list[tuple[str, str, int]]:
    """(group, condition, index) of every row, in manifest order."""
    rows = [("train", cfg.condition, i) for i in range(cfg.videos)]
    for condition in cfg.test_condition_names:
        rows += [("test", condition, i) for i in range(cfg.test_videos)]
    return rows


def sample_id(group: str, condition: str, index: int) -> str:
    """``ft-train-000017`` / ``ft-test-shape-id_color-ood-000003``."""
    return f"ft-train-{index:06d}" if group == "train" else f"ft-test-{condition}-{index:06d}"


def render(cfg: FeatureTrackerConfig, group: str, condition: str, index: int) -> np.ndarray:
    """Video ``index`` of ``group`` in ``condition`` as the dataset holds it (T, H, W, 3) uint8."""
    return _generate(cfg, group, condition, index)[0]


def _generate(
    cfg: FeatureTrackerConfig, group: str, condition: str, index: int
) -> tuple[np.ndarray, dict]:
    """``generate_video`` of the dataset's video ``index`` of ``group`` in ``condition``."""
    shape, color = parse_condition(condition)
    return generate_video(
        video_seed(cfg.seed, group, "paths", index),
        shape=shape,
        color=color,
        positive=index % 2 == 0,
        cfg=cfg,
        appearance=video_seed(cfg.seed, group, condition, index),
    )


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)


def manifest_schema(cfg: FeatureTrackerConfig) -> pa.Schema:
    """The video manifest's schema, with the generator's config in its metadata."""
    fields = [
        pa.field("sample_id", pa.string()),
        pa.field("path_video", pa.string()),
        pa.field("label", pa.int8()),
        pa.field("condition", pa.string()),
        pa.field("group", pa.string()),
        pa.field(MASK_COLUMN, pa.string()),
    ]
    meta = {
        META_KIND: b"video",
        META_VIDEO_SHAPE: ",".join(str(v) for v in cfg.video_shape).encode(),
        META_GENERATOR: json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode(),
    }
    return pa.schema(fields, metadata=meta)


def generate_featuretracker(
    cfg: FeatureTrackerConfig,
    out: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``out/manifest.parquet``, ``out/shards/videos-00000.npy``, … (each a uint8
    (n, T, H, W, 3) array of at most ``shard_size`` videos) and ``out/shards/masks-00000.npy``, …
    (their ``mask_frames``, uint8 (n, T, H, W), the same rows), each written atomically; the
    manifest last, then shards a previous, larger run left behind are removed.
    ``progress(done, total)`` after every shard. Returns the manifest's path.

    Disk: T·H·W·3 bytes a video and T·H·W its mask, 96 KiB + 32 KiB at the published sizes
    (32 frames of 32 × 32), about 128 MiB per 1000 videos."""
    out = Path(out)
    shards = out / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    plan = _plan(cfg)
    columns: dict[str, list] = {c: [] for c in (*VIDEO_COLUMNS, MASK_COLUMN)}
    rows_per_shard = min(cfg.shard_size, len(plan))
    buffer = np.empty((rows_per_shard, *cfg.video_shape), dtype=np.uint8)
    mask_buffer = np.empty((rows_per_shard, *cfg.video_shape[:3]), dtype=np.uint8)
    written = 0
    for start in range(0, len(plan), cfg.shard_size):
        chunk = plan[start : start + cfg.shard_size]
        name = f"videos-{start // cfg.shard_size:05d}.npy"
        mask_name = f"masks-{start // cfg.shard_size:05d}.npy"
        for row, (group, condition, index) in enumerate(chunk):
            buffer[row], info = _generate(cfg, group, condition, index)
            mask_buffer[row] = info["mask"]
            columns["sample_id"].append(sample_id(group, condition, index))
            columns["path_video"].append(f"{SHARDS}/{name}#{row}")
            columns["label"].append(1 if index % 2 == 0 else 0)
            columns["condition"].append(condition)
            columns["group"].append(group)
            columns[MASK_COLUMN].append(f"{SHARDS}/{mask_name}#{row}")
        _save_atomic(shards / name, buffer[: len(chunk)])
        _save_atomic(shards / mask_name, mask_buffer[: len(chunk)])
        written += 1
        if progress is not None:
            progress(start + len(chunk), len(plan))
    schema = manifest_schema(cfg)
    table = pa.Table.from_pydict(columns, schema=schema)
    path = out / "manifest.parquet"
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=1024)
    os.replace(tmp, path)
    for stale in shards.glob("*.npy"):
        found = re.fullmatch(r"(?:videos|masks)-(\d+)\.npy", stale.name)
        if found is not None and int(found.group(1)) >= written:
            stale.unlink()
    return path


# ---------------------------------------------------------------------- reading manifests


def _schema(path: str | Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except FileNotFoundError:
        raise ManifestError(
            f"video manifest {path} does not exist; write one with "
            "`bioscale data synth featuretracker --out DIR`"
        ) from None
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"video manifest {path} is not a readable Parquet file: {err}") from err


def video_shape(path: str | Path) -> tuple[int, int, int, int]:
    """(T, H, W, 3) of a video manifest's videos, from its schema metadata."""
    raw = (_schema(path).metadata or {}).get(META_VIDEO_SHAPE)
    try:
        shape = tuple(int(v) for v in raw.decode().split(","))
    except (AttributeError, ValueError):
        shape = ()
    if len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
        raise ManifestError(
            f"video manifest {path}: schema metadata {META_VIDEO_SHAPE.decode()} must read "
            f"'T,H,W,3', got {raw!r}; write it with `bioscale data synth featuretracker`"
        )
    return shape  # type: ignore[return-value]


def generator_config(path: str | Path) -> FeatureTrackerConfig | None:
    """The config that generated a video manifest (schema metadata), or ``None``."""
    raw = (_schema(path).metadata or {}).get(META_GENERATOR)
    if raw is None:
        return None
    try:
        return FeatureTrackerConfig(**json.loads(raw))
    except (ValueError, TypeError) as err:
        raise ManifestError(f"video manifest {path}: unreadable generator metadata: {err}") from err


def inspect(path: str | Path):
    """A video manifest's ``ManifestInfo`` (validated, hashed)."""
    from bioscale.data.manifest import ManifestInfo, manifest_sha

    schema = _schema(path)
    sha = manifest_sha(path)
    missing = [c for c in VIDEO_COLUMNS if c not in schema.names]
    if missing:
        raise ManifestError(
            f"video manifest {path} lacks column(s) {', '.join(missing)}; it needs "
            f"{', '.join(VIDEO_COLUMNS)} (write it with `bioscale data synth featuretracker`)"
        )
    if MASK_COLUMN in schema.names:  # optional: manifests written before masks lack it
        kind_of = schema.field(MASK_COLUMN).type
        if not (pa.types.is_string(kind_of) or pa.types.is_large_string(kind_of)):
            raise ManifestError(
                f"video manifest {path}: {MASK_COLUMN} must hold '<shard>.npy#<row>' strings, "
                f"not {kind_of}; regenerate it with `bioscale data synth featuretracker`"
            )
    kind = (schema.metadata or {}).get(META_KIND)
    if kind is not None and kind != b"video":
        raise ManifestError(
            f"manifest {path} is a {kind.decode()!r} manifest, not a video one; "
            "point data.manifest at a video manifest or set data.kind to match"
        )
    video_shape(path)
    table = pq.read_table(path, columns=["label", "condition", "group"])
    bad_groups = sorted(set(table.column("group").to_pylist()) - set(GROUPS))
    if bad_groups:
        raise ManifestError(
            f"video manifest {path}: group must be one of {', '.join(GROUPS)}, got {bad_groups} (regenerate it with `bioscale data synth featuretracker`)"
        )
    bad_labels = sorted(set(table.column("label").to_pylist()) - {0, 1})
    if bad_labels:
        raise ManifestError(
            f"video manifest {path}: label must be 0 or 1, got {bad_labels} (regenerate it with `bioscale data synth featuretracker`)"
        )
    bad_conditions = sorted(set(table.column("condition").to_pylist()) - set(CONDITIONS))
    if bad_conditions:
        raise ManifestError(
            f"video manifest {path}: unknown condition(s) {bad_conditions}; the conditions are "
            f"{', '.join(CONDITIONS)}"
        )
    return ManifestInfo(
        path=str(Path(path).resolve()),
        sha=sha,
        kind="video",
        n_rows=table.num_rows,
        n_features=None,
    )


@dataclass(frozen=True)
class _Stored:
    """What a manifest column points at: ``path_video`` → videos, ``path_mask`` → masks."""

    noun: str  # "video" or "mask"
    column: str
    layout: str  # the shard array's shape, in words
    ndim: int  # of a shard array
    channels: int | None  # its last axis, if fixed

    @property
    def empty(self) -> tuple[int, ...]:
        """The shape read back for no values: (0, 0, 0, 0, 3) videos, (0, 0, 0, 0) masks."""
        if self.channels is None:
            return (0,) * self.ndim
        return (0,) * (self.ndim - 1) + (self.channels,)


_VIDEOS = _Stored("video", "path_video", "(n, T, H, W, 3)", 5, 3)
_MASKS = _Stored("mask", MASK_COLUMN, "(n, T, H, W)", 4, None)


@lru_cache(maxsize=64)
def _open_shard(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """A shard, memory-mapped (cached per file version: a rewritten shard is opened anew)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ManifestError(f"shard {path} is unreadable: {err}") from err


def _shard(path: Path, stored: _Stored) -> np.ndarray:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ManifestError(
            f"{stored.noun} shard {path} does not exist; regenerate the dataset "
            f"(`bioscale data synth featuretracker`) or fix {stored.column}"
        ) from None
    array = _open_shard(str(path), stat.st_mtime_ns, stat.st_size)
    if (
        array.ndim != stored.ndim
        or (stored.channels is not None and array.shape[-1] != stored.channels)
        or array.dtype != np.uint8
    ):
        raise ManifestError(
            f"{stored.noun} shard {path} holds {array.dtype} {array.shape}, not uint8 "
            f"{stored.layout}"
        )
    return array


def _read(paths: np.ndarray, root: str | Path, stored: _Stored) -> np.ndarray:
    """``<file>#<row>`` values → the stacked rows; each shard opened once, one fancy index."""
    root = Path(root)
    refs = np.asarray(paths, dtype=object).reshape(-1)
    where: dict[Path, list[tuple[int, int]]] = {}
    for i, ref in enumerate(refs):
        file, sep, row = str(ref).rpartition("#")
        if not sep or not row.isdigit():
            raise ManifestError(f"{stored.column} {ref!r} is not '<shard>.npy#<row>'")
        where.setdefault((root / file).resolve(), []).append((i, int(row)))
    out = np.empty(stored.empty, dtype=np.uint8)
    for n, (file, picks) in enumerate(where.items()):
        shard = _shard(file, stored)
        rows = np.array([r for _, r in picks])
        if rows.max() >= len(shard):
            raise ManifestError(
                f"{stored.noun} shard {file} holds {len(shard)} {stored.noun}s; {stored.column} "
                f"asks for row {int(rows.max())} (regenerate the dataset or fix {stored.column})"
            )
        if n == 0:
            out = np.empty((len(refs), *shard.shape[1:]), dtype=np.uint8)
        elif out.shape[1:] != shard.shape[1:]:
            raise ManifestError(
                f"{stored.noun} shard {file} holds {stored.noun}s of {shard.shape[1:]}, others "
                f"{out.shape[1:]}"
            )
        order = np.argsort(rows, kind="stable")  # ascending rows: a forward pass over the map
        out[np.array([i for i, _ in picks])[order]] = shard[rows[order]]
    return out


def read_videos(paths: np.ndarray, root: str | Path) -> np.ndarray:
    """``path_video`` values (``<file>#<row>``, relative to ``root`` or absolute) → uint8
    (B, T, H, W, 3); each shard is opened once (memory-mapped, cached) and read with one fancy
    index. No values: an empty (0, 0, 0, 0, 3) array."""
    return _read(paths, root, _VIDEOS)


def read_masks(paths: np.ndarray, root: str | Path) -> np.ndarray:
    """``path_mask`` values (``<file>#<row>``, relative to ``root`` or absolute) → uint8
    (B, T, H, W) ``MASK_CODES``, read as ``read_videos`` reads videos. No values: an empty
    (0, 0, 0, 0) array."""
    return _read(paths, root, _MASKS)


def has_masks(path: str | Path) -> bool:
    """Whether a video manifest carries ground-truth masks (a ``path_mask`` column)."""
    return MASK_COLUMN in _schema(path).names


def decode_videos(
    batch: dict[str, np.ndarray], *, root: str, masks: bool = False
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` (numpy format): ``path_video`` → ``x`` (B, T, 3, H, W) float32 in
    [0, 1]; with ``masks`` and a ``path_mask`` column, ``path_mask`` → ``mask`` (B, T, H, W)
    uint8 ``MASK_CODES`` (without ``masks`` ``path_mask`` is dropped); the other columns pass
    through."""
    videos = read_videos(batch["path_video"], root)  # (B, T, H, W, 3) uint8
    x = videos.transpose(0, 1, 4, 2, 3).astype(np.float32) / np.float32(255.0)
    dropped = ("path_video", MASK_COLUMN)
    out = {name: values for name, values in batch.items() if name not in dropped}
    out["x"] = np.ascontiguousarray(x)
    if masks and MASK_COLUMN in batch:
        out["mask"] = read_masks(batch[MASK_COLUMN], root)
    return out
