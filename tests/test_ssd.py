"""SSD pieces of the flow-fusion detectors: frames read, priors, box coding, matching, hard negatives,
multibox loss and per-class NMS decoding, on known answers."""
import math

import numpy as np
import pytest

from edge_stad.core.ssd_decode import (
    ROAD_LINKING,
    boxes_per_location,
    check_prior_spec,
    decode_boxes,
    decode_ssd,
    frames_for_key,
    prior_boxes,
)
from edge_stad.errors import ConfigError

torch = pytest.importorskip("torch")

from edge_stad.models.flow_fusion import RFB300, default_priors  # noqa: E402
from edge_stad.train import multibox  # noqa: E402


def test_frames_for_key_clamps_to_the_video():
    assert frames_for_key(5, 3, 1, 10) == (4, 5, 6)      # k-1, k, k+1
    assert frames_for_key(1, 3, 1, 10) == (1, 1, 2)
    assert frames_for_key(10, 3, 1, 10) == (9, 10, 10)
    assert frames_for_key(5, 3, 0, 10) == (3, 4, 5)      # causal
    assert frames_for_key(2, 4, 0, 10) == (1, 1, 1, 2)


def rfb300_priors():
    return prior_boxes(default_priors("vgg16", RFB300["feature_maps"]))


def test_rfbnet300_priors_known_answers():
    priors = rfb300_priors()
    assert priors.shape == (11620, 4)                    # 38^2*6 + 19^2*6 + 10^2*6 + 5^2*6 + 3^2*4 + 4
    assert boxes_per_location(RFB300["aspect_ratios"]) == [6, 6, 6, 6, 4, 4]
    c = 4 / 300                                          # first centre: 0.5 * step 8 / 300
    s, big = 30 / 300, math.sqrt(30 * 60) / 300
    r2, r3 = math.sqrt(2), math.sqrt(3)
    expected = [[c, c, s, s], [c, c, big, big], [c, c, s * r2, s / r2], [c, c, s / r2, s * r2],
                [c, c, s * r3, s / r3], [c, c, s / r3, s * r3]]
    np.testing.assert_allclose(priors[:6], expected, rtol=1e-6)
    np.testing.assert_allclose(priors[6, :2], [12 / 300, 4 / 300], rtol=1e-6)   # next column: step 8 px
    last = priors[-4:]                                   # the 1x1 map: centre 0.5, 264 px, clipped to 1
    np.testing.assert_allclose(last[:, :2], 0.5)
    np.testing.assert_allclose(last[0, 2:], 264 / 300, rtol=1e-6)
    np.testing.assert_allclose(last[1, 2:], math.sqrt(264 * 315) / 300, rtol=1e-6)
    np.testing.assert_allclose(last[2], [0.5, 0.5, 1.0, 264 / 300 / r2], rtol=1e-6)


def test_prior_spec_is_checked():
    spec = default_priors("mobilenetv2", [[4, 4], [2, 2], [1, 1], [1, 1], [1, 1], [1, 1]])
    assert prior_boxes(spec).shape == ((16 + 4 + 4) * 6, 4)
    for bad in ({**spec, "min_sizes": spec["min_sizes"][:2]},
                {**spec, "feature_maps": [[0, 4]] + spec["feature_maps"][1:]},
                {k: v for k, v in spec.items() if k != "clip"}):
        with pytest.raises(ConfigError):
            check_prior_spec(bad)


def test_encode_then_decode_round_trips():
    rng = np.random.default_rng(0)
    priors = rfb300_priors()[::97]
    lo = rng.uniform(0, 0.6, (len(priors), 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0.05, 0.4, (len(priors), 2))], 1)
    loc = multibox.encode(torch.from_numpy(boxes), torch.from_numpy(priors).double()).numpy()
    np.testing.assert_allclose(decode_boxes(loc, priors), boxes, atol=1e-6)
    # a box equal to its prior encodes to zeros
    corners = multibox.point_form(torch.from_numpy(priors).double())
    zero = multibox.encode(corners, torch.from_numpy(priors).double())
    assert float(zero.abs().max()) < 1e-9


def test_matching_known_answer():
    priors = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2], [0.9, 0.1, 0.1, 0.1]], dtype=torch.float64)
    a = torch.tensor([0.15, 0.15, 0.37, 0.37], dtype=torch.float64)   # IoU 0.83 with prior 0
    b = torch.tensor([0.55, 0.55, 0.95, 0.95], dtype=torch.float64)   # IoU 0.25 with prior 1: below 0.5
    truths, labels = torch.stack([a, b]), torch.tensor([3.0, 0.0], dtype=torch.float64)
    iou = multibox.box_iou(truths, multibox.point_form(priors))
    assert iou[0, 0].item() == pytest.approx(0.2 ** 2 / 0.22 ** 2) and iou[1, 1] < 0.5
    loc, conf = multibox.match(truths, labels, priors)
    assert conf.tolist() == [4, 1, 0]         # label + 1; b claims its best prior whatever the overlap; rest background
    expected = multibox.encode(truths[[0, 1]], priors[:2])
    torch.testing.assert_close(loc[:2], expected)
    # a later box claiming the same prior wins it (ssd.pytorch's loop)
    loc, conf = multibox.match(torch.stack([a, a]), torch.tensor([1.0, 2.0], dtype=torch.float64), priors)
    assert conf[0].item() == 3
    empty_loc, empty_conf = multibox.match(truths[:0], labels[:0], priors)
    assert empty_conf.tolist() == [0, 0, 0] and float(empty_loc.abs().sum()) == 0


