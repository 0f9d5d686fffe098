"""Engine folders: build stages, manifest checks, refusals that leave nothing behind, the CLI."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from engine_helpers import broken_copies  # noqa: E402
from model_helpers import tiny_model  # noqa: E402
from synth_data import tiny_synth  # noqa: E402

from edge_stad import cli  # noqa: E402
from edge_stad.backends import open_backend  # noqa: E402
from edge_stad.build import pipeline as build_module  # noqa: E402
from edge_stad.build import tensorrt_plans  # noqa: E402
from edge_stad.build.pipeline import BuildOptions, build_engine  # noqa: E402
from edge_stad.engines import tensorrt_runtime  # noqa: E402
from edge_stad.engines.manifest import read_manifest  # noqa: E402
from edge_stad.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    EngineError,
    ExportError,
    MissingDependencyError,
)
from edge_stad.models import save_checkpoint  # noqa: E402
from edge_stad.runtime.stream import Runtime  # noqa: E402


def quiet(_):
    pass


@pytest.fixture(scope="module")
def fp32_engine(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / "fp32"
    manifest = build_engine(tiny_model("shufflenetv2"), out, BuildOptions(backend="onnxruntime"),
                            labels=("a", "b", "c", "d"), log=quiet)
    return out, manifest


def test_fp32_engine_folder_and_manifest(fp32_engine):
    out, manifest = fp32_engine
    assert sorted(os.listdir(out)) == ["encoder.onnx", "head.onnx", "manifest.json", "reference_io.npz"]
    assert manifest["precision"] == "fp32" and manifest["backend"] == "onnxruntime"
    assert manifest["labels"] == ["a", "b", "c", "d"] and manifest["model"]["K"] == 2
    assert set(manifest["files"]) == {"encoder.onnx", "head.onnx", "reference_io.npz"}
    assert read_manifest(out)["files"] == manifest["files"]
    assert manifest["versions"]["onnxruntime"] and manifest["export"]["parity_scaled_error"]["encoder"] < 1e-4


def test_reference_io_reproduces_on_the_engine(fp32_engine):
    out, _ = fp32_engine
    backend = open_backend(out)
    ref = np.load(out / "reference_io.npz")
    feat, wh = backend.encode(ref["encoder.frames"])
    np.testing.assert_array_equal(feat, ref["encoder.feat"])
    assert backend.decodes_in_graph   # an AMMA engine's default
    np.testing.assert_array_equal(backend.detect(ref["head.feats"], ref["head.whs"]), ref["head.tubelets"])


def test_manifest_catches_a_modified_or_missing_file(fp32_engine, tmp_path):
    out, _ = fp32_engine
    copy, other = broken_copies(out, tmp_path)
    with pytest.raises(EngineError, match="head.onnx does not match its sha256"):
        open_backend(copy)
    os.remove(copy / "head.onnx")
    with pytest.raises(EngineError, match="head.onnx is listed in the manifest but missing"):
        read_manifest(copy)
    with pytest.raises(EngineError, match="engine format version 99"):
        read_manifest(other)
    with pytest.raises(EngineError, match="no manifest.json"):
        read_manifest(tmp_path)
    (copy / "manifest.json").write_text("{ not json")
    with pytest.raises(EngineError, match="cannot read as JSON"):
        read_manifest(copy)


def test_fp16_engine(tmp_path):
    manifest = build_engine(tiny_model("shufflenetv2"), tmp_path / "e", BuildOptions(precision="fp16",
                                                                                     backend="onnxruntime"), log=quiet)
    assert manifest["precision"] == "fp16" and manifest["export"]["fp16"]["parity_scaled_error"]["encoder"] < 3e-2
    assert open_backend(tmp_path / "e").encode(np.zeros((1, 5, 64, 64, 3), np.uint8))[0].dtype == np.float32


@pytest.fixture(scope="module")
def int8_engine(tmp_path_factory):
    data = tiny_synth(tmp_path_factory)
    root = tmp_path_factory.mktemp("int8")
    # untrained: its FP32 frame-mAP is about 0, so the gate runs only with its floor at 0
    opts = BuildOptions(precision="int8", backend="onnxruntime", calib_data=str(data), calib_clips=4, gate_windows=4,
                        calibration_dir=str(root / "calibration"), min_fp32_map=0.0)
    manifest = build_engine(tiny_model("shufflenetv2", size=64), root / "engine", opts, log=quiet)
    return root, manifest


def test_int8_engine_with_gate_report(int8_engine):
    root, manifest = int8_engine
    report = json.loads((root / "calibration" / "engine" / "report.json").read_text())   # named after the folder
    assert report["passed"] and report["verdict"] == "passed" and report["calibration"]["windows"] == 4
    attempt = report["attempts"][0]
    assert {"frame_mAP_int8", "frame_mAP_drop", "agreement"} <= set(attempt)
    assert abs(report["frame_mAP_fp32"] - attempt["frame_mAP_int8"] - attempt["frame_mAP_drop"]) < 1e-9
    assert manifest["calibration"]["passed"] and manifest["precision"] == "int8"
    assert manifest["int8_flavor"] == "cpu"   # auto without TensorRT
    assert (root / "calibration" / "engine" / "encoder.ranges.json").is_file()
    # the report travels inside the engine folder too, hashed like the graphs
    assert json.loads((root / "engine" / "int8_report.json").read_text()) == report
    assert "int8_report.json" in read_manifest(root / "engine")["files"]


def test_graphs_describe_themselves_in_their_metadata(fp32_engine):
    import onnx

    out, manifest = fp32_engine
    for graph in ("encoder", "head"):
        meta = {p.key: p.value for p in onnx.load(out / f"{graph}.onnx").metadata_props}
        assert meta["edge_stad.graph"] == graph and meta["edge_stad.precision"] == "fp32"
        assert meta["edge_stad.version"] == manifest["edge_stad"]
        assert json.loads(meta["edge_stad.labels"]) == ["a", "b", "c", "d"]
        assert json.loads(meta["edge_stad.model_config"]) == manifest["model"]
        assert json.loads(meta["edge_stad.model"])["K"] == 2
    inputs = json.loads({p.key: p.value for p in onnx.load(out / "encoder.onnx").metadata_props}["edge_stad.inputs"])
    assert inputs == {"frames": {"shape": ["batch", 5, 64, 64, 3],
                                 "dtype": "uint8 BGR, resized with cv2.INTER_LINEAR; normalised in the graph"}}


def test_int8_from_windows_or_a_calibration_reader_given_in_python(int8_engine, tmp_path, tmp_path_factory):
    from onnxruntime.quantization import CalibrationDataReader

    from edge_stad.quant.calibration import calibration_windows

    root, _ = int8_engine
    model = tiny_model("shufflenetv2", size=64)
    windows = calibration_windows(tiny_synth(tmp_path_factory), model.config, 4)
    opts = BuildOptions(precision="int8", backend="onnxruntime", calib_clips=4, gate_windows=4, min_fp32_map=0.0,
                        calibration_dir=str(tmp_path / "calibration"))
    manifest = build_engine(model, tmp_path / "from_windows", opts, log=quiet, calibration=iter(windows))
    report = manifest["calibration"]
    assert report["calibration"] == {"source": "windows given to build_engine", "windows": 4, "method": "minmax",
                                     "gate_windows": 4} and report["verdict"] == "passed"
    # the same calibration data gives the same quantized graphs as from the ACT folder
    same = json.loads((root / "calibration" / "engine" / "encoder.ranges.json").read_text())
    assert json.loads((tmp_path / "calibration" / "from_windows" / "encoder.ranges.json").read_text()) == same

    class Clips(CalibrationDataReader):   # the encoder's feeds, clip by clip, as onnxruntime.quantization reads them
        def __init__(self):
            self.feeds = iter([{"frames": clip[None]} for window in windows for clip in window])

        def get_next(self):
            return next(self.feeds, None)

    build_engine(model, tmp_path / "from_reader", opts, log=quiet, calibration=Clips())
    assert (json.loads((tmp_path / "calibration" / "from_reader" / "encoder.ranges.json").read_text()) == same)
    with pytest.raises(DataError, match=r"window 0 is uint8 \(2, 5, 32, 32, 3\); expected uint8 \(2, 5, 64"):
        build_engine(model, tmp_path / "bad", opts, log=quiet, calibration=[np.zeros((2, 5, 32, 32, 3), np.uint8)])
    assert not (tmp_path / "bad").exists()


def test_families_without_a_build_strategy_are_refused_by_name(tmp_path):
    from edge_stad.models import create_model

    with pytest.raises(ConfigError, match="no strategy for attention-fusion models"):
        build_engine(create_model("attention-fusion", num_classes=2), tmp_path / "e",
                     BuildOptions(backend="onnxruntime"), log=quiet)
    assert not (tmp_path / "e").exists()


def test_int8_flavour_resolution():
    opts = BuildOptions(precision="int8")
    assert build_module.resolve_int8_flavor(opts, True, quiet).int8_flavor == "tensorrt"
    assert build_module.resolve_int8_flavor(opts, False, quiet).int8_flavor == "cpu"
    with pytest.raises(ConfigError, match="TensorRT builds need --int8-flavor tensorrt"):
        build_module.resolve_int8_flavor(BuildOptions(precision="int8", int8_flavor="cpu"), True, quiet)


def test_failed_gate_leaves_no_engine(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "EXCLUDE_STEPS", (1,))
    opts = BuildOptions(precision="int8", backend="onnxruntime", calib_data=str(tiny_synth(tmp_path_factory)),
                        calib_clips=2, gate_windows=2, max_map_drop=-1.0, calibration_dir=str(tmp_path / "cal"),
                        min_fp32_map=0.0)
    with pytest.raises(ExportError, match="INT8 accuracy gate failed"):
        build_engine(tiny_model("shufflenetv2"), tmp_path / "engine", opts, log=quiet)
    assert not (tmp_path / "engine").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".engine")]
    report = json.loads((tmp_path / "cal" / "engine" / "report.json").read_text())
    assert report["passed"] is False and report["verdict"] == "failed" and len(report["attempts"]) == 2
    assert report["attempts"][1]["kept_float"] and report["sensitivity"]["encoder"]


def test_gate_is_not_applicable_when_the_fp32_model_detects_nothing(tmp_path_factory, tmp_path):
    """An untrained model scores frame-mAP ~0 in FP32 and in INT8: a zero drop that must not read as "passed"."""
    opts = BuildOptions(precision="int8", backend="onnxruntime", calib_data=str(tiny_synth(tmp_path_factory)),
                        calib_clips=2, gate_windows=2, calibration_dir=str(tmp_path / "cal"))
    logged = []
    manifest = build_engine(tiny_model("shufflenetv2", size=64), tmp_path / "engine", opts, log=logged.append)
    report = json.loads((tmp_path / "cal" / "engine" / "report.json").read_text())
    assert report["frame_mAP_fp32"] < 1.0
    verdict = f"not applicable: the FP32 model detects nothing (frame-mAP {report['frame_mAP_fp32']:.2f})"
    assert report["passed"] is None and report["verdict"] == verdict
    assert manifest["calibration"]["passed"] is None and manifest["calibration"]["verdict"] == verdict
    assert len(report["attempts"]) == 1 and "frame_mAP_int8" not in report["attempts"][0]
    assert [line for line in logged if line.startswith("[int8] warning: accuracy gate " + verdict)]
    assert read_manifest(tmp_path / "engine")["speed_only"] is None   # trained or not, the build cannot tell
    with pytest.warns(UserWarning, match="INT8 accuracy gate was not applicable"):
        Runtime(tmp_path / "engine")


def test_random_weights_engine_is_speed_only_and_cli_refusals_name_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    build = ["build", "--random-weights", "--input-size", "64", "--out", "e"]
    assert cli.main(build) == 0
    assert "random weights" in read_manifest(tmp_path / "e")["speed_only"]
    with pytest.warns(UserWarning, match="speed-only engine, random weights"):
        Runtime(tmp_path / "e")
    capsys.readouterr()
    # the folder exists: refused before any work (no calibration), in the command's own flags
    assert cli.main(build + ["--int8"]) == 1
    out, err = capsys.readouterr()
    assert "already exists" in err and "pass --force to replace it, or --out" in err and "force=True" not in err
    assert "calibrating" not in out
    assert cli.main(build + ["--force"]) == 0


def test_bad_calibration_data_leaves_no_engine(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    opts = BuildOptions(precision="int8", backend="onnxruntime", calib_data=str(empty))
    with pytest.raises(DataError, match="no calibration data"):
        build_engine(tiny_model("shufflenetv2"), tmp_path / "engine", opts, log=quiet)
    np.save(tmp_path / "w.npy", np.zeros((2, 2, 5, 32, 32, 3), np.uint8))
    opts.calib_data = str(tmp_path / "w.npy")
    with pytest.raises(DataError, match="calibration windows must be uint8"):
        build_engine(tiny_model("shufflenetv2"), tmp_path / "engine", opts, log=quiet)
    assert sorted(os.listdir(tmp_path)) == ["empty", "w.npy"]


def test_plan_check_without_polygraphy_says_so(fp32_engine):
    import importlib.util

    if importlib.util.find_spec("polygraphy") is not None:
        pytest.skip("polygraphy is installed here")
    with pytest.raises(MissingDependencyError, match="pip install polygraphy"):
        tensorrt_plans.verify_plans(fp32_engine[0], {"encoder": "encoder.plan"})


def test_tensorrt_backend_without_tensorrt_says_so(tmp_path):
    if tensorrt_runtime.available():
        pytest.skip("TensorRT is importable here")
    with pytest.raises(MissingDependencyError, match="TensorRT is not importable"):
        build_engine(tiny_model("shufflenetv2"), tmp_path / "e", BuildOptions(backend="tensorrt"), log=quiet)
    assert not (tmp_path / "e").exists()


needs_tensorrt = pytest.mark.skipif(not tensorrt_runtime.available(),
                                    reason="TensorRT is not importable on this machine")


@needs_tensorrt
def test_tensorrt_plans_build(tmp_path):
    cache = tmp_path / "timing.cache"
    manifest = build_engine(tiny_model("shufflenetv2"), tmp_path / "e", BuildOptions(
        backend="tensorrt", precision="fp16", timing_cache=str(cache)), log=quiet)
    assert manifest["plans"] == {"encoder": "encoder.plan", "head": "head.plan"}
    assert manifest["tensorrt"]["precision"] == "fp16" and manifest["backend"] == "tensorrt"
    assert (tmp_path / "e" / "encoder.plan").stat().st_size > 0 and cache.stat().st_size > 0
    assert "encoder.plan" in read_manifest(tmp_path / "e")["files"]
    check = manifest["tensorrt"].get("max_abs_error_vs_onnxruntime")   # present where polygraphy is installed
    assert check is None or max(v for graph in check.values() for v in graph.values()) < 0.05


@needs_tensorrt
def test_tensorrt_int8_plan_from_the_qdq_graph(tmp_path_factory, tmp_path):
    opts = BuildOptions(precision="int8", backend="tensorrt", calib_data=str(tiny_synth(tmp_path_factory)),
                        calib_clips=2, gate_windows=2, calibration_dir=str(tmp_path / "cal"))
    manifest = build_engine(tiny_model("shufflenetv2"), tmp_path / "e", opts, log=quiet)
    assert manifest["int8_flavor"] == "tensorrt" and manifest["tensorrt"]["precision"] == "int8"
    assert (tmp_path / "e" / "head.plan").stat().st_size > 0


@pytest.mark.parametrize("family", ["amma", "menet-lite"])
def test_tensorrt_builds_get_each_graph_and_its_fp32_scopes(family, tmp_path, monkeypatch):
    """The build's TensorRT stage, with TensorRT's plan builder replaced by a recorder: one plan per graph of
    the family, each listed and checksummed, and MENet's attention scopes handed over to be pinned."""
    from types import SimpleNamespace

    from edge_stad.models import create_model

    calls = []

    def record(onnx_path, plan_path, precision, *args, fp32_scopes=(), **kwargs):
        calls.append((os.path.basename(plan_path), precision, tuple(fp32_scopes)))
        with open(plan_path, "wb") as f:
            f.write(b"plan")
        return {"tensorrt": "10.0.0.fake", "precision": precision, "fp32_layers": len(fp32_scopes)}

    monkeypatch.setattr(tensorrt_runtime, "tensorrt", lambda: SimpleNamespace(__version__="10.0.0.fake"))
    monkeypatch.setattr(tensorrt_plans, "build_plan", record)
    monkeypatch.setattr(tensorrt_plans, "verify_plans", lambda folder, plans: {})
    torch.manual_seed(0)
    model = (tiny_model("shufflenetv2") if family == "amma" else
             create_model("menet-lite", num_classes=3, input_size=64, clip_len=4, width_3d=0.5).eval())
    manifest = build_engine(model, tmp_path / "e", BuildOptions(backend="tensorrt", precision="fp16"), log=quiet)
    scopes = () if family == "amma" else ("/cfam/sc/", "/non_local/")
    graphs = ("encoder", "head") if family == "amma" else ("encoder3d", "detector")
    assert calls == [(f"{g}.plan", "fp16", scopes) for g in graphs]
    assert manifest["plans"] == {g: f"{g}.plan" for g in graphs} and manifest["backend"] == "tensorrt"
    assert all(f"{g}.plan" in manifest["files"] for g in graphs)


