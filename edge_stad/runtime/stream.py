"""``edge_stad.Runtime``: push camera frames, get per-frame action boxes and tubes online.

The runtime follows the streaming contract (the evaluation's stream mode): a tubelet
window is processed every ``clip_len`` frames, the encoder runs once per new clip and
its features wait in a K-deep FIFO (NumPy on the CPU), the head and decode run once
per window, the online :class:`~edge_stad.core.linking.Linker` grows the
tubes, and at the end of a stream (:meth:`Runtime.flush`) the last frame gets its
uneven window. The windows, tubes and per-frame detections are exactly those of the
offline path (:func:`edge_stad.eval.predict.predict_windows` then
:func:`~edge_stad.eval.evaluate.evaluate`) on the same frames.

Latency: a frame's result is final, and returned, once the last window that reaches it
has run: ``(K-1)·clip_len`` to ``K·clip_len - 1`` frames after it arrived (10-14
frames for K=3, clip_len=5; the first window also waits for frame ``K·clip_len`` so
that short streams match the offline schedule). :meth:`Runtime.flush` returns the rest.
A pipelined Runtime (``pipeline=True``) encodes a window's new clip on a worker thread and
runs its head, decode and linking when the next window comes, ``clip_len`` frames later:
the same results, events and tube ids, that much later. ``pipeline=N`` keeps N windows'
encoder calls in flight on N worker threads, ``N·clip_len`` frames later: on a small CPU the
caller's thread (head, linking, results) then no longer waits for the one encoder call.

Flow-fusion SSDs stream the same way, every frame a key frame: each new frame pair's flow is computed
once (the engine's flow graph, or DIS on the host) and cached while a detection reads it, the detector
runs per key frame, and a model that reads ``lookahead`` frames past its key frame returns each
result that many frames later (the paper's model: 1; flow-fusion-lite: 0).

Frame detectors (MENet, MENet-Lite) stream through the same API: every frame is a one-frame
window (K = 1), its 3D-branch feature is computed on the ``clip_len`` frames ending at frames 1,
1 + ``refresh``, ... and reused in between, the 2D branch runs on every frame, the region map is
decoded on the host and the same Linker links the frames online. A frame's result is final at
once (latency 0 frames); its detections are the decoded boxes (what the frame-level evaluation
scores, :func:`edge_stad.eval.predict_frames.predict_frame_rows`).

Thread-safety: every public method takes the Runtime's lock, so calls from several
threads are serialised and safe. For parallel work run one Runtime per camera in its
own thread (ONNX Runtime releases the GIL; give each ``threads=`` so they do not
oversubscribe the cores), or one Runtime with ``streams=N`` and :meth:`Runtime.push_batch`,
which batches the encoder calls of the cameras that need a clip at the same step.
"""
from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections import deque
from contextlib import contextmanager
from typing import NamedTuple, Optional

import numpy as np

from edge_stad.core.frame_detections import FrameDetections
from edge_stad.core.linking import ENDED, SEGMENT, SEGMENT_FRAMES, Linker
from edge_stad.core.snippets import head_grid, layout_of
from edge_stad.core.ssd_decode import frames_for_key
from edge_stad.core.windows import Window, clip_ending_at, closing_windows, window_due
from edge_stad.defaults import MIN_TUBE_SCORE
from edge_stad.engines.protocols import KINDS
from edge_stad.engines.ssd_backend import PairFlows
from edge_stad.errors import ConfigError, FrameError
from edge_stad.preprocess import grid_size, resize
from edge_stad.runtime.frame_input import MAX_SIDE, check_frame
from edge_stad.runtime.steppers import FrameStepper, SnippetStepper, SsdStepper, TubeletStepper

STAGES = ("preprocess", "encoder", "head", "decode", "link", "results")


