"""FeatureTracker videos: the published generator's rules, checked against each video's ground
truth, the ground-truth masks against the frames, and the video manifest's round trip
(write → inspect → read → decode)."""

import colorsys
import dataclasses
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bioscale.data import featuretracker as ft
from bioscale.data.featuretracker import (
    CONDITIONS,
    END_COLOR,
    MASK_CODES,
    MASK_COLUMN,
    START_COLOR,
    VIDEO_COLUMNS,
    FeatureTrackerConfig,
    condition_name,
    decode_videos,
    generate_featuretracker,
    generate_video,
    generator_config,
    has_masks,
    inspect,
    mask_frames,
    parse_condition,
    read_masks,
    read_videos,
    video_shape,
)
from bioscale.errors import ConfigError, ManifestError

pytestmark = pytest.mark.timeout(120)

PUBLISHED = FeatureTrackerConfig()  # gen_stim.sh: 32 frames of 32×32, 10 distractors, radius 1
PER_CONDITION = 24


@pytest.fixture(scope="module")
def videos():
    """{condition: [(frames, info), ...]}: PER_CONDITION videos of every condition, alternating
    positives and negatives, at the published sizes."""
    out = {}
    for c, name in enumerate(CONDITIONS):
        shape, color = parse_condition(name)
        out[name] = [
            generate_video(
                np.random.default_rng([7, c, i]),
                shape=shape,
                color=color,
                positive=i % 2 == 0,
                cfg=PUBLISHED,
            )
            for i in range(PER_CONDITION)
        ]
    return out


def _all(videos):
    return [v for vs in videos.values() for v in vs]


def _objects(info) -> np.ndarray:
    """(1 + D, T, 2) top-left pixels, the target first."""
    return np.concatenate([info["target"][None], info["distractors"]])


# ------------------------------------------------------------------------------ conditions


def test_conditions_are_the_nine_shape_by_colour_levels():
    assert len(CONDITIONS) == len(set(CONDITIONS)) == 9
    assert condition_name("id", "id") == "shape-id_color-id"
    assert {parse_condition(c) for c in CONDITIONS} == {
        (s, c) for s in ("none", "id", "ood") for c in ("none", "id", "ood")
    }
    with pytest.raises(ConfigError, match=r"shape-none_color-none.*shape-ood_color-ood"):
        parse_condition("shape-id_colour-id")
    with pytest.raises(ConfigError, match="none, id, ood"):
        condition_name("big", "id")
    assert ft.is_ood("shape-id_color-ood") and not ft.is_ood("shape-id_color-id")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("videos", 3),
        ("videos", 0),
        ("test_videos", -2),
        ("seed", -1),
        ("frames", 1),
        ("frames", 400),
        ("size", 5),
        ("distractors", 0),
        ("radius", 0),
        ("skip", 6),
        ("rigidity", 0.0),
        ("rigidity", 1.5),
        ("color_speed", -0.1),
        ("delta_angle_max", 0.0),
        ("shard_size", 0),
        ("videos", 2.5),
        ("rigidity", float("nan")),
    ],
)
def test_config_names_the_bad_field(field, value):
    with pytest.raises(ConfigError, match=f"featuretracker {field} must be"):
        FeatureTrackerConfig(**{field: value})


def test_config_rejects_unknown_and_repeated_conditions():
    with pytest.raises(ConfigError, match="condition: unknown FeatureTracker condition 'shape-id'"):
        FeatureTrackerConfig(condition="shape-id")
    with pytest.raises(ConfigError, match="test_conditions: unknown FeatureTracker condition"):
        FeatureTrackerConfig(test_conditions="shape-id_color-id,shape-ood")
    with pytest.raises(ConfigError, match="twice"):
        FeatureTrackerConfig(test_conditions="shape-id_color-id, shape-id_color-id")
    with pytest.raises(ConfigError, match="'all' or a comma list"):
        FeatureTrackerConfig(test_conditions=" , ")
    cfg = FeatureTrackerConfig(test_conditions="shape-ood_color-none,shape-none_color-none")
    assert cfg.test_condition_names == ("shape-ood_color-none", "shape-none_color-none")
    assert FeatureTrackerConfig().test_condition_names == CONDITIONS
    # every field is a scalar, so each one is a `bioscale data synth featuretracker` flag
    assert all(
        isinstance(f.default, int | float | str | bool)
        for f in dataclasses.fields(FeatureTrackerConfig)
    )


