"""TensorRT backends: an engine folder's plans on the GPU (Jetson or desktop).

:class:`TensorRTBackend` runs AMMA's ``encoder.plan`` and ``head.plan`` with the interface of
:class:`~edge_stad.engines.onnxruntime_backend.OnnxRuntimeBackend`; :class:`TensorRTFrameBackend` runs
MENet's ``encoder3d.plan`` and ``detector.plan`` with that of
:class:`~edge_stad.engines.onnxruntime_backend.OnnxRuntimeFrameBackend`. Evaluation and the runtime take
either. Written against TensorRT's documented Python API and imported lazily, so this module
loads anywhere. TensorRT has two I/O APIs; the engine's own attributes pick one, not the version number:

* named tensors (8.6 on, the only one from 10): ``set_input_shape``, ``set_tensor_address``,
  ``execute_async_v3``;
* bindings (8.5, JetPack 5): ``set_binding_shape`` and a pointer per binding for ``execute_async_v2``.

Device memory and the stream come from cuda-python's runtime API. Each tensor's device buffer is allocated
on first use and again only when a larger shape arrives, so steady-state inference allocates nothing. Free
them with :meth:`TensorRTBackend.close` or a ``with`` block.
"""
import os

import numpy as np

from edge_stad.core.region_decode import detector_frames
from edge_stad.core.tubelet_decode import decode
from edge_stad.engines import tensorrt_runtime
from edge_stad.engines.graph_io import check_graph_io, frame_input
from edge_stad.engines.manifest import read_manifest, verified_files
from edge_stad.engines.snippet_backend import SnippetGraphs
from edge_stad.engines.ssd_backend import SsdGraphs
from edge_stad.engines.tensorrt_runtime import cudart
from edge_stad.errors import EngineError
from edge_stad.model_config import engine_kind, graph_names

# the accepted input and output sets of each graph as exported (edge_stad.export: onnx_export, frame_graphs,
# snippet_graphs, ssd_graphs), checked where a plan opens without a model config (graph_io checks it against one)
IO = {"encoder": ([["frames"]], [["feat", "wh"], ["act", "feat", "wh"]]),
      "head": ([["feats", "whs"], ["acts", "feats", "whs"], ["acts", "feat3d", "feats", "whs"]],
               [["hm", "mov", "wh"], ["tubelets"], ["cls", "hm", "mov", "wh"]]),
      "encoder3d": ([["clip"]], [["feat3d"]]),
      "detector": ([["feat3d", "frames"]], [["region"]]),
      "flow": ([["frames"]], [["flow"]]),
      "detect": ([["frames"], ["flows", "frames"]], [["conf", "loc"]])}


def _rebuild(folder):
    return (f"build them on this device: edge-stad build --checkpoint <checkpoint> [--fp16|--int8] --backend tensorrt "
            f"--out {folder} --force (plans do not move between TensorRT versions or GPUs)")


class _Cuda:
    """The device and its one stream; calls cuda-python (which returns ``(error, *values)``) and checks the error."""

    def __init__(self, device):
        self.rt = cudart()
        self.device = int(device)
        self("cudaSetDevice", self.device)
        self.stream = self("cudaStreamCreate")

    def __call__(self, name, *args):
        result = getattr(self.rt, name)(*args)
        if int(result[0]) != 0:
            raise EngineError(f"CUDA {name} failed on device {self.device}: {result[0]}")
        return result[1] if len(result) > 1 else None

    def close(self):
        if self.stream is not None:
            self("cudaStreamDestroy", self.stream)
            self.stream = None


