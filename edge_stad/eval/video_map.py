"""Video-mAP with the ACT protocol (reference §5).

Per video and class the linked tubes first go through tube NMS (a tube is dropped when
its spatio-temporal IoU with a better-scored kept tube exceeds 0.3). The survivors of
all videos are ranked by tube score; a tube is a true positive when, among the still
unmatched ground-truth tubes of its class in its video, the one it overlaps most has
spatio-temporal IoU >= the threshold; that tube is then used up.

Tubes are :class:`~edge_stad.core.linking.Tube` s (``boxes``: one row per frame,
``frame, x1, y1, x2, y2[, score]``, no gaps), given as ``{video: {label: [Tube, ...]}}``.
Equal scores keep their input order (videos in list order, tubes as given); with
``ties="reference"`` the tube NMS and the ranking order them as the authors' code does
(:func:`edge_stad.boxes.check_ties`), on the float32 tube scores it sorts.
"""
from __future__ import annotations

import numpy as np

from edge_stad.boxes import check_ties, descending, iou, nms_order
from edge_stad.eval.ap import mean_ap, pr_curve

#: The thresholds ``videoAP_all`` averages: 0.5, 0.55, ..., 0.95 (computed as the reference does).
RANGE_THRESHOLDS = tuple(0.5 + 0.05 * i for i in range(10))


def tube_iou(a, b):
    """Spatio-temporal IoU (ACT ``iou3dt``): temporal IoU x mean box IoU over the common frames.

    The per-frame IoU is taken in the precision NumPy promotes ``a`` and ``b`` to (as the
    reference); the temporal factor in float64.
    """
    start, stop = max(int(a[0, 0]), int(b[0, 0])), min(int(a[-1, 0]), int(b[-1, 0]))
    if stop < start:
        return 0.0
    union = max(int(a[-1, 0]), int(b[-1, 0])) - min(int(a[0, 0]), int(b[0, 0])) + 1
    ia, ib = start - int(a[0, 0]), start - int(b[0, 0])
    n = stop - start + 1
    frames = iou(a[ia:ia + n, 1:5], b[ib:ib + n, 1:5])
    return float(np.mean(frames)) * (n / union)


def _scores(tubes, ties):
    """Tube scores to sort: float32 as the reference sorts them with ``reference`` ties, else as given."""
    return np.asarray([t.score for t in tubes], dtype=np.float32 if check_ties(ties) == "reference" else None)


def tube_nms(tubes, threshold=0.3, ties="stable"):
    """Indices of the tubes kept by greedy tube NMS, best score first."""
    order = nms_order(_scores(tubes, ties), ties).tolist()
    keep = []
    while order:
        top = order.pop(0)
        keep.append(top)
        order = [i for i in order if tube_iou(tubes[i].boxes, tubes[top].boxes) <= threshold]
    return keep


def video_aps(tubes, gt, videos, label, thresholds, nms_threshold=0.3, ties="stable"):
    """:class:`~edge_stad.eval.ap.ClassAP` of one class at each spatio-temporal IoU threshold.

    NMS, ranking and overlaps are computed once for all thresholds.
    """
    pooled = []
    for v in videos:
        mine = tubes.get(v, {}).get(label, [])
        pooled += [(v, mine[i]) for i in tube_nms(mine, nms_threshold, ties)]
    ranked = [pooled[i] for i in descending(_scores([t for _, t in pooled], ties), ties)]
    targets = {v: gt.gttubes[v].get(label, ()) for v in videos}
    overlaps = [np.array([tube_iou(g, tube.boxes) for g in targets[v]]) for v, tube in ranked]
    curves = []
    for threshold in thresholds:
        used = {v: np.zeros(len(g), dtype=bool) for v, g in targets.items()}
        tp = np.zeros(len(ranked), dtype=bool)
        for rank, ((v, _), overlap) in enumerate(zip(ranked, overlaps)):
            if len(overlap) and not used[v].all():
                overlap = np.where(used[v], -np.inf, overlap)
                best = int(np.argmax(overlap))
                if overlap[best] >= threshold:
                    tp[rank] = used[v][best] = True
        curves.append(pr_curve(tp, sum(len(g) for g in targets.values())))
    return curves


def video_ap(tubes, gt, videos, label, iou_threshold=0.5, nms_threshold=0.3):
    """:class:`~edge_stad.eval.ap.ClassAP` of one class at one threshold."""
    return video_aps(tubes, gt, videos, label, [iou_threshold], nms_threshold)[0]


def video_maps(tubes, gt, videos, thresholds, ties="stable"):
    """``{threshold: MAP}`` over all classes of ``gt`` (:class:`~edge_stad.eval.ap.MAP`)."""
    per_label = [video_aps(tubes, gt, videos, label, thresholds, ties=ties) for label in range(len(gt.labels))]
    return {th: mean_ap(curves[i] for curves in per_label) for i, th in enumerate(thresholds)}


def video_map(tubes, gt, videos, iou_threshold=0.5):
    """Video-mAP over all classes of ``gt`` at one threshold."""
    return video_maps(tubes, gt, videos, [iou_threshold])[iou_threshold]


def video_map_range(tubes, gt, videos, thresholds=RANGE_THRESHOLDS):
    """Mean of the video-mAPs at ``thresholds`` (``videoAP_all``: 0.5:0.05:0.95)."""
    return float(np.mean([m.mean for m in video_maps(tubes, gt, videos, thresholds).values()]))
