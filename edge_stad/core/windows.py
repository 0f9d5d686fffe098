"""Which frames a tubelet window covers, and boxes for the frames in between.

An AMMA tubelet produced at processed frame ``f`` holds K boxes, one per clip-end
frame ``e_k = max(1, f - (K-1-k) * clip_len)``, oldest first (reference §3.1). Normal
mode processes every frame from the first full window on; stream mode processes every
``clip_len``-th frame and always the last one, whose window is then uneven (§3.3).
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Tuple

import numpy as np

from edge_stad.errors import ConfigError

MODES = ("normal", "stream")


class Window(NamedTuple):
    """One processed window: K clip-end frames (oldest first, the last is the processed
    frame) and its tubelets ``{label: float32 (m, 4K+1)}`` (K boxes, then the score)."""

    frames: Tuple[int, ...]
    tubelets: Mapping[int, np.ndarray]

    @property
    def frame(self):
        return self.frames[-1]


def regular_window(frame, K, clip_len):
    """Clip-end frames of the window processed at ``frame``, clamped at frame 1."""
    return tuple(max(1, frame - (K - 1 - k) * clip_len) for k in range(K))


def clip_ending_at(end, clip_len):
    """Frame numbers of the clip whose key (last) frame is ``end``; frame 1 repeats before the start."""
    return tuple(max(1, end - clip_len + 1 + j) for j in range(clip_len))


def first_frame(K, clip_len, nframes):
    """First processed frame of a video of ``nframes`` frames: ``min(K*n, F) - n + 1``."""
    if nframes < clip_len:
        raise ConfigError(f"a video needs at least clip_len={clip_len} frames, got {nframes}")
    return min(K * clip_len, nframes) - clip_len + 1


def window_schedule(K, clip_len, nframes, mode):
    """The windows (tuples of K frames) a video of ``nframes`` frames is processed with.

    Stream mode appends the last frame even when it lies closer than ``clip_len`` to the
    previous one; its window is the last K frames actually processed (the reference's
    ``last_k_ind``), not the regular one.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    start = first_frame(K, clip_len, nframes)
    if mode == "normal":
        return [regular_window(f, K, clip_len) for f in range(start, nframes + 1)]
    frames = list(range(start, nframes, clip_len))
    if not frames or frames[-1] != nframes:
        frames.append(nframes)
    windows = [regular_window(f, K, clip_len) for f in frames]
    windows[-1] = (windows[-2] + (nframes,))[-K:] if len(windows) > 1 else windows[-1]
    return windows


def interpolate(lo, hi, offset, gap):
    """Boxes ``offset`` frames after ``lo`` on the straight line to ``hi``, ``gap`` frames later.

    Computed in float32 as ``lo + offset * ((hi - lo) / gap)``, the reference's order.
    ``lo``/``hi`` are ``(..., C)`` arrays; ``offset``/``gap`` broadcast against ``lo[..., 0]``.
    """
    offset = np.asarray(offset, dtype=np.float32)[..., None]
    gap = np.asarray(gap, dtype=np.float32)[..., None]
    lo = np.asarray(lo, dtype=np.float32)
    return lo + offset * ((np.asarray(hi, dtype=np.float32) - lo) / gap)