class FrameResult(NamedTuple):
    """The final output for one pushed frame, in that frame's pixels.

    ``tubes``: float32 ``(m, 7)`` rows ``tube_id, label, score, x1, y1, x2, y2`` of the
    tubes at this frame whose mean tubelet score is at least the Runtime's
    ``min_tube_score`` (ids are stable for a tube's life and never reused by a Runtime);
    ``detections``: float32 ``(n, 6)`` rows ``label, score, x1, y1, x2, y2``, the ACT
    per-frame detections (soft-NMS'd, unthresholded) when the Runtime was created with
    ``frame_detections=True``, else empty.
    """

    stream: int
    frame: int
    timestamp: Optional[float]
    tubes: np.ndarray
    detections: np.ndarray


def pipeline_threads():
    """Engine threads of a pipelined Runtime: all cores but the one the caller's thread runs on."""
    return max(1, (os.cpu_count() or 2) - 1)


def warn_if_unchecked(source, manifest):
    """Warn where an engine's detections are not to be trusted: a speed-only engine (random weights), or an
    INT8 engine whose accuracy gate was not applicable. Python shows the warning once per engine and process."""
    if not manifest:
        return
    reasons = [f"speed-only engine, {manifest['speed_only']}"] if manifest.get("speed_only") else []
    verdict = (manifest.get("calibration") or {}).get("verdict") or ""
    if verdict.startswith("not applicable"):
        reasons.append(f"its INT8 accuracy gate was {verdict}")
    if reasons:
        warnings.warn(f"engine {source}: {'; '.join(reasons)}", UserWarning, stacklevel=3)


_NO_TUBES = np.zeros((0, 7), dtype=np.float32)
_NO_DETECTIONS = np.zeros((0, 6), dtype=np.float32)


class _Stream:
    """What one camera's stream holds between frames: recent frames, clip features, open tubes."""

    def __init__(self, K, clip_len, frame_detections, link_matrices=None, segment_frames=SEGMENT_FRAMES):
        self.K, self.clip_len = K, clip_len
        self.linker = Linker(K, clip_len, matrices=link_matrices, segment_frames=segment_frames)
        self.with_detections = frame_detections
        self.clear()

    def clear(self):
        self.count = 0          # frames pushed; the newest is frame `count` (1-based)
        self.image_hw = None    # the first frame's size: the stream's pixel frame
        self.frames = {}        # frame -> prepared frame (resized uint8, or a device tensor), the last clip_len
        self.features = {}      # clip-end frame -> (feature, size map): the FIFO
        self.last = None        # last processed frame
        self.pending = deque()  # (frame, timestamp, (h, w)) not final yet
        self.ended = []         # kept tubes that still cover pending frames
        self.ready = []         # final results not returned yet
        self.collector = FrameDetections(self.K, "stream") if self.with_detections else None

    def add(self, resized, timestamp, hw):
        """Store a frame; the windows it lets the stream process now."""
        self.count += 1
        self.frames[self.count] = resized
        self.pending.append((self.count, timestamp, hw))
        if self.image_hw is None:
            self.image_hw = hw
        due = window_due(self.count, self.K, self.clip_len)
        return [due] if due else []

    def last_windows(self):
        """The windows that end the stream: the whole schedule of a short one, or the uneven last window."""
        return closing_windows(self.K, self.clip_len, self.count, self.last)

    def clip(self, end):
        return [self.frames[f] for f in clip_ending_at(end, self.clip_len)]

    def processed(self, window):
        """Forget what no later window needs."""
        self.last = window[-1]
        for end in [e for e in self.features if e < window[0]]:
            del self.features[end]
        for f in [f for f in self.frames if f <= self.count - self.clip_len]:
            del self.frames[f]

    def pop_detections(self, frame):
        """The final per-frame detections of ``frame`` (``label, score, x1, y1, x2, y2``)."""
        return self.collector.pop(frame)[:, 1:] if self.collector is not None else _NO_DETECTIONS


