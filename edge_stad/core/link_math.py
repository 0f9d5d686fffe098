"""The tube linker's box math on the CPU: the summed NMS overlaps of tubelets and the mean IoUs of tubes with
candidate tubelets, whole matrices or listed pairs only.

The same float32 operation order as ``tube_link.cu`` (every step rounded explicitly), so the CPU and GPU
linkers agree bit for bit; :mod:`edge_stad.kernels.reference` names these as the kernels' references.
"""
import numpy as np

from edge_stad.boxes import area, iou, nms_iou


def block_pairs(rows, cols):
    """Row-major ``(row, col)`` pairs of a block-diagonal matrix: block ``g`` is ``rows[g] x cols[g]``.

    Returns the global row and column of every pair and the ``(G + 1,)`` offsets of each block's
    pairs, so that several labels' pairwise matrices come from one vectorised call.
    """
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    sizes = rows * cols
    starts = np.concatenate([[0], np.cumsum(sizes)])
    block = np.repeat(np.arange(len(sizes)), sizes)
    local = np.arange(starts[-1]) - starts[block]
    first_row = np.cumsum(rows) - rows
    first_col = np.cumsum(cols) - cols
    return first_row[block] + local // cols[block], first_col[block] + local % cols[block], starts


def _summed_nms_iou(a, b, area_a, area_b):
    return np.add.accumulate(nms_iou(a, b, area_a, area_b), axis=-1)[..., -1]


def nms_overlap(boxes):
    """``tube_link.cu`` ``nms_overlap``: tubelets ``(m, K, 4)`` -> ``(m, m)`` sums over k of the NMS IoU of box k."""
    boxes = np.asarray(boxes, np.float32)
    areas = area(boxes)
    return _summed_nms_iou(boxes[:, None], boxes[None], areas[:, None], areas[None])


def nms_overlap_pairs(boxes, first, second):
    """:func:`nms_overlap` of the pairs ``(first[p], second[p])`` of ``boxes`` ``(m, K, 4)`` only: ``(P,)``."""
    boxes = np.asarray(boxes, np.float32)
    areas = area(boxes)
    return _summed_nms_iou(boxes[first], boxes[second], areas[first], areas[second])


def _facing(tube_boxes, offset):
    """Per tube ``(A, K, 4)`` last extended ``offset`` clips ago: the tube box each candidate box
    faces, which of the K faces count, and how many do."""
    A, K = tube_boxes.shape[:2]
    k = np.arange(K)
    overlapping = offset < K
    facing = np.where(overlapping[:, None], np.minimum(k + offset[:, None], K - 1), K - 1)
    used = np.where(overlapping[:, None], k < (K - offset)[:, None], k == 0)
    count = np.where(overlapping, K - offset, 1).astype(np.float32)
    return tube_boxes[np.arange(A)[:, None], facing], used, count


def match_iou(tube_boxes, offset, candidates):
    """``tube_link.cu`` ``match_iou``: mean IoU of each tube ``(A, K, 4)`` with each candidate ``(M, K, 4)``.

    Tube ``a`` was last extended ``offset[a]`` clips ago: for ``o < K`` candidate box ``k``
    faces tube box ``k + o`` for the ``K - o`` boxes that overlap; for ``o >= K`` only the
    candidate's first box faces the tube's last box. Sums run in box order (as the
    reference's ``sum()`` over a list), then divide by the count.
    """
    facing, used, count = _facing(np.asarray(tube_boxes, np.float32), np.asarray(offset, np.int64))
    candidates = np.asarray(candidates, np.float32)
    pair = np.where(used[:, None, :], iou(candidates[None], facing[:, None]), np.float32(0))
    return np.add.accumulate(pair, axis=2)[..., -1] / count[:, None]


def match_iou_pairs(tube_boxes, offset, candidates, tube, candidate):
    """:func:`match_iou` of the pairs ``(tube[p], candidate[p])`` only: ``(P,)``."""
    facing, used, count = _facing(np.asarray(tube_boxes, np.float32), np.asarray(offset, np.int64))
    candidates = np.asarray(candidates, np.float32)
    pair = np.where(used[tube], iou(candidates[candidate], facing[tube]), np.float32(0))
    return np.add.accumulate(pair, axis=-1)[..., -1] / count[tube]
