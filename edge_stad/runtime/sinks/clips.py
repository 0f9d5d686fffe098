"""Event clips: one MP4 per finished tube, with pre-roll and post-roll, in bounded memory.

A :class:`ClipRecorder` sees one camera's frames as their results become final, in
order. It keeps the newest ``pre_roll`` seconds of them (plus ``margin`` frames, the
longest a tube can be reported before it is confirmed) in a ring buffer of raw frames.
When a tube is confirmed the recorder opens its clip, writes the buffered frames from
``pre_roll`` before the tube's first reported frame, and from then on appends each final
frame, so a tube of any length costs one open encoder, not its frames in memory. Frames
after the tube's newest box wait in the clip (a tube can bridge a gap of up to K windows)
until the tube is seen again or ends; when it ends the clip runs on to ``post_roll``
seconds after its last frame and is closed. Files go through :class:`VideoSink`: a clip
appears whole, or not at all (a discarded tube's clip is deleted).

Memory: ``(pre_roll·fps + margin)`` frames in the ring plus, per open clip, at most the
frames of one gap; at 1920x1080 a 2 s pre-roll at 25 frames/s holds about 0.4 GB.
"""
from __future__ import annotations

import os
import re
from collections import deque
from typing import Dict, List, NamedTuple, Optional

import numpy as np

from edge_stad.errors import ConfigError
from edge_stad.runtime.drawing import VideoSink


class FinishedClip(NamedTuple):
    """A closed clip: ``path`` (None if the ring no longer held any of its frames: no file), and the first
    and last frame it holds."""

    tube_id: int
    path: Optional[str]
    first: Optional[int]
    last: Optional[int]


class _Clip:
    def __init__(self, sink: VideoSink):
        self.sink = sink
        self.first: Optional[int] = None   # first frame written
        self.last = 0                       # last frame written
        self.held: List = []                # (frame, image) after the tube's newest box, not written yet
        self.end: Optional[int] = None      # last frame to write, once the tube ended

    def write(self, frame, image):
        self.sink.write(image)
        self.first = frame if self.first is None else self.first
        self.last = frame


def seconds_to_frames(seconds: float, fps: float, name: str) -> int:
    if not (seconds >= 0 and np.isfinite(seconds)):
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {seconds!r}")
    return int(round(seconds * fps))


def safe_name(text: str) -> str:
    """``text`` with everything but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_`` (file names)."""
    return re.sub(r"[^\w.-]+", "_", str(text)).strip("._") or "_"


class ClipRecorder:
    """One camera's event clips in ``folder``: ``<prefix>-tube<id>-<label>.mp4``.

    ``fps``: the clips' frame rate, which also turns ``pre_roll`` and ``post_roll`` (seconds)
    into frames. ``margin``: frames the ring keeps beyond the pre-roll (a tube is confirmed at
    most ``K·clip_len`` frames after it was first reported). ``max_open``: clips written at
    once (each costs an encoder per frame); a tube confirmed while that many are open gets no clip.
    """

    def __init__(self, folder, prefix: str, fps: float = 25.0, pre_roll: float = 2.0, post_roll: float = 2.0,
                 margin: int = 0, max_open: int = 8):
        if not (fps > 0 and np.isfinite(fps)):
            raise ConfigError(f"clip fps must be a finite number > 0, got {fps!r}")
        if int(max_open) < 1:
            raise ConfigError(f"max_open (clips written at once) must be >= 1, got {max_open}")
        self.folder = os.path.abspath(os.fspath(folder))
        os.makedirs(self.folder, exist_ok=True)
        if not os.access(self.folder, os.W_OK):
            raise ConfigError(f"clip folder {self.folder} is not writable")
        self.prefix, self.fps = safe_name(prefix), float(fps)
        self.pre = seconds_to_frames(pre_roll, self.fps, "pre_roll")
        self.post = seconds_to_frames(post_roll, self.fps, "post_roll")
        self.max_open = int(max_open)
        self.ring = deque(maxlen=self.pre + max(0, int(margin)) + 1)   # (frame, image), the newest last
        self.clips: Dict[int, _Clip] = {}
        self.written = 0

    @property
    def buffered(self) -> int:
        """Frames held in memory: the ring and the frames waiting in open clips."""
        return len(self.ring) + sum(len(c.held) for c in self.clips.values())

    def add(self, frame: int, image: np.ndarray, seen) -> List[FinishedClip]:
        """A final frame, in order, and the ids of the tubes reported in it; the clips it finished."""
        self.ring.append((frame, image))
        finished = []
        for tube_id, clip in list(self.clips.items()):
            if clip.end is not None:
                clip.write(frame, image)
                if frame >= clip.end:
                    finished.append(self._close(tube_id))
            elif tube_id in seen:
                for item in clip.held:
                    clip.write(*item)
                clip.held = []
                clip.write(frame, image)
            else:
                clip.held.append((frame, image))
        return finished

    def start(self, tube_id: int, label: str, first: int, newest: int) -> Optional[str]:
        """Open the clip of a tube first reported at frame ``first`` whose newest box is at ``newest``.

        Writes the ring's frames from ``first - pre_roll``; returns the clip's path, or None when
        ``max_open`` clips are open already.
        """
        if tube_id in self.clips:
            return self.clips[tube_id].sink.path
        if len(self.clips) >= self.max_open:
            return None
        path = os.path.join(self.folder, f"{self.prefix}-tube{tube_id:06d}-{safe_name(label)}.mp4")
        clip = self.clips[tube_id] = _Clip(VideoSink(path, self.fps))
        for frame, image in self.ring:
            if frame > newest:
                clip.held.append((frame, image))
            elif frame >= first - self.pre:
                clip.write(frame, image)
        return path

    def end(self, tube_id: int, last: int) -> List[FinishedClip]:
        """The tube ended at frame ``last``: its clip runs to ``last + post_roll``; the clips this finished."""
        clip = self.clips.get(tube_id)
        if clip is None:
            return []
        clip.end = last + self.post
        newest = self.ring[-1][0] if self.ring else last
        for frame, image in clip.held:
            if frame <= clip.end:
                clip.write(frame, image)
        clip.held = []
        return [self._close(tube_id)] if newest >= clip.end else []

    def abort(self, tube_id: int) -> None:
        """Drop a tube's clip (the tube was discarded): nothing is left on disk."""
        clip = self.clips.pop(tube_id, None)
        if clip is not None:
            clip.sink.abort()

    def finish(self) -> List[FinishedClip]:
        """The stream ended: close every ended tube's clip with the post-roll there is, drop the rest."""
        finished = [self._close(t) for t, c in list(self.clips.items()) if c.end is not None]
        for tube_id in list(self.clips):
            self.abort(tube_id)
        self.ring.clear()
        return finished

    def _close(self, tube_id) -> FinishedClip:
        clip = self.clips.pop(tube_id)
        if clip.first is None:
            clip.sink.abort()
            return FinishedClip(tube_id, None, None, None)
        clip.sink.close()
        self.written += 1
        return FinishedClip(tube_id, clip.sink.path, clip.first, clip.last)
