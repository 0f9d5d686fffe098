"""Box helpers: +1-pixel IoU, its NMS twin, stable ranking and linear soft-NMS."""
import numpy as np
import pytest
from act_reference import box_iou, gt_det_iou, nms_box_iou, plain_soft_nms

from edge_stad.boxes import area, descending, iou, nms_iou, soft_nms


def test_area_counts_inclusive_pixels():
    # x 0..9 and y 0..4 inclusive: 10 x 5 pixels
    assert area(np.array([0.0, 0.0, 9.0, 4.0])) == 50.0


def test_iou_known_values():
    a = np.array([0.0, 0.0, 9.0, 9.0])  # 10x10 = 100 pixels
    b = np.array([5.0, 0.0, 14.0, 9.0])  # shifted by 5: overlap 5x10 = 50
    assert iou(a, b) == pytest.approx(50 / 150)  # 50 / (100 + 100 - 50)
    assert iou(a, a) == 1.0
    assert iou(a, np.array([10.0, 0.0, 19.0, 9.0])) == 0.0  # touching, no shared pixel
    # a box that shares exactly one pixel column with a: overlap 1x10 = 10
    assert iou(a, np.array([9.0, 0.0, 18.0, 9.0])) == pytest.approx(10 / 190)


def test_iou_broadcasts_pairwise():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (7, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 50, (7, 2))], axis=1)
    matrix = iou(boxes[:, None], boxes[None])
    assert matrix.shape == (7, 7)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix, matrix.T)


def test_float32_arithmetic_matches_the_scalar_reference_bit_for_bit():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 300, (500, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 80, (500, 2)).astype(np.float32)], axis=1)
    a, b = boxes[:250], boxes[250:]
    fast, fast_nms = iou(a, b), nms_iou(a, b)
    assert fast.dtype == np.float32
    for i in range(250):
        assert fast[i] == box_iou(list(a[i]), list(b[i]))
        assert fast_nms[i] == nms_box_iou(list(a[i]), list(b[i]))
    # the two orders of operation give the same IoU up to float32 rounding
    np.testing.assert_allclose(fast, fast_nms, atol=1e-6)
    # ground truth in float64 against float32 detections: the detection's +1 and area stay float32
    g = b.astype(np.float64) + 0.3
    mixed = iou(g, a)
    assert mixed.dtype == np.float64
    assert all(mixed[i] == gt_det_iou(g[i], a[i]) for i in range(250))


def test_descending_breaks_ties_by_input_order():
    assert descending([0.5, 0.9, 0.5, 0.9, 0.1]).tolist() == [1, 3, 0, 2, 4]


def test_soft_nms_known_values():
    boxes = np.array([[0, 0, 9, 9],      # best box
                      [1, 0, 10, 9],     # IoU 90 / 110 = 0.818 with it -> weight 0.182
                      [50, 50, 59, 59],  # far away: untouched
                      [0, 0, 9, 8]],     # IoU 90 / 100 = 0.9 -> weight 0.1
                     dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    out = soft_nms(boxes, scores, 0.6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.9, 0.8 * (1 - 90 / 110), 0.7, 0.6 * (1 - 0.9)], rtol=1e-6)


def test_soft_nms_suppressed_box_does_not_suppress():
    # A-B overlap 80/120 = 0.667 > 0.6: B is down-weighted to 1/3 and never visited.
    # B-C overlap 0.667 too, but A-C only 60/140 = 0.43, so C keeps its score.
    boxes = np.array([[0, 0, 9, 9], [2, 0, 11, 9], [4, 0, 13, 9]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    np.testing.assert_allclose(soft_nms(boxes, scores, 0.6), [0.9, 0.8 * (1 - 80 / 120), 0.7], rtol=1e-6)


def test_soft_nms_matches_plain_loop():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (n, 2))], axis=1).astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        rows = [list(b) + [s] for b, s in zip(boxes, scores)]
        plain_soft_nms(rows)
        assert np.array_equal(soft_nms(boxes, scores), np.array([r[4] for r in rows], dtype=np.float32))
