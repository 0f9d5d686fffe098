import math

import pytest

torch = pytest.importorskip("torch")

from edge_stad.train.region_loss import region_loss, region_targets  # noqa: E402

ANCHORS = [[1.0, 1.0], [2.0, 3.0]]
C, H, W = 3, 4, 4
OFF = -20.0  # objectness logit of an empty anchor


def logit(p):
    return math.log(p / (1 - p))


def empty_output(batch=1):
    out = torch.zeros(batch, len(ANCHORS), 5 + C, H, W)
    out[:, :, 4] = OFF
    return out


# GT x 0.15..0.65, y 0.3..1.0 on a 4 x 4 grid: centre (1.6, 2.6) cells -> cell (row 2, col 1), size 2 x 2.8 cells;
# shape IoU with anchor 1 (2 x 3) is 5.6 / 6, with anchor 0 (1 x 1) 1 / 5.6: anchor 1 is responsible.
GT = torch.tensor([[[0.15, 0.3, 0.65, 1.0, 2.0]]])


def perfect_output():
    out = empty_output()
    out[0, 1, :, 2, 1] = torch.tensor([logit(0.6), logit(0.6), 0.0, math.log(2.8 / 3), 30.0, -30.0, -30.0, 30.0])
    return out


def test_targets_of_one_box():
    pred = torch.zeros(1, 2, H, W, 4)
    pred[..., 2:] = 0.01  # tiny boxes everywhere: nothing ignored
    t = region_targets(pred, GT, ANCHORS, C)
    assert t.responsible.sum() == 1 and t.responsible[0, 1, 2, 1]
    torch.testing.assert_close(t.box[0, 1, 2, 1], torch.tensor([0.6, 0.6, 0.0, math.log(2.8 / 3)]))
    assert t.label[0, 1, 2, 1] == 2 and t.conf[0, 1, 2, 1] == 0
    assert t.noobj.sum() == 2 * H * W - 1


def test_perfect_prediction_costs_nothing_and_a_shift_costs_its_smooth_l1():
    total, parts = region_loss(perfect_output().view(1, -1, H, W), GT, C, ANCHORS)
    assert parts["box"].item() == pytest.approx(0, abs=1e-6)
    assert parts["cls"].item() == pytest.approx(0, abs=1e-6)
    assert parts["obj"].item() == pytest.approx(0, abs=1e-6)  # conf ~1 against IoU 1, empty anchors ~0
    shifted = perfect_output()
    shifted[0, 1, 0, 2, 1] = 0.0  # x offset 0.5 instead of 0.6: SmoothL1 0.5 * 0.1^2, halved
    shifted[0, 1, 3, 2, 1] += 2.0  # th 2 too large: SmoothL1 2 - 0.5, halved
    _, parts = region_loss(shifted.view(1, -1, H, W), GT, C, ANCHORS)
    assert parts["box"].item() == pytest.approx((0.5 * 0.01 + 1.5) / 2, rel=1e-5)
    # the box no longer matches: the objectness target is the IoU of the predicted box, (sigmoid(30) - IoU)^2 * 5 / 2
    assert parts["obj"].item() > 0.01
    wrong = perfect_output()
    wrong[0, 1, 5:, 2, 1] = torch.tensor([0.0, 0.0, 0.0])  # uniform classes: p = 1/3, focal (2/3)^2 * ln 3
    _, parts = region_loss(wrong.view(1, -1, H, W), GT, C, ANCHORS)
    assert parts["cls"].item() == pytest.approx((2 / 3) ** 2 * math.log(3), rel=1e-5)


def test_no_object_cells_are_penalised_unless_ignored():
    out = perfect_output()
    out[0, 0, 4, 0, 3] = 0.0  # an anchor far from the GT at objectness 0.5: 1 * 0.5^2 / 2
    _, parts = region_loss(out.view(1, -1, H, W), GT, C, ANCHORS)
    assert parts["obj"].item() == pytest.approx(0.125, rel=1e-4)
    # anchor 0 of the responsible cell predicting the GT box (IoU 1 > 0.6) is not pushed to 0
    ignored = perfect_output()
    ignored[0, 0, :5, 2, 1] = torch.tensor([logit(0.6), logit(0.6), math.log(2.0), math.log(2.8), 0.0])
    _, parts = region_loss(ignored.view(1, -1, H, W), GT, C, ANCHORS)
    assert parts["obj"].item() == pytest.approx(0, abs=1e-6)
    # the same anchor predicting a box of IoU 0.5 (half as wide) is penalised
    ignored[0, 0, 2, 2, 1] = 0.0
    _, parts = region_loss(ignored.view(1, -1, H, W), GT, C, ANCHORS)
    assert parts["obj"].item() == pytest.approx(0.125, rel=1e-4)


def test_gradients_flow_and_batch_mean():
    torch.manual_seed(0)
    out = torch.randn(1, 2 * (5 + C), H, W, requires_grad=True)
    total, parts = region_loss(out, GT, C, ANCHORS)
    total.backward()
    grad = out.grad.view(1, 2, 5 + C, H, W)
    assert grad[0, 1, :4, 2, 1].abs().min() > 0 and grad[0, 1, 5:, 2, 1].abs().min() > 0
    assert grad[0, 0, :4].abs().max() == 0 and grad[0, 0, 5:].abs().max() == 0  # no responsible anchor 0
    assert all(p.requires_grad for p in parts.values())
    twice, parts2 = region_loss(out.detach().repeat(2, 1, 1, 1), GT.repeat(2, 1, 1), C, ANCHORS)
    assert twice.item() == pytest.approx(total.item(), rel=1e-5)  # divided by the batch size


