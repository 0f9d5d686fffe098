"""ONNX Runtime sessions for an engine's encoder and head (the CPU default; no torch).

Implements the backend interface of :mod:`edge_stad.eval.predict`. The head graph either
returns ``hm, mov, wh`` (decoded here, on the host) or, when exported with in-graph
decoding, the tubelet rows directly; both give the same rows.
"""
import os

import numpy as np

from edge_stad.engines.manifest import read_manifest
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
    return ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])


class OnnxRuntimeBackend:
    def __init__(self, encoder, head, config, threads=None, providers=None):
        self.config = config
        self.manifest = None
        self.encoder = create_session(encoder, threads, providers)
        self.head_session = create_session(head, threads, providers)
        self.decodes_in_graph = [o.name for o in self.head_session.get_outputs()] == ["tubelets"]

    def encode(self, frames):
        """uint8 BGR clips ``(N, n, H, W, 3)`` -> ``(feat, wh)``; one call per clip on static-batch graphs."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        batch = self.encoder.get_inputs()[0].shape[0]
        if isinstance(batch, int) and batch != len(frames):
            outs = [self.encoder.run(None, {"frames": frames[i:i + 1]}) for i in range(len(frames))]
            return tuple(np.concatenate(parts) for parts in zip(*outs))
        feat, wh = self.encoder.run(None, {"frames": frames})
        return feat, wh

    def head(self, feats, whs):
        if self.decodes_in_graph:
            raise ValueError("this head graph decodes in-graph and returns tubelets, not hm/mov/wh")
        return tuple(self.head_session.run(None, {"feats": np.ascontiguousarray(feats, np.float32),
                                                  "whs": np.ascontiguousarray(whs, np.float32)}))

    def detect(self, feats, whs, reference_y_rounding=False):
        if self.decodes_in_graph:
            if reference_y_rounding:
                raise ValueError("reference_y_rounding needs host decoding; this head graph decodes in-graph")
            return self.head_session.run(None, {"feats": np.ascontiguousarray(feats, np.float32),
                                                "whs": np.ascontiguousarray(whs, np.float32)})[0]
        return decode(*self.head(feats, whs), reference_y_rounding=reference_y_rounding)


def open_engine(folder, threads=None, providers=None):
    """The ONNX Runtime backend of engine ``folder``, after its manifest and checksums are verified."""
    manifest = read_manifest(folder)
    if manifest["model"].get("name") != "amma":
        raise EngineError(f"engine {folder} holds a {manifest['model'].get('name')!r} model; this version runs amma")
    paths = [os.path.join(os.fspath(folder), manifest["graphs"][g]) for g in ("encoder", "head")]
    backend = OnnxRuntimeBackend(*paths, manifest["model"], threads=threads, providers=providers)
    backend.manifest = manifest
    return backend
