"""STMA-Lite engines: export parity, FP16 and gated INT8 builds, the engine backends, and the Runtime streaming
an engine or a checkpoint exactly as the offline path predicts."""
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from engine_helpers import quiet, stand_in_tensorrt, with_plans  # noqa: E402
from model_helpers import calibrate_bn  # noqa: E402
from stream_checks import assert_same_streams, assert_stream_equals_offline  # noqa: E402
from synth_data import tiny_synth  # noqa: E402

from edge_stad import Runtime  # noqa: E402
from edge_stad.backends import open_backend  # noqa: E402
from edge_stad.build.pipeline import BuildOptions, build_engine  # noqa: E402
from edge_stad.data.act import ActDataset  # noqa: E402
from edge_stad.engines.onnxruntime_backend import OnnxRuntimeSnippetBackend  # noqa: E402
from edge_stad.engines.snippet_backend import window_feeds  # noqa: E402
from edge_stad.errors import ConfigError, EngineError, FrameError  # noqa: E402
from edge_stad.eval.predict_snippets import predict_snippet_windows  # noqa: E402
from edge_stad.export.onnx_export import FP16_TOLERANCE, example_inputs, export_onnx  # noqa: E402
from edge_stad.model_config import graph_names  # noqa: E402
from edge_stad.models import create_model, save_checkpoint  # noqa: E402
from edge_stad.torch_backends.snippet import TorchSnippetBackend  # noqa: E402

K = 3
CONFIGS = {"3d": dict(backbone_3d="shufflenetv2", width_3d=0.25, clip_len=4),
           "no-3d": dict(backbone_3d=None, width_3d=None, clip_len=5)}


def tiny_lite(**config):
    torch.manual_seed(0)
    model = create_model("stma-lite", num_classes=8, input_size=64, K=K, head_conv=16, wh_head_conv=16,
                         action_channels=16, fused_channels=32, **config)
    return calibrate_bn(model, torch.randn(2, 3 * config["clip_len"], 64, 64))


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
    return tiny_lite(**CONFIGS[request.param])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ActDataset(tiny_synth(tmp_path_factory))


def _graphs(folder, config):
    return [folder / f"{g}.onnx" for g in graph_names(config)]


def test_graphs_reproduce_pytorch(model, tmp_path):
    record = export_onnx(model, tmp_path)
    graphs = ("encoder", "encoder3d", "head") if model.backbone_3d is not None else ("encoder", "head")
    assert graph_names(model.config) == graphs and tuple(record["outputs"]) == graphs
    assert record["outputs"]["encoder"] == ["feat", "wh", "act"] and record["outputs"]["head"][-1] == "cls"
    assert max(record["parity_scaled_error"].values()) <= 1e-4
    backend = OnnxRuntimeSnippetBackend(*_graphs(tmp_path, model.config), config=model.config)
    reference = TorchSnippetBackend(model)
    clip = example_inputs(model.config, seed=3)[0]
    mine, ref = window_feeds(backend, clip), window_feeds(reference, clip)
    inputs = ["feats", "whs", "acts"] + ["feat3d"] * (model.backbone_3d is not None)
    assert sorted(mine) == sorted(ref) == sorted(inputs)
    for key, value in ref.items():
        assert float(np.abs(value).max()) > 1e-2, key      # real activations (calibrated BN), not a collapsed net
        np.testing.assert_allclose(mine[key], value, rtol=1e-4, atol=1e-4 * float(np.abs(value).max()))
    for key, value in reference.head(**ref).items():
        np.testing.assert_allclose(backend.head(**ref)[key], value, rtol=1e-4, atol=1e-5)
    with pytest.raises(FrameError, match=r"uint8 \(N, 1, 64, 64, 3\)"):
        backend.encode(np.zeros((1, 32, 32, 3), np.uint8))


def test_fp16_graphs_keep_the_recognition_branch_in_fp32(tmp_path):
    # ResNet-18: a random ShuffleNetV2's depthwise stack alone drifts 3-5% in FP16 (AMMA's too), which says
    # nothing about the graphs
    record = export_onnx(tiny_lite(backbone="resnet18", **CONFIGS["3d"]), tmp_path, half=True)
    assert record["precision"] == "fp16" and max(record["parity_scaled_error"].values()) <= FP16_TOLERANCE
    proto = onnx.load(str(tmp_path / "encoder.onnx"))
    dtypes = {i.name: i.data_type for i in proto.graph.initializer}
    convs = [(n.name, dtypes.get(n.input[1])) for n in proto.graph.node if n.op_type == "Conv"]
    action = {d for name, d in convs if name.startswith("/down/")}   # the recognition branch's down-sampling
    rest = {d for name, d in convs if not name.startswith("/down/")}
    assert action == {onnx.TensorProto.FLOAT} and rest == {onnx.TensorProto.FLOAT16}, convs


