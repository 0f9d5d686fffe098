"""Every ``tensorrt`` attribute the code uses, under its version branch, exists in the real bindings of TensorRT
8.6, 10.3, 10.16 and 11.4 (tests/trt_conformance.py says how and its limits); the checker itself on known
answers: the branches it finds in the code, the names it reads from a compiled module, and names injected into a
copy of the code that a version lacks."""
import os
import shutil

import pytest
import trt_conformance as conformance

WHEELS = os.environ.get("EDGE_STAD_TRT_WHEELS", "")
DOWNLOAD = ("python tests/trt_conformance.py --download DIR and set EDGE_STAD_TRT_WHEELS=DIR (.ci/run does)")


def _wheels():
    found = conformance.load_wheels(WHEELS) if WHEELS and os.path.isdir(WHEELS) else []
    majors = sorted({b.major for b in found})
    if majors[:1] != [8] or 10 not in majors or 11 not in majors:
        pytest.skip(f"the TensorRT 8.6, 10.x and 11.x binding wheels are not downloaded "
                    f"({', '.join(b.version for b in found) or 'none'} in {WHEELS or '$EDGE_STAD_TRT_WHEELS'}): "
                    f"{DOWNLOAD}")
    return found


@pytest.fixture(scope="module")
def bindings():
    return _wheels()


@pytest.fixture(scope="module")
def analysis():
    return conformance.Analysis()


def _find(uses, chain):
    found = [u for u in uses if u.chain == chain]
    assert found, f"{chain} is not among the uses found: {sorted({u.chain for u in uses})}"
    return found


class FakeBindings(conformance.Bindings):
    def __init__(self, version, names):
        super().__init__(version, b"\0" + b"\0".join(n.encode() for n in names) + b"\0", {"__version__", "nptype"})


def test_the_uses_carry_the_codes_version_branches(analysis):
    trt8, trt10, trt11 = (FakeBindings(v, ["num_io_tensors"]) for v in ("8.6.1", "10.3.0", "11.4.0"))
    legacy = FakeBindings("8.4.3", [])

    def reached(chain):
        return [b.version for b in (legacy, trt8, trt10, trt11)
                if all(conformance.evaluate(u.condition, b) is not False for u in _find(analysis.uses, chain))]

    assert reached("trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH") == ["8.4.3", "8.6.1"]
    assert reached("trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED") == ["11.4.0"]
    # builder flags, the FP32 pins (pin_fp32 is called under `major < 11`) and the implicit INT8 calibrator
    for chain in ("trt.BuilderFlag.FP16", "trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "trt.IInt8EntropyCalibrator2",
                  "layer.set_output_type", "config.int8_calibrator"):
        assert reached(chain) == ["8.4.3", "8.6.1", "10.3.0"], chain
    # the backend's two I/O APIs, picked by hasattr(engine, "num_io_tensors")
    for chain in ("engine.num_io_tensors", "self.context.execute_async_v3", "self.context.set_input_shape"):
        assert reached(chain) == ["8.6.1", "10.3.0", "11.4.0"], chain
    for chain in ("engine.num_bindings", "self.context.execute_async_v2", "self.context.get_binding_shape"):
        assert reached(chain) == ["8.4.3"], chain
    for chain in ("trt.Logger.WARNING", "runtime.deserialize_cuda_engine", "builder.build_serialized_network",
                  "config.set_timing_cache(ignore_mismatch=)", "tensor.shape", "trt.nptype"):
        assert len(reached(chain)) == 4, chain
    files = {u.path for u in analysis.uses}
    assert {os.path.join("edge_stad", "engines", "tensorrt_backend.py"),
            os.path.join("edge_stad", "build", "tensorrt_plans.py")} <= files


def test_names_are_read_from_the_module_strings_tails_included(tmp_path):
    import zipfile

    wheel = tmp_path / "tensorrt_bindings-8.6.1-cp311-none-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("tensorrt_bindings/tensorrt.so", b"\x7fELF\0\0UINT8\0num_io_tensors\0 :ivar shape: doc text\0")
        z.writestr("tensorrt_bindings/__init__.py", 'from .tensorrt import *\n__version__ = "8.6.1"\n'
                                                    "def nptype(t):\n    pass\n")
    found = conformance.Bindings.from_wheel(wheel)
    assert found.version == "8.6.1" and found.major == 8
    assert all(found.has(n) for n in ("num_io_tensors", "UINT8", "INT8", "nptype", "__version__"))
    assert not any(found.has(n) for n in ("num_bindings", "shape", "UINT", "num_io"))
    assert conformance.load_wheels(tmp_path)[0].version == "8.6.1"


def test_code_uses_only_names_each_tensorrt_version_has(bindings, analysis, report_section):
    failures, unreached = conformance.check(analysis.uses, bindings)
    assert not failures, "\n".join(f"TensorRT {version} has no {use.name!r}: {use}" for version, use in failures)
    chains = {u.chain for u in analysis.uses}
    lines = [f"{len(chains)} attribute chains at {len(analysis.uses)} places; per version, those its branch reaches:"]
    for b in bindings:
        reached = {u.chain for u in analysis.uses if conformance.evaluate(u.condition, b) is not False}
        lines.append(f"  TensorRT {b.version}: {len(reached)} chains, all defined")
    lines.append(f"  reached by no version checked, so checked against {bindings[0].version}: "
                 + ", ".join(sorted({u.chain for u in unreached})))
    report_section("TensorRT API conformance (the registry's bindings wheels, read without libnvinfer)", lines)
    # the bindings branch is what no checked version takes: 8.6 and later have the named-tensor API
    assert {u.chain for u in unreached} >= {"engine.num_bindings", "self.context.execute_async_v2"}


def _copy_with(tmp_path, path, old, new):
    shutil.copytree(os.path.join(conformance.ROOT, "edge_stad"), tmp_path / "edge_stad")
    file = tmp_path / path
    text = file.read_text()
    assert old in text, f"{old!r} is no longer in {path}"
    file.write_text(text.replace(old, new, 1))
    return conformance.Analysis(roots=("edge_stad",), base=str(tmp_path))


@pytest.mark.parametrize("path, old, new, missing", [
    # the bindings API where the named one runs: 10 and 11 lack it
    ("edge_stad/engines/tensorrt_backend.py", "ok = self.context.execute_async_v3(int(cuda.stream))",
     "ok = self.context.execute_async_v2([pointers[n] for n in self.names], int(cuda.stream))",
     {("10.3.0", "execute_async_v2"), ("10.16.1.11", "execute_async_v2"), ("11.4.0.106", "execute_async_v2")}),
    # a weakly typed builder flag outside `if major < 11`: 11 lacks it
    ("edge_stad/build/tensorrt_plans.py", "    _batch_profile(builder, network, config, max_batch)\n",
     "    _batch_profile(builder, network, config, max_batch)\n    config.set_flag(trt.BuilderFlag.FP16)\n",
     {("11.4.0.106", "FP16")}),
    # a name no version has
    ("edge_stad/engines/tensorrt_backend.py", "engine.create_execution_context()",
     "engine.create_execution_context_v2()",
     {(v, "create_execution_context_v2") for v in ("8.6.1", "10.3.0", "10.16.1.11", "11.4.0.106")}),
])
def test_an_injected_name_a_version_lacks_fails(bindings, tmp_path, path, old, new, missing):
    analysis = _copy_with(tmp_path, path, old, new)
    failures, _ = conformance.check(analysis.uses, bindings)
    assert {(version, use.name) for version, use in failures} == missing
