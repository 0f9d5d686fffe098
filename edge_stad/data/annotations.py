"""Ground-truth tubes in the ACT layout: ``*-GT.pkl`` (safely) and a JSON twin.

The ACT pickle (``JHMDB-GT.pkl``, ``UCF101v2-GT.pkl``; often written by Python 2) is a
dict with ``labels``, ``gttubes``, ``nframes``, ``train_videos``, ``test_videos`` and
``resolution`` (reference §5). It is read with a restricted unpickler that builds only
plain data (lists, dicts, tuples, sets, numbers, strings, bytes) and NumPy arrays, so a
tampered file is refused before anything in it runs. The JSON file holds the same keys,
arrays as nested lists and label keys as strings.

Tube arrays are validated and converted to float64 ``(n, 5)``: ``frame, x1, y1, x2, y2``,
frames consecutive within ``[1, nframes]``, boxes finite with ``x1 <= x2``, ``y1 <= y2`` and
inside the video's resolution (with a margin of :data:`BOX_MARGIN` of a side, for boxes drawn
past the border). Annotation files come from others, so before anything is materialised the
unpickled structure is bounded (:func:`check_bounds`): a small pickle whose lists share one
another expands to billions of numbers when NumPy copies them.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import collections
import json
import os
import pickle
from typing import Dict, List, NamedTuple, Tuple

import numpy as np

from edge_stad.atomic import write_json
from edge_stad.errors import AnnotationError, UnsafePickleError

KEYS = ("labels", "gttubes", "nframes", "train_videos", "test_videos", "resolution")
MAX_DEPTH = 16                # the ACT layout nests 7 levels (file, gttubes, video, label, tubes, tube, row)
MAX_ELEMENTS = 50_000_000     # numbers and containers in all; UCF101-24's file holds about 4 million
MAX_NFRAMES = 10_000_000      # frames of one video: over four days at 25 frames/s
BOX_MARGIN = 0.1              # how far past the frame (a share of its side) a box may reach
_CONTAINERS = (list, tuple, dict, set, frozenset, np.ndarray)


class GroundTruth(NamedTuple):
    """A validated ACT annotation file."""

    labels: List[str]
    gttubes: Dict[str, Dict[int, List[np.ndarray]]]
    nframes: Dict[str, int]
    train_videos: List[List[str]]
    test_videos: List[List[str]]
    resolution: Dict[str, Tuple[int, int]]


def _numpy_globals():
    try:  # NumPy >= 2 moved the array internals to numpy._core
        from numpy._core import multiarray, numeric
    except ImportError:
        from numpy.core import multiarray, numeric
    safe = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        safe[(package + ".multiarray", "_reconstruct")] = multiarray._reconstruct
        safe[(package + ".multiarray", "scalar")] = multiarray.scalar
        safe[(package + ".numeric", "_frombuffer")] = numeric._frombuffer
    return safe


_SAFE_GLOBALS = _numpy_globals()
_SAFE_GLOBALS.update({
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles spell bytes objects
})


class _DataOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals NumPy arrays and plain containers need."""

    def find_class(self, module, name):
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: an annotation pickle may only hold lists, dicts, tuples, sets, "
                "numbers, strings, bytes and NumPy arrays") from None


