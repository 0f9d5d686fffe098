import math

import pytest

torch = pytest.importorskip("torch")

from edge_stad.train.losses import amma_loss, focal_loss, l1_loss  # noqa: E402


def test_focal_loss_known_answer():
    pred = torch.tensor([[[[0.5, 0.1], [0.99999, 0.0]]]])
    gt = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    # positive 0.5: log(0.5)*0.5^2; negative 0.1 (gt 0.5): log(0.9)*0.1^2*0.5^4;
    # 0.99999 is clamped to 1-1e-4: log(1e-4)*(1-1e-4)^2; 0.0 is clamped to 1e-4: log(1-1e-4)*(1e-4)^2
    expected = -(math.log(0.5) * 0.25 + math.log(0.9) * 0.01 * 0.0625
                 + math.log(1e-4) * (1 - 1e-4) ** 2 + math.log(1 - 1e-4) * 1e-8) / 1
    assert focal_loss(pred, gt).item() == pytest.approx(expected, rel=1e-4)  # float32 clamp: 1 - (1 - 1e-4) != 1e-4
    # no positive: the negative part alone, not divided
    assert focal_loss(pred, gt * 0.5).item() > 0


def test_l1_gathers_at_each_channels_cell():
    out = torch.arange(2 * 9, dtype=torch.float32).view(1, 2, 3, 3)  # channel 0: 0..8, channel 1: 9..17
    target = torch.tensor([[[1.0, 10.0], [0.0, 0.0]]])
    index = torch.tensor([[[4, 5], [0, 0]]])           # object 0: channel 0 at cell 4, channel 1 at cell 5
    mask = torch.tensor([[1, 0]], dtype=torch.uint8)
    # |4 - 1| + |14 - 10| over 2 supervised values
    assert l1_loss(out, target, mask, index).item() == pytest.approx(7 / (2 + 1e-4))


def test_amma_loss_weights():
    torch.manual_seed(0)
    out = {"hm": torch.rand(1, 2, 4, 4) * 0.9 + 0.05, "mov": torch.randn(1, 4, 4, 4), "wh": torch.randn(1, 4, 4, 4)}
    hm = torch.zeros(1, 2, 4, 4)
    hm[0, 1, 2, 2] = 1
    batch = {"hm": hm, "mov": torch.randn(1, 3, 4), "wh": torch.rand(1, 3, 4) * 3, "index": torch.tensor([[10, 0, 0]]),
             "index_all": torch.tensor([[[10, 10, 9, 9]] + [[0] * 4] * 2]), "mask": torch.tensor([[1, 0, 0]])}
    total, parts = amma_loss(out, batch)
    assert total.item() == pytest.approx((parts["hm"] + parts["mov"] + 0.1 * parts["wh"]).item())
    assert set(parts) == {"hm", "mov", "wh"} and all(v.item() > 0 for v in parts.values())
