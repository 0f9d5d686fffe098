"""Optical flow of consecutive frames for training flow teachers (OpenCV DIS or Farneback), cached on disk.

Flow is needed only offline, to train the frozen teacher of motion distillation (MARS,
as MENet and Lu et al. use it); OpenCV's DIS replaces TV-L1, which is too slow for
a CPU. The flow of frame ``f`` is the displacement from frame ``f - 1`` to frame ``f``
(``prev(y, x) ~ frame(y + dy, x + dx)``: an image moving right gives ``dx > 0``); frame 1
has no predecessor and repeats frame 2's flow. Frames are resized to ``size`` first, so
the vectors are in pixels of the network input and need no rescaling.

Storage follows the TV-L1 JPEG convention of two-stream and MARS training: each
component is clipped to +-``bound`` pixels (20) and mapped linearly to uint8 0..255
(steps of 0.16 px, below DIS's own error). That is half the size of float16 and the
bounded range is what the teacher sees anyway; the arrays are kept as lossless ``.npy``
(JPEG artefacts would add error for no gain). One file per (video, frame) lives under a
folder named by the method, preset, size and bound, so changing any of them never reads
a stale entry. Files are written atomically; an unreadable or misshapen file is logged
and recomputed.
"""
import logging
import os

import numpy as np
from tqdm import tqdm

from edge_stad.atomic import atomic_write
from edge_stad.errors import ConfigError
from edge_stad.optical_flow import BOUND, DIS_PRESETS, METHODS, compute_flow, quantize_flow
from edge_stad.preprocess import resize

log = logging.getLogger(__name__)


class FlowCache:
    """Flow of an :class:`~edge_stad.data.act.ActDataset`'s frames, computed once and kept under ``cache_dir``.

    ``size`` is ``(height, width)`` (or an int for square) of the frames the flow is
    computed on, ``None`` for the dataset's own resolution. ``preset`` applies to DIS only.
    """

    def __init__(self, dataset, cache_dir, method="dis", preset="medium", size=None, bound=BOUND):
        if method not in METHODS:
            raise ConfigError(f"unknown flow method {method!r}; expected one of {METHODS}")
        if method == "dis" and preset not in DIS_PRESETS:
            raise ConfigError(f"unknown DIS preset {preset!r}; expected one of {sorted(DIS_PRESETS)}")
        if not bound > 0:
            raise ConfigError(f"flow bound must be > 0 pixels, got {bound!r}")
        self.dataset = dataset
        self.method, self.preset, self.bound = method, preset, float(bound)
        self.size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
        where = "native" if self.size is None else "{}x{}".format(*self.size)
        name = method + ("-" + preset if method == "dis" else "")
        self.folder = os.path.join(os.fspath(cache_dir), f"{name}-{where}-b{self.bound:g}")

    def path(self, video, frame):
        """The cache file of ``frame`` (frame 1 shares frame 2's)."""
        end = self._pair(video, frame)[1]
        return os.path.join(self.folder, *video.split("/"), f"{end:05d}.npy")

    def _pair(self, video, frame):
        self.dataset.frame_path(video, frame)  # range check with the dataset's error
        n = self.dataset.nframes(video)
        end = min(max(frame, 2), n)
        return max(end - 1, 1), end

    def _shape(self, video):
        return self.size if self.size is not None else tuple(self.dataset.resolution(video))

    def _read(self, video, frame):
        """Frame ``frame`` resized to the flow size."""
        image = self.dataset.read_frame(video, frame)
        return resize(image, self.size) if self.size is not None else image

    def flow(self, video, frame):
        """Quantised flow of ``frame`` of ``video``: uint8 ``(H, W, 2)`` (see ``optical_flow.dequantize_flow``)."""
        path = self.path(video, frame)
        if os.path.exists(path):
            cached = self._load(path, video)
            if cached is not None:
                return cached
        return self._compute(video, frame, path)

    def _load(self, path, video):
        try:
            q = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            log.warning("flow cache file %s is unreadable (%s); recomputing it", path, e)
            return None
        expected = (*self._shape(video), 2)
        if q.dtype != np.uint8 or q.shape != expected:
            log.warning("flow cache file %s holds %s %s, expected uint8 %s; recomputing it", path, q.dtype,
                        q.shape, expected)
            return None
        return q

    def _compute(self, video, frame, path, frames=None):
        a, b = self._pair(video, frame)
        frames = frames if frames is not None else {}
        for f in (a, b):
            if f not in frames:
                frames[f] = self._read(video, f)
        q = quantize_flow(compute_flow(frames[a], frames[b], self.method, self.preset), self.bound)
        with atomic_write(path, "wb") as f:
            np.save(f, q)
        return q

    def precompute(self, pairs=None, progress=True):
        """Fill the cache for ``(video, frame)`` pairs (default: every frame of the split's videos).

        Existing files are trusted here (a corrupt one is recomputed when read). Returns
        how many flows were computed.
        """
        if pairs is None:
            videos = self.dataset.train_videos + self.dataset.test_videos
            pairs = [(v, f) for v in videos for f in range(1, self.dataset.nframes(v) + 1)]
        ends = sorted({(v, self._pair(v, f)[1]) for v, f in pairs})
        todo = [(v, f) for v, f in ends if not os.path.exists(self.path(v, f))]
        frames, current = {}, None
        for video, frame in tqdm(todo, desc=f"flow {os.path.basename(self.folder)}", unit="frame",
                                 disable=not progress):
            if video != current:
                frames, current = {}, video
            self._compute(video, frame, self.path(video, frame), frames)
            frames = {frame: frames[frame]}  # the next pair of this video starts with it
        return len(todo)
