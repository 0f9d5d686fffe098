"""Where frames come from: a camera index, a network stream, a GStreamer pipeline, an image folder or a video file.

Files degrade visibly: a truncated or corrupt video ends cleanly with the frames that decoded
and says in ``warning`` how many it read of the frames its container declares; an unreadable
image in a folder is skipped, counted in ``skipped`` and named in ``warning``, and the folder
goes on; partial results beat none on a bad upload. With ``strict`` either is a
:class:`~edge_stad.errors.SourceError` instead. Live sources drop (cables, Wi-Fi, RTSP
timeouts), so they reopen with exponential backoff and only give up after
``reconnect_attempts`` reopen attempts without a frame. A GStreamer
pipeline (``nvarguscamerasrc ! ... ! appsink`` on a Jetson's CSI camera, ``rtspsrc ... !
nvv4l2decoder ! ... ! appsink`` for hardware-decoded RTSP) is a live source too; it needs an
OpenCV built with GStreamer (JetPack's, Debian's ``python3-opencv``; pip's wheels are not).
"""
from __future__ import annotations

import math
import os
import re
import time
from typing import Callable, Iterator, Optional, Tuple

import cv2
import numpy as np

from edge_stad.errors import SourceError

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ACCEPTED = ("a camera index (0, 1, ...), a stream URL (rtsp, rtsps, rtmp, http, https, udp, tcp), "
            "a GStreamer pipeline ending in appsink, an image folder or a video file")


def natural_key(name: str):
    """Sort key that orders embedded numbers by value, so ``frame2`` comes before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _bgr(frame: np.ndarray) -> np.ndarray:
    """Captures may hand out grey or BGRA frames; everything downstream expects HxWx3 BGR."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def _positive(value: float) -> Optional[float]:
    """Capture properties report 0 (or NaN) for "unknown"."""
    return float(value) if math.isfinite(value) and value > 0 else None


class FrameSource:
    """Iterate once for ``(frame, timestamp)`` pairs: BGR uint8 HxWx3 frames, timestamps in seconds.

    ``warning`` is None, or a sentence saying why the source ended early or skipped frames;
    ``strict`` makes that a :class:`SourceError` raised where it happens.
    """

    kind = ""
    live = False

    def __init__(self, name: str, strict: bool = False):
        self.name = name
        self.strict = strict
        self.fps: Optional[float] = None
        self.frame_count: Optional[int] = None
        self.frames_read = 0
        self.skipped = 0
        self.warning: Optional[str] = None

    def _degraded(self, message: str) -> None:
        """Say what went wrong in ``warning``, or raise it with ``strict``."""
        if self.strict:
            raise SourceError(message + " (--strict)")
        self.warning = message

    def __iter__(self) -> Iterator[Tuple[np.ndarray, float]]:
        for frame, timestamp in self._frames():
            self.frames_read += 1
            yield frame, timestamp

    def _frames(self) -> Iterator[Tuple[np.ndarray, float]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.kind} {self.name!r}>"


