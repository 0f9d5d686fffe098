"""ROAD's online incremental linking of frame detections into action tubes (Singh et al. 2017).

The rules and thresholds are those of ROAD's public code (``online-tubes/actionpath/
incremental_linking.m``, ``actionPaths.m``, ``gentube/PARactionPathSmoother.m``, ``dpEM_max.m``,
``convert2eval.m``), per class:

* each frame's candidates are the decoder's rows of that class filtered as ROAD does
  (:data:`~edge_stad.core.ssd_decode.ROAD_LINKING`: score > 0.001, best 50, NMS 0.45, 10 kept);
* live paths, in the order of the previous frame's ranking, each take the highest-scored free
  box whose IoU with the path's last box is >= ``iou_threshold`` (0.1; the edge cost is the box
  score, ``costtype = 'score'``); a taken box is no longer free; a path without a match counts a
  miss, and after ``jump_gap`` (3) misses in a row it ends;
* live paths are ranked by the mean of their ``jump_gap + 1`` best box scores; boxes left free
  start new paths;
* an ended path is kept if it found more than ``jump_gap`` boxes; the frames it skipped take the
  box it found after the gap;
* temporal labelling: a Viterbi pass over the path's per-frame class probabilities with a
  penalty ``alpha`` (3; ROAD also reports 5) per label switch; every run of frames labelled with
  the path's class longer than ``min_frames`` (``te - ts > 8``) becomes a tube scored by the mean
  of its best ``top_k_mean`` (40) box scores.

A path's tubes are made when it ends, so :class:`RoadLinker` hands them out online and keeps
only live paths (memory stays flat on an endless stream). Differences from the MATLAB code,
decided here: IoU is :func:`edge_stad.boxes.iou` (the same +1-pixel convention, without ROAD's
``eps`` in the denominator); ties keep input order (MATLAB's ``max`` and ``sort`` do the same);
the constant ROAD adds to the scores before the Viterbi pass (+20) is left out, since it does not
change the best path; ``topk = 40`` in ``convert2eval.m`` averages the 40 best box scores of a
tube, it does not cap the number of tubes. Tubes come out as paths end, not in ROAD's final sort.
"""
from __future__ import annotations

from typing import List

import numpy as np

from edge_stad.boxes import descending, iou
from edge_stad.core.linking import Tube
from edge_stad.errors import ConfigError, TubeletError

IOU_THRESHOLD = 0.1
JUMP_GAP = 3
ALPHA = 3.0
MIN_FRAMES = 8
TOP_K_MEAN = 40


class _Path:
    __slots__ = ("frames", "boxes", "scores", "probs", "misses")

    def __init__(self, frame, box, score, probs):
        self.frames, self.boxes, self.scores, self.probs = [frame], [box], [score], [probs]
        self.misses = 0

    def rank(self, gap):
        """ROAD's live-path order: the mean of the ``gap + 1`` best scores."""
        return float(np.mean(np.sort(self.scores)[-(gap + 1):]))


