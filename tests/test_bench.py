"""`edge-stad bench`: refusals of bad input, the synthetic video, the GEMM graph, one tiny end-to-end run."""
import json

import numpy as np
import pytest

from edge_stad import cli
from edge_stad.bench import machine
from edge_stad.bench.harness import BenchConfig, skip_reason
from edge_stad.bench.machine import cpuinfo
from edge_stad.data.synth.generate import synthetic_stream
from edge_stad.errors import ConfigError
from edge_stad.quant.calibration import windows_from_frames
from edge_stad.runtime.stream import STAGES


@pytest.mark.parametrize("args,message", [
    (["--backbones", "vgg16"], "unknown backbone 'vgg16'"),
    (["--precisions", "fp32,int4"], "unknown precision 'int4'"),
    (["--backend", "openvino"], "unknown backend 'openvino'"),
    (["--models", "yowo"], "unknown model 'yowo'"),
    (["--K", "3,x"], "--K takes comma-separated integers"),
    (["--K", "0"], "K must be >= 1"),
    (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    (["--input-size", "100"], "multiple of 32"),
    (["--frames", "40", "--warmup", "40"], "frames > warmup"),
    (["--checkpoint", "no/such.pt"], "checkpoint no/such.pt does not exist"),
    (["--data", "no/such/set"], "labelled set no/such/set does not exist"),
])
def test_bad_input_is_a_clear_error(args, message, capsys):
    assert cli.main(["bench", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge-stad bench: error: ") and message in err


def test_config_errors_are_typed():
    with pytest.raises(ConfigError, match="expected one or more of fp32, fp16, int8"):
        BenchConfig(precisions=("fp64",)).check()
    with pytest.raises(SystemExit):  # argparse: mutually exclusive
        cli.main(["bench", "--checkpoint", "x.pt", "--random-weights"])


def test_skip_reasons_say_why():
    assert "runs FP32" in skip_reason("torch", "int8", "cpu")
    assert "on the CPU" in skip_reason("tensorrt", "fp32", "cpu")
    assert skip_reason("onnxruntime", "int8", "cpu") is None


def test_synthetic_stream_is_fixed_and_rotates_classes():
    a, b = synthetic_stream(130), synthetic_stream(130)
    assert len(a) == 130 and a[0].shape == (120, 160, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(synthetic_stream(5, split="train")[0], a[0])
    with pytest.raises(ConfigError):
        synthetic_stream(5, split="val")
    windows = windows_from_frames(a, {"K": 3, "clip_len": 5, "input_size": [64, 96]}, 4)
    assert len(windows) == 4 and windows[0].shape == (3, 5, 64, 96, 3)


def test_gemm_graphs_compute_the_chain():
    pytest.importorskip("onnx")
    from edge_stad.bench.peak import gemm_onnx
    from edge_stad.engines.onnxruntime_backend import create_session

    x = np.random.default_rng(1).standard_normal((16, 16)).astype(np.float32)
    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32) / 4
    (y,) = create_session(gemm_onnx(16, 3, "fp32")).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ w @ w @ w, rtol=1e-4, atol=1e-4)
    for flavor in ("cpu", "tensorrt"):
        (q,) = create_session(gemm_onnx(16, 3, "int8", flavor)).run(None, {"x": x})
        assert np.abs(q - y).max() < 0.1 * np.abs(y).max()     # quantized, close


def test_tiny_end_to_end_run(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    out, records = tmp_path / "out" / "bench", tmp_path / "records.json"
    assert cli.main(["bench", "--backbones", "shufflenetv2", "--precisions", "fp32", "--backends",
                     "onnxruntime,tensorrt", "--device", "cpu", "--input-size", "64", "--frames", "40", "--warmup",
                     "20", "--rounds", "1", "--out", str(out), "--json", str(records), "--work", str(tmp_path / "w"),
                     "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "random (untrained, built here; speed only)" in text and "## Speed" in text
    doc = json.loads(records.read_text())
    assert doc["weights"].startswith("random") and doc["video"]["frames"] == 40
    ort, torch_fp32 = doc["records"]
    assert (ort["backend"], ort["precision"], ort["baseline"]) == ("onnxruntime", "fp32", False)
    assert (torch_fp32["backend"], torch_fp32["baseline"], torch_fp32["vs_pytorch_fp32"]) == ("torch", True, 1.0)
    for r in doc["records"]:
        # paper Table 3 (ShuffleNetV2: 6.0 M, 1.0 GMAC) at 288x288 whatever the timed size
        assert r["params_m"] == pytest.approx(5.945, abs=1e-3)
        assert r["paper_gmac_per_clip"] == pytest.approx(0.973, abs=1e-3)
        assert 0 < r["stream_gmac_per_clip"] < 0.2 and r["input_size"] == [64, 64]
        assert r["fps"] > 0 and r["engine_mb"] > 1 and r["latency_ms"]["samples"] == 20
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
        assert set(r["stages_ms_per_frame"]) == set(STAGES) and r["stages_ms_per_frame"]["encoder"] > 0
        assert r["achieved_gmac_per_s"] > 0 and 0 < r["fraction_of_peak"] < 1
        assert r["power_w"].startswith("unavailable: ") and r["energy_per_clip_j"].startswith("unavailable: ")
        assert r["rss_peak_mb"] > 50 and r["gpu_memory_mb"].startswith("unavailable: ")
        assert r["accuracy"] == "unavailable: no labelled set given (--data)"
        assert r["machine"]["cores"] >= 1 and "onnxruntime" in r["versions"] and r["config"]["frames"] == 40
    assert ort["vs_pytorch_fp32"] == pytest.approx(ort["fps"] / torch_fp32["fps"])
    assert [s["backend"] for s in doc["skipped"]] == ["tensorrt"] and "CPU" in doc["skipped"][0]["reason"]
    for suffix in (".md", ".csv", "_fps.png", "_stages.png"):
        assert (tmp_path / "out" / f"bench{suffix}").stat().st_size > 100
    assert not (tmp_path / "out" / "bench.json").exists()


def test_checkpoint_sets_backbone_and_K(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from edge_stad.models import create_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "mobile.pt"
    save_checkpoint(path, create_model("amma", backbone="mobilenetv2", K=2, num_classes=4, input_size=64))
    assert cli.main(["bench", "--checkpoint", str(path), "--backbones", "resnet18", "--device", "cpu"]) == 1
    assert "holds backbone mobilenetv2; leave --backbones out or pass mobilenetv2" in capsys.readouterr().err
    assert cli.main(["bench", "--checkpoint", str(path), "--K", "3", "--device", "cpu"]) == 1
    assert "holds K 2" in capsys.readouterr().err


def bench_records(tmp_path, model, backends, frames):
    """The records of a 64x64 FP32 ``bench`` of ``model`` on the CPU: ``frames`` frames, half of them warm-up."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    records = tmp_path / "records.json"
    assert cli.main(["bench", "--models", model, "--precisions", "fp32", "--backends", backends, "--device", "cpu",
                     "--input-size", "64", "--frames", str(frames), "--warmup", str(frames // 2), "--rounds", "1",
                     "--out", str(tmp_path / "bench"), "--json", str(records), "--work", str(tmp_path / "w"),
                     "--no-progress", "--no-plots"]) == 0
    return json.loads(records.read_text())["records"]


def test_menet_lite_streams_frame_by_frame(tmp_path, capsys):
    ort, torch_fp32 = bench_records(tmp_path, "menet-lite", "onnxruntime,torch", 12)
    assert "MENet rows: a clip is one frame" in capsys.readouterr().out
    for r in (ort, torch_fp32):
        # the whole model per frame at 224x224 and 24 classes (MENet's paper's cost setting: MENet-Lite's defaults)
        assert (r["model"], r["backbone"], r["K"]) == ("menet-lite", "shufflenetv2", 1)
        assert r["params_m"] == pytest.approx(18.561, abs=1e-3)
        assert r["paper_gmac_per_clip"] == pytest.approx(2.057, abs=1e-3)
        assert 0 < r["stream_gmac_per_clip"] < r["paper_gmac_per_clip"] and r["fps"] > 0
        assert r["stages_ms_per_frame"]["encoder"] > 0 and r["stages_ms_per_frame"]["head"] > 0
    assert torch_fp32["baseline"] and not ort["baseline"]


def test_flow_fusion_lite_rows(tmp_path):
    for r in bench_records(tmp_path, "flow-fusion-lite", "onnxruntime", 8):
        # paper column: the lite model at 320x320 (flow-fusion-lite's paper presets), 8 classes; stream: one new
        # frame at 64x64 (one pair's flow, the detector)
        assert (r["model"], r["backbone"], r["K"]) == ("flow-fusion-lite", "mobilenetv2", 1)
        assert r["params_m"] == pytest.approx(8.572, abs=1e-3)
        assert r["paper_gmac_per_clip"] == pytest.approx(3.280, abs=1e-3)
        assert r["stream_gmac_per_clip"] == pytest.approx(0.1317, abs=1e-4) and r["fps"] > 0
        assert r["stages_ms_per_frame"]["encoder"] > 0 and r["stages_ms_per_frame"]["head"] > 0


def test_cpuinfo_reads_the_first_processor(monkeypatch):
    text = ("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nflags\t\t: fpu avx512_vnni\n\n"
            "processor\t: 1\nmodel name\t: Other\n")
    monkeypatch.setattr(machine, "read_text", lambda path: text if path == "/proc/cpuinfo" else None)
    assert cpuinfo() == {"processor": "0", "model name": "AMD EPYC", "cpu family": "25", "flags": "fpu avx512_vnni"}
    assert machine.cpu_model() == "AMD EPYC"
    monkeypatch.setattr(machine, "read_text", lambda path: None)   # no /proc: the platform's name
    assert cpuinfo() == {} and machine.cpu_model()


def _benchmark_script(name):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_int8_ceiling_kernel_computes_what_it_counts(tmp_path):
    """The ceiling's C loop compiles warning-free and does the VNNI multiply-adds it claims: 12 chains
    from 0..11, each lane adding 4 x (1 x 2) per instruction, summed over 16 lanes: 16 (66 + 96 n)."""
    import shutil
    import subprocess

    ceiling = _benchmark_script("int8_ceiling")
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    if "avx512_vnni" not in cpuinfo().get("flags", "").split():
        pytest.skip("this CPU has no AVX-512 VNNI")
    binary = ceiling.compile_ceiling("cc", str(tmp_path))
    seconds, instructions, total = subprocess.run([binary, "1000"], capture_output=True, text=True,
                                                  check=True).stdout.split()
    assert float(seconds) > 0
    assert int(instructions) == 12 * 1000
    assert int(total) == 16 * (66 + 96 * 1000)
    assert ceiling.ceiling_gmacs(binary, 2, 1000) > 0