class _FrameStream(_Stream):
    """A frame detector's stream: a one-frame window per frame, the last ``clip_len`` frames for the 3D
    branch and its cached feature."""

    def __init__(self, clip_len, frame_detections, link_matrices=None, segment_frames=SEGMENT_FRAMES):
        super().__init__(1, 1, frame_detections, link_matrices, segment_frames)
        self.clip_len = clip_len

    def clear(self):
        super().clear()
        self.collector = None
        self.detections = {} if self.with_detections else None   # frame -> decoded rows
        self.feat3d = None

    def add(self, resized, timestamp, hw):
        super().add(resized, timestamp, hw)
        return [(self.count,)]

    def last_windows(self):
        return []

    def pop_detections(self, frame):
        return self.detections.pop(frame) if self.detections is not None else _NO_DETECTIONS


class _SnippetStream(_Stream):
    """An STMA stream: one window per frame from frame K on (its tubelet spans the K snippet frames), the last
    ``clip_len`` frames and their cached per-frame features (the next window's clip reads them), the 3D
    feature."""

    def __init__(self, K, clip_len, frame_detections, link_matrices=None, segment_frames=SEGMENT_FRAMES):
        super().__init__(K, 1, frame_detections, link_matrices, segment_frames)
        self.span = clip_len

    def clear(self):
        super().clear()
        self.feat3d = None
        self.windows_run = 0

    def processed(self, window):
        self.last = window[-1]
        keep = window[-1] + 2 - self.span   # the first frame of the next window's clip
        for table in (self.features, self.frames):
            for f in [f for f in table if f < keep]:
                del table[f]


class _SsdStream(_FrameStream):
    """A flow-fusion stream: one window per key frame, run once the ``lookahead`` frames after it arrived; the
    frames the next detections read and their pairs' flows (:class:`~edge_stad.engines.ssd_backend.PairFlows`)."""

    def __init__(self, backend, frame_detections, link_matrices=None, segment_frames=SEGMENT_FRAMES):
        self.backend = backend
        self.T, self.lookahead = int(backend.config["frames"]), int(backend.config["lookahead"])
        super().__init__(self.T, frame_detections, link_matrices, segment_frames)

    def clear(self):
        super().clear()
        self.flows = PairFlows(self.backend)

    def add(self, resized, timestamp, hw):
        _Stream.add(self, resized, timestamp, hw)
        key = self.count - self.lookahead
        return [(key,)] if key >= 1 else []

    def last_windows(self):
        return [(f,) for f in range((self.last or 0) + 1, self.count + 1)]

    def reads(self, key):
        """The frame numbers the detection of ``key`` reads (the stream's last frame repeats past its end)."""
        return frames_for_key(key, self.T, self.lookahead, self.count)

    def processed(self, window):
        self.last = window[-1]
        keep = frames_for_key(self.last + 1, self.T, self.lookahead, self.last + 1 + self.lookahead)[0]
        for f in [f for f in self.frames if f < keep]:
            del self.frames[f]
        self.flows.forget(keep)


