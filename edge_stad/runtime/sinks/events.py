"""``ActionEvents``: a Runtime's tubes as action events for sinks (MQTT, callbacks) and event clips.

What a camera app reports is not a tubelet or a linker step but "a fall started at 12:03:07
here, and ended 4 s later; here is the clip". :class:`ActionEvents` wraps a
:class:`~edge_stad.runtime.stream.Runtime`: each push goes to the Runtime, and the results and
tube events it returns become JSON-ready events (schema: ``docs/events_format.md``), passed to
every sink in order:

* ``started``: a tube is reported in a final result (mean score >= ``min_score``) and has at
  least two tubelets (the linker keeps no tube with one, so one-window flickers never start);
* ``updated``: its newest box and score, at most once per ``update_interval`` seconds of stream
  time per tube;
* ``ended``: the linker kept the finished tube and its score is >= ``min_score``: one per tube
  that :meth:`Runtime.tubes` reports with that score. With clips on, it comes when the clip is
  written (``post_roll`` seconds after the tube's last frame), its path in ``clip``;
* ``discarded``: a started tube that the linker dropped or whose final score fell below
  ``min_score``: every ``started`` gets exactly one ``ended`` or ``discarded``.

A tube's ``first_*`` fields are its first reported frame; ``last_*``, ``box`` and ``score`` its
newest (an ``ended`` event: its last frame and its final score). ``seq`` counts each camera's
events from 0, so a consumer sees what a sink had to drop. Memory is bounded on an endless
stream: per tube a few numbers while it is open, and with clips the frames waiting for their
result plus the clip ring (:mod:`edge_stad.runtime.sinks.clips`).
"""
from __future__ import annotations

import datetime
import math
import os
from collections import deque
from typing import Dict, Optional, Protocol, Sequence, Union

import numpy as np

from edge_stad.core.linking import ENDED, GREW
from edge_stad.engines.manifest import MANIFEST, sha256
from edge_stad.errors import ConfigError
from edge_stad.runtime.frame_input import check_frame

SCHEMA = 1
TYPES = ("started", "updated", "ended", "discarded")


class EventSink(Protocol):
    """Where events go: any callable taking the event dict (``print``, ``list.append``, :class:`MqttSink`).

    A sink with a ``close()`` method is closed by :meth:`ActionEvents.close`.
    """

    def __call__(self, event: dict) -> None: ...


def engine_identity(path) -> dict:
    """``{"name", "sha256"}`` of an engine folder or checkpoint file, as events report it.

    A folder's sha256 is its ``manifest.json``'s (``sha256sum ENGINE/manifest.json``), which
    pins the sha256 of every file in it; a checkpoint's is the file's.
    """
    if path is None:
        return {"name": None, "sha256": None}
    path = os.fspath(path)
    target = os.path.join(path, MANIFEST) if os.path.isdir(path) else path
    return {"name": os.path.basename(os.path.normpath(path)), "sha256": sha256(target)}


def check_camera_name(name) -> str:
    """A camera name fit for an MQTT topic level and a file name prefix, or a :class:`ConfigError`."""
    if not isinstance(name, str) or not name or any(c in name for c in "/+#") or not name.isprintable():
        raise ConfigError(f"camera name must be a non-empty printable string without '/', '+' or '#' "
                          f"(it becomes an MQTT topic level), got {name!r}")
    return name


def _number(value):
    return None if value is None else round(float(value), 6)


class _Track:
    """What the events say about one tube: its first and newest reported frame, box and score."""

    def __init__(self, tube_id, label, frame, timestamp):
        self.tube_id, self.label = tube_id, label
        self.first_frame, self.first_time = frame, timestamp
        self.frame, self.time, self.box, self.score = frame, timestamp, None, 0.0
        self.started = False
        self.sent_at = None     # stream time of the last started/updated event
        self.clip = None        # the clip's path while it is written

    def see(self, frame, timestamp, row):
        self.frame, self.time = frame, timestamp
        self.score, self.box = float(row[2]), row[3:7]


class _Camera:
    def __init__(self, name, clips):
        self.name = name
        self.seq = 0
        self.tracks: Dict[int, _Track] = {}   # tubes reported in the results, not ended
        self.confirmed = set()                # open tubes with two tubelets or more
        self.closing: Dict[int, _Track] = {}  # ended tubes whose clip still takes its post-roll
        self.images = deque()                 # pushed frames waiting for their result (clips only)
        self.clips = clips


