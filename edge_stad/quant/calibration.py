"""Calibration windows for INT8: K consecutive clips of real frames, preprocessed as the runtime does.

A *window* is ``uint8 (K, n, H, W, 3)``: K clips of ``n`` resized BGR frames, oldest
first, ending at a key frame, exactly what the runtime feeds the encoder (and, through
the encoder, the head). Frame-level models (MENet: no ``K`` in their config) take windows
of one clip, ``(1, T, H, W, 3)``: the 3D branch reads the clip, the detector its latest
frames; so do STMA models, whose K-frame snippet lies inside their clip, and flow-fusion models, whose
clip is the ``frames`` frames one detection reads. Sources:

* an ACT dataset folder (UCF101-24, JHMDB-21, ``edge-stad synth`` output): windows at
  frames spread evenly over the videos of the chosen split part (``train`` by default:
  the accuracy gate uses ``test``);
* a video file, or a folder of video files / frame folders: windows spread over each;
* a ``.npy``/``.npz`` array of ready windows ``(N, K, n, H, W, 3)`` uint8 at the model's
  input size (for curated sets; anything else is refused).

Selection is deterministic (evenly spaced, no randomness) so that two builds from the
same data calibrate identically.
"""
import os

import numpy as np

from edge_stad.core.windows import clip_ending_at, regular_window
from edge_stad.data.act import ActDataset, is_act_dataset
from edge_stad.data.frames import IMAGE_EXTENSIONS, iter_clip_frames
from edge_stad.errors import DataError
from edge_stad.model_config import SNIPPET, frames_per_clip, short_repr
from edge_stad.preprocess import resize

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


def _spread(total, count):
    """``count`` evenly spaced indices in ``range(total)`` (all of them when ``count >= total``)."""
    if count >= total:
        return list(range(total))
    return sorted(set(np.linspace(0, total - 1, count).round().astype(int).tolist()))


def _clips_per_window(config):
    """K, or 1 for a frame-level model and for STMA (its window reads one clip, the snippet inside it)."""
    return 1 if config.get("name") in SNIPPET else config.get("K", 1)


def _window_frames(end, K, clip_len):
    return [f for clip_end in regular_window(end, K, clip_len) for f in clip_ending_at(clip_end, clip_len)]


def _from_act(root, config, count, part):
    dataset = ActDataset(root)
    videos = dataset.train_videos if part == "train" else dataset.test_videos
    K, n, size = _clips_per_window(config), frames_per_clip(config), tuple(config["input_size"])
    ends = [(v, f) for v in videos for f in range(min(K * n, dataset.nframes(v)), dataset.nframes(v) + 1)]
    if not ends:
        raise DataError(f"{root}: the {part} videos hold no frames to calibrate on")
    windows = []
    for i in _spread(len(ends), count):
        video, end = ends[i]
        frames = [resize(dataset.read_frame(video, f), size) for f in _window_frames(end, K, n)]
        windows.append(np.stack(frames).reshape(K, n, *frames[0].shape))
    return windows


def windows_from_frames(frames, config, count, name="the frames"):
    """Up to ``count`` windows evenly spread over one stream of BGR ``frames`` (any size; resized here)."""
    K, n, size = _clips_per_window(config), frames_per_clip(config), tuple(config["input_size"])
    frames = [resize(image, size) for image in frames]
    if len(frames) < n:
        raise DataError(f"{name}: {len(frames)} frames, fewer than one clip ({n} frames)")
    first = min(K * n, len(frames))
    windows = []
    for end in _spread(len(frames) - first + 1, count):
        picked = [frames[f - 1] for f in _window_frames(first + end, K, n)]
        windows.append(np.stack(picked).reshape(K, n, *picked[0].shape))
    return windows


