"""The INT8 accuracy gate: how far the quantized engine drifts from FP32, on held-out windows.

Output agreement on every window: of the FP32 head's top tubelets (score >= ``min_score``),
the share whose class and key-frame peak cell the INT8 head also reports among its top
tubelets, and the mean L1 distance (grid cells) between the boxes of those matched
tubelets. With a labelled dataset, also frame-mAP@0.5 of both on its test split; the
drop in points is what ``--max-map-drop`` bounds.

STMA engines (:func:`snippet_agreement`) are compared the same way on their windows. MENet engines
(:func:`region_agreement`) and flow-fusion engines (:func:`ssd_agreement`) are compared on decoded
boxes instead: of the FP32 detector's top boxes on each clip, the share the INT8 detector also
reports (same class, IoU >= 0.5), their mean IoU and score difference; also the IoU of the two top
boxes and the largest difference of the raw outputs, which say something where no box scores
``min_score``.
"""
import numpy as np

from edge_stad.core.region_decode import box_iou, decode_region, detector_frames
from edge_stad.core.ssd_decode import decode_ssd, prior_boxes
from edge_stad.engines.snippet_backend import window_feeds

TOP = 10
MIN_SCORE = 0.1


def _key(row, K):
    """(class, key-frame box centre cell) of a decoded row."""
    box = row[4 * (K - 1):4 * K]
    return int(row[-1]), int(np.floor((box[0] + box[2]) / 2)), int(np.floor((box[1] + box[3]) / 2))


def output_agreement(reference, candidate, windows, top=TOP, min_score=MIN_SCORE):
    """Compare two tubelet backends window by window; returns ``{peak_agreement, box_l1, windows}``."""
    def rows(backend, window):
        feat, wh = backend.encode(window)
        return backend.detect(feat[None], wh[None])[0]

    return _agreement(reference.config["K"], [(rows(reference, w), rows(candidate, w)) for w in windows], top,
                      min_score)


def snippet_agreement(reference, candidate, windows, top=TOP, min_score=MIN_SCORE):
    """:func:`output_agreement` of two STMA backends on one-clip windows ``(1, T, H, W, 3)``."""
    def rows(backend, window):
        return backend.detect(**window_feeds(backend, window[0]))[0]

    return _agreement(reference.config["K"], [(rows(reference, w), rows(candidate, w)) for w in windows], top,
                      min_score)


def _agreement(K, pairs, top, min_score):
    """Of the reference's top tubelets in each ``(reference rows, candidate rows)`` pair, the share matched by
    class and key-frame cell among the candidate's top ones, and their mean box L1 distance."""
    matched = total = 0
    l1 = []
    for ref, cand in pairs:
        ref, cand = ref[:top], cand[:top]
        found = {_key(r, K): r for r in cand}
        for r in ref[ref[:, -2] >= min_score]:
            total += 1
            other = found.get(_key(r, K))
            if other is not None:
                matched += 1
                l1.append(float(np.mean(np.abs(r[:4 * K] - other[:4 * K]))))
    return {"windows": len(pairs), "reference_tubelets": total,
            "peak_agreement": matched / total if total else 1.0,
            "box_l1_grid_cells": float(np.mean(l1)) if l1 else 0.0}


def _region_and_boxes(backend, clip, top):
    feat3d = backend.encode_3d(clip)
    region = backend.detect(clip[:, -detector_frames(backend.config):], feat3d)[0]
    return region, decode_region(region, backend.config["anchors"], backend.config["num_classes"], top_k=top)


def region_agreement(reference, candidate, windows, top=TOP, min_score=MIN_SCORE, iou=0.5):
    """Compare two frame backends on one-clip windows ``(1, T, H, W, 3)``; returns ``{box_agreement,
    mean_iou, score_abs_diff, reference_boxes}`` over the reference's boxes scoring ``min_score`` or more,
    ``top_box_iou`` (mean IoU of the two top-scoring boxes, 0 where their classes differ; meaningful
    when no box reaches ``min_score``, as with untrained weights) and ``region_max_abs_diff``."""
    pairs = [[_region_and_boxes(b, window[:1], top) for b in (reference, candidate)] for window in windows]
    return _box_agreement(pairs, min_score, iou, "region_max_abs_diff")


def ssd_agreement(reference, candidate, windows, top=TOP, min_score=MIN_SCORE, iou=0.5):
    """:func:`region_agreement` of two flow-fusion backends on one-clip windows ``(1, T, H, W, 3)`` (a key
    frame's ``frames`` frames), their ``loc`` and ``conf`` outputs decoded as the evaluation does."""
    priors = prior_boxes(reference.config["priors"])

    def outputs(backend, window):
        loc, conf = backend.detect(window)
        return np.concatenate([loc[0].ravel(), conf[0].ravel()]), decode_ssd(loc[0], conf[0], priors)[:top]

    pairs = [[outputs(b, window) for b in (reference, candidate)] for window in windows]
    return _box_agreement(pairs, min_score, iou, "output_max_abs_diff")


def _box_agreement(pairs, min_score, iou, diff_name):
    """The box agreement of ``[((reference raw output, rows), (candidate raw output, rows))]``, one per window."""
    matched = total = 0
    ious, score_diffs, top_ious, raw_diff = [], [], [], 0.0
    for (ref_raw, ref), (cand_raw, cand) in pairs:
        raw_diff = max(raw_diff, float(np.max(np.abs(ref_raw - cand_raw))))
        if len(ref) and len(cand):
            top_ious.append(float(box_iou(ref[0, :4], cand[0, :4])) if ref[0, 5] == cand[0, 5] else 0.0)
        for row in ref[ref[:, 4] >= min_score]:
            total += 1
            same = cand[cand[:, 5] == row[5]]
            overlap = box_iou(row[:4], same[:, :4]) if len(same) else np.zeros(0)
            if len(overlap) and overlap.max() >= iou:
                matched += 1
                ious.append(float(overlap.max()))
                score_diffs.append(abs(float(row[4] - same[overlap.argmax(), 4])))
    return {"windows": len(pairs), "reference_boxes": total, "box_agreement": matched / total if total else 1.0,
            "mean_iou": float(np.mean(ious)) if ious else 1.0,
            "score_abs_diff": float(np.mean(score_diffs)) if score_diffs else 0.0,
            "top_box_iou": float(np.mean(top_ious)) if top_ious else 1.0, diff_name: raw_diff}
