"""ONNX Runtime sessions for an engine's graphs (the CPU default; no torch).

* :class:`OnnxRuntimeBackend` (AMMA: ``encoder`` + ``head``) implements the backend interface of
  :mod:`edge_stad.eval.predict`. The head graph either returns ``hm, mov, wh`` (decoded here, on
  the host) or, when exported with in-graph decoding, the tubelet rows directly; both give the
  same rows.
* :class:`OnnxRuntimeFrameBackend` (MENet, MENet-Lite: ``encoder3d`` + ``detector``) implements the
  frame backend interface of :mod:`edge_stad.eval.predict_frames`.

Open an engine folder with :func:`edge_stad.engines.loader.open_backend`.
"""
import os

import numpy as np

from edge_stad.errors import EngineError, FrameError, MissingDependencyError
from edge_stad.runtime.decode import decode
from edge_stad.runtime.region_decode import detector_frames

# The graphs an engine of each model family holds, in run order.
TUBELET_GRAPHS = ("encoder", "head")
FRAME_GRAPHS = ("encoder3d", "detector")
FRAME_MODELS = ("menet", "menet-lite")  # model names whose engines run frame by frame


def is_frame_model(config):
    return config.get("name") in FRAME_MODELS


def graph_names(config):
    """The graphs of an engine of the model ``config`` (``encoder, head`` or ``encoder3d, detector``)."""
    return FRAME_GRAPHS if is_frame_model(config) else TUBELET_GRAPHS


# ONNX Runtime moves a QuantizeLinear up through a max-pool, so a float stem's pool would run on
# uint8 (several times slower there); the cpu INT8 flavour places its Q/DQ pairs itself.
DISABLED_OPTIMIZERS = ["QDQPropagationTransformer"]


def create_session(model, threads=None, providers=None):
    """An ``onnxruntime.InferenceSession`` for a path or serialized model, all graph optimisations on
    but :data:`DISABLED_OPTIMIZERS`, its thread pool idle (not spinning) between runs."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependencyError("onnxruntime is not installed: pip install onnxruntime") from e
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # a pool thread that spins after each run takes the core that decode and linking need next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"],
                                    disabled_optimizers=DISABLED_OPTIMIZERS)
    except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, NoSuchFile, ...)
        name = model if isinstance(model, (str, os.PathLike)) else "the serialized model"
        raise EngineError(f"ONNX Runtime {ort.__version__} cannot load {name}: {e}") from None


class OnnxRuntimeBackend:
    def __init__(self, encoder, head, config, threads=None, providers=None):
        self.config = config
        self.manifest = None
        self.encoder = create_session(encoder, threads, providers)
        self.head_session = create_session(head, threads, providers)
        self.decodes_in_graph = [o.name for o in self.head_session.get_outputs()] == ["tubelets"]

    def encode(self, frames):
        """uint8 BGR clips ``(N, n, H, W, 3)`` -> ``(feat, wh)``."""
        return tuple(_run(self.encoder, {"frames": np.ascontiguousarray(frames, dtype=np.uint8)}))

    def head(self, feats, whs):
        if self.decodes_in_graph:
            raise ValueError("this head graph decodes in-graph and returns tubelets, not hm/mov/wh")
        return tuple(_run(self.head_session, _window_feed(feats, whs)))

    def detect(self, feats, whs, reference_y_rounding=False):
        if self.decodes_in_graph:
            if reference_y_rounding:
                raise ValueError("reference_y_rounding needs host decoding; this head graph decodes in-graph")
            return _run(self.head_session, _window_feed(feats, whs))[0]
        return decode(*self.head(feats, whs), reference_y_rounding=reference_y_rounding)


def _window_feed(feats, whs):
    return {"feats": np.ascontiguousarray(feats, np.float32), "whs": np.ascontiguousarray(whs, np.float32)}


def _run(session, feed):
    """Outputs of ``session`` for a batch; one call per item where the graph's batch is a fixed 1."""
    batch = session.get_inputs()[0].shape[0]
    count = len(next(iter(feed.values())))
    if isinstance(batch, int) and batch != count:
        outs = [session.run(None, {k: v[i:i + 1] for k, v in feed.items()}) for i in range(count)]
        return [np.concatenate(parts) for parts in zip(*outs)]
    return session.run(None, feed)


class OnnxRuntimeFrameBackend:
    """A MENet engine: ``encode_3d`` on T-frame clips, ``detect`` on the latest S frames and those
    features -> the raw region map (decoded on the host, :mod:`edge_stad.runtime.region_decode`).

    Inputs are checked against the graphs, and the graphs against ``config`` (the manifest's
    model) when the sessions open, so that a manifest describing another model, or frames of
    another size, fail with a message instead of ONNX Runtime's shape error or garbage boxes.
    """

    def __init__(self, encoder3d, detector, config, threads=None, providers=None):
        self.config = config
        self.manifest = None
        self.encoder3d = create_session(encoder3d, threads, providers)
        self.detector = create_session(detector, threads, providers)
        self.frames_2d = detector_frames(config)
        h, w = config["input_size"]
        for session, graph, name, count in ((self.encoder3d, "encoder3d", "clip", config["clip_len"]),
                                            (self.detector, "detector", "frames", self.frames_2d)):
            shape = {i.name: i.shape for i in session.get_inputs()}.get(name)
            if shape is None or list(shape[1:]) != [count, h, w, 3]:
                raise EngineError(f"the {graph} graph takes {name} {shape}, but the model config says "
                                  f"(B, {count}, {h}, {w}, 3): graph and manifest describe different models")

    def encode_3d(self, frames):
        """uint8 BGR clips ``(N, T, H, W, 3)`` -> 3D features ``(N, C3, h, w)``."""
        return _run(self.encoder3d, {"clip": frame_input(frames, self.config["clip_len"], self.config, "clips")})[0]

    def detect(self, frames, feat3d):
        """uint8 BGR latest frames ``(N, S, H, W, 3)`` and ``encode_3d``'s features -> region ``(N, A(5+C), h, w)``."""
        feed = {"frames": frame_input(frames, self.frames_2d, self.config, "frames"),
                "feat3d": np.ascontiguousarray(feat3d, np.float32)}
        return _run(self.detector, feed)[0]


def frame_input(frames, count, config, what):
    """``frames`` as the graph takes them, or a :class:`FrameError` naming the expected layout."""
    frames = np.asarray(frames)
    h, w = config["input_size"]
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1:] != (count, h, w, 3):
        raise FrameError(f"{what} must be uint8 (N, {count}, {h}, {w}, 3) resized BGR frames, oldest first; got "
                         f"{frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)