def label_path(probs, alpha=ALPHA):
    """ROAD's ``dpEM_max``: the label sequence maximising the summed probabilities minus ``alpha`` per switch.

    ``probs``: ``(n, C)`` per-frame class probabilities. Ties take the lowest label, as MATLAB's ``max``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n, c = probs.shape
    penalty = alpha * (1.0 - np.eye(c))           # penalty[k, i]: switching from k to i
    total = probs[0].copy()
    back = np.zeros((n, c), dtype=np.int64)
    for t in range(1, n):
        options = total[:, None] - penalty        # options[k, i]
        back[t] = options.argmax(axis=0)
        total = probs[t] + options.max(axis=0)
    labels = np.empty(n, dtype=np.int64)
    labels[-1] = int(total.argmax())
    for t in range(n - 1, 0, -1):
        labels[t - 1] = back[t, labels[t]]
    return labels


def path_tubes(label, frames, boxes, scores, probs, alpha=ALPHA, min_frames=MIN_FRAMES, top_k_mean=TOP_K_MEAN):
    """The tubes (``tube_id`` 0) of one gap-filled path of class ``label`` over consecutive ``frames``."""
    labels = label_path(probs, alpha)
    own = np.flatnonzero(labels == label)
    if not own.size:
        return []
    breaks = np.flatnonzero(np.diff(own) > 1)
    starts = np.concatenate([[own[0]], own[breaks + 1]])
    ends = np.concatenate([own[breaks], [own[-1]]])
    tubes = []
    for ts, te in zip(starts.tolist(), ends.tolist()):
        if te - ts <= min_frames:
            continue
        best = np.sort(scores[ts:te + 1])[::-1][:top_k_mean]
        rows = np.empty((te - ts + 1, 6), dtype=np.float32)
        rows[:, 0] = frames[ts:te + 1]
        rows[:, 1:5] = boxes[ts:te + 1]
        rows[:, 5] = scores[ts:te + 1]
        tubes.append(Tube(0, int(label), float(np.mean(best)), rows))
    return tubes


class RoadLinker:
    """ROAD's online linker over every class at once: :meth:`push` one frame's rows, get the tubes that ended.

    Rows are ``(n, 6 + C)``: ``x1, y1, x2, y2, score, label`` in pixels, then the C class
    probabilities of the box (what :func:`~edge_stad.core.ssd_decode.decode_ssd` with
    ``ROAD_LINKING`` gives, scaled to pixels). Frames must increase; a skipped frame number
    counts as a frame without detections.
    """

    def __init__(self, num_classes, iou_threshold=IOU_THRESHOLD, jump_gap=JUMP_GAP, alpha=ALPHA,
                 min_frames=MIN_FRAMES, top_k_mean=TOP_K_MEAN):
        if num_classes < 1 or jump_gap < 1 or min_frames < 0 or top_k_mean < 1 or not 0 <= iou_threshold <= 1:
            raise ConfigError(f"ROAD linker needs num_classes >= 1, jump_gap >= 1, min_frames >= 0, top_k_mean >= 1 "
                              f"and 0 <= iou_threshold <= 1, got {num_classes}, {jump_gap}, {min_frames}, "
                              f"{top_k_mean}, {iou_threshold}")
        self.num_classes, self.iou_threshold, self.jump_gap = int(num_classes), float(iou_threshold), int(jump_gap)
        self.alpha, self.min_frames, self.top_k_mean = float(alpha), int(min_frames), int(top_k_mean)
        self.live = [[] for _ in range(self.num_classes)]
        self.frame = 0
        self.next_id = 0
        self._ended = []   # (label, path) of paths that ended on frames without rows

    def _check(self, frame, rows):
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame <= self.frame:
            raise TubeletError(f"frames must be increasing ints >= 1; got {frame!r} after {self.frame}")
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6 + self.num_classes) if np.size(rows) else \
            np.zeros((0, 6 + self.num_classes))
        if not np.isfinite(rows).all() or (rows[:, 5] != np.round(rows[:, 5])).any() \
                or ((rows[:, 5] < 0) | (rows[:, 5] >= self.num_classes)).any():
            raise TubeletError(f"frame {frame}: rows must be finite (n, {6 + self.num_classes}) x1, y1, x2, y2, "
                               f"score, label in 0..{self.num_classes - 1}, then the class probabilities")
        return rows

    def push(self, frame, rows) -> List[Tube]:
        """Link one frame's rows; returns the tubes of the paths that ended here."""
        rows = self._check(frame, rows)
        empty = np.zeros((0, 6 + self.num_classes))
        for skipped in range(self.frame + 1, frame):   # frames nobody saw: a miss for every live path
            self._step_all(skipped, empty)
        self.frame = int(frame)
        self._step_all(frame, rows)
        return self._finish()

    def _step_all(self, frame, rows):
        for c in range(self.num_classes):
            own = rows[rows[:, 5] == c]
            self._ended += self._step(c, frame, own[:, :4], own[:, 4], own[:, 6:])

    def _step(self, label, frame, boxes, scores, probs):
        """One frame of one class; returns the paths that ended (as ``(label, _Path)``)."""
        paths = self.live[label]
        free = np.ones(len(boxes), dtype=bool)
        if paths and len(boxes):
            last = np.stack([p.boxes[-1] for p in paths])
            overlap = iou(last[:, None, :], boxes[None, :, :])
            edges = np.where(overlap >= self.iou_threshold, scores[None, :], 0.0)
        else:
            edges = np.zeros((len(paths), len(boxes)))
        for i, path in enumerate(paths):
            edge = np.where(free, edges[i], 0.0)
            if edge.sum() > 0:
                j = int(edge.argmax())
                path.frames.append(frame)
                path.boxes.append(boxes[j])
                path.scores.append(float(scores[j]))
                path.probs.append(probs[j])
                path.misses = 0
                free[j] = False
            else:
                path.misses += 1
        order = descending([p.rank(self.jump_gap) for p in paths]) if paths else []
        ranked = [paths[i] for i in order]
        self.live[label] = [p for p in ranked if p.misses < self.jump_gap]
        self.live[label] += [_Path(frame, boxes[j], float(scores[j]), probs[j]) for j in np.flatnonzero(free)]
        return [(label, p) for p in ranked if p.misses >= self.jump_gap]

    def _finish(self):
        ended, self._ended = self._ended, []
        tubes = []
        for label, path in ended:
            for tube in self._tubes(label, path):
                tubes.append(tube._replace(tube_id=self.next_id))
                self.next_id += 1
        return tubes

    def _tubes(self, label, path):
        if len(path.frames) <= self.jump_gap:
            return []
        found = np.asarray(path.frames)
        # every frame from the first to the last find takes the box found at or after it
        frames = np.arange(found[0], found[-1] + 1)
        take = np.searchsorted(found, frames)
        boxes = np.asarray(path.boxes)[take]
        scores = np.asarray(path.scores)[take]
        probs = np.asarray(path.probs)[take]
        return path_tubes(label, frames, boxes, scores, probs, self.alpha, self.min_frames, self.top_k_mean)

    def flush(self) -> List[Tube]:
        """End every live path (the end of the video); returns their tubes. The linker is empty afterwards."""
        self._ended += [(c, p) for c in range(self.num_classes) for p in self.live[c]]
        self.live = [[] for _ in range(self.num_classes)]
        return self._finish()


def road_link_video(frames, num_classes, **options):
    """``{frame: (n, 6 + C) rows}`` of one video -> ``{label: [Tube]}``, ids in the order tubes ended."""
    linker = RoadLinker(num_classes, **options)
    tubes = []
    for frame in sorted(frames):
        tubes += linker.push(frame, frames[frame])
    tubes += linker.flush()
    out = {}
    for tube in tubes:
        out.setdefault(tube.label, []).append(tube)
    return out
