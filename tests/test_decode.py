"""Tubelet decoding: known answers, the reference's y-rounding switch, and parity with its torch steps."""
import numpy as np
import pytest

from edge_stad.core.tubelet_decode import decode, peak_mask, to_pixels


def simple_case():
    hm = np.zeros((1, 2, 4, 5), np.float32)
    hm[0, 1, 2, 3] = 0.9
    hm[0, 1, 2, 4] = 0.4          # next to the 0.9 peak: suppressed
    hm[0, 0, 1, 1] = 0.5
    mov = np.zeros((1, 4, 4, 5), np.float32)
    mov[0, :, 2, 3] = [-1.5, 0.6, 0.2, 0.1]  # dx0, dy0, dx1, dy1 at the 0.9 peak
    wh = np.zeros((1, 4, 4, 5), np.float32)
    wh[0, 0], wh[0, 1] = 2.0, 3.0            # clip 0: w 2, h 3 everywhere ...
    wh[0, 0, 2, 1], wh[0, 1, 2, 1] = 4.0, 6.0  # ... except at the moved cell (1, 2)
    wh[0, 2], wh[0, 3] = 1.0, 1.0
    return hm, mov, wh


def test_known_answer():
    rows = decode(*simple_case(), top_n=3)
    assert rows.shape == (1, 3, 10)
    top = rows[0, 0]
    # clip 0: centre (3 - 1.5, 2 + 0.6), size read at trunc -> cell (1, 2): w 4, h 6
    np.testing.assert_allclose(top[:4], [1.5 - 2, 2.6 - 3, 1.5 + 2, 2.6 + 3], atol=1e-6)
    # key clip: centre (3.2, 2.1), size read at the peak itself (3, 2)
    np.testing.assert_allclose(top[4:8], [2.7, 1.6, 3.7, 2.6], atol=1e-6)
    assert top[8] == pytest.approx(0.9) and top[9] == 1
    assert rows[0, 1, 8] == pytest.approx(0.5) and rows[0, 1, 9] == 0
    assert rows[0, 2, 8] == 0  # the 0.4 neighbour was not a peak


def test_reference_y_rounding_switch():
    # peak at flat index 13 = (x 3, y 2) of a width-5 grid; the reference's round(13 / 5) = 3
    rows = decode(*simple_case(), top_n=1, reference_y_rounding=True)
    np.testing.assert_allclose(rows[0, 0, 4:8], [2.7, 2.6, 3.7, 3.6], atol=1e-6)


def test_ties_rank_lower_index_first():
    hm = np.zeros((1, 2, 3, 3), np.float32)
    hm[0, 1, 0, 0] = hm[0, 0, 2, 2] = hm[0, 0, 0, 2] = 0.7
    rows = decode(hm, np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3)), top_n=3)
    # class 0 first (lower flattened class*N + rank), within class 0 cell 2 before cell 8
    assert rows[0, :, -1].tolist() == [0, 0, 1]
    assert rows[0, :, 0].tolist() == [2, 2, 0]


def test_peak_mask_plateau_and_border():
    # (0,0) ties its neighbour (0,1) at 0.5 and is kept (the test is >=, so plateaus survive);
    # (0,1) also sees the diagonal 0.6 and is not; the 0.6 in a corner is not beaten by padding
    hm = np.array([[[0.5, 0.5, 0.1], [0.2, 0.1, 0.6]]], np.float32)
    assert peak_mask(hm).tolist() == [[[True, False, False], [False, False, True]]]


def test_to_pixels_scales_and_clips():
    rows = np.array([[-1.0, 1.0, 2.0, 9.0, 0.8, 1.0], [0, 0, 1, 1, 0.1, 0.0]], np.float32)  # K=1
    out = to_pixels(rows, num_classes=3, grid_hw=(8, 8), image_hw=(40, 80))
    np.testing.assert_allclose(out[1], [[0.0, 5.0, 20.0, 39.0, 0.8]])
    assert out[2].shape == (0, 5) and len(out[0]) == 1
    inverted = np.array([[3.0, 4.0, 1.0, 5.0, 2.0, 6.0, 2.5, 1.0, 0.8, 1.0]], np.float32)  # K=2: x, then y inverted
    out = to_pixels(inverted, num_classes=2, grid_hw=(8, 8), image_hw=(80, 80))
    np.testing.assert_allclose(out[1], [[20.0, 40.0, 20.0, 50.0, 20.0, 35.0, 25.0, 35.0, 0.8]])   # zero size, centred
    kept = to_pixels(inverted, num_classes=2, grid_hw=(8, 8), image_hw=(80, 80), reference_inverted_boxes=True)
    np.testing.assert_allclose(kept[1], [[30.0, 40.0, 10.0, 50.0, 20.0, 60.0, 25.0, 10.0, 0.8]])   # the reference's


def reference_steps(hm, mov, wh, n):
    """The authors' moc_decode steps in torch (CPU), for parity on random inputs."""
    torch = pytest.importorskip("torch")
    heat, mov, wh = (torch.from_numpy(a) for a in (hm, mov, wh))
    b, c, h, w = heat.shape
    k = mov.shape[1] // 2
    keep = (torch.nn.functional.max_pool2d(heat, 3, 1, 1) == heat).float()
    heat = heat * keep
    scores, index = torch.topk(heat.view(b, c, -1), n)
    ys, xs = (index // w).float(), (index % w).float()
    score, ind = torch.topk(scores.view(b, -1), n)
    cls = ind // n
    index = index.view(b, -1).gather(1, ind)
    ys, xs = ys.view(b, -1).gather(1, ind), xs.view(b, -1).gather(1, ind)
    m = mov.view(b, 2 * k, -1).permute(0, 2, 1).gather(1, index[..., None].expand(-1, -1, 2 * k))
    gx = (xs[..., None] + m[..., 0::2])
    gy = (ys[..., None] + m[..., 1::2])
    gx[..., -1], gy[..., -1] = xs, ys
    flat = (gx.long() + gy.long() * w).clamp(0, h * w - 1)
    whf = wh.view(b, 2 * k, -1)
    bw = torch.stack([whf[:, 2 * i].gather(1, flat[..., i]) for i in range(k)], -1)
    bh = torch.stack([whf[:, 2 * i + 1].gather(1, flat[..., i]) for i in range(k)], -1)
    cx, cy = xs[..., None] + m[..., 0::2], ys[..., None] + m[..., 1::2]
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1).reshape(b, n, 4 * k)
    return torch.cat([boxes, score[..., None], cls[..., None].float()], -1).numpy()


@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_steps_on_random_outputs(seed):
    rng = np.random.default_rng(seed)
    hm = rng.random((2, 4, 9, 11)).astype(np.float32)
    mov = (rng.standard_normal((2, 10, 9, 11)) * 3).astype(np.float32)
    wh = (rng.random((2, 10, 9, 11)) * 5).astype(np.float32)
    np.testing.assert_array_equal(decode(hm, mov, wh, top_n=20), reference_steps(hm, mov, wh, 20))
