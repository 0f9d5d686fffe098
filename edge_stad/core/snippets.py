"""Which frames an STMA window reads (no torch): the K-frame snippet, its key frame, and the longer clip
around it.

A window is named by its snippet's last frame ``e``: the snippet is ``e - K + 1 .. e`` (K consecutive
frames, MOC's tubelet) and its tubelet has one box per snippet frame. The model's input is a clip of
``clip_len`` frames that holds the snippet at ``snippet`` (an index range into the clip):

* ``key_frame="center"`` (STMA): the key frame is the snippet's middle frame (MOC's convention) and
  sits at index ``clip_len // 2`` of the clip. The paper does not say where the snippet lies in its
  16-frame clip; centring it is our choice. The window then reads ``lookahead`` frames past the
  snippet (5 for K=5, T=16) and is produced that many frames after the snippet's last frame.
* ``key_frame="last"`` (STMA-Lite): the key frame is the snippet's last frame, which is also the
  clip's last frame: nothing is read from the future.

Motion excitation runs over ``motion`` (an index range into the clip): the snippet when a 3D branch
reads the clip, the whole clip when there is none (the cached sequence stands in for it). Frame
numbers are 1-based and clamped to the video: frame 1 repeats before its start, the last frame after
its end.
"""
from typing import NamedTuple, Tuple

import numpy as np

from edge_stad.errors import ConfigError

KEY_FRAMES = ("center", "last")
# Output stride of the per-frame 2D features: DLA-34's up path ends at stride 4 (as in MOC and the
# paper); the lite backbones' decoder at stride 8, as AMMA's.
HEAD_STRIDES = {"dla34": 4}
DEFAULT_HEAD_STRIDE = 8


def head_stride(backbone):
    return HEAD_STRIDES.get(backbone, DEFAULT_HEAD_STRIDE)


def head_grid(config):
    """Head grid ``(h, w)`` of an STMA model config."""
    stride = head_stride(config["backbone"])
    h, w = config["input_size"]
    return h // stride, w // stride


class SnippetLayout(NamedTuple):
    K: int
    clip_len: int
    key: int                 # index of the key frame in the snippet
    snippet: Tuple[int, int]  # first and last clip index of the snippet
    motion: Tuple[int, int]   # first and last clip index of the frames motion excitation runs over

    @property
    def encoded(self):
        """First and last clip index of every frame the 2D backbone encodes (snippet and motion frames)."""
        return min(self.snippet[0], self.motion[0]), max(self.snippet[1], self.motion[1])

    @property
    def lookahead(self):
        """Frames the clip reads past the snippet's last frame."""
        return self.clip_len - 1 - self.snippet[1]

    def clip_frames(self, end, nframes):
        """Frame numbers of the clip of the window whose snippet ends at ``end``, clamped to ``1..nframes``."""
        first = end - self.snippet[1]
        return tuple(min(max(1, first + j), nframes) for j in range(self.clip_len))


def snippet_layout(K, clip_len, key_frame, has_3d):
    """The :class:`SnippetLayout` of a model; ConfigError where the clip cannot hold the snippet."""
    if key_frame not in KEY_FRAMES:
        raise ConfigError(f"key_frame must be one of {KEY_FRAMES}, got {key_frame!r}")
    if K < 1 or clip_len < K:
        raise ConfigError(f"need 1 <= K <= clip_len (the clip holds the snippet), got K={K}, clip_len={clip_len}")
    if key_frame == "center":
        key = (K - 1) // 2
        start = clip_len // 2 - key
        if start + K > clip_len:
            raise ConfigError(f"a clip of {clip_len} frames cannot centre a snippet of K={K}: use clip_len >= "
                              f"{K + 1 if K % 2 == 0 else K}")
    else:
        key, start = K - 1, clip_len - K
    snippet = (start, start + K - 1)
    return SnippetLayout(K, clip_len, key, snippet, snippet if has_3d else (0, clip_len - 1))


def layout_of(config):
    """:func:`snippet_layout` of an STMA model config."""
    return snippet_layout(config["K"], config["clip_len"], config["key_frame"], config["backbone_3d"] is not None)


def stacked(features, frames, part):
    """Part ``part`` (0 ``feat``, 1 ``wh``, 2 ``act``) of the cached per-frame encoder outputs ``features``
    (``{frame: (feat, wh, act)}``) of ``frames``, stacked as one window ``(1, len(frames), ...)``; None where the
    model has no such output."""
    values = [features[f][part] for f in frames]
    return None if values[0] is None else np.stack(values)[None]