def test_hard_negatives_take_three_per_positive():
    loss = torch.tensor([[5.0, 1.0, 4.0, 3.0, 2.0, 0.5, 9.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    positive = torch.zeros_like(loss, dtype=torch.bool)
    positive[0, 6] = True                         # one positive: the 3 worst other priors are negatives
    neg = multibox.hard_negatives(loss, positive)
    assert neg[0].nonzero().flatten().tolist() == [0, 2, 3]
    assert not neg[1].any()                       # no positive in the image: no negative either
    positive[1, :3] = True                        # 3 positives want 9 negatives; capped at P - 1 = 6 ranks
    # positives (loss set to 0) rank last yet fall inside the cap, as in ssd.pytorch; the loss takes pos | neg
    assert multibox.hard_negatives(loss, positive)[1].nonzero().flatten().tolist() == [0, 1, 3, 4, 5, 6]


def test_multibox_loss_known_answer():
    priors = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2], [0.25, 0.75, 0.2, 0.2],
                           [0.75, 0.25, 0.2, 0.2]])
    targets = torch.full((1, 4, 5), -1.0)
    targets[0, 0] = torch.tensor([0.15, 0.15, 0.35, 0.35, 1.0])    # exactly prior 0, class 1 -> target 2
    loc = torch.zeros(1, 4, 4)
    loc[0, 0] = torch.tensor([0.5, -0.5, 0.0, 2.0])
    conf = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]])
    loss_l, loss_c = multibox.multibox_loss(loc, conf, priors, targets)
    smooth = 0.125 + 0.125 + 0.0 + 1.5                               # smooth L1 of the offsets (beta 1)
    assert loss_l.item() == pytest.approx(smooth)
    ce = torch.nn.functional.cross_entropy
    positive = ce(conf[0, :1], torch.tensor([2]), reduction="sum")
    negatives = ce(conf[0, 1:], torch.zeros(3, dtype=torch.long), reduction="none")   # all 3 (3 x 1, cap 3)
    assert loss_c.item() == pytest.approx((positive + negatives.sum()).item(), rel=1e-6)
    # padding only: no positives, the sums are divided by 1 and the loss is 0
    l0, c0 = multibox.multibox_loss(loc, conf, priors, torch.full((1, 4, 5), -1.0))
    assert l0.item() == 0 and c0.item() == 0


def ssd_case():
    priors = np.array([[0.3, 0.3, 0.2, 0.2], [0.31, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.7, 0.3, 0.2, 0.2]],
                      dtype=np.float32)
    conf = np.full((4, 4), -5.0, dtype=np.float32)                     # background, classes 0, 1, 2
    conf[0, 1], conf[1, 1], conf[2, 2], conf[3, 0] = 5.0, 4.0, 3.0, 5.0
    return priors, np.zeros((4, 4), dtype=np.float32), conf


def test_decode_ssd_per_class_nms_and_order():
    priors, loc, conf = ssd_case()
    rows = decode_ssd(loc, conf, priors)
    probs = np.exp(conf) / np.exp(conf).sum(1, keepdims=True)
    # prior 1 is suppressed by prior 0 (same class, IoU 0.9); prior 3 is background
    assert rows[:, 5].tolist() == [0, 1]
    np.testing.assert_allclose(rows[:, 4], [probs[0, 1], probs[2, 2]], rtol=1e-6)
    np.testing.assert_allclose(rows[0, :4], [0.2, 0.2, 0.4, 0.4], atol=1e-6)
    # without NMS both class-0 boxes survive; top_k 1 keeps only the best of each class
    assert decode_ssd(loc, conf, priors, nms_threshold=1.0)[:, 5].tolist() == [0, 0, 1]
    assert len(decode_ssd(loc, conf, priors, nms_threshold=1.0, top_k=1)) == 2
    # the threshold applies to the class probability
    assert decode_ssd(loc, conf, priors, conf_threshold=0.999)[:, 5].tolist() == [0]   # 0.99986 vs 0.99899
    wide = decode_ssd(loc, conf, priors, **ROAD_LINKING)          # ROAD's filter adds every class's probability
    np.testing.assert_allclose(wide[:, :6], rows, rtol=1e-6)
    np.testing.assert_allclose(wide[:, 6:], probs[[0, 2], 1:], rtol=1e-5)


def test_decode_ssd_pre_nms_top_k_and_bad_input():
    priors, loc, conf = ssd_case()
    # keeping only the best candidate before NMS leaves prior 1 out even without NMS
    assert decode_ssd(loc, conf, priors, nms_threshold=1.0, pre_nms_top_k=1)[:, 5].tolist() == [0, 1]
    with pytest.raises(ConfigError, match="loc"):
        decode_ssd(loc[:3], conf, priors)
    bad = conf.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        decode_ssd(loc, bad, priors)
    with pytest.raises(ConfigError, match="top_k"):
        decode_ssd(loc, conf, priors, top_k=0)
