"""YOLOv2 region decoding of a MENet/YOWO head output, in NumPy (no torch).

The head gives ``(A*(5+C), h, w)`` per image; anchor ``a`` owns channels
``a*(5+C) .. (a+1)*(5+C)-1`` in the order ``tx, ty, tw, th, conf, cls_0..cls_{C-1}``.
A box is centred at ``((cx + sigmoid(tx)) / w, (cy + sigmoid(ty)) / h)`` and sized
``anchor * exp(tw, th)`` grid cells; objectness is ``sigmoid(conf)``, class
probabilities a softmax over the C logits (YOWO ``core/utils.py`` ``get_region_boxes``).

What becomes a detection (``mode``):

* ``"per_class"`` (default): every (cell, anchor, class) whose score
  ``objectness * p(class)`` exceeds ``conf_threshold``, then greedy NMS per class at
  ``nms_threshold``, ranked by that score. This is what YOWO's frame-mAP code means to
  write, without its two shortcuts below.
* ``"yowo_frame"``: exactly the rows YOWO writes for frame-mAP (``core/optimization.py``
  ``test_ucf24_jhmdb21``, lines 142-173). A (cell, anchor) is a candidate when
  ``objectness * max p > conf_threshold``; one class-agnostic NMS runs over candidates
  ranked by objectness alone; each survivor gives a row for its best class and one for
  every other class with ``objectness * p(c) > conf_threshold``, scored
  ``objectness * p(c)``. YOWO labels those extra rows with the best class (line 173
  writes ``box[6]``, not the class of the score); this mode keeps that bug, for
  benchmark parity only.
* ``"yowo_video"``: the rows ``video_mAP.py`` (lines 212-230) hands its Viterbi
  linker: the same candidates and class-agnostic NMS, then every survivor once per
  class, scored by the class probability alone (objectness left out, no threshold).

Outputs are ``float32 (N, 6)`` rows ``x1, y1, x2, y2, score, label`` in [0, 1]
image coordinates, clipped after NMS (YOWO clips when it writes), best score first
(equal scores keep cell order). NMS and every IoU here are continuous (no +1 pixel),
like YOWO's ``bbox_iou``; IoU does not change under scaling of the axes, so it is the
same in normalised and pixel coordinates.
"""
import numpy as np

from edge_stad.boxes import descending
from edge_stad.core.windows import Window
from edge_stad.errors import ConfigError

MODES = ("per_class", "yowo_frame", "yowo_video")


