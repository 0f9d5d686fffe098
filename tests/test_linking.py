"""Online tube linking: parity with a plain BuildTubes, incremental == offline, events, memory, bad input."""
import numpy as np
import pytest
from act_reference import plain_build_tubes, plain_tubelet_nms
from synthetic_tubelets import make_video

from edge_stad.core.linking import (
    ENDED,
    GREW,
    SEGMENT,
    SEGMENT_FRAMES,
    STARTED,
    HostMatrices,
    Linker,
    link_video,
    nms_groups,
    tubelet_nms,
)
from edge_stad.core.windows import Window, window_schedule
from edge_stad.errors import ConfigError, TubeletError


def test_window_schedule_known_values():
    # K=3, n=5, F=23, stream: first frame min(15, 23) - 5 + 1 = 11, then 16, 21 and the last frame 23,
    # whose window is the last three frames processed, not the regular (13, 18, 23).
    assert window_schedule(3, 5, 23, "stream") == [(1, 6, 11), (6, 11, 16), (11, 16, 21), (16, 21, 23)]
    # F=12 < K*n: the first frame is 12 - 5 + 1 = 8 and earlier clip ends clamp to frame 1
    assert window_schedule(3, 5, 12, "normal")[:2] == [(1, 3, 8), (1, 4, 9)]
    assert len(window_schedule(3, 5, 12, "normal")) == 5  # frames 8..12
    assert window_schedule(3, 5, 21, "stream")[-1] == (11, 16, 21)  # on the grid: regular


def test_tubelet_nms_known_values():
    a = [0, 0, 9, 9, 20, 0, 29, 9]
    tubelets = np.array([a + [0.9],
                         a + [0.8],                                    # duplicate: IoU sum 2 > 0.6*2
                         [50, 50, 59, 59, 60, 50, 69, 59] + [0.7]], dtype=np.float32)
    out = tubelet_nms(tubelets, 0.6, top_k=10)
    # the duplicate's score becomes 0.8 * (1 - 2) = -0.8: it ranks last but is still returned
    np.testing.assert_allclose(out[:, -1], [0.9, 0.7, -0.8], rtol=1e-6)
    assert np.array_equal(out[:, :8], tubelets[[0, 2, 1], :8])
    assert tubelet_nms(tubelets, 0.6, top_k=2)[:, -1].tolist() == pytest.approx([0.9, 0.7])


@pytest.mark.parametrize("K", range(1, 8))
def test_tubelet_nms_matches_plain_loop(K):
    rng = np.random.default_rng(K)
    for m in (0, 1, 5, 10, 11, 40):
        centers = rng.uniform(0, 100, (m, 2))
        boxes = np.concatenate([centers, centers + 30], axis=1)[:, None, :] + rng.normal(0, 4, (m, K, 4))
        tubelets = np.concatenate([boxes.reshape(m, 4 * K), rng.uniform(0, 1, (m, 1))], axis=1).astype(np.float32)
        fast = tubelet_nms(tubelets.copy(), 0.6, 10)
        plain = plain_tubelet_nms(tubelets, 0.6, 10)
        assert fast.shape == plain.shape == (min(m, 10), 4 * K + 1)
        assert np.array_equal(fast, plain)


def test_nms_of_several_labels_at_once_equals_label_by_label():
    rng = np.random.default_rng(11)
    K = 3
    groups = []
    for m in (12, 0, 1, 30, 7):
        centers = rng.uniform(0, 60, (m, 2))   # crowded: many suppressions, chains of them
        boxes = np.concatenate([centers, centers + 30], axis=1)[:, None, :] + rng.normal(0, 4, (m, K, 4))
        scores = rng.choice([0.2, 0.5, 0.9], (m, 1))   # ties: input order breaks them
        groups.append(np.concatenate([boxes.reshape(m, 4 * K), scores], axis=1).astype(np.float32))
    overlaps = HostMatrices.nms_overlap([g[:, :4 * K].reshape(-1, K, 4) for g in groups])
    out, sizes = nms_groups(groups, overlaps, 0.6, 10)
    assert sizes.tolist() == [10, 0, 1, 10, 7]
    for part, group in zip(np.split(out, np.cumsum(sizes)[:-1]), groups):
        assert np.array_equal(part, plain_tubelet_nms(group, 0.6, 10))
    assert nms_groups([], [], 0.6, 10)[0].shape == (0, 1)


