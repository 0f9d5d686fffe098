"""Frame-mAP with the ACT protocol (reference §5).

Per class, detections are ranked by score over the whole split. A detection is a true
positive when, among the still unmatched ground-truth boxes of its class in its
(video, frame), the one it overlaps most has IoU >= the threshold; that box is then
used up, so duplicates count as false positives.

``mode`` says what a detection in a frame without ground truth of its class means:

* ``untrimmed`` (UCF101-24): a false positive, always;
* ``trimmed`` (the reference's default, used for JHMDB): ignored (no point on the
  curve) when its video has ground truth of that class elsewhere, a false positive
  otherwise. Where every tube spans its whole video the two modes agree.

Detections are per-video ``(n, 7)`` float32 arrays ``frame, label, score, x1, y1, x2, y2``
(:func:`edge_stad.eval.frame_detections.frame_detections` builds them from tubelets).
Equal scores rank in video order (as given), then frame, then row order; with ``ties="reference"``
as the authors' code ranks them (``np.argsort(-scores)``, :func:`edge_stad.boxes.check_ties`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge_stad.boxes import descending, iou
from edge_stad.errors import ConfigError
from edge_stad.eval.ap import mean_ap, pr_curve

FRAME_MODES = ("trimmed", "untrimmed")


class RankedFrames(NamedTuple):
    """One class's detections, best first, with their ground-truth matches."""

    video: np.ndarray  # index into the video list
    key: np.ndarray  # (video, frame) as one int64
    boxes: np.ndarray  # float32 (n, 4)
    true_positive: np.ndarray  # bool
    has_gt: np.ndarray  # bool: its (video, frame) holds ground truth of the class
    num_gt: int


def default_mode(gt, videos):
    """``trimmed`` if every ground-truth tube of ``videos`` spans its whole video, else ``untrimmed``."""
    for v in videos:
        for tubes in gt.gttubes[v].values():
            for tube in tubes:
                if tube[0, 0] != 1 or tube[-1, 0] != gt.nframes[v]:
                    return "untrimmed"
    return "trimmed"


def frame_key(video, frame, stride):
    return np.asarray(video, dtype=np.int64) * stride + np.asarray(frame, dtype=np.int64)


def key_stride(gt, videos):
    return 1 + max([gt.nframes[v] for v in videos] or [0])


def gt_boxes(gt, videos, label, stride):
    """Keys and float64 boxes of every ground-truth box of ``label``, in reference order."""
    keys, boxes = [], []
    for vi, v in enumerate(videos):
        for tube in gt.gttubes[v].get(label, ()):
            keys.append(frame_key(vi, tube[:, 0], stride))
            boxes.append(np.asarray(tube[:, 1:5], dtype=np.float64))
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4))
    return np.concatenate(keys), np.concatenate(boxes)


def rank_class(detections, gt, videos, label, iou_threshold, ties="stable"):
    """Rank ``label``'s detections (equal scores as ``ties`` says) and match them greedily to its ground truth."""
    stride = key_stride(gt, videos)
    parts = []
    for vi, v in enumerate(videos):
        rows = detections.get(v)
        if rows is not None and len(rows):
            rows = rows[rows[:, 1] == label]
            parts.append((np.full(len(rows), vi), rows))
    video = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    rows = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 7), dtype=np.float32)
    order = descending(rows[:, 2], ties)
    video, rows = video[order], rows[order]
    key = frame_key(video, rows[:, 0], stride)
    boxes = np.ascontiguousarray(rows[:, 3:7], dtype=np.float32)
    gt_key, gt_box = gt_boxes(gt, videos, label, stride)
    tp, has_gt = match_greedy(key, boxes, gt_key, gt_box, iou_threshold)
    return RankedFrames(video, key, boxes, tp, has_gt, len(gt_key))


def group(keys):
    """Sort ``keys`` stably: (order, unique keys, start of each in the sorted order, counts)."""
    order = np.argsort(keys, kind="stable")
    unique, start, count = np.unique(keys[order], return_index=True, return_counts=True)
    return order, unique, start, count


def lookup(unique, keys):
    """Position of each of ``keys`` in the sorted ``unique`` and whether it is there."""
    if not len(unique):
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(unique, keys), len(unique) - 1)
    return pos, unique[pos] == keys


def match_greedy(det_key, det_boxes, gt_key, gt_box, threshold):
    """True-positive flags of ranked detections; greedy, each ground-truth box used once."""
    tp = np.zeros(len(det_key), dtype=bool)
    if not len(gt_key):
        return tp, tp.copy()
    order, unique, start, count = group(gt_key)
    gt_box = gt_box[order]
    pos, has_gt = lookup(unique, det_key)
    # Frames with one ground-truth box: the best-ranked detection reaching the threshold wins.
    single = np.flatnonzero(has_gt & (count[pos] == 1))
    overlap = iou(gt_box[start[pos[single]]], det_boxes[single])
    hit = single[overlap >= threshold]
    tp[hit[np.unique(det_key[hit], return_index=True)[1]]] = True
    # Frames with several: go through the detections in rank order.
    multi = np.flatnonzero(has_gt & (count[pos] > 1))
    by_key, _, first, size = group(det_key[multi])
    for a, n in zip(first.tolist(), size.tolist()):
        dets = multi[by_key[a:a + n]]
        g = pos[dets[0]]
        overlap = iou(gt_box[start[g]:start[g] + count[g]][None], det_boxes[dets][:, None])
        free = np.ones(count[g], dtype=bool)
        for d, row in zip(dets.tolist(), overlap):
            row = np.where(free, row, -np.inf)
            j = int(np.argmax(row))
            if row[j] >= threshold:
                tp[d] = True
                free[j] = False
                if not free.any():
                    break
    return tp, has_gt


def frame_ap(detections, gt, videos, label, iou_threshold=0.5, mode="untrimmed", ties="stable"):
    """:class:`~edge_stad.eval.ap.ClassAP` of one class (label index into ``gt.labels``)."""
    if mode not in FRAME_MODES:
        raise ConfigError(f"frame-mAP mode must be one of {FRAME_MODES}, got {mode!r}")
    ranked = rank_class(detections, gt, videos, label, iou_threshold, ties)
    keep = np.ones(len(ranked.key), dtype=bool)
    if mode == "trimmed":
        with_gt = np.zeros(len(videos), dtype=bool)
        with_gt[[i for i, v in enumerate(videos) if len(gt.gttubes[v].get(label, ()))]] = True
        keep = ~(with_gt[ranked.video] & ~ranked.has_gt)
    return pr_curve(ranked.true_positive[keep], ranked.num_gt)


def frame_map(detections, gt, videos, iou_threshold=0.5, mode="untrimmed", ties="stable"):
    """Frame-mAP over all classes of ``gt`` (:class:`~edge_stad.eval.ap.MAP`)."""
    return mean_ap(frame_ap(detections, gt, videos, label, iou_threshold, mode, ties)
                   for label in range(len(gt.labels)))
