"""Online linking of tubelets into action tubes (reference BuildTubes, §4.2; paper §3.5).

:class:`Linker` takes one window of tubelets at a time and reports what happened to
each tube (started, grew, ended). A tube that ends is assembled and handed out with
its event; nothing is kept after that, so memory stays flat on an endless stream.
:func:`link_video` replays a whole video through a Linker and returns the tubes the
reference BuildTubes writes, in its order.

Per label and window the linker keeps the reference's rules:

* the window's tubelets go through :func:`tubelet_nms` (sum of per-box IoUs > 0.6·K
  suppresses; weight ``1 - sum``; top 10 kept);
* active tubes are ranked by mean tubelet score; each, best first, takes the highest
  scored free tubelet whose mean IoU over the ``K - o`` overlapping boxes is >= 0.5
  (``o = round((f - last) / clip_len)``, half to even), or, when ``o >= K``, whose
  first box overlaps the tube's last box by >= 0.5;
* an unmatched tube with ``o >= K`` ends; unmatched tubelets start new tubes;
* an ended tube is kept if it has >= 2 tubelets, a mean score >= 0.005 and spans at
  least ``min(F, K·clip_len)`` frames; its per-frame boxes are the mean of the tubelet
  boxes placed on their clip-end frames, linearly interpolated between them.

Ties: where the reference sorts with NumPy's unstable default (tubelets by score, tubes
by mean score), equal keys keep their current order here (:func:`edge_stad.boxes.descending`).
Tubes are ranked by a float64 running mean, the reference ranks by a float32 ``np.mean``;
the two orders differ only where two means agree to float32 rounding, where the
reference order is arbitrary as well. The reported tube score is the reference's
float32 ``np.mean``.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

import numpy as np

from edge_stad.boxes import descending
from edge_stad.errors import ConfigError, TubeletError
from edge_stad.kernels import reference
from edge_stad.runtime.windows import Window, interpolate, regular_window

STARTED, GREW, ENDED = "started", "grew", "ended"


class Tube(NamedTuple):
    """A finished action tube: one row per frame ``frame, x1, y1, x2, y2, score`` (float32)."""

    tube_id: int
    label: int
    score: float
    boxes: np.ndarray


class TubeEvent(NamedTuple):
    """What happened to tube ``tube_id`` when ``frame`` was processed.

    ``tube`` is set on ``ended`` events only, and only if the tube passed the filters
    (enough tubelets, score and length); ``None`` means it was discarded.
    """

    kind: str
    tube_id: int
    label: int
    frame: int
    tube: Optional[Tube] = None


def tubelet_nms(tubelets, threshold=0.6, top_k=10, overlap=None):
    """The reference's tubelet NMS: the ``top_k`` best of ``(m, 4K+1)`` float32 tubelets.

    Visiting tubelets from the highest score down, a later tubelet is suppressed when
    the **sum** over its K boxes of the IoU with the visited one exceeds
    ``threshold * K``; its score is multiplied by ``1 - sum`` (negative for K >= 2, so
    it ranks last but is still returned when fewer than ``top_k`` survive). Returns a
    new array sorted by the rescaled score. ``overlap``: the ``(m, m)`` summed IoUs of
    :func:`edge_stad.kernels.reference.nms_overlap`, when a kernel computed them already.
    """
    m, width = tubelets.shape
    K = (width - 1) // 4
    scores = tubelets[:, -1]
    weight = np.ones_like(scores)
    limit = threshold * K
    # Once top_k tubelets are kept, later visits can only lower scores that already rank
    # below them; stopping there is exact unless a suppressed score still outranks the
    # last kept one or negative scores could be flipped positive.
    can_stop = m > top_k and bool((scores >= 0).all())
    best_suppressed = -np.inf
    kept = 0
    # Summed per-box IoU of every pair at once (the same float32 arithmetic as pair by pair).
    pair = reference.nms_overlap(tubelets[:, :4 * K].reshape(m, K, 4)) if overlap is None else overlap
    order = descending(scores)
    while order.size:
        top, rest = order[0], order[1:]
        overlap = pair[top, rest]
        hit = overlap > limit
        if hit.any():
            weight[rest[hit]] = 1 - overlap[hit]
            best_suppressed = max(best_suppressed, float((scores[rest[hit]] * weight[rest[hit]]).max()))
        order = rest[~hit]
        kept += 1
        if can_stop and kept == top_k and best_suppressed < scores[top]:
            break
    rescaled = scores * weight
    rank = descending(rescaled)[:top_k]
    out = tubelets[rank]
    out[:, -1] = rescaled[rank]
    return out


class HostMatrices:
    """The linker's two pairwise matrices from the NumPy references, one label at a time.

    :class:`edge_stad.kernels.ops.CudaLinkMatrices` has the same two methods and computes
    every label of a window in one kernel launch each.
    """

    @staticmethod
    def nms_overlap(groups):
        """``[(m, K, 4) tubelet boxes]`` per label -> ``[(m, m)]`` summed per-box NMS IoUs."""
        return [reference.nms_overlap(boxes) for boxes in groups]

    @staticmethod
    def match_iou(groups):
        """``[(tube boxes (A, K, 4), offsets (A,), candidate boxes (M, K, 4))]`` -> ``[(A, M)]`` mean IoUs."""
        return [reference.match_iou(*group) for group in groups]


class _Tubes:
    """The active tubes of one label, in rank order; what matching reads is kept in arrays."""

    def __init__(self, K):
        self.ids = []
        self.last_frame = np.zeros(0, dtype=np.int64)
        self.last_boxes = np.zeros((0, K, 4), dtype=np.float32)
        self.score_sum = np.zeros(0, dtype=np.float64)
        self.count = np.zeros(0, dtype=np.int64)
        self.windows = []  # per tube: the K clip-end frames of each of its tubelets
        self.rows = []  # per tube: its (4K+1,) tubelets

    def __len__(self):
        return len(self.ids)

    def take(self, index):
        """Keep the tubes at ``index`` (an int array), in that order."""
        self.ids = [self.ids[i] for i in index]
        self.windows = [self.windows[i] for i in index]
        self.rows = [self.rows[i] for i in index]
        self.last_frame = self.last_frame[index]
        self.last_boxes = self.last_boxes[index]
        self.score_sum = self.score_sum[index]
        self.count = self.count[index]

    def extend(self, ids, frame, window, tubelets, K):
        self.ids.extend(ids)
        self.windows.extend([window] for _ in ids)
        self.rows.extend([row] for row in tubelets)
        self.last_frame = np.concatenate([self.last_frame, np.full(len(ids), frame, dtype=np.int64)])
        self.last_boxes = np.concatenate([self.last_boxes, tubelets[:, :4 * K].reshape(-1, K, 4)])
        self.score_sum = np.concatenate([self.score_sum, tubelets[:, -1].astype(np.float64)])
        self.count = np.concatenate([self.count, np.ones(len(ids), dtype=np.int64)])


class Linker:
    """Incremental BuildTubes for one stream at a time, all labels at once.

    Call :meth:`push` with each processed frame's tubelets in frame order, then
    :meth:`finish` at the end of the stream; both return :class:`TubeEvent` lists.
    Tube ids are unique for the life of the Linker (a new stream continues the count).
    ``matrices`` computes the pairwise IoU matrices (default :class:`HostMatrices`; the GPU
    runtime passes :class:`edge_stad.kernels.ops.CudaLinkMatrices`); the greedy steps that
    read them stay here.
    """

    def __init__(self, K, clip_len, nms_threshold=0.6, top_k=10, match_iou=0.5, min_score=0.005, matrices=None):
        if int(K) < 1 or int(clip_len) < 1 or int(top_k) < 1:
            raise ConfigError(f"K, clip_len and top_k must be >= 1, got {K}, {clip_len}, {top_k}")
        self.K, self.clip_len, self.top_k = int(K), int(clip_len), int(top_k)
        self.nms_threshold, self.match_iou, self.min_score = nms_threshold, match_iou, min_score
        self.matrices = HostMatrices() if matrices is None else matrices
        self._labels = {}
        self._next_id = 0
        self._last = None
        self._spans = {}  # tube id -> the span boxes_at read last

    @property
    def active_tubes(self):
        """Number of tubes still open (all labels)."""
        return sum(len(t) for t in self._labels.values())

    @property
    def stored_tubelets(self):
        """Number of tubelets held by the open tubes: the linker's whole memory."""
        return sum(len(rows) for t in self._labels.values() for rows in t.rows)

    def push(self, frame, tubelets, frames=None):
        """Link the tubelets of processed frame ``frame``.

        ``tubelets`` maps a label to a ``(m, 4K+1)`` array (K boxes oldest first, then
        the score; pixels). ``frames`` are the K clip-end frames of the window; the
        default is the regular window, give them for an uneven one (the last window of
        a stream). Labels missing from ``tubelets`` have no candidates this window.
        """
        frame = int(frame)
        if self._last is not None and frame <= self._last:
            raise TubeletError(f"frames must increase: got frame {frame} after {self._last}")
        window = self._check_window(frame, frames)
        if not hasattr(tubelets, "items"):
            raise TubeletError(f"frame {frame}: tubelets must map label -> (m, 4K+1) array, got "
                               f"{type(tubelets).__name__}")
        checked = {}
        for label, array in tubelets.items():
            array = self._check_tubelets(frame, label, array)
            if len(array):
                checked[int(label)] = array
        K = self.K
        overlaps = self.matrices.nms_overlap([a[:, :4 * K].reshape(-1, K, 4) for a in checked.values()])
        candidates = {label: tubelet_nms(array, self.nms_threshold, self.top_k, overlap)
                      for (label, array), overlap in zip(checked.items(), overlaps)}
        self._last = frame
        labels = sorted(set(candidates) | set(self._labels))
        states = {label: self._labels.setdefault(label, _Tubes(K)) for label in labels}
        offsets = {}
        for label, state in states.items():  # rank each label's tubes, then match all labels at once
            if len(state):
                state.take(descending(state.score_sum / state.count))
                offsets[label] = np.round((frame - state.last_frame) / self.clip_len).astype(np.int64)
        both = [label for label in offsets if label in candidates]
        means = self.matrices.match_iou([(states[label].last_boxes, offsets[label],
                                          candidates[label][:, :4 * K].reshape(-1, K, 4)) for label in both])
        means = dict(zip(both, means))
        events = []
        empty = np.zeros((0, 4 * K + 1), dtype=np.float32)
        for label, state in states.items():
            events += self._link(label, state, frame, window, candidates.get(label, empty), offsets.get(label),
                                 means.get(label))
            if not len(state):
                del self._labels[label]
        return events

    def finish(self):
        """End every open tube (the stream is over) and reset for the next stream."""
        events = []
        if self._last is not None:
            min_length = min(self._last, self.K * self.clip_len)
            for label in sorted(self._labels):
                state = self._labels[label]
                for i, tube_id in enumerate(state.ids):
                    tube = self._assemble(tube_id, label, state.windows[i], state.rows[i], min_length)
                    events.append(TubeEvent(ENDED, tube_id, label, self._last, tube))
        self._labels = {}
        self._last = None
        self._spans = {}
        return events

    def _check_window(self, frame, frames):
        if frames is None:
            return regular_window(frame, self.K, self.clip_len)
        window = tuple(int(f) for f in frames)
        if (len(window) != self.K or window[-1] != frame or window[0] < 1
                or any(b < a for a, b in zip(window, window[1:]))):
            raise TubeletError(f"window frames must be {self.K} non-decreasing frames >= 1 ending at the "
                               f"processed frame {frame}, got {list(window)}")
        return window

    def _check_tubelets(self, frame, label, array):
        if not isinstance(label, (int, np.integer)) or isinstance(label, bool) or label < 0:
            raise TubeletError(f"frame {frame}: labels must be ints >= 0, got {label!r}")
        try:
            array = np.asarray(array, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise TubeletError(f"frame {frame} label {label}: tubelets are not a numeric array: {e}") from None
        width = 4 * self.K + 1
        if array.ndim != 2 or array.shape[1] != width:
            raise TubeletError(f"frame {frame} label {label}: tubelets must be (m, 4K+1) = (m, {width}), "
                               f"got shape {array.shape}")
        if not np.isfinite(array).all():
            raise TubeletError(f"frame {frame} label {label}: tubelets hold NaN or inf")
        return array

    def _link(self, label, state, frame, window, candidates, offset, mean):
        """One window of one label, its tubes ranked: match, end, start (BuildTubes' inner loop).

        ``offset``: clips since each tube last grew; ``mean``: the tube x candidate mean IoUs.
        """
        K = self.K
        events = []
        match = np.full(len(state), -1, dtype=np.int64)
        ended = np.zeros(0, dtype=np.int64)
        if len(state):
            if len(candidates):
                match = self._assign(mean >= self.match_iou)
            ended = np.flatnonzero((match < 0) & (offset >= K))
        grew = np.flatnonzero(match >= 0)
        if grew.size:
            chosen = candidates[match[grew]]
            state.last_frame[grew] = frame
            state.last_boxes[grew] = chosen[:, :4 * K].reshape(-1, K, 4)
            state.score_sum[grew] += chosen[:, -1]
            state.count[grew] += 1
            for a, row in zip(grew.tolist(), chosen):
                state.windows[a].append(window)
                state.rows[a].append(row)
                events.append(TubeEvent(GREW, state.ids[a], label, frame))
        for a in ended[::-1].tolist():  # the reference files ended tubes in reverse rank order
            self._spans.pop(state.ids[a], None)
            tube = self._assemble(state.ids[a], label, state.windows[a], state.rows[a], K * self.clip_len)
            events.append(TubeEvent(ENDED, state.ids[a], label, frame, tube))
        if ended.size:
            keep = np.ones(len(state), dtype=bool)
            keep[ended] = False
            state.take(np.flatnonzero(keep))
        free = np.ones(len(candidates), dtype=bool)
        free[match[grew]] = False
        free = np.flatnonzero(free)
        if free.size:
            ids = list(range(self._next_id, self._next_id + free.size))
            self._next_id += free.size
            state.extend(ids, frame, window, candidates[free], K)
            events += [TubeEvent(STARTED, i, label, frame) for i in ids]
        return events

    @staticmethod
    def _assign(ok):
        """Candidate index each ranked tube takes (-1: none), given which pairs match well enough."""
        A, M = ok.shape
        # Candidates are sorted by score, so a tube's best valid one is its first valid one.
        first = ok.argmax(axis=1)
        match = np.where(ok[np.arange(A), first], first, -1)
        taken = match[match >= 0]
        if np.unique(taken).size == taken.size:
            return match
        free = np.ones(M, dtype=bool)  # two tubes want the same tubelet: the better ranked one wins
        for a in range(A):
            row = ok[a] & free
            j = int(row.argmax())
            match[a] = j if row[j] else -1
            free[j] &= not row[j]
        return match

    def _assemble(self, tube_id, label, windows, rows, min_length):
        """The (L, 6) tube of a finished tube, or None if the reference would drop it."""
        if len(rows) < 2:
            return None
        rows = np.stack(rows)
        score = np.mean(np.ascontiguousarray(rows[:, -1]))
        if float(score) < self.min_score:
            return None
        frames = np.asarray(windows, dtype=np.int64)
        # The reference starts a tube at max(f0 - (K-1) * clip_len, 1), the first clip end of its
        # first window; the earliest clip end of any window is the same there, and safe for others.
        begin, end = int(frames[:, 0].min()), int(frames[-1, -1])
        if end - begin + 1 < min_length:
            return None
        out = np.empty((end - begin + 1, 6), dtype=np.float32)
        out[:, 0] = np.arange(begin, end + 1)
        out[:, 1:] = _place(frames, rows, self.K, begin, end)
        return Tube(tube_id, label, float(score), out)

    def boxes_at(self, frame, min_score=0.0, min_tubelets=2):
        """``float32 (m, 7)`` rows ``tube_id, label, score, x1, y1, x2, y2`` of open tubes at ``frame``.

        A tube's box is what its finished form will hold at ``frame`` once every window that
        reaches ``frame`` has been pushed, except in a gap the tube bridges later (no box
        yet). Only tubes with ``min_tubelets`` tubelets and a mean score >= ``min_score``
        (the score reported) are listed. Ask for frames in increasing order, each once no
        later window can reach it (as the runtime does): the boxes between two clip ends
        are then computed once per tube, from its few newest tubelets.
        """
        out = []
        for label in sorted(self._labels):
            state = self._labels[label]
            means = state.score_sum / np.maximum(state.count, 1)
            for i in np.flatnonzero((state.count >= min_tubelets) & (means >= min_score)).tolist():
                tube_id = state.ids[i]
                span = self._spans.get(tube_id)
                if span is None or not span[0] <= frame <= span[1]:
                    span = self._spans[tube_id] = _span_at(state.windows[i], state.rows[i], self.K, int(frame))
                if span is not None:
                    out.append([tube_id, label, means[i], *span[2][frame - span[0], :4]])
        return np.asarray(out, dtype=np.float32).reshape(-1, 7)


def _place(frames, rows, K, begin, end):
    """``(end - begin + 1, 5)`` boxes and scores over frames ``begin..end`` of tubelets ``rows``.

    Boxes land on their clip-end ``frames`` (newest box of each tubelet first), are
    averaged there and linearly interpolated between; ``begin`` and ``end`` must be clip
    ends. Boxes outside the range are ignored, so a tail of a tube's tubelets gives the
    same values as the whole tube wherever that tail holds every box of the range.
    """
    length = end - begin + 1
    where = (frames[:, ::-1] - begin).ravel()
    values = np.concatenate([rows[:, :4 * K].reshape(-1, K, 4)[:, ::-1],
                             np.repeat(rows[:, None, -1:], K, axis=1)], axis=2).reshape(-1, 5)
    inside = (where >= 0) & (where < length)
    where, values = where[inside], values[inside]
    acc = np.zeros((length, 5), dtype=np.float32)
    np.add.at(acc, where, values)
    count = np.bincount(where, minlength=length)
    filled = count > 0
    acc[filled] = acc[filled] / count[filled, None]
    empty = np.flatnonzero(~filled)
    if empty.size:
        known = np.flatnonzero(filled)
        hi = known[np.searchsorted(known, empty)]
        lo = known[np.searchsorted(known, empty) - 1]
        acc[empty, :4] = interpolate(acc[lo, :4], acc[hi, :4], empty - lo, hi - lo)
        acc[empty, 4] = (acc[lo, 4] + acc[hi, 4]) / 2
    return acc


def _span_at(windows, rows, K, frame):
    """``(lo, hi, boxes)`` of one open tube between the clip ends around ``frame``, or None outside them.

    Reads only the newest tubelets that reach ``lo..hi``. Callers ask for frames in
    increasing order once no later window can reach them, so a span stays valid for
    every frame inside it (:meth:`Linker.boxes_at` keeps the last one per tube).
    """
    lo = hi = None
    tail = []
    for i in range(len(windows) - 1, -1, -1):  # windows grow frame by frame, so older ones stop mattering
        window = windows[i]
        if lo is not None and window[-1] < lo:
            break
        tail.append(i)
        for f in window:
            if f <= frame and (lo is None or f > lo):
                lo = f
            if f >= frame and (hi is None or f < hi):
                hi = f
    if lo is None or hi is None:
        return None
    tail.reverse()
    frames = np.asarray([windows[i] for i in tail], dtype=np.int64)
    return lo, hi, _place(frames, np.stack([rows[i] for i in tail]), K, lo, hi)


def link_video(windows, K, clip_len, **params):
    """BuildTubes over one whole video: ``{label: [Tube, ...]}`` in the reference's order.

    ``windows`` are :class:`~edge_stad.runtime.windows.Window` s in frame order, their
    frames as processed (see :func:`~edge_stad.runtime.windows.window_schedule`; the
    last window of a stream-mode video is uneven). ``params`` go to :class:`Linker`.
    Every label that appears in a window has an entry, possibly empty.
    """
    linker = Linker(K, clip_len, **params)
    tubes: Dict[int, List[Tube]] = {}
    events = []
    for window in windows:
        if not isinstance(window, Window):
            window = Window(*window)
        events += linker.push(window.frame, window.tubelets, window.frames)
        for label in window.tubelets:
            tubes.setdefault(int(label), [])
    events += linker.finish()
    for event in events:
        if event.kind == ENDED and event.tube is not None:
            tubes[event.label].append(event.tube)
    return tubes