def _as_plain(tubes):
    return {label: [(t.boxes, t.score) for t in ts] for label, ts in tubes.items()}


@pytest.mark.parametrize("mode", ["normal", "stream"])
@pytest.mark.parametrize("K", range(2, 8))
def test_link_video_equals_plain_build_tubes(K, mode):
    rng = np.random.default_rng(100 * K + len(mode))
    produced = 0
    for _ in range(3):
        n = int(rng.integers(2, 6))
        F = int(rng.integers(K * n // 2 + n, 80))
        if mode == "stream" and (F - window_schedule(K, n, F, mode)[0][-1]) % n == 0:
            F += 1  # keep the last window uneven
        windows, _ = make_video(rng, K, n, F, 3, mode)
        fast = link_video(windows, K, n)
        plain = plain_build_tubes([(w.frames, w.tubelets) for w in windows], K, n, F, sorted(fast))
        for label in fast:
            assert len(fast[label]) == len(plain[label])
            for (boxes, score), (ref_boxes, ref_score) in zip(_as_plain(fast)[label], plain[label]):
                assert boxes.dtype == np.float32 and np.array_equal(boxes, ref_boxes)
                assert score == ref_score
            produced += len(fast[label])
    assert produced > 0


def test_incremental_linker_equals_link_video_and_events_are_consistent():
    rng = np.random.default_rng(7)
    linker = Linker(3, 4)
    started, ended, seen_ids = set(), set(), []
    for _ in range(3):
        windows, _ = make_video(rng, 3, 4, 70, 3, "stream")
        first_id = linker._next_id
        events = []
        for w in windows:
            events += linker.push(w.frame, w.tubelets, w.frames)
        events += linker.finish()
        assert linker.active_tubes == 0 and linker.stored_tubelets == 0
        got = {}
        for e in events:
            assert e.tube_id >= first_id  # ids of earlier streams are never reused
            if e.kind == STARTED:
                assert e.tube_id not in started
                started.add(e.tube_id)
                seen_ids.append(e.tube_id)
            elif e.kind == GREW:
                assert e.tube_id in started and e.tube_id not in ended
            else:
                assert e.kind == ENDED and e.tube_id in started and e.tube_id not in ended
                ended.add(e.tube_id)
                if e.tube is not None:
                    assert e.tube.tube_id == e.tube_id and e.tube.label == e.label
                    got.setdefault(e.label, []).append(e.tube)
        assert started == ended  # every tube that starts also ends
        offline = link_video(windows, 3, 4)
        for label, tubes in offline.items():
            mine = got.get(label, [])
            assert [t.score for t in mine] == [t.score for t in tubes]
            assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(mine, tubes))
    assert len(seen_ids) == len(set(seen_ids)) > 0


def _walker(f, score=0.8, K=2, frames=None):
    """One tubelet of an actor whose box at frame g is [g, 0, g + 9, 9]."""
    return np.array([sum(([g, 0, g + 9, 9] for g in frames), []) + [score]], dtype=np.float32)


@pytest.mark.parametrize("F", [10, 9])
def test_known_answer_single_actor(F):
    # K=2, n=3, stream: processed frames 4, 7, then F. F=10 is on the grid; F=9 gives the
    # uneven last window (7, 9), whose first box belongs to frame 7 (not 6).
    windows = [Window(frames, {0: _walker(frames[-1], frames=frames)}) for frames in window_schedule(2, 3, F, "stream")]
    assert [w.frames for w in windows][-1] == ((7, 10) if F == 10 else (7, 9))
    tubes = link_video(windows, 2, 3)[0]
    assert len(tubes) == 1
    tube = tubes[0]
    assert tube.score == pytest.approx(0.8) and tube.boxes.dtype == np.float32
    # one row per frame from max(4 - 3, 1) = 1 to F; boxes averaged on clip ends, interpolated between
    expected = np.array([[g, g, 0, g + 9, 9, np.float32(0.8)] for g in range(1, F + 1)], dtype=np.float32)
    assert np.array_equal(tube.boxes, expected)


def test_filters_drop_single_weak_and_short_tubes():
    def run(K, n, pushes, score=0.8):
        linker = Linker(K, n)
        events = []
        for f in pushes:
            frames = tuple(max(1, f - (K - 1 - k) * n) for k in range(K))
            events += linker.push(f, {0: _walker(f, score, K, frames)})
        events += linker.push(pushes[-1] + 40, {})  # nothing for 40 frames: o >= K, the tube ends
        return [e for e in events if e.kind == ENDED]

    assert run(3, 5, [21])[0].tube is None  # one tubelet
    assert run(3, 5, [21, 26], score=0.004)[0].tube is None  # mean score < 0.005
    # normal mode, tubelets at 21 and 22: spans 22 - (21 - 10) + 1 = 12 < min(F, 15) frames
    assert run(3, 5, [21, 22])[0].tube is None
    kept = run(3, 5, [21, 26])[0].tube  # 26 - 11 + 1 = 16 >= 15
    assert kept is not None and kept.boxes[0, 0] == 11 and kept.boxes[-1, 0] == 26


def test_bad_inputs_raise_typed_errors():
    linker = Linker(2, 5)
    with pytest.raises(TubeletError, match=r"\(m, 9\), got shape \(1, 8\)"):
        linker.push(10, {0: np.zeros((1, 8))})
    nan = np.zeros((1, 9))
    nan[0, 2] = np.nan
    with pytest.raises(TubeletError, match="frame 10 label 3: tubelets hold NaN"):
        linker.push(10, {3: nan})
    with pytest.raises(TubeletError, match="labels must be ints >= 0, got 'run'"):
        linker.push(10, {"run": np.zeros((1, 9))})
    with pytest.raises(TubeletError, match="must map label"):
        linker.push(10, [np.zeros((1, 9))])
    with pytest.raises(TubeletError, match="ending at the processed frame 10"):
        linker.push(10, {}, frames=(5, 9))
    linker.push(10, {0: np.zeros((0, 9))})
    with pytest.raises(TubeletError, match="frames must increase: got frame 10 after 10"):
        linker.push(10, {})
    with pytest.raises(ConfigError):
        Linker(0, 5)
    assert issubclass(TubeletError, ValueError)


def _endless(rng, K, n, windows, labels=4):
    """Windows of a stream where actors keep arriving and leaving (generated on the fly)."""
    actors = []
    for i in range(windows):
        f = K * n + i * n
        frames = tuple(f - (K - 1 - k) * n for k in range(K))
        actors = [a for a in actors if a[0] > f]
        while len(actors) < 4:
            actors.append((f + int(rng.integers(5, 60)) * n, int(rng.integers(labels)),
                           rng.uniform(20, 200, 2), rng.uniform(-1, 1, 2)))
        rows = {}
        for _, label, origin, speed in actors:
            boxes = np.concatenate([[*(origin + speed * (g - f)), *(origin + speed * (g - f) + 50)] for g in frames])
            rows.setdefault(label, []).append(np.append(boxes + rng.normal(0, 1, 4 * K), rng.uniform(0.5, 1)))
        for _ in range(10):
            x, y = rng.uniform(0, 250, 2)
            rows.setdefault(int(rng.integers(labels)), []).append(
                np.append(np.tile([x, y, x + 40, y + 40], K), rng.uniform(0, 0.4)))
        yield f, frames, {c: np.array(r, dtype=np.float32) for c, r in rows.items()}


def test_memory_stays_flat_on_a_long_stream():
    rng = np.random.default_rng(3)
    linker = Linker(4, 5)
    stored, active, finished = [], [], 0
    for f, frames, tubelets in _endless(rng, 4, 5, 3000):
        finished += sum(e.kind == ENDED and e.tube is not None for e in linker.push(f, tubelets, frames))
        stored.append(linker.stored_tubelets)
        active.append(linker.active_tubes)
    first, last = max(stored[:1000]), max(stored[-1000:])
    assert finished > 50  # tubes were handed out along the way
    assert last <= 1.5 * first  # no accumulation over 3000 windows (15000 frames)
    assert max(active) <= 4 * 10 * (4 + 1)  # at most top_k new tubes per label per window, each ends within K+1


def test_runtime_and_eval_import_without_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys, edge_stad.core.linking, edge_stad.eval.evaluate, edge_stad.eval.report, "
            "edge_stad.data.annotations, edge_stad.commands.eval; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnxruntime', 'onnx', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _standing(rng, K, n, windows, labels=2, actors=3, leave=0.3):
    """Windows of a stream where ``actors`` stand still for ever (a detection that never ends), each missed
    now and then: for one window, or (a share ``leave`` of the misses) for K+1 windows, when its tube ends
    and another starts; plus clutter."""
    spots = [(int(rng.integers(labels)), rng.uniform(20, 200, 2)) for _ in range(actors)]
    away = {}
    for i in range(windows):
        f = K * n + i * n
        frames = tuple(f - (K - 1 - k) * n for k in range(K))
        rows = {}
        for a, (label, origin) in enumerate(spots):
            if away.get(a, 0) > 0:
                away[a] -= 1
                continue
            if rng.random() < 0.02:
                away[a] = K + 1 if rng.random() < leave else 1
            boxes = np.tile([*origin, *(origin + 60)], K) + rng.normal(0, 1.5, 4 * K)
            rows.setdefault(label, []).append(np.append(boxes, rng.uniform(0.6, 0.9)))
        for _ in range(4):
            x, y = rng.uniform(0, 250, 2)
            rows.setdefault(int(rng.integers(labels)), []).append(
                np.append(np.tile([x, y, x + 40, y + 40], K), rng.uniform(0, 0.3)))
        yield f, frames, {c: np.array(r, dtype=np.float32) for c, r in rows.items()}


def _link(stream, K, n, **params):
    linker, events, stored = Linker(K, n, **params), [], []
    for f, frames, tubelets in stream:
        events += linker.push(f, tubelets, frames)
        stored.append((linker.stored_tubelets, linker.active_tubes))
    return events + linker.finish(), stored


@pytest.mark.parametrize("K, n, segment", [(3, 5, 200), (1, 1, 40), (2, 3, 12)])
def test_long_tubes_come_out_in_segments_that_add_up_to_the_whole_tube(K, n, segment):
    windows = list(_standing(np.random.default_rng(K), K, n, 3000 // n))
    whole, _ = _link(windows, K, n, segment_frames=None)
    parts, _ = _link(windows, K, n, segment_frames=segment)
    assert [e[:4] for e in parts if e.kind != SEGMENT] == [e[:4] for e in whole]   # same story, same ids
    pieces = {}
    for event in parts:
        if event.kind in (SEGMENT, ENDED) and event.tube is not None:
            pieces.setdefault(event.tube_id, []).append(event.tube)
    segmented = 0
    for event in whole:
        if event.kind != ENDED or event.tube is None:
            continue
        mine = pieces[event.tube_id]
        boxes = np.concatenate([t.boxes for t in mine])
        np.testing.assert_array_equal(boxes, event.tube.boxes)   # bit for bit, frame by frame
        assert all(len(t.boxes) <= segment + K * n for t in mine[:-1])
        if len(mine) > 1:
            segmented += 1
            assert mine[-1].score == pytest.approx(event.tube.score, rel=1e-5)   # running mean vs np.mean
        else:
            assert mine[0].score == event.tube.score
    assert segmented >= 3


def test_an_endless_static_detection_keeps_memory_bounded():
    K, n, segment = 3, 5, 300
    windows = list(_standing(np.random.default_rng(7), K, n, 20000 // n, leave=0))
    _, unbounded = _link(windows, K, n, segment_frames=None)
    events, bounded = _link(windows, K, n, segment_frames=segment)
    per_tube = segment // n + K + 2
    assert all(stored <= active * per_tube for stored, active in bounded)
    assert max(s for s, _ in bounded[-1000:]) <= max(s for s, _ in bounded[:1000]) * 1.2   # flat
    assert unbounded[-1][0] > 5 * max(s for s, _ in bounded)                               # without: it grows
    assert sum(e.kind == SEGMENT for e in events) >= 3 * 20000 // segment // 2


def test_the_default_never_cuts_a_dataset_length_video():
    assert SEGMENT_FRAMES >= 9 * 1000   # UCF101-24 videos have at most about 1000 frames
    windows = list(_standing(np.random.default_rng(1), 3, 5, 2000 // 5))
    default, _ = _link(windows, 3, 5)
    never, _ = _link(windows, 3, 5, segment_frames=None)
    assert len(default) == len(never) and not any(e.kind == SEGMENT for e in default)
    for a, b in zip(default, never):
        assert a[:4] == b[:4] and (a.tube is None) == (b.tube is None)
        if a.tube is not None:
            assert a.tube.score == b.tube.score and np.array_equal(a.tube.boxes, b.tube.boxes)
    with pytest.raises(ConfigError, match="segment_frames"):
        Linker(3, 5, segment_frames=29)
