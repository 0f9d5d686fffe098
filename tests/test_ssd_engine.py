"""Flow-fusion engines: export parity per motion cue (learned flow, DIS flow, micro-motion), FP16 and gated INT8
builds, the engine backends (ONNX Runtime, the TensorRT stand-in, GridSample's TensorRT floor), and the Runtime
streaming an engine or a checkpoint exactly as the offline path predicts."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from engine_helpers import quiet, stand_in_tensorrt, with_plans  # noqa: E402
from stream_checks import assert_same_streams, assert_stream_equals_offline  # noqa: E402
from synth_data import tiny_synth  # noqa: E402

from edge_stad import Runtime  # noqa: E402
from edge_stad.backends import open_backend  # noqa: E402
from edge_stad.build.pipeline import BuildOptions, build_engine  # noqa: E402
from edge_stad.data.act import ActDataset  # noqa: E402
from edge_stad.engines.onnxruntime_backend import OnnxRuntimeSsdBackend  # noqa: E402
from edge_stad.errors import ConfigError, FrameError  # noqa: E402
from edge_stad.eval.predict_ssd import predict_ssd_detections  # noqa: E402
from edge_stad.export.onnx_export import FP16_TOLERANCE, SSD_FP32_TOLERANCE, export_onnx  # noqa: E402
from edge_stad.export.ssd_graphs import example_frames  # noqa: E402
from edge_stad.model_config import graph_names  # noqa: E402
from edge_stad.models import create_model, save_checkpoint  # noqa: E402
from edge_stad.torch_backends.ssd import TorchSSDBackend  # noqa: E402

MOTIONS = ("flow", "dis", "micro-motion")


def tiny_ffl(motion="flow", num_classes=8, **options):
    """A flow-fusion-lite at 64x64 with BN statistics from one random batch (real activations, not a collapsed net)."""
    torch.manual_seed(0)
    model = create_model("flow-fusion-lite", num_classes=num_classes, input_size=64, backbone="shufflenetv2",
                         motion=motion, **options)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    flows = torch.randn(8, len(model.pairs), 2, 64, 64) if motion == "dis" else None
    with torch.no_grad():
        model(torch.randn(8, 3 * model.frames, 64, 64), flows)
    return model.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ActDataset(tiny_synth(tmp_path_factory))


@pytest.mark.parametrize("motion", MOTIONS)
def test_graphs_reproduce_pytorch(motion, tmp_path):
    model = tiny_ffl(motion)
    record = export_onnx(model, tmp_path)
    graphs = ("flow", "detect") if motion == "flow" else ("detect",)
    assert graph_names(model.config) == graphs and tuple(record["outputs"]) == graphs
    assert max(record["parity_scaled_error"].values()) <= SSD_FP32_TOLERANCE
    assert record["parity_scaled_error"].get("flow", 0) <= 1e-5
    assert ("tensorrt_needs" in record) == (motion == "flow")
    backend = OnnxRuntimeSsdBackend(*(tmp_path / f"{g}.onnx" for g in graphs), config=model.config)
    reference = TorchSSDBackend(model)
    frames = example_frames(model.config, seed=3)
    loc, conf = reference.detect(frames)
    assert float(np.abs(conf).max()) > 1e-2                  # real activations
    for got, want in zip(backend.detect(frames), (loc, conf)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=SSD_FP32_TOLERANCE * float(np.abs(want).max()))
    if motion != "micro-motion":
        flows = np.stack([reference.pair_flow(frames[:, i], frames[:, i + 1]) for i in range(model.frames - 1)], 1)
        np.testing.assert_array_equal(reference.detect(frames, flows)[1], conf)   # given flows = its own
        with pytest.raises(FrameError, match=r"frame pairs must be uint8 \(N, 2, 64, 64, 3\)"):
            backend.pair_flow(frames[:, 0, :32], frames[:, 1, :32])
    with pytest.raises(FrameError, match=rf"frames must be uint8 \(N, {model.frames}, 64, 64, 3\)"):
        backend.detect(frames[:, :1])


def test_dis_flow_is_the_training_caches(tmp_path):
    """A dis engine's host flow is the flow cache's (clipped, quantised DIS at the input size), zero for a repeated
    frame, as the training samples give it."""
    from edge_stad.engines.ssd_backend import dis_flow
    from edge_stad.optical_flow import compute_flow, dequantize_flow, quantize_flow

    frames = example_frames({"input_size": [64, 64], "frames": 2}, batch=1, seed=1)[0]
    a, b = np.roll(frames[0], 3, axis=1), frames[0]
    got = dis_flow(a[None], b[None])[0]
    want = dequantize_flow(quantize_flow(compute_flow(a, b, "dis", "medium"))).transpose(2, 0, 1)
    np.testing.assert_array_equal(got, want)
    assert np.abs(got).max() > 1 and not dis_flow(b[None], b[None]).any()


def test_fp16_keeps_the_flow_network_in_fp32(tmp_path):
    # freshly initialised weights: with BN statistics from random input (tiny_ffl) the SSDLite stack is so
    # ill-conditioned that PyTorch's own FP32 differs from float64 by 1.8e-4 (scaled), which FP16 turns into 20-50%
    torch.manual_seed(0)
    model = create_model("flow-fusion-lite", num_classes=8, input_size=64, backbone="shufflenetv2").eval()
    record = export_onnx(model, tmp_path, half=True)
    assert record["precision"] == "fp16" and record["flow_precision"] == "fp32"
    assert max(record["parity_scaled_error"].values()) <= FP16_TOLERANCE

    def conv_dtypes(graph):
        proto = onnx.load(str(tmp_path / f"{graph}.onnx"))
        dtypes = {i.name: i.data_type for i in proto.graph.initializer}
        return {n.name.split("/")[1]: dtypes.get(n.input[1]) for n in proto.graph.node if n.op_type == "Conv"}

    assert set(conv_dtypes("flow").values()) == {onnx.TensorProto.FLOAT}
    detect = conv_dtypes("detect")
    assert detect.pop("to_image") == onnx.TensorProto.FLOAT and set(detect.values()) == {onnx.TensorProto.FLOAT16}


@pytest.fixture(scope="module")
def int8_engine(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("ssd_int8")
    opts = BuildOptions(precision="int8", backend="onnxruntime", calib_data=str(tiny_synth(tmp_path_factory)),
                        calib_clips=6, gate_windows=3, calibration_dir=str(root / "calibration"))
    model = tiny_ffl("flow", num_classes=len(tiny.labels))
    return root / "engine", build_engine(model, root / "engine", opts, labels=tuple(tiny.labels), log=quiet)


def check_stream_equals_offline(runtime, dataset, video):
    """Stream ``video`` through ``runtime``; its windows, tubes and per-frame detections are the offline path's."""
    n, lookahead = dataset.gt.nframes[video], runtime.backend.config["lookahead"]
    results = [r for f in range(1, n + 1) for r in runtime.push(dataset.read_frame(video, f), f / 25)]
    assert runtime.latency_frames == (lookahead, lookahead)
    assert [r.frame for r in results] == list(range(1, n - lookahead + 1))
    results += runtime.flush()
    assert [r.frame for r in results] == list(range(1, n + 1))
    offline = predict_ssd_detections(runtime.backend, dataset, [video], linker="online")
    flows = runtime.backend.config["motion"] != "micro-motion"
    assert runtime.stats()["clips_encoded"] == n                   # one detection per frame
    if flows:   # each new pair's flow once: the stream's pairs, and the first frame repeated
        assert runtime.stats()["seconds"]["encoder"] > 0
    tubes = assert_stream_equals_offline(runtime, results, offline.windows[video], 1, 1, offline.frames[video])
    assert any(t for t in tubes.values())