class Runtime:
    """Streaming AMMA, MENet, STMA or flow-fusion inference for one or more cameras.

    ``engine``: an engine folder (from ``edge-stad build``), a checkpoint file (PyTorch),
    or an opened backend object. ``backend``: ``auto`` (TensorRT plans where TensorRT
    imports, else ONNX Runtime), ``onnxruntime``, ``tensorrt`` or ``torch``.
    ``streams``: cameras served (see :meth:`push_batch`). ``min_tube_score``: tubes
    listed in :attr:`FrameResult.tubes`. ``frame_detections``: also return ACT per-frame
    detections (what frame-mAP scores; costs a soft-NMS per frame). ``history``: how many
    undrained events, tubes and windows are kept for :meth:`events`, :meth:`tubes`,
    :meth:`windows` (oldest dropped first, so an app that never drains them stays bounded).
    ``refresh``: frame detectors only, frames between runs of the 3D branch (1: every frame, the
    paper's model). ``pipeline``: host-input tubelet engines only, encode each window's new clip on
    a worker thread while the caller's thread runs the head, decode and linking of the window
    before it, so that both cores of a small CPU stay busy (engines release the GIL): the same
    results, one window (``clip_len`` frames) later; an int N (``True`` is 1) keeps N windows'
    encoder calls in flight on N worker threads, N windows later. An engine folder is then opened
    with ``threads`` = cores - 1 unless given. While a pipelined Runtime is open, Python's thread switch
    interval (:func:`sys.setswitchinterval`) is at most 0.5 ms, so that the worker gets the GIL back
    soon after each encoder call; on Linux its workers run
    :data:`~edge_stad.runtime.steppers.WORKER_NICE` nice levels below the caller's thread, which the
    pipeline waits on. :meth:`close` stops the workers and restores the interval.
    ``segment_frames``: an open tube longer than this is handed out in segments
    (:data:`~edge_stad.core.linking.SEGMENT_FRAMES`, 9000; ``None``: never), so that memory stays
    bounded on an endless stream; the offline evaluation links with the same default.
    """

    def __init__(self, engine, backend="auto", *, streams=1, threads=None, providers=None, device=0,
                 min_tube_score=MIN_TUBE_SCORE, frame_detections=False, max_side=MAX_SIDE, history=10000, refresh=1,
                 pipeline=False, segment_frames=SEGMENT_FRAMES):
        if not isinstance(engine, (str, os.PathLike)):   # an opened backend (edge_stad.engines.protocols)
            if getattr(engine, "kind", None) not in KINDS:
                raise ConfigError(f"Runtime streams an engine folder, a checkpoint path or an opened backend of kind "
                                  f"{' or '.join(KINDS)}; got {type(engine).__name__} "
                                  f"(kind {getattr(engine, 'kind', None)!r})")
            self.backend = engine
        else:
            from edge_stad.backends import open_backend

            if pipeline and threads is None:
                threads = pipeline_threads()
            self.backend = open_backend(os.fspath(engine), backend, threads=threads, providers=providers,
                                        device=device)
            warn_if_unchecked(os.fspath(engine), self.backend.manifest)
        if int(streams) < 1:
            raise ConfigError(f"streams must be >= 1, got {streams}")
        cfg = self.backend.config
        kind = self.backend.kind
        self._frame_model = kind == "frame"
        if kind != "tubelet" and int(refresh) < 1:
            raise ConfigError(f"refresh (frames between 3D-branch runs) must be >= 1, got {refresh}")
        if kind == "snippet" and layout_of(cfg).lookahead:
            raise ConfigError(f"this {cfg['name']} model's window reads {layout_of(cfg).lookahead} frame(s) past its "
                              "snippet (key_frame='center'); the Runtime streams causal models (key_frame='last', "
                              "STMA-Lite's default): evaluate it offline with edge_stad.eval.predict_snippets")
        self.refresh = int(refresh)
        # a device-resident backend (TorchCudaBackend) takes raw frames and keeps frames and features on its device
        self._on_device = kind == "tubelet" and self.backend.device_resident
        if isinstance(pipeline, bool) or pipeline is None:
            pipeline = int(bool(pipeline))
        if not isinstance(pipeline, (int, np.integer)) or pipeline < 0:
            raise ConfigError(f"pipeline must be a bool or the number of windows in flight (an int >= 0), "
                              f"got {pipeline!r}")
        if pipeline and (kind != "tubelet" or self._on_device):
            raise ConfigError("pipeline=True needs a tubelet (AMMA) engine on host frames: a frame, snippet or "
                              "SSD detector's results are final at once, and a device-resident backend already runs "
                              "asynchronously on its GPU stream")
        # windows of K clips of clip_len frames (tubelet); one per frame, K frames long (snippet) or one frame
        self.K = int(cfg.get("K", 1)) if kind in ("tubelet", "snippet") else 1
        self.clip_len = int(cfg["clip_len"]) if kind == "tubelet" else 1
        self._lookahead = int(cfg["lookahead"]) if kind == "ssd" else 0   # frames a result waits for
        self.input_size = tuple(cfg["input_size"])
        self.num_classes = int(cfg["num_classes"])
        self.labels = tuple(self.backend.labels or ()) or tuple(map(str, range(self.num_classes)))
        self.min_tube_score = float(min_tube_score)
        self.max_side = int(max_side)
        self._grid = head_grid(cfg) if kind == "snippet" else grid_size(self.input_size)
        matrices = self.backend.link_matrices if kind == "tubelet" else None   # the linking kernels, on a GPU
        self._streams = [_FrameStream(int(cfg["clip_len"]), frame_detections, matrices, segment_frames)
                         if self._frame_model else
                         _SsdStream(self.backend, frame_detections, matrices, segment_frames)
                         if kind == "ssd" else
                         _SnippetStream(self.K, int(cfg["clip_len"]), frame_detections, matrices, segment_frames)
                         if kind == "snippet" else
                         _Stream(self.K, self.clip_len, frame_detections, matrices, segment_frames)
                         for _ in range(int(streams))]
        self._lock = threading.RLock()
        self._events = deque(maxlen=history)
        self._tubes = deque(maxlen=history)
        self._windows = deque(maxlen=history)
        self._times = dict.fromkeys(STAGES, 0.0)
        self._counts = {"frames": 0, "windows": 0, "results": 0}
        self._busy = 0.0
        self._stepper = (FrameStepper(self.backend, self._streams, self._stage, self.num_classes, self.refresh)
                         if self._frame_model else
                         SnippetStepper(self.backend, self._streams, self._stage, self.num_classes, self._grid,
                                        self.refresh)
                         if kind == "snippet" else
                         SsdStepper(self.backend, self._streams, self._stage, self.num_classes)
                         if kind == "ssd" else
                         TubeletStepper(self.backend, self._streams, self._stage, self.num_classes, self._grid,
                                        int(pipeline)))

    # -- public API --------------------------------------------------------------------------

    @property
    def streams(self):
        return len(self._streams)

    @property
    def latency_frames(self):
        """``(min, max)`` frames between a frame's arrival and its result, in a running stream."""
        lag = self.clip_len * self._stepper.depth + self._lookahead
        return (self.K - 1) * self.clip_len + lag, self.K * self.clip_len - 1 + lag

    def push(self, frame, timestamp=None, stream=0):
        """Add one BGR frame (uint8 HxWx3, any size; gray and BGRA accepted) to ``stream``.

        Returns the :class:`FrameResult` s that became final with it, oldest first (usually
        one per frame once the stream runs, none during the first frames). A bad frame raises
        :class:`~edge_stad.errors.FrameError` and leaves the stream as it was.
        """
        with self._lock:
            return self._step([(self._stream_index(stream), frame, timestamp)])

    def push_batch(self, frames, timestamps=None):
        """One frame per stream (``None`` skips a stream), the encoder batched across streams.

        With a dynamic-batch engine (``edge-stad build --dynamic-batch``) the cameras that need
        a clip at this step share one encoder call; a static engine runs them one by one.
        """
        with self._lock:
            if len(frames) != len(self._streams):
                raise ConfigError(f"push_batch needs one frame per stream ({len(self._streams)}), got {len(frames)}")
            timestamps = [None] * len(frames) if timestamps is None else list(timestamps)
            if len(timestamps) != len(frames):
                raise ConfigError(f"push_batch got {len(frames)} frames but {len(timestamps)} timestamps")
            return self._step([(i, f, t) for i, (f, t) in enumerate(zip(frames, timestamps)) if f is not None])

    def flush(self, stream=None):
        """End ``stream`` (default: all): run its last window, end its tubes, return every pending result.

        The stream then starts afresh with the next pushed frame (tube ids keep counting).
        """
        with self._lock:
            start = time.perf_counter()
            indexes = range(len(self._streams)) if stream is None else [self._stream_index(stream)]
            results = []
            for i in indexes:
                state = self._streams[i]
                self._settle()
                self._process([(i, w) for w in state.last_windows()])
                self._settle()
                self._record(i, state.linker.finish())
                results += state.ready + self._finalize(i, state.count)
                state.clear()
            self._busy += time.perf_counter() - start
            return results

    def reset(self, stream=None):
        """Drop ``stream`` (default: all) without results: its pending frames and open tubes are discarded."""
        with self._lock:
            self._settle()
            for i in range(len(self._streams)) if stream is None else [self._stream_index(stream)]:
                self._streams[i].linker.finish()
                self._streams[i].clear()

    def close(self):
        """Finish the in-flight windows (their results come with the next push or flush), stop the
        pipeline's worker thread and restore Python's switch interval once no pipelined Runtime is
        open; a closed pipelined Runtime runs on the caller's thread."""
        with self._lock:
            self._settle()
            self._stepper.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def events(self):
        """``(stream, TubeEvent)`` of the tubes that started, grew, ended or handed out a segment since the
        last call."""
        return self._drain(self._events)

    def tubes(self):
        """``(stream, Tube)`` of the tubes that ended and passed the filters since the last call, and the
        segments of open tubes longer than ``segment_frames`` (same ``tube_id``, consecutive frames)."""
        return self._drain(self._tubes)

    def windows(self):
        """``(stream, Window)`` of the windows processed since the last call (tubelets in stream pixels)."""
        return self._drain(self._windows)

    def stats(self):
        """Per-stage seconds and ms per frame, frames, windows, FPS, queue depth, open tubes and their tubelets."""
        with self._lock:
            frames = self._counts["frames"]
            per_frame = {k: 1000 * v / frames if frames else 0.0 for k, v in self._times.items()}
            return {
                "frames": frames, "windows": self._counts["windows"], "clips_encoded": self._stepper.clips,
                "seconds": dict(self._times), "ms_per_frame": per_frame,
                "fps": frames / self._busy if self._busy else 0.0,
                "queue_depth": sum(len(s.pending) for s in self._streams),
                "open_tubes": sum(s.linker.active_tubes for s in self._streams),
                "stored_tubelets": sum(s.linker.stored_tubelets for s in self._streams),
                "latency_frames": self.latency_frames,
            }

    # -- internals ---------------------------------------------------------------------------

    def _drain(self, queue):
        with self._lock:
            items = list(queue)
            queue.clear()
            return items

    def _stream_index(self, stream):
        if not isinstance(stream, (int, np.integer)) or not 0 <= stream < len(self._streams):
            raise ConfigError(f"stream must be an int in [0, {len(self._streams)}), got {stream!r}")
        return int(stream)

    def _step(self, items):
        start = time.perf_counter()
        checked = []
        for i, frame, timestamp in items:  # every frame is checked before any state changes
            if timestamp is not None:
                try:
                    timestamp = float(timestamp)
                except (TypeError, ValueError):
                    raise FrameError(f"timestamp must be a number of seconds or None, got {timestamp!r}") from None
                if not math.isfinite(timestamp):
                    raise FrameError(f"timestamp must be finite, got {timestamp}")
            checked.append((i, check_frame(frame, self.max_side), timestamp))
        jobs = []
        for (i, frame, timestamp), (_, given, _) in zip(checked, items):
            prepared = self.backend.prepare(frame) if self._on_device else _own(resize(frame, self.input_size), given)
            jobs += [(i, w) for w in self._streams[i].add(prepared, timestamp, frame.shape[:2])]
        self._counts["frames"] += len(checked)
        self._times["preprocess"] += time.perf_counter() - start
        self._process(jobs)
        results = []
        for i, _, _ in checked:
            results += self._streams[i].ready
            self._streams[i].ready = []
        self._busy += time.perf_counter() - start
        return results

    @contextmanager
    def _stage(self, stage):
        """``with self._stage("head"): ...`` adds the block's wall time to the stage's total (see :meth:`stats`)."""
        start = time.perf_counter()
        yield
        self._times[stage] += time.perf_counter() - start

    def _process(self, jobs):
        """Run the windows ``[(stream, window frames)]`` and link the ones the stepper finished."""
        self._link(self._stepper.process(jobs))

    def _settle(self):
        """Run the in-flight windows to the end now."""
        for done in self._stepper.settle():
            self._link(done)

    def _link(self, done):
        """Link the finished windows ``[(stream, window, tubelets, frame rows)]`` in order, record their events,
        and set aside the results they made final."""
        for i, window, tubelets, rows in done:
            state = self._streams[i]
            with self._stage("link"):
                events = state.linker.push(window[-1], tubelets, window)
            self._record(i, events)
            if rows is not None and state.detections is not None:   # a frame detector's decoded boxes
                state.detections[window[-1]] = rows[:, 1:]
            if state.collector is not None:
                with self._stage("results"):
                    state.collector.add(Window(window, tubelets))
            self._windows.append((i, Window(window, tubelets)))
            state.processed(window)
        self._counts["windows"] += len(done)
        self._finalize_processed(done)

    def _record(self, i, events):
        state = self._streams[i]
        for event in events:
            self._events.append((i, event))
            if event.kind in (ENDED, SEGMENT) and event.tube is not None:
                if event.kind == ENDED:   # a segment's frames have all been returned already
                    state.ended.append(event.tube)
                self._tubes.append((i, event.tube))

    def _finalize_processed(self, done):
        """Set aside, for their streams' next push, the results that the finished windows ``done`` made final."""
        for i in dict.fromkeys(d[0] for d in done):
            state = self._streams[i]
            state.ready += self._finalize(i, state.last - (self.K - 1) * self.clip_len)

    def _finalize(self, i, upto):
        """Results of stream ``i``'s pending frames up to frame ``upto``, now that no window can change them."""
        start = time.perf_counter()
        state = self._streams[i]
        out = []
        while state.pending and state.pending[0][0] <= upto:
            frame, timestamp, hw = state.pending.popleft()
            rows = [state.linker.boxes_at(frame, self.min_tube_score, min_tubelets=1)]
            for tube in state.ended:
                at = frame - int(tube.boxes[0, 0])
                if 0 <= at < len(tube.boxes) and tube.score >= self.min_tube_score:
                    rows.append(np.concatenate([[tube.tube_id, tube.label, tube.score], tube.boxes[at, 1:5]])[None])
            tubes = np.concatenate(rows).astype(np.float32) if len(rows) > 1 else rows[0]
            detections = state.pop_detections(frame)
            if hw != state.image_hw:
                tubes, detections = (_rescale(a, state.image_hw, hw, a.shape[1] - 4) for a in (tubes, detections))
            out.append(FrameResult(i, frame, timestamp, tubes if len(tubes) else _NO_TUBES, detections))
        if out:
            state.ended = [t for t in state.ended if t.boxes[-1, 0] > out[-1].frame]
            self._counts["results"] += len(out)
        self._times["results"] += time.perf_counter() - start
        return out


def _own(prepared, given):
    """``prepared``, copied where it is still the caller's array (a frame already at the input size):
    the stream keeps it until its clip is encoded, and callers refill one buffer frame after frame
    (``cap.read(buf)``, GStreamer appsinks, camera SDKs). Every other path made a new array already."""
    return prepared.copy() if np.may_share_memory(prepared, given) else prepared


def _rescale(rows, from_hw, to_hw, first):
    """Boxes in columns ``first..first+3`` from a ``from_hw`` frame to a ``to_hw`` one."""
    if not len(rows):
        return rows
    rows = rows.copy()
    rows[:, first::2][:, :2] *= to_hw[1] / from_hw[1]
    rows[:, first + 1::2][:, :2] *= to_hw[0] / from_hw[0]
    return rows