def test_pin_fp32_selects_the_attention_layers_by_name_and_type():
    """The layer selection of pin_fp32 on a network of plain records standing for TensorRT's layer objects."""
    from types import SimpleNamespace

    trt = SimpleNamespace(float32="f32", float16="f16", int32="i32",
                          LayerType=SimpleNamespace(CONVOLUTION="conv", QUANTIZE="q", DEQUANTIZE="dq"),
                          BuilderFlag=SimpleNamespace(OBEY_PRECISION_CONSTRAINTS="obey"))

    class Layer:
        def __init__(self, name, kind, outputs=("f16",)):
            self.name, self.type, self.precision, self.set = name, kind, None, {}
            self.outputs = [SimpleNamespace(dtype=d) for d in outputs]
            self.num_outputs = len(outputs)

        def get_output(self, j):
            return self.outputs[j]

        def set_output_type(self, j, dtype):
            self.set[j] = dtype

    layers = [Layer("/model/cfam/conv_bn_relu2/Conv", "conv"), Layer("/model/cfam/sc/MatMul", "matmul"),
              Layer("/model/cfam/sc/ReduceMax", "reduce", ("f16", "i32")), Layer("/model/cfam/sc/Softmax", "softmax"),
              Layer("/model/non_local/theta/Conv", "conv"), Layer("/model/non_local/MatMul", "matmul"),
              Layer("/model/non_local/DequantizeLinear", "dq")]
    network = SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__)
    flags = []
    config = SimpleNamespace(set_flag=flags.append)
    pinned = tensorrt_plans.pin_fp32(trt, network, config, ("/cfam/sc/", "/non_local/"))
    assert pinned == ["/model/cfam/sc/MatMul", "/model/cfam/sc/ReduceMax", "/model/cfam/sc/Softmax",
                      "/model/non_local/MatMul"] and flags == ["obey"]
    assert [layer.precision for layer in layers] == [None, "f32", "f32", "f32", None, "f32", None]
    assert layers[2].set == {0: "f32"}                           # the integer index output keeps its type
    assert tensorrt_plans.pin_fp32(trt, network, config, ()) == [] and flags == ["obey"]