def test_int8_build_quantizes_the_detector_only_and_streams(tiny, int8_engine):
    out, manifest = int8_engine
    assert manifest["name"] == "flow-fusion-lite_shufflenetv2_flow_m-concat_int8"
    assert sorted(manifest["graphs"]) == ["detect", "flow"]
    assert manifest["export"]["tensorrt_needs"]["version"] == "8.5"
    report = json.loads((out / "int8_report.json").read_text())
    assert report["passed"] is None and report["verdict"].startswith("not applicable")   # random weights
    assert report["attempts"][0]["agreement"]["windows"] == 3
    quantized = {g: any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out / f"{g}.onnx")).graph.node)
                 for g in ("flow", "detect")}
    assert quantized == {"flow": False, "detect": True}
    io = np.load(out / "reference_io.npz")
    assert {"flow.frames", "flow.flow", "detect.frames", "detect.flows", "detect.loc", "detect.conf"} == set(io)
    backend = open_backend(str(out))
    assert isinstance(backend, OnnxRuntimeSsdBackend) and backend.labels == tuple(tiny.labels)
    np.testing.assert_array_equal(backend.run_graph("detect", {"frames": io["detect.frames"],
                                                               "flows": io["detect.flows"]})["conf"], io["detect.conf"])
    with pytest.warns(UserWarning, match="not applicable"):
        runtime = Runtime(str(out), min_tube_score=0.0, frame_detections=True)
    check_stream_equals_offline(runtime, tiny, tiny.test_videos[0])