# ------------------------------------------------------------------------- markers, labels


def test_positives_end_on_the_marker_negatives_on_the_nearest_distractor(videos):
    for _, info in _all(videos):
        target, ends = info["target"], info["distractors"][:, -1]
        assert (info["start_marker"] == target[0]).all()
        if info["label"] == 1:
            assert (info["end_marker"] == target[-1]).all()
            continue
        # the end marker is where some distractor ends, never on the target's end …
        assert ((ends == info["end_marker"]).all(axis=1)).any()
        assert not (info["end_marker"] == target[-1]).all()
        # … and no other distractor (off the target's pixel) ends nearer the target's end
        elsewhere = ~(ends == target[-1]).all(axis=1)
        dist = np.hypot(*(ends[elsewhere] - target[-1]).T)
        assert np.hypot(*(info["end_marker"] - target[-1])) <= dist.min() + 1e-9
    labels = [info["label"] for _, info in _all(videos)]
    assert sum(labels) == len(labels) // 2


def test_paths_stay_in_the_frame_and_move_smoothly(videos):
    room = PUBLISHED.size - PUBLISHED.box
    steps, travelled = [], []
    for _, info in _all(videos):
        pos = _objects(info)
        assert pos.shape == (1 + PUBLISHED.distractors, PUBLISHED.frames, 2)
        assert pos.min() >= 0 and pos.max() <= room
        step = np.abs(np.diff(pos, axis=1)).max(axis=2)  # (objects, T-1) Chebyshev px/frame
        steps.append(step)
        travelled.append(np.abs(pos[:, -1] - pos[:, 0]).max(axis=1))
    steps, travelled = np.concatenate(steps), np.concatenate(travelled)
    # one path point per frame: about a pixel a frame at most (an axis on which the path barely
    # moves is stretched to the frame by GenCoord's per-axis scaling, hence the slack of 2)
    assert steps.max() <= 2
    assert (steps <= 1).mean() > 0.999
    # and the objects do travel: several pixels over the video, not all of them the same
    assert np.median(travelled) >= 3
    assert len(np.unique(travelled)) > 5


def test_paths_do_not_depend_on_the_appearance():
    """The same path stream rendered in two conditions: the same paths and markers (the dataset
    shows each test video's paths in every condition)."""
    a, info_a = generate_video(
        np.random.default_rng(3),
        shape="none",
        color="none",
        positive=False,
        cfg=PUBLISHED,
        appearance=np.random.default_rng(1),
    )
    b, info_b = generate_video(
        np.random.default_rng(3),
        shape="ood",
        color="ood",
        positive=False,
        cfg=PUBLISHED,
        appearance=np.random.default_rng(2),
    )
    for key in ("target", "distractors", "start_marker", "end_marker"):
        assert (info_a[key] == info_b[key]).all()
    assert not (a == b).all()


def _rim_mask(box: int) -> np.ndarray:
    rim = np.ones((box, box), bool)
    rim[1:-1, 1:-1] = False
    return rim


