"""The detections file: exact round trip, atomic writes, and errors that name line and field."""
import gzip
import json

import numpy as np
import pytest

from edge_stad.core.linking import Tube
from edge_stad.core.windows import Window
from edge_stad.errors import DetectionsFormatError
from edge_stad.eval.detections import Detections, open_writer, read_detections, write_detections

K = 2
TRICKY = np.array([0.1, 1e-8, 123.456, 1 / 3, 3.4e38, -0.0, 16777217.0, 2.5], dtype=np.float32)
TRICKY_BOXES = np.array([1e-8, 0.1, 1 / 3, 123.456, -0.0, 2.5, 999999.94, 3.0], dtype=np.float32)  # valid boxes


def boxes_and_scores(rng, n, width):
    """``n`` rows of ``width // 4`` valid boxes (``x1 <= x2``, ``y1 <= y2``) and a score in [0, 1]."""
    low = rng.uniform(0, 160, (n, width // 4, 2))
    boxes = np.concatenate([low, low + rng.uniform(0, 160, low.shape)], axis=2).reshape(n, -1)
    return np.column_stack([boxes, rng.uniform(0, 1, n)]).astype(np.float32)


def sample():
    rng = np.random.default_rng(0)
    tubelets = boxes_and_scores(rng, 4, 4 * K)
    tubelets[0, :8] = TRICKY_BOXES
    windows = {"v1": [Window((1, 4), {0: tubelets[:3], 2: tubelets[3:]}), Window((4, 7), {})]}
    frames = {"v2": np.array([[3, 1, 0.5, 1, 2, 3, 4], [3, 0, 0.25, 5, 6, 7, 8], [9, 2, 0.1, 1, 1, 2, 2]],
                             dtype=np.float32)}
    boxes = np.column_stack([np.arange(5, 9), boxes_and_scores(rng, 4, 4)]).astype(np.float32)
    tubes = {"v1": {1: [Tube(0, 1, float(np.float32(0.7)), boxes)]}}
    return Detections(K, 3, "stream", ("a", "b", "c"), windows, frames, tubes)


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz"])
def test_roundtrip_is_exact(tmp_path, name):
    original = sample()
    write_detections(tmp_path / name, original)
    again = read_detections(tmp_path / name)
    assert (again.K, again.clip_len, again.mode, again.labels) == (2, 3, "stream", ("a", "b", "c"))
    assert again.videos == ["v1", "v2"]
    for a, b in zip(again.windows["v1"], original.windows["v1"]):
        assert a.frames == b.frames and sorted(a.tubelets) == sorted(b.tubelets)
        for label in a.tubelets:
            assert a.tubelets[label].dtype == np.float32
            assert np.array_equal(a.tubelets[label], b.tubelets[label])
    assert np.array_equal(again.frames["v2"], original.frames["v2"])
    tube, before = again.tubes["v1"][1][0], original.tubes["v1"][1][0]
    assert tube.score == before.score and np.array_equal(tube.boxes, before.boxes)
    if name.endswith(".gz"):
        with gzip.open(tmp_path / name, "rt") as f:
            assert json.loads(f.readline())["format"] == "edge_stad.detections"


def test_numbers_are_short(tmp_path):
    with open_writer(tmp_path / "d.jsonl", K, 3, "stream", ["a"]) as w:
        w.window("v", (1, 4), {0: np.append(TRICKY, 0.5)[None]})
    line = (tmp_path / "d.jsonl").read_text().splitlines()[1]
    assert "[0,0.1,1e-08,123.456,0.33333334,3.4e+38,-0.0,1.6777216e+07,2.5,0.5]" in line.replace(" ", "")
    write_detections(tmp_path / "d.jsonl", sample())
    line = (tmp_path / "d.jsonl").read_text().splitlines()[1]
    assert "[0,1e-08,0.1,0.33333334,123.456,-0.0,2.5,999999.94,3.0," in line.replace(" ", "")


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "d.jsonl"
    with pytest.raises(RuntimeError):
        with open_writer(path, K, 3, "normal", ["a"]) as w:
            w.window("v", (1, 4), {0: np.zeros((1, 9), dtype=np.float32)})
            raise RuntimeError("run crashed")
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(DetectionsFormatError, match="values must be finite"):
        with open_writer(path, K, 3, "normal", ["a"]) as w:
            w.frame("v", 3, np.array([[0, np.nan, 1, 2, 3, 4]]))


HEADER = ('{"format": "edge_stad.detections", "version": 1, "K": 2, "clip_len": 3, "mode": "stream", '
          '"labels": ["a", "b"]}')


def _window(tubelets, frames="[1, 4]"):
    return f'{{"type": "window", "video": "v", "frames": {frames}, "tubelets": {tubelets}}}'


@pytest.mark.parametrize("lines, message", [
    (['{"format": "something", "version": 1}'], r":1: field 'format': expected 'edge_stad.detections'"),
    ([HEADER.replace('"version": 1', '"version": 2')], r":1: field 'version': this edge_stad reads version 1, got 2"),
    ([HEADER.replace('"stream"', '"fast"')], r":1: field 'mode': expected one of"),
    ([HEADER, '{"type": "window", "video": "v", "frames": [1, 4, 7], "tubelets": []}'],
     r":2: field 'frames': expected K=2 non-decreasing"),
    ([HEADER, '{"type": "window", "video": "v", "frames": [1, 4], "tubelets": [[0, 1, 2, 3, 4, 5, 6, 7, 8]]}'],
     r":2: field 'tubelets': rows must hold 10 numbers \(label, K boxes x1 y1 x2 y2, score\), got 9"),
    ([HEADER, '{"type": "window", "video": "v", "frames": [1, 4], "tubelets": [[5, 1, 2, 3, 4, 5, 6, 7, 8, 0.5]]}'],
     r":2: field 'tubelets': labels must be integers in \[0, 2\)"),
    ([HEADER, '{"type": "frame", "video": "v", "frame": 3, "detections": [[0, NaN, 1, 2, 3, 4]]}'],
     r":2: field 'detections': values must be finite"),
    ([HEADER, '{"type": "window", "video": "v", "frames": [4, 7], "tubelets": []}',
      '{"type": "window", "video": "v", "frames": [1, 4], "tubelets": []}'],
     r":3: field 'frames': window ending at frame 4 comes after the one ending at 7"),
    ([HEADER, '{"type": "tube", "video": "v", "label": 0, "score": 0.5, '
              '"boxes": [[1, 0, 0, 1, 1, 0.5], [3, 0, 0, 1, 1, 0.5]]}'],
     r":2: field 'boxes': a tube needs one row per frame"),
    ([HEADER, '{"type": "box", "video": "v"}'], r":2: field 'type': expected 'window', 'frame' or 'tube'"),
    ([HEADER, '{"type": "frame", "video": "v"'], r":2: field '-': not JSON"),
    ([], r"empty file"),
] + [([HEADER, _window(rows)], r":2: field 'tubelets': rows must be lists of 10 numbers") for rows in [
    '[[0, 1, 2, 3, 4, 5, 6, 7, 8, "0.5"]]', '[[0, "1", 2, 3, 4, 5, 6, 7, 8, 0.5]]',
    "[[0, 1, 2, 3, 4, 5, 6, 7, 8, true]]", "[[false, 1, 2, 3, 4, 5, 6, 7, 8, 0.5]]",
    "[[0, 1, 2, 3, 4, 5, 6, 7, 8, null]]",
    "[[[0, 1, 2, 3, 4, 5, 6, 7, 8, 0.5]]]", "[[0, 1, 2, 3, 4, 5, 6, 7, 8, 0.5], [0, 1]]", "[" * 60 + "]" * 60,
]] + [([HEADER, line], message) for line, message in [
    (_window("[[0, 1, 2, 3, 4, 5, 6, 7, 8, 1.5]]"), r":2: field 'tubelets': scores must lie in \[0, 1\]"),
    (_window("[[0, 1, 2, 3, 4, 5, 6, 7, 8, -0.01]]"), r":2: field 'tubelets': scores must lie in \[0, 1\]"),
    (_window("[[0, 3, 2, 1, 4, 5, 6, 7, 8, 0.5]]"), r":2: field 'tubelets': boxes must have x1 <= x2 and y1 <= y2"),
    (_window("[[0, 1, 2, 3, 4, 5, 9, 7, 8, 0.5]]"), r":2: field 'tubelets': boxes must have x1 <= x2 and y1 <= y2"),
    (_window("[[0, 1, 2, 1e30, 4, 5, 6, 7, 8, 0.5]]"), r":2: field 'tubelets': box coordinates must lie within"),
    (_window("[]", "[1, 9]"), r":2: field 'frames': .* at most clip_len=3 apart, got \[1, 9\]"),
    (_window("[]", "[99999999, 99999999]"), r":2: field 'frames': expected K=2 non-decreasing clip-end frames in"),
    ('{"type": "frame", "video": "v", "frame": 3, "detections": [[0, 2, 1, 2, 3, 4]]}',
     r":2: field 'detections': scores must lie in \[0, 1\]"),
    ('{"type": "frame", "video": "v", "frame": 3, "detections": [[0, 0.5, 1, 2, 0, 4]]}',
     r":2: field 'detections': boxes must have x1 <= x2"),
    ('{"type": "frame", "video": "v", "frame": 3, "detections": [[0, "0.5", 1, 2, 3, 4]]}',
     r":2: field 'detections': rows must be lists of 6 numbers"),
    ('{"type": "frame", "video": "v", "frame": 100000000, "detections": []}', r":2: field 'frame': must be in \[1, "),
    ('{"type": "tube", "video": "v", "label": 0, "score": 1.5, "boxes": [[1, 0, 0, 1, 1, 0.5]]}',
     r":2: field 'score': scores must lie in \[-1, 1\]"),
    ('{"type": "tube", "video": "v", "label": 0, "score": 0.5, "boxes": [[1, 0, 0, 1, 1, -1.5]]}',
     r":2: field 'boxes': scores must lie in \[-1, 1\]"),
    ('{"type": "tube", "video": "v", "label": 0, "score": 0.5, "boxes": [[1, 0, 0, 1e30, 1, 0.5]]}',
     r":2: field 'boxes': box coordinates must lie within"),
    ('{"type": "tube", "video": "v", "label": 0, "score": 0.5, "boxes": [[1, 0, 0, 1, 1, true]]}',
     r":2: field 'boxes': rows must be lists of 6 numbers"),
    (_window("[" * 100_000 + "]" * 100_000), r":2: field '-': nested too deeply"),
]] + [([HEADER.replace('"K": 2', '"K": 1000')], r":1: field 'K': must be in \[1, 32\]")])
def test_bad_files_name_line_and_field(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DetectionsFormatError, match=message):
        read_detections(path)
