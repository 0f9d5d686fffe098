"""What an STMA engine's backends share, whatever runs the graphs (ONNX Runtime, TensorRT): the snippet
backend interface of :mod:`edge_stad.eval.predict_snippets` and :class:`~edge_stad.engines.protocols.SnippetBackend`
on top of one call, ``run_graph(name, feeds) -> {output: array}``. No torch."""
import numpy as np

from edge_stad.core.snippet_decode import TOP_N, decode_snippet
from edge_stad.core.snippets import layout_of
from edge_stad.engines.graph_io import frame_input


class SnippetGraphs:
    """``encode`` per frame, ``encode_3d`` per clip, ``head`` / ``detect`` per window, on the graphs of
    :mod:`edge_stad.export.snippet_graphs`; subclasses supply ``config`` and ``run_graph``."""

    kind = "snippet"
    labels = ()
    top_n = TOP_N

    def encode(self, frames):
        """uint8 BGR frames ``(N, H, W, 3)`` -> ``(feat, wh, act)`` (``act`` None without the recognition branch)."""
        frames = np.asarray(frames)
        out = self.run_graph("encoder", {"frames": frame_input(frames[:, None] if frames.ndim == 4 else frames, 1,
                                                            self.config, "frames")})
        return out["feat"], out["wh"], out.get("act")

    def encode_3d(self, clips):
        """uint8 BGR clips ``(N, T, H, W, 3)``, oldest first -> 3D features ``(N, C3, h, w)``."""
        clips = frame_input(clips, self.config["clip_len"], self.config, "clips")
        return self.run_graph("encoder3d", {"clip": clips})["feat3d"]

    def head(self, feats, whs, acts=None, feat3d=None):
        """One window's cached outputs -> ``{"hm", "mov", "wh"[, "cls"]}``."""
        feeds = {"feats": feats, "whs": whs, "acts": acts, "feat3d": feat3d}
        return self.run_graph("head", {k: np.ascontiguousarray(v, np.float32)
                                       for k, v in feeds.items() if v is not None})

    def detect(self, feats, whs, acts=None, feat3d=None):
        """:meth:`head`, decoded on the host: tubelet rows ``(N, top_n, 4K + 2)`` in grid cells."""
        return decode_snippet(self.head(feats, whs, acts, feat3d), self.top_n)


def window_feeds(backend, clip):
    """The head inputs ``{"feats", "whs"[, "acts"][, "feat3d"]}`` (batch 1) of the window whose clip is ``clip``
    ``uint8 (T, H, W, 3)``, from ``backend``'s encoders (each encoded frame once, as the Runtime does)."""
    layout = layout_of(backend.config)
    (e0, e1), (s0, s1), (m0, m1) = layout.encoded, layout.snippet, layout.motion
    feat, wh, act = backend.encode(np.ascontiguousarray(clip[e0:e1 + 1]))
    feeds = {"feats": feat[None, s0 - e0:s1 - e0 + 1], "whs": wh[None, s0 - e0:s1 - e0 + 1]}
    if act is not None:
        feeds["acts"] = act[None, m0 - e0:m1 - e0 + 1]
    if backend.config["backbone_3d"] is not None:
        feeds["feat3d"] = backend.encode_3d(clip[None])
    return feeds
