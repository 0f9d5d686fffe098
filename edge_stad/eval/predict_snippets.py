"""Run an STMA model over dataset videos the way a streaming runtime would: one window per frame. No torch.

A *snippet backend* has ``config`` (the STMA model config) and three calls on NumPy arrays:

* ``encode(frames)``: resized uint8 BGR frames ``(N, H, W, 3)`` -> per-frame ``(feat, wh, act)``
  (``act`` None without the recognition branch), cached by frame number;
* ``encode_3d(clips)``: resized uint8 BGR clips ``(N, T, H, W, 3)``, oldest first -> the 3D
  feature (models with a 3D branch only);
* ``detect(feats, whs, acts, feat3d)``: one window's cached outputs ``(1, K, ...)``, ``(1, K, ...)``,
  ``(1, L, ...)`` (or None) and the 3D feature (or None) -> decoded rows ``(1, N, 4K+2)``
  (:func:`edge_stad.core.snippet_decode.decode_stma`).

The window of every frame ``e`` from K on holds the snippet ``e - K + 1 .. e``; each frame goes
through the 2D backbone once. The 3D branch runs on the first window's clip and then every
``refresh`` windows (1: every window, the paper's model), its feature serving the windows in
between. Windows become :class:`~edge_stad.eval.detections.Detections` with clips of one frame, so
frame-mAP pools every tubelet covering a frame and the online linker links them, as for AMMA.
"""
import numpy as np

from edge_stad.core.snippets import head_grid, layout_of, stacked
from edge_stad.core.tubelet_decode import to_pixels
from edge_stad.core.windows import Window, window_schedule
from edge_stad.errors import ConfigError
from edge_stad.eval.detections import Detections
from edge_stad.eval.evaluate import evaluate, split_videos
from edge_stad.preprocess import resize


def predict_snippet_windows(backend, dataset, video, refresh=1):
    """:class:`~edge_stad.core.windows.Window` s of one video, tubelets in video pixels."""
    if refresh < 1:
        raise ConfigError(f"refresh (windows between 3D-branch runs) must be >= 1, got {refresh}")
    cfg = backend.config
    layout = layout_of(cfg)
    size, nframes = tuple(cfg["input_size"]), dataset.gt.nframes[video]
    image_hw, grid = tuple(dataset.gt.resolution[video]), head_grid(cfg)
    (s0, s1), (m0, m1), (e0, e1) = layout.snippet, layout.motion, layout.encoded
    frames, encoded, windows, feat3d = {}, {}, [], None

    def frame(f):
        if f not in frames:
            frames[f] = resize(dataset.read_frame(video, f), size)
        return frames[f]

    for i, ends in enumerate(window_schedule(cfg["K"], 1, nframes, "normal")):
        clip = layout.clip_frames(ends[-1], nframes)
        new = sorted(set(f for f in clip[e0:e1 + 1] if f not in encoded))
        if new:
            outs = backend.encode(np.stack([frame(f) for f in new]))
            for j, f in enumerate(new):
                encoded[f] = tuple(None if o is None else o[j] for o in outs)
        if cfg["backbone_3d"] is not None and i % refresh == 0:
            feat3d = backend.encode_3d(np.stack([frame(f) for f in clip])[None])
        snippet = clip[s0:s1 + 1]
        rows = backend.detect(stacked(encoded, snippet, 0), stacked(encoded, snippet, 1),
                              stacked(encoded, clip[m0:m1 + 1], 2), feat3d)[0]
        windows.append(Window(tuple(ends), to_pixels(rows, cfg["num_classes"], grid, image_hw)))
        for table, keep_from in ((encoded, clip[e0]), (frames, clip[0])):
            for f in [f for f in table if f < keep_from]:
                del table[f]
    return windows


def predict_snippets(backend, dataset, videos, refresh=1, progress=None):
    """:class:`~edge_stad.eval.detections.Detections` of ``videos`` (windows only)."""
    windows = {}
    for video in videos:
        windows[video] = predict_snippet_windows(backend, dataset, video, refresh)
        if progress is not None:
            progress.update(1)
    return Detections(K=backend.config["K"], clip_len=1, mode="normal", labels=tuple(dataset.gt.labels),
                      windows=windows, frames={}, tubes={})


def evaluate_snippet_backend(backend, dataset, split=1, refresh=1, progress=None):
    """Frame-mAP / video-mAP of ``backend`` on the test videos of ``split`` (an ``Evaluation``)."""
    return evaluate(dataset.gt, predict_snippets(backend, dataset, split_videos(dataset.gt, split), refresh,
                                                 progress), split=split)