def load_gt(path):
    """Read and validate an ACT ground-truth file (``.pkl`` or ``.json``)."""
    path = os.fspath(path)
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                raw = _from_json(json.load(f), path)
        else:
            with open(path, "rb") as f:
                raw = _DataOnlyUnpickler(f, encoding="iso-8859-1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except AnnotationError:
        raise
    except Exception as e:  # a damaged file can make the unpickler or JSON parser raise anything
        raise AnnotationError(f"{path}: cannot read ground truth: {type(e).__name__}: {e}") from e
    return validate_gt(raw, path)


def write_gt_json(path, gt):
    """Write ``gt`` as JSON (atomically): same keys as the pickle, arrays as lists."""
    write_json(path, {
        "labels": list(gt.labels),
        "gttubes": {v: {str(label): [t.tolist() for t in tubes] for label, tubes in per.items()}
                    for v, per in gt.gttubes.items()},
        "nframes": dict(gt.nframes),
        "train_videos": [list(s) for s in gt.train_videos],
        "test_videos": [list(s) for s in gt.test_videos],
        "resolution": {v: list(hw) for v, hw in gt.resolution.items()},
    }, indent=None)


def _from_json(raw, path):
    if not isinstance(raw, dict) or not isinstance(raw.get("gttubes"), dict):
        raise AnnotationError(f"{path}: expected an object with 'gttubes'")
    tubes = {}
    for v, per in raw["gttubes"].items():
        if not isinstance(per, dict):
            raise AnnotationError(f"{path}: gttubes[{v!r}] must map labels to tube lists")
        try:
            tubes[v] = {int(label): [np.array(t, dtype=np.float64) for t in lst] for label, lst in per.items()}
        except (ValueError, TypeError) as e:
            raise AnnotationError(f"{path}: video {v!r}: bad label key or tube: {e}") from None
    return dict(raw, gttubes=tubes)


def _fail(source, message, *args):
    raise AnnotationError(f"{source}: {message.format(*args)}")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_bounds(raw, source, max_depth=MAX_DEPTH, budget=MAX_ELEMENTS):
    """Refuse ``raw`` when it nests deeper than ``max_depth`` or expands to more than ``budget`` elements.

    A container reached twice counts twice (NumPy copies it twice), but is walked once: the time is
    linear in the distinct containers the file really holds, the memory is the memo, so a pickle bomb
    is refused in milliseconds. A cycle nests without end and is refused for its depth.
    """
    sizes = {}

    def size(obj, depth, path):
        if isinstance(obj, np.ndarray) and obj.dtype != object:
            return max(obj.size, 1)
        key = id(obj)
        if key in sizes:
            return sizes[key]
        if depth >= max_depth:
            _fail(source, "{}: nested more than {} levels deep (an ACT file nests 7)", path or "the file", max_depth)
        total = 1
        items = obj.items() if isinstance(obj, dict) else enumerate(obj.flat if isinstance(obj, np.ndarray) else obj)
        for name, item in items:
            total += size(item, depth + 1, f"{path}[{name!r}]") if isinstance(item, _CONTAINERS) else 1
            if total > budget:
                _fail(source, "{}: expands to more than {} elements (lists shared by reference count each time); "
                              "refusing to materialise it", path or "the file", budget)
        sizes[key] = total
        return total

    if isinstance(raw, _CONTAINERS):
        size(raw, 0, "")


def validate_gt(raw, source="ground truth"):
    """Check an ACT annotation dict and return it as a :class:`GroundTruth`."""
    check_bounds(raw, source)
    if not isinstance(raw, dict):
        _fail(source, "expected a dict with keys {}, got {}", list(KEYS), type(raw).__name__)
    missing = [k for k in KEYS if k not in raw]
    if missing:
        _fail(source, "missing keys {} (expected {})", missing, list(KEYS))
    for key in ("gttubes", "nframes", "resolution"):
        if not isinstance(raw[key], dict):
            _fail(source, "'{}' must be a dict keyed by video, got {}", key, type(raw[key]).__name__)
    labels = raw["labels"]
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        _fail(source, "'labels' must be a list of class names")
    nframes = {}
    for v, n in raw["nframes"].items():
        if not _is_int(n) or not 1 <= n <= MAX_NFRAMES:
            _fail(source, "video {!r}: field 'nframes' must be an int in [1, {}], got {!r}", v, MAX_NFRAMES, n)
        nframes[v] = int(n)
    resolution = {}
    for v, hw in raw["resolution"].items():
        if not isinstance(hw, (list, tuple)) or len(hw) != 2 or not all(_is_int(x) and x > 0 for x in hw):
            _fail(source, "resolution[{!r}] must be (height, width) positive ints, got {!r}", v, hw)
        resolution[v] = (int(hw[0]), int(hw[1]))
    splits = {}
    for key in ("train_videos", "test_videos"):
        value = raw[key]
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(s, (list, tuple)) and all(isinstance(v, str) for v in s) for s in value):
            _fail(source, "'{}' must be a list of splits, each a list of video names", key)
        splits[key] = [list(s) for s in value]
    arrays = {}   # id of a tube object -> its float64 array: a tube shared by reference is converted once
    gttubes = {v: _validate_video(source, v, per, nframes, len(labels), resolution.get(v), arrays)
               for v, per in raw["gttubes"].items()}
    for key, lists in splits.items():
        for s, videos in enumerate(lists):
            for v in videos:
                if v not in nframes or v not in gttubes:
                    _fail(source, "{} split {}: video {!r} has no nframes or gttubes entry", key, s + 1, v)
    return GroundTruth(list(labels), gttubes, nframes, splits["train_videos"], splits["test_videos"], resolution)


