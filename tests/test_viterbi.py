import itertools

import numpy as np
import pytest

from edge_stad.core.region_decode import box_iou
from edge_stad.data.annotations import GroundTruth
from edge_stad.eval.video_map import video_map
from edge_stad.eval.viterbi import viterbi_link_video, viterbi_link_videos

LEFT, RIGHT = [0, 0, 10, 10], [20, 0, 30, 10]


def row(box, score, label=0):
    return box + [score, label]


# Frame 1: A (left, 0.9), B (right, 0.5); frame 2: C (left, 0.1), D (right, 0.8);
# frame 3: E (right, 0.9), F (left, 0.3).
# Joins (IoU + s + s' + s s' / 2): A-C 2.045, A-D 2.06, B-C 0.625, B-D 2.5, C-E 1.045, D-E 3.06, C-F 1.415, D-F 1.22.
# Best path B-D-E = 5.56 (A-D-E = 5.12: starting from the best box of frame 1 is worse); then A-C-F = 3.46.
VIDEO = {1: [row(LEFT, 0.9), row(RIGHT, 0.5)], 2: [row(LEFT, 0.1), row(RIGHT, 0.8)],
         3: [row(RIGHT, 0.9), row(LEFT, 0.3)]}


def brute_force_best(frames):
    def join(a, b):
        return box_iou(a[:4], b[:4]) + a[4] + b[4] + 0.5 * a[4] * b[4]
    paths = itertools.product(*[range(len(f)) for f in frames])
    return max(paths, key=lambda p: sum(join(frames[t][p[t]], frames[t + 1][p[t + 1]]) for t in range(len(p) - 1)))


def test_best_path_then_the_next_one():
    tubes = viterbi_link_video(VIDEO)
    assert [t.tube_id for t in tubes] == [0, 1] and [t.label for t in tubes] == [0, 0]
    first, second = tubes
    np.testing.assert_allclose(first.boxes, [[1] + row(RIGHT, 0.5)[:5], [2] + row(RIGHT, 0.8)[:5],
                                             [3] + row(RIGHT, 0.9)[:5]])
    assert first.boxes.dtype == np.float32
    assert first.score == pytest.approx((0.5 + 0.8 + 0.9) / 3)
    np.testing.assert_allclose(second.boxes[:, 1:5], [LEFT] * 3)
    assert second.score == pytest.approx((0.9 + 0.1 + 0.3) / 3)
    frames = [np.array(VIDEO[f], dtype=np.float64) for f in (1, 2, 3)]
    assert brute_force_best(frames) == (1, 1, 0)


def test_matches_brute_force_on_random_videos():
    rng = np.random.default_rng(0)
    for _ in range(20):
        frames = []
        for _ in range(4):
            xy = rng.uniform(0, 40, size=(3, 2))
            frames.append(np.hstack([xy, xy + 15, rng.uniform(0, 1, size=(3, 1)), np.zeros((3, 1))]))
        best = brute_force_best(frames)
        tubes = viterbi_link_video({f + 1: frames[f] for f in range(4)}, nms_threshold=1.0)
        np.testing.assert_allclose(tubes[0].boxes[:, 1:5], [frames[t][i, :4] for t, i in enumerate(best)], rtol=1e-6)


def test_at_most_three_paths_and_only_while_every_frame_has_a_box():
    far = {f: [row([100 * k, 0, 100 * k + 10, 10], 0.1 * (k + 1)) for k in range(5)] for f in (1, 2, 3, 4)}
    assert len(viterbi_link_video(far)) == 3
    assert len(viterbi_link_video(far, max_paths=5)) == 5
    far[2] = far[2][:2]
    assert len(viterbi_link_video(far)) == 2


def test_empty_frames_copy_the_nearest_frame():
    dets = {2: [row(LEFT, 0.6)], 5: [row(RIGHT, 0.4)]}
    (tube,) = viterbi_link_video(dets, nframes=6)
    np.testing.assert_array_equal(tube.boxes[:, 0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(tube.boxes[:, 1:5], [LEFT, LEFT, LEFT, RIGHT, RIGHT, RIGHT])
    assert tube.score == pytest.approx(0.5)
    # without nframes the range is first..last detection; a gap at equal distance copies the earlier frame
    (tube,) = viterbi_link_video({1: [row(LEFT, 0.6)], 2: [], 3: [row(RIGHT, 0.4)]})
    np.testing.assert_allclose(tube.boxes[:, 1:5], [LEFT, LEFT, RIGHT])


def test_classes_are_linked_separately():
    dets = {1: [row(LEFT, 0.9, 0), row(RIGHT, 0.8, 2)], 2: [row(LEFT, 0.7, 0)], 3: [row(RIGHT, 0.6, 2)]}
    tubes = viterbi_link_video(dets)
    assert [t.label for t in tubes] == [0, 2]
    np.testing.assert_allclose(tubes[0].boxes[:, 1:5], [LEFT] * 3)  # frame 3 copies frame 2's class-0 box
    np.testing.assert_allclose(tubes[1].boxes[:, 1:5], [RIGHT] * 3)


def test_tube_nms_drops_an_overlapping_path():
    dets = {f: [row(LEFT, 0.9), row([1, 0, 11, 10], 0.8)] for f in (1, 2)}  # tube IoU 110 / 132 > 0.3
    assert len(viterbi_link_video(dets)) == 1
    assert len(viterbi_link_video(dets, nms_threshold=1.0)) == 2


def test_one_frame_takes_the_best_box():
    tubes = viterbi_link_video({4: [row(LEFT, 0.2), row(RIGHT, 0.9)]})
    assert [t.score for t in tubes] == pytest.approx([0.9, 0.2])
    np.testing.assert_allclose(tubes[0].boxes, [[4] + RIGHT + [0.9]])


def test_tubes_score_with_video_map():
    tube = np.array([[f, 0, 0, 10, 10] for f in (1, 2, 3)], dtype=np.float64)
    other = np.array([[f, 50, 50, 60, 60] for f in (1, 2, 3)], dtype=np.float64)
    gt = GroundTruth(labels=["a", "b"], gttubes={"v": {0: [tube], 1: [other]}}, nframes={"v": 3},
                     train_videos=[[]], test_videos=[["v"]], resolution={"v": (240, 320)})
    dets = {"v": {1: [row(LEFT, 0.9, 0), row([50, 50, 60, 60], 0.7, 1)], 3: [row(LEFT, 0.8, 0)],
                  2: [row([50, 50, 60, 60], 0.6, 1)]}}
    tubes = viterbi_link_videos(dets, nframes=gt.nframes)
    assert sorted(tubes["v"]) == [0, 1]
    assert video_map(tubes, gt, ["v"], 0.5).mean == pytest.approx(1.0)
    assert viterbi_link_video({}) == [] and viterbi_link_video({1: np.zeros((0, 6))}) == []


def test_bad_inputs():
    with pytest.raises(ValueError, match="finite"):
        viterbi_link_video({1: [row(LEFT, float("nan"))]})
    with pytest.raises(ValueError, match=r"\(N, 6\) rows"):
        viterbi_link_video({1: [[0, 0, 10, 10, 0.5]]})
    with pytest.raises(ValueError, match="past the video's 2 frames"):
        viterbi_link_video({3: [row(LEFT, 0.5)]}, nframes=2)
    with pytest.raises(ValueError, match="ints >= 1"):
        viterbi_link_video({0: [row(LEFT, 0.5)]})
    with pytest.raises(ValueError, match="integer labels"):
        viterbi_link_video({1: [row(LEFT, 0.5, 0.5)]})
