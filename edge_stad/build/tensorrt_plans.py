"""TensorRT engine (``.plan``) builds from the exported ONNX, for TensorRT 8.5 (JetPack 5,
Xavier), 10.x (JetPack 6, Orin) and 11.x.

Written against TensorRT's documented Python API; imported lazily so that this module
loads anywhere. What differs by version:

* network flags: explicit batch must be requested before 10 (it is the only mode after);
  11 builds *strongly typed* networks only, so precision comes from the ONNX itself
  (an FP16 ONNX, or the QDQ ONNX for INT8) instead of builder flags;
* before 11, FP16 and INT8 are builder flags; INT8 with a QDQ ONNX is explicit
  quantization (the scales are in the graph);
* ``--calib-cache`` (implicit INT8, TensorRT <= 10 only, for DLA users): TensorRT runs its
  entropy calibrator over the calibration windows on the GPU and writes its cache;
* DLA (Jetson): default device DLA with GPU fallback, on the chosen core.

A timing cache is read and updated when given, so rebuilding on the same device is fast.
Plans are not portable between TensorRT versions or GPUs: build them on the target.
"""
import os

import numpy as np

from edge_stad.atomic import atomic_write
from edge_stad.engines import tensorrt_runtime
from edge_stad.engines.tensorrt_runtime import OPERATOR_SINCE, major_version
from edge_stad.errors import ConfigError, EngineError, MissingDependencyError


def _network_flags(trt):
    major = major_version(trt)
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if major >= 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


