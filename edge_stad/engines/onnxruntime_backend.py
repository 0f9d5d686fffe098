"""ONNX Runtime sessions for an engine's encoder and head (the CPU default; no torch).

Implements the backend interface of :mod:`edge_stad.eval.predict`; open an engine folder
with :func:`edge_stad.engines.loader.open_backend`. The head graph either
returns ``hm, mov, wh`` (decoded here, on the host) or, when exported with in-graph
decoding, the tubelet rows directly; both give the same rows.
"""
import os

import numpy as np

from edge_stad.errors import EngineError, MissingDependencyError
from edge_stad.runtime.decode import decode


def create_session(model, threads=None, providers=None):
    """An ``onnxruntime.InferenceSession`` for a path or serialized model, all graph optimisations on."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependencyError("onnxruntime is not installed: pip install onnxruntime") from e
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])
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
