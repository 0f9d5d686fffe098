"""STMA's training targets (Gaussian-area samples and weights), loss and decode, on known answers."""
import math

import numpy as np
import pytest

from edge_stad.core.snippet_decode import decode_stma, softmax
from edge_stad.core.snippets import snippet_layout
from edge_stad.data.stma_targets import BETA, build_stma_targets, gaussian_area

# One instance over K=3 frames, grid units (stride 8): 6x8 cells, moving right by one cell a frame.
BOXES = np.array([[2, 2, 8, 10], [3, 2, 9, 10], [4, 2, 10, 10]], np.float32)


def test_gaussian_area_is_ttfnets_truncated_gaussian():
    ys, xs, g = gaussian_area((5, 6), 1, 2, (16, 16))
    assert (ys, xs) == (slice(4, 9), slice(4, 7)) and g.shape == (5, 3)
    sx, sy = 3 / 6, 5 / 6      # sigma = (2 * half-extent + 1) / 6 per axis
    assert g[2, 1] == 1.0
    assert g[2, 0] == pytest.approx(math.exp(-1 / (2 * sx * sx)))
    assert g[0, 1] == pytest.approx(math.exp(-4 / (2 * sy * sy)))
    assert g[0, 0] == pytest.approx(math.exp(-1 / (2 * sx * sx) - 4 / (2 * sy * sy)))
    ys, xs, g = gaussian_area((0, 15), 1, 2, (16, 16))   # cut at the grid's edges
    assert (ys, xs) == (slice(13, 16), slice(0, 2)) and g.shape == (3, 2) and g[2, 0] == 1.0


def test_movement_samples_weights_and_targets_on_a_known_box():
    t = build_stma_targets({1: [BOXES]}, 3, (16, 16), 3, 2, 8)
    # key frame = last: box (4, 2, 10, 10), centre (7, 6); half-extents int(0.54*6/2)=1, int(0.54*8/2)=2
    assert int(BETA * 6 / 2) == 1 and int(BETA * 8 / 2) == 2
    _, _, g = gaussian_area((7, 6), 1, 2, (16, 16))
    weight = t["mov_weight"]
    area = weight > 0
    assert area.sum() == 15 and area[4:9, 6:9].all()
    np.testing.assert_allclose(weight[4:9, 6:9], g * math.log(6 * 8 * 64) / g.sum(), rtol=1e-6)
    assert weight.sum() == pytest.approx(math.log(6 * 8 * 64))      # log of the area in input pixels
    # eq. (4): every sample of the area regresses the same offsets c_j - c_key
    np.testing.assert_array_equal(t["mov"][:, area].T, np.tile([-2, 0, -1, 0, 0, 0], (15, 1)))
    assert (t["mov"][:, ~area] == 0).all()
    assert t["hm"].shape == (1, 16, 16) and t["hm"][0, 6, 7] == 1 and (t["hm"] == 1).sum() == 1
    np.testing.assert_array_equal(t["cls"], [0, 1, 0])
    assert t["num"].tolist() == [1]


def test_size_samples_follow_each_frames_centre():
    t = build_stma_targets({0: [BOXES]}, 1, (16, 16), 3, 2, 8)
    for j, box in enumerate(BOXES):
        cx = int(round((box[0] + box[2]) / 2))
        cells = t["wh_weight"][j] > 0
        assert cells.sum() == 15 and cells[4:9, cx - 1:cx + 2].all()
        np.testing.assert_array_equal(t["box"][j][:, cells].T, np.tile(box, (15, 1)))
        assert t["wh_weight"][j].sum() == pytest.approx(math.log(6 * 8 * 64))


def test_smaller_boxes_own_shared_cells_and_without_gr_only_the_centre_counts():
    big = np.tile(np.array([[0, 0, 12, 12]], np.float32), (3, 1))
    small = np.tile(np.array([[4, 4, 8, 8]], np.float32), (3, 1))     # same centre (6, 6)
    t = build_stma_targets({0: [big], 1: [small]}, 2, (16, 16), 3, 2, 4)
    np.testing.assert_array_equal(t["box"][2][:, 6, 6], small[2])
    assert t["mov_weight"][6, 6] == pytest.approx(math.log(4 * 4 * 16) / gaussian_area((6, 6), 1, 1, (16, 16))[2].sum())
    np.testing.assert_array_equal(t["cls"], [0.5, 0.5])
    assert t["num"].tolist() == [2]
    centre = build_stma_targets({1: [BOXES]}, 3, (16, 16), 3, 2, 8, gaussian=False)
    assert (centre["mov_weight"] > 0).sum() == 1 and centre["mov_weight"][6, 7] == pytest.approx(math.log(3072))
    assert [(centre["wh_weight"][j] > 0).sum() for j in range(3)] == [1, 1, 1]
    per_class = build_stma_targets({1: [BOXES]}, 3, (16, 16), 3, 2, 8, class_agnostic=False)
    assert per_class["hm"].shape == (3, 16, 16) and per_class["hm"][1, 6, 7] == 1 and per_class["hm"][0].max() == 0


