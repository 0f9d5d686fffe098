"""Region-head anchors: YOLOv2's k-means on box shapes with ``1 - IoU`` as the distance.

Anchors are ``[w, h]`` pairs in output-grid cells (a 224 input at stride 32 has a 7x7
grid). The IoU of two shapes is that of the boxes placed on a common corner, so big and
small boxes are weighed alike, which Euclidean k-means on (w, h) does not do.

Against YOWO's ``datasets/generate_anchors.py``: the centroids start from k-means++
seeding (greedy, as scikit-learn: the best of ``2 + ln k`` draws weighted by the squared
``1 - IoU`` to the nearest seed) from ``numpy.random.default_rng(seed)``, instead of
``random.randrange`` with replacement, which can pick one box twice and then divides by
an empty cluster; a cluster that empties keeps its centroid; the loop stops when the
assignment is stable or after ``iters`` rounds; anchors come out sorted by area (YOWO
sorts by width).
"""
import numpy as np

from edge_stad.core.region_decode import box_iou
from edge_stad.errors import ConfigError

#: YOWO's k-means anchors (``cfg/ucf24.yaml``, ``cfg/jhmdb.yaml``), grid cells of a 7x7 output.
UCF24_ANCHORS = ((0.70458, 1.18803), (1.26654, 2.55121), (1.59382, 4.08321), (2.30548, 4.94180), (3.52332, 5.91979))
JHMDB_ANCHORS = ((0.95878, 3.10197), (1.67204, 4.0040), (1.75482, 5.64937), (3.09299, 5.80857), (4.91803, 6.25225))


def shape_iou(wh, centroids):
    """``(n, k)`` IoU of shapes ``wh (n, 2)`` and ``centroids (k, 2)`` placed on a common corner."""
    def corner(s):
        return np.concatenate([np.zeros_like(s), s], axis=-1)
    return box_iou(corner(wh)[:, None], corner(centroids)[None])


def kmeans_anchors(wh, k=5, seed=0, iters=300):
    """``(anchors float64 (k, 2) sorted by area, mean IoU of each box with its best anchor)``.

    ``wh``: ``(n, 2)`` positive box widths and heights; deterministic for a given seed.
    """
    wh = np.asarray(wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2 or not np.isfinite(wh).all() or (wh <= 0).any():
        raise ConfigError(f"wh must be (n, 2) positive finite widths and heights, got shape {wh.shape}")
    k = int(k)
    if k < 1 or len(np.unique(wh, axis=0)) < k:
        raise ConfigError(f"k-means needs k >= 1 and at least k distinct box shapes, got k={k} and "
                          f"{len(np.unique(wh, axis=0))} distinct shapes")
    rng = np.random.default_rng(seed)
    centroids = wh[[rng.integers(len(wh))]]
    closest = (1 - shape_iou(wh, centroids)[:, 0]) ** 2  # each box's squared distance to its nearest seed
    while len(centroids) < k:  # greedy k-means++: of a few far draws, the one leaving boxes closest to a seed
        picks = rng.choice(len(wh), size=2 + int(np.log(k)), p=closest / closest.sum())
        options = np.minimum(closest[:, None], (1 - shape_iou(wh, wh[picks])) ** 2)
        best = int(options.sum(axis=0).argmin())
        centroids, closest = np.vstack([centroids, wh[picks[best]]]), options[:, best]
    assignment = None
    for _ in range(int(iters)):
        new = shape_iou(wh, centroids).argmax(axis=1)
        if assignment is not None and (new == assignment).all():
            break
        assignment = new
        for j in np.unique(assignment):
            centroids[j] = wh[assignment == j].mean(axis=0)
    anchors = centroids[np.argsort(centroids.prod(axis=1), kind="stable")]
    return anchors, float(shape_iou(wh, anchors).max(axis=1).mean())


def dataset_anchors(gt, videos, grid_hw, k=5, seed=0):
    """:func:`kmeans_anchors` over every annotated box of ``videos`` in ``gt`` (an ACT ``GroundTruth``).

    Every annotated frame is a key frame for a per-frame detector, so each GT box counts.
    A box ``x1, y1, x2, y2`` of a video at resolution ``(H, W)`` becomes
    ``((x2 - x1) / W * grid_w, (y2 - y1) / H * grid_h)`` cells (YOWO's continuous extent,
    no +1); boxes without area are left out.
    """
    grid_h, grid_w = (float(v) for v in grid_hw)
    shapes = []
    for video in videos:
        if video not in gt.gttubes or video not in gt.resolution:
            raise ConfigError(f"video {video!r} has no tubes or resolution in the ground truth")
        height, width = gt.resolution[video]
        for tubes in gt.gttubes[video].values():
            for tube in tubes:
                shapes.append(np.stack([(tube[:, 3] - tube[:, 1]) / width * grid_w,
                                        (tube[:, 4] - tube[:, 2]) / height * grid_h], axis=1))
    wh = np.concatenate(shapes) if shapes else np.zeros((0, 2))
    return kmeans_anchors(wh[(wh > 0).all(axis=1)], k=k, seed=seed)