class _Plan:
    """One deserialized plan: its execution context, I/O names, shapes and dtypes, and its device buffers.

    ``source`` is a path, or the plan's bytes with ``folder`` the engine they came from (what the
    loader verified: nothing is read again by name)."""

    def __init__(self, trt, runtime, source, graph, cuda, folder=None):
        if isinstance(source, (bytes, bytearray)):
            name, data = f"the {graph} plan of engine {folder}", source
        else:
            name, folder = os.fspath(source), os.path.dirname(os.path.abspath(source))
            with open(name, "rb") as f:
                data = f.read()
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise EngineError(f"TensorRT {trt.__version__} cannot load {name}: it was built by another TensorRT "
                              f"version or for another GPU; {_rebuild(folder)}")
        self.graph, self.cuda, self.buffers = graph, cuda, {}   # buffers: name -> (bytes, device pointer)
        self.engine, self.context = engine, engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"TensorRT cannot create an execution context for {name} (out of device memory?)")
        self.named = hasattr(engine, "num_io_tensors")
        if self.named:
            self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            is_input = [engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in self.names]
            shapes = [engine.get_tensor_shape(n) for n in self.names]
            dtypes = [engine.get_tensor_dtype(n) for n in self.names]
        else:
            self.names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
            is_input = [engine.binding_is_input(i) for i in range(len(self.names))]
            shapes = [engine.get_binding_shape(i) for i in range(len(self.names))]
            dtypes = [engine.get_binding_dtype(i) for i in range(len(self.names))]
        self.inputs = [n for n, i in zip(self.names, is_input) if i]
        self.outputs = [n for n, i in zip(self.names, is_input) if not i]
        self.shapes = {n: tuple(int(d) for d in s) for n, s in zip(self.names, shapes)}
        self.dtypes = {n: np.dtype(trt.nptype(d)) for n, d in zip(self.names, dtypes)}
        if graph in IO:
            inputs, outputs = IO[graph]
            if sorted(self.inputs) not in inputs or sorted(self.outputs) not in outputs:
                raise EngineError(f"{name} takes {self.inputs} and returns {self.outputs}; an edge_stad {graph} "
                                  f"takes {' or '.join(map(str, inputs))} and returns {' or '.join(map(str, outputs))}")

    def _buffer(self, name, nbytes):
        if name not in self.buffers or self.buffers[name][0] < nbytes:
            if name in self.buffers:
                self.cuda("cudaFree", self.buffers.pop(name)[1])
            self.buffers[name] = (nbytes, int(self.cuda("cudaMalloc", max(nbytes, 1))))
        return self.buffers[name][1]

    def _set_shape(self, name, shape):
        """Tell the context a dynamic input's shape; False when it lies outside the plan's optimization profile."""
        if self.named:
            return self.context.set_input_shape(name, shape)
        return self.context.set_binding_shape(self.names.index(name), shape)

    def _output_shape(self, name):
        if self.named:
            return tuple(self.context.get_tensor_shape(name))
        return tuple(self.context.get_binding_shape(self.names.index(name)))

    def run(self, feeds):
        """Host arrays in, host arrays out: copy in, execute, copy out on the stream, then synchronise."""
        cuda = self.cuda
        cuda("cudaSetDevice", cuda.device)   # the runtime API's current device is per thread
        host = {}
        for name in self.inputs:
            host[name] = np.ascontiguousarray(feeds[name], self.dtypes[name])
            shape, expected = host[name].shape, self.shapes[name]
            if len(shape) != len(expected) or any(e not in (-1, s) for e, s in zip(expected, shape)):
                wanted = "(" + ", ".join("N" if e == -1 else str(e) for e in expected) + ")"
                raise ValueError(f"the {self.graph} plan takes {name} shaped {wanted}, got {shape}")
            if -1 in expected and not self._set_shape(name, shape):
                raise EngineError(f"the {self.graph} plan cannot take {name} shaped {shape}: outside the batch range "
                                  "it was built for")
        for name in self.outputs:
            host[name] = np.empty(self._output_shape(name), self.dtypes[name])
        pointers = {name: self._buffer(name, array.nbytes) for name, array in host.items()}
        kinds = cuda.rt.cudaMemcpyKind
        try:
            for name in self.inputs:
                cuda("cudaMemcpyAsync", pointers[name], host[name].ctypes.data, host[name].nbytes,
                     kinds.cudaMemcpyHostToDevice, cuda.stream)
            if self.named:
                for name, pointer in pointers.items():
                    self.context.set_tensor_address(name, pointer)
                ok = self.context.execute_async_v3(int(cuda.stream))
            else:
                ok = self.context.execute_async_v2([pointers[n] for n in self.names], int(cuda.stream))
            if not ok:
                raise EngineError(f"TensorRT failed to run the {self.graph} plan (see its log above)")
            for name in self.outputs:
                cuda("cudaMemcpyAsync", host[name].ctypes.data, pointers[name], host[name].nbytes,
                     kinds.cudaMemcpyDeviceToHost, cuda.stream)
        finally:
            cuda("cudaStreamSynchronize", cuda.stream)   # the host arrays must outlive every queued copy
        return {name: host[name] for name in self.outputs}

    def close(self):
        while self.buffers:
            self.cuda("cudaFree", self.buffers.popitem()[1][1])
        self.context = None   # before its engine
        self.engine = None