class _EntropyCalibrator:
    """Factory for a ``trt.IInt8EntropyCalibrator2`` fed from host batches through cuda-python."""

    @staticmethod
    def create(trt, batches, cache_path):
        cudart = tensorrt_runtime.cudart()   # cuda.bindings.runtime (12.x, 13.x) or cuda.cudart (11.x)

        def check(result):
            err = result[0] if isinstance(result, tuple) else result
            if int(err) != 0:
                raise EngineError(f"CUDA call failed during calibration: {err}")
            return result[1] if isinstance(result, tuple) and len(result) > 1 else None

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                super().__init__()
                self.batches = iter(batches)
                self.buffers = {}

            def get_batch_size(self):
                return 1

            def get_batch(self, names):
                feed = next(self.batches, None)
                if feed is None:
                    return None
                pointers = []
                for name in names:
                    array = np.ascontiguousarray(feed[name])
                    if name not in self.buffers:
                        self.buffers[name] = check(cudart.cudaMalloc(array.nbytes))
                    check(cudart.cudaMemcpy(self.buffers[name], array.ctypes.data, array.nbytes,
                                            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
                    pointers.append(int(self.buffers[name]))
                return pointers

            def read_calibration_cache(self):
                if os.path.isfile(cache_path):
                    with open(cache_path, "rb") as f:
                        return f.read()
                return None

            def write_calibration_cache(self, cache):
                with atomic_write(cache_path, "wb") as f:
                    f.write(bytes(cache))

        return Calibrator()


MAX_BATCH = 8  # largest batch of a dynamic-batch plan (cameras served by one Runtime)


def _batch_profile(builder, network, config, max_batch):
    """Dynamic-batch ONNX inputs need an optimization profile: batch 1 to ``max_batch``, tuned for 1."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in inputs if tuple(t.shape)[:1] == (-1,)]
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        rest = tuple(tensor.shape)[1:]
        if any(d < 0 for d in rest):
            raise EngineError(f"input {tensor.name} has dynamic axes besides the batch: {tuple(tensor.shape)}")
        profile.set_shape(tensor.name, (1,) + rest, (1,) + rest, (int(max_batch),) + rest)
    config.add_optimization_profile(profile)


def pin_fp32(trt, network, config, scopes):
    """Keep the layers whose names hold one of ``scopes`` (the ONNX parser names layers after their nodes) in
    FP32 under the FP16/INT8 builder flags of TensorRT < 11; returns their names.

    The FP16 and QDQ ONNX files already compute those (attention energies, softmax, products) in
    FP32 (casts, no Q/DQ), but weakly typed networks treat a cast as a hint: without the
    constraint TensorRT may fold it and pick FP16 kernels. Convolutions in a scope (the non-local
    block's 1x1x1 projections) and Q/DQ layers keep what the build gives them. Strongly typed
    networks (TensorRT 11) follow the ONNX types and need nothing here.
    """
    keep = (trt.LayerType.CONVOLUTION, trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in keep and any(scope in layer.name for scope in scopes):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(j, trt.float32)
            pinned.append(layer.name)
    if pinned:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return pinned


def unparsable_operators(onnx_path, version):
    """``{operator: first TensorRT version}`` of the operators in the ONNX graph ``onnx_path`` that TensorRT
    ``version`` ("8.4.1") cannot parse (:data:`~edge_stad.engines.tensorrt_runtime.OPERATOR_SINCE`)."""
    import onnx

    have = tuple(int(p) for p in str(version).split(".")[:2] if p.isdigit())
    ops = {node.op_type for node in onnx.load(os.fspath(onnx_path), load_external_data=False).graph.node}
    return {op: since for op, since in OPERATOR_SINCE.items() if op in ops and have < since}


def build_plan(onnx_path, plan_path, precision="fp32", workspace_mb=1024, timing_cache=None, dla_core=None,
               calibration_feeds=None, calibration_cache=None, max_batch=MAX_BATCH, fp32_scopes=()):
    """Build and atomically write a serialized TensorRT engine for ``onnx_path``.

    A dynamic-batch ONNX (``--dynamic-batch``) gets batches 1 to ``max_batch``.

    ``precision``: ``fp32``, ``fp16`` (flag before 11; an FP16 ONNX on 11) or ``int8``
    (a QDQ ONNX: explicit quantization). ``calibration_feeds`` + ``calibration_cache``
    with an FP32 ONNX and ``precision="int8"`` run TensorRT's implicit calibration
    (TensorRT <= 10 only). Layers under ``fp32_scopes`` stay FP32 (:func:`pin_fp32`). A graph with an operator
    this TensorRT cannot parse (:func:`unparsable_operators`) is refused before any work.
    Returns a dict for the manifest.
    """
    trt = tensorrt_runtime.tensorrt()
    major = major_version(trt)
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"unknown precision {precision!r}")
    missing = unparsable_operators(onnx_path, trt.__version__)
    if missing:
        needs = ", ".join(f"{op} (TensorRT >= {'.'.join(map(str, since))})" for op, since in missing.items())
        raise ConfigError(f"TensorRT {trt.__version__} cannot parse {needs} in {os.path.basename(onnx_path)}: no "
                          "TensorRT plan is built; build with --backend onnxruntime, or on a device with a newer "
                          "TensorRT (JetPack 5.1 and later ship 8.5)")
    implicit = calibration_feeds is not None
    if implicit and major >= 11:
        raise ConfigError(f"TensorRT {trt.__version__} has no implicit INT8 calibration; use the QDQ ONNX")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    _batch_profile(builder, network, config, max_batch)
    pinned = []
    if major < 11:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # layers INT8 cannot take fall back to FP16
            pinned = pin_fp32(trt, network, config, fp32_scopes)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            if implicit:
                config.int8_calibrator = _EntropyCalibrator.create(trt, calibration_feeds, calibration_cache)
    if dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise ConfigError("--dla-core was given but this device has no DLA")
        if precision == "fp32":
            raise ConfigError("DLA runs FP16 or INT8 only; build with --fp16 or --int8")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache = None
    if timing_cache is not None:
        data = b""
        if os.path.isfile(timing_cache):
            with open(timing_cache, "rb") as f:
                data = f.read()
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT {trt.__version__} failed to build {onnx_path} (see its log above)")
    with atomic_write(plan_path, "wb") as f:
        f.write(bytes(serialized))
    if cache is not None:
        with atomic_write(timing_cache, "wb") as f:
            f.write(bytes(cache.serialize()))
    return {"tensorrt": trt.__version__, "precision": precision, "dla_core": dla_core,
            "strongly_typed": major >= 11, "implicit_int8": implicit, "fp32_layers": len(pinned)}


# The inputs of every graph an engine folder can hold (AMMA's encoder/head, MENet's encoder3d/detector).
GRAPH_INPUTS = {"encoder": ("frames",), "head": ("feats", "whs"), "encoder3d": ("clip",),
                "detector": ("frames", "feat3d")}


def verify_plans(folder, plans):
    """Run each plan on the inputs of ``folder/reference_io.npz`` and compare with the ONNX Runtime
    outputs stored there; returns ``{graph: {output: max abs error}}``.

    Uses Polygraphy's ``TrtRunner`` (``pip install polygraphy``). Meant for the device: the
    reference was computed where the engine folder was built, possibly on another machine.
    """
    try:
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    except ImportError as e:
        raise MissingDependencyError("checking TensorRT plans needs polygraphy: pip install polygraphy") from e
    reference = np.load(os.path.join(folder, "reference_io.npz"))
    errors = {}
    for graph, plan in plans.items():
        prefix = graph + "."
        names = [k[len(prefix):] for k in reference.files if k.startswith(prefix)]
        inputs = GRAPH_INPUTS[graph]
        feed = {name: reference[prefix + name] for name in inputs}
        with open(os.path.join(folder, plan), "rb") as f:
            loader = EngineFromBytes(f.read())
        with TrtRunner(loader) as runner:
            outputs = runner.infer(feed_dict=feed)
        errors[graph] = {name: float(np.max(np.abs(np.asarray(outputs[name], np.float64)
                                                    - reference[prefix + name].astype(np.float64))))
                         for name in names if name not in inputs and name in outputs}
    return errors
