"""Inference rewrites (edge_stad.models.deploy): same function as the trained modules, fewer graph nodes."""
import copy

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from model_helpers import (  # noqa: E402
    BACKBONES,
    calibrate_bn,  # noqa: E402
    tiny_model,
)

from edge_stad.export.graphs import EncoderGraph, normalization  # noqa: E402
from edge_stad.export.onnx_export import export_onnx  # noqa: E402
from edge_stad.models.backbones.shufflenetv2 import ShuffleBlock, shufflenetv2_features  # noqa: E402
from edge_stad.models.decoder import Decoder  # noqa: E402
from edge_stad.models.deploy import (  # noqa: E402
    DownUnit,
    FoldedDecoder,
    FoldedMicroMotion,
    SplitUnit,
    column_phase_weight,
    phase_conv_weight,
    split_backbone,
    split_shufflenet,
    split_unit,
    upsampled_input_conv,
)
from edge_stad.models.fused_backbones import AMMAShuffleNetV2  # noqa: E402
from edge_stad.models.micro_motion import MicroMotion  # noqa: E402


def _random_bn(module):
    """Distinct BatchNorm statistics and affines, so that a misplaced channel shows."""
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module.eval()


def _stored(x, order):
    """``x`` in a storage order, noise at the padding positions (``None``), which no convolution may read."""
    return torch.stack([x[:, c] if c is not None else torch.randn_like(x[:, 0]) for c in order], 1)


def _kept(x, order):
    """The channels of a storage-ordered ``x`` that are not padding."""
    return x[:, [s for s, c in enumerate(order) if c is not None]]


def test_split_units_equal_the_units_in_their_storage_order():
    blocks = _random_bn(torch.nn.Sequential(*shufflenetv2_features()))
    split, orders = split_shufflenet(blocks)
    x = torch.randn(2, 24, 32, 32)
    with torch.no_grad():
        for j, (unit, block) in enumerate(zip(split, blocks)):
            want, got = block(x), unit(x if j == 0 else _stored(x, orders[j - 1]))
            real = [c for c in orders[j] if c is not None]
            assert torch.allclose(_kept(got, orders[j]), want[:, real], atol=1e-5), j
            x = want
    assert [type(u) for u in split[:2]] == [DownUnit, SplitUnit]
    # stage 1's 58-channel halves: the depthwise convolution pads to 64 channels, the 1x1 convolutions
    # read and write 60 (a multiple of 4): 2 padding channels per part in storage; later stages are aligned
    assert [tuple(u.a.weight.shape) for u in split[1:4]] == [(64, 60, 1, 1)] * 3
    assert [tuple(u.c.weight.shape) for u in split[1:4]] == [(60, 64, 1, 1)] * 3
    assert [len(order) for order in orders] == [120] + [118] * 2 + [120] + [232] * 8 + [464] * 4
    assert tuple(split[4].b2.weight.shape) == tuple(split[5].b.weight.shape) == (128, 1, 3, 3)
    # no reshape or transpose left; each stride-1 unit gathers its pass-through from a few slices
    assert [len(u.plan) - 1 for u in split if isinstance(u, SplitUnit)] == \
        [4, 6, 9, 4, 6, 8, 10, 12, 14, 14, 4, 6, 8]   # stage 1's last: one more for its padding
    with pytest.raises(TypeError, match="ShuffleBlock"):
        split_shufflenet(torch.nn.Sequential(torch.nn.ReLU()))


def test_a_unit_whose_transformed_half_is_scattered_is_refused():
    block = _random_bn(ShuffleBlock(116, 116, 1))
    order = list(range(116))
    order[57], order[58] = order[58], order[57]
    split_unit(block, list(range(116)))   # the unit's own order: fine
    with pytest.raises(ValueError, match="one slice"):
        split_unit(block, order)


class _TwoInputs(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x[:, :3], x[:, 3:])