class _PlanSet:
    """The plans of one engine, run in turn on one CUDA stream of device ``device``."""

    def __init__(self, sources, config, device=0, folder=None):
        trt = tensorrt_runtime.tensorrt()
        self.config = config
        self.manifest = None
        self.plans = {}
        self.cuda = _Cuda(device)
        try:
            self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            for graph, source in sources.items():
                plan = self.plans[graph] = _Plan(trt, self.runtime, source, graph, self.cuda, folder)
                if folder is not None:   # opened from an engine folder: its plans against its manifest's model
                    check_graph_io(config, graph, {n: plan.shapes[n] for n in plan.inputs},
                                   {n: plan.shapes[n] for n in plan.outputs}, f"engine {folder}")
        except BaseException:
            self.close()
            raise

    def _run(self, graph, feeds):
        """One run, or one per item where the plan's batch is a static 1 and another number of items comes."""
        if graph not in self.plans:
            raise EngineError("this TensorRT backend is closed")
        plan = self.plans[graph]
        count = len(feeds[plan.inputs[0]])
        if count == 0:
            raise ValueError(f"the {graph} got an empty batch")
        if plan.shapes[plan.inputs[0]][0] != 1 or count == 1:
            return plan.run(feeds)
        parts = [plan.run({name: array[i:i + 1] for name, array in feeds.items()}) for i in range(count)]
        return {name: np.concatenate([part[name] for part in parts]) for name in plan.outputs}

    def close(self):
        """Free the device buffers and the stream and drop the engines; the backend cannot run afterwards."""
        for plan in self.plans.values():
            plan.close()
        self.plans = {}
        self.cuda.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TensorRTBackend(_PlanSet):
    """AMMA's encoder and head plans (paths, or bytes from engine ``folder``) on CUDA device ``device``;
    see :func:`open_tensorrt_engine`."""

    kind = "tubelet"
    device_resident = False
    link_matrices = None
    labels = ()

    def __init__(self, encoder_plan, head_plan, config, device=0, folder=None):
        super().__init__({"encoder": encoder_plan, "head": head_plan}, config, device, folder)
        self.decodes_in_graph = self.plans["head"].outputs == ["tubelets"]

    def encode(self, frames):
        """uint8 BGR clips ``(N, n, H, W, 3)`` -> ``(feat, wh)``; one run per clip on static-batch plans."""
        out = self._run("encoder", {"frames": np.asarray(frames, np.uint8)})
        return tuple(np.asarray(out[name], np.float32) for name in ("feat", "wh"))

    def _head(self, feats, whs):
        return self._run("head", {"feats": np.asarray(feats, np.float32), "whs": np.asarray(whs, np.float32)})

    def head(self, feats, whs):
        if self.decodes_in_graph:
            raise ValueError("this head plan decodes in-graph and returns tubelets, not hm/mov/wh")
        out = self._head(feats, whs)
        return tuple(np.asarray(out[name], np.float32) for name in ("hm", "mov", "wh"))

    def detect(self, feats, whs, reference_y_rounding=False):
        if self.decodes_in_graph:
            if reference_y_rounding:
                raise ValueError("reference_y_rounding needs host decoding; this head plan decodes in-graph")
            return np.asarray(self._head(feats, whs)["tubelets"], np.float32)
        return decode(*self.head(feats, whs), reference_y_rounding=reference_y_rounding)


class TensorRTFrameBackend(_PlanSet):
    """MENet's encoder3d and detector plans on CUDA device ``device`` (the frame backend interface of
    :mod:`edge_stad.eval.predict_frames`; the region map is decoded on the host)."""

    kind = "frame"
    labels = ()

    def __init__(self, encoder3d_plan, detector_plan, config, device=0, folder=None):
        super().__init__({"encoder3d": encoder3d_plan, "detector": detector_plan}, config, device, folder)
        self.frames_2d = detector_frames(config)

    def encode_3d(self, frames):
        """uint8 BGR clips ``(N, T, H, W, 3)`` -> 3D features ``(N, C3, h, w)``."""
        clip = frame_input(frames, self.config["clip_len"], self.config, "clips")
        return np.asarray(self._run("encoder3d", {"clip": clip})["feat3d"], np.float32)

    def detect(self, frames, feat3d):
        """uint8 BGR latest frames ``(N, S, H, W, 3)`` and ``encode_3d``'s features -> region ``(N, A(5+C), h, w)``."""
        feeds = {"frames": frame_input(frames, self.frames_2d, self.config, "frames"),
                 "feat3d": np.asarray(feat3d, np.float32)}
        return np.asarray(self._run("detector", feeds)["region"], np.float32)


