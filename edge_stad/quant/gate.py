"""The INT8 accuracy gate: how far the quantized engine drifts from FP32, on held-out windows.

Output agreement on every window: of the FP32 head's top tubelets (score >= ``min_score``),
the share whose class and key-frame peak cell the INT8 head also reports among its top
tubelets, and the mean L1 distance (grid cells) between the boxes of those matched
tubelets. With a labelled dataset, also frame-mAP@0.5 of both on its test split; the
drop in points is what ``--max-map-drop`` bounds.
"""
import numpy as np

TOP = 10
MIN_SCORE = 0.1


def _key(row, K):
    """(class, key-frame box centre cell) of a decoded row."""
    box = row[4 * (K - 1):4 * K]
    return int(row[-1]), int(np.floor((box[0] + box[2]) / 2)), int(np.floor((box[1] + box[3]) / 2))


def output_agreement(reference, candidate, windows, top=TOP, min_score=MIN_SCORE):
    """Compare two backends window by window; returns ``{peak_agreement, box_l1, windows}``."""
    K = reference.config["K"]
    matched = total = 0
    l1 = []
    for window in windows:
        rows = []
        for backend in (reference, candidate):
            feat, wh = backend.encode(window)
            rows.append(backend.detect(feat[None], wh[None])[0][:top])
        ref, cand = rows
        found = {_key(r, K): r for r in cand}
        for r in ref[ref[:, -2] >= min_score]:
            total += 1
            other = found.get(_key(r, K))
            if other is not None:
                matched += 1
                l1.append(float(np.mean(np.abs(r[:4 * K] - other[:4 * K]))))
    return {"windows": len(windows), "reference_tubelets": total,
            "peak_agreement": matched / total if total else 1.0,
            "box_l1_grid_cells": float(np.mean(l1)) if l1 else 0.0}
