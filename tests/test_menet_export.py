"""MENet / MENet-Lite deployment: encoder3d + detector ONNX, the ONNX Runtime frame backend, the INT8 build."""
import argparse
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from synth_data import tiny_synth  # noqa: E402

from edge_stad import cli  # noqa: E402
from edge_stad.backends import open_backend  # noqa: E402
from edge_stad.commands import build as build_command  # noqa: E402
from edge_stad.data.act import ActDataset  # noqa: E402
from edge_stad.engines.onnxruntime_backend import OnnxRuntimeFrameBackend  # noqa: E402
from edge_stad.errors import ConfigError, EngineError, FrameError  # noqa: E402
from edge_stad.eval.predict_frames import predict_frame_rows  # noqa: E402
from edge_stad.export.onnx_export import example_inputs, export_onnx, scaled_error  # noqa: E402
from edge_stad.models import create_model, save_checkpoint  # noqa: E402
from edge_stad.preprocess import normalize_clip  # noqa: E402
from edge_stad.torch_backends.streaming import TorchFrameBackend  # noqa: E402

SIZE, T, CLASSES = 64, 4, 3


def tiny_menet(seed=0):
    """MENet-Lite at 64x64, 4 frames, SRM on 4, with the channel attention switched on (gamma 0 makes it
    the identity) and BN statistics from 4 clips of frames. Those leave 3D channels with variances near
    1e-5, BN gains of 50-200x that no trained model has (a smoke-trained one: 1.2x) and that amplify
    FP16 rounding 100-fold; the variance floor caps the gains at 10."""
    torch.manual_seed(seed)
    model = create_model("menet-lite", num_classes=CLASSES, input_size=SIZE, clip_len=T, srm_frames=T)
    clips = example_inputs(model.config, batch=4, seed=seed)
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(np.stack([normalize_clip(list(c)) for c in clips])))
        model.cfam.sc.gamma.fill_(0.5)
        for m in norms:
            m.running_var.clamp_(min=1e-2)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return tiny_menet()


@pytest.fixture(scope="module")
def fp32_graphs(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("menet_fp32")
    return folder, export_onnx(model, folder, dynamic_batch=True)


def test_fp32_graphs_match_pytorch(fp32_graphs):
    folder, record = fp32_graphs
    assert record["opset"] == 17 and max(record["parity_scaled_error"].values()) < 1e-4
    assert record["inputs"]["encoder3d"]["clip"] == ["batch", T, SIZE, SIZE, 3]
    assert record["inputs"]["detector"]["frames"] == ["batch", T, SIZE, SIZE, 3]
    for graph in ("encoder3d", "detector"):
        proto = onnx.load(folder / f"{graph}.onnx")
        assert proto.opset_import[0].version == 17
        assert not [n.op_type for n in proto.graph.node if n.op_type in ("Identity", "Constant")]


def _elem_types(proto):
    return {v.name: v.type.tensor_type.elem_type for v in list(proto.graph.value_info) + list(proto.graph.output)}


def test_fp16_graphs_keep_io_srm_and_attention_in_fp32(model, tmp_path):
    record = export_onnx(model, tmp_path, half=True)
    assert record["precision"] == "fp16" and max(record["parity_scaled_error"].values()) < 3e-2
    proto = onnx.load(tmp_path / "detector.onnx")
    types = _elem_types(proto)
    fp32 = onnx.TensorProto.FLOAT
    attention = [n for n in proto.graph.node if n.name.startswith("/cfam/sc/") and n.op_type in ("MatMul", "Softmax")]
    assert len(attention) == 3 and all(types[n.output[0]] == fp32 for n in attention)
    assert all(types[n.output[0]] == fp32 for n in proto.graph.node if n.op_type == "Sqrt")   # the SRM's norms
    assert any(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in proto.graph.node if n.op_type == "Conv")
    assert [o.type.tensor_type.elem_type for o in proto.graph.output] == [fp32]


def test_onnxruntime_frame_backend_reproduces_pytorch(model, fp32_graphs, tmp_path_factory):
    folder, _ = fp32_graphs
    ort = OnnxRuntimeFrameBackend(folder / "encoder3d.onnx", folder / "detector.onnx", model.config)
    reference = TorchFrameBackend(model)
    clips = example_inputs(model.config, batch=3, seed=5)
    feat = ort.encode_3d(clips)
    assert scaled_error([feat], [reference.encode_3d(clips)]) < 1e-4
    assert scaled_error([ort.detect(clips[:, -T:], feat)], [reference.detect(clips[:, -T:], feat)]) < 1e-4
    dataset = ActDataset(tiny_synth(tmp_path_factory))   # frame by frame over a video, as evaluation runs
    video = min(dataset.test_videos, key=dataset.nframes)
    got, expected = (predict_frame_rows(b, dataset, video, refresh=4) for b in (ort, reference))
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)   # frame, label, score, pixel box