class ActionEvents:
    """Push frames through ``runtime`` and hand its tubes' events to ``sinks``; optionally write event clips.

    ``camera``: the camera's name (a list: one per stream of a multi-stream Runtime). ``sinks``:
    callables taking each event dict (:class:`EventSink`). ``clips``: a folder for one MP4 per
    ended tube, from ``pre_roll`` seconds before its first reported frame to ``post_roll`` after its
    last, at ``fps`` (the source's rate), drawn with the tubes when ``annotate_clips``; at most
    ``max_open_clips`` written at once. ``min_score``: tubes with a lower mean score make no events
    (default: the Runtime's ``min_tube_score``, what its results report). ``update_interval``:
    seconds of stream time between a tube's ``updated`` events (None: none; 0: every frame); stream
    time is the pushed timestamp, or frame / ``fps`` without one. ``engine``: the engine folder or
    checkpoint the Runtime opened, named in every event with its sha256 (:func:`engine_identity`).

    The Runtime's :meth:`~Runtime.events` are drained here on every push; its results, tubes and
    windows are left to the caller. Use from one thread.
    """

    def __init__(self, runtime, camera: Union[str, Sequence[str]] = "camera", sinks: Sequence[EventSink] = (), *,
                 clips=None, fps: float = 25.0, pre_roll: float = 2.0, post_roll: float = 2.0,
                 annotate_clips: bool = False, max_open_clips: int = 8, min_score: Optional[float] = None,
                 update_interval: Optional[float] = 1.0, engine=None):
        names = [check_camera_name(n) for n in (camera if isinstance(camera, (list, tuple)) else [camera])]
        if len(names) != runtime.streams:
            raise ConfigError(f"give one camera name per stream: the Runtime serves {runtime.streams}, "
                              f"got {len(names)} ({names!r})")
        if len(set(names)) != len(names):
            raise ConfigError(f"camera names must differ, got {names!r}")
        if not (fps > 0 and math.isfinite(fps)):
            raise ConfigError(f"fps must be a finite number > 0, got {fps!r}")
        if update_interval is not None and not update_interval >= 0:
            raise ConfigError(f"update_interval must be None or seconds >= 0, got {update_interval!r}")
        self.runtime = runtime
        self.sinks = list(sinks)
        self.fps = float(fps)
        self.min_score = runtime.min_tube_score if min_score is None else float(min_score)
        self.update_interval = update_interval
        self.annotate = bool(annotate_clips)
        self.engine = engine_identity(engine)
        self.counts = dict.fromkeys(TYPES, 0)
        self.clips_missing = 0   # ended tubes without a clip: max_open_clips were open, or the ring had lost them
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        recorders = [None] * len(names)
        if clips is not None:
            from edge_stad.runtime.sinks.clips import ClipRecorder

            margin = runtime.K * runtime.clip_len   # a tube is confirmed at most K windows after it was reported
            recorders = [ClipRecorder(clips, f"{n}-{stamp}", fps, pre_roll, post_roll, margin, max_open_clips)
                         for n in names]
        self._cameras = [_Camera(n, r) for n, r in zip(names, recorders)]

    # -- pushing -----------------------------------------------------------------------------

    def push(self, frame, timestamp=None, stream=0):
        """:meth:`Runtime.push`, then the events it caused; returns the Runtime's results."""
        results = self.runtime.push(frame, timestamp, stream)
        self._keep(stream, frame)
        self._handle(results)
        return results

    def push_batch(self, frames, timestamps=None):
        """:meth:`Runtime.push_batch` (one frame per stream, None skips one), then the events it caused."""
        results = self.runtime.push_batch(frames, timestamps)
        for i, frame in enumerate(frames):
            if frame is not None:
                self._keep(i, frame)
        self._handle(results)
        return results

    def flush(self, stream=None):
        """:meth:`Runtime.flush`: the stream's last results, its tubes' last events, its clips closed."""
        results = self.runtime.flush(stream)
        self._handle(results)
        for camera in self._streams(stream):
            self._finish(camera)
        return results

    def reset(self, stream=None):
        """:meth:`Runtime.reset`: drop the stream; its open tubes are ``discarded``, their clips deleted."""
        self.runtime.reset(stream)
        for camera in self._streams(stream):
            for track in camera.tracks.values():
                if track.started:
                    self._emit(camera, "discarded", track)
            self._finish(camera)

    def close(self):
        """End every stream (:meth:`flush`) and close the sinks that have a ``close()``."""
        try:
            self.flush()
        finally:
            for sink in self.sinks:
                if hasattr(sink, "close"):
                    sink.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def stats(self) -> dict:
        """Events made per type, clips written, ended tubes without a clip, frames held in memory for clips."""
        recording = [c for c in self._cameras if c.clips is not None]
        return {"events": dict(self.counts),
                "clips_written": sum(c.clips.written for c in recording),
                "clips_missing": self.clips_missing,
                "frames_buffered": sum(c.clips.buffered + len(c.images) for c in recording)}

    # -- internals ---------------------------------------------------------------------------

    def _streams(self, stream):
        return self._cameras if stream is None else [self._cameras[stream]]

    def _keep(self, stream, frame):
        """Hold a copy of a pushed frame until its result is final (clips only; the caller may reuse its buffer)."""
        camera = self._cameras[stream]
        if camera.clips is not None:
            camera.images.append(np.array(check_frame(frame, self.runtime.max_side), copy=True))

    def _clock(self, frame, timestamp):
        return timestamp if timestamp is not None else frame / self.fps

    def _handle(self, results):
        """The results (what each tube looks like at its final frames), then the linker's events, then the
        clips: a tube confirmed in this batch must find its first frames still in the clip ring."""
        final = []
        for result in results:
            camera = self._cameras[result.stream]
            seen = set()
            for row in result.tubes:
                seen.add(int(row[0]))
                self._see(camera, result.frame, result.timestamp, row)
            if camera.clips is not None:
                final.append((camera, result, camera.images.popleft(), seen))
        for i, event in self.runtime.events():
            camera = self._cameras[i]
            if event.kind == GREW:
                camera.confirmed.add(event.tube_id)
                track = camera.tracks.get(event.tube_id)
                if track is not None and not track.started:
                    self._start(camera, track)
            elif event.kind == ENDED:
                self._end(camera, event.tube_id, event.tube)
        for camera, result, image, seen in final:
            if self.annotate:
                from edge_stad.runtime.drawing import draw_tubes

                image = draw_tubes(image, result.tubes, self.runtime.labels)
            for clip in camera.clips.add(result.frame, image, seen):
                self._clip_written(camera, clip)

    def _see(self, camera, frame, timestamp, row):
        tube_id = int(row[0])
        track = camera.tracks.get(tube_id)
        if track is None:
            track = camera.tracks[tube_id] = _Track(tube_id, int(row[1]), frame, timestamp)
        track.see(frame, timestamp, row)
        if not track.started:
            if tube_id in camera.confirmed:
                self._start(camera, track)
        elif self.update_interval is not None and \
                self._clock(frame, timestamp) - track.sent_at >= self.update_interval:
            track.sent_at = self._clock(frame, timestamp)
            self._emit(camera, "updated", track)

    def _start(self, camera, track):
        track.started = True
        track.sent_at = self._clock(track.frame, track.time)
        if camera.clips is not None:
            track.clip = camera.clips.start(track.tube_id, self._label(track.label), track.first_frame, track.frame)
        self._emit(camera, "started", track)

    def _end(self, camera, tube_id, tube):
        camera.confirmed.discard(tube_id)
        track = camera.tracks.pop(tube_id, None)
        if tube is None or tube.score < self.min_score:
            if track is not None and track.started:
                if camera.clips is not None:
                    camera.clips.abort(tube_id)
                self._emit(camera, "discarded", track)
            return
        last = int(tube.boxes[-1, 0])
        if track is None:   # kept, but never reported at this score (its running mean was lower): its boxes
            track = _Track(tube_id, tube.label, int(tube.boxes[0, 0]), None)
            track.frame, track.box = last, tube.boxes[-1, 1:5]
            if camera.clips is not None:
                track.clip = camera.clips.start(tube_id, self._label(tube.label), track.first_frame, last)
        track.score = tube.score
        if track.clip is None:
            self._emit(camera, "ended", track)
            return
        camera.closing[tube_id] = track
        for clip in camera.clips.end(tube_id, last):
            self._clip_written(camera, clip)

    def _clip_written(self, camera, clip):
        self._emit(camera, "ended", camera.closing.pop(clip.tube_id), clip=clip.path)

    def _finish(self, camera):
        """The stream ended: the ended tubes' clips closed with the post-roll there is, the rest dropped."""
        if camera.clips is not None:
            for clip in camera.clips.finish():
                self._clip_written(camera, clip)
        camera.tracks.clear()
        camera.confirmed.clear()
        camera.closing.clear()
        camera.images.clear()

    def _label(self, label):
        labels = self.runtime.labels
        return labels[label] if 0 <= label < len(labels) else str(label)

    def _emit(self, camera, kind, track, clip=None):
        event = {
            "schema": SCHEMA, "type": kind, "seq": camera.seq, "camera": camera.name,
            "tube_id": int(track.tube_id), "label": int(track.label), "label_name": self._label(track.label),
            "score": round(float(track.score), 4),
            "first_frame": int(track.first_frame), "first_timestamp": _number(track.first_time),
            "last_frame": int(track.frame), "last_timestamp": _number(track.time),
            "box": [round(float(v), 1) for v in track.box],
            "clip": clip, "engine": self.engine,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
        }
        camera.seq += 1
        self.counts[kind] += 1
        self.clips_missing += kind == "ended" and camera.clips is not None and clip is None
        for sink in self.sinks:
            sink(event)