def box_iou(a, b):
    """Continuous IoU of ``(..., 4)`` boxes ``x1, y1, x2, y2`` broadcast against each other.

    YOWO's ``bbox_iou(x1y1x2y2=True)``: width ``x2 - x1``; 0 when they do not overlap
    or both have no area.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    w = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]))
    h = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]))
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    union = area_a + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def check_anchors(anchors):
    """``anchors`` as ``float64 (A, 2)`` ``[w, h]`` in grid cells; a flat YOWO list of 2A values works too."""
    array = np.asarray(anchors, dtype=np.float64)
    if array.size == 0 or array.size % 2 or not np.isfinite(array).all() or (array <= 0).any():
        raise ConfigError(f"anchors must be A > 0 positive finite [w, h] pairs (grid cells), got {anchors!r}")
    return array.reshape(-1, 2)


def region_grid(output, anchors, num_classes):
    """One image's head output -> boxes ``(n, 4)`` x1,y1,x2,y2 (unclipped), objectness ``(n,)``, probs ``(n, C)``.

    ``n = A*h*w`` in anchor, row, column order.
    """
    anchors = check_anchors(anchors)
    output = np.asarray(output, dtype=np.float32)
    A, C = len(anchors), int(num_classes)
    if C < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if output.ndim != 3 or output.shape[0] != A * (5 + C):
        raise ConfigError(f"region output must be (A*(5+C), h, w) = ({A * (5 + C)}, h, w) for A={A} anchors and "
                          f"C={C} classes, got shape {output.shape}")
    if not np.isfinite(output).all():
        raise ConfigError("region output holds NaN or inf; expected finite logits")
    _, h, w = output.shape
    out = output.reshape(A, 5 + C, h, w).astype(np.float64)
    gy, gx = np.mgrid[0:h, 0:w]
    cx = (_sigmoid(out[:, 0]) + gx) / w
    cy = (_sigmoid(out[:, 1]) + gy) / h
    bw = np.exp(out[:, 2]) * anchors[:, 0, None, None] / w
    bh = np.exp(out[:, 3]) * anchors[:, 1, None, None] / h
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1).reshape(-1, 4)
    logits = out[:, 5:].transpose(0, 2, 3, 1).reshape(-1, C)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return boxes, _sigmoid(out[:, 4]).reshape(-1), probs


def _sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


def nms(boxes, scores, threshold, groups=None, top_k=None):
    """Greedy NMS; indices kept, best score first (ties: lower index first).

    A box is suppressed by a better kept box of the same group (all one group when
    ``groups`` is None) whose IoU with it exceeds ``threshold``. Kept boxes come out in
    score order, so stopping at ``top_k`` gives the same top ``top_k`` as a full run.
    """
    order = descending(scores)
    groups = np.zeros(len(order), dtype=np.int64) if groups is None else np.asarray(groups)
    keep = []
    while order.size and (top_k is None or len(keep) < top_k):
        top, order = order[0], order[1:]
        keep.append(top)
        hit = (groups[order] == groups[top]) & (box_iou(boxes[top], boxes[order]) > threshold)
        order = order[~hit]
    return np.asarray(keep, dtype=np.int64)


def decode_region(output, anchors, num_classes, conf_threshold=0.005, nms_threshold=0.4, top_k=None,
                  mode="per_class"):
    """``(A*(5+C), h, w)`` head output -> ``float32 (N, 6)`` rows ``x1, y1, x2, y2, score, label``.

    Defaults are YOWO's evaluation settings (confidence 0.005, NMS 0.4, no cap);
    ``top_k`` keeps the best rows only. See the module docstring for ``mode``.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if top_k is not None and int(top_k) < 1:
        raise ConfigError(f"top_k must be None or >= 1, got {top_k}")
    boxes, conf, probs = region_grid(output, anchors, num_classes)
    if mode == "per_class":
        scores = conf[:, None] * probs
        cell, label = np.nonzero(scores > conf_threshold)
        score = scores[cell, label]
        keep = nms(boxes[cell], score, nms_threshold, groups=label, top_k=top_k)
        cell, label, score = cell[keep], label[keep], score[keep]
    else:
        candidates = np.flatnonzero(conf * probs.max(axis=1) > conf_threshold)
        kept = candidates[nms(boxes[candidates], conf[candidates], nms_threshold)]
        if mode == "yowo_video":
            cell, label = np.repeat(kept, probs.shape[1]), np.tile(np.arange(probs.shape[1]), len(kept))
            score = probs[cell, label]
        else:
            cell, label = np.nonzero(conf[kept, None] * probs[kept] > conf_threshold)
            cell = kept[cell]
            score, label = conf[cell] * probs[cell, label], probs[cell].argmax(axis=1)  # YOWO's label bug
        rank = descending(score)[:top_k]
        cell, label, score = cell[rank], label[rank], score[rank]
    rows = np.empty((len(cell), 6), dtype=np.float32)
    rows[:, :4] = np.clip(boxes[cell], 0.0, 1.0)
    rows[:, 4] = score
    rows[:, 5] = label
    return rows


def decode_region_batch(outputs, anchors, num_classes, **options):
    """``(B, A*(5+C), h, w)`` -> a list of B :func:`decode_region` results."""
    outputs = np.asarray(outputs)
    if outputs.ndim != 4:
        raise ConfigError(f"batched region output must be (B, A*(5+C), h, w), got shape {outputs.shape}")
    return [decode_region(o, anchors, num_classes, **options) for o in outputs]


def detector_frames(config):
    """How many of the latest frames a MENet's 2D branch reads: the SRM's, or the key frame alone."""
    return max(int(config.get("srm_frames", 0)), 1)


def to_frame_rows(detections, frame, image_hw):
    """Decoded ``(n, 6)`` rows ``x1, y1, x2, y2, score, label`` in [0, 1] -> float32 ``(n, 7)`` frame rows
    ``frame, label, score, x1, y1, x2, y2`` in image pixels (clipped to the image)."""
    h, w = image_hw
    rows = np.empty((len(detections), 7), dtype=np.float32)
    rows[:, 0] = frame
    rows[:, 1] = detections[:, 5]
    rows[:, 2] = detections[:, 4]
    scale = np.array([w, h, w, h], dtype=np.float32)
    rows[:, 3:] = np.minimum(detections[:, :4] * scale, scale - 1)
    return rows


def frame_window(frame, rows, num_classes):
    """One frame's rows -> the K=1 :class:`Window` the tube linker takes (``{label: (m, 5)}`` box, score)."""
    return Window((frame,), {c: np.ascontiguousarray(rows[rows[:, 1] == c][:, [3, 4, 5, 6, 2]])
                             for c in range(num_classes)})