class VideoFile(FrameSource):
    kind = "video"

    def __init__(self, path: str, capture_factory: Callable, strict: bool = False):
        super().__init__(path, strict)
        self._cap = capture_factory(path)
        codec = (int(self._cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF).to_bytes(4, "little")
        if not self._cap.isOpened() or codec == b"ansi":  # FFmpeg plays .txt/.nfo files as rendered text
            self._cap.release()
            raise SourceError(f"cannot open video {path} (not a video, or a codec OpenCV lacks)")
        self.fps = _positive(self._cap.get(cv2.CAP_PROP_FPS))
        count = _positive(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = int(count) if count else None
        ok, frame = self._cap.read()  # decode one frame now: an unusable file fails at open, not mid-run
        if not ok or frame is None:
            self._cap.release()
            raise SourceError(f"{path}: opens but no frame decodes (empty or corrupt video)")
        self._first = frame

    def _timestamp(self, index: int) -> float:
        return index / self.fps if self.fps else self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

    def _frames(self):
        frame, index = self._first, 0
        self._first = None
        while frame is not None:
            yield _bgr(frame), self._timestamp(index)
            index += 1
            ok, frame = self._cap.read()
            frame = frame if ok else None
        if self.frame_count and index < self.frame_count:
            self._degraded(f"{self.name}: read {index} of the {self.frame_count} frames its container declares "
                           f"(truncated or corrupt file, or decoder errors); kept the {index} frames decoded")

    def close(self):
        self._cap.release()


class ImageFolder(FrameSource):
    kind = "folder"

    def __init__(self, path: str, fps: float = 25.0, strict: bool = False):
        super().__init__(path, strict)
        names = [n for n in os.listdir(path) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        if not names:
            raise SourceError(f"image folder {path} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        self._files = [os.path.join(path, n) for n in sorted(names, key=natural_key)]
        self.fps = float(fps)
        self.frame_count = len(self._files)

    def _frames(self):
        first = None
        for index, file in enumerate(self._files):   # a file's place in the folder gives its timestamp
            frame = cv2.imread(file, cv2.IMREAD_COLOR)  # grey and BGRA come out as 3-channel BGR
            if frame is None:
                self.skipped += 1
                first = first or file
                self._degraded(f"{file} is not a readable image" if self.skipped == 1 else
                               f"skipped {self.skipped} unreadable images of {self.frame_count} (the first {first})")
                continue
            yield frame, index / self.fps


class LiveSource(FrameSource):
    """A camera or network stream; timestamps are monotonic seconds since its first frame."""

    live = True

    def __init__(self, target, name: str, kind: str, capture_factory: Callable, reconnect_attempts: int,
                 backoff: float, max_backoff: float, sleep: Callable[[float], None]):
        super().__init__(name)
        self.kind = kind
        self.reconnects = 0
        self._target, self._factory = target, capture_factory
        self._attempts, self._backoff, self._max_backoff, self._sleep = reconnect_attempts, backoff, max_backoff, sleep
        self._cap = capture_factory(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"cannot open {kind} {name}")
        self.fps = _positive(self._cap.get(cv2.CAP_PROP_FPS))

    def _frames(self):
        start = None
        attempts = 0  # reopen attempts since the last good frame
        while True:
            ok, frame = self._cap.read() if self._cap.isOpened() else (False, None)
            if ok and frame is not None:
                if attempts:
                    self.reconnects += 1
                    attempts = 0
                now = time.monotonic()
                start = now if start is None else start
                yield _bgr(frame), now - start
                continue
            if attempts == self._attempts:
                self.warning = f"lost {self.name} after {attempts} reconnect attempts"
                return
            self._cap.release()
            self._sleep(min(self._backoff * 2 ** attempts, self._max_backoff))
            attempts += 1
            self._cap = self._factory(self._target)

    def close(self):
        self._cap.release()


def _redact(url: str) -> str:
    """Keep stream passwords out of logs and warnings (in a URL, or in the URLs of a pipeline)."""
    return re.sub(r"\b([a-z][a-z0-9+.-]*://)[^/@\s]*@", r"\1***@", url, flags=re.IGNORECASE)


def gstreamer_pipeline(text: str) -> bool:
    """Whether ``text`` is a GStreamer pipeline (elements linked with ``!``) rather than a path or URL."""
    return "!" in text and not os.path.exists(text)


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV was built with GStreamer (``cv2.getBuildInformation()``'s Video I/O section)."""
    found = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(found) and found.group(1).upper() == "YES"


def _pipeline_capture(text: str, factory: Optional[Callable]) -> Callable:
    """What opens pipeline ``text``: ``factory`` (tests), else OpenCV's GStreamer backend; or why neither can."""
    if not re.search(r"\bappsink\b", text):
        raise SourceError(f"pipeline {_redact(text)}: a GStreamer pipeline for OpenCV must end in appsink "
                          "(e.g. '... ! videoconvert ! video/x-raw,format=BGR ! appsink')")
    if factory is not None:
        return factory
    if not opencv_has_gstreamer():
        raise SourceError(f"pipeline {_redact(text)}: this OpenCV ({cv2.__version__}, {os.path.dirname(cv2.__file__)}) "
                          "was built without GStreamer, so it cannot run pipelines. Use JetPack's OpenCV on a Jetson, "
                          "or Debian/Ubuntu's python3-opencv (apt) instead of pip's opencv-python wheels, or give a "
                          "file, camera index or URL")
    return lambda target: cv2.VideoCapture(target, cv2.CAP_GSTREAMER)


def open_source(spec, reconnect_attempts: int = 5, backoff: float = 0.5, max_backoff: float = 8.0,
                sleep: Callable[[float], None] = time.sleep, capture_factory: Optional[Callable] = None,
                folder_fps: float = 25.0, strict: bool = False) -> FrameSource:
    """Open ``spec`` as a camera index, stream URL, GStreamer pipeline, image folder or video file (checked in
    that order).

    ``capture_factory(target)`` (default ``cv2.VideoCapture``; GStreamer's backend for pipelines)
    builds the capture for video files, cameras, streams and pipelines; tests inject fakes through
    it. Raises :class:`SourceError` when nothing opens; ``strict``: also when a file ends early or a
    folder image is unreadable (else a ``warning``).
    """
    factory = capture_factory or cv2.VideoCapture
    live = dict(capture_factory=factory, reconnect_attempts=reconnect_attempts, backoff=backoff,
                max_backoff=max_backoff, sleep=sleep)
    if isinstance(spec, int) and not isinstance(spec, bool):
        return LiveSource(spec, f"camera {spec}", "camera", **live)
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if re.fullmatch(r"[0-9]+", text):
            return LiveSource(int(text), f"camera {text}", "camera", **live)
        if text.lower().startswith(STREAM_SCHEMES):
            return LiveSource(text, _redact(text), "stream", **live)
        if gstreamer_pipeline(text):
            live["capture_factory"] = _pipeline_capture(text, capture_factory)
            return LiveSource(text, "pipeline " + _redact(text), "pipeline", **live)
        if os.path.isdir(text):
            return ImageFolder(text, folder_fps, strict)
        if os.path.isfile(text):
            return VideoFile(text, factory, strict)
    raise SourceError(f"source {spec!r} is not {ACCEPTED} (no such file or folder)")
