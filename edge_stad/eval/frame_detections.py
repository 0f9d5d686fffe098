"""Per-frame detections of one video from its tubelet windows (reference §4.1).

Each tubelet gives box k to clip-end frame k of its window. In stream mode the frames
between two clip-end frames also get a box, linearly interpolated, with the tubelet's
score. Each frame then goes through ACT's linear soft-NMS (0.6) per label.

A frame takes at most ``cap`` rows (10000, as the reference): a window's block of rows
for a frame is accepted while the frame holds fewer (normal mode: at most) ``cap`` rows,
interpolated rows one at a time. The reference, once a frame is full, also shifts the
remaining boxes of that tubelet window to the wrong frames; that bug is not reproduced.
"""
from __future__ import annotations

import numpy as np

from edge_stad.boxes import soft_nms
from edge_stad.errors import ConfigError
from edge_stad.runtime.windows import MODES, Window, interpolate

CAP = 10000


def frame_detections(windows, K, mode, cap=CAP, nms_threshold=0.6):
    """``float32 (n, 7)`` rows ``frame, label, score, x1, y1, x2, y2`` of one video.

    ``windows`` are :class:`~edge_stad.runtime.windows.Window` s in processing order.
    Rows come frame by frame (ascending), within a frame in arrival order, which fixes
    how equal scores are ranked later.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    blocks = {}
    counts = {}

    def add(frame, rows, whole):
        have = counts.get(frame, 0)
        if whole:
            take = len(rows) if (have <= cap if mode == "normal" else have < cap) else 0
        else:
            take = min(len(rows), max(0, cap - have))
        if take:
            blocks.setdefault(frame, []).append(rows[:take])
            counts[frame] = have + take

    for window in windows:
        if not isinstance(window, Window):
            window = Window(*window)
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
                add(frames[k], np.concatenate([boxes[:, k], tail], axis=1), True)
            if mode != "stream":
                continue
            for k in range(K - 1):
                gap = frames[k + 1] - frames[k]
                if gap < 2:
                    continue
                offsets = np.arange(1, gap)
                inner = interpolate(boxes[None, :, k], boxes[None, :, k + 1], offsets[:, None], gap)
                for i, offset in enumerate(offsets.tolist()):
                    add(frames[k] + offset, np.concatenate([inner[i], tail], axis=1), False)
    out = []
    for frame in sorted(blocks):
        rows = np.concatenate(blocks[frame])
        for label in np.unique(rows[:, 5]):
            mine = rows[:, 5] == label
            rows[mine, 4] = soft_nms(rows[mine, :4], rows[mine, 4], nms_threshold)
        part = np.empty((len(rows), 7), dtype=np.float32)
        part[:, 0] = frame
        part[:, 1] = rows[:, 5]
        part[:, 2] = rows[:, 4]
        part[:, 3:] = rows[:, :4]
        out.append(part)
    return np.concatenate(out) if out else np.zeros((0, 7), dtype=np.float32)
