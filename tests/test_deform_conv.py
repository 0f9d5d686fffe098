import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from edge_stad.models.deform_conv import ModulatedDeformConv2d, modulated_deform_conv2d  # noqa: E402


def slow_dcn(x, offset, mask, weight, bias):
    """DCNv2's im2col sampling written per output pixel and tap (stride 1, pad 1, 3x3)."""
    b, c, h, w = x.shape
    out = np.zeros((b, weight.shape[0], h, w))
    x, offset, mask, weight, bias = (t.double().numpy() for t in (x, offset, mask, weight, bias))

    def sample(bi, y, xx):
        if not (-1 < y < h and -1 < xx < w):
            return np.zeros(c)
        y0, x0 = int(np.floor(y)), int(np.floor(xx))
        val = np.zeros(c)
        for yy, xc, wt in ((y0, x0, (1 - (y - y0)) * (1 - (xx - x0))), (y0, x0 + 1, (1 - (y - y0)) * (xx - x0)),
                           (y0 + 1, x0, (y - y0) * (1 - (xx - x0))), (y0 + 1, x0 + 1, (y - y0) * (xx - x0))):
            if 0 <= yy < h and 0 <= xc < w:
                val += wt * x[bi, :, yy, xc]
        return val

    for bi in range(b):
        for i in range(h):
            for j in range(w):
                acc = bias.copy()
                for t in range(9):
                    ki, kj = divmod(t, 3)
                    y = i - 1 + ki + offset[bi, 2 * t, i, j]
                    xx = j - 1 + kj + offset[bi, 2 * t + 1, i, j]
                    acc += weight[:, :, ki, kj] @ (sample(bi, y, xx) * mask[bi, t, i, j])
                out[bi, :, i, j] = acc
    return torch.from_numpy(out).float()


def random_case(seed=0, scale=2.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 6, 5, generator=g)
    offset = torch.randn(2, 18, 6, 5, generator=g) * scale
    mask = torch.rand(2, 9, 6, 5, generator=g)
    weight = torch.randn(3, 4, 3, 3, generator=g)
    bias = torch.randn(3, generator=g)
    return x, offset, mask, weight, bias


def test_matches_dcnv2_sampling_written_out():
    case = random_case()
    torch.testing.assert_close(modulated_deform_conv2d(*case), slow_dcn(*case), rtol=1e-5, atol=1e-5)


def test_zero_offsets_unit_mask_is_a_conv():
    x, _, _, weight, bias = random_case(1)
    zero, ones = torch.zeros(2, 18, 6, 5), torch.ones(2, 9, 6, 5)
    torch.testing.assert_close(modulated_deform_conv2d(x, zero, ones, weight, bias), F.conv2d(x, weight, bias, 1, 1),
                               rtol=1e-5, atol=1e-5)


def test_integer_offsets_shift_the_input():
    x, _, _, weight, bias = random_case(2)
    offset = torch.zeros(2, 18, 6, 5)
    offset[:, 1::2] = 1.0  # every tap reads one column to the right: padding moves from left to right
    out = modulated_deform_conv2d(x, offset, torch.ones(2, 9, 6, 5), weight, bias)
    torch.testing.assert_close(out, F.conv2d(F.pad(x, (0, 2, 1, 1)), weight, bias), rtol=1e-5, atol=1e-5)


def test_matches_onnx_deformconv():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x, offset, mask, weight, bias = random_case(3)
    node = helper.make_node("DeformConv", ["X", "W", "offset", "B", "mask"], ["Y"], kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1, offset_group=1)
    feeds = {"X": x, "W": weight, "offset": offset, "B": bias, "mask": mask}
    graph = helper.make_graph([node], "dcn", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(t.shape))
                                              for n, t in feeds.items()],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3, 6, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # an onnxruntime without DeformConv(19)
        pytest.skip(f"this onnxruntime cannot run DeformConv: {e}")
    y = sess.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    torch.testing.assert_close(modulated_deform_conv2d(x, offset, mask, weight, bias), torch.from_numpy(y),
                               rtol=1e-5, atol=1e-5)


def test_module_starts_as_half_masked_conv_and_learns_offsets():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(4, 3)
    x = torch.randn(2, 4, 6, 5)
    # zero-initialised offset/mask conv: offsets 0, mask sigmoid(0) = 0.5
    torch.testing.assert_close(dcn(x), F.conv2d(x, dcn.weight * 0.5, dcn.bias, 1, 1), rtol=1e-5, atol=1e-5)
    dcn(x).square().sum().backward()
    assert dcn.conv_offset_mask.weight.grad.abs().sum() > 0
    assert torch.isfinite(dcn.conv_offset_mask.weight.grad).all()
