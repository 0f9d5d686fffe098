"""Training targets of STMA (no torch): class-agnostic centres and Gaussian-area regression (GR).

Every instance is a tube that covers the K snippet frames, its K boxes in head-grid cells (oldest
first). Per sample:

* ``hm (1, h, w)``: CenterNet's Gaussian (radius from ``gaussian_radius`` at overlap 0.7) at each
  instance's rounded key-frame centre, max-pasted, as AMMA's targets (``C`` channels, one per class,
  for the class-specific baseline);
* ``mov (2K, h, w)``, ``mov_weight (h, w)``: every cell of the instance's Gaussian area around its
  key-frame centre is a sample with the paper's eq. (4) target ``m_j = c_j - c_key`` (exact centres);
* ``box (K, 4, h, w)``, ``wh_weight (K, h, w)``: for frame j, every cell of the Gaussian area around
  the instance's centre *in frame j* is a sample whose target is box j (``x1, y1, x2, y2``, cells):
  inference reads the size at the moved centres, so that is where it is trained (our choice; the
  paper names key-frame centres only);
* ``cls (C,)``: the share of the sample's instances in each class (one-hot for one class);
* ``num (1,)``: the number of instances, the paper's ``n``.

The Gaussian area is TTFNet's: half-extents ``int(beta * w / 2)`` and ``int(beta * h / 2)`` cells
with ``beta = 0.54``, sigma = (2 * half-extent + 1) / 6 per axis, values below ``eps * max`` cut, the
part outside the grid dropped. A cell's weight is TTFNet's ``log(area) * G / sum(G)`` with the
box area in input pixels (at least ``e`` px^2, so the log is at least 1): each instance's weights sum
to the log of its area, which is the paper's "sample weight according to their area". Where areas
overlap, the smaller box owns the cell (TTFNet draws larger boxes first). ``gaussian=False`` keeps
only the centre cell (weight ``log(area)``): the paper's ablation without GR.
"""
import math

import numpy as np

from edge_stad.data.targets import draw_gaussian, gaussian_radius

BETA = 0.54
MIN_LOG_AREA = 1.0


def gaussian_area(center, half_w, half_h, grid_hw):
    """TTFNet's truncated Gaussian at integer ``center = (x, y)``: ``(ys, xs, g)``, the grid slices it covers
    and its values there (zeros where it was cut)."""
    sx, sy = (2 * half_w + 1) / 6, (2 * half_h + 1) / 6
    y, x = np.ogrid[-half_h:half_h + 1, -half_w:half_w + 1]
    g = np.exp(-(x * x / (2 * sx * sx) + y * y / (2 * sy * sy)))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    h, w = grid_hw
    cx, cy = int(center[0]), int(center[1])
    x0, x1 = max(0, cx - half_w), min(w, cx + half_w + 1)
    y0, y1 = max(0, cy - half_h), min(h, cy + half_h + 1)
    patch = g[y0 - cy + half_h:y1 - cy + half_h, x0 - cx + half_w:x1 - cx + half_w]
    return slice(y0, y1), slice(x0, x1), patch


def _cell(point, grid_hw):
    """The cell a point in grid units falls on: rounded half to even (as AMMA's targets), clamped into the grid."""
    h, w = grid_hw
    return int(np.clip(np.round(point[0]), 0, w - 1)), int(np.clip(np.round(point[1]), 0, h - 1))


def _area_weights(box, center, grid_hw, stride, gaussian):
    """Slices, sample mask and weights of the Gaussian area of ``box`` around cell ``center``."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    half_w, half_h = (int(BETA * bw / 2), int(BETA * bh / 2)) if gaussian else (0, 0)
    ys, xs, g = gaussian_area(center, half_w, half_h, grid_hw)
    log_area = max(math.log(max(bw * bh * stride * stride, 1e-12)), MIN_LOG_AREA)
    mask = g > 0
    return ys, xs, mask, g * (log_area / g.sum())


def _by_area(instances, frame):
    """Instance indices, largest box in ``frame`` first (smaller boxes then own the cells they share)."""
    areas = [(b[frame, 2] - b[frame, 0]) * (b[frame, 3] - b[frame, 1]) for _, b in instances]
    return sorted(range(len(instances)), key=lambda i: -areas[i])


def build_stma_targets(tubes, num_classes, grid_hw, K, key, stride, class_agnostic=True, gaussian=True):
    """Targets (module docstring) for ``tubes = {label: [float (K, 4) boxes in grid cells]}``.

    ``key`` is the key frame's index in the snippet, ``stride`` the input pixels per cell.
    """
    h, w = grid_hw
    instances = [(label, np.asarray(b, dtype=np.float64)) for label in sorted(tubes) for b in tubes[label]]
    centers = [np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1) for _, b in instances]
    out = {
        "hm": np.zeros((1 if class_agnostic else num_classes, h, w), dtype=np.float32),
        "mov": np.zeros((2 * K, h, w), dtype=np.float32),
        "mov_weight": np.zeros((h, w), dtype=np.float32),
        "box": np.zeros((K, 4, h, w), dtype=np.float32),
        "wh_weight": np.zeros((K, h, w), dtype=np.float32),
        "cls": np.zeros(num_classes, dtype=np.float32),
        "num": np.array([len(instances)], dtype=np.float32),
    }
    for (label, boxes), c in zip(instances, centers):
        kw, kh = boxes[key, 2] - boxes[key, 0], boxes[key, 3] - boxes[key, 1]
        radius = max(0, int(gaussian_radius(math.ceil(kh), math.ceil(kw))))
        draw_gaussian(out["hm"][0 if class_agnostic else label], _cell(c[key], grid_hw), radius)
        out["cls"][label] += 1
    if instances:
        out["cls"] /= len(instances)
    for i in _by_area(instances, key):
        boxes, c = instances[i][1], centers[i]
        ys, xs, mask, weight = _area_weights(boxes[key], _cell(c[key], grid_hw), grid_hw, stride, gaussian)
        out["mov_weight"][ys, xs][mask] = weight[mask]
        out["mov"][:, ys, xs][:, mask] = (c - c[key]).reshape(-1, 1)
    for j in range(K):
        for i in _by_area(instances, j):
            boxes, c = instances[i][1], centers[i]
            ys, xs, mask, weight = _area_weights(boxes[j], _cell(c[j], grid_hw), grid_hw, stride, gaussian)
            out["wh_weight"][j, ys, xs][mask] = weight[mask]
            out["box"][j, :, ys, xs][:, mask] = boxes[j].reshape(-1, 1)
    return out
