"""TensorRT backend: refusals and lazy imports everywhere; its I/O plumbing (both TensorRT APIs, buffers, the
static-batch loop, in-graph decoding) on a stand-in TensorRT that runs the ONNX graphs with ONNX Runtime on host
memory; and, where TensorRT and cuda-python are importable, real FP32 plans against ONNX Runtime."""
import ctypes
import json
import subprocess
import sys
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest
from engine_helpers import build, cuda_python_available, with_plans

from edge_stad.engines import tensorrt_backend, tensorrt_runtime
from edge_stad.engines.tensorrt_backend import TensorRTBackend, open_tensorrt_engine
from edge_stad.errors import EngineError, MissingDependencyError

REAL_CUDART = tensorrt_backend.cudart


def quiet(_):
    pass


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    static = build(root / "static", backend="onnxruntime", decode_in_graph=False)
    dynamic = build(root / "dynamic", backend="onnxruntime", dynamic_batch=True, decode_in_graph=True)
    return {"static": static, "dynamic": dynamic, "static_plans": with_plans(static, root / "static_plans"),
            "dynamic_plans": with_plans(dynamic, root / "dynamic_plans")}


def onnxruntime_reference(folder):
    """The same engine folder on ONNX Runtime's CPU provider."""
    from edge_stad.engines.onnxruntime_backend import OnnxRuntimeBackend

    config = json.loads((folder / "manifest.json").read_text())["model"]
    return OnnxRuntimeBackend(folder / "encoder.onnx", folder / "head.onnx", config)


def clips(config, count, seed=0):
    h, w = config["input_size"]
    return np.random.default_rng(seed).integers(0, 256, (count, config["clip_len"], h, w, 3), dtype=np.uint8)


def test_module_imports_without_tensorrt_cuda_or_torch():
    code = ("import sys, edge_stad.engines.tensorrt_backend; "
            "assert not {'tensorrt', 'cuda', 'torch', 'onnxruntime'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_folder_without_plans_says_how_to_build_them(engines):
    with pytest.raises(EngineError, match="has no TensorRT plans; build them on this device: edge-stad build "
                                          ".*--backend tensorrt"):
        open_tensorrt_engine(engines["static"])


def test_plans_without_tensorrt_say_so(engines):
    if tensorrt_runtime.available():
        pytest.skip("TensorRT is importable here")
    with pytest.raises(MissingDependencyError, match="TensorRT is not importable"):
        open_tensorrt_engine(engines["static_plans"])


# A stand-in for TensorRT and cuda-python: "device pointers" are addresses of host buffers and an "engine" is the
# ONNX graph run by ONNX Runtime, reading its inputs from and writing its outputs to the bound addresses.

class FakeCudart:
    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self):
        self.memory, self.mallocs = {}, 0

    def cudaSetDevice(self, device):
        return (0,)

    def cudaStreamCreate(self):
        return (0, 7)

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaMalloc(self, nbytes):
        buffer = ctypes.create_string_buffer(nbytes)
        self.memory[ctypes.addressof(buffer)] = buffer
        self.mallocs += 1
        return (0, ctypes.addressof(buffer))

    def cudaFree(self, pointer):
        del self.memory[pointer]
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return (0,)


IO = namedtuple("IO", "name is_input shape dtype")


class FakeEngine:
    DTYPES = {"tensor(uint8)": np.dtype(np.uint8), "tensor(float)": np.dtype(np.float32)}

    def __init__(self, session):
        self.session, self.runs = session, 0
        self.io = [IO(arg.name, is_input, tuple(d if isinstance(d, int) else -1 for d in arg.shape),
                      self.DTYPES[arg.type])
                   for is_input, args in ((True, session.get_inputs()), (False, session.get_outputs()))
                   for arg in args]
        self.by_name = {io.name: io for io in self.io}
        self.inputs = [io for io in self.io if io.is_input]
        self.outputs = [io for io in self.io if not io.is_input]

    def create_execution_context(self):
        return self.Context(self)


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes = engine, {io.name: io.shape for io in engine.io}

    def _set_shape(self, name, shape):
        if any(e not in (-1, s) for e, s in zip(self.engine.by_name[name].shape, shape)):
            return False
        self.shapes[name] = tuple(shape)
        if all(-1 not in self.shapes[io.name] for io in self.engine.inputs):   # infer the output shapes
            zeros = {io.name: np.zeros(self.shapes[io.name], io.dtype) for io in self.engine.inputs}
            outputs = self.engine.session.run(None, zeros)
            self.shapes.update((io.name, out.shape) for io, out in zip(self.engine.outputs, outputs))
        return True

    def _execute(self, addresses):
        self.engine.runs += 1
        feeds = {}
        for io in self.engine.inputs:
            raw = (ctypes.c_char * (int(np.prod(self.shapes[io.name])) * io.dtype.itemsize)).from_address(
                addresses[io.name])
            feeds[io.name] = np.frombuffer(raw, io.dtype).reshape(self.shapes[io.name]).copy()
        for io, value in zip(self.engine.outputs, self.engine.session.run(None, feeds)):
            assert value.shape == self.shapes[io.name]
            ctypes.memmove(addresses[io.name], np.ascontiguousarray(value).ctypes.data, value.nbytes)
        return True


