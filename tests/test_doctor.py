"""``edge-stad doctor`` / ``edge_stad.doctor()``: this machine's probe checked against what the libraries say
themselves, and the runtime's choices for real engine folders on this machine and on recorded machines (a Jetson
AGX Xavier on JetPack 5, a desktop RTX 4090 on CUDA 12: tests/doctor_machines/)."""
import copy
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from engine_helpers import build, with_plans

import edge_stad
from edge_stad import diagnosis
from edge_stad.cli import main
from edge_stad.engines.manifest import write_manifest
from edge_stad.errors import ConfigError

MACHINES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "doctor_machines")
JETSON = os.path.join(MACHINES, "jetson_agx_xavier_jetpack5.json")
DESKTOP = os.path.join(MACHINES, "desktop_rtx4090_cuda12.json")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor")
    onnx = build(root / "onnx", backend="onnxruntime")
    # the same folder as a TensorRT 8.5.2.2 build lists it (its .plan files are the ONNX graphs: nothing here
    # deserializes them, and where TensorRT is absent the runtime falls back to the ONNX graphs beside them)
    return {"onnx": onnx, "plans": with_plans(onnx, root / "plans", tensorrt={"tensorrt": "8.5.2.2"})}


@pytest.fixture(scope="module")
def here():
    return diagnosis.probe()


def choices(report):
    return {c["what"]: c["choice"] for c in report["choices"]}


