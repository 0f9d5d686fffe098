"""Frame-mAP, video-mAP and the error breakdown on small cases worked out by hand."""
import numpy as np
import pytest

from edge_stad.core.linking import Tube
from edge_stad.data.annotations import GroundTruth
from edge_stad.eval.frame_errors import frame_errors
from edge_stad.eval.frame_map import default_mode, frame_ap, frame_map
from edge_stad.eval.video_map import tube_iou, video_ap, video_map_range

BOX = [10.0, 10.0, 49.0, 49.0]  # 40 x 40 pixels
FAR = [200.0, 200.0, 239.0, 239.0]


def make_gt(tubes, nframes, labels=("a", "b")):
    """tubes: {video: {label: [(first, last, box)]}} with a fixed box per tube."""
    gttubes = {v: {c: [np.array([[f] + list(box) for f in range(a, b + 1)], dtype=np.float64)
                       for a, b, box in lst] for c, lst in per.items()} for v, per in tubes.items()}
    videos = sorted(nframes)
    return GroundTruth(list(labels), gttubes, dict(nframes), [[]], [videos], {v: (240, 320) for v in videos})


def dets(*rows):
    """Frame detections rows (frame, label, score, box)."""
    return np.array([[f, c, s] + list(box) for f, c, s, box in rows], dtype=np.float32).reshape(-1, 7)


def trapezoid(points):
    """AP by hand: points (precision, recall) after (1, 0)."""
    points = [(1.0, 0.0)] + points
    return sum((r1 - r0) * (p1 + p0) / 2 for (p0, r0), (p1, r1) in zip(points, points[1:]))


GT_10 = make_gt({"v": {0: [(1, 10, BOX)]}}, {"v": 10})


def test_perfect_frame_detections_give_ap_1():
    d = {"v": dets(*[(f, 0, 1 - f / 100, BOX) for f in range(1, 11)])}
    # ten true positives: precision 1 at recall 0.1 .. 1.0 -> area 1
    assert frame_ap(d, GT_10, ["v"], 0).ap == 1.0
    assert frame_map(d, GT_10, ["v"]).per_class[1].ap == 0.0  # class b has no ground truth
    assert frame_map(d, GT_10, ["v"]).mean == 0.5


def test_one_duplicate_is_a_false_positive():
    gt = make_gt({"v": {0: [(1, 2, BOX)]}}, {"v": 2})
    d = {"v": dets((1, 0, 0.9, BOX), (1, 0, 0.8, BOX), (2, 0, 0.7, BOX))}
    # TP (p 1, r .5), duplicate FP (p .5, r .5), TP (p 2/3, r 1)
    expected = trapezoid([(1, 0.5), (0.5, 0.5), (2 / 3, 1.0)])
    assert expected == pytest.approx(19 / 24)  # 0.5 + 0.5 * (1/2 + 2/3) / 2
    assert frame_ap(d, gt, ["v"], 0).ap == pytest.approx(19 / 24, abs=1e-7)


def test_wrong_class_detection():
    gt = make_gt({"v": {0: [(1, 2, BOX)], 1: [(1, 2, FAR)]}}, {"v": 2})
    d = {"v": dets((1, 0, 0.9, BOX), (1, 1, 0.8, BOX), (2, 0, 0.6, BOX), (2, 1, 0.5, FAR))}
    # class a: two true positives -> 1. class b: FP at its best score (a's box), then a TP:
    # (p 0, r 0), (p 1/2, r 1/2) -> 0.5 * (0 + 1/2) / 2 = 1/8
    result = frame_map(d, gt, ["v"])
    assert result.per_class[0].ap == 1.0
    assert result.per_class[1].ap == pytest.approx(trapezoid([(0.0, 0.0), (0.5, 0.5)]))
    assert result.per_class[1].ap == pytest.approx(0.125)
    assert result.mean == pytest.approx((1 + 0.125) / 2)


def test_untrimmed_video_with_detections_outside_the_action():
    # the action covers frames 1..10 of a 20-frame video; the detector fires on 6..15 with
    # its best scores outside the action (frames 11..15)
    gt = make_gt({"v": {0: [(1, 10, BOX)]}}, {"v": 20})
    d = {"v": dets(*[(f, 0, 0.5 + 0.02 * f, BOX) for f in range(6, 16)])}
    assert default_mode(gt, ["v"]) == "untrimmed"
    # untrimmed: 5 false positives first (recall stays 0), then TPs at frames 10, 9, ..., 6
    untrimmed = trapezoid([(0, 0)] * 5 + [(k / (5 + k), k / 10) for k in range(1, 6)])
    assert untrimmed == pytest.approx(0.1 * (1/6 + (1/6 + 2/7) + (2/7 + 3/8) + (3/8 + 4/9) + (4/9 + 1/2)) / 2)
    assert frame_ap(d, gt, ["v"], 0, mode="untrimmed").ap == pytest.approx(untrimmed, abs=1e-7)
    # trimmed: frames 11..15 are ignored (the video has the class elsewhere): 5 TPs, recall .5
    assert frame_ap(d, gt, ["v"], 0, mode="trimmed").ap == pytest.approx(0.5)
    # a video without the class gives plain false positives in both modes
    gt2 = make_gt({"v": {0: [(1, 10, BOX)]}, "w": {}}, {"v": 20, "w": 20})
    d2 = dict(d, w=dets((3, 0, 0.99, BOX)))
    assert frame_ap(d2, gt2, ["v", "w"], 0, mode="trimmed").ap == pytest.approx(
        trapezoid([(0, 0)] + [(k / (1 + k), k / 10) for k in range(1, 6)]), abs=1e-7)


