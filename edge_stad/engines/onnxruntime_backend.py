"""ONNX Runtime sessions for an engine's graphs (the CPU default; no torch).

* :class:`OnnxRuntimeBackend` (AMMA: ``encoder`` + ``head``) implements the backend interface of
  :mod:`edge_stad.eval.predict`. The head graph either returns ``hm, mov, wh`` (decoded here, on
  the host) or, when exported with in-graph decoding, the tubelet rows directly; both give the
  same rows.
* :class:`OnnxRuntimeFrameBackend` (MENet, MENet-Lite: ``encoder3d`` + ``detector``) implements the
  frame backend interface of :mod:`edge_stad.eval.predict_frames`.
* :class:`OnnxRuntimeSnippetBackend` (STMA, STMA-Lite: ``encoder``, ``encoder3d``, ``head``) the snippet
  backend interface of :mod:`edge_stad.eval.predict_snippets`.
* :class:`OnnxRuntimeSsdBackend` (flow fusion: ``flow`` with a learned flow network, ``detect``) the SSD
  backend interface of :mod:`edge_stad.eval.predict_ssd`.

Open an engine folder with :func:`edge_stad.backends.open_backend`.
"""
import os

import numpy as np

from edge_stad.core.region_decode import detector_frames
from edge_stad.core.tubelet_decode import decode
from edge_stad.engines.graph_io import check_graph_io, frame_input
from edge_stad.engines.snippet_backend import SnippetGraphs
from edge_stad.engines.ssd_backend import SsdGraphs
from edge_stad.errors import EngineError, MissingDependencyError
from edge_stad.model_config import GRAPHS, engine_kind, graph_names

FRAME_GRAPHS = GRAPHS["menet"]


def is_frame_model(config):
    return engine_kind(config) == "frame"


# ONNX Runtime moves a QuantizeLinear up through a max-pool, so a float stem's pool would run on
# uint8 (several times slower there); the cpu INT8 flavour places its Q/DQ pairs itself.
DISABLED_OPTIMIZERS = ["QDQPropagationTransformer"]


def create_session(model, threads=None, providers=None, name=None):
    """An ``onnxruntime.InferenceSession`` for a path or serialized model (``name`` in errors), all graph
    optimisations on but :data:`DISABLED_OPTIMIZERS`, its thread pool idle (not spinning) between runs."""
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
        name = name or (model if isinstance(model, (str, os.PathLike)) else "the serialized model")
        raise EngineError(f"ONNX Runtime {ort.__version__} cannot load {name}: {e}") from None


def open_graphs(graphs, config, threads=None, providers=None, where="engine"):
    """``{graph: path or bytes}`` -> ``{graph: session}``, each checked against the model ``config``
    (:func:`~edge_stad.engines.graph_io.check_graph_io`)."""
    sessions = {}
    for graph, model in graphs.items():
        session = sessions[graph] = create_session(model, threads, providers,
                                                   None if isinstance(model, (str, os.PathLike)) else
                                                   f"the {graph} graph of {where}")
        shapes = {kind: {arg.name: arg.shape for arg in args}
                  for kind, args in (("in", session.get_inputs()), ("out", session.get_outputs()))}
        check_graph_io(config, graph, shapes["in"], shapes["out"], where,
                       session.get_modelmeta().custom_metadata_map)
    return sessions


class OnnxRuntimeBackend:
    """An AMMA engine: ``encode`` on clips, ``detect`` (or ``head`` + host decode) on windows of K features.
    ``encoder`` and ``head`` are paths or the graphs' bytes (what the loader verified); ``where`` names
    the engine in errors."""

    kind = "tubelet"
    device_resident = False
    link_matrices = None
    labels = ()

    def __init__(self, encoder, head, config, threads=None, providers=None, where="engine"):
        self.config = config
        self.manifest = None
        sessions = open_graphs({"encoder": encoder, "head": head}, config, threads, providers, where)
        self.encoder, self.head_session = sessions["encoder"], sessions["head"]
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
    features -> the raw region map (decoded on the host, :mod:`edge_stad.core.region_decode`).

    Inputs are checked against the graphs, and the graphs against ``config`` (the manifest's
    model) when the sessions open, so that a manifest describing another model, or frames of
    another size, fail with a message instead of ONNX Runtime's shape error or garbage boxes.
    """

    kind = "frame"
    labels = ()

    def __init__(self, encoder3d, detector, config, threads=None, providers=None, where="engine"):
        self.config = config
        self.manifest = None
        sessions = open_graphs({"encoder3d": encoder3d, "detector": detector}, config, threads, providers, where)
        self.encoder3d, self.detector = sessions["encoder3d"], sessions["detector"]
        self.frames_2d = detector_frames(config)

    def encode_3d(self, frames):
        """uint8 BGR clips ``(N, T, H, W, 3)`` -> 3D features ``(N, C3, h, w)``."""
        return _run(self.encoder3d, {"clip": frame_input(frames, self.config["clip_len"], self.config, "clips")})[0]

    def detect(self, frames, feat3d):
        """uint8 BGR latest frames ``(N, S, H, W, 3)`` and ``encode_3d``'s features -> region ``(N, A(5+C), h, w)``."""
        feed = {"frames": frame_input(frames, self.frames_2d, self.config, "frames"),
                "feat3d": np.ascontiguousarray(feat3d, np.float32)}
        return _run(self.detector, feed)[0]


class _Sessions:
    """One ONNX Runtime session per graph of the model ``config`` and ``run_graph`` over them (what the
    snippet and SSD graph mixins run on)."""

    def __init__(self, *graphs, config, threads=None, providers=None, where="engine"):
        self.config = config
        self.manifest = None
        self.sessions = open_graphs(dict(zip(graph_names(config), graphs)), config, threads, providers, where)

    def run_graph(self, name, feeds):
        session = self.sessions[name]
        return dict(zip([o.name for o in session.get_outputs()], _run(session, feeds)))


class OnnxRuntimeSnippetBackend(_Sessions, SnippetGraphs):
    """An STMA engine: ``encoder`` per frame, ``encoder3d`` (models with a 3D branch) per clip, ``head`` per
    window; the snippet backend interface of :mod:`edge_stad.eval.predict_snippets`."""


class OnnxRuntimeSsdBackend(_Sessions, SsdGraphs):
    """A flow-fusion engine: ``flow`` (learned flow network) per new frame pair, ``detect`` per key frame; the SSD
    backend interface of :mod:`edge_stad.eval.predict_ssd`."""
