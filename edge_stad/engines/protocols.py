"""The backend contracts: what the Runtime, the offline predictors and the benchmark call on whatever runs
a model (ONNX Runtime, TensorRT, PyTorch), and the capabilities each backend declares instead of being
probed.

Every backend has ``config`` (the model config), ``labels``, ``manifest`` (None for a checkpoint) and
``kind``; the Runtime takes one path per declared capability:

* ``kind == "tubelet"`` (AMMA): clips are encoded once, the head runs per window of K clip features.
  ``decodes_in_graph``: the head graph returns the decoded tubelet rows (else the host decodes ``hm,
  mov, wh``). ``device_resident``: frames and features stay on the backend's GPU
  (:class:`DeviceTubeletBackend`); else NumPy arrays go in and out. ``link_matrices``: the linker's IoU
  matrices computed on that GPU, or None (the host's :mod:`edge_stad.core.link_math`).
* ``kind == "frame"`` (MENet): a 3D branch over a clip, a 2D branch and region decode per frame.
* ``kind == "snippet"`` (STMA): each frame through the 2D encoder once, a 3D branch over the window's
  clip, the head per window of K frames (:class:`SnippetBackend`).
* ``kind == "ssd"`` (flow fusion): every frame a key frame; each new frame pair's flow once (a learned flow
  graph, or DIS on the host), the detector per key frame on it and its pairs' flows (:class:`SsdBackend`).
"""
from typing import Any, Optional, Protocol, Sequence, Tuple

KINDS = ("tubelet", "frame", "snippet", "ssd")


class Backend(Protocol):
    kind: str
    config: dict
    labels: Tuple[str, ...]
    manifest: Optional[dict]


class TubeletBackend(Backend, Protocol):
    decodes_in_graph: bool
    device_resident: bool
    link_matrices: Any

    def encode(self, clips):
        """uint8 BGR clips ``(N, n, H, W, 3)`` at the input size -> ``(feat, wh)`` per clip."""

    def head(self, feats, whs):
        """K clip features per window ``(N, K, ...)`` -> ``(hm, mov, wh)``, or the tubelet rows when
        ``decodes_in_graph``."""

    def detect(self, feats, whs, reference_y_rounding=False):
        """:meth:`head` then decode: tubelet rows ``(N, top_n, 4K + 2)`` per window."""


class DeviceTubeletBackend(TubeletBackend, Protocol):
    def prepare(self, frame):
        """One raw BGR frame -> its resized, normalised copy on the device."""

    def encode_prepared(self, clips: Sequence):
        """Clips of prepared frames -> device features."""

    def detect_prepared(self, feats: Sequence, whs: Sequence):
        """Windows of device features -> tubelet rows on the host."""


class FrameBackend(Backend, Protocol):
    def encode_3d(self, clips):
        """uint8 clips ``(N, T, H, W, 3)`` -> the 3D branch's feature per clip."""

    def detect(self, frames, feat3d):
        """The latest frames of each clip and its 3D feature -> the region outputs per frame."""


class SnippetBackend(Backend, Protocol):
    top_n: int

    def encode(self, frames):
        """uint8 BGR frames ``(N, H, W, 3)`` -> per-frame ``(feat, wh, act)`` (``act`` None without recognition)."""

    def encode_3d(self, clips):
        """uint8 clips ``(N, T, H, W, 3)`` -> the 3D branch's feature per clip (models with one)."""

    def head(self, feats, whs, acts=None, feat3d=None):
        """One window's cached outputs (batch 1) -> ``{"hm", "mov", "wh"[, "cls"]}``."""

    def detect(self, feats, whs, acts=None, feat3d=None):
        """:meth:`head` then decode: tubelet rows ``(N, top_n, 4K + 2)`` in grid cells."""


class SsdBackend(Backend, Protocol):
    def pair_flow(self, a, b):
        """uint8 BGR frames ``a`` then ``b`` ``(N, H, W, 3)`` -> flow a -> b ``(N, 2, H, W)`` (flow models)."""

    def detect(self, frames, flows=None):
        """uint8 frames ``(N, T, H, W, 3)`` of N key frames (and their pairs' flows) -> ``loc``, ``conf``."""
