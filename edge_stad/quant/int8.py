"""INT8 by explicit quantization: one QDQ ONNX per graph, calibrated on real windows.

``onnxruntime.quantization.quantize_static`` in QDQ format (the export's opset), per-channel int8
weights, float biases, in one of two flavours (measured in benchmarks/results/int8_cpu.md):

* ``tensorrt``: what TensorRT's explicit quantization requires: symmetric int8
  activations (zero points 0; TensorRT 8.5 dequantizes int8 only), Q/DQ around the
  convolutions and the pooling, ReLU and resize between them. ONNX Runtime runs it
  too, but on x86 CPUs more slowly than FP32 (its S8S8 kernels);
* ``cpu``: what ONNX Runtime's x86/ARM CPU kernels are fast with: asymmetric uint8
  activations (U8S8), Q/DQ around the convolutions and around the data movement and
  fusion arithmetic between them (concat, reshape, transpose, split, pooling, resize,
  add, mul), so that ONNX Runtime runs the whole chain on uint8 (QLinearConcat,
  QLinearAdd, ... ) instead of dequantizing and requantizing at every node. Float stay:
  the transposed convolution (ONNX Runtime's CPU provider has no int8 kernel for it),
  and :func:`cpu_float_nodes`: the input normalisation, the micro-motion arithmetic and
  the convolutions over 3-4 input channels, which its int8 kernels run more slowly than
  FP32 (0.68 vs 0.35 ms for ShuffleNetV2's stem at 288x288). The build quantizes the
  folded FP32 graph (:mod:`edge_stad.models.deploy`) in this flavour.
  TensorRT cannot build this flavour.

Nodes listed in ``exclude`` stay in float (the sensitivity pass chooses them; for MENet also
the attention products, :func:`attention_nodes`). The head is calibrated on the FP32
encoder's features of the calibration windows, the encoder on every clip of those windows;
MENet's detector on the latest frames of each calibration clip with the FP32 encoder3d's
feature of that clip, its encoder3d on the clips. The tensor ranges are cached (JSON,
onnxruntime's format) so that re-quantizing with other layers kept in float does not
recalibrate.
"""
import logging

import numpy as np

from edge_stad.core.snippets import layout_of
from edge_stad.engines.snippet_backend import window_feeds
from edge_stad.engines.ssd_backend import pair_flows
from edge_stad.errors import ConfigError, MissingDependencyError
from edge_stad.model_config import graph_names

