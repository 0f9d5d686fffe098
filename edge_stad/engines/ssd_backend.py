"""What a flow-fusion engine's backends share, whatever runs the graphs (ONNX Runtime, TensorRT, PyTorch): the
SSD backend interface of :mod:`edge_stad.eval.predict_ssd` and :class:`~edge_stad.engines.protocols.SsdBackend`
on top of one call, ``run_graph(name, feeds) -> {output: array}``. No torch."""
import numpy as np

from edge_stad.engines.graph_io import frame_input
from edge_stad.optical_flow import pair_flow


def pair_flows(frames, flow):
    """``frames (B, T, H, W, 3)`` -> every adjacent pair's flow ``(B, T - 1, 2, H, W)`` by ``flow(a, b)``
    (uint8 ``(B, H, W, 3)`` each -> ``(B, 2, H, W)``)."""
    return np.stack([flow(frames[:, i], frames[:, i + 1]) for i in range(frames.shape[1] - 1)], 1)


def dis_flow(a, b):
    """OpenCV DIS flow of batches of frame pairs ``(B, H, W, 3)`` each -> ``(B, 2, H, W)``, as training saw it:
    :func:`edge_stad.optical_flow.pair_flow`, and zero for a pair that repeats a frame (a stream's first frames,
    a video's last, where the detection's frames are clamped)."""
    return np.stack([np.zeros((2, *x.shape[:2]), np.float32) if np.array_equal(x, y) else pair_flow(x, y)
                     for x, y in zip(a, b)])


class SsdGraphs:
    """``pair_flow`` per new frame pair, ``detect`` per key frame, on the graphs of
    :mod:`edge_stad.export.ssd_graphs`; subclasses supply ``config`` and ``run_graph``."""

    kind = "ssd"
    labels = ()

    @property
    def key_index(self):
        """Where the key frame sits among the ``frames`` frames a detection reads."""
        return self.config["frames"] - 1 - self.config["lookahead"]

    def pair_flow(self, a, b):
        """uint8 BGR frames ``a`` then ``b`` ``(N, H, W, 3)`` at the input size -> the flow a -> b ``(N, 2, H, W)``
        in input pixels: the ``flow`` graph, or OpenCV DIS on the host (``motion="dis"``)."""
        pairs = frame_input(np.stack([np.asarray(a), np.asarray(b)], 1), 2, self.config, "frame pairs")
        if self.config["motion"] == "dis":
            return dis_flow(pairs[:, 0], pairs[:, 1])
        return self.run_graph("flow", {"frames": pairs})["flow"]

    def detect(self, frames, flows=None):
        """uint8 BGR frames ``(N, T, H, W, 3)`` (:func:`~edge_stad.core.ssd_decode.frames_for_key`'s, oldest first)
        and, for flow models, their pairs' ``flows (N, T - 1, 2, H, W)`` (computed here when None: the Runtime
        passes the ones it cached) -> ``loc (N, P, 4)``, ``conf (N, P, C + 1)``."""
        frames = frame_input(frames, self.config["frames"], self.config, "frames")
        if self.config["motion"] == "micro-motion":
            out = self.run_graph("detect", {"frames": frames})
        else:
            flows = pair_flows(frames, self.pair_flow) if flows is None else flows
            k = self.key_index
            out = self.run_graph("detect", {"frames": np.ascontiguousarray(frames[:, k:k + 1]),
                                            "flows": np.ascontiguousarray(flows, np.float32)})
        return out["loc"], out["conf"]


class PairFlows:
    """One stream's frame-pair flows, each pair computed once by ``backend.pair_flow`` (batch 1) and kept while a
    detection may read it: what the Runtime and the offline predictor share, so that both feed ``detect`` the
    same arrays."""

    def __init__(self, backend):
        self.backend, self.flows = backend, {}
        self.motion = backend.config["motion"]

    def window(self, numbers, frames):
        """The flows ``(1, T - 1, 2, H, W)`` of the detection reading frames ``numbers`` (``frames``: number -> uint8
        frame), or None for a micro-motion model."""
        if self.motion == "micro-motion":
            return None
        for a, b in zip(numbers, numbers[1:]):
            if (a, b) not in self.flows:
                self.flows[a, b] = self.backend.pair_flow(frames[a][None], frames[b][None])[0]
        return np.stack([self.flows[p] for p in zip(numbers, numbers[1:])])[None]

    def forget(self, before):
        """Drop the pairs that start before frame ``before``."""
        for pair in [p for p in self.flows if p[0] < before]:
            del self.flows[pair]
