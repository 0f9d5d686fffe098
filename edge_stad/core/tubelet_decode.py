"""Tubelet decoding of AMMA head outputs (reference ``moc_decode``), in NumPy.

Peaks are heatmap cells equal to their 3x3 neighbourhood maximum; the top N per class,
then the top N over all classes, become tubelets. Each tubelet's centre in clip k is
the peak moved by the trajectory output; its size in clip k is read from the box
output at that moved cell (truncated toward zero, the flat index clamped into the
grid, the key clip read at the peak itself). Ties rank the lower index first, which is
also ONNX ``TopK``'s rule, so an in-graph decode agrees exactly.

The reference computes the peak row as ``round(idx / W)`` (float division: one cell
too low for most peaks). ``reference_y_rounding=True`` reproduces that for parity with
published numbers; the default is the correct ``idx // W``.
"""
import numpy as np

TOP_N = 100


def peak_mask(hm):
    """``hm (..., h, w)`` -> boolean mask of cells equal to their 3x3 maximum (padding never wins)."""
    h, w = hm.shape[-2:]
    padded = np.pad(hm, [(0, 0)] * (hm.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    across = np.maximum(np.maximum(padded[..., 0:w], padded[..., 1:w + 1]), padded[..., 2:w + 2])  # separable
    return hm == np.maximum(np.maximum(across[..., 0:h, :], across[..., 1:h + 1, :]), across[..., 2:h + 2, :])


def _top(values, n):
    """Indices of the ``n`` largest entries along the last axis, largest first, ties by lower index."""
    order = np.argsort(-values, axis=-1, kind="stable")
    return order[..., :n]


def top_peaks(hm, top_n):
    """The ``N = min(top_n, h*w)`` best peaks of ``hm (B, C, h, w)``: the top N per class, then over all
    classes. Returns ``score``, ``cls`` and flat cell ``idx``, each ``(B, N)``, best first."""
    b, c, h, w = hm.shape
    n = min(top_n, h * w)
    heat = np.where(peak_mask(hm), hm, 0).reshape(b, c, h * w)
    cell_index = _top(heat, n)                                           # (B, C, N)
    flat_score = np.take_along_axis(heat, cell_index, axis=2).reshape(b, c * n)
    pick = _top(flat_score, n)                                            # (B, N)
    score = np.take_along_axis(flat_score, pick, axis=1)
    return score, pick // n, np.take_along_axis(cell_index.reshape(b, c * n), pick, axis=1)


def decode(hm, mov, wh, top_n=TOP_N, reference_y_rounding=False):
    """Head outputs of one window -> ``float32 (B, N, 4K+2)`` rows: K boxes (grid units), score, class.

    ``hm (B, C, h, w)`` after sigmoid, ``mov (B, 2K, h, w)``, ``wh (B, 2K, h, w)``.
    """
    hm, mov, wh = (np.asarray(a, dtype=np.float32) for a in (hm, mov, wh))
    b, _, h, w = hm.shape
    k = mov.shape[1] // 2
    score, cls, idx = top_peaks(hm, top_n)
    n = idx.shape[1]
    x = (idx % w).astype(np.float32)
    y = np.round(idx / w).astype(np.float32) if reference_y_rounding else (idx // w).astype(np.float32)

    mov_flat = mov.reshape(b, 2 * k, h * w)
    moves = np.take_along_axis(mov_flat, np.repeat(idx[:, None, :], 2 * k, axis=1), axis=2)  # (B, 2K, N)
    cx = x[:, None, :] + moves[:, 0::2]                                   # (B, K, N)
    cy = y[:, None, :] + moves[:, 1::2]
    gx, gy = np.trunc(cx), np.trunc(cy)
    gx[:, -1], gy[:, -1] = x, y
    gather = np.clip(gx + gy * w, 0, h * w - 1).astype(np.int64)          # (B, K, N)
    wh_flat = wh.reshape(b, k, 2, h * w)
    bw = np.take_along_axis(wh_flat[:, :, 0], gather, axis=2)
    bh = np.take_along_axis(wh_flat[:, :, 1], gather, axis=2)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1)  # (B, K, N, 4)
    rows = np.concatenate([boxes.transpose(0, 2, 1, 3).reshape(b, n, 4 * k),
                           score[..., None], cls[..., None].astype(np.float32)], axis=2)
    return rows.astype(np.float32)


def to_pixels(rows, num_classes, grid_hw, image_hw, reference_inverted_boxes=False):
    """One window's decoded rows ``(N, 4K+2)`` -> ``{label: float32 (m, 4K+1)}`` boxes in image pixels.

    Coordinates scale by image/grid size and are clipped to ``[0, W-1]`` / ``[0, H-1]``
    with no half-cell offset, as the reference does. A negative predicted width or height
    (an untrained or weak model's low peaks) gives a zero-size box at its centre where the
    reference keeps an inverted one (``x1 > x2``): a size cannot be negative, the detections
    format requires ``x1 <= x2``, and every IoU of the evaluation gives both at most a pixel's
    overlap. ``reference_inverted_boxes=True`` keeps them inverted, as the reference does, for
    parity with its detections. Every label gets an entry.
    """
    gh, gw = grid_hw
    ih, iw = image_hw
    k4 = rows.shape[1] - 2
    boxes = rows[:, :k4].reshape(len(rows), -1, 4).copy()
    boxes[..., 0::2] = np.clip(boxes[..., 0::2] * (iw / gw), 0, iw - 1)
    boxes[..., 1::2] = np.clip(boxes[..., 1::2] * (ih / gh), 0, ih - 1)
    for low in () if reference_inverted_boxes else (0, 1):   # x, then y
        inverted = boxes[..., low] > boxes[..., low + 2]
        if inverted.any():
            centre = (boxes[..., low] + boxes[..., low + 2]) / 2
            boxes[..., low] = np.where(inverted, centre, boxes[..., low])
            boxes[..., low + 2] = np.where(inverted, centre, boxes[..., low + 2])
    scaled = np.concatenate([boxes.reshape(len(rows), k4), rows[:, k4:k4 + 1]], axis=1).astype(np.float32)
    labels = rows[:, -1].astype(np.int64)
    return {c: scaled[labels == c] for c in range(num_classes)}