class _GraphPlans(_PlanSet):
    """The plans of the model ``config``'s graphs and ``run_graph`` over them (what the snippet and SSD graph
    mixins run on)."""

    def __init__(self, *plans, config, device=0, folder=None):
        _PlanSet.__init__(self, dict(zip(graph_names(config), plans)), config, device, folder)

    def run_graph(self, name, feeds):
        return {k: np.asarray(v, np.float32) for k, v in self._run(name, feeds).items()}


class TensorRTSnippetBackend(SnippetGraphs, _GraphPlans):
    """STMA's encoder, encoder3d (with a 3D branch) and head plans on CUDA device ``device`` (the snippet
    backend interface of :mod:`edge_stad.eval.predict_snippets`; the head is decoded on the host)."""


class TensorRTSsdBackend(SsdGraphs, _GraphPlans):
    """A flow-fusion engine's flow (learned flow network) and detect plans on CUDA device ``device`` (the SSD
    backend interface of :mod:`edge_stad.eval.predict_ssd`; decoded on the host)."""


class _OwnPlan(_Plan):
    """A plan holding its own TensorRT runtime and CUDA stream (see :func:`open_plan`)."""

    def __init__(self, trt, path, cuda):
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # must outlive the engine
        super().__init__(trt, self.runtime, path, os.path.basename(path), cuda)

    def close(self):
        super().close()
        self.cuda.close()


def open_plan(path, device=0):
    """One plan of any graph on CUDA device ``device``, for measurements (the GEMM peak of
    :mod:`edge_stad.bench.peak`): ``run({input: array}) -> {output: array}``; ``close()`` frees it all."""
    trt = tensorrt_runtime.tensorrt()
    cuda = _Cuda(device)
    try:
        return _OwnPlan(trt, os.fspath(path), cuda)
    except BaseException:
        cuda.close()
        raise


def plan_version_problem(folder, manifest, version):
    """Why TensorRT ``version`` cannot load the plans of engine ``folder`` (another version built them), or None."""
    built = (manifest.get("tensorrt") or {}).get("tensorrt")
    if built and built != version:
        return (f"engine {folder}: its plans were built by TensorRT {built}, this is TensorRT {version}; "
                f"{_rebuild(folder)}")
    return None


def open_tensorrt_engine(folder, device=0, manifest=None):
    """The TensorRT backend of engine ``folder`` (:class:`TensorRTFrameBackend` for MENet,
    :class:`TensorRTSnippetBackend` for STMA, :class:`TensorRTSsdBackend` for flow fusion,
    else :class:`TensorRTBackend`), after its manifest and checksums
    are verified (pass ``manifest`` when :func:`~edge_stad.engines.manifest.read_manifest` read it already; every
    file is verified here, and the plans are deserialized from the very bytes that were hashed).

    The plans are the manifest's ``plans`` (written by ``edge-stad build`` where TensorRT is importable) and
    must be among its checksummed files. A folder without them is an :class:`EngineError` naming the build
    command; a missing ``tensorrt`` module a :class:`MissingDependencyError`.
    """
    folder = os.fspath(folder)
    manifest = read_manifest(folder, verify=False) if manifest is None else manifest
    plans = manifest.get("plans") or {}
    rels = [plans.get(graph, f"{graph}.plan") for graph in graph_names(manifest["model"])]
    if any(rel not in manifest["files"] for rel in rels):
        raise EngineError(f"engine {folder} has no TensorRT plans; {_rebuild(folder)}")
    trt = tensorrt_runtime.tensorrt()
    problem = plan_version_problem(folder, manifest, trt.__version__)
    if problem:
        raise EngineError(problem)
    data = verified_files(folder, manifest, load=rels)   # every file checked; the plans' bytes kept
    kind = {"frame": TensorRTFrameBackend, "snippet": TensorRTSnippetBackend,
            "ssd": TensorRTSsdBackend}.get(engine_kind(manifest["model"]), TensorRTBackend)
    backend = kind(*(data[rel] for rel in rels), config=manifest["model"], device=device, folder=folder)
    backend.manifest = manifest
    return backend
