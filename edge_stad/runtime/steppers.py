"""What runs the model for a :class:`~edge_stad.runtime.stream.Runtime`, one stepper per backend kind
(:mod:`edge_stad.engines.protocols`): windows go in, each finished window's tubelets come out, in order.

* :class:`TubeletStepper` (AMMA): each new clip is encoded once (optionally on worker threads, the
  pipeline), the head and decode run per window.
* :class:`FrameStepper` (MENet): the 3D branch on the frames where it is due, the 2D branch and the
  region decode on every frame.
* :class:`SnippetStepper` (STMA): each new frame through the 2D encoder once, the 3D branch on the
  window's clip where it is due, the head and decode per window (one per frame).
* :class:`SsdStepper` (flow fusion): each new frame pair's flow once, the detector and the host decode per
  key frame (one per frame).

``process(jobs)`` takes ``[(stream, window frames)]`` and returns the windows it finished,
``[(stream, window frames, tubelets {label: rows}, decoded frame rows or None)]``: the same windows
at once, or, pipelined, the windows submitted ``depth`` calls earlier. ``settle()`` finishes the
rest, one batch at a time. The Runtime links what comes back, records the events and finalises the results.
"""
import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from edge_stad.core.region_decode import decode_region, detector_frames, frame_window, to_frame_rows
from edge_stad.core.snippet_decode import decode_snippet
from edge_stad.core.snippets import layout_of, stacked
from edge_stad.core.ssd_decode import decode_ssd, prior_boxes
from edge_stad.core.tubelet_decode import decode, to_pixels
from edge_stad.core.windows import clip_ending_at


class _SwitchInterval:
    """Python's thread switch interval, lowered while any pipelined Runtime is open (counted), then restored.

    The worker needs the GIL again when its encoder call returns, and gets it when the caller's
    thread, busy in Python (linking, results), gives it up: at the latest after the switch
    interval, 5 ms by default, about a third of a 288x288 clip's encoder time. 0.5 ms gave about
    20% more frames/s at 288x288 on 2 cores (pipelined INT8, 292 vs 357 frames/s, ad hoc).
    """

    def __init__(self, seconds):
        self.seconds, self.users, self.before, self.lock = seconds, 0, None, threading.Lock()

    def hold(self):
        with self.lock:
            if not self.users:
                self.before = sys.getswitchinterval()
                sys.setswitchinterval(min(self.before, self.seconds))
            self.users += 1

    def release(self):
        with self.lock:
            self.users -= 1
            if not self.users and sys.getswitchinterval() == min(self.before, self.seconds):   # unless changed since
                sys.setswitchinterval(self.before)


PIPELINE_SWITCH_INTERVAL = _SwitchInterval(0.0005)

#: How much lower a pipelined Runtime's worker threads run than the caller's thread (nice levels, Linux
#: only). The caller's thread alone runs the head, decode and linking and submits the next clip; at equal
#: priority the workers' encoder calls took its share of the cores, the pipeline ran dry between windows
#: and 14-16% of 2 cores sat idle. Lowered, the workers take what the caller leaves: 5-7% idle, and
#: about 10-15% more frames/s at 288x288 (INT8, 3 windows in flight, ad hoc, interleaved).
WORKER_NICE = 10


def _lower_priority():
    """Lower the calling thread's scheduling priority by :data:`WORKER_NICE` (Linux: nice is per thread)."""
    if sys.platform.startswith("linux") and WORKER_NICE:
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICE))
        except OSError:   # a sandbox that forbids it: the pipeline still works, with less of the CPU
            pass