def reference_loss(output, boxes, anchors, num_classes):
    """The region loss written with YOWO's per-box loops, as a check of the vectorised one."""
    B, _, h, w = output.shape
    A = len(anchors)
    out = output.view(B, A, 5 + num_classes, h, w)
    total = {"box": 0.0, "obj": 0.0, "cls": 0.0}
    for b in range(B):
        gts = [row for row in boxes[b].tolist() if row[4] >= 0]
        gts = [((x1 + x2) / 2 * w, (y1 + y2) / 2 * h, (x2 - x1) * w, (y2 - y1) * h, int(c))
               for x1, y1, x2, y2, c in gts]
        weight, target, owner = {}, {}, {}
        for a in range(A):
            for j in range(h):
                for i in range(w):
                    o = out[b, a, :, j, i].tolist()
                    pred = (1 / (1 + math.exp(-o[0])) + i, 1 / (1 + math.exp(-o[1])) + j,
                            math.exp(o[2]) * anchors[a][0], math.exp(o[3]) * anchors[a][1])
                    best = max([iou(pred, g[:4]) for g in gts], default=0.0)
                    weight[a, j, i] = 0.0 if best > 0.6 else 1.0
                    target[a, j, i] = (0.0, pred)
        for n, g in enumerate(gts):
            i, j = min(int(g[0]), w - 1), min(int(g[1]), h - 1)
            shape = [iou((0, 0, g[2], g[3]), (0, 0, aw, ah)) for aw, ah in anchors]
            owner[shape.index(max(shape)), j, i] = n  # a later box takes the anchor over
        for (a, j, i), n in owner.items():
            g = gts[n]
            o = out[b, a, :, j, i]
            pred = target[a, j, i][1]
            weight[a, j, i] = 5.0
            target[a, j, i] = (iou(pred, g[:4]), pred)
            tbox = torch.tensor([g[0] - i, g[1] - j, math.log(g[2] / anchors[a][0]), math.log(g[3] / anchors[a][1])])
            got = torch.cat([torch.sigmoid(o[:2]), o[2:4]])
            total["box"] += torch.nn.functional.smooth_l1_loss(got, tbox, reduction="sum").item() / 2
            p = torch.softmax(o[5:], 0)[g[4]].item()
            total["cls"] += -(1 - p) ** 2 * math.log(p)
        for key, wgt in weight.items():
            conf = torch.sigmoid(out[b, key[0], 4, key[1], key[2]]).item()
            total["obj"] += wgt * (conf - target[key][0]) ** 2 / 2
    return {k: v / B for k, v in total.items()}


def iou(a, b):
    """IoU of two cx, cy, w, h boxes."""
    w = min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2)
    h = min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2)
    inter = max(w, 0) * max(h, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_matches_a_per_box_reference():
    torch.manual_seed(1)
    out = torch.randn(3, 2 * (5 + C), H, W) * 1.5
    boxes = torch.tensor([
        [[0.1, 0.1, 0.45, 0.5, 0], [0.12, 0.11, 0.43, 0.52, 1], [0.55, 0.2, 1.0, 1.0, 2], [0, 0, 0, 0, -1]],
        [[0.02, 0.05, 1.0, 1.0, 1], [0.9, 0.45, 1.1, 0.6, 0], [0, 0, 0, 0, -1], [0, 0, 0, 0, -1]],
        [[0, 0, 0, 0, -1]] * 4,  # no GT
    ])
    # image 0: its first two boxes want the same anchor (the second wins); image 1: a centre on the right edge.
    # Centres stay off cell borders, where float32 and float64 could pick different cells.
    # Anchor 1 of image 1 predicts boxes of its first GT's size everywhere: those near its centre are ignored.
    out.view(3, 2, 5 + C, H, W)[1, 1, 2:4] = torch.tensor([math.log(3.92 / 2), math.log(3.8 / 3)])[:, None, None]
    _, parts = region_loss(out, boxes, C, ANCHORS)
    expected = reference_loss(out, boxes, ANCHORS, C)
    for key in expected:
        assert parts[key].item() == pytest.approx(expected[key], rel=1e-4), key


def test_bad_inputs_name_what_was_expected():
    with pytest.raises(ValueError, match=r"\(B, 16, h, w\) for A=2 anchors and C=3"):
        region_loss(torch.zeros(1, 15, H, W), GT, C, ANCHORS)
    nan = torch.zeros(1, 16, H, W)
    nan[0, 3, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        region_loss(nan, GT, C, ANCHORS)
    with pytest.raises(ValueError, match=r"integer label in \[0, 3\)"):
        region_loss(torch.zeros(1, 16, H, W), torch.tensor([[[0.1, 0.1, 0.5, 0.5, 3.0]]]), C, ANCHORS)
    with pytest.raises(ValueError, match="x1 < x2"):
        region_loss(torch.zeros(1, 16, H, W), torch.tensor([[[0.5, 0.1, 0.5, 0.5, 0.0]]]), C, ANCHORS)
    with pytest.raises(ValueError, match=r"\(B=1, M, 5\)"):
        region_loss(torch.zeros(1, 16, H, W), torch.zeros(1, 4), C, ANCHORS)
