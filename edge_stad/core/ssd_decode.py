"""SSD-style frame detectors (flow-fusion) in NumPy (no torch): which frames a detection reads,
default (prior) boxes and frame-level decoding.

A detection of key frame ``f`` reads ``frames`` consecutive frames of which ``lookahead`` follow
``f`` (:func:`frames_for_key`); before the start and past the end the first and last frames repeat.

Priors follow SSD (Liu et al. 2016) as RFBNet's ``PriorBox`` lays them out: per feature
map, per location in row-major order, a square box of the level's ``min_size``, a square of
``sqrt(min_size * max_size)``, then for every aspect ratio ``a`` a box ``s*sqrt(a) x s/sqrt(a)``
and its transpose. Centres sit at ``(j + 0.5) * step``; SSD300's steps (8, 16, 32, 64, 100, 300
pixels) are not the feature maps' exact strides (300/38), which this keeps. Everything is in
fractions of the image, ``(cx, cy, w, h)``, clipped to [0, 1] as RFBNet's configs ask.

A network's ``loc`` output holds offsets encoded with the variances (0.1, 0.2) (SSD's
``encode``); ``conf`` holds C + 1 logits per prior, background first. :func:`decode_ssd`
turns one image's output into detection rows: softmax, then per class the priors above a
score threshold, optionally the best ``pre_nms_top_k`` of them, greedy NMS and the best
``top_k`` survivors. Its defaults are ROAD's frame-level evaluation (Singh et al. 2017,
``test-ucf24.py``: score > 0.01, NMS 0.45, 20 per class); :data:`ROAD_LINKING` are the
settings ROAD's tube builder filters each frame with (``actionPaths.m``: score > 0.001, the
best 50, NMS 0.45, 10 kept), which also return every class's probability per row for its
temporal labelling.
"""
from __future__ import annotations

import math

import numpy as np

from edge_stad.boxes import descending
from edge_stad.core.region_decode import nms
from edge_stad.errors import ConfigError

VARIANCE = (0.1, 0.2)
#: ROAD's frame-level evaluation (frame-mAP rows).
ROAD_FRAME = {"conf_threshold": 0.01, "nms_threshold": 0.45, "top_k": 20}
#: ROAD's per-frame filter before online linking (``actionPaths.m`` ``dofilter``).
ROAD_LINKING = {"conf_threshold": 0.001, "nms_threshold": 0.45, "top_k": 10, "pre_nms_top_k": 50,
                "with_scores": True}


def frames_for_key(frame, frames, lookahead, nframes):
    """Frame numbers a detection of key frame ``frame`` reads, oldest first, clamped to ``1 .. nframes``."""
    return tuple(min(max(1, frame + lookahead - frames + 1 + j), nframes) for j in range(frames))


def boxes_per_location(aspect_ratios):
    """Priors per feature-map location for each level: 2 squares plus 2 per aspect ratio."""
    return [2 + 2 * len(ratios) for ratios in aspect_ratios]


def prior_boxes(spec):
    """``float32 (P, 4)`` priors ``cx, cy, w, h`` from a prior ``spec`` (see :func:`check_prior_spec`)."""
    spec = check_prior_spec(spec)
    out = []
    for (fh, fw), (sy, sx), lo, hi, ratios in zip(spec["feature_maps"], spec["steps"], spec["min_sizes"],
                                                  spec["max_sizes"], spec["aspect_ratios"]):
        shapes = [(lo, lo), (math.sqrt(lo * hi),) * 2]
        for a in ratios:
            shapes += [(lo * math.sqrt(a), lo / math.sqrt(a)), (lo / math.sqrt(a), lo * math.sqrt(a))]
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * sy, (np.arange(fw) + 0.5) * sx, indexing="ij")
        level = np.empty((fh, fw, len(shapes), 4), dtype=np.float64)
        level[..., 0], level[..., 1] = cx[..., None], cy[..., None]
        level[..., 2:] = np.asarray(shapes)
        out.append(level.reshape(-1, 4))
    priors = np.concatenate(out)
    if spec["clip"]:
        priors = np.clip(priors, 0.0, 1.0)
    return priors.astype(np.float32)


