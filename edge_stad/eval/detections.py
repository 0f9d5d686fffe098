"""The detections file ``edge-stad run`` writes and ``edge-stad eval`` reads.

JSON Lines (``.jsonl``, or gzip-compressed ``.jsonl.gz``): a header record, then one
record per processed window (tubelets), per frame (final frame detections) or per
linked tube. The format is specified in docs/detections_format.md. Numbers are written
as the shortest text that reads back to the same float32, so a file round-trips exactly.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
from typing import Dict, List, NamedTuple, Tuple

import numpy as np

from edge_stad.atomic import atomic_write
from edge_stad.core.linking import Tube
from edge_stad.core.windows import MODES, Window
from edge_stad.data.annotations import MAX_NFRAMES
from edge_stad.errors import DetectionsFormatError
from edge_stad.model_config import MAX_CLIP_LEN, MAX_K, short_repr

FORMAT = "edge_stad.detections"
VERSION = 1
MAX_COORDINATE = 1e6   # pixels; frames are at most 16384 on a side, and 1e30 overflows float32 areas


class Detections(NamedTuple):
    """The content of a detections file, grouped by video (videos in order of appearance).

    ``windows[v]``: :class:`~edge_stad.core.windows.Window` s in frame order;
    ``frames[v]``: float32 ``(n, 7)`` rows ``frame, label, score, x1, y1, x2, y2`` sorted by
    frame (file order within a frame); ``tubes[v]``: ``{label: [Tube, ...]}``.
    """

    K: int
    clip_len: int
    mode: str
    labels: Tuple[str, ...]
    windows: Dict[str, List[Window]]
    frames: Dict[str, np.ndarray]
    tubes: Dict[str, Dict[int, List[Tube]]]

    @property
    def videos(self):
        seen = {}
        for part in (self.windows, self.frames, self.tubes):
            seen.update(dict.fromkeys(part))
        return list(seen)


def _numbers(values):
    """Shortest float32 text of each value (exact float64 text where that would not read back)."""
    values = np.asarray(values, dtype=np.float32)
    text = values.astype(str)
    wrong = text.astype(np.float64).astype(np.float32) != values
    if wrong.any():
        text[wrong] = [repr(float(v)) for v in values[wrong]]
    return text


def _rows(lead, values):
    """JSON rows ``[lead_i, values_i...]``: ``lead`` ints (labels/frames), ``values`` float32."""
    text = _numbers(values)
    return "[" + ",".join("[{},{}]".format(a, ",".join(r)) for a, r in zip(lead, text.tolist())) + "]"


class DetectionsWriter:
    """Writes records to an open binary stream; use :func:`open_writer` for a file."""

    def __init__(self, stream, K, clip_len, mode, labels):
        if mode not in MODES:
            raise DetectionsFormatError(f"mode must be one of {MODES}, got {mode!r}")
        self.K, self.clip_len, self.mode, self.labels = int(K), int(clip_len), mode, tuple(labels)
        self._stream = stream
        self._line({"format": FORMAT, "version": VERSION, "K": self.K, "clip_len": self.clip_len,
                    "mode": mode, "labels": list(self.labels)})

    def _line(self, record, payload=None):
        text = json.dumps(record)
        if payload is not None:
            text = text[:-1] + ", " + payload + "}"
        self._stream.write((text + "\n").encode("utf-8"))

    def _finite(self, what, array, width):
        array = np.asarray(array, dtype=np.float32).reshape(-1, width)
        if not np.isfinite(array).all():
            raise DetectionsFormatError(f"{what}: values must be finite")
        return array

    def window(self, video, frames, tubelets):
        """One processed window: K clip-end frames and ``{label: (m, 4K+1)}`` tubelets."""
        frames = [int(f) for f in frames]
        if len(frames) != self.K:
            raise DetectionsFormatError(f"window of {video!r}: expected K={self.K} frames, got {frames}")
        labels, rows = [], []
        for label in sorted(tubelets):
            array = self._finite(f"window {frames[-1]} of {video!r}", tubelets[label], 4 * self.K + 1)
            labels += [int(label)] * len(array)
            rows.append(array)
        values = np.concatenate(rows) if rows else np.zeros((0, 4 * self.K + 1), dtype=np.float32)
        self._line({"type": "window", "video": video, "frames": frames},
                   '"tubelets": ' + _rows(labels, values))

    def frame(self, video, frame, detections):
        """Final detections of one frame: ``(n, 6)`` rows ``label, score, x1, y1, x2, y2``."""
        array = self._finite(f"frame {frame} of {video!r}", detections, 6)
        self._line({"type": "frame", "video": video, "frame": int(frame)},
                   '"detections": ' + _rows(array[:, 0].astype(np.int64).tolist(), array[:, 1:]))

    def tube(self, video, tube):
        """A linked :class:`~edge_stad.core.linking.Tube` (rows ``frame, x1, y1, x2, y2, score``)."""
        boxes = self._finite(f"tube {tube.tube_id} of {video!r}", tube.boxes, 6)
        rows = _rows(boxes[:, 0].astype(np.int64).tolist(), boxes[:, 1:])
        self._line({"type": "tube", "video": video, "label": int(tube.label)},
                   f'"score": {_numbers([tube.score])[0]}, "boxes": {rows}')


@contextlib.contextmanager
def open_writer(path, K, clip_len, mode, labels):
    """A :class:`DetectionsWriter` on ``path``; the file appears complete or not at all."""
    path = os.fspath(path)
    with atomic_write(path, "wb") as raw:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
                yield DetectionsWriter(packed, K, clip_len, mode, labels)
        else:
            yield DetectionsWriter(raw, K, clip_len, mode, labels)


def write_detections(path, detections):
    """Write a whole :class:`Detections` (windows, then frames, then tubes, per video)."""
    with open_writer(path, detections.K, detections.clip_len, detections.mode, detections.labels) as w:
        for video in detections.videos:
            for window in detections.windows.get(video, ()):
                w.window(video, window.frames, window.tubelets)
            rows = detections.frames.get(video, np.zeros((0, 7), dtype=np.float32))
            for frame in np.unique(rows[:, 0]).astype(np.int64).tolist():
                mine = rows[rows[:, 0] == frame]
                w.frame(video, frame, mine[:, [1, 2, 3, 4, 5, 6]])
            for label in sorted(detections.tubes.get(video, {})):
                for tube in detections.tubes[video][label]:
                    w.tube(video, tube)


class _Reader:
    """Parses and checks records one line at a time, naming the line and field on error."""

    def __init__(self, path):
        self.path = path
        self.line = 0
        self.text = ""

    def fail(self, field, message, *args):
        raise DetectionsFormatError(f"{self.path}:{self.line}: field '{field}': {message.format(*args)}")

    def get(self, record, field, kind, what):
        if field not in record:
            self.fail(field, "missing (expected {})", what)
        value = record[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            self.fail(field, "expected {}, got {}", what, short_repr(value))
        return value

    def table(self, record, field, width, what):
        """``record[field]`` as a float64 ``(n, width)`` array of finite numbers: a list of rows of numbers
        (JSON numbers only: strings, booleans, nulls and deeper lists are refused, not converted)."""
        rows = self.get(record, field, list, "a list of rows " + what)
        if not rows:
            return np.zeros((0, width))
        try:
            array = np.array(rows)
        except (TypeError, ValueError, RecursionError):   # ragged or absurdly deep lists
            array = None
        # NumPy turns numeric strings into numbers and booleans into 0/1 where they sit among numbers;
        # a JSON boolean can only come from the literal true/false, so only such a line is walked.
        if (array is None or array.dtype.kind not in "iuf" or array.ndim != 2
                or (("true" in self.text or "false" in self.text)
                    and not all(type(v) in (int, float) for row in rows for v in row))):
            self.fail(field, "rows must be lists of {} numbers ({})", width, what)
        if array.shape[1] != width:
            self.fail(field, "rows must hold {} numbers ({}), got {}", width, what, array.shape[1])
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            self.fail(field, "values must be finite")
        return array

    def boxes(self, field, boxes):
        """``(n, 4K)`` boxes ``x1, y1, x2, y2, ...`` with ``x1 <= x2``, ``y1 <= y2`` within ``MAX_COORDINATE``."""
        boxes = boxes.reshape(len(boxes), boxes.shape[1] // 4, 4)
        if (np.abs(boxes) > MAX_COORDINATE).any():
            self.fail(field, "box coordinates must lie within +-{:g} pixels", MAX_COORDINATE)
        if (boxes[..., 0] > boxes[..., 2]).any() or (boxes[..., 1] > boxes[..., 3]).any():
            self.fail(field, "boxes must have x1 <= x2 and y1 <= y2")

    def scores(self, field, scores, low=0.0):
        if (scores < low).any() or (scores > 1).any():
            self.fail(field, "scores must lie in [{:g}, 1]", low)

    def label(self, field, values, count):
        if not (values == np.round(values)).all() or (values < 0).any() or (values >= count).any():
            self.fail(field, "labels must be integers in [0, {}) (the header's labels)", count)
        return values.astype(np.int64)

    def frame_numbers(self, field, values):
        if not (values == np.round(values)).all() or (values < 1).any() or (values > MAX_NFRAMES).any():
            self.fail(field, "frames must be integers in [1, {}]", MAX_NFRAMES)
        return values.astype(np.int64)


def _open_text(path):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_detections(path):
    """Read and check a detections file (``.jsonl`` or ``.jsonl.gz``)."""
    path = os.fspath(path)
    r = _Reader(path)
    windows, frames, tubes = {}, {}, {}
    header = None
    try:
        with _open_text(path) as f:
            for text in f:
                r.line += 1
                if not text.strip():
                    continue
                r.text = text
                try:
                    record = json.loads(text)
                except ValueError as e:
                    r.fail("-", "not JSON: {}", e)
                except RecursionError:
                    r.fail("-", "nested too deeply (a record nests 3 levels)")
                if not isinstance(record, dict):
                    r.fail("-", "expected a JSON object")
                if header is None:
                    header = _header(r, record)
                    continue
                _record(r, record, header, windows, frames, tubes)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DetectionsFormatError(f"{path}: cannot read: {e}") from e
    if header is None:
        raise DetectionsFormatError(f"{path}: empty file, expected a header record")
    frames = {v: _frame_table(parts) for v, parts in frames.items()}
    return Detections(header[0], header[1], header[2], header[3], windows, frames, tubes)


def _header(r, record):
    if record.get("format") != FORMAT:
        r.fail("format", "expected {!r} (is this a detections file?), got {!r}", FORMAT, record.get("format"))
    if record.get("version") != VERSION:
        r.fail("version", "this edge_stad reads version {}, got {!r}", VERSION, record.get("version"))
    K = r.get(record, "K", int, f"an int in [1, {MAX_K}]")
    clip_len = r.get(record, "clip_len", int, f"an int in [1, {MAX_CLIP_LEN}]")
    if not 1 <= K <= MAX_K or not 1 <= clip_len <= MAX_CLIP_LEN:
        r.fail("K" if not 1 <= K <= MAX_K else "clip_len", "must be in [1, {}]",
               MAX_K if not 1 <= K <= MAX_K else MAX_CLIP_LEN)
    mode = r.get(record, "mode", str, f"one of {MODES}")
    if mode not in MODES:
        r.fail("mode", "expected one of {}, got {!r}", MODES, mode)
    labels = r.get(record, "labels", list, "a list of class names")
    if not all(isinstance(x, str) for x in labels):
        r.fail("labels", "expected class names (strings)")
    return K, clip_len, mode, tuple(labels)


def _record(r, record, header, windows, frames, tubes):
    K, clip_len, _, labels = header
    kind = r.get(record, "type", str, "'window', 'frame' or 'tube'")
    video = r.get(record, "video", str, "a video name")
    if kind == "window":
        window = r.get(record, "frames", list, "a list of K frame numbers")
        if (len(window) != K or not all(isinstance(f, int) and not isinstance(f, bool) for f in window)
                or not 1 <= window[0] <= window[-1] <= MAX_NFRAMES
                or any(not 0 <= b - a <= clip_len for a, b in zip(window, window[1:]))):
            r.fail("frames", "expected K={} non-decreasing clip-end frames in [1, {}], at most clip_len={} apart, "
                             "got {}", K, MAX_NFRAMES, clip_len, short_repr(window))
        previous = windows.get(video)
        if previous and previous[-1].frame >= window[-1]:
            r.fail("frames", "window ending at frame {} comes after the one ending at {} in video {!r}",
                   window[-1], previous[-1].frame, video)
        table = r.table(record, "tubelets", 4 * K + 2, "label, K boxes x1 y1 x2 y2, score")
        label = r.label("tubelets", table[:, 0], len(labels))
        r.boxes("tubelets", table[:, 1:-1])
        r.scores("tubelets", table[:, -1])
        values = table[:, 1:].astype(np.float32)
        tubelets = {int(c): values[label == c] for c in np.unique(label)}
        windows.setdefault(video, []).append(Window(tuple(window), tubelets))
    elif kind == "frame":
        frame = r.get(record, "frame", int, "a frame number >= 1")
        if not 1 <= frame <= MAX_NFRAMES:
            r.fail("frame", "must be in [1, {}], got {}", MAX_NFRAMES, frame)
        table = r.table(record, "detections", 6, "label, score, x1, y1, x2, y2")
        r.scores("detections", table[:, 1])
        r.boxes("detections", table[:, 2:])
        rows = np.empty((len(table), 7), dtype=np.float32)
        rows[:, 0] = frame
        rows[:, 1] = r.label("detections", table[:, 0], len(labels))
        rows[:, 2:] = table[:, 1:]
        frames.setdefault(video, []).append(rows)
    elif kind == "tube":
        label = r.get(record, "label", int, "a label index")
        if not 0 <= label < len(labels):
            r.fail("label", "expected an index into the {} labels, got {}", len(labels), label)
        score = r.get(record, "score", (int, float), "a number")
        if not math.isfinite(score):
            r.fail("score", "must be finite, got {}", score)
        r.scores("score", np.float64(score), low=1 - K)
        boxes = r.table(record, "boxes", 6, "frame, x1, y1, x2, y2, score")
        if not len(boxes) or (np.diff(r.frame_numbers("boxes", boxes[:, 0])) != 1).any():
            r.fail("boxes", "a tube needs one row per frame, consecutive frames")
        r.boxes("boxes", boxes[:, 1:5])
        r.scores("boxes", boxes[:, 5], low=1 - K)
        per_label = tubes.setdefault(video, {}).setdefault(label, [])
        per_label.append(Tube(len(per_label), label, float(np.float32(score)), boxes.astype(np.float32)))
    else:
        r.fail("type", "expected 'window', 'frame' or 'tube', got {!r}", kind)


def _frame_table(parts):
    rows = np.concatenate(parts)
    return rows[np.argsort(rows[:, 0], kind="stable")]
