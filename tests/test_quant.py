"""Calibration data, INT8 QDQ graphs (TensorRT's explicit-quantization rules), FP16, sensitivity."""
import os

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from model_helpers import tiny_model  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from synth_data import tiny_synth  # noqa: E402

from edge_stad.engines.onnxruntime_backend import DISABLED_OPTIMIZERS, OnnxRuntimeBackend, create_session  # noqa: E402
from edge_stad.errors import DataError  # noqa: E402
from edge_stad.export.onnx_export import export_onnx, scaled_error  # noqa: E402
from edge_stad.quant.calibration import calibration_windows  # noqa: E402
from edge_stad.quant.int8 import cpu_float_nodes, encoder_feeds, head_feeds, quantize_int8  # noqa: E402
from edge_stad.quant.sensitivity import layer_errors  # noqa: E402

# ONNX operators the TensorRT 8.4/8.5 ONNX parser supports (onnx-tensorrt docs/operators.md),
# restricted to those an exporter could plausibly emit for these models.
TRT85_OPS = {
    "Add", "And", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "DequantizeLinear", "Div", "Equal", "Expand", "Flatten", "Floor",
    "Gather", "GatherElements", "Gemm", "GlobalAveragePool", "Greater", "GreaterOrEqual", "Identity", "Less",
    "LessOrEqual", "MatMul", "Max", "MaxPool", "Min", "Mul", "Not", "Or", "Pad", "Pow", "QuantizeLinear",
    "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Slice", "Split",
    "Sqrt", "Squeeze", "Sub", "TopK", "Transpose", "Unsqueeze", "Where",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp32")
    model = tiny_model("shufflenetv2")
    export_onnx(model, folder, decode=True)
    return model, folder


@pytest.fixture(scope="module")
def windows(tmp_path_factory, exported):
    return calibration_windows(tiny_synth(tmp_path_factory), exported[0].config, count=6)


def test_windows_from_an_act_dataset(windows, exported, tmp_path_factory):
    cfg = exported[0].config
    assert len(windows) == 6
    assert all(w.shape == (cfg["K"], cfg["clip_len"], 64, 64, 3) and w.dtype == np.uint8 for w in windows)
    again = calibration_windows(tiny_synth(tmp_path_factory), cfg, count=6)
    assert all((a == b).all() for a, b in zip(windows, again))          # deterministic
    held_out = calibration_windows(tiny_synth(tmp_path_factory), cfg, count=6, part="test")
    assert not any((a == b).all() for a in held_out for b in windows)


def test_windows_from_a_video_and_bad_sources(tmp_path, exported):
    cfg = exported[0].config
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25, (80, 60))
    for i in range(30):
        writer.write(np.full((60, 80, 3), i * 8, np.uint8))
    writer.release()
    got = calibration_windows(path, cfg, count=4)
    assert len(got) == 4 and got[0].shape == (2, 5, 64, 64, 3)
    assert calibration_windows(str(tmp_path), cfg, count=2)[0].shape == (2, 5, 64, 64, 3)  # a folder of videos
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no calibration data"):
        calibration_windows(str(empty), cfg)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 2, 5, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"uint8 \(N, 2, 5, 64, 64, 3\)"):
        calibration_windows(str(tmp_path / "wrong.npy"), cfg)
    with pytest.raises(DataError, match="no such"):
        calibration_windows(str(tmp_path / "missing.mp4"), cfg)


@pytest.fixture(scope="module")
def int8(tmp_path_factory, exported, windows):
    model, folder = exported
    out = tmp_path_factory.mktemp("int8")
    fp32 = OnnxRuntimeBackend(folder / "encoder.onnx", folder / "head.onnx", model.config)
    feeds = {"encoder": encoder_feeds(windows), "head": head_feeds(windows, fp32.encode)}
    for graph in ("encoder", "head"):
        quantize_int8(folder / f"{graph}.onnx", out / f"{graph}.onnx", feeds[graph],
                      ranges_path=out / f"{graph}.ranges.json")
    return out, feeds


def _producers(graph):
    return {o: n for n in graph.node for o in n.output}


