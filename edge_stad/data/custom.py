"""A simple format for users' own clips, and converters to and from the ACT layout.

One video file (any container OpenCV reads) or frame folder per clip, plus one JSON file
of labels, tubes and splits; the exact format is docs/custom_dataset_format.md.
:func:`custom_to_act` decodes it into the ACT layout, after which every reader, trainer
and evaluator works unchanged; :func:`act_to_custom` writes the JSON of an ACT folder,
pointing at its frame folders (nothing is re-encoded).
"""
import math
import numbers
import os
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from edge_stad.atomic import read_json, write_json
from edge_stad.data.act import FRAMES_DIR, ActDataset, frame_name, write_gt
from edge_stad.data.frames import iter_clip_frames
from edge_stad.data.staging import staged_dir
from edge_stad.errors import DataError

FORMAT = "edge_stad.custom_dataset/1"
JPEG_QUALITY = 95


class CustomVideo(NamedTuple):
    name: str                               # video key, "<label>/<clip>" recommended
    source: str                             # absolute path of the video file or frame folder
    fps: Optional[float]
    nframes: Optional[int]                  # if given, the decoded count must match it
    tubes: List[Tuple[int, np.ndarray]]     # (label index, (n, 5) frame, x1, y1, x2, y2)


class CustomDataset(NamedTuple):
    name: str
    labels: List[str]
    videos: List[CustomVideo]
    train_videos: List[List[str]]
    test_videos: List[List[str]]


def _fail(where, message):
    raise DataError(f"{where}: {message}")


def _number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _tube(where, labels, tube):
    if not isinstance(tube, dict) or not isinstance(tube.get("label"), str) or "boxes" not in tube:
        _fail(where, 'expected {"label": name, "boxes": [[frame, x1, y1, x2, y2], ...]}')
    if tube["label"] not in labels:
        _fail(where, f"unknown label {tube['label']!r}; the labels are {labels}")
    rows = tube["boxes"]
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, list) and len(r) == 5 and all(_number(v) for v in r) for r in rows):
        _fail(where, "'boxes' must be a non-empty list of [frame, x1, y1, x2, y2] number rows")
    array = np.array(rows, dtype=np.float64)
    for frame, x1, y1, x2, y2 in array:
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            _fail(f"{where} frame {frame:g}", f"box {[x1, y1, x2, y2]} must be finite with x1 <= x2 and y1 <= y2")
    frames = array[:, 0]
    if frames[0] < 1 or not (frames == np.round(frames)).all() or (np.diff(frames) != 1).any():
        _fail(where, f"frames must be whole numbers >= 1, consecutive and ascending; got {frames[:8].tolist()}...")
    return labels.index(tube["label"]), array


def read_custom(json_path):
    """Parse and validate a custom-format JSON file; relative sources are resolved against its folder."""
    json_path = os.fspath(json_path)
    raw = read_json(json_path, DataError)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        _fail(json_path, f'expected an object with "format": "{FORMAT}"')
    labels = raw.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels) \
            or len(set(labels)) != len(labels):
        _fail(json_path, "'labels' must be a non-empty list of distinct class names")
    if not isinstance(raw.get("videos"), list):
        _fail(json_path, "'videos' must be a list")
    base = os.path.dirname(os.path.abspath(json_path))
    videos, names = [], set()
    for i, v in enumerate(raw["videos"]):
        where = f"{json_path}: videos[{i}]"
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not isinstance(v.get("source"), str):
            _fail(where, "each video needs a 'name' and a 'source' string")
        name = v["name"]
        where = f"{json_path}: video {name!r}"
        parts = name.split("/")
        if "\\" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            _fail(where, "the name must be a relative path such as 'label/clip' (no '..', no backslash)")
        if name in names:
            _fail(where, "appears twice")
        names.add(name)
        fps, nframes = v.get("fps"), v.get("nframes")
        if fps is not None and not (_number(fps) and fps > 0):
            _fail(where, f"'fps' must be a positive number, got {fps!r}")
        if nframes is not None and not (isinstance(nframes, int) and not isinstance(nframes, bool) and nframes > 0):
            _fail(where, f"'nframes' must be a positive integer, got {nframes!r}")
        tubes = v.get("tubes", [])
        if not isinstance(tubes, list):
            _fail(where, "'tubes' must be a list")
        tubes = [_tube(f"{where} tube {j}", labels, t) for j, t in enumerate(tubes)]
        if nframes is not None:
            for j, (_, t) in enumerate(tubes):
                if t[-1, 0] > nframes:
                    _fail(f"{where} tube {j}", f"frame {t[-1, 0]:g} is past nframes = {nframes}")
        videos.append(CustomVideo(name, os.path.join(base, v["source"]), fps, nframes, tubes))
    splits = raw.get("splits")
    if not isinstance(splits, list) or not splits:
        _fail(json_path, "'splits' must be a non-empty list of {\"train\": [...], \"test\": [...]}")
    train, test = [], []
    for s, split in enumerate(splits, 1):
        if not isinstance(split, dict) or not all(isinstance(split.get(k), list) for k in ("train", "test")):
            _fail(f"{json_path}: split {s}", "expected {\"train\": [names], \"test\": [names]}")
        for v in split["train"] + split["test"]:
            if v not in names:
                _fail(f"{json_path}: split {s}", f"video {v!r} is not in 'videos'")
        train.append(list(split["train"]))
        test.append(list(split["test"]))
    name = raw.get("name", "Custom")
    if not isinstance(name, str) or not name or os.sep in name or "/" in name:
        _fail(json_path, f"'name' must be a plain file-name prefix, got {name!r}")
    return CustomDataset(name, labels, videos, train, test)