def test_frames_show_exactly_the_markers_and_objects(videos):
    """Pixel-level: every frame shows both markers where they are (red start, blue end) wherever no
    object covers them, each object's cells in its colour with the target on top, and black
    everywhere else."""
    cfg = PUBLISHED
    box = cfg.box
    rim = _rim_mask(box)
    visible_start, visible_end = [], []
    for frames, info in _all(videos):
        pos, shapes, colors = _objects(info), info["shapes"], info["colors"]
        for t in range(cfg.frames):
            covered = np.zeros((cfg.size, cfg.size), bool)  # by any object's live cell
            for k in range(len(pos)):
                r, c = pos[k, t]
                covered[r : r + box, c : c + box] |= shapes[k, t]
            drawn = covered.copy()
            end_rim = np.zeros_like(covered)
            r, c = info["end_marker"]
            end_rim[r : r + box, c : c + box] = rim
            start_rim = np.zeros_like(covered)
            r, c = info["start_marker"]
            start_rim[r : r + box, c : c + box] = rim
            drawn |= start_rim | end_rim
            frame = frames[t]
            assert (frame[~drawn] == 0).all()
            assert (frame[drawn].max(axis=1) > 0).all()
            show_end = end_rim & ~covered
            show_start = start_rim & ~covered & ~end_rim
            assert (frame[show_end] == END_COLOR).all()
            assert (frame[show_start] == START_COLOR).all()
            visible_start.append(show_start.sum())
            visible_end.append(show_end.sum())
            # the target is drawn last: its cells show its own colour
            r, c = pos[0, t]
            cells = frame[r : r + box, c : c + box][shapes[0, t]]
            assert (cells == colors[0, t]).all()
    # the markers are in view in (nearly) every frame: objects passing over a rim hide part of it
    # (a grown 5×5 shape all of it), and the end marker hides a start marker under it
    for visible in (np.array(visible_start), np.array(visible_end)):
        assert np.mean(visible >= 1) > 0.98 and np.mean(visible >= 8) > 0.85


# ---------------------------------------------------------------------- ground-truth masks

BACKGROUND, MARKER, DISTRACTOR, TARGET = (
    MASK_CODES[k] for k in ("background", "marker", "distractor", "target")
)


def test_mask_codes_are_the_four_groups():
    assert MASK_CODES == {"background": 0, "marker": 1, "distractor": 2, "target": 3}


def test_masks_label_what_the_frames_show(videos):
    """Every pixel's code against the frame: background black, markers pure red or blue,
    distractor cells a distractor's colour of that frame, target cells the target's."""
    seen = {code: 0 for code in MASK_CODES.values()}
    for frames, info in _all(videos):
        mask = mask_frames(info, PUBLISHED)
        assert mask.dtype == np.uint8 and mask.shape == frames.shape[:3]
        assert (info["mask"] == mask).all()  # generate_video paints the same mask
        lit = frames.max(axis=-1) > 0
        assert (lit == (mask != BACKGROUND)).all()  # coded exactly where something is drawn
        markers = frames[mask == MARKER]
        red, blue = (markers == START_COLOR).all(axis=1), (markers == END_COLOR).all(axis=1)
        assert (red | blue).all()
        target_colour = np.broadcast_to(info["colors"][0][:, None, None], frames.shape)
        assert (frames[mask == TARGET] == target_colour[mask == TARGET]).all()
        for t in range(PUBLISHED.frames):
            cells = frames[t][mask[t] == DISTRACTOR]  # (P, 3)
            palette = info["colors"][1:, t]  # (D, 3) the distractors' colours in frame t
            assert (cells[:, None, :] == palette[None]).all(axis=2).any(axis=1).all()
            # the target is drawn last: all its live cells are target-coded
            r, c = info["target"][t]
            box = mask[t, r : r + PUBLISHED.box, c : c + PUBLISHED.box]
            assert (box[info["shapes"][0, t]] == TARGET).all()
        for code in seen:
            seen[code] += int((mask == code).sum())
    assert min(seen.values()) > 0


def _published_mask_frames(info, frames: int, size: int) -> np.ndarray:
    """(T, 3, H, W) bool, ``utils_drawing.plot_frame_mask``'s frames rebuilt box by box: channel
    0 the markers' rims, 1 distractors, 2 the target, each object's cells clearing the channels
    under them."""
    box = info["box"]
    rim = _rim_mask(box)
    out = np.zeros((frames, 3, size, size), bool)
    for r, c in (info["start_marker"], info["end_marker"]):
        out[:, 0, r : r + box, c : c + box] |= rim
    order = [(k + 1, 1) for k in range(len(info["distractors"]))] + [(0, 2)]
    pos = _objects(info)
    for t in range(frames):
        for k, channel in order:
            r, c = pos[k, t]
            cells = info["shapes"][k, t]
            window = out[t, :, r : r + box, c : c + box]  # (3, box, box) view
            window[:, cells] = False
            window[channel, cells] = True
    return out