@pytest.mark.parametrize("fusion_stages", [0, 1, 2, 3, 4])
def test_split_backbone_equals_the_two_stream_backbone(fusion_stages):
    torch.manual_seed(fusion_stages)
    backbone = AMMAShuffleNetV2(fusion_stages=fusion_stages)
    for i in range(1, fusion_stages + 1):   # distinct fusion weights, one of them outside [0, 1]
        getattr(backbone, f"rgb_weight{i}").data.fill_(0.2 + 0.35 * i)
    rgb, motion = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    calibrate_bn(_TwoInputs(backbone), torch.cat([rgb, motion], 1))
    backbone.eval()
    with torch.no_grad():
        want = backbone(rgb, motion if fusion_stages else None)
        split = split_backbone(copy.deepcopy(backbone))
        got = split(rgb, motion if fusion_stages else None)
    assert got.shape == want.shape == (2, 512, 2, 2)
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))
    assert not [m for m in split.modules() if isinstance(m, ShuffleBlock)]


def test_phase_convolution_and_pixel_shuffle_equal_the_transposed_convolution():
    torch.manual_seed(0)
    weight = torch.randn(6, 5, 4, 4)
    x = torch.randn(2, 6, 7, 9)
    want = torch.nn.functional.conv_transpose2d(x, weight, stride=2, padding=1)
    phases = torch.nn.functional.conv2d(x, phase_conv_weight(weight), padding=1)
    assert phases.shape == (2, 20, 8, 10) and want.shape == (2, 5, 14, 18)
    got = torch.nn.functional.pixel_shuffle(phases, 2)[:, :, 1:-1, 1:-1]
    assert torch.allclose(got, want, atol=1e-5)
    # each of the 16 kernel taps lands in exactly one phase
    ones = phase_conv_weight(torch.arange(16.0).reshape(1, 1, 4, 4))
    assert sorted(ones.flatten().tolist()) == list(range(16))


@pytest.mark.parametrize("with_shrink", [False, True])
def test_folded_decoder_equals_the_decoder(with_shrink):
    torch.manual_seed(1)
    decoder = Decoder("conv", in_channels=16, channels=8)
    shrink = torch.nn.Sequential(torch.nn.Conv2d(8, 4, 1, bias=False), torch.nn.BatchNorm2d(4))
    plain = torch.nn.Sequential(decoder, shrink) if with_shrink else decoder
    plain = calibrate_bn(plain, torch.randn(4, 16, 6, 6)).eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        want, got = plain(x), FoldedDecoder(decoder, shrink if with_shrink else None)(x)
    assert got.shape == want.shape == (2, 4 if with_shrink else 8, 24, 24)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("pool, width", [(True, 16), (False, 16), (True, 18), (False, 18)])   # 18 pooled: 9, odd
