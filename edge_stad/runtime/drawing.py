"""Annotated output: tube boxes and labels drawn on frames, and an atomic video writer.

Each tube keeps one colour for its whole life, so a viewer can follow an action across
frames. Line widths and text scale with the image, so labels stay legible from 160x120
to 1080p. :class:`VideoSink` writes to a hidden temporary file and renames it into place
on success, so a crashed or interrupted run never leaves a half-written video behind.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_stad.errors import FrameError, SourceError

# BGR; the ten strong colours first, so consecutive tube ids contrast most
PALETTE = (
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (34, 189, 188), (207, 190, 23), (127, 127, 127),
    (232, 199, 174), (120, 187, 255), (138, 223, 152), (150, 152, 255), (213, 176, 197),
    (148, 156, 196), (210, 182, 247), (141, 219, 219), (229, 218, 158), (199, 199, 199),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def tube_colour(tube_id) -> Tuple[int, int, int]:
    """The BGR colour of a tube: a pure function of its id, so it is stable across frames and calls."""
    return PALETTE[int(tube_id) % len(PALETTE)]


def _style(image: np.ndarray) -> Tuple[int, float, int]:
    """Box thickness, font scale and text thickness proportional to the image's longer side."""
    side = max(image.shape[:2])
    return max(1, round(side / 480)), max(0.3, side / 1600), max(1, round(side / 960))


def _text_box(image, text, x, y, background, foreground, scale, thickness):
    """Filled box with ``text`` whose top-left is near (x, y), shifted to stay inside the image."""
    (tw, th), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    pad = max(1, thickness)
    bw, bh = tw + 2 * pad, th + baseline + 2 * pad
    x = int(np.clip(x, 0, max(0, image.shape[1] - bw)))
    y = int(np.clip(y, 0, max(0, image.shape[0] - bh)))
    cv2.rectangle(image, (x, y), (x + bw - 1, y + bh - 1), background, cv2.FILLED)
    cv2.putText(image, text, (x + pad, y + pad + th), FONT, scale, foreground, thickness, cv2.LINE_AA)


def _ink(colour) -> Tuple[int, int, int]:
    """Black text on light boxes, white on dark ones."""
    b, g, r = colour
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 150 else (255, 255, 255)


def draw_tubes(image: np.ndarray, tubes: np.ndarray, labels: Sequence[str], min_score: float = 0.0) -> np.ndarray:
    """A copy of BGR ``image`` with each tube row ``(tube_id, label, score, x1, y1, x2, y2)`` drawn.

    Rows below ``min_score``, with non-finite values, or wholly outside the image are skipped;
    the rest are clipped to the image. Labels read ``#<id> <class name> <score>``.
    """
    out = image.copy()
    h, w = out.shape[:2]
    thickness, scale, text_thickness = _style(out)
    for row in np.asarray(tubes, dtype=np.float32).reshape(-1, 7):
        if not np.isfinite(row).all() or row[2] < min_score:
            continue
        x1, y1, x2, y2 = (int(round(float(v))) for v in row[3:])
        if x2 < max(x1, 0) or y2 < max(y1, 0) or x1 > w - 1 or y1 > h - 1:
            continue
        x1, x2 = max(x1, 0), min(x2, w - 1)
        y1, y2 = max(y1, 0), min(y2, h - 1)
        colour = tube_colour(row[0])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        label = int(row[1])
        name = labels[label] if 0 <= label < len(labels) else str(label)
        text = f"#{int(row[0])} {name} {row[2]:.2f}"
        (_, th), baseline = cv2.getTextSize(text, FONT, scale, text_thickness)
        above = y1 - (th + baseline + 2 * max(1, text_thickness))
        _text_box(out, text, x1, above if above >= 0 else y1, colour, _ink(colour), scale, text_thickness)
    return out


def draw_status(image: np.ndarray, text: str) -> np.ndarray:
    """Write a status line (e.g. ``frame 120  612 fps``) into the top-left of ``image``, in place."""
    _, scale, text_thickness = _style(image)
    _text_box(image, text, 0, 0, (0, 0, 0), (255, 255, 255), scale, text_thickness)
    return image


#: The containers :class:`VideoSink` writes, and the codec of each (OpenCV's FFmpeg backend reads them all back).
#: Others (.gif, .webm, ...) need codecs OpenCV does not encode with; they are refused before any frame.
CONTAINERS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def video_codec(path) -> str:
    """The fourcc :class:`VideoSink` writes ``path`` with; a :class:`SourceError` for a container it cannot write."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in CONTAINERS:
        raise SourceError(f"cannot write video {os.fspath(path)}: annotated videos are {', '.join(CONTAINERS)} files, "
                          f"not {ext or 'extension-less'}")
    return CONTAINERS[ext]


class VideoSink:
    """Write BGR frames to ``path`` (mp4v in .mp4, .m4v, .mov and .mkv, MJPG in .avi), all or nothing.

    Frames go to a hidden temporary file beside ``path`` that keeps its extension (OpenCV picks
    the container from it); :meth:`close` renames it over ``path``. :meth:`abort`, or an exception
    inside ``with VideoSink(...)``, deletes it. A sink closed before any frame (and with no
    ``size``) writes no file. Frames whose size differs from the first are resized to it.
    """

    def __init__(self, path, fps: float, size: Optional[Tuple[int, int]] = None):
        self.path = os.fspath(path)
        self.fps = float(fps)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.fourcc = video_codec(self.path)
        self.frames_written = 0
        folder, base = os.path.split(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._tmp = os.path.join(folder, f".tmp-{secrets.token_hex(4)}-{base}")
        self._writer = None
        self._done = False
        if self.size is not None:
            self._open()

    def _open(self):
        self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
        if not self._writer.isOpened():
            self.abort()
            raise SourceError(f"cannot write video {self.path} with fourcc {self.fourcc} "
                              f"at {self.size[0]}x{self.size[1]}, {self.fps:g} fps (OpenCV lacks the codec?)")

    def write(self, frame: np.ndarray) -> None:
        """Append one BGR uint8 HxWx3 frame."""
        if self._done:
            raise ValueError(f"VideoSink {self.path} is already closed")
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise FrameError(f"VideoSink takes BGR uint8 HxWx3 frames, got {frame.dtype} {frame.shape}")
        if self.size is None:
            self.size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            self._open()
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(frame))
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it to ``path``; safe to call twice."""
        if self._done:
            return
        self._done = True
        if self._writer is None:
            return
        self._writer.release()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop everything written; ``path`` is left as it was."""
        self._done = True
        if self._writer is not None:
            self._writer.release()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