@needs_tensorrt
def test_tensorrt_refuses_a_dla_core_on_a_gpu_without_dla(tmp_path):
    trt = tensorrt_runtime.tensorrt()
    if trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores:
        pytest.skip("this device has DLA cores")
    with pytest.raises(ConfigError, match="no DLA"):
        build_engine(tiny_model("shufflenetv2"), tmp_path / "e", BuildOptions(backend="tensorrt", precision="fp16",
                                                                              dla_core=0), log=quiet)
    assert not (tmp_path / "e").exists()


def test_cli_build_refusals(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["build", "--int8"]) == 1
    assert "run `edge-stad demo` first" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["build", "--checkpoint", "bad.pt"]) == 1
    assert "bad.pt" in capsys.readouterr().err
    save_checkpoint(tmp_path / "ok.pt", tiny_model("shufflenetv2"))
    assert cli.main(["build", "--checkpoint", "ok.pt", "--backbone", "resnet18"]) == 1
    assert "backbone='shufflenetv2'" in capsys.readouterr().err
    assert not (tmp_path / "engines").exists()


def test_cli_export_and_eval_engine(tmp_path, tmp_path_factory, monkeypatch, capsys):
    data = tiny_synth(tmp_path_factory)
    from edge_stad.data.act import ActDataset

    labels = list(ActDataset(data).labels)
    model = tiny_model("shufflenetv2", num_classes=len(labels))
    save_checkpoint(tmp_path / "m.pt", model, labels=labels)
    assert cli.main(["export", "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "e"),
                     "--decode", "host"]) == 0
    assert "engine:" in capsys.readouterr().out
    assert not read_manifest(tmp_path / "e")["export"]["decode_in_graph"]
    assert [o.name for o in open_backend(tmp_path / "e").head_session.get_outputs()] == ["hm", "mov", "wh"]
    assert cli.main(["eval", "--data", str(data), "--engine", str(tmp_path / "e"), "--json",
                     str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert 0 <= result["frame_mAP"] <= 100 and result["source"].endswith("e")
    with pytest.raises(CheckpointError):
        from edge_stad.models import load_checkpoint

        load_checkpoint(tmp_path / "m.pt", K=5)


def test_dynamic_batch_inputs_get_an_optimization_profile():
    from types import SimpleNamespace

    shapes = {}
    profile = SimpleNamespace(set_shape=lambda name, *s: shapes.__setitem__(name, s))
    added = []
    builder = SimpleNamespace(create_optimization_profile=lambda: profile)
    config = SimpleNamespace(add_optimization_profile=added.append)

    def network(*inputs):
        tensors = [SimpleNamespace(name=n, shape=s) for n, s in inputs]
        return SimpleNamespace(num_inputs=len(tensors), get_input=tensors.__getitem__)

    tensorrt_plans._batch_profile(builder, network(("frames", (1, 5, 64, 64, 3))), config, 8)
    assert not added  # static batch: no profile
    tensorrt_plans._batch_profile(builder, network(("feats", (-1, 3, 64, 8, 8)), ("whs", (-1, 3, 2, 8, 8))), config, 4)
    assert added == [profile]
    assert shapes["feats"] == ((1, 3, 64, 8, 8), (1, 3, 64, 8, 8), (4, 3, 64, 8, 8)) and "whs" in shapes
    with pytest.raises(EngineError, match="dynamic axes besides the batch"):
        tensorrt_plans._batch_profile(builder, network(("frames", (-1, 5, -1, 64, 3))), config, 8)
