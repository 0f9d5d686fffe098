"""NumPy box helpers of the ACT protocol: +1-pixel IoU and linear soft-NMS (no torch).

Boxes are ``(..., 4)`` arrays ``x1, y1, x2, y2`` in pixels whose corners are inclusive,
so a box is ``x2 - x1 + 1`` pixels wide (reference §5). Linking and both metrics use
these functions, which keep the reference's operation order and let NumPy promote the
inputs as it does there: float32 tubelets give its float32 results bit for bit, and a
float64 ground-truth box against a float32 detection mixes precisions the same way.
"""
from __future__ import annotations

import numpy as np

from edge_stad.defaults import TIES
from edge_stad.errors import ConfigError


def area(boxes):
    """Pixel area ``(x2 - x1 + 1) * (y2 - y1 + 1)`` of ``(..., 4)`` boxes."""
    return (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)


def iou(a, b):
    """IoU of ``a`` and ``b`` broadcast against each other, as ACT's ``iou2d``.

    The overlap width is ``min(x2 + 1) - max(x1)``, clamped at 0. Degenerate boxes give
    inf/nan exactly as in the reference (no warning); callers validate their inputs.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.maximum(0, np.minimum(a[..., 2] + 1, b[..., 2] + 1) - np.maximum(a[..., 0], b[..., 0]))
        h = np.maximum(0, np.minimum(a[..., 3] + 1, b[..., 3] + 1) - np.maximum(a[..., 1], b[..., 1]))
        overlap = w * h
        return overlap / (area(a) + area(b) - overlap)


def nms_iou(a, b, area_a=None, area_b=None):
    """The same IoU as :func:`iou`, with the arithmetic of the reference's NMS routines.

    There the overlap width is ``min(x2) - max(x1) + 1``, which rounds differently from
    :func:`iou` in float32; keeping both reproduces which boxes each step suppresses.
    Greedy NMS loops may pass the boxes' areas, computed once.
    """
    area_a = area(a) if area_a is None else area_a
    area_b = area(b) if area_b is None else area_b
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
        h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
        inter = w * h
        return inter / (area_a + area_b - inter)


def check_ties(ties):
    """``ties`` if it is one of :data:`edge_stad.defaults.TIES`, else a ConfigError.

    How equal scores rank. ``stable`` (the default): in input order, the same on every machine
    and NumPy. ``reference``: as the authors' ACT code ranks them, with NumPy's default (unstable)
    sort: ``np.argsort(-scores)`` where it ranks (frame-mAP, its error breakdown, video-mAP) and
    ``np.argsort(scores)[::-1]`` in its NMS routines (per-frame soft-NMS, tubelet NMS, tube NMS).
    That order depends on the array's dtype and length and on the NumPy version (and the SIMD
    sort it dispatches to on this CPU), so it reproduces published numbers bit for bit on the
    same NumPy only.
    """
    if ties not in TIES:
        raise ConfigError(f"ties must be one of {TIES}, got {ties!r}")
    return ties


def descending(scores, ties="stable"):
    """Indices that sort ``scores`` from high to low, equal scores as ``ties`` says (:func:`check_ties`).

    ``stable``: equal scores keep their input order. ``reference``: ``np.argsort(-scores)``, as the
    reference ranks detections and tubes (give the scores in its dtype, float32).
    """
    scores = np.asarray(scores)
    return np.argsort(-scores) if check_ties(ties) == "reference" else np.argsort(-scores, kind="stable")


def nms_order(scores, ties="stable"):
    """The order NMS visits ``scores`` in: :func:`descending`, or with ``reference`` ties the
    reference's ``np.argsort(scores)[::-1]`` (its NMS loops; ties then tend to come last first)."""
    if check_ties(ties) == "reference":
        return np.argsort(np.asarray(scores))[::-1]
    return descending(scores)


def soft_nms(boxes, scores, threshold=0.6, chunk=1024, ties="stable"):
    """Linear soft-NMS of ACT's per-frame evaluation; returns the rescaled scores.

    Boxes are visited from the highest score down (equal scores in :func:`nms_order`). Every
    later box whose IoU with the visited one exceeds ``threshold`` gets weight ``1 - IoU`` and
    is not visited again; no box is removed. The result is ``scores * weight`` in the scores' dtype.

    Instead of looping over visited boxes, the visited set is found as the fixed point
    of "visited = not suppressed by an earlier visited box" over the matrix of pairs
    above the threshold (computed ``chunk`` rows at a time); it is the greedy one, since
    that is the only fixed point.
    """
    order = nms_order(scores, ties)
    ranked, areas = boxes[order], area(boxes[order])
    n = len(order)
    above = np.zeros((n, n), dtype=bool)  # above[i, j]: i comes first and would suppress j
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        above[rows] = nms_iou(ranked[rows, None], ranked[None], areas[rows, None], areas[None]) > threshold
    above = np.triu(above, 1)
    visited = np.ones(n, dtype=bool)
    while True:
        again = ~above[visited].any(axis=0)
        if (again == visited).all():
            break
        visited = again
    weight = np.ones_like(scores)
    hit = np.flatnonzero(~visited)
    if hit.size:  # weighed by the first visited box that suppresses it
        by = np.argmax(above[:, hit] & visited[:, None], axis=0)
        weight[order[hit]] = 1 - nms_iou(ranked[by], ranked[hit], areas[by], areas[hit])
    return scores * weight