def test_trimmed_and_untrimmed_agree_when_tubes_span_the_video():
    d = {"v": dets(*[(f, 0, 0.3 + 0.05 * (f % 7), BOX if f % 3 else FAR) for f in range(1, 11)])}
    assert default_mode(GT_10, ["v"]) == "trimmed"
    assert frame_ap(d, GT_10, ["v"], 0, mode="trimmed").ap == frame_ap(d, GT_10, ["v"], 0, mode="untrimmed").ap


def tube(first, last, box, score, label=0):
    rows = [[f] + list(box) + [score] for f in range(first, last + 1)]
    return Tube(0, label, score, np.array(rows, dtype=np.float32))


def test_tube_iou_half_outside_in_time():
    gt = GT_10.gttubes["v"][0][0]
    # frames 6..15 against 1..10: 5 common frames of 15, boxes identical
    assert tube_iou(gt, tube(6, 15, BOX, 0.9).boxes) == pytest.approx(5 / 15)
    assert tube_iou(gt, tube(11, 15, BOX, 0.9).boxes) == 0.0
    # same span, box shifted by 20 px: IoU 20*40 / (1600 + 1600 - 800) = 1/3 on every frame
    shifted = [30.0, 10.0, 69.0, 49.0]
    assert tube_iou(gt, tube(1, 10, shifted, 0.9).boxes) == pytest.approx(1 / 3)


def test_video_ap_known_values():
    videos = ["v"]
    perfect = {"v": {0: [tube(1, 10, BOX, 0.9)]}}
    assert video_ap(perfect, GT_10, videos, 0, 0.95).ap == 1.0
    half = {"v": {0: [tube(6, 15, BOX, 0.9)]}}
    assert video_ap(half, GT_10, videos, 0, 0.2).ap == 1.0  # 1/3 >= 0.2
    assert video_ap(half, GT_10, videos, 0, 0.5).ap == 0.0  # 1/3 < 0.5
    # a duplicate that tube NMS removes (IoU 1 > 0.3) costs nothing
    dup = {"v": {0: [tube(1, 10, BOX, 0.9), tube(1, 10, BOX, 0.8)]}}
    assert video_ap(dup, GT_10, videos, 0, 0.5).ap == 1.0
    # a false positive elsewhere in the frame (tube IoU 0: NMS keeps it) ranked first
    far = {"v": {0: [tube(1, 10, BOX, 0.5), tube(1, 10, FAR, 0.9)]}}
    assert video_ap(far, GT_10, videos, 0, 0.5).ap == pytest.approx(trapezoid([(0, 0), (0.5, 1)]))
    # the wrong class: no tube of class a (AP 0), class b has no ground truth (AP 0)
    wrong = {"v": {1: [tube(1, 10, BOX, 0.9, label=1)]}}
    assert video_ap(wrong, GT_10, videos, 0, 0.5).ap == 0.0
    # 0.5:0.95 of the half-outside tube: 0 at every threshold; of the perfect tube: 1 for class a
    assert video_map_range(half, GT_10, videos) == 0.0
    assert video_map_range(perfect, GT_10, videos) == pytest.approx(0.5)


def test_error_breakdown_known_values():
    B1 = [100.0, 10.0, 139.0, 49.0]
    gt = make_gt({"A": {0: [(1, 3, BOX)], 1: [(1, 3, B1)]}, "B": {1: [(1, 2, B1)]}}, {"A": 5, "B": 5})
    shifted = [30.0, 10.0, 69.0, 49.0]  # IoU 1/3 with BOX
    d = {"A": dets((1, 0, 0.9, BOX),      # true positive
                   (1, 0, 0.8, shifted),  # localization (frame has class a, IoU 1/3)
                   (4, 0, 0.7, BOX),      # time (no ground truth in frame 4, video has class a)
                   (2, 0, 0.4, BOX)),     # true positive
         "B": dets((1, 0, 0.6, B1),       # classification (class b's box)
                   (1, 0, 0.5, FAR))}     # other
    eb = frame_errors(d, gt, ["A", "B"])
    # ranked: TP, L, T, C, O, TP; 3 positives. Precision 1, 1/2, 1/3, 1/4, 1/5, 2/6 at recall
    # 1/3 (five times) then 2/3. AP = 1/3 * (1 + 1)/2 + 1/3 * (1/5 + 2/6)/2 = 19/45.
    assert eb.ap[0] == pytest.approx(19 / 45, abs=1e-7)
    # each error rate is 1/5 then 1/6 on the last recall step: 1/3 * (1/5 + 1/6)/2 = 11/180
    for name in ("localization", "classification", "time", "other"):
        assert getattr(eb, name)[0] == pytest.approx(11 / 180, abs=1e-7)
    assert eb.missed[0] == pytest.approx(1 / 3)
    total = eb.ap + eb.localization + eb.classification + eb.time + eb.other + eb.missed
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    # class b has ground truth but no detection: AP 0, all missed
    assert (eb.ap[1], eb.missed[1]) == (0.0, 1.0)
    assert sum(eb.mean().values()) == pytest.approx(1.0, abs=1e-6)
    # the breakdown's AP is untrimmed frame-AP
    assert eb.ap[0] == pytest.approx(frame_ap(d, gt, ["A", "B"], 0, mode="untrimmed").ap)