@pytest.fixture(scope="module")
def int8_engine(model, tmp_path_factory):
    """An INT8 engine built by the CLI from a MENet checkpoint, calibrated and gated on the tiny synthetic set."""
    data = tiny_synth(tmp_path_factory)
    root = tmp_path_factory.mktemp("menet_int8")
    save_checkpoint(root / "menet.pt", model, labels=list(ActDataset(data).labels)[:CLASSES])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert cli.main(["build", "--checkpoint", "menet.pt", "--int8", "--calib-data", str(data), "--calib-clips",
                         "4", "--max-map-drop", "100", "--min-fp32-map", "0", "--backend", "onnxruntime", "--out",
                         "engine"]) == 0
    return root


def test_int8_build_writes_engine_report_and_opens(int8_engine):
    root = int8_engine
    manifest = json.loads((root / "engine" / "manifest.json").read_text())
    assert manifest["name"] == f"menet-lite_shufflenetv2_t{T}_int8" and manifest["precision"] == "int8"
    assert manifest["graphs"] == {"encoder3d": "encoder3d.onnx", "detector": "detector.onnx"}
    report = json.loads((root / "calibration" / "engine" / "report.json").read_text())
    assert report["passed"] and report["calibration"]["windows"] == 4
    attempt = report["attempts"][0]
    assert set(attempt["agreement"]) >= {"box_agreement", "mean_iou", "score_abs_diff", "top_box_iou",
                                         "region_max_abs_diff"}
    assert "frame_mAP_int8" in attempt and "frame_mAP_fp32" in report
    float_nodes = report["always_float"]["nodes"]["detector"]
    assert {"/cfam/sc/MatMul", "/cfam/sc/MatMul_1", "/cfam/sc/Softmax"} <= set(float_nodes)
    assert manifest["calibration"]["always_float"] == report["always_float"]
    detector = onnx.load(root / "engine" / "detector.onnx")
    dequantized = {o for n in detector.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert dequantized, "the detector was not quantized"
    attention = [n for n in detector.graph.node if n.name in float_nodes]
    assert attention and not any(i in dequantized for n in attention for i in n.input)

    backend = open_backend(root / "engine")
    assert isinstance(backend, OnnxRuntimeFrameBackend) and backend.labels == tuple(manifest["labels"])
    ref = np.load(root / "engine" / "reference_io.npz")
    np.testing.assert_array_equal(backend.encode_3d(ref["encoder3d.clip"]), ref["encoder3d.feat3d"])
    region = backend.detect(ref["detector.frames"], ref["detector.feat3d"])
    np.testing.assert_array_equal(region, ref["detector.region"])
    assert isinstance(open_backend(root / "menet.pt"), TorchFrameBackend)


def test_mismatched_manifest_and_bad_inputs_are_clear_errors(int8_engine, tmp_path):
    engine = tmp_path / "engine"
    shutil.copytree(int8_engine / "engine", engine)
    backend = open_backend(engine)
    with pytest.raises(FrameError, match=rf"clips must be uint8 \(N, {T}, {SIZE}, {SIZE}, 3\)"):
        backend.encode_3d(np.zeros((1, T, SIZE, SIZE, 3), np.float32))
    with pytest.raises(FrameError, match="frames must be uint8"):
        backend.detect(np.zeros((1, 2, SIZE, SIZE, 3), np.uint8), np.zeros((1, 2048, 2, 2), np.float32))
    with pytest.raises(EngineError, match="has no TensorRT plans; build them on this device"):
        open_backend(engine, "tensorrt")
    manifest = json.loads((engine / "manifest.json").read_text())
    manifest["model"]["clip_len"] = 8
    (engine / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="graph and manifest describe different models"):
        open_backend(engine)
    manifest["graphs"] = {"encoder": "encoder3d.onnx", "head": "detector.onnx"}
    (engine / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="lists no encoder3d, detector graph"):
        open_backend(engine)


@pytest.mark.parametrize("engine_class", ["NamedEngine", "BindingEngine"])
def test_tensorrt_frame_backend_plumbing_streams_like_onnxruntime(int8_engine, tmp_path, monkeypatch, engine_class):
    """The TensorRT frame backend's I/O on the stand-in TensorRT of test_tensorrt_backend (plans that are the
    engine's ONNX files, run by ONNX Runtime on host memory): the same regions as ONNX Runtime, and the same
    Runtime stream."""
    import test_tensorrt_backend as trt_stub

    from edge_stad.engines import tensorrt_backend, tensorrt_runtime
    from edge_stad.engines.tensorrt_backend import TensorRTFrameBackend
    from edge_stad.runtime.stream import Runtime

    cudart, engines = trt_stub.FakeCudart(), []
    monkeypatch.setattr(tensorrt_runtime, "tensorrt",
                        lambda: trt_stub.fake_tensorrt(getattr(trt_stub, engine_class), engines))
    monkeypatch.setattr(tensorrt_backend, "cudart", lambda: cudart)
    folder = trt_stub.with_plans(int8_engine / "engine", tmp_path / "plans")
    reference = open_backend(folder, "onnxruntime")
    backend = open_backend(folder)                         # auto: plans, and TensorRT imports
    assert isinstance(backend, TensorRTFrameBackend) and backend.labels == reference.labels
    clips = example_inputs(backend.config, batch=2, seed=3)
    feat = backend.encode_3d(clips)
    assert engines[0].runs == 2                            # the CLI builds a static batch of 1: one run per clip
    np.testing.assert_array_equal(feat, reference.encode_3d(clips))
    region = backend.detect(clips[:, -T:], feat)
    np.testing.assert_array_equal(region, reference.detect(clips[:, -T:], feat))
    with pytest.raises(FrameError, match=rf"clips must be uint8 \(N, {T}, {SIZE}, {SIZE}, 3\)"):
        backend.encode_3d(clips.astype(np.float32))

    frames = np.random.default_rng(0).integers(0, 256, (9, 48, 80, 3), dtype=np.uint8)
    streams = []
    for opened in (backend, reference):
        runtime = Runtime(opened, frame_detections=True, refresh=2, min_tube_score=0.0)
        results = [r for f in frames for r in runtime.push(f)] + runtime.flush()
        streams.append([(r.frame, r.detections) for r in results])
    assert [f for f, _ in streams[0]] == list(range(1, len(frames) + 1))
    for (_, got), (_, want) in zip(*streams):
        np.testing.assert_array_equal(got, want)
    backend.close()
    assert not cudart.memory


def _tensorrt_runs_here():
    from engine_helpers import cuda_python_available

    from edge_stad.engines import tensorrt_runtime

    return tensorrt_runtime.available() and cuda_python_available()


@pytest.mark.skipif(not _tensorrt_runs_here(), reason="TensorRT and cuda-python are not both importable here")
def test_tensorrt_fp16_frame_plans_match_onnxruntime(model, fp32_graphs, tmp_path):
    from edge_stad.build.pipeline import BuildOptions, build_engine
    from edge_stad.engines import tensorrt_runtime
    from edge_stad.engines.tensorrt_backend import TensorRTFrameBackend

    manifest = build_engine(model, tmp_path / "e", BuildOptions(backend="tensorrt", precision="fp16"),
                            log=lambda _: None)
    assert manifest["plans"] == {"encoder3d": "encoder3d.plan", "detector": "detector.plan"}
    if tensorrt_runtime.major_version(tensorrt_runtime.tensorrt()) < 11:
        assert manifest["tensorrt"]["fp32_layers"] > 0            # the detector's channel attention
    folder, _ = fp32_graphs
    reference = OnnxRuntimeFrameBackend(folder / "encoder3d.onnx", folder / "detector.onnx", model.config)
    clips = example_inputs(model.config, batch=2, seed=7)
    with open_backend(tmp_path / "e") as backend:
        assert isinstance(backend, TensorRTFrameBackend)
        feat = backend.encode_3d(clips)
        assert scaled_error([feat], [reference.encode_3d(clips)]) < 3e-2
        region = backend.detect(clips[:, -T:], feat)
        assert scaled_error([region], [reference.detect(clips[:, -T:], feat)]) < 3e-2


def test_cli_model_choice(int8_engine, capsys):
    parser = argparse.ArgumentParser()
    build_command.add_arguments(parser)
    args = parser.parse_args(["--model", "menet-lite", "--random-weights", "--input-size", "64"])
    model, _ = build_command.load_model(args)
    assert model.config["name"] == "menet-lite" and model.config["input_size"] == [64, 64]
    with pytest.raises(ConfigError, match="--K describe AMMA and STMA models, not menet-lite"):
        build_command.load_model(parser.parse_args(["--model", "menet-lite", "--random-weights", "--K", "3"]))
    assert cli.main(["build", "--checkpoint", str(int8_engine / "menet.pt"), "--model", "amma"]) == 1
    assert "holds a menet-lite model, not amma" in capsys.readouterr().err