@pytest.mark.parametrize("motion,lookahead", [("dis", 0), ("micro-motion", 0), ("flow", 1)])
def test_runtime_streams_a_checkpoint_exactly(tiny, tmp_path, motion, lookahead):
    save_checkpoint(tmp_path / "ffl.pt", tiny_ffl(motion, len(tiny.labels), lookahead=lookahead),
                    labels=list(tiny.labels))
    runtime = Runtime(str(tmp_path / "ffl.pt"), min_tube_score=0.0, frame_detections=True)
    assert isinstance(runtime.backend, TorchSSDBackend)
    check_stream_equals_offline(runtime, tiny, tiny.test_videos[0])


def test_tensorrt_ssd_backend_plumbing_streams_like_onnxruntime(int8_engine, tmp_path, monkeypatch):
    """The TensorRT SSD backend on the stand-in TensorRT of test_tensorrt_backend (plans that are the engine's ONNX
    files, run by ONNX Runtime on host memory): the same outputs as ONNX Runtime, and the same stream."""
    from edge_stad.engines.tensorrt_backend import TensorRTSsdBackend

    cudart = stand_in_tensorrt(monkeypatch)
    folder = with_plans(int8_engine[0], tmp_path / "plans")
    reference = open_backend(folder, "onnxruntime")
    backend = open_backend(folder)                         # auto: plans, and TensorRT imports
    assert isinstance(backend, TensorRTSsdBackend) and backend.labels == reference.labels
    frames = example_frames(backend.config, seed=3)
    np.testing.assert_array_equal(backend.pair_flow(frames[:, 0], frames[:, 1]),
                                  reference.pair_flow(frames[:, 0], frames[:, 1]))
    for got, want in zip(backend.detect(frames), reference.detect(frames)):
        np.testing.assert_array_equal(got, want)
    assert_same_streams(backend, reference, np.random.default_rng(0).integers(0, 256, (7, 48, 80, 3), dtype=np.uint8))
    backend.close()
    assert not cudart.memory


def test_tensorrt_older_than_8_5_refuses_the_flow_graphs_plan(int8_engine, tmp_path, monkeypatch):
    """GridSample (the flow network's warping) parses from TensorRT 8.5: an older one gets no plan, and says why."""
    from types import SimpleNamespace

    from edge_stad.build import tensorrt_plans
    from edge_stad.engines import tensorrt_runtime

    flow, detect = (int8_engine[0] / f"{g}.onnx" for g in ("flow", "detect"))
    assert tensorrt_plans.unparsable_operators(flow, "8.4.1") == {"GridSample": (8, 5)}
    assert tensorrt_plans.unparsable_operators(flow, "8.5.2.2") == {}
    assert tensorrt_plans.unparsable_operators(flow, "10.3.0") == {}
    assert tensorrt_plans.unparsable_operators(detect, "8.2.1") == {}
    monkeypatch.setattr(tensorrt_runtime, "tensorrt", lambda: SimpleNamespace(__version__="8.4.1"))
    with pytest.raises(ConfigError, match=r"TensorRT 8\.4\.1 cannot parse GridSample \(TensorRT >= 8\.5\) in flow"):
        tensorrt_plans.build_plan(flow, tmp_path / "flow.plan")
    assert not (tmp_path / "flow.plan").exists()


