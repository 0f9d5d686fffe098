"""The fast metrics against the plain loop-per-box ACT implementation on random detection sets."""
import numpy as np
import pytest
from act_reference import plain_frame_ap, plain_frame_detections, plain_frame_errors, plain_video_ap
from synthetic_tubelets import make_dataset

from edge_stad.core.frame_detections import frame_detections
from edge_stad.core.linking import link_video
from edge_stad.eval.frame_errors import frame_errors
from edge_stad.eval.frame_map import frame_map
from edge_stad.eval.video_map import video_maps

CASES = [(2, 3, "stream"), (3, 4, "normal"), (4, 3, "stream"), (5, 2, "normal")]


@pytest.fixture(scope="module", params=CASES, ids=["K{}n{}-{}".format(*c) for c in CASES])
def case(request):
    K, n, mode = request.param
    gt, windows = make_dataset(K * 10 + n, K, n, num_videos=5, num_labels=4, mode=mode, nframes=(30, 60))
    videos = gt.test_videos[0]
    frames = {v: frame_detections(windows[v], K, mode) for v in videos}
    return K, n, mode, gt, windows, videos, frames


def test_frame_detections_equal_plain_builder(case):
    K, n, mode, gt, windows, videos, frames = case
    for v in videos:
        plain = plain_frame_detections([(w.frames, w.tubelets) for w in windows[v]], K, mode, 4)
        assert np.array_equal(frames[v], plain)
    assert sum(len(f) for f in frames.values()) > 2000  # thousands of boxes


@pytest.mark.parametrize("mode", ["normal", "stream"])
def test_frame_cap_equals_plain_builder(mode):
    gt, windows = make_dataset(5, 3, 4, num_videos=2, num_labels=2, mode=mode, nframes=(30, 40))
    for ws in windows.values():
        capped = frame_detections(ws, 3, mode, cap=6)
        plain = plain_frame_detections([(w.frames, w.tubelets) for w in ws], 3, mode, 2, cap=6)
        assert np.array_equal(capped, plain)
        # whole blocks are taken while a frame holds < 6 (normal: <= 6) rows, interpolated rows one by one
        assert len(capped) < len(frame_detections(ws, 3, mode))


@pytest.mark.parametrize("mode", ["trimmed", "untrimmed"])
def test_frame_map_equals_plain(case, mode):
    K, n, _, gt, windows, videos, frames = case
    fast = frame_map(frames, gt, videos, 0.5, mode)
    plain = [plain_frame_ap(frames, gt.gttubes, videos, c, 0.5, mode) for c in range(4)]
    np.testing.assert_allclose(fast.ap, plain, rtol=0, atol=1e-6)
    assert 0.05 < fast.mean < 0.95  # a set where matching decisions matter


def test_frame_errors_equal_plain_and_sum_to_one(case):
    K, n, _, gt, windows, videos, frames = case
    eb = frame_errors(frames, gt, videos, 0.5)
    fast = np.stack([eb.ap, eb.localization, eb.classification, eb.time, eb.other, eb.missed], axis=1)
    plain = np.array([plain_frame_errors(frames, gt.gttubes, videos, c, 0.5) for c in range(4)])
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.sum(axis=1), 1.0, atol=1e-6)
    assert (fast[:, 1:5] > 0).any(axis=0).sum() >= 3  # several error kinds occur


def test_video_map_equals_plain(case):
    K, n, _, gt, windows, videos, frames = case
    tubes = {v: link_video(windows[v], K, n) for v in videos}
    plain_tubes = {v: {c: [(t.boxes, t.score) for t in ts] for c, ts in per.items()} for v, per in tubes.items()}
    ths = (0.2, 0.5, 0.75)
    fast = video_maps(tubes, gt, videos, ths)
    for th in ths:
        plain = [plain_video_ap(plain_tubes, gt.gttubes, videos, c, th) for c in range(4)]
        np.testing.assert_allclose(fast[th].ap, plain, rtol=0, atol=1e-6)
    assert fast[0.2].mean > fast[0.75].mean