METHODS = ("minmax", "entropy", "percentile")
# Per flavour: activation type name, symmetric activations, layers given Q/DQ pairs.
# Normalisations, the micro-motion arithmetic, fusion sums and sigmoids stay float.
FLAVORS = {
    "tensorrt": ("QInt8", True, ("Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "Relu", "Resize")),
    "cpu": ("QUInt8", False, ("Conv", "Gemm", "MatMul", "Concat", "Reshape", "Transpose", "Split", "MaxPool",
                              "Resize", "Add", "Mul", "Relu", "Gather", "Slice")),
}
FEW_CHANNELS = 4     # convolutions over at most this many input channels stay float in the cpu flavour
FLOAT_SCOPES = ("/mm/", "/srm/")                     # micro-motion modules: every node
ATTENTION_SCOPES = ("/cfam/sc/", "/non_local/")       # MENet's attention: every node but the convolutions
FLOAT_FOLLOWERS = ("Relu", "MaxPool", "Slice")       # stay float where their input is float
MAX_STRIDE = 16  # feeds whose intermediate tensors are held at once during calibration
PERCENTILE = 99.999


def _quantization():
    try:
        from onnxruntime import quantization
    except ImportError as e:
        raise MissingDependencyError("INT8 calibration needs onnxruntime: pip install onnxruntime") from e
    return quantization


def encoder_feeds(windows):
    """Calibration feeds of the encoder: every clip of every window, batch 1."""
    return [{"frames": np.ascontiguousarray(clip[None])} for window in windows for clip in window]


def head_feeds(windows, encode):
    """Calibration feeds of the head: each window's K clip features from ``encode`` (the FP32 encoder)."""
    feeds = []
    for window in windows:
        feat, wh = encode(window)
        feeds.append({"feats": feat[None].astype(np.float32), "whs": wh[None].astype(np.float32)})
    return feeds


def frame_feeds(windows, encode_3d, frames_2d):
    """MENet's calibration feeds from one-clip windows ``(1, T, H, W, 3)``: ``encoder3d`` gets each
    clip, ``detector`` its latest ``frames_2d`` frames and ``encode_3d``'s (the FP32 graph's) feature."""
    clips = [np.ascontiguousarray(window[:1]) for window in windows]
    return {"encoder3d": [{"clip": clip} for clip in clips],
            "detector": [{"frames": np.ascontiguousarray(clip[:, -frames_2d:]), "feat3d": encode_3d(clip)}
                         for clip in clips]}


def snippet_feeds(windows, backend):
    """STMA's calibration feeds from one-clip windows ``(1, T, H, W, 3)``: ``encoder`` gets every frame the
    model encodes, ``encoder3d`` the clip, ``head`` the outputs of ``backend`` (the FP32 graphs) for its window."""
    layout = layout_of(backend.config)
    first, last = layout.encoded
    feeds = {g: [] for g in graph_names(backend.config)}
    for window in windows:
        feeds["encoder"] += [{"frames": np.ascontiguousarray(frame[None, None])} for frame in window[0, first:last + 1]]
        if "encoder3d" in feeds:
            feeds["encoder3d"].append({"clip": np.ascontiguousarray(window)})
        feeds["head"].append(window_feeds(backend, window[0]))
    return feeds


def ssd_feeds(windows, backend):
    """Flow fusion's calibration feeds from one-clip windows ``(1, T, H, W, 3)`` (the frames one detection reads):
    its ``detect`` graph (the only one quantized) gets the key frame and its pairs' flows from ``backend`` (the
    FP32 flow graph, or DIS on the host), or a micro-motion model's frames."""
    k, feeds = backend.key_index, []
    for window in windows:
        if backend.config["motion"] == "micro-motion":
            feeds.append({"frames": np.ascontiguousarray(window)})
        else:
            feeds.append({"frames": np.ascontiguousarray(window[:, k:k + 1]),
                          "flows": np.ascontiguousarray(pair_flows(window, backend.pair_flow), np.float32)})
    return {"detect": feeds}


def attention_nodes(onnx_path, scopes, op_types=("MatMul", "Softmax")):
    """Names of the ``op_types`` nodes under the exporter's module ``scopes`` (``"/cfam/sc/"``): attention
    energies and weights, whose ranges one int8 scale cannot hold (the model computes them in FP32)."""
    import onnx

    return [node.name for node in onnx.load(str(onnx_path)).graph.node
            if node.op_type in op_types and any(scope in node.name for scope in scopes)]


def cpu_float_nodes(model):
    """Names of the nodes of the ONNX ``model`` that stay float in the ``cpu`` flavour: those outside any
    module (the input's layout change and normalisation), those under :data:`FLOAT_SCOPES` (the
    micro-motion differences and norm; MENet's attention arithmetic), convolutions over at
    most :data:`FEW_CHANNELS` input channels, and the :data:`FLOAT_FOLLOWERS` reading a float node
    (a stem's ReLU and max-pool: ONNX Runtime's uint8 max-pool is several times slower than its
    float one, and a max-pool gives the same values before or after the monotone quantization; the
    crop after the motion stem's convolution)."""
    weights = {t.name: t.dims for t in model.graph.initializer}
    names, float_outputs = [], set()
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        few = (node.op_type == "Conv" and node.input[1] in weights
               and weights[node.input[1]][1] * groups <= FEW_CHANNELS)
        attention = node.op_type != "Conv" and node.name.startswith(ATTENTION_SCOPES)
        follower = node.op_type in FLOAT_FOLLOWERS and node.input[0] in float_outputs
        if (few or attention or follower or node.name.count("/") <= 1
                or node.name.startswith(FLOAT_SCOPES)):
            names.append(node.name)
            float_outputs.update(node.output)
    return names


def feed_reader(feeds):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a list of feed dicts.

    It supports ``set_range`` so that calibration runs in strides (``CalibStridedMinMax``):
    the ranges are merged stride by stride instead of holding every intermediate tensor
    of every feed in memory at once.
    """
    q = _quantization()

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.set_range(0, len(feeds))

        def __len__(self):
            return len(feeds)

        def set_range(self, start_index, end_index):
            self.items = iter(feeds[start_index:end_index])

        def get_next(self):
            return next(self.items, None)

    return Reader()


def _stride(n, most=MAX_STRIDE):
    """The largest divisor of ``n`` up to ``most`` (onnxruntime wants strides that tile the data)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def quantize_int8(fp32_path, out_path, feeds, method="minmax", exclude=(), ranges_path=None, flavor="tensorrt"):
    """Write the QDQ INT8 twin of the ONNX file ``fp32_path`` to ``out_path``, calibrated on ``feeds``.

    With ``ranges_path``, an existing range cache there is reused (``feeds`` may then be
    empty) and a new calibration is saved there.
    """
    q = _quantization()
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if flavor not in FLAVORS:
        raise ConfigError(f"unknown INT8 flavour {flavor!r}; choose one of {', '.join(FLAVORS)}")
    activation, symmetric, op_types = FLAVORS[flavor]
    if flavor == "cpu":
        import onnx

        exclude = list(exclude) + cpu_float_nodes(onnx.load(str(fp32_path)))
    calibrate = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                 "percentile": q.CalibrationMethod.Percentile}[method]
    root = logging.getLogger()  # onnxruntime.quantization logs advice on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        q.quantize_static(
            str(fp32_path), str(out_path), feed_reader(feeds) if feeds else None, quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=True, activation_type=getattr(q.QuantType, activation),
            weight_type=q.QuantType.QInt8, calibrate_method=calibrate, nodes_to_exclude=list(exclude),
            calibration_cache_path=None if ranges_path is None else str(ranges_path),
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": False,
                           "CalibPercentile": PERCENTILE,
                           "CalibStridedMinMax": _stride(len(feeds)) if feeds else None})
    finally:
        root.setLevel(level)