def test_tensorrt_plans_keep_the_flow_network_fp32(int8_engine, monkeypatch):
    """An INT8 engine's TensorRT plans: the detector at INT8, the flow graph FP32 (no FP16/INT8 builder flags)."""
    from edge_stad.build import pipeline, tensorrt_plans

    asked = {}

    def build_plan(onnx_path, plan_path, precision, *args, **kwargs):
        asked[os.path.basename(onnx_path)] = precision
        return {}

    monkeypatch.setattr(tensorrt_plans, "build_plan", build_plan)
    monkeypatch.setattr(tensorrt_plans, "verify_plans", lambda folder, plans: {})
    out, manifest = int8_engine
    plans, _ = pipeline._plans(str(out), pipeline.model_kind(manifest["model"]), manifest["graphs"], {}, None, None,
                               None, BuildOptions(precision="int8"), quiet)
    assert asked == {"flow.onnx": "fp32", "detect.onnx": "int8"} and plans == {"flow": "flow.plan",
                                                                              "detect": "detect.plan"}


def test_the_paper_model_waits_for_its_lookahead_frame(tiny, tmp_path):
    """flow-fusion (the paper's) reads frame k+1 for key frame k: a result comes one frame later, the last one at
    flush (its detection repeats the last frame)."""
    backend = TorchSSDBackend(tiny_ffl("micro-motion", len(tiny.labels), lookahead=1))
    runtime = Runtime(backend)
    frames = [tiny.read_frame(tiny.test_videos[0], f) for f in (1, 2, 3)]
    assert runtime.push(frames[0]) == [] and [r.frame for r in runtime.push(frames[1])] == [1]
    assert [r.frame for r in runtime.push(frames[2])] == [2] and [r.frame for r in runtime.flush()] == [3]


def test_the_schema_names_the_graphs_and_refuses_an_unknown_motion():
    from edge_stad.errors import EngineError
    from edge_stad.model_config import check_model_config, engine_kind

    configs = {m: tiny_ffl(m).config for m in MOTIONS}
    assert {m: graph_names(c) for m, c in configs.items()} == {"flow": ("flow", "detect"), "dis": ("detect",),
                                                               "micro-motion": ("detect",)}
    assert {engine_kind(c) for c in configs.values()} == {"ssd"}
    with pytest.raises(EngineError, match=r"'model.motion' is 'farneback'; expected 'flow' or 'micro-motion' or 'dis'"):
        check_model_config(dict(configs["dis"], motion="farneback"), EngineError, "manifest.json")


def test_the_paper_model_exports_and_streams(tmp_path):
    """flow-fusion as published (PWC-Net at 320, VGG16-RFB at 300, look-ahead 1): both graphs reproduce PyTorch and
    its engine streams, each result one frame late."""
    torch.manual_seed(0)
    model = create_model("flow-fusion", num_classes=3).eval()
    record = export_onnx(model, tmp_path)
    assert tuple(record["outputs"]) == ("flow", "detect") and record["inputs"]["flow"]["frames"] == [1, 2, 300, 300, 3]
    assert max(record["parity_scaled_error"].values()) <= SSD_FP32_TOLERANCE
    backend = OnnxRuntimeSsdBackend(tmp_path / "flow.onnx", tmp_path / "detect.onnx", config=model.config)
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 80, 3), dtype=np.uint8)
    runtime = Runtime(backend, frame_detections=True)
    assert runtime.latency_frames == (1, 1) and runtime.push(frames[0]) == []
    results = runtime.push(frames[1]) + runtime.push(frames[2]) + runtime.flush()
    assert [r.frame for r in results] == [1, 2, 3] and runtime.stats()["clips_encoded"] == 3
    # a gated INT8 build from windows given in Python (no test split: the gate compares outputs only)
    windows = [example_frames(model.config, batch=1, seed=s) for s in (1, 2)]
    manifest = build_engine(model, tmp_path / "int8", BuildOptions(precision="int8", backend="onnxruntime",
                                                                   calibration_dir=str(tmp_path / "calibration")),
                            log=quiet, calibration=windows)
    assert manifest["calibration"]["attempts"][0]["agreement"]["windows"] == 2
    assert isinstance(open_backend(str(tmp_path / "int8")), OnnxRuntimeSsdBackend)
