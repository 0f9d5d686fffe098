"""Training targets of AMMA's three branches (reference section 6, CenterNet conventions).

For every tube of a sample (K boxes in head-grid units, oldest clip first) the key box
is the last one. Its rounded centre gets a Gaussian peak in the class heatmap (radius
from CenterNet's ``gaussian_radius`` at overlap 0.7, sigma = diameter / 6); the
trajectory target of clip k is the exact centre of box k minus that rounded key centre;
the size target of clip k is box k's (w, h), read at box k's own rounded centre.
"""
import math

import numpy as np

MAX_OBJECTS = 128


def gaussian_radius(height, width, min_overlap=0.7):
    """CenterNet's radius so that a box shifted by it keeps ``min_overlap`` IoU (its formula, quirks included)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap, center, radius):
    """Max-paste a (2r+1)^2 Gaussian with sigma (2r+1)/6 at integer ``center = (x, y)``."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    m = (diameter - 1) / 2
    y, x = np.ogrid[-m:m + 1, -m:m + 1]
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    cx, cy = int(center[0]), int(center[1])
    h, w = heatmap.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    region = heatmap[cy - top:cy + bottom, cx - left:cx + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right]
    if min(region.shape) > 0 and min(patch.shape) > 0:
        np.maximum(region, patch, out=region)
    return heatmap


def build_targets(tubes, num_classes, grid_hw, K, max_objects=MAX_OBJECTS):
    """Targets for ``tubes = {label: [float (K, 4) boxes in grid units]}``.

    Returns ``hm (C, h, w)``, ``mov``/``wh (max_objects, 2K)`` float32, ``index
    (max_objects,)`` and ``index_all (max_objects, 2K)`` int64 flat grid indices, and
    ``mask (max_objects,)`` uint8. Rounded centres are clamped into the grid (the
    reference asserts instead; a box hugging the far edge can round one cell outside).
    """
    h, w = grid_hw
    hm = np.zeros((num_classes, h, w), dtype=np.float32)
    mov = np.zeros((max_objects, 2 * K), dtype=np.float32)
    wh = np.zeros((max_objects, 2 * K), dtype=np.float32)
    index = np.zeros(max_objects, dtype=np.int64)
    index_all = np.zeros((max_objects, 2 * K), dtype=np.int64)
    mask = np.zeros(max_objects, dtype=np.uint8)
    n = 0
    for label in sorted(tubes):
        for boxes in tubes[label]:
            if n == max_objects:
                break
            centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
            cells = np.round(centers)  # half to even, as numpy (and the reference) round
            cells[:, 0] = np.clip(cells[:, 0], 0, w - 1)
            cells[:, 1] = np.clip(cells[:, 1], 0, h - 1)
            key_w, key_h = boxes[-1, 2] - boxes[-1, 0], boxes[-1, 3] - boxes[-1, 1]
            radius = max(0, int(gaussian_radius(math.ceil(key_h), math.ceil(key_w))))
            draw_gaussian(hm[label], cells[-1], radius)
            mov[n] = (centers - cells[-1]).reshape(-1)
            wh[n] = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1).reshape(-1)
            flat = (cells[:, 1] * w + cells[:, 0]).astype(np.int64)
            index_all[n] = np.repeat(flat, 2)
            index[n] = flat[-1]
            mask[n] = 1
            n += 1
    return {"hm": hm, "mov": mov, "wh": wh, "index": index, "index_all": index_all, "mask": mask}