class TubeletStepper:
    """AMMA's clips and windows on a tubelet backend: ``stage(name)`` times each call (the Runtime's stages);
    ``depth`` > 0 keeps that many windows' encoder calls in flight on worker threads."""

    def __init__(self, backend, streams, stage, num_classes, grid, depth=0):
        self.backend, self.streams, self.stage = backend, streams, stage
        self.num_classes, self.grid, self.depth = num_classes, grid, depth
        self.on_device = backend.device_resident     # frames and features stay on the backend's GPU
        self.in_graph = backend.decodes_in_graph      # the head returns tubelet rows
        self.clips = 0                                # clips encoded
        self.worker = (ThreadPoolExecutor(depth, thread_name_prefix="edge_stad-model", initializer=_lower_priority)
                       if depth else None)
        if depth:
            PIPELINE_SWITCH_INTERVAL.hold()
        self.inflight = deque()   # (windows, their new clips, the worker's encoder call), oldest first

    def process(self, jobs):
        """Encode the new clips of the windows ``jobs``, then run the head of the windows whose clips are all
        encoded: these (sequential) or the ones submitted ``depth`` calls before (pipelined)."""
        if not jobs:
            return []
        done = self._collect() if self.worker is not None and len(self.inflight) == self.depth else None
        clips = []
        queued = {clip for _, new, _ in self.inflight for clip in new}   # encoding on the worker threads
        for i, window in jobs:
            clips += [(i, end) for end in window
                      if end not in self.streams[i].features and (i, end) not in clips and (i, end) not in queued]
        frames = [self.streams[i].clip(end) for i, end in clips]
        if frames and not self.on_device:
            frames = np.stack([np.stack(c) for c in frames])
        if self.worker is None:
            self._store(clips, self._encode(frames))
            return self._heads(jobs)
        self.inflight.append((jobs, clips, self.worker.submit(self._encode, frames)))
        return self._heads(done) if done is not None else []

    def settle(self):
        """The in-flight windows, finished now: one list per encoder call, oldest first (the Runtime links and
        finalises each before the next, as when they come back from :meth:`process`)."""
        while self.inflight:
            yield self._heads(self._collect())

    def close(self):
        """Stop the workers (after :meth:`settle`); a closed stepper runs on the caller's thread."""
        if self.worker is not None:
            self.worker.shutdown()
            self.worker, self.depth = None, 0
            PIPELINE_SWITCH_INTERVAL.release()

    def _collect(self):
        """Wait for the oldest in-flight encoder call and store its clip features; the windows waiting for them.

        If that call failed, the later ones are waited for and dropped too, and the error raised: their
        windows would link out of order (so would the windows of the push that raises). The stream goes
        on; its next window encodes the clips it lacks.
        """
        jobs, clips, future = self.inflight.popleft()
        try:
            encoded = future.result()
        except BaseException:
            while self.inflight:
                wait([self.inflight.popleft()[2]])
            raise
        self._store(clips, encoded)
        return jobs

    def _encode(self, frames):
        """``(feat, wh)`` of new clips (nothing to do without any)."""
        if not len(frames):
            return None
        with self.stage("encoder"):
            return self.backend.encode_prepared(frames) if self.on_device else self.backend.encode(frames)

    def _store(self, clips, encoded):
        """Put the new clips' features into their streams' FIFOs."""
        for j, (i, end) in enumerate(clips):
            self.streams[i].features[end] = (encoded[0][j], encoded[1][j])
        self.clips += len(clips)

    def _heads(self, jobs):
        """Head and decode of windows whose clip features are all in the FIFOs."""
        feats = [[self.streams[i].features[e][0] for e in w] for i, w in jobs]
        whs = [[self.streams[i].features[e][1] for e in w] for i, w in jobs]
        if self.on_device:   # head and decode on the device: only the tubelet rows come back
            with self.stage("head"):
                rows = self.backend.detect_prepared(feats, whs)
        elif self.in_graph:
            with self.stage("head"):
                rows = self.backend.detect(np.stack(feats), np.stack(whs))
        else:
            with self.stage("head"):
                outputs = self.backend.head(np.stack(feats), np.stack(whs))
            with self.stage("decode"):
                rows = decode(*outputs)
        done = []
        for (i, window), window_rows in zip(jobs, rows):
            with self.stage("decode"):
                done.append((i, window, to_pixels(window_rows, self.num_classes, self.grid,
                                                  self.streams[i].image_hw), None))
        return done


class _ImmediateStepper:
    """A stepper whose windows finish in the call that submits them: nothing in flight to settle or stop."""

    depth = 0

    def settle(self):
        return ()

    def close(self):
        pass


class FrameStepper(_ImmediateStepper):
    """A frame detector's one-frame windows: its 3D branch every ``refresh`` frames (the feature reused in
    between), the 2D branch and region decode on every frame. Results are final at once (``depth`` 0)."""

    def __init__(self, backend, streams, stage, num_classes, refresh=1):
        self.backend, self.streams, self.stage = backend, streams, stage
        self.num_classes, self.refresh = num_classes, refresh
        self.clips = 0   # 3D-branch clips encoded

    def process(self, jobs):
        if not jobs:
            return []
        due = [(i, w[-1]) for i, w in jobs if (w[-1] - 1) % self.refresh == 0]
        if due:
            clips = np.stack([np.stack(self.streams[i].clip(f)) for i, f in due])
            with self.stage("encoder"):
                feat3d = self.backend.encode_3d(clips)
            for j, (i, _) in enumerate(due):
                self.streams[i].feat3d = feat3d[j]
            self.clips += len(due)
        cfg = self.backend.config
        S = detector_frames(cfg)
        latest = np.stack([np.stack(self.streams[i].clip(w[-1])[-S:]) for i, w in jobs])
        with self.stage("head"):
            regions = self.backend.detect(latest, np.stack([self.streams[i].feat3d for i, _ in jobs]))
        done = []
        for (i, window), region in zip(jobs, regions):
            frame = window[-1]
            with self.stage("decode"):
                found = decode_region(region, cfg["anchors"], self.num_classes)
            rows = to_frame_rows(found, frame, self.streams[i].image_hw)
            done.append((i, window, frame_window(frame, rows, self.num_classes).tubelets, rows))
        return done


