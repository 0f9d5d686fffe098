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

Memory is bounded on an endless stream (a person standing for hours, a static false
positive): an open tube whose unreported part spans ``segment_frames`` (:data:`SEGMENT_FRAMES`,
6 minutes at 25 frames/s, about nine times the longest UCF101-24 video, so no dataset video is
cut) hands that part out as a ``segment`` event, a :class:`Tube` with the same id holding the
boxes of those frames, and keeps only the few newest tubelets that still reach later frames.
Its later segments and its ``ended`` tube continue at the next frame; together they hold
exactly the boxes the whole tube would. The score of a segment, and of the ``ended`` part of a
segmented tube, is the tube's mean tubelet score so far (the float64 running mean, rounded to
float32: the reference's float32 ``np.mean`` needs every score kept). The filters on tubelet
count and length do not apply to a segmented tube, which passed them long ago; a part whose
score is below ``min_score`` is reported with ``tube=None``.

Ties: where the reference sorts with NumPy's unstable default (tubelets by score, tubes
by mean score), equal keys keep their current order here (:func:`edge_stad.boxes.descending`);
``Linker(..., ties="reference")`` visits and ranks the tubelets of the NMS as the reference does
(:func:`edge_stad.boxes.nms_order`). Tubes are ranked by a float64 running mean, the reference
ranks by a float32 ``np.mean``; the two orders differ only where two means agree to float32
rounding, where the reference order is arbitrary as well (either ``ties`` setting). The
reported tube score is the reference's float32 ``np.mean``.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

import numpy as np

from edge_stad.boxes import check_ties, nms_order
from edge_stad.core import link_math
from edge_stad.core.windows import Window, interpolate, regular_window
from edge_stad.errors import ConfigError, TubeletError

STARTED, GREW, ENDED, SEGMENT = "started", "grew", "ended", "segment"
SEGMENT_FRAMES = 9000   # frames of an open tube handed out at once: 6 minutes at 25 frames/s


class Tube(NamedTuple):
    """A finished action tube: one row per frame ``frame, x1, y1, x2, y2, score`` (float32)."""

    tube_id: int
    label: int
    score: float
    boxes: np.ndarray


class TubeEvent(NamedTuple):
    """What happened to tube ``tube_id`` when ``frame`` was processed.

    ``tube`` is set on ``ended`` and ``segment`` events only, and only if the tube passed the
    filters (enough tubelets, score and length); ``None`` means it was discarded. A ``segment``
    tube holds the frames of a long tube that no later window can change, from the frame after
    its previous segment; the tube stays open.
    """

    kind: str
    tube_id: int
    label: int
    frame: int
    tube: Optional[Tube] = None