def _decode_video(video, folder):
    """Write the frames of ``video`` as ACT jpgs into ``folder``; returns (nframes, (h, w))."""
    os.makedirs(folder)
    count, shape = 0, None
    for image, jpeg in iter_clip_frames(video.source):
        count += 1
        if shape is None:
            shape = image.shape[:2]
        elif image.shape[:2] != shape:
            raise DataError(f"{video.source}: frame {count} is {image.shape[1]}x{image.shape[0]}, frame 1 is "
                            f"{shape[1]}x{shape[0]} (w x h): all frames of a clip must have one size")
        if jpeg is None:
            jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        with open(os.path.join(folder, frame_name(count)), "wb") as f:
            f.write(jpeg)
    if video.nframes is not None and count != video.nframes:
        raise DataError(f"{video.source}: the JSON says nframes = {video.nframes} but the last frame decoded is "
                        f"frame {count}")
    for j, (_, tube) in enumerate(video.tubes):
        if tube[-1, 0] > count:
            raise DataError(f"video {video.name!r} tube {j}: needs frames up to {tube[-1, 0]:g} but {video.source} "
                            f"ends after frame {count} (the last frame decoded): truncated or wrong clip?")
    return count, shape


def custom_to_act(json_path, out_dir, force=False, name=None, progress=False):
    """Decode a custom-format dataset into the ACT layout at ``out_dir`` (created atomically).

    JPEG frame folders are copied byte for byte; other sources are encoded at quality 95.
    Writes ``<name>-GT.pkl`` (``name`` defaults to the JSON's ``name``, else ``Custom``).
    Returns the path of the GT pickle.
    """
    dataset = read_custom(json_path)
    name = name or dataset.name
    gt = {"labels": list(dataset.labels), "gttubes": {}, "nframes": {}, "resolution": {},
          "train_videos": dataset.train_videos, "test_videos": dataset.test_videos}
    with staged_dir(out_dir, force) as tmp:
        for video in tqdm(dataset.videos, desc="decode", unit="clip", file=sys.stderr, disable=not progress):
            n, shape = _decode_video(video, os.path.join(tmp, FRAMES_DIR, *video.name.split("/")))
            per_label: Dict[int, List[np.ndarray]] = {}
            for label, tube in video.tubes:
                per_label.setdefault(label, []).append(tube)
            gt["gttubes"][video.name] = per_label
            gt["nframes"][video.name] = n
            gt["resolution"][video.name] = (int(shape[0]), int(shape[1]))
        gt_file = os.path.basename(write_gt(tmp, name, gt)[0])
    return os.path.join(os.path.abspath(os.fspath(out_dir)), gt_file)


def act_to_custom(act_root, out_json):
    """Describe the ACT dataset at ``act_root`` in the custom format (sources = its frame folders)."""
    dataset = ActDataset(act_root)
    base = os.path.dirname(os.path.abspath(out_json))
    videos = []
    for v in dataset.videos:
        folder = os.path.dirname(dataset.frame_path(v, 1))
        tubes = [{"label": dataset.labels[label], "boxes": [[int(r[0])] + r[1:].tolist() for r in tube]}
                 for label, per in dataset.tubes(v).items() for tube in per]
        videos.append({"name": v, "source": os.path.relpath(os.path.abspath(folder), base).replace(os.sep, "/"),
                       "nframes": dataset.nframes(v), "tubes": tubes})
    gt_name = os.path.basename(dataset.gt_path)
    write_json(out_json, {
        "format": FORMAT,
        "name": gt_name[:gt_name.rindex("-GT")] if "-GT" in gt_name else "Custom",
        "labels": list(dataset.labels),
        "videos": videos,
        "splits": [{"train": list(tr), "test": list(te)}
                   for tr, te in zip(dataset.gt.train_videos, dataset.gt.test_videos)],
    })
