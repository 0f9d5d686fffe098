import ast
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from edge_stad.core.region_decode import box_iou, decode_region, decode_region_batch, nms

OFF = -30.0  # objectness logit of an empty anchor: sigmoid ~ 1e-13


def head(anchors, classes, h, w):
    """An all-empty head output: every anchor's objectness logit is OFF."""
    out = np.zeros((len(anchors), 5 + classes, h, w), dtype=np.float32)
    out[:, 4] = OFF
    return out


def test_hand_built_box_and_scores():
    # one anchor 1 x 2 cells on a 4 x 4 grid; the anchor at row 2, column 1 holds a box:
    # sigmoid(0) = 0.5 -> centre ((1 + 0.5) / 4, (2 + 0.5) / 4) = (0.375, 0.625);
    # size (1 * e^ln2, 2 * e^0) = 2 x 2 cells = 0.5 x 0.5; objectness 0.5; classes softmax(ln 3, 0) = 0.75, 0.25
    out = head([[1, 2]], 2, 4, 4)
    out[0, :, 2, 1] = [0, 0, math.log(2), 0, 0, math.log(3), 0]
    rows = decode_region(out.reshape(-1, 4, 4), [[1, 2]], 2)
    box = [0.125, 0.375, 0.625, 0.875]
    np.testing.assert_allclose(rows, [box + [0.375, 0], box + [0.125, 1]], atol=1e-6)
    assert rows.dtype == np.float32
    # YOWO's frame-mAP rows: the same scores, both labelled with the best class (its line-173 bug)
    np.testing.assert_allclose(decode_region(out.reshape(-1, 4, 4), [[1, 2]], 2, mode="yowo_frame"),
                               [box + [0.375, 0], box + [0.125, 0]], atol=1e-6)
    # YOWO's linker input: every class, scored by its probability alone
    np.testing.assert_allclose(decode_region(out.reshape(-1, 4, 4), [[1, 2]], 2, mode="yowo_video"),
                               [box + [0.75, 0], box + [0.25, 1]], atol=1e-6)
    # the threshold is strict and applies to objectness x probability
    assert len(decode_region(out.reshape(-1, 4, 4), [[1, 2]], 2, conf_threshold=0.125)) == 1


def test_boxes_are_clipped_and_flat_anchor_lists_work():
    out = head([[4, 4]], 1, 2, 2)
    out[0, :5, 0, 0] = [0, 0, 0, 0, 0]  # centre (0.25, 0.25), 4 x 4 cells on a 2 x 2 grid -> 2 x 2 image
    rows = decode_region(out.reshape(-1, 2, 2), [4.0, 4.0], 1)
    np.testing.assert_allclose(rows, [[0, 0, 1, 1, 0.5, 0]], atol=1e-6)


def test_per_class_nms_and_yowo_class_agnostic_nms():
    # two anchors of the same shape predict the same box at one cell, one sure of class 0, the other of class 1
    out = head([[1, 1], [1, 1]], 2, 3, 3)
    out[0, :, 1, 1] = [0, 0, 0, 0, 2.0, 10, -10]
    out[1, :, 1, 1] = [0, 0, 0, 0, 1.0, -10, 10]
    flat = out.reshape(-1, 3, 3)
    per_class = decode_region(flat, [[1, 1], [1, 1]], 2)
    np.testing.assert_array_equal(per_class[:, 5], [0, 1])  # different classes: both kept
    np.testing.assert_allclose(per_class[:, 4], [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1))], rtol=1e-4)
    # YOWO: one class-agnostic NMS by objectness keeps the first anchor only
    np.testing.assert_array_equal(decode_region(flat, [[1, 1], [1, 1]], 2, mode="yowo_frame")[:, 5], [0])
    # the same class twice: the per-class NMS keeps the better one
    out[1, 5:, 1, 1] = [10, -10]
    np.testing.assert_array_equal(decode_region(out.reshape(-1, 3, 3), [[1, 1], [1, 1]], 2)[:, 5], [0])
    # moved a quarter cell right (sigmoid(ln 3) = 0.75): IoU 0.75 / 1.25 = 0.6 > 0.4 suppresses, 0.65 does not
    out[1, 0, 1, 1] = math.log(3)
    assert len(decode_region(out.reshape(-1, 3, 3), [[1, 1], [1, 1]], 2)) == 1
    assert len(decode_region(out.reshape(-1, 3, 3), [[1, 1], [1, 1]], 2, nms_threshold=0.65)) == 2


def test_nms_greedy_order_and_top_k():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [2, 0, 12, 10]], dtype=np.float64)
    scores = np.array([0.9, 0.95, 0.5, 0.95])
    # 1 (first of the tied best) suppresses 0 and 3 (IoU 90/110 each); 2 stays
    np.testing.assert_array_equal(nms(boxes, scores, 0.4), [1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.4, groups=[0, 0, 0, 1]), [1, 3, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.4, groups=[0, 0, 0, 1], top_k=2), [1, 3])
    assert box_iou(boxes[0], boxes[1]) == pytest.approx(90 / 110)
    assert box_iou(boxes[0], boxes[2]) == 0


def test_top_k_and_batch_helper():
    rng = np.random.default_rng(0)
    anchors = [[1, 1], [2, 3]]
    outputs = rng.normal(size=(2, 2 * (5 + 3), 5, 5)).astype(np.float32)
    full = decode_region(outputs[0], anchors, 3)
    assert len(full) > 5 and (np.diff(full[:, 4]) <= 0).all()
    np.testing.assert_array_equal(decode_region(outputs[0], anchors, 3, top_k=5), full[:5])
    batch = decode_region_batch(outputs, anchors, 3, top_k=4)
    for one, out in zip(batch, outputs):
        np.testing.assert_array_equal(one, decode_region(out, anchors, 3, top_k=4))


def test_bad_inputs_name_what_was_expected():
    anchors = [[1, 1], [2, 2]]
    with pytest.raises(ValueError, match=r"\(16, h, w\) for A=2 anchors and C=3"):
        decode_region(np.zeros((15, 7, 7)), anchors, 3)
    bad = np.zeros((16, 7, 7), dtype=np.float32)
    bad[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        decode_region(bad, anchors, 3)
    with pytest.raises(ValueError, match="anchors"):
        decode_region(np.zeros((16, 7, 7)), [[1, -1], [2, 2]], 3)
    with pytest.raises(ValueError, match="mode"):
        decode_region(np.zeros((16, 7, 7)), anchors, 3, mode="best")
    with pytest.raises(ValueError, match=r"\(B, A\*\(5\+C\), h, w\)"):
        decode_region_batch(np.zeros((16, 7, 7)), anchors, 3)


def test_imports_without_torch_and_parses_as_python_3_8():
    path = pathlib.Path(__file__).parents[1] / "edge_stad" / "core" / "region_decode.py"
    ast.parse(path.read_text(), feature_version=(3, 8))
    code = "import sys; sys.modules['torch'] = None; import edge_stad.core.region_decode"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=path.parents[2])
