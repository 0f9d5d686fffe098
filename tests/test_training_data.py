"""Sampling, augmentation and targets of the trainer (reference section 6), with known answers."""
import math

import numpy as np
import pytest

from edge_stad.data.annotations import GroundTruth
from edge_stad.data.augment import augment, crop, expand, mirror
from edge_stad.data.sampling import clip_frames, training_samples, tube_boxes_at
from edge_stad.data.targets import build_targets, draw_gaussian, gaussian_radius


def gt_with(tubes, nframes=30):
    return GroundTruth(labels=["a", "b"], gttubes={"a/v": tubes}, nframes={"a/v": nframes}, train_videos=[["a/v"]],
                       test_videos=[[]], resolution={"a/v": (100, 200)})


def tube(start, end, x=10.0):
    frames = np.arange(start, end + 1, dtype=np.float64)
    return np.stack([frames, frames * 0 + x, frames * 0 + 20, frames * 0 + x + 30, frames * 0 + 60], axis=1)


def test_clip_frames_tile_the_window_and_clamp_at_frame_one():
    assert clip_frames(15, 3, 5) == [(1, 2, 3, 4, 5), (6, 7, 8, 9, 10), (11, 12, 13, 14, 15)]
    assert clip_frames(7, 3, 5) == [(1, 1, 1, 1, 1), (1, 1, 1, 1, 2), (3, 4, 5, 6, 7)]
    assert clip_frames(4, 1, 2) == [(3, 4)]


def test_training_samples_never_straddle_an_action_boundary():
    # K=2, n=3: s0 = 4, the span checked for frame f is [f - 3, f].
    gt = gt_with({0: [tube(10, 20)]})
    frames = [f for _, f in training_samples(gt, ["a/v"], 2, 3)]
    assert frames == list(range(13, 21))  # [f-3, f] inside [10, 20]
    # a second tube of another label: spans overlapping its start are excluded too
    gt = gt_with({0: [tube(10, 20)], 1: [tube(18, 30)]})
    frames = [f for _, f in training_samples(gt, ["a/v"], 2, 3)]
    assert frames == list(range(13, 18)) + list(range(24, 31))  # [f-3, f] clear of tube 0's end
    assert tube_boxes_at(gt, "a/v", [15, 17]) == {0: [pytest.approx(tube(10, 20)[[5, 7], 1:5])]}


def test_gaussian_radius_and_peak():
    # CenterNet's three roots for a 10x20 box at overlap 0.7, by hand:
    # r1 = (30 + sqrt(900 - 4*60/1.7)) / 2 = 28.77, r2 = (60 + sqrt(3600 - 16*60)) / 2 = 55.69,
    # r3 = (-42 + sqrt(42^2 + 4*2.8*60)) / 2 = 3.678 -> the smallest wins.
    assert gaussian_radius(10, 20) == pytest.approx((-42 + math.sqrt(2436)) / 2)
    hm = np.zeros((8, 8), dtype=np.float32)
    draw_gaussian(hm, (0, 3), 2)
    assert hm[3, 0] == 1.0 and hm[3, 1] == pytest.approx(math.exp(-1 / (2 * (5 / 6) ** 2)))
    assert hm[:, 3:].max() == 0 and hm[0, 0] == 0  # 3 rows away: outside the 5x5 patch
    assert hm[1, 0] == pytest.approx(math.exp(-4 / (2 * (5 / 6) ** 2)))


def test_build_targets_known_answer():
    boxes = np.array([[2.0, 2.0, 6.0, 10.0], [3.0, 2.0, 7.0, 10.0], [4.2, 2.0, 8.2, 10.0]], dtype=np.float32)
    t = build_targets({1: [boxes]}, num_classes=2, grid_hw=(16, 16), K=3)
    # key centre (6.2, 6.0) rounds to cell (6, 6)
    assert t["index"][0] == 6 * 16 + 6 and t["mask"].tolist() == [1] + [0] * 127
    assert t["hm"][1, 6, 6] == 1.0 and t["hm"][0].max() == 0
    np.testing.assert_allclose(t["mov"][0], [-2.0, 0.0, -1.0, 0.0, 0.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(t["wh"][0], [4, 8, 4, 8, 4, 8])
    assert t["index_all"][0].tolist() == [6 * 16 + 4] * 2 + [6 * 16 + 5] * 2 + [6 * 16 + 6] * 2  # round(4.0), 5.0, 6.2


def test_centre_on_far_edge_is_clamped_into_the_grid():
    boxes = np.array([[15.2, 0, 16.0, 1.0]], dtype=np.float32)  # centre x 15.6 rounds to 16, outside a 16 grid
    t = build_targets({0: [boxes]}, num_classes=1, grid_hw=(16, 16), K=1)
    assert t["index"][0] == 0 * 16 + 15 and t["hm"][0, 0, 15] == 1.0


def frames_and_tubes():
    rng = np.random.default_rng(0)
    frame = rng.uniform(0, 255, (40, 60, 3)).astype(np.float32)
    return [frame.copy() for _ in range(6)], {0: [np.array([[10, 5, 30, 25], [12, 5, 32, 25]], np.float32)]}


def test_mirror_and_expand():
    frames, tubes = frames_and_tubes()
    mf, mt = mirror(frames, tubes, 60)
    np.testing.assert_array_equal(mf[0], frames[0][:, ::-1])
    np.testing.assert_array_equal(mt[0][0][0], [30, 5, 50, 25])
    ef, et = expand(frames, tubes, np.random.default_rng(1))
    h, w = ef[0].shape[:2]
    np.testing.assert_array_equal(ef[0][h - 40:, w - 60:], frames[0])  # bottom-right, as the reference
    np.testing.assert_array_equal(et[0][0][0], [10 + w - 60, 5 + h - 40, 30 + w - 60, 25 + h - 40])
    assert np.all(ef[0][0, 0] == np.float32([104.0136177, 114.0342201, 119.91659325]))


def test_augment_is_one_transform_for_all_frames_and_deterministic():
    frames, tubes = frames_and_tubes()
    for seed in range(20):
        out, boxes = augment([f.copy() for f in frames], {0: [b.copy() for b in tubes[0]]}, np.random.default_rng(seed))
        assert all(np.array_equal(out[0], o) for o in out[1:])  # identical inputs stay identical
        assert out[0].min() >= 0 and out[0].max() <= 255
        again, boxes2 = augment([f.copy() for f in frames], {0: [b.copy() for b in tubes[0]]},
                                np.random.default_rng(seed))
        assert np.array_equal(again[0], out[0]) and all(np.array_equal(a, b) for a, b in zip(boxes.get(0, []),
                                                                                              boxes2.get(0, [])))
        h, w = out[0].shape[:2]
        for b in boxes.get(0, []):
            assert (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= w).all() and (b[:, 1::2] <= h).all()


def test_crop_drops_tubes_whose_centre_leaves():
    frames, tubes = frames_and_tubes()
    tubes[1] = [np.array([[55, 35, 59, 39], [55, 35, 59, 39]], np.float32)]  # bottom-right corner
    for seed in range(30):
        out, kept = crop([f.copy() for f in frames], {k: [b.copy() for b in v] for k, v in tubes.items()},
                         np.random.default_rng(seed))
        h, w = out[0].shape[:2]
        for boxes in kept.values():
            for b in boxes:
                cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
                assert (cx >= 0).all() and (cx <= w).all() and (cy >= 0).all() and (cy <= h).all()