def nms_groups(groups, overlaps, threshold=0.6, top_k=10, ties="stable"):
    """The reference's tubelet NMS of several labels at once: ``(out, sizes)``.

    ``groups``: per label a ``(m, 4K+1)`` float32 array of tubelets; ``overlaps``: their ``(m, m)``
    summed per-box NMS IoUs (:meth:`HostMatrices.nms_overlap`). Within a label, tubelets are visited
    from the highest score down and a later one is suppressed when the **sum** over its K boxes of
    the IoU with a visited one exceeds ``threshold * K``; its score is multiplied by ``1 - sum``
    (negative for K >= 2, so it ranks last but is still returned when fewer than ``top_k``
    survive). ``out`` holds each label's ``top_k`` best by rescaled score, label after label;
    ``sizes`` says how many each label kept.

    Every label is visited in one pass over one block-diagonal matrix (labels never suppress each
    other). A suppressed tubelet's weight comes from the first survivor that hits it, as in
    the visit loop, where it leaves the queue at that visit. Equal scores are visited and ranked
    as ``ties`` says (:func:`edge_stad.boxes.nms_order`).
    """
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    width = groups[0].shape[1] if groups else 1
    n = int(sizes.sum())
    if n == 0:
        return np.zeros((0, width), dtype=np.float32), sizes
    tubelets = np.concatenate(groups)
    scores = tubelets[:, -1]
    label = np.repeat(np.arange(len(groups)), sizes)
    starts = np.cumsum(sizes) - sizes
    pair = np.full((n, n), -np.inf, dtype=np.float32)   # other labels never suppress
    for start, size, overlap in zip(starts.tolist(), sizes.tolist(), overlaps):
        pair[start:start + size, start:start + size] = overlap
    order = _per_label(scores, label, starts, sizes, ties)   # per label high to low
    pair = pair[np.ix_(order, order)]
    hit = (pair > threshold * ((width - 1) // 4)) & np.triu(np.ones((n, n), dtype=bool), 1)
    kept = np.zeros(n, dtype=bool)
    kept[_greedy(hit)] = True
    by_kept = hit & kept[:, None]
    hit_at = np.flatnonzero(~kept)
    weight = np.ones(n, dtype=np.float32)
    weight[order[hit_at]] = 1 - pair[by_kept[:, hit_at].argmax(axis=0), hit_at]
    rescaled = scores * weight
    rank = _per_label(rescaled, label, starts, sizes, ties)
    rank = rank[np.arange(n) - starts[label[rank]] < top_k]
    out = tubelets[rank]
    out[:, -1] = rescaled[rank]
    return out, np.minimum(sizes, top_k)


def _per_label(values, label, starts, sizes, ties):
    """Positions label by label, each label's from the highest value down (equal values as ``ties``
    says: ``stable`` in input order, ``reference`` as its ``np.argsort(values)[::-1]`` of each label)."""
    if check_ties(ties) == "stable":
        return np.lexsort((-values, label))
    return np.concatenate([start + nms_order(values[start:start + size], ties)
                           for start, size in zip(starts.tolist(), sizes.tolist())])


def _greedy(hit):
    """Positions a greedy visit keeps: ``hit[i, j]`` (``i < j``) means a kept ``i`` suppresses ``j``.

    The visit is sequential by nature; with each row as one Python integer bit mask a step
    is a shift and an or, a few hundred nanoseconds for a window's hundred tubelets.
    """
    n = len(hit)
    packed = np.packbits(hit, axis=1, bitorder="little")
    data, width = packed.tobytes(), packed.shape[1]
    kept, suppressed = [], 0
    for i in range(n):
        if not suppressed >> i & 1:
            kept.append(i)
            suppressed |= int.from_bytes(data[i * width:(i + 1) * width], "little")
    return kept


def tubelet_nms(tubelets, threshold=0.6, top_k=10, overlap=None, ties="stable"):
    """:func:`nms_groups` of one label's ``(m, 4K+1)`` tubelets: the ``top_k`` best, by rescaled score.

    ``overlap``: the ``(m, m)`` summed IoUs of :func:`edge_stad.core.link_math.nms_overlap`,
    when a kernel computed them already.
    """
    K = (tubelets.shape[1] - 1) // 4
    if overlap is None:
        overlap = link_math.nms_overlap(tubelets[:, :4 * K].reshape(-1, K, 4))
    return nms_groups([tubelets], [overlap], threshold, top_k, ties)[0]


class HostMatrices:
    """The linker's two pairwise matrices from the NumPy references, every label of a window in one call.

    :class:`edge_stad.kernels.ops.CudaLinkMatrices` has the same two methods and computes
    every label of a window in one kernel launch each.
    """

    @staticmethod
    def nms_overlap(groups):
        """``[(m, K, 4) tubelet boxes]`` per label -> ``[(m, m)]`` summed per-box NMS IoUs."""
        if not groups:
            return []
        sizes = [len(boxes) for boxes in groups]
        boxes, n = np.concatenate(groups), sum(sizes)
        if 2 * sum(m * m for m in sizes) > n * n:   # one label dominates: the whole matrix, by broadcasting
            whole, ends = link_math.nms_overlap(boxes), np.cumsum(sizes)
            return [whole[e - m:e, e - m:e] for e, m in zip(ends.tolist(), sizes)]
        first, second, starts = link_math.block_pairs(sizes, sizes)   # many labels: only their blocks
        flat = link_math.nms_overlap_pairs(boxes, first, second)
        return [flat[starts[g]:starts[g + 1]].reshape(m, m) for g, m in enumerate(sizes)]

    @staticmethod
    def match_iou(groups):
        """``[(tube boxes (A, K, 4), offsets (A,), candidate boxes (M, K, 4))]`` -> ``[(A, M)]`` mean IoUs."""
        if not groups:
            return []
        rows, cols = [len(g[0]) for g in groups], [len(g[2]) for g in groups]
        tube, candidate, starts = link_math.block_pairs(rows, cols)
        flat = link_math.match_iou_pairs(*(np.concatenate(part) for part in zip(*groups)), tube, candidate)
        return [flat[starts[g]:starts[g + 1]].reshape(r, c) for g, (r, c) in enumerate(zip(rows, cols))]


def _bounds(sorted_labels, labels):
    """``(starts, ends)``: lists of where each of ``labels`` begins and ends in the non-decreasing ``sorted_labels``."""
    return (np.searchsorted(sorted_labels, labels, "left").tolist(),
            np.searchsorted(sorted_labels, labels, "right").tolist())


class _Tubes:
    """The open tubes of every label; what matching reads is kept in arrays.

    Between windows the tubes are in label order, each label's in rank order, followed by the
    tubes started last; :meth:`rank` restores the order (equal means keep their order).
    """

    def __init__(self, K):
        self.ids = []
        self.label = np.zeros(0, dtype=np.int64)
        self.last_frame = np.zeros(0, dtype=np.int64)
        self.last_boxes = np.zeros((0, K, 4), dtype=np.float32)
        self.score_sum = np.zeros(0, dtype=np.float64)
        self.count = np.zeros(0, dtype=np.int64)   # tubelets linked, segments handed out included
        self.first = np.zeros(0, dtype=np.int64)   # clip end the unreported part is placed from
        self.cut = np.zeros(0, dtype=bool)         # whether frame `first` went out with a segment
        self.windows = []  # per tube: the K clip-end frames of each of its tubelets still held
        self.rows = []  # per tube: its (4K+1,) tubelets still held

    def __len__(self):
        return len(self.ids)

    def take(self, index):
        """Keep the tubes at ``index`` (an int array), in that order."""
        held = index.tolist()
        self.ids = [self.ids[i] for i in held]
        self.windows = [self.windows[i] for i in held]
        self.rows = [self.rows[i] for i in held]
        for name in ("label", "last_frame", "last_boxes", "score_sum", "count", "first", "cut"):
            setattr(self, name, getattr(self, name)[index])

    def rank(self):
        """Label by label, highest mean score first."""
        self.take(np.lexsort((-(self.score_sum / self.count), self.label)))

    def extend(self, ids, labels, frame, window, tubelets, K):
        self.ids.extend(ids)
        self.windows.extend([window] for _ in ids)
        self.rows.extend([row] for row in tubelets)
        self.label = np.concatenate([self.label, labels])
        self.last_frame = np.concatenate([self.last_frame, np.full(len(ids), frame, dtype=np.int64)])
        self.last_boxes = np.concatenate([self.last_boxes, tubelets[:, :4 * K].reshape(-1, K, 4)])
        self.score_sum = np.concatenate([self.score_sum, tubelets[:, -1].astype(np.float64)])
        self.count = np.concatenate([self.count, np.ones(len(ids), dtype=np.int64)])
        self.first = np.concatenate([self.first, np.full(len(ids), window[0], dtype=np.int64)])
        self.cut = np.concatenate([self.cut, np.zeros(len(ids), dtype=bool)])


class Linker:
    """Incremental BuildTubes for one stream at a time, all labels at once.

    Call :meth:`push` with each processed frame's tubelets in frame order, then
    :meth:`finish` at the end of the stream; both return :class:`TubeEvent` lists.
    Tube ids are unique for the life of the Linker (a new stream continues the count).
    ``matrices`` computes the pairwise IoU matrices (default :class:`HostMatrices`; the GPU
    runtime passes :class:`edge_stad.kernels.ops.CudaLinkMatrices`); the greedy steps that
    read them stay here. Every step runs on all labels at once: labels never interact, so
    their matrices sit as blocks on one diagonal. ``ties``: how the tubelet NMS orders equal
    scores (:func:`edge_stad.boxes.check_ties`).
    """

    def __init__(self, K, clip_len, nms_threshold=0.6, top_k=10, match_iou=0.5, min_score=0.005, matrices=None,
                 segment_frames=SEGMENT_FRAMES, ties="stable"):
        if int(K) < 1 or int(clip_len) < 1 or int(top_k) < 1:
            raise ConfigError(f"K, clip_len and top_k must be >= 1, got {K}, {clip_len}, {top_k}")
        if segment_frames is not None and int(segment_frames) < 2 * int(K) * int(clip_len):
            raise ConfigError(f"segment_frames must be None (never) or >= 2·K·clip_len = {2 * int(K) * int(clip_len)}, "
                              f"got {segment_frames}")
        self.segment_frames = None if segment_frames is None else int(segment_frames)
        self.K, self.clip_len, self.top_k = int(K), int(clip_len), int(top_k)
        self.ties = check_ties(ties)
        self.nms_threshold, self.match_iou, self.min_score = nms_threshold, match_iou, min_score
        self.matrices = HostMatrices() if matrices is None else matrices
        self._tubes = _Tubes(self.K)
        self._next_id = 0
        self._last = None
        self._spans = {}  # tube id -> the span boxes_at read last

    @property
    def active_tubes(self):
        """Number of tubes still open (all labels)."""
        return len(self._tubes)

    @property
    def stored_tubelets(self):
        """Number of tubelets held by the open tubes: the linker's whole memory."""
        return sum(len(rows) for rows in self._tubes.rows)

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
        labels = sorted(checked)
        groups = [checked[label] for label in labels]
        overlaps = self.matrices.nms_overlap([g[:, :4 * K].reshape(-1, K, 4) for g in groups])
        candidates, sizes = nms_groups(groups, overlaps, self.nms_threshold, self.top_k, self.ties)
        candidate_label = np.repeat(np.asarray(labels, dtype=np.int64), sizes)
        self._last = frame
        tubes = self._tubes
        tubes.rank()
        offset = np.round((frame - tubes.last_frame) / self.clip_len).astype(np.int64)
        match = np.full(len(tubes), -1, dtype=np.int64)
        if len(tubes) and len(candidates):
            both = np.intersect1d(tubes.label, candidate_label)
            (t0, t1), (c0, c1) = _bounds(tubes.label, both), _bounds(candidate_label, both)
            boxes = candidates[:, :4 * K].reshape(-1, K, 4)
            means = self.matrices.match_iou([(tubes.last_boxes[a:b], offset[a:b], boxes[c:d])
                                             for a, b, c, d in zip(t0, t1, c0, c1)])
            ok = np.zeros((len(tubes), len(candidates)), dtype=bool)
            for a, b, c, d, mean in zip(t0, t1, c0, c1, means):
                ok[a:b, c:d] = mean >= self.match_iou
            match = self._assign(ok)
        return self._update(frame, window, candidates, candidate_label, match, offset)

    def _update(self, frame, window, candidates, candidate_label, match, offset):
        """Grow the matched tubes, end the stale ones, start the free candidates; the events, label by label."""
        K, tubes = self.K, self._tubes
        grew = np.flatnonzero(match >= 0)
        ended = np.flatnonzero((match < 0) & (offset >= K))
        free = np.ones(len(candidates), dtype=bool)
        free[match[grew]] = False
        free = np.flatnonzero(free)
        new_ids = np.arange(self._next_id, self._next_id + free.size)
        self._next_id += free.size
        if grew.size:
            chosen = candidates[match[grew]]
            tubes.last_frame[grew] = frame
            tubes.last_boxes[grew] = chosen[:, :4 * K].reshape(-1, K, 4)
            tubes.score_sum[grew] += chosen[:, -1]
            tubes.count[grew] += 1
            tubes.first[grew] = np.where(tubes.cut[grew], tubes.first[grew], np.minimum(tubes.first[grew], window[0]))
            for a, row in zip(grew.tolist(), chosen):
                tubes.windows[a].append(window)
                tubes.rows[a].append(row)
        sections = (tubes.label[grew], tubes.label[ended], candidate_label[free])
        labels = np.unique(np.concatenate(sections))
        (g0, e0, s0), (g1, e1, s1) = zip(*(_bounds(section, labels) for section in sections))
        finished = self._assemble(ended.tolist(), K * self.clip_len)
        events = []
        for i, label in enumerate(labels.tolist()):
            events += [TubeEvent(GREW, tubes.ids[a], label, frame) for a in grew[g0[i]:g1[i]].tolist()]
            for a in ended[e0[i]:e1[i]][::-1].tolist():  # the reference files ended tubes in reverse rank order
                self._spans.pop(tubes.ids[a], None)
                events.append(TubeEvent(ENDED, tubes.ids[a], label, frame, finished.get(a)))
            events += [TubeEvent(STARTED, t, label, frame) for t in new_ids[s0[i]:s1[i]].tolist()]
        if ended.size:
            keep = np.ones(len(tubes), dtype=bool)
            keep[ended] = False
            tubes.take(np.flatnonzero(keep))
        if free.size:
            tubes.extend(new_ids.tolist(), candidate_label[free], frame, window, candidates[free], K)
        return events + self._segments(frame)

    def _segments(self, frame):
        """Hand out the long tubes' frames that no later window can change: ``segment`` events.

        A later window's clip ends are all after ``frame - (K-1)·clip_len``; the runtime has returned
        the results of every frame up to ``frame - K·clip_len`` (its last window's), so a tube is cut at
        its last clip end ``c`` up to there. Frames ``first..c`` go out; the tubelets that reach ``c`` or
        later stay, and hold every box of the frames after ``c``.
        """
        if self.segment_frames is None or not len(self._tubes):
            return []
        tubes, limit = self._tubes, frame - self.K * self.clip_len
        events = []
        for i in np.flatnonzero(limit - tubes.first + 1 >= self.segment_frames).tolist():
            windows = tubes.windows[i]
            cut = None
            for window in reversed(windows):   # clip ends only grow from window to window
                below = [f for f in window if f <= limit]
                cut = max(below + ([cut] if cut is not None else [])) if below else cut
                if window[-1] <= limit:
                    break
            if cut is None or cut - tubes.first[i] + 1 < self.segment_frames:
                continue
            part = self._part(i, tubes.first[i], cut)
            keep = [j for j, window in enumerate(windows) if window[-1] >= cut]
            tubes.windows[i] = [windows[j] for j in keep]
            tubes.rows[i] = [tubes.rows[i][j] for j in keep]
            tubes.first[i], tubes.cut[i] = cut, True
            self._spans.pop(tubes.ids[i], None)
            events.append(TubeEvent(SEGMENT, tubes.ids[i], int(tubes.label[i]), frame, part))
        return events

    def _part(self, i, begin, end):
        """The :class:`Tube` of frames ``begin..end`` of open tube ``i`` (without ``begin`` when a segment
        had it), scored by its running mean; None below ``min_score``."""
        tubes = self._tubes
        score = float(np.float32(tubes.score_sum[i] / tubes.count[i]))
        if score < self.min_score:
            return None
        placed = _place_many([(np.asarray(tubes.windows[i], dtype=np.int64), np.stack(tubes.rows[i]), begin, end)],
                             self.K)[0]
        boxes = np.empty((end - begin + 1, 6), dtype=np.float32)
        boxes[:, 0] = np.arange(begin, end + 1)
        boxes[:, 1:] = placed
        return Tube(tubes.ids[i], int(tubes.label[i]), score, boxes[1:] if tubes.cut[i] else boxes)

    def finish(self):
        """End every open tube (the stream is over) and reset for the next stream."""
        events = []
        if self._last is not None:
            min_length = min(self._last, self.K * self.clip_len)
            tubes = self._tubes
            index = np.argsort(tubes.label, kind="stable").tolist()   # label by label, in held order
            finished = self._assemble(index, min_length)
            events = [TubeEvent(ENDED, tubes.ids[i], int(tubes.label[i]), self._last, finished.get(i)) for i in index]
        self._tubes = _Tubes(self.K)
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

    @staticmethod
    def _assign(ok):
        """Candidate index each ranked tube takes (-1: none), given which pairs match well enough."""
        A, M = ok.shape
        # Candidates are sorted by score, so a tube's best valid one is its first valid one.
        first = ok.argmax(axis=1)
        valid = ok[np.arange(A), first]
        match = np.where(valid, first, -1)
        if np.bincount(first[valid], minlength=1).max() <= 1:
            return match
        free = np.ones(M, dtype=bool)  # two tubes want the same tubelet: the better ranked one wins
        for a in np.flatnonzero(valid).tolist():
            row = ok[a] & free
            j = int(row.argmax())
            match[a] = j if row[j] else -1
            free[j] &= not row[j]
        return match

    def _assemble(self, index, min_length):
        """The (L, 6) tubes of the finished open tubes at ``index``, None where the reference drops one."""
        tubes, chosen, out = self._tubes, [], {}
        for i in index:
            windows = tubes.windows[i]
            if tubes.cut[i]:   # segmented: the rest from the frame after its last segment
                part = self._part(i, int(tubes.first[i]), windows[-1][-1])
                if part is not None:
                    out[i] = part
                continue
            if len(windows) < 2:
                continue
            # The reference starts a tube at max(f0 - (K-1) * clip_len, 1), the first clip end of its
            # first window; the earliest clip end of any window is the same there, and safe for others.
            begin, end = min(w[0] for w in windows), windows[-1][-1]
            if end - begin + 1 >= min_length:
                chosen.append((i, begin, end))
        if not chosen:
            return out
        # every chosen tube's tubelets and windows in one array each, a slice per tube
        rows = np.stack([row for i, _, _ in chosen for row in tubes.rows[i]])
        frames = np.asarray([w for i, _, _ in chosen for w in tubes.windows[i]], dtype=np.int64)
        scores = np.ascontiguousarray(rows[:, -1])
        kept, spans, stop = [], [], 0
        for i, begin, end in chosen:
            start, stop = stop, stop + len(tubes.rows[i])
            # np.mean of a float32 array: its pairwise float32 sum, divided (correctly rounded to float32)
            score = float(np.float32(np.add.reduce(scores[start:stop]) / (stop - start)))
            if score >= self.min_score:
                kept.append((i, score))
                spans.append((frames[start:stop], rows[start:stop], begin, end))
        for (i, score), (_, _, begin, end), placed in zip(kept, spans, _place_many(spans, self.K)):
            boxes = np.empty((end - begin + 1, 6), dtype=np.float32)
            boxes[:, 0] = np.arange(begin, end + 1)
            boxes[:, 1:] = placed
            out[i] = Tube(tubes.ids[i], int(tubes.label[i]), score, boxes)
        return out

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
        tubes = self._tubes
        means = tubes.score_sum / np.maximum(tubes.count, 1)
        listed = np.flatnonzero((tubes.count >= min_tubelets) & (means >= min_score))
        listed = listed[np.argsort(tubes.label[listed], kind="stable")].tolist()
        stale = [i for i in listed if not _covers(self._spans.get(tubes.ids[i]), frame)]
        spans = [_span_at(tubes.windows[i], tubes.rows[i], int(frame)) for i in stale]
        placed = iter(_place_many([s for s in spans if s is not None], self.K))   # one call for all new spans
        for i, span in zip(stale, spans):
            self._spans[tubes.ids[i]] = None if span is None else (span[2], span[3], next(placed))
        for i in listed:
            span = self._spans[tubes.ids[i]]
            if span is not None:
                out.append([tubes.ids[i], tubes.label[i], means[i], *span[2][frame - span[0], :4]])
        return np.asarray(out, dtype=np.float32).reshape(-1, 7)


def _place_many(spans, K):
    """Per ``(frames, rows, begin, end)`` of ``spans``: the ``(end - begin + 1, 5)`` boxes and scores over
    frames ``begin..end`` of tubelets ``rows`` whose clip ends are ``frames``.

    Boxes land on their clip-end frames (newest box of each tubelet first), are averaged
    there and linearly interpolated between; ``begin`` and ``end`` must be clip ends. Boxes
    outside the range are ignored, so a tail of a tube's tubelets gives the same values as
    the whole tube wherever that tail holds every box of the range. All spans share one set
    of arrays, each in its own slice: the sums run in tubelet order per frame, and a gap
    never reaches past a span's ends, which are clip ends.
    """
    if not spans:
        return []
    lengths = np.array([end - begin + 1 for _, _, begin, end in spans], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    where = np.concatenate([(frames[:, ::-1] - begin).ravel() for frames, _, begin, _ in spans])
    span = np.repeat(np.arange(len(spans)), [frames.size for frames, _, _, _ in spans])
    rows = np.concatenate([rows for _, rows, _, _ in spans])
    values = np.concatenate([rows[:, :4 * K].reshape(-1, K, 4)[:, ::-1],
                             np.repeat(rows[:, None, -1:], K, axis=1)], axis=2).reshape(-1, 5)
    inside = (where >= 0) & (where < lengths[span])
    where, values = where[inside] + starts[span[inside]], values[inside]
    acc = np.zeros((int(lengths.sum()), 5), dtype=np.float32)
    np.add.at(acc, where, values)
    count = np.bincount(where, minlength=len(acc))
    filled = count > 0
    acc[filled] = acc[filled] / count[filled, None]
    empty = np.flatnonzero(~filled)
    if empty.size:
        known = np.flatnonzero(filled)
        hi = known[np.searchsorted(known, empty)]
        lo = known[np.searchsorted(known, empty) - 1]
        acc[empty, :4] = interpolate(acc[lo, :4], acc[hi, :4], empty - lo, hi - lo)
        acc[empty, 4] = (acc[lo, 4] + acc[hi, 4]) / 2
    return np.split(acc, starts[1:])


def _covers(span, frame):
    return span is not None and span[0] <= frame <= span[1]


def _span_at(windows, rows, frame):
    """``(frames, rows, lo, hi)``: the newest tubelets of one open tube that reach the clip ends
    ``lo <= frame <= hi`` around ``frame`` (a span for :func:`_place_many`), or None outside them.

    Callers ask for frames in increasing order once no later window can reach them, so a span
    stays valid for every frame inside it (:meth:`Linker.boxes_at` keeps the last one per tube).
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
    return np.asarray([windows[i] for i in tail], dtype=np.int64), np.stack([rows[i] for i in tail]), lo, hi


def link_video(windows, K, clip_len, **params):
    """BuildTubes over one whole video: ``{label: [Tube, ...]}`` in the reference's order.

    ``windows`` are :class:`~edge_stad.core.windows.Window` s in frame order, their
    frames as processed (see :func:`~edge_stad.core.windows.window_schedule`; the
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
        if event.kind in (ENDED, SEGMENT) and event.tube is not None:
            tubes[event.label].append(event.tube)
    return tubes