class SnippetStepper(_ImmediateStepper):
    """STMA's windows, one per frame from frame K on: each frame the window's clip needs goes through the 2D
    encoder once (its ``feat``, ``wh``, ``act`` cached per frame), the 3D branch runs on the clip of every
    ``refresh``-th window (its feature reused in between), the head and the host decode per window. The same
    calls, in the same order and batches for one stream, as :func:`edge_stad.eval.predict_snippets.
    predict_snippet_windows`. Results are final at once (``depth`` 0)."""

    def __init__(self, backend, streams, stage, num_classes, grid, refresh=1):
        self.backend, self.streams, self.stage = backend, streams, stage
        self.num_classes, self.grid, self.refresh = num_classes, grid, refresh
        self.layout = layout_of(backend.config)
        self.has_3d = backend.config["backbone_3d"] is not None
        self.clips = 0   # frames encoded

    def process(self, jobs):
        if not jobs:
            return []
        (e0, e1), (s0, s1), (m0, m1) = self.layout.encoded, self.layout.snippet, self.layout.motion
        clips = [clip_ending_at(window[-1], self.layout.clip_len) for _, window in jobs]
        new = []
        for (i, _), clip in zip(jobs, clips):
            new += [(i, f) for f in dict.fromkeys(clip[e0:e1 + 1])
                    if f not in self.streams[i].features and (i, f) not in new]
        if new:
            with self.stage("encoder"):
                encoded = self.backend.encode(np.stack([self.streams[i].frames[f] for i, f in new]))
            for j, (i, f) in enumerate(new):
                self.streams[i].features[f] = tuple(None if o is None else o[j] for o in encoded)
            self.clips += len(new)
        due = [(i, clip) for (i, _), clip in zip(jobs, clips)
               if self.has_3d and self.streams[i].windows_run % self.refresh == 0]
        if due:
            with self.stage("encoder"):
                feat3d = self.backend.encode_3d(np.stack([[self.streams[i].frames[f] for f in clip]
                                                          for i, clip in due]))
            for j, (i, _) in enumerate(due):
                self.streams[i].feat3d = feat3d[j:j + 1]
        done = []
        for (i, window), clip in zip(jobs, clips):
            state = self.streams[i]
            snippet, motion = clip[s0:s1 + 1], clip[m0:m1 + 1]
            with self.stage("head"):
                out = self.backend.head(stacked(state.features, snippet, 0), stacked(state.features, snippet, 1),
                                        stacked(state.features, motion, 2), state.feat3d)
            with self.stage("decode"):
                tubelets = to_pixels(decode_snippet(out, self.backend.top_n)[0], self.num_classes, self.grid,
                                     state.image_hw)
            state.windows_run += 1
            done.append((i, window, tubelets, None))
        return done


class SsdStepper(_ImmediateStepper):
    """A flow-fusion model's one-frame windows (key frames): the flows of the pairs the detection reads, each
    computed once per stream (:class:`~edge_stad.engines.ssd_backend.PairFlows`), then the detector and the host
    decode, as :func:`edge_stad.eval.predict_ssd.predict_ssd_video` calls them. Results are final at once
    (``depth`` 0; the stream waits ``lookahead`` frames before a key frame's window)."""

    def __init__(self, backend, streams, stage, num_classes):
        self.backend, self.streams, self.stage, self.num_classes = backend, streams, stage, num_classes
        self.priors = prior_boxes(backend.config["priors"])
        self.clips = 0   # detections run

    def process(self, jobs):
        done = []
        for i, window in jobs:
            state, key = self.streams[i], window[-1]
            numbers = state.reads(key)
            with self.stage("encoder"):
                flows = state.flows.window(numbers, state.frames)
            with self.stage("head"):
                loc, conf = self.backend.detect(np.stack([state.frames[f] for f in numbers])[None], flows)
            with self.stage("decode"):
                rows = to_frame_rows(decode_ssd(loc[0], conf[0], self.priors), key, state.image_hw)
            self.clips += 1
            done.append((i, window, frame_window(key, rows, self.num_classes).tubelets, rows))
        return done
