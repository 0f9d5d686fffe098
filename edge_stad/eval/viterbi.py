"""YOWO's offline Viterbi linking of per-frame detections into tubes (MENet, §6.4 item 1).

Follows YOWO ``core/eval_results.py`` (``link_bbxes_between_frames``,
``link_video_one_class``), per class over a whole video:

* every frame from the first to the last takes part; a frame without a detection of
  the class gets a copy of those of the nearest frame that has some (the earlier one
  on a tie);
* two boxes of consecutive frames are joined by ``IoU + (s_t + s_t+1) + 0.5 * s_t * s_t+1``
  (continuous IoU, as YOWO's ``bbox_iou``);
* dynamic programming finds the path through one box per frame with the largest sum of
  joins (ties: lower box index, as ``np.argmax``); its boxes are taken out and the
  search repeats, at most ``max_paths`` (3) times and only while every frame still has a
  box, so each tube spans the whole range and no minimum length applies;
* tube score = mean of its box scores; tube NMS at 0.3 (ACT spatio-temporal IoU,
  :func:`edge_stad.eval.video_map.tube_nms`, as YOWO's ``nms_3d``/``iou3dt``; video-mAP
  runs the same NMS again, which then removes nothing).

Decided here: frames are the detections' own numbers (YOWO numbers them 1..n); a
one-frame range takes the best-scored box (YOWO's DP then has no join and takes box 0);
equal tube scores keep their order (YOWO's ``argsort`` is unstable).

The scores are whatever the rows hold: YOWO links class probabilities without
objectness (``region_decode`` mode ``"yowo_video"``); ``"per_class"`` rows (objectness
times probability) work as well.
"""
from typing import Dict, List

import numpy as np

from edge_stad.core.linking import Tube
from edge_stad.core.region_decode import box_iou
from edge_stad.errors import TubeletError
from edge_stad.eval.video_map import tube_nms

MAX_PATHS = 3
TUBE_NMS = 0.3


def _check(detections, nframes):
    checked = {}
    for frame, rows in detections.items():
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 1:
            raise TubeletError(f"frames must be ints >= 1, got {frame!r}")
        try:
            rows = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            rows = None
        if rows is None or (rows.size and (rows.ndim != 2 or rows.shape[1] != 6)):
            raise TubeletError(f"frame {frame}: detections must be (N, 6) rows x1, y1, x2, y2, score, label, got "
                               f"{'a non-numeric value' if rows is None else f'shape {rows.shape}'}")
        rows = rows.reshape(-1, 6)
        if not np.isfinite(rows).all() or (rows[:, 5] != np.round(rows[:, 5])).any() or (rows[:, 5] < 0).any():
            raise TubeletError(f"frame {frame}: detections must be finite with integer labels >= 0")
        if nframes is not None and frame > nframes:
            raise TubeletError(f"frame {frame} is past the video's {nframes} frames")
        checked[int(frame)] = rows
    return checked


def _paths(frames, max_paths):
    """Box indices (one per frame) of up to ``max_paths`` disjoint best paths through ``frames``."""
    joins = []
    for a, b in zip(frames, frames[1:]):
        sa, sb = a[:, 4, None], b[None, :, 4]
        joins.append(box_iou(a[:, None, :4], b[None, :, :4]) + sa + sb + 0.5 * sa * sb)
    alive = [np.ones(len(f), dtype=bool) for f in frames]
    paths = []
    while len(paths) < max_paths and all(a.any() for a in alive):
        # Best total from each box of frame t to the end, and the next box on that path.
        value = np.where(alive[-1], frames[-1][:, 4] if len(frames) == 1 else 0.0, -np.inf)
        step = [None] * len(joins)
        for t in range(len(joins) - 1, -1, -1):
            total = joins[t] + value[None, :]
            step[t] = total.argmax(axis=1)
            value = np.where(alive[t], total.max(axis=1), -np.inf)
        path = [int(value.argmax())]
        for t in range(len(joins)):
            path.append(int(step[t][path[-1]]))
        for t, i in enumerate(path):
            alive[t][i] = False
        paths.append(path)
    return paths


def viterbi_link_video(detections, nframes=None, max_paths=MAX_PATHS, nms_threshold=TUBE_NMS) -> List[Tube]:
    """Tubes of one video from ``{frame: (N, 6) rows x1, y1, x2, y2, score, label}`` (pixels).

    Frames run from the first frame with a row to the last one, or over ``1..nframes``
    when given (the whole video, as YOWO). Returns :class:`~edge_stad.core.linking.Tube` s
    (boxes ``float32`` rows ``frame, x1, y1, x2, y2, score``) by label, best first
    within a label; ids count from 0 in that order.
    """
    detections = {f: rows for f, rows in _check(detections, nframes).items() if len(rows)}
    if not detections:
        return []
    first, last = (1, int(nframes)) if nframes is not None else (min(detections), max(detections))
    numbers = np.arange(first, last + 1)
    rows = np.concatenate(list(detections.values()))
    tubes = []
    for label in np.unique(rows[:, 5]).astype(np.int64).tolist():
        own = {f: r[r[:, 5] == label, :5] for f, r in detections.items() if (r[:, 5] == label).any()}
        have = np.array(sorted(own))
        nearest = have[np.abs(have[None, :] - numbers[:, None]).argmin(axis=1)]
        frames = [own[f] for f in nearest.tolist()]
        found = []
        for path in _paths(frames, max_paths):
            boxes = np.empty((len(numbers), 6), dtype=np.float32)
            boxes[:, 0] = numbers
            boxes[:, 1:] = [frames[t][i] for t, i in enumerate(path)]
            found.append(Tube(0, label, float(np.mean(boxes[:, 5])), boxes))
        tubes += [found[i] for i in tube_nms(found, nms_threshold)]
    return [tube._replace(tube_id=i) for i, tube in enumerate(tubes)]


def viterbi_link_videos(detections, nframes=None, **options) -> Dict[str, Dict[int, List[Tube]]]:
    """``{video: {frame: rows}}`` -> ``{video: {label: [Tube]}}``, the input of :mod:`edge_stad.eval.video_map`.

    ``nframes``: ``{video: frame count}`` (e.g. ``GroundTruth.nframes``) to link whole videos.
    """
    out = {}
    for video, frames in detections.items():
        n = None if nframes is None else nframes[video]
        by_label = out[video] = {}
        for tube in viterbi_link_video(frames, n, **options):
            by_label.setdefault(tube.label, []).append(tube)
    return out
