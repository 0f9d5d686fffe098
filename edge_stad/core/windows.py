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


def window_due(count, K, clip_len):
    """The window a stream processes when its frame ``count`` arrives (stream mode), or None.

    The first at frame ``K * clip_len`` (processed frame ``(K - 1) * clip_len + 1``, the first with K
    whole clips), then one every ``clip_len`` frames."""
    first = (K - 1) * clip_len + 1
    if count == K * clip_len:
        return regular_window(first, K, clip_len)
    if count > K * clip_len and (count - first) % clip_len == 0:
        return regular_window(count, K, clip_len)
    return None


def closing_windows(K, clip_len, count, last=None):
    """The windows that end a stream of ``count`` frames whose last processed frame is ``last`` (None: none
    was): the whole schedule of a stream shorter than K clips, else the uneven window at its last frame."""
    if last is None:
        if count < clip_len:
            return []
        start = count - clip_len + 1   # the first processed frame of a stream shorter than K clips
        windows = [regular_window(start, K, clip_len)]
        return windows if start == count else windows + [(windows[0] + (count,))[-K:]]
    if last == count:
        return []
    return [(regular_window(last, K, clip_len) + (count,))[-K:]]


def window_schedule(K, clip_len, nframes, mode):
    """The windows (tuples of K frames) a video of ``nframes`` frames is processed with.

    Stream mode is what the Runtime does online, frame by frame (:func:`window_due`, then
    :func:`closing_windows` when the stream ends): the last frame is processed even when it lies closer
    than ``clip_len`` to the previous one; its window is the last K frames actually processed (the
    reference's ``last_k_ind``), not the regular one.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    start = first_frame(K, clip_len, nframes)
    if mode == "normal":
        return [regular_window(f, K, clip_len) for f in range(start, nframes + 1)]
    due = [w for w in (window_due(c, K, clip_len) for c in range(1, nframes + 1)) if w]
    return due + closing_windows(K, clip_len, nframes, due[-1][-1] if due else None)


def interpolate(lo, hi, offset, gap):
    """Boxes ``offset`` frames after ``lo`` on the straight line to ``hi``, ``gap`` frames later.

    Computed in float32 as ``lo + offset * ((hi - lo) / gap)``, the reference's order.
    ``lo``/``hi`` are ``(..., C)`` arrays; ``offset``/``gap`` broadcast against ``lo[..., 0]``.
    """
    offset = np.asarray(offset, dtype=np.float32)[..., None]
    gap = np.asarray(gap, dtype=np.float32)[..., None]
    lo = np.asarray(lo, dtype=np.float32)
    return lo + offset * ((np.asarray(hi, dtype=np.float32) - lo) / gap)
