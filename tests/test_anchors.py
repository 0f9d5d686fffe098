import numpy as np
import pytest

from edge_stad.data.anchors import dataset_anchors, kmeans_anchors, shape_iou
from edge_stad.data.annotations import GroundTruth


def planted(seed=0, n=60):
    rng = np.random.default_rng(seed)
    centres = np.array([[5.0, 3.0], [1.0, 1.0], [2.0, 4.0]])
    return np.concatenate([c * rng.uniform(0.95, 1.05, size=(n, 2)) for c in centres]), centres


def test_shape_iou_known_answers():
    np.testing.assert_allclose(shape_iou(np.array([[1.0, 2.0], [2.0, 2.0]]), np.array([[2.0, 1.0], [1.0, 1.0]])),
                               [[1 / 3, 0.5], [0.5, 0.25]])


def test_recovers_planted_clusters_sorted_by_area():
    wh, centres = planted()
    anchors, mean_iou = kmeans_anchors(wh, k=3, seed=0)
    np.testing.assert_allclose(anchors, centres[[1, 2, 0]], rtol=0.02)
    assert (np.diff(anchors.prod(axis=1)) > 0).all()
    assert 0.93 < mean_iou <= 1.0
    for seed in range(20):  # greedy k-means++ seeding finds the three groups from any seed
        np.testing.assert_allclose(kmeans_anchors(wh, k=3, seed=seed)[0], anchors, rtol=1e-9)


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    wh = rng.uniform(0.3, 6.0, size=(200, 2))
    a1, m1 = kmeans_anchors(wh, k=5, seed=7)
    a2, m2 = kmeans_anchors(wh, k=5, seed=7)
    np.testing.assert_array_equal(a1, a2)
    assert m1 == m2 and a1.shape == (5, 2)


def test_one_cluster_is_the_mean_and_its_iou():
    anchors, mean_iou = kmeans_anchors([[1.0, 1.0], [3.0, 3.0]], k=1)
    np.testing.assert_allclose(anchors, [[2.0, 2.0]])
    assert mean_iou == pytest.approx((1 / 4 + 4 / 9) / 2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least k distinct"):
        kmeans_anchors([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]], k=3)
    with pytest.raises(ValueError, match=r"\(n, 2\) positive finite"):
        kmeans_anchors([[1.0, np.nan]], k=1)
    with pytest.raises(ValueError, match=r"\(n, 2\) positive finite"):
        kmeans_anchors([[1.0, 0.0]], k=1)


def test_dataset_anchors_scales_boxes_to_grid_cells():
    tube = np.array([[1, 0, 0, 160, 120], [2, 10, 10, 170, 130], [3, 0, 0, 0, 40]], dtype=np.float64)  # last: no area
    other = np.array([[1, 0, 0, 32, 24]], dtype=np.float64)
    gt = GroundTruth(labels=["a", "b"], gttubes={"v1": {0: [tube]}, "v2": {1: [other]}, "v3": {0: [tube * 5]}},
                     nframes={"v1": 3, "v2": 1, "v3": 3}, train_videos=[["v1", "v2"]], test_videos=[["v3"]],
                     resolution={"v1": (240, 320), "v2": (240, 320), "v3": (480, 640)})
    # 160 x 120 px of 320 x 240 on a 7 x 7 grid: 3.5 x 3.5 cells; 32 x 24 px: 0.7 x 0.7 cells
    anchors, mean_iou = dataset_anchors(gt, ["v1", "v2"], (7, 7), k=2)
    np.testing.assert_allclose(anchors, [[0.7, 0.7], [3.5, 3.5]])
    assert mean_iou == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'v9'"):
        dataset_anchors(gt, ["v9"], (7, 7))
