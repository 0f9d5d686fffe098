"""Precision-recall curves and average precision as ACT computes them.

A curve starts at (precision 1, recall 0) and has one point per ranked detection. AP
is the trapezoid area under the raw curve, ``sum (r_i - r_{i-1}) (p_i + p_{i-1}) / 2``:
not VOC's 11-point nor an interpolated, monotone envelope. Points are stored in float32
as in the reference; the area is summed in float64.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np


class ClassAP(NamedTuple):
    """AP of one class with its curve (float32 arrays, first point (1, 0))."""

    ap: float
    precision: np.ndarray
    recall: np.ndarray


class MAP(NamedTuple):
    """Mean AP over all classes of the dataset (classes without ground truth count as 0)."""

    mean: float
    per_class: Tuple[ClassAP, ...]

    @property
    def ap(self):
        return np.array([c.ap for c in self.per_class])


def average_precision(precision, recall):
    """Trapezoid area under the curve given by the points (float64 sum)."""
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    return float(np.sum((r[1:] - r[:-1]) * (p[1:] + p[:-1]) * 0.5))


def pr_curve(true_positive, num_positives):
    """The curve of detections ranked best first, ``true_positive`` a bool per detection.

    With no positives at all every point is dropped (the reference's frame-mAP skips
    rows where ``tp + fn == 0``) and the AP is 0.
    """
    tp = np.cumsum(true_positive, dtype=np.int64)
    seen = np.arange(1, len(tp) + 1)
    if num_positives == 0:
        tp = seen = tp[:0]
    precision = np.concatenate([[1.0], tp / seen]).astype(np.float32)
    recall = np.concatenate([[0.0], tp / max(num_positives, 1)]).astype(np.float32)
    return ClassAP(average_precision(precision, recall), precision, recall)


def mean_ap(per_class):
    per_class = tuple(per_class)
    return MAP(float(np.mean([c.ap for c in per_class])) if per_class else 0.0, per_class)