@pytest.fixture(scope="module")
def int8_engine(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("stma_int8")
    opts = BuildOptions(precision="int8", backend="onnxruntime", calib_data=str(tiny_synth(tmp_path_factory)),
                        calib_clips=6, gate_windows=3, calibration_dir=str(root / "calibration"))
    manifest = build_engine(tiny_lite(**CONFIGS["3d"]), root / "engine", opts, labels=tuple(tiny.labels), log=quiet)
    return root / "engine", manifest


def test_int8_build_calibrates_every_graph_keeps_attention_float_and_streams(tiny, int8_engine):
    out, manifest = int8_engine
    assert manifest["name"] == "stma-lite_shufflenetv2_k3_int8" and sorted(manifest["graphs"]) == sorted(
        ["encoder", "encoder3d", "head"])
    report = json.loads((out / "int8_report.json").read_text())
    nodes = report["always_float"]["nodes"]
    assert list(nodes) == ["head"] and all("/action/sta/sc/" in n for n in nodes["head"]), nodes
    # random weights detect nothing: the gate says so instead of passing
    assert report["passed"] is None and report["verdict"].startswith("not applicable")
    assert report["attempts"][0]["agreement"]["windows"] == 3
    for graph in ("encoder", "encoder3d", "head"):
        proto = onnx.load(str(out / f"{graph}.onnx"))
        assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node), graph
    io = np.load(out / "reference_io.npz")
    assert {"encoder.frames", "encoder.act", "encoder3d.clip", "encoder3d.feat3d", "head.acts", "head.cls"} <= set(io)

    backend = open_backend(str(out))
    assert isinstance(backend, OnnxRuntimeSnippetBackend) and backend.labels == tuple(tiny.labels)
    np.testing.assert_allclose(backend.run_graph("head", {k[5:]: io[k] for k in io if k.startswith("head.") and
                                                          k[5:] in ("feats", "whs", "acts", "feat3d")})["cls"],
                               io["head.cls"], rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning, match="not applicable"):
        runtime = Runtime(str(out), min_tube_score=0.0, frame_detections=True)
    check_stream_equals_offline(runtime, tiny, tiny.test_videos[0])


def test_tensorrt_snippet_backend_plumbing_streams_like_onnxruntime(int8_engine, tmp_path, monkeypatch):
    """The TensorRT snippet backend on the stand-in TensorRT of test_tensorrt_backend (plans that are the engine's
    ONNX files, run by ONNX Runtime on host memory): the same outputs as ONNX Runtime, and the same stream."""
    from edge_stad.engines.tensorrt_backend import TensorRTSnippetBackend

    cudart = stand_in_tensorrt(monkeypatch)
    folder = with_plans(int8_engine[0], tmp_path / "plans")
    reference = open_backend(folder, "onnxruntime")
    backend = open_backend(folder)                         # auto: plans, and TensorRT imports
    assert isinstance(backend, TensorRTSnippetBackend) and backend.labels == reference.labels
    clip = example_inputs(backend.config, seed=3)[0]
    feeds = window_feeds(backend, clip)
    for key, value in window_feeds(reference, clip).items():
        np.testing.assert_array_equal(feeds[key], value, err_msg=key)
    np.testing.assert_array_equal(backend.detect(**feeds), reference.detect(**feeds))
    with pytest.raises(FrameError, match=r"clips must be uint8 \(N, 4, 64, 64, 3\)"):
        backend.encode_3d(clip[None].astype(np.float32))
    assert_same_streams(backend, reference, np.random.default_rng(0).integers(0, 256, (9, 48, 80, 3), dtype=np.uint8),
                        refresh=2)
    backend.close()
    assert not cudart.memory


def check_stream_equals_offline(runtime, dataset, video, refresh=1):
    """Stream ``video`` through ``runtime``; its windows, tubes and per-frame detections are the offline path's."""
    n = dataset.gt.nframes[video]
    results = [r for f in range(1, n + 1) for r in runtime.push(dataset.read_frame(video, f), f / 25)]
    assert runtime.latency_frames == (K - 1, K - 1)
    assert [r.frame for r in results] == list(range(1, n - K + 2))   # final K - 1 frames after
    results += runtime.flush()
    assert [r.frame for r in results] == list(range(1, n + 1))
    offline = predict_snippet_windows(runtime.backend, dataset, video, refresh)
    assert len(offline) == n - K + 1 and runtime.stats()["clips_encoded"] == n   # each frame encoded once
    assert any(t for t in assert_stream_equals_offline(runtime, results, offline, K, 1).values())


@pytest.mark.parametrize("config,refresh", [("3d", 2), ("no-3d", 1)])
def test_runtime_streams_a_checkpoint_exactly(tiny, tmp_path, config, refresh):
    save_checkpoint(tmp_path / "stma.pt", tiny_lite(**CONFIGS[config]), labels=list(tiny.labels))
    runtime = Runtime(str(tmp_path / "stma.pt"), min_tube_score=0.0, frame_detections=True, refresh=refresh)
    assert isinstance(runtime.backend, TorchSnippetBackend)
    check_stream_equals_offline(runtime, tiny, tiny.test_videos[0], refresh)


def test_the_runtime_refuses_what_it_cannot_stream(tmp_path):
    centred = create_model("stma-lite", num_classes=8, input_size=64, K=K, clip_len=6, key_frame="center",
                           backbone_3d=None, head_conv=16, wh_head_conv=16, action_channels=16, fused_channels=32)
    with pytest.raises(ConfigError, match=r"reads 1 frame\(s\) past its snippet \(key_frame='center'\)"):
        Runtime(TorchSnippetBackend(centred.eval()))
    backend = TorchSnippetBackend(tiny_lite(**CONFIGS["no-3d"]))
    with pytest.raises(ConfigError, match="pipeline=True needs a tubelet"):
        Runtime(backend, pipeline=True)
    with pytest.raises(ConfigError, match="refresh"):
        Runtime(backend, refresh=0)
    config = dict(backend.config, K=6)   # a manifest whose snippet does not fit its clip
    from edge_stad.model_config import check_model_config

    with pytest.raises(EngineError, match=r"'model.K' is 6; expected an int in \[1, 5\]"):
        check_model_config(config, EngineError, "manifest.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Runtime(backend)   # a checkpoint's backend: nothing to warn about