def test_centred_key_frame_and_an_empty_sample():
    t = build_stma_targets({0: [BOXES]}, 1, (16, 16), 3, 1, 8)   # key = middle frame, centre (6, 6)
    assert t["hm"][0, 6, 6] == 1
    np.testing.assert_array_equal(t["mov"][:, 6, 6], [-1, 0, 0, 0, 1, 0])
    empty = build_stma_targets({}, 2, (8, 8), 3, 2, 8)
    assert empty["num"].tolist() == [0] and not empty["hm"].any() and not empty["cls"].any()
    assert empty["box"].shape == (3, 4, 8, 8)


def test_snippet_layouts():
    paper = snippet_layout(5, 16, "center", True)
    assert paper.snippet == (6, 10) and paper.key == 2 and paper.motion == (6, 10) and paper.lookahead == 5
    assert paper.clip_frames(20, 100) == tuple(range(10, 26))     # snippet 16..20, key frame 18 at index 8
    assert paper.clip_frames(5, 8) == (1,) * 6 + (1, 2, 3, 4, 5, 6, 7, 8, 8, 8)
    lite = snippet_layout(3, 8, "last", False)
    assert lite.snippet == (5, 7) and lite.motion == (0, 7) and lite.encoded == (0, 7) and lite.lookahead == 0
    assert lite.clip_frames(9, 9) == tuple(range(2, 10))


# -- loss ------------------------------------------------------------------------------------------
torch = pytest.importorskip("torch")
from edge_stad.train.stma_loss import WEIGHTS, cell_boxes, giou, stma_loss  # noqa: E402


def test_giou_known_answers():
    a = torch.tensor([[0., 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2]])
    b = torch.tensor([[0., 0, 2, 2], [2, 0, 3, 1], [1, 1, 3, 3]])
    # identical: 1; disjoint 1x1 boxes 1 apart: IoU 0, hull 3, union 2 -> -1/3; overlap 1 of union 7, hull 9
    torch.testing.assert_close(giou(a, b), torch.tensor([1.0, -1 / 3, 1 / 7 - 2 / 9]))
    ltrb = torch.zeros(1, 1, 4, 2, 3)
    ltrb[0, 0, :, 1, 2] = torch.tensor([1., 2, 3, 4])
    torch.testing.assert_close(cell_boxes(ltrb)[0, 0, :, 1, 2], torch.tensor([1., -1, 5, 5]))


def _batch(boxes=BOXES, grid=(16, 16)):
    t = build_stma_targets({1: [boxes]}, 3, grid, 3, 2, 8)
    return {k: torch.from_numpy(v[None]) for k, v in t.items()}


def _perfect(batch):
    """Outputs that match every target cell exactly (and a 0.5 heatmap, logits all 0)."""
    b, k = batch["box"].shape[:2]
    h, w = batch["mov_weight"].shape[-2:]
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    box = batch["box"]
    ltrb = torch.stack([x - box[:, :, 0], y - box[:, :, 1], box[:, :, 2] - x, box[:, :, 3] - y], 2)
    return {"hm": torch.full((b, 1, h, w), 0.5), "mov": batch["mov"].clone(), "wh": ltrb.reshape(b, 4 * k, h, w),
            "cls": torch.zeros(b, 3)}


def test_loss_known_answers():
    batch = _batch()
    out = _perfect(batch)
    total, parts = stma_loss(out, batch)
    assert parts["mov"] == 0 and parts["wh"].abs() < 1e-6
    assert parts["cls"] == pytest.approx(math.log(3))               # uniform logits, one-hot target
    out["mov"] = out["mov"] + 0.25 * (batch["mov_weight"] > 0)      # off by 0.25 in each of 2K values
    out["wh"][:, 8:12] = out["wh"][:, 8:12] * 2                     # last frame's box twice as large at every cell
    total, parts = stma_loss(out, batch)
    log_area = math.log(3072)
    assert parts["mov"] == pytest.approx(0.25 * log_area, rel=1e-5)  # sum of weights = log(area), n = 1
    # 2x box around the same cell: IoU 1/4 and hull = union, for every cell; mean over K=3 frames
    assert parts["wh"] == pytest.approx((1 - 0.25) * log_area / 3, rel=1e-5)
    expected = sum(WEIGHTS[k] * parts[k] for k in parts)
    assert total == pytest.approx(float(expected))
    assert WEIGHTS == {"hm": 1.0, "mov": 0.5, "wh": 0.05, "cls": 0.01}   # the paper's eq. (8)-(9)