def _from_clips(sources, config, count):
    per_source = max(1, -(-count // len(sources)))
    windows = []
    for source in sources:
        windows += windows_from_frames((image for image, _ in iter_clip_frames(source)), config, per_source, source)
    return [windows[i] for i in _spread(len(windows), count)]


def _from_array(path, config, count):
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy/.npz array file ({e})") from e
    if isinstance(data, np.lib.npyio.NpzFile):
        if len(data.files) != 1:
            raise DataError(f"{path}: expected one array of windows, found {data.files}")
        data = data[data.files[0]]
    K, n, (h, w) = _clips_per_window(config), frames_per_clip(config), config["input_size"]
    if data.dtype != np.uint8 or data.ndim != 6 or tuple(data.shape[1:]) != (K, n, h, w, 3):
        raise DataError(f"{path}: calibration windows must be uint8 (N, {K}, {n}, {h}, {w}, 3) for this model "
                        f"(K={K}, clip_len={n}, input {h}x{w}), got {data.dtype} {tuple(data.shape)}")
    return [data[i] for i in _spread(len(data), count)]


def calibration_windows(source, config, count=64, part="train"):
    """Up to ``count`` windows ``uint8 (K, n, H, W, 3)`` from ``source`` for the model ``config``."""
    source = os.fspath(source)
    if count < 1:
        raise DataError(f"need at least one calibration window, got count={count}")
    if is_act_dataset(source):
        return _from_act(source, config, count, part)
    if os.path.isdir(source):
        entries = sorted(os.path.join(source, e) for e in os.listdir(source))
        sources = [e for e in entries if e.lower().endswith(VIDEO_EXTENSIONS)
                   or (os.path.isdir(e) and any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(e)))]
        if not sources:
            raise DataError(f"{source}: no calibration data: expected an ACT dataset (a *-GT.pkl), video "
                            f"files ({', '.join(VIDEO_EXTENSIONS)}) or frame folders")
        return _from_clips(sources, config, count)
    if source.lower().endswith((".npy", ".npz")):
        return _from_array(source, config, count)
    if os.path.isfile(source):
        return _from_clips([source], config, count)
    raise DataError(f"{source}: no such calibration file or folder (for the synthetic set: "
                    f"edge-stad synth --out {source})")


def user_windows(data, config, count=64):
    """Up to ``count`` calibration windows from what a Python caller hands ``build_engine``: an iterable of
    windows ``uint8 (K, n, H, W, 3)`` (what :func:`calibration_windows` returns), or an ONNX Runtime
    ``CalibrationDataReader`` of the first graph's feeds (AMMA's encoder: ``{"frames": (1, n, H, W, 3)}``
    per clip, K consecutive clips making a window; MENet's encoder3d: ``{"clip": (1, n, H, W, 3)}``)."""
    K, n, (h, w) = _clips_per_window(config), frames_per_clip(config), config["input_size"]
    expected = f"uint8 ({K}, {n}, {h}, {w}, 3) windows for this model (K={K}, clip_len={n}, input {h}x{w})"
    if hasattr(data, "get_next"):   # onnxruntime.quantization.CalibrationDataReader
        clips = []
        while len(clips) < count * K:
            feed = data.get_next()
            if feed is None:
                break
            if not isinstance(feed, dict) or len(feed) != 1:
                raise DataError(f"the calibration reader gave {short_repr(feed)}; expected one-input feeds of the "
                                "first graph ({'frames': clip} or {'clip': clip})")
            clip = np.asarray(next(iter(feed.values())))
            clips.extend(clip if clip.ndim == 5 else [clip])
        data = [np.stack(clips[i:i + K]) for i in range(0, len(clips) - K + 1, K)]
    windows = []
    for window in data:
        window = np.asarray(window)
        if window.dtype != np.uint8 or window.shape != (K, n, h, w, 3):
            raise DataError(f"calibration window {len(windows)} is {window.dtype} {tuple(window.shape)}; expected "
                            + expected)
        windows.append(window)
        if len(windows) == count:
            break
    if not windows:
        raise DataError("no calibration windows in the data given; expected " + expected)
    return windows