def test_probe_says_what_the_libraries_say(here):
    import cv2
    import onnxruntime

    from edge_stad.engines import tensorrt_runtime
    from edge_stad.kernels import loader

    assert json.loads(json.dumps(here)) == here and here["format"] == diagnosis.PROBE_FORMAT
    assert here["onnxruntime"] == {"version": onnxruntime.__version__,
                                   "providers": onnxruntime.get_available_providers()}
    assert here["opencv"]["version"] == cv2.__version__
    assert here["opencv"]["gstreamer"] == ("GStreamer:                   YES" in cv2.getBuildInformation())
    assert ("version" in here["tensorrt"]) == tensorrt_runtime.available()
    try:
        nvrtc = list(loader.nvrtc_version())
    except Exception:
        nvrtc = None
    assert here["nvrtc"].get("version") == nvrtc
    assert here["system"]["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert (here["jetson"] is not None) == os.path.exists("/etc/nv_tegra_release")
    if not here["cuda"].get("devices"):   # no GPU: neither the driver nor the kernels' driver has one
        assert "error" in here["cuda"] and "error" in here["kernels"]
        assert diagnosis.kernel_target(here) == (None, "no NVIDIA GPU")


def test_this_machine_runs_an_engine_as_the_loader_would(engines, here):
    from edge_stad.backends import open_backend
    from edge_stad.engines import tensorrt_runtime
    from edge_stad.engines.loader import default_providers

    for name in ("onnx", "plans"):
        report = diagnosis.doctor(engines[name], out=None)
        backend = "tensorrt" if name == "plans" and tensorrt_runtime.available() else "onnxruntime"
        assert choices(report)["backend"] == backend and report["runs"] and not report["problems"]
        assert report["engine"]["opened"] == type(open_backend(engines[name])).__name__
        if backend == "onnxruntime":
            assert choices(report)["providers"] == ", ".join(default_providers())
    if not tensorrt_runtime.available():
        report = diagnosis.diagnose(here, engines["plans"])
        assert [c["why"] for c in report["choices"] if c["what"] == "backend"] == [
            "the engine folder has TensorRT plans, but TensorRT is not importable here"]


def test_recorded_jetson_runs_plans_of_its_tensorrt_and_has_the_kernels_for_xavier(engines):
    jetson = diagnosis.load_machine(JETSON)
    report = diagnosis.diagnose(jetson, engines["plans"])
    assert choices(report)["backend"] == "tensorrt" and report["runs"] is True
    assert choices(report)["kernels"] == "not used by tensorrt"
    assert diagnosis.kernel_target(jetson) == ("sm_72", "NVRTC 11.4 compiles a cubin for the GPU, loaded through "
                                                        "cuda-python")
    report = diagnosis.diagnose(jetson, engines["onnx"])
    assert choices(report)["backend"] == "onnxruntime" and report["runs"] is True
    assert choices(report)["providers"] == "CUDAExecutionProvider, CPUExecutionProvider"
    assert any("TensorRT 8.5.2.2 is here but this engine has no plans" in a for a in report["advice"])
    assert any("GStreamer" in a for a in report["advice"])          # pip's OpenCV shadows JetPack's
    assert not any("TensorRT (the fastest" in a or "jetson-stats" in a for a in report["advice"])


def test_recorded_desktop_refuses_plans_of_another_tensorrt(engines, tmp_path, capsys):
    desktop = diagnosis.load_machine(DESKTOP)
    report = diagnosis.diagnose(desktop, engines["plans"])
    assert choices(report)["backend"] == "tensorrt" and report["runs"] is False
    assert report["problems"] == [f"engine {engines['plans']}: its plans were built by TensorRT 8.5.2.2, this is "
                                  f"TensorRT 10.3.0; build them on this device: edge-stad build --checkpoint "
                                  f"<checkpoint> [--fp16|--int8] --backend tensorrt --out {engines['plans']} --force "
                                  f"(plans do not move between TensorRT versions or GPUs)"]
    assert diagnosis.kernel_target(desktop)[0] == "sm_89"
    # the command: exit 1, the verdict in the text; --json carries the same report
    assert main(["doctor", str(engines["plans"]), "--machine", DESKTOP]) == 1
    text = capsys.readouterr().out
    assert "backend      tensorrt" in text and "CANNOT run here" in text and "RTX 4090 (compute 8.9" in text
    assert main(["doctor", str(engines["onnx"]), "--machine", DESKTOP, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] is True and choices(out)["providers"] == "CUDAExecutionProvider, CPUExecutionProvider"
    assert out["machine"] == desktop and "opened" not in out["engine"]   # a recorded machine: nothing is opened


def test_kernel_targets_follow_the_nvrtc_of_the_machine():
    desktop = diagnosis.load_machine(DESKTOP)
    blackwell = copy.deepcopy(desktop)
    blackwell["kernels"]["capability"] = 120    # newer than NVRTC 12.4: PTX of its newest arch
    assert diagnosis.kernel_target(blackwell)[0] == "compute_90"
    xavier_on_13 = copy.deepcopy(desktop)
    xavier_on_13["kernels"]["capability"] = 72
    xavier_on_13["nvrtc"] = {"version": [13, 0], "archs": [75, 80, 86, 87, 89, 90, 100, 120], "binding": "x"}
    assert diagnosis.kernel_target(xavier_on_13) == (
        None, "this NVRTC (13.0) cannot compile for compute capability 7.2; it knows sm_75..sm_120")
    pycuda_only = copy.deepcopy(diagnosis.load_machine(JETSON))
    pycuda_only["kernels"]["driver"], pycuda_only["nvrtc"] = "pycuda", {"error": "No module named 'cuda'"}
    assert diagnosis.kernel_target(pycuda_only)[0] == "sm_72 (nvcc)"
    bare = copy.deepcopy(desktop)
    bare["kernels"] = {"error": "the CUDA kernels need cuda-python ... or pycuda"}
    bare["tensorrt"] = {"error": "No module named 'tensorrt'"}
    bare["onnxruntime"]["providers"] = ["CPUExecutionProvider"]
    for library in ("cuda-python", "cuda-bindings"):
        del bare["libraries"][library]
    advice = diagnosis.diagnose(bare)["advice"]
    assert [a.split(":")[0] for a in advice] == ["TensorRT (the fastest backend)", "ONNX Runtime's CUDA provider",
                                                 "the CUDA kernels' bindings"]
    assert "pip install tensorrt-cu12" in advice[0] and "'cuda-python==12.*'" in advice[2]
    bare["libraries"]["cuda-bindings"] = "13.5.0"   # pip's default cuda-python on a CUDA 12 driver
    assert diagnosis.diagnose(bare)["advice"][2] == ("the CUDA kernels' bindings: cuda-python 13.5.0 needs a CUDA 13 "
                                                     "driver, this one is CUDA 12: pip install 'cuda-python==12.*'")


def test_checkpoints_run_on_torch_with_the_kernels_where_a_gpu_is(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not read")
    report = diagnosis.diagnose(diagnosis.load_machine(JETSON), checkpoint)
    assert choices(report) == {"backend": "torch on cuda:0", "kernels": "sm_72"} and report["runs"]
    cpu_only = diagnosis.load_machine(DESKTOP)
    cpu_only["torch"] = {"error": "not installed"}
    report = diagnosis.diagnose(cpu_only, checkpoint)
    assert report["runs"] is False and "torch is not importable" in report["problems"][0]


def test_an_engine_that_cannot_run_anywhere_exits_1(engines, tmp_path, capsys):
    broken = tmp_path / "broken"
    with_plans(engines["onnx"], broken)
    with open(broken / "head.onnx", "ab") as f:
        f.write(b"tampered")
    assert main(["doctor", str(broken)]) == 1
    assert "does not match its sha256" in capsys.readouterr().out
    foreign = tmp_path / "foreign"
    shutil.copytree(engines["onnx"], foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    manifest["model"]["name"] = "yowo"
    os.remove(foreign / "manifest.json")
    write_manifest(foreign, {k: v for k, v in manifest.items() if k != "files"})
    report = diagnosis.diagnose(diagnosis.load_machine(JETSON), foreign)
    assert report["runs"] is False and "field 'model.name' is 'yowo'; expected one of amma" in report["problems"][0]


def test_recorded_machines_are_checked(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="cannot read as JSON"):
        diagnosis.load_machine(bad)
    bad.write_text(json.dumps({"format": 1, "cuda": {}}))
    with pytest.raises(ConfigError, match="lacks system, nvrtc, kernels, tensorrt, onnxruntime, opencv, torch"):
        diagnosis.load_machine(bad)
    report = tmp_path / "report.json"   # a whole --json report is accepted too
    report.write_text(json.dumps({"machine": json.loads(open(JETSON).read())}))
    assert diagnosis.load_machine(report)["tensorrt"] == {"version": "8.5.2.2"}
    assert main(["doctor", "--machine", str(bad)]) == 1


def test_edge_stad_doctor_prints_and_returns_the_report(engines):
    assert edge_stad.doctor is diagnosis.doctor   # the submodule (imported above) does not shadow the function
    out = io.StringIO()
    report = edge_stad.doctor(engines["onnx"], out=out)
    assert report["runs"] is True and out.getvalue() == diagnosis.format_report(report)
    assert out.getvalue().startswith(f"edge_stad {edge_stad.__version__} doctor\nmachine:\n  system ")


def test_doctor_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import edge_stad.diagnosis as d, edge_stad.commands.doctor; "
            "r = d.diagnose(d.load_machine(sys.argv[1])); assert r['advice'], r")
    subprocess.run([sys.executable, "-c", code, JETSON], check=True)