class NamedEngine(FakeEngine):
    """TensorRT >= 8.6: named tensors."""

    class Context(FakeContext):
        def __init__(self, engine):
            super().__init__(engine)
            self.addresses = {}

        def set_input_shape(self, name, shape):
            return self._set_shape(name, shape)

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def set_tensor_address(self, name, pointer):
            self.addresses[name] = pointer

        def execute_async_v3(self, stream_handle):
            return self._execute(self.addresses)

    @property
    def num_io_tensors(self):
        return len(self.io)

    def get_tensor_name(self, i):
        return self.io[i].name

    def get_tensor_mode(self, name):
        return "input" if self.by_name[name].is_input else "output"

    def get_tensor_shape(self, name):
        return self.by_name[name].shape

    def get_tensor_dtype(self, name):
        return self.by_name[name].dtype


class BindingEngine(FakeEngine):
    """TensorRT 8.5: bindings."""

    class Context(FakeContext):
        def set_binding_shape(self, index, shape):
            return self._set_shape(self.engine.io[index].name, shape)

        def get_binding_shape(self, index):
            return self.shapes[self.engine.io[index].name]

        def execute_async_v2(self, bindings, stream_handle):
            return self._execute({io.name: pointer for io, pointer in zip(self.engine.io, bindings)})

    @property
    def num_bindings(self):
        return len(self.io)

    def get_binding_name(self, i):
        return self.io[i].name

    def binding_is_input(self, i):
        return self.io[i].is_input

    def get_binding_shape(self, i):
        return self.io[i].shape

    def get_binding_dtype(self, i):
        return self.io[i].dtype


def fake_tensorrt(engine_class, engines):
    from edge_stad.engines.onnxruntime_backend import create_session

    def deserialize_cuda_engine(data):
        try:
            session = create_session(bytes(data))
        except Exception:
            return None    # as TensorRT does for a plan from another version or GPU
        engines.append(engine_class(session))
        return engines[-1]

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    return SimpleNamespace(__version__="10.0.0.fake", Logger=Logger, nptype=lambda dtype: dtype,
                           Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=deserialize_cuda_engine),
                           TensorIOMode=SimpleNamespace(INPUT="input", OUTPUT="output"))


@pytest.fixture(params=[NamedEngine, BindingEngine], ids=["named", "bindings"])
def fake(request, monkeypatch):
    cudart, engines = FakeCudart(), []
    monkeypatch.setattr(tensorrt_runtime, "tensorrt", lambda: fake_tensorrt(request.param, engines))
    monkeypatch.setattr(tensorrt_backend, "cudart", lambda: cudart)
    return SimpleNamespace(cudart=cudart, engines=engines)


def test_static_batch_plans_match_onnxruntime(engines, fake):
    reference = onnxruntime_reference(engines["static"])
    with open_tensorrt_engine(engines["static_plans"]) as backend:
        assert backend.manifest["plans"]["head"] == "head.plan" and not backend.decodes_in_graph
        frames = clips(backend.config, 2)
        feat, wh = backend.encode(frames)
        assert fake.engines[0].runs == 2 and feat.dtype == np.float32   # one run per clip: the batch is a static 1
        for got, want in zip((feat, wh), reference.encode(frames)):
            np.testing.assert_array_equal(got, want)
        mallocs = fake.cudart.mallocs
        backend.encode(frames[:1])
        assert fake.cudart.mallocs == mallocs                            # buffers are reused
        window = feat[None], wh[None]
        for got, want in zip(backend.head(*window), reference.head(*window)):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(backend.detect(*window), reference.detect(*window))
        np.testing.assert_array_equal(backend.detect(*window, reference_y_rounding=True),
                                      reference.detect(*window, reference_y_rounding=True))
        with pytest.raises(ValueError, match=r"the encoder plan takes frames shaped \(1, 5, 64, 64, 3\), got "
                                             r"\(1, 5, 32, 64, 3\)"):
            backend.encode(frames[:, :, :32])
        with pytest.raises(ValueError, match="empty batch"):
            backend.encode(frames[:0])
    assert not fake.cudart.memory                                        # all freed on leaving the block
    with pytest.raises(EngineError, match="closed"):
        backend.encode(frames)