def _validate_video(source, video, per_label, nframes, num_labels, hw, arrays):
    if video not in nframes:
        _fail(source, "video {!r} has tubes but no nframes entry", video)
    if not isinstance(per_label, dict):
        _fail(source, "gttubes[{!r}] must map label indices to lists of tubes", video)
    out = {}
    last = nframes[video]
    for label, tubes in per_label.items():
        if not _is_int(label) or not 0 <= label < num_labels:
            _fail(source, "video {!r}: label {!r} is not an index into the {} labels", video, label, num_labels)
        if not isinstance(tubes, (list, tuple)):
            _fail(source, "video {!r} label {}: expected a list of tubes, got {}", video, label, type(tubes).__name__)
        checked = []
        for i, tube in enumerate(tubes):
            where = f"video {video!r} label {label} tube {i}"
            if id(tube) not in arrays:
                arrays[id(tube)] = _tube_array(source, where, tube)
            tube = arrays[id(tube)]
            if tube.ndim != 2 or tube.shape[1] != 5 or not len(tube):
                _fail(source, "{}: expected (n, 5) rows frame, x1, y1, x2, y2, got shape {}", where, tube.shape)
            frames = tube[:, 0]
            bad = np.flatnonzero(~np.isfinite(tube).all(axis=1))
            if bad.size:
                _fail(source, "{}: non-finite value in row {} (frame {:g})", where, bad[0], tube[bad[0], 0])
            if not (frames == np.round(frames)).all() or frames[0] < 1 or frames[-1] > last:
                _fail(source, "{}: frames {:g}..{:g} must be integers within [1, {}] (nframes)",
                      where, frames[0], frames[-1], last)
            step = np.flatnonzero(np.diff(frames) != 1)
            if step.size:
                _fail(source, "{}: frames must be consecutive, frame {:g} is followed by {:g}",
                      where, frames[step[0]], frames[step[0] + 1])
            _check_boxes(source, where, tube, hw)
            checked.append(tube)
        out[int(label)] = checked
    return out


def _tube_array(source, where, tube):
    """A tube as a float64 array; a list of lists must be rows of 5 numbers before NumPy copies it, so
    that lists nested deeper never expand."""
    if isinstance(tube, (list, tuple)) and any(
            not isinstance(row, (list, tuple, np.ndarray)) or len(row) != 5 or any(isinstance(v, _CONTAINERS)
                                                                                   for v in row) for row in tube):
        _fail(source, "{}: expected (n, 5) rows frame, x1, y1, x2, y2 of numbers", where)
    try:
        return np.array(tube, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(source, "{}: not a numeric array", where)


def _check_boxes(source, where, tube, hw):
    """Boxes with ``x1 <= x2``, ``y1 <= y2``, inside the ``(height, width)`` frame up to :data:`BOX_MARGIN`."""
    x1, y1, x2, y2 = tube[:, 1], tube[:, 2], tube[:, 3], tube[:, 4]
    inverted = np.flatnonzero((x1 > x2) | (y1 > y2))
    if inverted.size:
        i = inverted[0]
        _fail(source, "{}: the box of frame {:g} has x1 > x2 or y1 > y2: {}", where, tube[i, 0], tube[i, 1:].tolist())
    if hw is None:
        return
    h, w = hw
    outside = np.flatnonzero((x1 < -BOX_MARGIN * w) | (y1 < -BOX_MARGIN * h) | (x2 > (1 + BOX_MARGIN) * w)
                             | (y2 > (1 + BOX_MARGIN) * h))
    if outside.size:
        i = outside[0]
        _fail(source, "{}: the box of frame {:g} {} lies outside the {}x{} (w x h) frame (resolution)", where,
              tube[i, 0], tube[i, 1:].tolist(), w, h)
