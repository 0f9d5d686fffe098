"""Run an SSD frame detector (flow-fusion) over dataset videos, frame by frame (no torch).

An *SSD backend* (:class:`~edge_stad.engines.protocols.SsdBackend`: an engine or a checkpoint) has ``config``
(the model config: ``frames``, ``lookahead``, ``motion``, ``input_size``, ``num_classes``, ``priors``), and
``pair_flow(a, b)`` and ``detect(frames, flows)`` on NumPy arrays. Each frame pair's flow is computed once per
video (:class:`~edge_stad.engines.ssd_backend.PairFlows`), as the Runtime does.

Every frame is a key frame. Its frame-mAP rows are :func:`~edge_stad.core.ssd_decode.decode_ssd` with
ROAD's evaluation settings; tubes come from ROAD's online linker (``linker="road"``, the paper's,
fed with ROAD's per-frame filter), the project's online tubelet linker over one K=1 window per
frame (``"online"``), or YOWO's offline Viterbi linker (``"viterbi"``).
"""
import numpy as np

from edge_stad.core.region_decode import frame_window, to_frame_rows
from edge_stad.core.road_linking import RoadLinker
from edge_stad.core.ssd_decode import ROAD_LINKING, decode_ssd, frames_for_key, prior_boxes
from edge_stad.engines.ssd_backend import PairFlows
from edge_stad.errors import ConfigError
from edge_stad.eval.detections import Detections
from edge_stad.eval.evaluate import evaluate, split_videos
from edge_stad.preprocess import resize

LINKERS = ("road", "online", "viterbi")


def road_rows(candidates, frame, image_hw):
    """``decode_ssd(..., **ROAD_LINKING)`` rows -> the ROAD linker's pixel rows
    ``x1, y1, x2, y2, score, label, p_0 .. p_{C-1}``."""
    rows = to_frame_rows(candidates, frame, image_hw)
    return np.concatenate([rows[:, 3:7], rows[:, 2:3], rows[:, 1:2], candidates[:, 6:]], axis=1)


def predict_ssd_video(backend, dataset, video, linker="road"):
    """One video: ``(frame rows (n, 7) frame, label, score, x1, y1, x2, y2, ROAD tubes {label: [Tube]} or None)``."""
    cfg = backend.config
    T, lookahead, C = cfg["frames"], cfg["lookahead"], cfg["num_classes"]
    size = tuple(cfg["input_size"])
    priors = prior_boxes(cfg["priors"])
    image_hw = tuple(dataset.gt.resolution[video])
    n = dataset.gt.nframes[video]
    road = RoadLinker(C) if linker == "road" else None
    flows = PairFlows(backend)
    frames, rows, tubes = {}, [], []
    for f in range(1, n + 1):
        numbers = frames_for_key(f, T, lookahead, n)
        for i in numbers:
            if i not in frames:
                frames[i] = resize(dataset.read_frame(video, i), size)
        loc, conf = backend.detect(np.stack([frames[i] for i in numbers])[None], flows.window(numbers, frames))
        rows.append(to_frame_rows(decode_ssd(loc[0], conf[0], priors), f, image_hw))
        if road is not None:
            tubes += road.push(f, road_rows(decode_ssd(loc[0], conf[0], priors, **ROAD_LINKING), f, image_hw))
        needed = frames_for_key(f + 1, T, lookahead, n)[0]
        for i in [i for i in frames if i < needed]:
            del frames[i]
        flows.forget(needed)
    if road is None:
        return np.concatenate(rows), None
    by_label = {}
    for tube in tubes + road.flush():
        by_label.setdefault(tube.label, []).append(tube)
    return np.concatenate(rows), by_label


def predict_ssd_detections(backend, dataset, videos, linker="road", progress=None):
    """:class:`~edge_stad.eval.detections.Detections` of ``videos``: frame rows, K=1 windows and, with the
    ``road`` or ``viterbi`` linker, its tubes (with ``online`` :func:`~edge_stad.eval.evaluate.evaluate`
    links the windows)."""
    from edge_stad.eval.viterbi import viterbi_link_videos

    if linker not in LINKERS:
        raise ConfigError(f"linker must be one of {LINKERS}, got {linker!r}")
    C = backend.config["num_classes"]
    frames, windows, tubes = {}, {}, {}
    for video in videos:
        found, road = predict_ssd_video(backend, dataset, video, linker)
        frames[video] = found
        windows[video] = [frame_window(f, found[found[:, 0] == f], C) for f in range(1, dataset.gt.nframes[video] + 1)]
        if linker == "road":
            tubes[video] = road
        elif linker == "viterbi":
            by_frame = {int(f): found[found[:, 0] == f][:, [3, 4, 5, 6, 2, 1]] for f in np.unique(found[:, 0])}
            tubes.update(viterbi_link_videos({video: by_frame}, {video: dataset.gt.nframes[video]}))
        if progress is not None:
            progress.update(1)
    return Detections(K=1, clip_len=1, mode="normal", labels=tuple(dataset.gt.labels), windows=windows,
                      frames=frames, tubes=tubes)


def evaluate_ssd_backend(backend, dataset, split=1, linker="road", progress=None):
    """Frame-mAP / video-mAP of an SSD backend on the test videos of ``split`` (an ``Evaluation``)."""
    videos = split_videos(dataset.gt, split)
    return evaluate(dataset.gt, predict_ssd_detections(backend, dataset, videos, linker, progress), split=split)
