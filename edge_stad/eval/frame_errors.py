"""Where frame-mAP is lost: ACT's error breakdown (``frameAP_error``; paper Fig. 7).

Every ranked detection of a class is a true positive or exactly one error:

* **localization**: its (video, frame) holds ground truth of the class, but no unused box
  of it overlaps >= the threshold (includes duplicates);
* **classification**: no ground truth of the class in that frame, but a box of another
  class overlaps it >= the threshold;
* **time**: no ground truth in that frame at all, but the video holds the class;
* **other**: everything else (wrong place in a frame with other classes, or a video
  without the class);

plus **missed** = 1 - final recall. Each error's share is the area under its rate
(errors / detections so far) against recall, like AP under precision, so
``AP + localization + classification + time + other + missed == 1`` per class (up to
the float32 rounding of the curve points). As in the reference every detection counts:
this is untrimmed frame-AP, equal to trimmed frame-AP where tubes span whole videos.
A class without ground truth has AP 0 and missed 1.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge_stad.boxes import iou
from edge_stad.eval.ap import average_precision
from edge_stad.eval.frame_map import group, gt_boxes, key_stride, lookup, rank_class

ERRORS = ("localization", "classification", "time", "other", "missed")


class ErrorBreakdown(NamedTuple):
    """Per-class arrays (index = label) of fractions; each class's six values sum to 1."""

    ap: np.ndarray
    localization: np.ndarray
    classification: np.ndarray
    time: np.ndarray
    other: np.ndarray
    missed: np.ndarray

    def mean(self):
        """The six means over classes, as a dict (they sum to 1 too)."""
        return {name: float(np.mean(values)) for name, values in self._asdict().items()}


def _best_other_overlap(ranked, rows, other_key, other_box):
    """Highest IoU of each detection in ``rows`` with ground truth of other classes in its frame."""
    order, unique, start, count = group(other_key)
    other_box = other_box[order]
    pos, found = lookup(unique, ranked.key[rows])
    best = np.full(len(rows), -np.inf)
    rows_in = np.flatnonzero(found)
    if rows_in.size:
        n = count[pos[rows_in]]
        first = np.cumsum(n) - n
        det = np.repeat(rows_in, n)
        box = np.repeat(start[pos[rows_in]], n) + np.arange(n.sum()) - np.repeat(first, n)
        overlap = iou(other_box[box], ranked.boxes[rows[det]])
        best[rows_in] = np.maximum.reduceat(overlap, first)
    return found, best


def class_errors(detections, gt, videos, label, iou_threshold=0.5, ties="stable"):
    """``(ap, localization, classification, time, other, missed)`` fractions of one class."""
    ranked = rank_class(detections, gt, videos, label, iou_threshold, ties)
    stride = key_stride(gt, videos)
    other_keys, other_boxes = zip(*[gt_boxes(gt, videos, other, stride)
                                    for other in range(len(gt.labels)) if other != label] or
                                  [(np.zeros(0, dtype=np.int64), np.zeros((0, 4)))])
    wrong = np.flatnonzero(~ranked.true_positive & ~ranked.has_gt)
    in_other, best = _best_other_overlap(ranked, wrong, np.concatenate(other_keys), np.concatenate(other_boxes))
    has_class = np.array([label in gt.gttubes[v] for v in videos] or [False])[ranked.video[wrong]]
    kinds = np.zeros((len(ranked.key), 4), dtype=bool)
    kinds[:, 0] = ~ranked.true_positive & ranked.has_gt
    kinds[wrong, 1] = in_other & (best >= iou_threshold)
    kinds[wrong, 2] = ~in_other & has_class
    kinds[wrong, 3] = ~(kinds[wrong, 1] | kinds[wrong, 2])
    seen = np.arange(1, len(ranked.key) + 1)
    tp = np.cumsum(ranked.true_positive)
    recall = np.concatenate([[0.0], tp / ranked.num_gt if ranked.num_gt else 0 * tp]).astype(np.float32)
    precision = np.concatenate([[1.0], tp / seen]).astype(np.float32)
    rates = np.concatenate([np.zeros((1, 4)), np.cumsum(kinds, axis=0) / seen[:, None]]).astype(np.float32)
    shares = [average_precision(rates[:, j], recall) for j in range(4)]
    return (average_precision(precision, recall), *shares, 1.0 - float(recall[-1]))


def frame_errors(detections, gt, videos, iou_threshold=0.5, ties="stable"):
    """:class:`ErrorBreakdown` of every class of ``gt`` (equal scores ranked as ``ties`` says)."""
    per_class = [class_errors(detections, gt, videos, label, iou_threshold, ties) for label in range(len(gt.labels))]
    return ErrorBreakdown(*(np.array(column) for column in zip(*per_class)))
