"""Inference rewrites (edge_stad.models.deploy): same function as the trained modules, fewer graph nodes."""
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from model_helpers import calibrate_bn  # noqa: E402
from test_export import BACKBONES, tiny_model  # noqa: E402

from edge_stad.export.graphs import EncoderGraph, normalization  # noqa: E402
from edge_stad.export.onnx_export import export_onnx  # noqa: E402
from edge_stad.models.backbones.shufflenetv2 import ShuffleBlock  # noqa: E402
from edge_stad.models.decoder import Decoder  # noqa: E402
from edge_stad.models.deploy import (  # noqa: E402
    FoldedDecoder,
    FoldedMicroMotion,
    PairedShuffleNetV2,
    fold_shuffle_block,
    fold_shufflenet,
    phase_conv_weight,
)
from edge_stad.models.fused_backbones import AMMAShuffleNetV2  # noqa: E402
from edge_stad.models.micro_motion import MicroMotion  # noqa: E402


def _block(inp, oup, stride):
    torch.manual_seed(stride)
    block = ShuffleBlock(inp, oup, stride)
    return calibrate_bn(block, torch.randn(4, inp, 12, 12)).eval()


@pytest.mark.parametrize("inp,oup,stride", [(24, 116, 2), (116, 116, 1)])
def test_folded_shuffle_unit_equals_the_unit(inp, oup, stride):
    block = _block(inp, oup, stride)
    x = torch.randn(2, inp, 12, 12)
    if stride == 1:
        x = x.relu()   # what a stride-1 unit sees: the previous unit's ReLU outputs
    folded = fold_shuffle_block(block)
    with torch.no_grad():
        assert torch.allclose(folded(x), block(x), atol=1e-5)
    assert len([m for m in folded.modules() if isinstance(m, torch.nn.Conv2d)]) == 3


def test_a_folded_sequence_cannot_start_with_a_stride_1_unit():
    with pytest.raises(ValueError, match="stride-1"):
        fold_shufflenet(torch.nn.Sequential(_block(116, 116, 1)))
    with pytest.raises(TypeError, match="ShuffleBlock"):
        fold_shufflenet(torch.nn.Sequential(torch.nn.ReLU()))


class _TwoInputs(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x[:, :3], x[:, 3:])


@pytest.mark.parametrize("fusion_stages", [2, 3, 4])
def test_paired_streams_equal_the_two_stream_backbone(fusion_stages):
    torch.manual_seed(fusion_stages)
    backbone = AMMAShuffleNetV2(fusion_stages=fusion_stages)
    for i in range(1, fusion_stages + 1):   # distinct fusion weights, one of them outside [0, 1]
        getattr(backbone, f"rgb_weight{i}").data.fill_(0.2 + 0.35 * i)
    rgb, motion = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    calibrate_bn(_TwoInputs(backbone), torch.cat([rgb, motion], 1))
    paired = PairedShuffleNetV2(backbone)
    with torch.no_grad():
        want, got = backbone(rgb, motion), paired(rgb, motion)
    assert got.shape == want.shape == (2, 512, 2, 2)
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))
    units = backbone.STAGE_ENDS[fusion_stages - 2] + 1    # the motion stream's units, each merged into one
    convs = [m for m in paired.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 + 3 * 16 + fusion_stages + 2     # stems, 16 units, fusions, conv_last, shrink
    assert units == len([m for m in paired.paired if hasattr(m, "a")])


def test_pairing_needs_two_fused_stages():
    with pytest.raises(ValueError, match="two fused stages"):
        PairedShuffleNetV2(AMMAShuffleNetV2(fusion_stages=1).eval())


def test_phase_convolution_and_pixel_shuffle_equal_the_transposed_convolution():
    torch.manual_seed(0)
    weight = torch.randn(6, 5, 4, 4)
    x = torch.randn(2, 6, 7, 9)
    want = torch.nn.functional.conv_transpose2d(x, weight, stride=2, padding=1)
    phases = torch.nn.functional.conv2d(x, phase_conv_weight(weight), padding=1)
    assert phases.shape == (2, 20, 7, 9) and want.shape == (2, 5, 14, 18)
    assert torch.allclose(torch.nn.functional.pixel_shuffle(phases, 2), want, atol=1e-5)
    # each phase reads a 2x2 corner of the 3x3 window: 4 of 9 taps per phase are non-zero
    assert int((phase_conv_weight(torch.ones(1, 1, 4, 4)) != 0).sum()) == 16


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


@pytest.mark.parametrize("pool", [True, False])
def test_folded_micro_motion_on_raw_frames_equals_micro_motion_on_normalised_frames(pool):
    torch.manual_seed(0)
    mm = MicroMotion(5, pool=pool).eval()
    scale, shift = normalization(5)
    raw = torch.randint(0, 256, (2, 5, 3, 16, 16), dtype=torch.uint8)
    normalised = raw.reshape(2, 15, 16, 16).float() * scale + shift
    folded = FoldedMicroMotion(mm, scale[0, :3, 0, 0])
    with torch.no_grad():
        want, got = mm(normalised), folded(raw)
    assert got.shape == want.shape == (2, 3, 16, 16)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


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


def test_folded_shufflenet_export_has_far_fewer_nodes_and_matches_pytorch(tmp_path):
    model = tiny_model("shufflenetv2")
    counts = {}
    for fold in (False, True):
        folder = tmp_path / str(fold)
        record = export_onnx(model, folder, fold=fold)
        assert record["parity_scaled_error"]["encoder"] < 1e-4
        nodes = onnx.load(folder / "encoder.onnx").graph.node
        counts[fold] = len(nodes)
        if fold:   # no channel shuffles, no splits, no transposed convolution left
            assert not [n for n in nodes if n.op_type in ("Split", "Transpose") and "/features" in n.name]
            assert not [n for n in nodes if n.op_type == "ConvTranspose"]
    assert counts[True] < 0.6 * counts[False], counts