def test_masks_are_the_published_mask_frames(videos):
    """One-hot codes 1–3 equal the published mask frames' three channels (the layout the CV-RNN's
    synchrony loss reads)."""
    for vs in videos.values():
        for _, info in vs[:6]:
            mask = mask_frames(info, PUBLISHED)
            one_hot = np.stack([mask == code for code in (MARKER, DISTRACTOR, TARGET)], axis=1)
            expected = _published_mask_frames(info, PUBLISHED.frames, PUBLISHED.size)
            assert one_hot.shape == expected.shape == (32, 3, 32, 32)
            assert (one_hot == expected).all()


def test_masks_are_deterministic_and_follow_the_paths_not_the_colours():
    def video(color, look):
        return generate_video(
            np.random.default_rng(11),
            shape="none",
            color=color,
            positive=True,
            cfg=PUBLISHED,
            appearance=np.random.default_rng(look),
        )

    (a, info_a), (b, info_b) = video("id", 1), video("ood", 2)
    assert not (a == b).all()  # other colours …
    assert (mask_frames(info_a, PUBLISHED) == mask_frames(info_b, PUBLISHED)).all()  # same groups
    assert (mask_frames(info_a, PUBLISHED) == video("id", 1)[1]["mask"]).all()
    # morphing shapes: the same streams give the same mask, another appearance stream another
    grown = [
        generate_video(
            np.random.default_rng(11),
            shape="id",
            color="id",
            positive=True,
            cfg=PUBLISHED,
            appearance=np.random.default_rng(look),
        )[1]["mask"]
        for look in (3, 3, 4)
    ]
    assert (grown[0] == grown[1]).all() and not (grown[0] == grown[2]).all()


def test_mask_frames_refuses_an_info_of_another_config(videos):
    _, info = videos["shape-id_color-id"][0]
    with pytest.raises(ConfigError, match=r"frames=8.*pass the config that generated the video"):
        mask_frames(info, dataclasses.replace(PUBLISHED, frames=8))
    with pytest.raises(ConfigError, match="pass the config that generated the video"):
        mask_frames(info, dataclasses.replace(PUBLISHED, size=12))
    with pytest.raises(ConfigError, match="info lacks shapes"):
        mask_frames({k: v for k, v in info.items() if k != "shapes"}, PUBLISHED)


# ------------------------------------------------------------------- shape and colour rules


def _neighbours(grid: np.ndarray) -> np.ndarray:
    """Live 8-neighbours of each cell of (..., G, G) boxes, nothing beyond a box."""
    g = grid.shape[-1]
    padded = np.pad(grid.astype(int), [(0, 0)] * (grid.ndim - 2) + [(1, 1), (1, 1)])
    return sum(
        padded[..., 1 + dy : 1 + dy + g, 1 + dx : 1 + dx + g]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    )


def _birth(grid):  # Shape_ID.update: a dead cell with exactly 3 live neighbours is born
    return grid | (~grid & (_neighbours(grid) == 3))


def _death(grid):  # Shape_OOD.update: a live cell with < 2 or > 3 live neighbours dies
    n = _neighbours(grid)
    return grid & ((n == 2) | (n == 3))


