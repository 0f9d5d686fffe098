"""Run a detector over dataset videos the way the runtime does: windows of tubelets.

Works with any *backend*: an object with ``config`` (the model config: ``K``,
``clip_len``, ``input_size``, ``num_classes``, grid via ``input_size / 8``) and two
calls on NumPy arrays:

* ``encode(frames)``: resized uint8 BGR clips ``(N, n, H, W, 3)``, oldest frame first
  -> clip features ``(N, 64, h, w)`` and size maps ``(N, 2, h, w)``;
* ``detect(feats, whs)``: one window ``(1, K, 64, h, w)``, ``(1, K, 2, h, w)``, oldest
  clip first -> decoded rows ``(1, N, 4K+2)`` (:func:`edge_stad.core.tubelet_decode.decode`).

The PyTorch model (:class:`edge_stad.torch_backends.streaming.TorchBackend`) and the ONNX
Runtime engines both qualify, so training validation, the INT8 accuracy gate and
``edge-stad eval --engine`` measure the same thing. Stream mode encodes every clip once
and keeps a FIFO of clip features (the paper's feature caching); normal mode is the
same code with a window at every frame. No torch here.
"""
import numpy as np

from edge_stad.core.tubelet_decode import to_pixels
from edge_stad.core.windows import Window, clip_ending_at, window_schedule
from edge_stad.eval.detections import Detections
from edge_stad.eval.evaluate import evaluate, split_videos
from edge_stad.preprocess import grid_size, resize


def predict_windows(backend, dataset, video, mode="stream", reference_y_rounding=False,
                    reference_inverted_boxes=False):
    """:class:`~edge_stad.core.windows.Window` s of one video, tubelets in video pixels. The ``reference_*``
    switches reproduce the authors' decode where it differs (:mod:`edge_stad.core.tubelet_decode`)."""
    cfg = backend.config
    K, n = cfg["K"], cfg["clip_len"]
    size = tuple(cfg["input_size"])
    image_hw = tuple(dataset.gt.resolution[video])
    frames, features, windows = {}, {}, []

    def clip(end):
        idx = clip_ending_at(end, n)
        for f in idx:
            if f not in frames:
                frames[f] = resize(dataset.read_frame(video, f), size)
        return np.stack([frames[f] for f in idx])

    for ends in window_schedule(K, n, dataset.gt.nframes[video], mode):
        new = sorted(set(e for e in ends if e not in features))
        if new:
            feat, wh = backend.encode(np.stack([clip(e) for e in new]))
            for i, e in enumerate(new):
                features[e] = (feat[i], wh[i])
        feats = np.stack([features[e][0] for e in ends])[None]
        whs = np.stack([features[e][1] for e in ends])[None]
        rows = backend.detect(feats, whs, reference_y_rounding=reference_y_rounding)[0]
        windows.append(Window(tuple(ends), to_pixels(rows, cfg["num_classes"], grid_size(cfg["input_size"]), image_hw,
                                                     reference_inverted_boxes)))
        oldest = ends[0]
        for table, keep_from in ((features, oldest), (frames, oldest - n + 1)):
            for key in [k for k in table if k < keep_from]:
                del table[key]
    return windows


def predict(backend, dataset, videos, mode="stream", reference_y_rounding=False, progress=None,
            reference_inverted_boxes=False):
    """:class:`~edge_stad.eval.detections.Detections` of ``videos`` (windows only)."""
    cfg = backend.config
    windows = {}
    for video in videos:
        windows[video] = predict_windows(backend, dataset, video, mode, reference_y_rounding, reference_inverted_boxes)
        if progress is not None:
            progress.update(1)
    return Detections(K=cfg["K"], clip_len=cfg["clip_len"], mode=mode, labels=tuple(dataset.gt.labels),
                      windows=windows, frames={}, tubes={})


def evaluate_backend(backend, dataset, split=1, mode="stream", progress=None):
    """Frame-mAP / video-mAP of ``backend`` on the test videos of ``split`` (an ``Evaluation``)."""
    return evaluate(dataset.gt, predict(backend, dataset, split_videos(dataset.gt, split), mode, progress=progress),
                    split=split)
