"""Tubelet decoding of STMA head outputs, in NumPy: the project's tubelet rows (:mod:`edge_stad.core.tubelet_decode`).

As the paper's section 2.5: the top N (10) peaks of the class-agnostic heatmap (cells equal to their
3x3 maximum, CenterNet's peak NMS) are the centres; each is labelled with the clip's most probable
class, and scored by peak times that probability (the paper does not say how a tubelet is scored:
our choice). A centre's position in frame j is the peak moved by the movement output; the size
``l, t, r, b`` of frame j is read at the cell that position rounds to (half to even, as the targets
and ONNX ``Round`` round; clamped into the grid) and
the box is placed around that cell, where the targets trained it. With a class heatmap (the
baseline) the top N over all classes are taken and labelled by their channel, as AMMA's decode.

Ties rank the lower index first, as :func:`edge_stad.core.tubelet_decode.decode` and ONNX ``TopK``.
"""
import numpy as np

from edge_stad.core.tubelet_decode import top_peaks

TOP_N = 10


def softmax(logits):
    """Class probabilities of logits ``(..., C)`` (float32)."""
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def decode_stma(hm, mov, wh, cls=None, top_n=TOP_N):
    """Head outputs of one window -> ``float32 (B, N, 4K+2)`` rows: K boxes (grid cells), score, class.

    ``hm (B, 1, h, w)`` after sigmoid with ``cls (B, C)`` class probabilities, or ``hm (B, C, h, w)``
    and ``cls=None``; ``mov (B, 2K, h, w)``; ``wh (B, 4K, h, w)`` (``l, t, r, b`` per frame).
    """
    hm, mov, wh = (np.asarray(a, dtype=np.float32) for a in (hm, mov, wh))
    b, _, h, w = hm.shape
    k = mov.shape[1] // 2
    score, label, idx = top_peaks(hm, top_n)
    n = idx.shape[1]
    if cls is not None:
        prob = np.asarray(cls, dtype=np.float32)
        label = np.repeat(prob.argmax(1)[:, None], n, axis=1)
        score = score * prob.max(1, keepdims=True)
    x, y = (idx % w).astype(np.float32), (idx // w).astype(np.float32)

    moves = np.take_along_axis(mov.reshape(b, 2 * k, h * w), np.repeat(idx[:, None, :], 2 * k, axis=1), axis=2)
    gx = np.clip(np.round(x[:, None, :] + moves[:, 0::2]), 0, w - 1)  # (B, K, N): the cell read in frame j
    gy = np.clip(np.round(y[:, None, :] + moves[:, 1::2]), 0, h - 1)
    gather = (gy * w + gx).astype(np.int64)
    sides = np.take_along_axis(wh.reshape(b, k, 4, h * w), gather[:, :, None, :].repeat(4, axis=2), axis=3)
    boxes = np.stack([gx - sides[:, :, 0], gy - sides[:, :, 1], gx + sides[:, :, 2], gy + sides[:, :, 3]], axis=-1)
    rows = np.concatenate([boxes.transpose(0, 2, 1, 3).reshape(b, n, 4 * k), score[..., None],
                           label[..., None].astype(np.float32)], axis=2)
    return rows.astype(np.float32)


def decode_snippet(out, top_n=TOP_N):
    """A head's outputs ``{"hm", "mov", "wh"[, "cls" logits]}`` -> :func:`decode_stma`'s rows (what every snippet
    backend's ``detect`` returns)."""
    cls = softmax(out["cls"]) if out.get("cls") is not None else None
    return decode_stma(out["hm"], out["mov"], out["wh"], cls, top_n)