def test_dynamic_batch_plans_and_in_graph_decoding(engines, fake):
    reference = onnxruntime_reference(engines["dynamic"])
    backend = open_tensorrt_engine(engines["dynamic_plans"])
    assert backend.decodes_in_graph
    frames = clips(backend.config, 3)
    feat, wh = backend.encode(frames)
    assert fake.engines[0].runs == 1                                     # the batch is set, not looped
    np.testing.assert_array_equal(feat, reference.encode(frames)[0])
    windows = np.stack([feat[:2], feat[1:]]), np.stack([wh[:2], wh[1:]])
    np.testing.assert_array_equal(backend.detect(*windows), reference.detect(*windows))
    with pytest.raises(ValueError, match="decodes in-graph"):
        backend.head(*windows)
    with pytest.raises(ValueError, match="reference_y_rounding needs host decoding"):
        backend.detect(*windows, reference_y_rounding=True)
    backend.close()
    backend.close()
    assert not fake.cudart.memory


def test_plans_from_another_tensorrt_are_refused(engines, fake, tmp_path):
    folder = with_plans(engines["static"], tmp_path / "old", tensorrt={"tensorrt": "8.5.2.2"})
    with pytest.raises(EngineError, match="built by TensorRT 8.5.2.2, this is TensorRT 10.0.0.fake; build them on "
                                          "this device"):
        open_tensorrt_engine(folder)
    (tmp_path / "plan").write_bytes(b"not a plan")
    with pytest.raises(EngineError, match="cannot load .*plan: it was built by another TensorRT version or for "
                                          "another GPU; build them on this device"):
        TensorRTBackend(tmp_path / "plan", tmp_path / "plan", {})
    assert not fake.cudart.memory


def test_cuda_errors_and_missing_cuda_python(monkeypatch):
    monkeypatch.setattr(tensorrt_runtime, "tensorrt", lambda: fake_tensorrt(NamedEngine, []))

    class NoDevice(FakeCudart):
        def cudaSetDevice(self, device):
            return (101,)   # cudaErrorInvalidDevice

    monkeypatch.setattr(tensorrt_backend, "cudart", NoDevice)
    with pytest.raises(EngineError, match="CUDA cudaSetDevice failed on device 3"):
        TensorRTBackend("encoder.plan", "head.plan", {}, device=3)
    monkeypatch.setattr(tensorrt_backend, "cudart", REAL_CUDART)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):   # none importable,
        monkeypatch.setitem(sys.modules, name, None)                                # even if imported before
    with pytest.raises(MissingDependencyError, match="pip install cuda-python"):
        TensorRTBackend("encoder.plan", "head.plan", {})


# Real TensorRT plans on this machine's GPU.


needs_tensorrt = pytest.mark.skipif(not (tensorrt_runtime.available() and cuda_python_available()),
                                    reason="TensorRT and cuda-python are not both importable on this machine")


@needs_tensorrt
@pytest.mark.parametrize("decode_in_graph", [False, True], ids=["host_decode", "in_graph_decode"])
def test_fp32_plans_match_onnxruntime(tmp_path, decode_in_graph):
    folder = build(tmp_path / "e", backend="tensorrt", decode_in_graph=decode_in_graph)
    reference = onnxruntime_reference(folder)
    with open_tensorrt_engine(folder) as backend:
        assert backend.decodes_in_graph == decode_in_graph
        frames = clips(backend.config, 2)                               # two clips through a static batch of 1
        feat, wh = backend.encode(frames)
        ref_feat, ref_wh = reference.encode(frames)
        np.testing.assert_allclose(feat, ref_feat, atol=1e-3)
        np.testing.assert_allclose(wh, ref_wh, atol=1e-3)
        window = ref_feat[None], ref_wh[None]
        if not decode_in_graph:
            for got, want in zip(backend.head(*window), reference.head(*window)):
                np.testing.assert_allclose(got, want, atol=1e-3)
        rows, ref_rows = backend.detect(*window)[0], reference.detect(*window)[0]
        # near-equal scores may swap places: every row must have a counterpart within the tolerance
        assert rows.shape == ref_rows.shape
        assert np.abs(rows[:, None] - ref_rows[None]).max(axis=-1).min(axis=1).max() < 1e-3