def test_shapes_morph_as_published(videos):
    box = PUBLISHED.box
    centre = np.zeros((box, box), bool)
    centre[1:-1, 1:-1] = True
    grew_past_seed = shrank = 0
    for name, vs in videos.items():
        shape, _ = parse_condition(name)
        shapes = np.stack([info["shapes"] for _, info in vs])  # (videos, objects, T, 5, 5)
        assert shapes.shape[3:] == (box, box)
        assert not (shapes[:, :, -1] & ~centre).any()  # the last frame's rim is cleared
        if shape == "none":  # a fixed 3×3 square, every frame
            assert (shapes == centre).all()
            continue
        assert not (shapes[:, :, 0] & ~centre).any()  # frame 0: a random seed in the centre
        prev, now = shapes[:, :, :-1], shapes[:, :, 1:]
        expected = (_birth if shape == "id" else _death)(prev)
        expected[:, :, -1] &= centre  # end(): one more morph, then the rim cleared
        reseeded = ~expected.any(axis=(-2, -1))  # an emptied shape gets a fresh centre
        assert (now == expected)[~reseeded].all()
        assert not (now & ~centre)[reseeded].any()
        middle_lost = (prev & ~now)[:, :, :-1].any(axis=(-2, -1))
        if shape == "id":  # growth only: no cell is lost before the last frame
            assert not middle_lost.any()
            grew_past_seed += int((shapes[:, :, :-1] & ~centre).any(axis=(-3, -2, -1)).sum())
        else:  # erosion inside the centre: cells appear only in a re-seeded shape
            assert not (shapes & ~centre).any()
            assert not ((now & ~prev).any(axis=(-2, -1)) & ~reseeded).any()
            shrank += int(middle_lost.any(axis=-1).sum())
    # the two families differ as defined: id shapes grow out of the seed box, ood ones erode
    n_paths = 3 * PER_CONDITION * (1 + PUBLISHED.distractors)
    assert grew_past_seed > n_paths // 2 and shrank > n_paths // 2