def test_folded_micro_motion_on_raw_frames_equals_micro_motion_on_normalised_frames(pool, width):
    torch.manual_seed(0)
    mm = MicroMotion(5, pool=pool).eval()
    scale, shift = normalization(5)
    raw = torch.randint(0, 256, (2, 5, 16, width, 3), dtype=torch.uint8)   # channels last
    normalised = raw.permute(0, 1, 4, 2, 3).reshape(2, 15, 16, width).float() * scale + shift
    folded = FoldedMicroMotion(mm, scale[0, :3, 0, 0])
    with torch.no_grad():
        want, got = mm(normalised), folded(raw)
    assert got.shape == ((2, 3, 8, width // 2) if pool else (2, 3, 16, width))   # pooled: not upsampled back
    if pool:
        got = torch.nn.functional.interpolate(got, scale_factor=2.0, mode="nearest")
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k_h, k_w", [(5, 5), (3, 3), (5, 1), (1, 3)])
def test_column_phase_convolution_equals_the_convolution_on_both_column_phases(k_h, k_w):
    torch.manual_seed(4)
    weight, x = torch.randn(8, 3, k_h, k_w), torch.randn(2, 3, 7, 12)
    want = torch.nn.functional.conv2d(x, weight, padding=((k_h - 1) // 2, (k_w - 1) // 2))
    phases = x.reshape(2, 3, 7, 6, 2).permute(0, 1, 4, 2, 3).reshape(2, 6, 7, 6)   # channel 2c + r: phase r of c
    y = torch.nn.functional.conv2d(phases, column_phase_weight(weight), padding=((k_h - 1) // 2, 1))
    got = y.reshape(2, 2, 8, 7, 6).permute(0, 2, 3, 4, 1).reshape(2, 8, 7, 12)   # channel b*8 + c: phase b of c
    assert torch.allclose(got, want, atol=1e-5)
    # every tap of the kernel is used once per output phase
    ones = column_phase_weight(torch.arange(1.0, k_h * k_w + 1).reshape(1, 1, k_h, k_w))
    for b in range(2):
        assert sorted(v for v in ones[b].flatten().tolist() if v) == list(range(1, k_h * k_w + 1))
    with pytest.raises(ValueError, match="odd kernel width up to 5"):
        column_phase_weight(torch.randn(8, 3, 5, 4))


@pytest.mark.parametrize("kernel, groups, with_bn", [(3, 1, True), (7, 1, False), (5, 2, True), ((3, 7), 1, False)])
def test_upsampled_input_conv_equals_the_strided_conv_on_the_upsampled_map(kernel, groups, with_bn):
    torch.manual_seed(2)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    conv = torch.nn.Conv2d(4, 6, k, 2, tuple((s - 1) // 2 for s in k), groups=groups, bias=not with_bn)
    bn = _random_bn(torch.nn.BatchNorm2d(6)) if with_bn else None
    plain = torch.nn.Sequential(conv, bn) if with_bn else conv
    m = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        want = plain(torch.nn.functional.interpolate(m, scale_factor=2.0, mode="nearest"))
        rewritten = upsampled_input_conv(conv, bn)
        got = rewritten(m)
    assert got.shape == want.shape == (2, 6, 9, 11)
    assert torch.allclose(got, want, atol=1e-5)
    taps = [m.weight.shape[2:] for m in rewritten.modules() if isinstance(m, torch.nn.Conv2d)]
    assert taps == [tuple(s // 2 + 1 for s in k)]   # 3 -> 2, 5 -> 3, 7 -> 4 taps per axis


@pytest.mark.parametrize("conv", [torch.nn.Conv2d(3, 4, 3, 1, 1), torch.nn.Conv2d(3, 4, 4, 2, 1),
                                  torch.nn.Conv2d(3, 4, 3, 2, 0)])
def test_upsampled_input_conv_refuses_other_convolutions(conv):
    with pytest.raises(ValueError, match="stride-2"):
        upsampled_input_conv(conv)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_folded_encoder_graph_equals_the_plain_one(backbone):
    model = tiny_model(backbone)
    frames = torch.randint(0, 256, (3, 5, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        plain, folded = EncoderGraph(model)(frames), EncoderGraph(model, fold=True)(frames)
    for a, b in zip(plain, folded):
        assert torch.allclose(a, b, atol=1e-4 * max(1.0, float(a.abs().max())))
    with pytest.raises(ValueError, match="FP32"):
        EncoderGraph(model, half=True, fold=True)


def test_folded_shufflenet_export_has_no_shuffles_and_matches_pytorch(tmp_path):
    model = tiny_model("shufflenetv2")
    ops = {}
    for fold in (False, True):
        folder = tmp_path / str(fold)
        record = export_onnx(model, folder, fold=fold)
        assert record["parity_scaled_error"]["encoder"] < 1e-4
        nodes = onnx.load(folder / "encoder.onnx").graph.node
        ops[fold] = {n.op_type for n in nodes if "/features" in n.name}
        if fold:   # no channel shuffles and no transposed convolution left
            assert not [n for n in nodes if n.op_type == "ConvTranspose"]
    assert {"Transpose", "Reshape"} <= ops[False]
    assert not ops[True] & {"Transpose", "Reshape"}, ops[True]
