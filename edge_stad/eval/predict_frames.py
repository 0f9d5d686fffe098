"""Run a frame-level detector (MENet) over dataset videos the way the runtime does. No torch.

A *frame backend* has ``config`` (the model config: ``clip_len`` T, ``srm_frames``,
``input_size``, ``num_classes``, ``anchors``) and two calls on NumPy arrays:

* ``encode_3d(frames)``: resized uint8 BGR clips ``(N, T, H, W, 3)``, oldest frame first -> the
  3D branch's features, whatever their shape;
* ``detect(frames, feat3d)``: the latest ``max(srm_frames, 1)`` frames ``(N, S, H, W, 3)`` and
  those features -> the region map ``(N, A*(5+C), h, w)``.

The 3D branch runs on the clip ending at frame 1, 1 + s, 1 + 2s, ... (``refresh`` s; 1 is the
paper's model, a new clip every frame) and its features serve the frames until the next refresh;
the 2D branch runs on every frame. Detections become one K=1 window per frame, so the tube linker
of the evaluation path links them online (``linker="online"``), or YOWO's offline Viterbi linker
does (``linker="viterbi"``, what the paper's video-mAP used).
"""
import numpy as np

from edge_stad.core.region_decode import decode_region, detector_frames, frame_window, to_frame_rows
from edge_stad.core.windows import clip_ending_at
from edge_stad.errors import ConfigError
from edge_stad.eval.detections import Detections
from edge_stad.eval.evaluate import evaluate, split_videos
from edge_stad.preprocess import resize

LINKERS = ("online", "viterbi")


def predict_frame_rows(backend, dataset, video, refresh=1, modes=("per_class",)):
    """Float32 ``(n, 7)`` rows ``frame, label, score, x1, y1, x2, y2`` of every frame of one video, decoded
    (:func:`~edge_stad.core.region_decode.decode_region`, YOWO's thresholds) in each of ``modes``;
    a dict by mode when several are asked for."""
    if refresh < 1:
        raise ConfigError(f"refresh (frames between 3D-branch runs) must be >= 1, got {refresh}")
    cfg = backend.config
    T, S = cfg["clip_len"], detector_frames(cfg)
    size = tuple(cfg["input_size"])
    image_hw = tuple(dataset.gt.resolution[video])
    frames, feat, out = {}, None, {mode: [] for mode in modes}
    for f in range(1, dataset.gt.nframes[video] + 1):
        clip = clip_ending_at(f, T)
        for i in clip:
            if i not in frames:
                frames[i] = resize(dataset.read_frame(video, i), size)
        if (f - 1) % refresh == 0:
            feat = backend.encode_3d(np.stack([frames[i] for i in clip])[None])
        region = backend.detect(np.stack([frames[i] for i in clip[-S:]])[None], feat)[0]
        for mode in modes:
            out[mode].append(to_frame_rows(decode_region(region, cfg["anchors"], cfg["num_classes"], mode=mode), f,
                                           image_hw))
        for i in [i for i in frames if i <= f - T + 1]:
            del frames[i]
    rows = {mode: np.concatenate(parts) for mode, parts in out.items()}
    return rows if len(modes) > 1 else rows[modes[0]]


def predict_frame_detections(backend, dataset, videos, refresh=1, linker="online", progress=None):
    """:class:`~edge_stad.eval.detections.Detections` of ``videos``: frame rows, K=1 windows and, with
    ``linker="viterbi"``, the Viterbi tubes (else :func:`~edge_stad.eval.evaluate.evaluate` links the
    windows online). As YOWO, the Viterbi linker reads other rows than frame-mAP does: every
    class of the class-agnostic NMS survivors, scored by the class probability (``yowo_video``)."""
    from edge_stad.eval.viterbi import viterbi_link_videos

    if linker not in LINKERS:
        raise ConfigError(f"linker must be one of {LINKERS}, got {linker!r}")
    C = backend.config["num_classes"]
    frames, windows, tubes = {}, {}, {}
    for video in videos:
        modes = ("per_class", "yowo_video") if linker == "viterbi" else ("per_class",)
        rows = predict_frame_rows(backend, dataset, video, refresh, modes)
        frames[video] = found = rows["per_class"] if linker == "viterbi" else rows
        windows[video] = [frame_window(f, found[found[:, 0] == f], C) for f in range(1, dataset.gt.nframes[video] + 1)]
        if linker == "viterbi":
            linked = rows["yowo_video"]
            by_frame = {int(f): linked[linked[:, 0] == f][:, [3, 4, 5, 6, 2, 1]] for f in np.unique(linked[:, 0])}
            tubes.update(viterbi_link_videos({video: by_frame}, {video: dataset.gt.nframes[video]}))
        if progress is not None:
            progress.update(1)
    return Detections(K=1, clip_len=1, mode="normal", labels=tuple(dataset.gt.labels), windows=windows,
                      frames=frames, tubes=tubes)


def evaluate_frame_backend(backend, dataset, split=1, refresh=1, linker="online", progress=None):
    """Frame-mAP / video-mAP of a frame backend on the test videos of ``split`` (an ``Evaluation``)."""
    videos = split_videos(dataset.gt, split)
    return evaluate(dataset.gt, predict_frame_detections(backend, dataset, videos, refresh, linker, progress),
                    split=split)