def test_qdq_graphs_follow_tensorrt_explicit_quantization_rules(int8):
    folder, _ = int8
    for graph in ("encoder", "head"):
        proto = onnx.load(folder / f"{graph}.onnx")
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) <= 17
        assert {n.op_type for n in proto.graph.node} <= TRT85_OPS, graph
        inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        producers = _producers(proto.graph)
        weighted = [n for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm")]
        assert weighted
        for node in weighted:
            for name in node.input[:2]:   # data and weights; biases stay float
                assert producers[name].op_type == "DequantizeLinear", (graph, node.name, name)
        for node in proto.graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                zero = inits[node.input[2]]
                assert zero.dtype == np.int8 and not zero.any(), node.name   # symmetric int8
        # per-channel weights: the Conv weight scales are vectors
        scales = [inits[producers[n.input[1]].input[1]] for n in weighted if n.op_type == "Conv"]
        assert any(s.ndim == 1 and s.size > 1 for s in scales)


def test_cpu_flavour_runs_the_folded_graph_on_uint8_between_float_input_stages(int8, exported, tmp_path):
    _, feeds = int8
    model, _ = exported
    export_onnx(model, tmp_path, fold=True)
    fp32 = onnx.load(tmp_path / "encoder.onnx")
    float_nodes = set(cpu_float_nodes(fp32))
    # micro-motion on column phases; the motion stem reads the pooled motion image and crops its output
    assert {"/mm/phase_conv/Conv", "/backbone/conv1/conv1.0/Conv", "/backbone/conv1_mm/conv1_mm.0/conv/Conv",
            "/backbone/conv1_mm/conv1_mm.0/Slice", "/backbone/conv1_mm/conv1_mm.0/Slice_1"} <= float_nodes
    assert {"/backbone/maxpool/MaxPool", "/backbone/maxpool_mm/MaxPool"} <= float_nodes   # after float stems
    assert not [n for n in float_nodes if n.startswith("/backbone/features")]
    quantize_int8(tmp_path / "encoder.onnx", tmp_path / "cpu.onnx", feeds["encoder"], flavor="cpu")
    proto = onnx.load(tmp_path / "cpu.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    zeros = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert zeros and all(z.dtype == np.uint8 for z in zeros)
    producers = _producers(proto.graph)
    nodes = {n.name: n for n in proto.graph.node}
    for name in float_nodes:   # the input stages stay float: float weights, no dequantized inputs
        assert not [i for i in nodes[name].input if i in producers and producers[i].op_type == "DequantizeLinear"], name
    assert not [n for n in proto.graph.node if n.op_type == "ConvTranspose"]   # folded: no int8 kernel in ORT
    quantized = [n for n in proto.graph.node if n.op_type in ("Conv", "Concat", "Add", "Mul")
                 and n.name not in float_nodes]
    assert "/deconv_layer/up/Conv" in {n.name for n in quantized}
    assert len(quantized) > 30
    for node in quantized:   # everything else reads uint8 (Q/DQ pairs that ONNX Runtime fuses into QLinear ops)
        data = node.input[:1] if node.op_type == "Conv" else node.input
        assert all(producers[i].op_type == "DequantizeLinear" for i in data if i in producers), node.name
    # ONNX Runtime as the runtime configures it keeps the stems' max-pools float (its QDQ propagation
    # would move their QuantizeLinear up and run them on uint8)
    # (NCHWc off here only: it renames the pools on AVX2 hosts, whose 8-channel blocks divide the stem's 24)
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(tmp_path / "cpu.onnx"), options, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=list(DISABLED_OPTIMIZERS) + ["NchwcTransformer"])
    optimized = onnx.load(tmp_path / "optimized.onnx").graph
    pools = [n for n in optimized.node if n.name in ("/backbone/maxpool/MaxPool", "/backbone/maxpool_mm/MaxPool")]
    assert len(pools) == 2
    assert not [n for n in pools if _producers(optimized)[n.input[0]].op_type == "QuantizeLinear"]
    with pytest.raises(Exception, match="flavour"):
        quantize_int8(tmp_path / "encoder.onnx", tmp_path / "x.onnx", feeds["encoder"], flavor="gpu")


def test_int8_runs_in_onnxruntime(int8, exported, windows):
    # Random-weight AMMAs amplify any perturbation (quantization noise reaches 0 dB at the
    # output), so accuracy is measured on a trained model in benchmarks/; here: it runs.
    folder, _ = int8
    model, fp32_folder = exported
    fp32 = OnnxRuntimeBackend(fp32_folder / "encoder.onnx", fp32_folder / "head.onnx", model.config)
    q = OnnxRuntimeBackend(folder / "encoder.onnx", folder / "head.onnx", model.config)
    a, b = fp32.encode(windows[0]), q.encode(windows[0])
    assert all(x.shape == y.shape and np.isfinite(y).all() for x, y in zip(a, b)) and scaled_error(b, a) > 0
    rows = q.detect(b[0][None], b[1][None])
    assert rows.shape == (1, 64, 4 * 2 + 2) and np.isfinite(rows).all()


def test_int8_of_a_small_conv_net_is_accurate(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 8, 3, padding=1)).eval()
    x = torch.rand(1, 3, 16, 16)
    torch.onnx.export(net, (x,), str(tmp_path / "net.onnx"), input_names=["x"], opset_version=17, dynamo=False)
    feeds = [{"x": torch.rand(1, 3, 16, 16).numpy()} for _ in range(20)]
    quantize_int8(tmp_path / "net.onnx", tmp_path / "net8.onnx", feeds)
    test = {"x": torch.rand(1, 3, 16, 16).numpy()}
    ref = create_session(str(tmp_path / "net.onnx")).run(None, test)[0]
    # the quantization's own error: Q/DQ evaluated as written, not fused into the host's int8 kernels (on x86
    # CPUs without VNNI, ONNX Runtime's u8s8 kernels saturate int16 sums of the 3-channel stem: 7.6 dB there)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    got = onnxruntime.InferenceSession(str(tmp_path / "net8.onnx"), options,
                                       providers=["CPUExecutionProvider"]).run(None, test)[0]
    sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - got) ** 2).sum())
    assert 25 < sqnr < 60   # int8 noise: present, and small


