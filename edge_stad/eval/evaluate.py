"""Evaluate a detections file against ACT ground truth: every metric of ``edge-stad eval``.

Frame-level detections come from a video's ``frame`` records when it has any, else
they are built from its tubelet windows; tubes come from its ``tube`` records when it
has any, else the windows are linked (:func:`~edge_stad.core.linking.link_video`).
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple

import numpy as np

from edge_stad.boxes import check_ties
from edge_stad.core.frame_detections import frame_detections
from edge_stad.core.linking import link_video
from edge_stad.errors import ConfigError, EvaluationError
from edge_stad.eval.ap import MAP
from edge_stad.eval.frame_errors import ErrorBreakdown, frame_errors
from edge_stad.eval.frame_map import FRAME_MODES, default_mode, frame_map
from edge_stad.eval.video_map import RANGE_THRESHOLDS, video_maps

#: Video-mAP thresholds reported on their own; the 0.5:0.95 mean is reported as well.
VIDEO_THRESHOLDS = (0.2, 0.5, 0.75)


class Evaluation(NamedTuple):
    """All metrics of one split. AP values are fractions in [0, 1]."""

    labels: Tuple[str, ...]
    split: int
    mode: str
    iou_threshold: float
    videos: List[str]
    frame: MAP
    errors: ErrorBreakdown
    video: Dict[float, MAP]  # VIDEO_THRESHOLDS and RANGE_THRESHOLDS
    video_range: float
    without_gt: Tuple[str, ...]  # classes with no ground truth in the split: AP 0, counted in the means
    ties: str = "stable"  # how equal scores ranked (edge_stad.boxes.check_ties)

    def to_json(self):
        """A JSON-ready summary, values in percent."""

        def per_class(values):
            return {name: 100 * float(x) for name, x in zip(self.labels, values)}

        errors = self.errors._asdict()
        return {
            "units": "percent",
            "split": self.split,
            "mode": self.mode,
            "iou_threshold": self.iou_threshold,
            "ties": self.ties,
            "num_videos": len(self.videos),
            "labels": list(self.labels),
            "classes_without_gt": list(self.without_gt),
            "frame_mAP": 100 * self.frame.mean,
            "frame_AP": per_class(self.frame.ap),
            "video_mAP": dict({f"{th:g}": 100 * self.video[th].mean for th in VIDEO_THRESHOLDS},
                              **{"0.5:0.95": 100 * self.video_range}),
            "video_AP": {f"{th:g}": per_class(self.video[th].ap) for th in VIDEO_THRESHOLDS},
            "frame_errors_mean": {name: 100 * float(np.mean(v)) for name, v in errors.items()},
            "frame_errors": {name: per_class(v) for name, v in errors.items()},
        }


def split_videos(gt, split):
    if not 1 <= split <= len(gt.test_videos):
        raise ConfigError(f"split must be in 1..{len(gt.test_videos)} for this dataset, got {split}")
    return list(gt.test_videos[split - 1])


def check_compatible(gt, detections, videos):
    """Raise :class:`EvaluationError` if the detections cannot be scored against ``gt``."""
    if tuple(gt.labels) != tuple(detections.labels):
        raise EvaluationError("the detections' {} class names differ from the ground truth's {}: "
                              "first difference at index {}".format(
                                  len(detections.labels), len(gt.labels),
                                  next((i for i, (a, b) in enumerate(zip(gt.labels, detections.labels)) if a != b),
                                       min(len(gt.labels), len(detections.labels)))))
    unknown = [v for v in detections.videos if v not in gt.nframes]
    if unknown:
        raise EvaluationError(f"{len(unknown)} video(s) of the detections are not in the ground truth, "
                              f"e.g. {unknown[0]!r}")
    present = set(detections.videos)
    missing = [v for v in videos if v not in present]
    if missing:
        raise EvaluationError(f"{len(missing)} of {len(videos)} test videos have no records in the detections "
                              f"file, e.g. {missing[:3]}")
    for v in videos:
        last = gt.nframes[v]
        frames = [w.frames[-1] for w in detections.windows.get(v, ())]
        frames += detections.frames[v][:, 0].astype(int).tolist() if v in detections.frames else []
        frames += [int(t.boxes[-1, 0]) for ts in detections.tubes.get(v, {}).values() for t in ts]
        if frames and max(frames) > last:
            raise EvaluationError(f"video {v!r}: detections at frame {max(frames)} but the video has {last} frames")


def evaluate(gt, detections, split=1, mode="auto", iou_threshold=0.5, ties="stable"):
    """Frame-mAP (with its error breakdown) and video-mAP of ``detections`` on a test split.

    ``mode`` is ``trimmed``, ``untrimmed`` or ``auto`` (:func:`~edge_stad.eval.frame_map.default_mode`:
    trimmed when every ground-truth tube spans its whole video, where both agree). ``ties``: how
    equal scores rank, ``stable`` (input order) or ``reference`` (as the authors' ACT code, with
    NumPy's default sort), in every ranking and NMS step that builds and scores the detections
    (:func:`edge_stad.boxes.check_ties`).
    """
    check_ties(ties)
    videos = split_videos(gt, split)
    check_compatible(gt, detections, videos)
    if mode == "auto":
        mode = default_mode(gt, videos)
    if mode not in FRAME_MODES:
        raise ConfigError(f"mode must be 'auto' or one of {FRAME_MODES}, got {mode!r}")
    frames, tubes = {}, {}
    for v in videos:
        windows = detections.windows.get(v, [])
        if v in detections.frames:
            frames[v] = detections.frames[v]
        elif windows:
            frames[v] = frame_detections(windows, detections.K, detections.mode, ties=ties)
        if v in detections.tubes:
            tubes[v] = detections.tubes[v]
        elif windows:
            tubes[v] = link_video(windows, detections.K, detections.clip_len, ties=ties)
    thresholds = sorted(set(VIDEO_THRESHOLDS) | set(RANGE_THRESHOLDS))
    video = video_maps(tubes, gt, videos, thresholds, ties)
    return Evaluation(
        labels=tuple(gt.labels), split=split, mode=mode, iou_threshold=iou_threshold, videos=videos,
        frame=frame_map(frames, gt, videos, iou_threshold, mode, ties),
        errors=frame_errors(frames, gt, videos, iou_threshold, ties),
        video=video, video_range=float(np.mean([video[th].mean for th in RANGE_THRESHOLDS])),
        without_gt=tuple(name for c, name in enumerate(gt.labels) if not any(gt.gttubes[v].get(c) for v in videos)),
        ties=ties)
