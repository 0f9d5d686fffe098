"""Inference rewrites (edge_stad.models.deploy): same function as the trained modules, fewer graph nodes."""
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from model_helpers import calibrate_bn  # noqa: E402
from test_export import BACKBONES, tiny_model  # noqa: E402

from edge_stad.export.graphs import EncoderGraph, normalization  # noqa: E402
from edge_stad.export.onnx_export import export_onnx  # noqa: E402
from edge_stad.models.backbones.shufflenetv2 import ShuffleBlock  # noqa: E402
from edge_stad.models.deploy import FoldedMicroMotion, fold_shuffle_block, fold_shufflenet  # noqa: E402
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
        if fold:   # no channel shuffles, no splits left
            assert not [n for n in nodes if n.op_type in ("Split", "Transpose") and "/features" in n.name]
    assert counts[True] < 0.6 * counts[False], counts