def test_colours_drift_as_published(videos):
    turn = 360.0 * PUBLISHED.color_speed  # 5.625° a frame
    for name, vs in videos.items():
        _, color = parse_condition(name)
        for frames, info in vs:
            colors, hues = info["colors"], info["hues"]
            if color == "none":
                assert hues is None and (colors == (0, 255, 0)).all()
                continue
            lo = 0.0 if color == "id" else 180.0  # id hues in [0°, 180°), ood in [180°, 360°)
            assert hues.min() >= lo and hues.max() < lo + 180.0
            assert np.allclose(np.diff(hues, axis=1) % 180.0, turn)
            assert np.allclose(hues[:, 0] % 1.0, 0.0)  # integer start hues
            # the drawn colour is colorsys's full-saturation RGB of the hue, truncated to bytes
            for k in range(len(colors)):
                for t in (0, PUBLISHED.frames // 2, PUBLISHED.frames - 1):
                    rgb = [int(v * 255) for v in colorsys.hsv_to_rgb(hues[k, t] / 360.0, 1, 1)]
                    assert tuple(colors[k, t]) == tuple(rgb)
            # and the target's pixels read back as hues of their own half of the circle
            box = PUBLISHED.box
            for t in range(PUBLISHED.frames):
                r, c = info["target"][t]
                cells = frames[t, r : r + box, c : c + box][info["shapes"][0, t]] / 255.0
                for px in cells:
                    h = colorsys.rgb_to_hsv(*px)[0] * 360.0
                    off = (h - lo) % 360.0  # within [0, 180) up to byte rounding
                    assert off < 180.5 or off > 359.5, (name, h)


def test_hsv_to_rgb_agrees_with_colorsys_byte_for_byte():
    hues = np.arange(0, 360, 0.125) / 360.0
    expected = [[int(v * 255) for v in colorsys.hsv_to_rgb(h, 1.0, 1.0)] for h in hues]
    assert (ft.hsv_to_rgb(hues) == np.array(expected, np.uint8)).all()


# ------------------------------------------------------------------------------- the dataset

SMALL = dict(
    videos=10,
    test_videos=4,
    test_conditions="shape-none_color-none,shape-ood_color-ood",
    frames=8,
    shard_size=7,
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cfg = FeatureTrackerConfig(**SMALL)
    calls = []
    path = generate_featuretracker(
        cfg, tmp_path_factory.mktemp("ft"), progress=lambda d, t: calls.append((d, t))
    )
    return cfg, path, calls


def _by_id(path):
    table = pq.read_table(path)
    videos = read_videos(table.column("path_video").to_numpy(zero_copy_only=False), path.parent)
    return dict(zip(table.column("sample_id").to_pylist(), videos, strict=True))


def _masks_by_id(path):
    table = pq.read_table(path)
    masks = read_masks(table.column("path_mask").to_numpy(zero_copy_only=False), path.parent)
    return dict(zip(table.column("sample_id").to_pylist(), masks, strict=True))


def test_dataset_layout_and_label_balance(written):
    cfg, path, calls = written
    table = pq.read_table(path)
    assert tuple(table.column_names) == (*VIDEO_COLUMNS, MASK_COLUMN)
    assert table.schema.field("label").type == pa.int8()
    rows = table.to_pylist()
    assert len(rows) == 10 + 2 * 4
    assert [r["group"] for r in rows] == ["train"] * 10 + ["test"] * 8
    assert [r["condition"] for r in rows[10:]] == ["shape-none_color-none"] * 4 + [
        "shape-ood_color-ood"
    ] * 4
    assert {r["condition"] for r in rows[:10]} == {cfg.condition}
    assert rows[3]["sample_id"] == "ft-train-000003"
    assert len({r["sample_id"] for r in rows}) == len(rows)
    assert sum(r["label"] for r in rows[:10]) == 5
    for c in cfg.test_condition_names:
        assert [r["label"] for r in rows if r["condition"] == c and r["group"] == "test"] == [
            1,
            0,
            1,
            0,
        ]
    # shards of at most shard_size videos; path_video relative to the manifest's folder
    assert rows[7]["path_video"] == "shards/videos-00001.npy#0"
    assert rows[7]["path_mask"] == "shards/masks-00001.npy#0"
    shards = sorted((path.parent / "shards").glob("videos-*.npy"))
    assert [np.load(s, mmap_mode="r").shape for s in shards] == [
        (n, 8, 32, 32, 3) for n in (7, 7, 4)
    ]
    # one mask shard beside each video shard, rows in the same order (T, H, W) uint8
    masks = sorted((path.parent / "shards").glob("masks-*.npy"))
    assert [(m.dtype, m.shape) for m in map(np.load, masks)] == [
        (np.uint8, (n, 8, 32, 32)) for n in (7, 7, 4)
    ]
    assert calls == [(7, 18), (14, 18), (18, 18)]
    meta = table.schema.metadata
    assert meta[b"bioscale.kind"] == b"video"
    assert meta[b"bioscale.video_shape"] == b"8,32,32,3"
    assert json.loads(meta[b"bioscale.generator"]) == dataclasses.asdict(cfg)
    assert generator_config(path) == cfg


def test_same_seed_same_bytes_and_smaller_sets_are_subsets(tmp_path, written):
    cfg, path, _ = written
    again = generate_featuretracker(cfg, tmp_path / "again")
    assert again.read_bytes() == path.read_bytes()
    for shard in (path.parent / "shards").glob("*.npy"):
        assert (again.parent / "shards" / shard.name).read_bytes() == shard.read_bytes()
    # a larger pool and one more test condition: every existing video unchanged
    bigger = FeatureTrackerConfig(
        **{
            **SMALL,
            "videos": 14,
            "test_conditions": SMALL["test_conditions"] + ",shape-id_color-none",
        }
    )
    big = generate_featuretracker(bigger, tmp_path / "big")
    small, large = _by_id(path), _by_id(big)
    assert set(small) < set(large)
    for sid, video in small.items():
        assert (large[sid] == video).all(), sid
    small_masks, large_masks = _masks_by_id(path), _masks_by_id(big)
    for sid, mask in small_masks.items():
        assert (large_masks[sid] == mask).all(), sid
    # another seed, other videos; the manifest's bytes (the data lineage) change with the config
    other = generate_featuretracker(dataclasses.replace(cfg, seed=1), tmp_path / "other")
    assert other.read_bytes() != path.read_bytes()
    assert not (_by_id(other)["ft-train-000000"] == small["ft-train-000000"]).all()


def test_manifest_round_trips_through_inspect_read_and_decode(written):
    _, path, _ = written
    info = inspect(path)
    assert (info.kind, info.n_rows, info.n_features) == ("video", 18, None)
    assert len(info.sha) == 64
    assert video_shape(path) == (8, 32, 32, 3)
    table = pq.read_table(path)
    rel = table.column("path_video").to_numpy(zero_copy_only=False)[[12, 0, 8, 1]]
    videos = read_videos(rel, path.parent)
    assert videos.dtype == np.uint8 and videos.shape == (4, 8, 32, 32, 3)
    absolute = np.array([str(path.parent / p) for p in rel], dtype=object)
    assert (read_videos(absolute, "/nonexistent") == videos).all()
    # the start marker (red rim) is in every frame of what was read back
    assert ((videos == START_COLOR).all(axis=-1).sum(axis=(2, 3)) > 0).all()
    batch = {
        "sample_id": table.column("sample_id").to_numpy(zero_copy_only=False)[[12, 0, 8, 1]],
        "path_video": rel,
        "label": table.column("label").to_numpy()[[12, 0, 8, 1]],
    }
    out = decode_videos(batch, root=str(path.parent))
    assert set(out) == {"x", "sample_id", "label"}
    x = out["x"]
    assert x.dtype == np.float32 and x.shape == (4, 8, 3, 32, 32)
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() == 1.0
    assert np.allclose(x * 255.0, videos.transpose(0, 1, 4, 2, 3))
    assert (out["label"] == batch["label"]).all() and (out["sample_id"] == batch["sample_id"]).all()


def test_masks_round_trip_through_the_manifest_and_decode(tmp_path, written):
    cfg, path, _ = written
    assert has_masks(path)
    table = pq.read_table(path)
    pick = [12, 0, 8, 1]
    rows = [table.slice(i, 1).to_pylist()[0] for i in pick]
    videos = read_videos(np.array([r["path_video"] for r in rows], dtype=object), path.parent)
    masks = read_masks(np.array([r["path_mask"] for r in rows], dtype=object), path.parent)
    assert masks.dtype == np.uint8 and masks.shape == (4, 8, 32, 32)
    # each row's mask is the mask of that row's video, regenerated from its seeds
    for row, video, mask in zip(rows, videos, masks, strict=True):
        index = int(row["sample_id"].rsplit("-", 1)[1])
        shape, color = parse_condition(row["condition"])
        frames, info = generate_video(
            ft.video_seed(cfg.seed, row["group"], "paths", index),
            shape=shape,
            color=color,
            positive=row["label"] == 1,
            cfg=cfg,
            appearance=ft.video_seed(cfg.seed, row["group"], row["condition"], index),
        )
        assert (frames == video).all()
        assert (mask == mask_frames(info, cfg)).all()
        assert ((video.max(axis=-1) > 0) == (mask > 0)).all()
    batch = {
        "sample_id": np.array([r["sample_id"] for r in rows], dtype=object),
        "path_video": np.array([r["path_video"] for r in rows], dtype=object),
        "path_mask": np.array([r["path_mask"] for r in rows], dtype=object),
        "label": np.array([r["label"] for r in rows]),
    }
    out = decode_videos(batch, root=str(path.parent), masks=True)
    assert set(out) == {"x", "mask", "sample_id", "label"}
    assert out["mask"].dtype == np.uint8 and (out["mask"] == masks).all()
    assert np.allclose(out["x"] * 255.0, videos.transpose(0, 1, 4, 2, 3))
    plain = decode_videos(batch, root=str(path.parent))  # masks not asked for: path_mask dropped
    assert set(plain) == {"x", "sample_id", "label"} and (plain["x"] == out["x"]).all()
    no_column = {k: v for k, v in batch.items() if k != "path_mask"}
    assert set(decode_videos(no_column, root=str(path.parent), masks=True)) == set(plain)
    assert read_masks(np.array([], dtype=object), path.parent).shape == (0, 0, 0, 0)
    # a manifest without masks (written before them) is still a valid video manifest
    pq.write_table(table.drop_columns([MASK_COLUMN]), tmp_path / "plain.parquet")
    assert not has_masks(tmp_path / "plain.parquet")
    assert inspect(tmp_path / "plain.parquet").n_rows == 18


def test_regenerating_in_place_drops_stale_shards_and_reads_the_new_videos(tmp_path):
    cfg = FeatureTrackerConfig(**{**SMALL, "shard_size": 2})
    path = generate_featuretracker(cfg, tmp_path)
    first = _by_id(path)["ft-train-000000"]
    first_mask = _masks_by_id(path)["ft-train-000000"]
    assert len(list((tmp_path / "shards").glob("videos-*.npy"))) == 9
    assert len(list((tmp_path / "shards").glob("masks-*.npy"))) == 9
    path = generate_featuretracker(dataclasses.replace(cfg, shard_size=100, seed=5), tmp_path)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "masks-00000.npy",
        "videos-00000.npy",
    ]
    assert not (_by_id(path)["ft-train-000000"] == first).all()  # not a stale cached shard
    assert not (_masks_by_id(path)["ft-train-000000"] == first_mask).all()


# ---------------------------------------------------------------------------------- errors


def test_missing_or_broken_data_is_named(tmp_path, written):
    _, path, _ = written
    root = path.parent
    with pytest.raises(ManifestError, match=re.escape("videos-00009.npy does not exist")):
        read_videos(np.array(["shards/videos-00009.npy#0"], dtype=object), root)
    with pytest.raises(ManifestError, match=re.escape("holds 4 videos; path_video asks for row 4")):
        read_videos(np.array(["shards/videos-00002.npy#4"], dtype=object), root)
    with pytest.raises(ManifestError, match=re.escape("is not '<shard>.npy#<row>'")):
        read_videos(np.array(["shards/videos-00000.npy"], dtype=object), root)
    with pytest.raises(ManifestError, match="does not exist"):
        inspect(tmp_path / "none.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ManifestError, match="not a readable Parquet file"):
        inspect(tmp_path / "junk.parquet")

    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["condition", "group"]), tmp_path / "cols.parquet")
    with pytest.raises(ManifestError, match=re.escape("lacks column(s) condition, group")):
        inspect(tmp_path / "cols.parquet")
    groups = table.column("group").to_pylist()
    groups[0] = "seen"
    bad = table.set_column(4, "group", pa.array(groups))
    pq.write_table(bad.replace_schema_metadata(table.schema.metadata), tmp_path / "grp.parquet")
    with pytest.raises(
        ManifestError, match=re.escape("group must be one of train, test, got ['seen']")
    ):
        inspect(tmp_path / "grp.parquet")
    with pytest.raises(ManifestError, match=re.escape("masks-00009.npy does not exist")):
        read_masks(np.array(["shards/masks-00009.npy#0"], dtype=object), root)
    with pytest.raises(ManifestError, match=re.escape("holds 4 masks; path_mask asks for row 5")):
        read_masks(np.array(["shards/masks-00002.npy#5"], dtype=object), root)
    with pytest.raises(ManifestError, match=re.escape("not uint8 (n, T, H, W)")):
        read_masks(np.array(["shards/videos-00000.npy#0"], dtype=object), root)
    with pytest.raises(ManifestError, match=re.escape("path_mask 'm' is not '<shard>.npy#<row>'")):
        read_masks(np.array(["m"], dtype=object), root)
    ints = table.set_column(5, MASK_COLUMN, pa.array(range(table.num_rows)))
    pq.write_table(ints.replace_schema_metadata(table.schema.metadata), tmp_path / "ints.parquet")
    with pytest.raises(
        ManifestError, match=re.escape("path_mask must hold '<shard>.npy#<row>' strings")
    ):
        inspect(tmp_path / "ints.parquet")
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "meta.parquet")
    with pytest.raises(ManifestError, match=re.escape("bioscale.video_shape must read 'T,H,W,3'")):
        inspect(tmp_path / "meta.parquet")
