"""Engine folders for the tests: a tiny AMMA engine built to order, tampered copies, a copy whose plans are
its ONNX files (what the stand-in TensorRT of test_tensorrt_backend deserializes)."""
import json
import os
import shutil

import pytest

from edge_stad.engines import tensorrt_runtime
from edge_stad.engines.manifest import write_manifest
from edge_stad.errors import MissingDependencyError


def quiet(_):
    pass


def build(root, **options):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from model_helpers import tiny_model

    from edge_stad.build.pipeline import BuildOptions, build_engine

    build_engine(tiny_model("shufflenetv2"), root, BuildOptions(**options), log=quiet)
    return root


def with_plans(folder, out, **manifest_changes):
    """A copy of an ONNX Runtime engine folder whose ``*.plan`` are its ONNX files, listed as a TensorRT build lists
    them (what the stand-in TensorRT of test_tensorrt_backend deserializes)."""
    shutil.copytree(folder, out)
    manifest = json.loads((out / "manifest.json").read_text())
    for graph in manifest["graphs"]:
        shutil.copyfile(out / f"{graph}.onnx", out / f"{graph}.plan")
    manifest.update(plans={graph: f"{graph}.plan" for graph in manifest["graphs"]}, **manifest_changes)
    os.remove(out / "manifest.json")
    write_manifest(out, {k: v for k, v in manifest.items() if k != "files"})
    return out


def stand_in_tensorrt(monkeypatch, engine_class="NamedEngine"):
    """Install the stand-in TensorRT of test_tensorrt_backend (plans that are ONNX files, run by ONNX Runtime on host
    memory, through a fake cuda-python); returns the fake cudart, whose ``memory`` must be empty once closed."""
    import test_tensorrt_backend as trt_stub

    from edge_stad.engines import tensorrt_backend

    cudart, engines = trt_stub.FakeCudart(), []
    monkeypatch.setattr(tensorrt_runtime, "tensorrt",
                        lambda: trt_stub.fake_tensorrt(getattr(trt_stub, engine_class), engines))
    monkeypatch.setattr(tensorrt_backend, "cudart", lambda: cudart)
    return cudart


def broken_copies(engine, folder):
    """Two copies of ``engine``: one with a modified head.onnx, one whose manifest claims format version 99."""
    import shutil

    tampered, other = folder / "tampered", folder / "other_version"
    shutil.copytree(engine, tampered)
    with open(tampered / "head.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    shutil.copytree(engine, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["format_version"] = 99
    (other / "manifest.json").write_text(json.dumps(manifest))
    return tampered, other


def cuda_python_available():
    """Whether cuda-python's runtime API imports here (the real TensorRT tests need it)."""
    try:
        tensorrt_runtime.cudart()
    except MissingDependencyError:
        return False
    return True
