"""Per-frame detections from tubelet windows (reference §4.1), offline or as a stream.

Each tubelet gives box k to clip-end frame k of its window. In stream mode the frames
between two clip-end frames also get a box, linearly interpolated, with the tubelet's
score. Each frame then goes through ACT's linear soft-NMS (0.6) per label.

A frame takes at most ``cap`` rows (10000, as the reference): a window's block of rows
for a frame is accepted while the frame holds fewer (normal mode: at most) ``cap`` rows,
interpolated rows one at a time. The reference, once a frame is full, also shifts the
remaining boxes of that tubelet window to the wrong frames; that bug is not reproduced.

:class:`FrameDetections` is the incremental form the runtime uses: windows go in as they
are processed, and a frame comes out once no later window can reach it, with exactly
the rows :func:`frame_detections` gives for the whole video.
"""
from __future__ import annotations

import numpy as np

from edge_stad.boxes import check_ties, soft_nms
from edge_stad.core.windows import MODES, Window, interpolate
from edge_stad.errors import ConfigError

CAP = 10000
EMPTY = np.zeros((0, 7), dtype=np.float32)


class FrameDetections:
    """Collects the rows windows give each frame; :meth:`pop` hands out finished frames."""

    def __init__(self, K, mode, cap=CAP, nms_threshold=0.6, ties="stable"):
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        self.K, self.mode, self.cap, self.nms_threshold = K, mode, cap, nms_threshold
        self.ties = check_ties(ties)
        self._blocks = {}
        self._counts = {}

    def _add(self, frame, rows, whole):
        have = self._counts.get(frame, 0)
        if whole:
            take = len(rows) if (have <= self.cap if self.mode == "normal" else have < self.cap) else 0
        else:
            take = min(len(rows), max(0, self.cap - have))
        if take:
            self._blocks.setdefault(frame, []).append(rows[:take])
            self._counts[frame] = have + take

    def add(self, window):
        """Spread one :class:`~edge_stad.core.windows.Window` 's tubelets over its frames."""
        K = self.K
        frames = window.frames
        for label in sorted(window.tubelets):
            tubelets = np.asarray(window.tubelets[label], dtype=np.float32)
            m = len(tubelets)
            if not m:
                continue
            boxes = tubelets[:, :4 * K].reshape(m, K, 4)
            tail = np.empty((m, 2), dtype=np.float32)
            tail[:, 0] = tubelets[:, -1]
            tail[:, 1] = label
            for k in reversed(range(K)):
                self._add(frames[k], np.concatenate([boxes[:, k], tail], axis=1), True)
            if self.mode != "stream":
                continue
            for k in range(K - 1):
                gap = frames[k + 1] - frames[k]
                if gap < 2:
                    continue
                offsets = np.arange(1, gap)
                inner = interpolate(boxes[None, :, k], boxes[None, :, k + 1], offsets[:, None], gap)
                for i, offset in enumerate(offsets.tolist()):
                    self._add(frames[k] + offset, np.concatenate([inner[i], tail], axis=1), False)

    def pop(self, frame):
        """``float32 (n, 7)`` rows ``frame, label, score, x1, y1, x2, y2`` of ``frame``, forgotten afterwards.

        Rows keep arrival order (which fixes how equal scores rank later); scores are soft-NMS'd per label.
        """
        blocks = self._blocks.pop(frame, None)
        self._counts.pop(frame, None)
        if not blocks:
            return EMPTY
        rows = np.concatenate(blocks)
        for label in np.unique(rows[:, 5]):
            mine = rows[:, 5] == label
            rows[mine, 4] = soft_nms(rows[mine, :4], rows[mine, 4], self.nms_threshold, ties=self.ties)
        part = np.empty((len(rows), 7), dtype=np.float32)
        part[:, 0] = frame
        part[:, 1] = rows[:, 5]
        part[:, 2] = rows[:, 4]
        part[:, 3:] = rows[:, :4]
        return part

    def pending(self):
        """Frames that hold rows and were not popped yet, ascending."""
        return sorted(self._blocks)


def frame_detections(windows, K, mode, cap=CAP, nms_threshold=0.6, ties="stable"):
    """``float32 (n, 7)`` rows ``frame, label, score, x1, y1, x2, y2`` of one video.

    ``windows`` are :class:`~edge_stad.core.windows.Window` s in processing order.
    Rows come frame by frame (ascending), within a frame in arrival order. ``ties``: how the
    soft-NMS visits equal scores (:func:`edge_stad.boxes.check_ties`).
    """
    collected = FrameDetections(K, mode, cap, nms_threshold, ties)
    for window in windows:
        collected.add(window if isinstance(window, Window) else Window(*window))
    out = [collected.pop(frame) for frame in collected.pending()]
    return np.concatenate(out) if out else EMPTY.copy()