def test_ranges_cache_requantizes_without_data(int8, exported, tmp_path):
    folder, feeds = int8
    _, fp32_folder = exported
    quantize_int8(fp32_folder / "head.onnx", tmp_path / "again.onnx", [], ranges_path=folder / "head.ranges.json")
    assert (tmp_path / "again.onnx").read_bytes() == (folder / "head.onnx").read_bytes()


def test_sensitivity_ranks_measured_layers(int8, exported):
    folder, feeds = int8
    _, fp32_folder = exported
    rows = layer_errors(fp32_folder / "encoder.onnx", folder / "encoder.onnx", feeds["encoder"][:2])
    assert len(rows) > 10
    assert [r.local_db for r in rows] == sorted(r.local_db for r in rows)
    assert all(np.isfinite(r.local_db) for r in rows[:5]) and {r.op_type for r in rows} & {"Conv", "Relu"}
    excluded = rows[0].node
    out = folder / "encoder.excluded.onnx"
    quantize_int8(fp32_folder / "encoder.onnx", out, [], exclude=[excluded], ranges_path=folder / "encoder.ranges.json")
    proto = onnx.load(out)
    node = next(n for n in proto.graph.node if n.name == excluded)
    producers = _producers(proto.graph)
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input[:1])


def test_fp16_graphs_keep_io_normalisation_and_micro_motion_in_fp32(exported, windows, tmp_path):
    model, folder = exported
    record = export_onnx(model, tmp_path, half=True, decode=True)
    assert record["precision"] == "fp16" and max(record["parity_scaled_error"].values()) < 3e-2
    # the trajectory branch runs at the top cells only: FP16 sums in another order than over the map
    assert record["parity_max_abs_error"]["decode"] < 1e-2
    half = onnx.load(tmp_path / "encoder.onnx")
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in half.graph.output)
    assert len([i for i in half.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]) > 50
    typed = onnx.shape_inference.infer_shapes(half)
    types = {v.name: v.type.tensor_type.elem_type for v in list(typed.graph.value_info) + list(typed.graph.input)}
    types.update({i.name: i.data_type for i in typed.graph.initializer})
    norm = [n for n in typed.graph.node if "/mm/" in n.name and n.op_type in ("Div", "Sub", "Mul", "ReduceSum",
                                                                              "Sqrt", "Conv")]
    assert len(norm) >= 8
    for node in norm:   # the micro-motion conv, difference and norm run in FP32
        assert all(types[i] != onnx.TensorProto.FLOAT16 for i in node.input if i in types), node.name
    ref = create_session(str(folder / "encoder.onnx")).run(None, {"frames": windows[0][:1]})
    got = create_session(str(tmp_path / "encoder.onnx")).run(None, {"frames": windows[0][:1]})
    assert 0 < scaled_error(got, ref) < 3e-2
    assert os.path.getsize(tmp_path / "encoder.onnx") < 0.6 * os.path.getsize(folder / "encoder.onnx")
