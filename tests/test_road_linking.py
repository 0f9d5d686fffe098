"""ROAD's online linker (Singh et al. 2017, online-tubes/) on known sequences."""
import numpy as np
import pytest

from edge_stad.core.road_linking import RoadLinker, label_path, path_tubes, road_link_video
from edge_stad.errors import ConfigError, TubeletError

C = 2


def row(x, score, label, probs=None, y=10, w=20, h=30):
    probs = probs if probs is not None else [score if c == label else (1 - score) / (C - 1) for c in range(C)]
    return [x, y, x + w - 1, y + h - 1, score, label, *probs]


def video(present, x=lambda f: 10 + 2 * f, score=0.9, label=0):
    """One box per frame of ``present`` moving right (others empty), up to the last frame listed."""
    return {f: np.array([row(x(f), score, label)] if f in present else np.zeros((0, 6 + C)))
            for f in range(1, max(present) + 1)}


def test_gaps_under_the_jump_gap_are_filled_with_the_next_box():
    frames = video([f for f in range(1, 21) if f not in (8, 9)])
    tubes = road_link_video(frames, C)
    assert list(tubes) == [0] and len(tubes[0]) == 1
    tube = tubes[0][0]
    assert tube.boxes[:, 0].tolist() == list(range(1, 21)) and tube.score == pytest.approx(0.9)
    assert tube.boxes[7:10, 1].tolist() == [30.0, 30.0, 30.0]       # frames 8, 9 take frame 10's box (x=30)
    assert tube.boxes[6, 1] == 24.0


def test_a_path_ends_after_three_missed_frames_and_its_tube_comes_out_then():
    present = list(range(1, 13)) + list(range(16, 31))                # frames 13, 14, 15 missed
    frames = video(present)
    linker, out = RoadLinker(C), {}
    for f in sorted(frames):
        for tube in linker.push(f, frames[f]):
            out[f] = tube
    assert list(out) == [15]                                           # ended at its third miss
    assert out[15].boxes[:, 0].tolist() == list(range(1, 13))
    rest = linker.flush()
    assert [t.boxes[:, 0].tolist() for t in rest] == [list(range(16, 31))]
    assert [t.tube_id for t in (out[15], *rest)] == [0, 1]
    assert linker.flush() == []                                         # empty afterwards


def test_skipped_frame_numbers_count_as_misses():
    linker = RoadLinker(C)
    for f in range(1, 11):
        assert linker.push(f, np.array([row(10 + 2 * f, 0.9, 0)])) == []
    ended = linker.push(14, np.zeros((0, 6 + C)))                      # 11, 12, 13 unseen: the path died
    assert len(ended) == 1 and ended[0].boxes[-1, 0] == 10


def test_minimum_length_and_short_paths():
    # a path needs more than jump_gap (3) boxes; a tube needs te - ts > 8, i.e. at least 10 frames
    assert road_link_video(video([1, 2, 3]), C) == {}
    assert road_link_video(video(list(range(1, 10))), C) == {}          # 9 frames
    assert len(road_link_video(video(list(range(1, 11))), C)[0]) == 1   # 10 frames
    assert len(road_link_video(video(list(range(1, 10))), C, min_frames=7)[0]) == 1


def test_iou_threshold_starts_a_new_path():
    # the box jumps far away at frame 11: IoU 0 with the path's last box, so a new path starts there
    frames = video(list(range(1, 21)), x=lambda f: 10 + 2 * f if f <= 10 else 200 + 2 * f)
    tubes = road_link_video(frames, C)[0]
    assert sorted(t.boxes[0, 0] for t in tubes) == [1, 11]
    assert sorted(len(t.boxes) for t in tubes) == [10, 10]


def test_the_better_ranked_path_takes_a_shared_box():
    linker = RoadLinker(C)
    # two paths of class 0 overlapping the same region; scores 0.9 and 0.5
    for f in range(1, 5):
        linker.push(f, np.array([row(10, 0.9, 0), row(14, 0.5, 0)]))
    # one box left, overlapping both: the 0.9 path (ranked first) takes it, the other misses
    linker.push(5, np.array([row(12, 0.7, 0)]))
    paths = linker.live[0]
    assert [len(p.frames) for p in paths] == [5, 4] and paths[0].scores[-1] == 0.7
    assert [p.misses for p in paths] == [0, 1]


def test_temporal_labelling_trims_to_the_paths_class():
    # a class-0 path whose boxes look like class 1 for frames 11..25: ROAD's Viterbi relabels them
    frames = {}
    for f in range(1, 36):
        probs = [0.9, 0.1] if f <= 10 or f > 25 else [0.05, 0.95]
        frames[f] = np.array([row(10 + f, 0.9 if probs[0] > 0.5 else 0.3, 0, probs)])
    tubes = road_link_video(frames, C)[0]
    assert sorted((t.boxes[0, 0], t.boxes[-1, 0]) for t in tubes) == [(1, 10), (26, 35)]


def test_label_path_known_answers():
    assert label_path(np.array([[0.9, 0.1], [0.4, 0.6], [0.9, 0.1]]), 3).tolist() == [0, 0, 0]
    assert label_path(np.array([[0.9, 0.1], [0.4, 0.6], [0.9, 0.1]]), 0.05).tolist() == [0, 1, 0]
    # switching to 1 costs 3 but gains 4 over the next frames; starting there avoids the switch
    assert label_path(np.array([[0.9, 0.1]] + [[0.0, 1.0]] * 4), 3).tolist() == [1, 1, 1, 1, 1]
    assert label_path(np.array([[0.5, 0.5]]), 3).tolist() == [0]       # ties: the lowest label


def test_tube_score_is_the_mean_of_the_best_40_box_scores():
    n = 50
    scores = np.linspace(0.1, 0.99, n)
    probs = np.tile([1.0, 0.0], (n, 1))
    tube, = path_tubes(0, np.arange(1, n + 1), np.tile([0, 0, 9, 9], (n, 1)), scores, probs)
    assert tube.score == pytest.approx(np.sort(scores)[-40:].mean())
    assert tube.boxes[:, 5].tolist() == pytest.approx(scores.astype(np.float32).tolist())


def test_bad_input_is_rejected():
    linker = RoadLinker(C)
    linker.push(3, np.zeros((0, 6 + C)))
    with pytest.raises(TubeletError, match="increasing"):
        linker.push(3, np.zeros((0, 6 + C)))
    with pytest.raises(TubeletError, match="label"):
        linker.push(4, np.array([row(10, 0.9, 5)[:6] + [0.5, 0.5]]))
    with pytest.raises(TubeletError):
        linker.push(5, np.array([[np.nan] * (6 + C)]))
    with pytest.raises(ConfigError):
        RoadLinker(C, jump_gap=0)