def check_prior_spec(spec):
    """A prior spec with every field checked: ``feature_maps`` ``[[h, w], ...]``, ``steps`` ``[[sy, sx], ...]``
    (fractions of the image between centres), ``min_sizes`` and ``max_sizes`` (fractions),
    ``aspect_ratios`` (lists of ratios > 1 per level) and ``clip``."""
    keys = ("feature_maps", "steps", "min_sizes", "max_sizes", "aspect_ratios", "clip")
    if not isinstance(spec, dict) or set(spec) != set(keys):
        raise ConfigError(f"a prior spec is a dict with keys {keys}, got {spec!r}")
    n = len(spec["feature_maps"])
    if n == 0 or any(len(spec[k]) != n for k in keys[1:5]):
        raise ConfigError(f"a prior spec needs one entry per feature map in {keys[1:5]}, got {spec!r}")
    for (fh, fw), (sy, sx), lo, hi, ratios in zip(*(spec[k] for k in keys[:5])):
        if min(fh, fw) < 1 or min(sy, sx) <= 0 or not 0 < lo <= hi or any(a <= 0 for a in ratios):
            raise ConfigError(f"bad prior level: feature map {fh}x{fw}, step {sy}x{sx}, sizes {lo}..{hi}, "
                              f"aspect ratios {ratios}; expected positive values with min_size <= max_size")
    return spec


def decode_boxes(loc, priors, variance=VARIANCE):
    """Encoded offsets ``(..., P, 4)`` + priors ``(P, 4)`` -> corner boxes ``x1, y1, x2, y2`` (SSD's ``decode``)."""
    loc = np.asarray(loc, dtype=np.float64)
    priors = np.asarray(priors, dtype=np.float64)
    centre = priors[:, :2] + loc[..., :2] * variance[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[..., 2:] * variance[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)


def softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def decode_ssd(loc, conf, priors, conf_threshold=ROAD_FRAME["conf_threshold"],
               nms_threshold=ROAD_FRAME["nms_threshold"], top_k=ROAD_FRAME["top_k"], pre_nms_top_k=None,
               with_scores=False):
    """One image's ``loc (P, 4)`` and ``conf (P, C+1)`` logits -> ``float32 (N, 6)`` rows
    ``x1, y1, x2, y2, score, label`` in [0, 1] (label 0-based, background dropped), best score first.

    Per class: priors whose probability exceeds ``conf_threshold``, the best ``pre_nms_top_k`` of
    them when set, greedy NMS at ``nms_threshold`` (continuous IoU) and at most ``top_k`` survivors.
    Boxes are clipped to the image after NMS. ``with_scores`` appends the C class probabilities of
    each row's prior (``(N, 6 + C)``), what ROAD's temporal labelling reads.
    """
    loc, conf, priors = np.asarray(loc), np.asarray(conf), np.asarray(priors)
    if priors.ndim != 2 or priors.shape[1] != 4 or loc.shape != priors.shape or conf.ndim != 2 \
            or conf.shape[0] != len(priors) or conf.shape[1] < 2:
        raise ConfigError(f"SSD output must be loc (P, 4) and conf (P, C+1) for the P={len(priors)} priors, got "
                          f"loc {loc.shape} and conf {conf.shape}")
    if not (np.isfinite(loc).all() and np.isfinite(conf).all()):
        raise ConfigError("SSD output holds NaN or inf; expected finite offsets and logits")
    for name, value in (("top_k", top_k), ("pre_nms_top_k", pre_nms_top_k)):
        if value is not None and int(value) < 1:
            raise ConfigError(f"{name} must be None or >= 1, got {value}")
    probs = softmax(conf)[:, 1:]
    boxes = decode_boxes(loc, priors)
    cells, labels = [], []
    for c in range(probs.shape[1]):
        cand = np.flatnonzero(probs[:, c] > conf_threshold)
        if not cand.size:
            continue
        if pre_nms_top_k is not None:
            cand = cand[descending(probs[cand, c])[:pre_nms_top_k]]
        kept = cand[nms(boxes[cand], probs[cand, c], nms_threshold, top_k=top_k)]
        cells.append(kept)
        labels.append(np.full(len(kept), c, dtype=np.int64))
    cell = np.concatenate(cells) if cells else np.zeros(0, dtype=np.int64)
    label = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    score = probs[cell, label]
    rank = descending(score)
    cell, label, score = cell[rank], label[rank], score[rank]
    rows = np.empty((len(cell), 6 + (probs.shape[1] if with_scores else 0)), dtype=np.float32)
    rows[:, :4] = np.clip(boxes[cell], 0.0, 1.0)
    rows[:, 4] = score
    rows[:, 5] = label
    if with_scores:
        rows[:, 6:] = probs[cell]
    return rows