def test_loss_normalisers_and_focal_term():
    batch = _batch()
    out = _perfect(batch)
    out["hm"] = torch.where(batch["hm"] == 1, torch.tensor(0.5), torch.tensor(1e-4))
    _, parts = stma_loss(out, batch)
    neg = -(torch.log(1 - out["hm"]) * out["hm"] ** 2 * (1 - batch["hm"]) ** 4)[batch["hm"] < 1].sum()
    assert parts["hm"] == pytest.approx(float(-math.log(0.5) * 0.25 + neg), rel=1e-5)
    _, shared = stma_loss(out, batch, torch.tensor([1.0, 2.0, 3.0]))   # several processes' instances and clips
    assert shared["cls"] == pytest.approx(parts["cls"] / 3) and shared["mov"] == pytest.approx(parts["mov"] / 2)


# -- decode ----------------------------------------------------------------------------------------
def test_decode_class_agnostic_known_map():
    k, h, w = 2, 6, 8
    hm = np.zeros((1, 1, h, w), np.float32)
    hm[0, 0, 2, 3], hm[0, 0, 4, 6], hm[0, 0, 2, 4] = 0.8, 0.6, 0.7   # (2, 4) is no peak: (2, 3) is larger
    mov = np.zeros((1, 2 * k, h, w), np.float32)
    mov[0, :, 2, 3] = [-1.4, 0.6, 0.0, 0.0]       # frame 0 centre (1.6, 2.6) -> cell (2, 3)
    wh = np.zeros((1, 4 * k, h, w), np.float32)
    wh[0, 0:4, 3, 2] = [1, 1, 2, 2]
    wh[0, 4:8, 2, 3] = [0.5, 1, 1.5, 2]
    wh[0, 4:8, 4, 6] = [1, 1, 1, 1]
    cls = np.array([[0.1, 0.7, 0.2]], np.float32)
    rows = decode_stma(hm, mov, wh, cls, top_n=2)
    assert rows.shape == (1, 2, 4 * k + 2)
    np.testing.assert_allclose(rows[0, 0], [1, 2, 4, 5, 2.5, 1, 4.5, 4, 0.8 * 0.7, 1], rtol=1e-6)
    np.testing.assert_allclose(rows[0, 1], [6, 4, 6, 4, 5, 3, 7, 5, 0.6 * 0.7, 1], rtol=1e-6)


def test_decode_class_heatmap_and_clamped_cells():
    hm = np.zeros((1, 2, 4, 4), np.float32)
    hm[0, 1, 0, 0], hm[0, 0, 3, 3] = 0.9, 0.5
    mov = np.zeros((1, 2, 4, 4), np.float32)
    mov[0, :, 0, 0] = [-3.0, -2.0]                 # moved off the grid: read at the clamped cell (0, 0)
    wh = np.ones((1, 4, 4, 4), np.float32)
    rows = decode_stma(hm, mov, wh, top_n=2)
    np.testing.assert_allclose(rows[0, :, -2:], [[0.9, 1], [0.5, 0]])
    np.testing.assert_allclose(rows[0, 0, :4], [-1, -1, 1, 1])
    np.testing.assert_allclose(softmax([[0.0, math.log(3)]]), [[0.25, 0.75]], rtol=1e-6)


def test_decode_inverts_the_targets():
    """Outputs equal to the targets decode to the ground-truth boxes: targets and decode agree on cells."""
    other = np.array([[9, 1, 14, 7], [9.5, 1.4, 14.5, 7.4], [10.2, 1.9, 15.2, 7.9]], np.float32)
    t = build_stma_targets({1: [BOXES], 2: [other]}, 3, (16, 16), 3, 1, 8)
    batch = {k: torch.from_numpy(v[None]) for k, v in t.items()}
    out = _perfect(batch)
    rows = decode_stma(batch["hm"].numpy(), out["mov"].numpy(), out["wh"].numpy(), np.array([[0.2, 0.5, 0.3]]),
                       top_n=2)[0]
    found = sorted(rows[:, :12].reshape(2, 3, 4).tolist())
    assert np.allclose(found, sorted([BOXES.tolist(), other.tolist()]), atol=1e-5)
    np.testing.assert_allclose(rows[:, 12], [0.5, 0.5])
