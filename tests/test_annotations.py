"""ACT ground-truth files: safe unpickling (incl. Python 2 / NumPy 1.x pickles), JSON twin, validation."""
import os
import pickle

import numpy as np
import pytest

from edge_stad.data.annotations import load_gt, validate_gt, write_gt_json
from edge_stad.errors import AnnotationError, UnsafePickleError


def raw_gt():
    tube = np.array([[f, 10, 20, 50, 60] for f in range(1, 6)], dtype=np.float32)
    return {
        "labels": ["brush_hair", "catch"],
        "gttubes": {"a/v1": {0: [tube.copy()]}, "b/v2": {1: [tube[1:].copy(), tube[1:] + [0, 5, 5, 5, 5]]}},
        "nframes": {"a/v1": 5, "b/v2": np.int64(7)},
        "train_videos": [["a/v1"]],
        "test_videos": [["b/v2"]],
        "resolution": {"a/v1": (240, 320), "b/v2": (240, 320)},
    }


def check_loaded(gt):
    assert gt.labels == ["brush_hair", "catch"]
    assert gt.nframes == {"a/v1": 5, "b/v2": 7}
    assert gt.test_videos == [["b/v2"]]
    assert gt.resolution["b/v2"] == (240, 320)
    tubes = gt.gttubes["b/v2"][1]
    assert len(tubes) == 2 and tubes[0].dtype == np.float64
    np.testing.assert_array_equal(tubes[1][0], [2, 15, 25, 55, 65])


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pickle_roundtrip(tmp_path, protocol):
    path = tmp_path / "X-GT.pkl"
    path.write_bytes(pickle.dumps(raw_gt(), protocol=protocol))
    check_loaded(load_gt(path))


def _py2_array(values):
    """A float64 array spelled as Python 2 with NumPy 1.x pickles it (protocol 0, latin-1 str data)."""
    data = "".join(f"\\x{b:02x}" for b in np.asarray(values, dtype="<f8").tobytes())
    rows, cols = np.shape(values)
    return (f"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntS'b'\ntR(I1\n(I{rows}\nI{cols}\ntcnumpy\n"
            f"dtype\n(S'f8'\nI0\nI1\ntR(I3\nS'<'\nNNNI-1\nI-1\nI0\ntbI00\nS'{data}'\ntb")


def test_python2_numpy1_pickle_loads(tmp_path):
    tube = [[1, 1.5, 2, 30, 40], [2, 2.5, 3, 31, 41]]
    text = ("(dS'labels'\n(lS'jump'\naS'run'\nas"
            "S'gttubes'\n(dS'v'\n(dI1\n(l" + _py2_array(tube) + "asss"
            "S'nframes'\n(dS'v'\nI2\nss"
            "S'train_videos'\n(l(las"
            "S'test_videos'\n(l(lS'v'\naas"
            "S'resolution'\n(dS'v'\n(I240\nI320\ntss.")
    path = tmp_path / "Py2-GT.pkl"
    path.write_bytes(text.encode("latin-1"))
    gt = load_gt(path)
    assert gt.labels == ["jump", "run"] and gt.test_videos == [["v"]]
    np.testing.assert_array_equal(gt.gttubes["v"][1][0], tube)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, ("touch " + self.marker,)


def test_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = str(tmp_path / "pwned")
    raw = raw_gt()
    raw["labels"] = _RunsCode(marker)
    path = tmp_path / "Evil-GT.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|nt|os)\.system"):
        load_gt(path)
    assert not os.path.exists(marker)
    # the same for the classic NumPy gadget and for builtins.eval
    for payload in (b"cnumpy.testing._private.utils\nrunstring\n(S'1'\n(dtR.", b"cbuiltins\neval\n(S'1+1'\ntR."):
        path.write_bytes(payload)
        with pytest.raises(UnsafePickleError, match="runstring|builtins.eval"):
            load_gt(path)


def test_damaged_pickle_is_an_annotation_error(tmp_path):
    path = tmp_path / "X-GT.pkl"
    path.write_bytes(pickle.dumps(raw_gt(), protocol=4)[:-40])
    with pytest.raises(AnnotationError, match="cannot read ground truth"):
        load_gt(path)


def test_json_roundtrip(tmp_path):
    gt = validate_gt(raw_gt())
    write_gt_json(tmp_path / "X-GT.json", gt)
    again = load_gt(tmp_path / "X-GT.json")
    check_loaded(again)
    assert again.gttubes["a/v1"][0][0].tolist() == gt.gttubes["a/v1"][0][0].tolist()


def tube_b(r):
    return r["gttubes"]["b/v2"][1][0]  # frames 2..6 of a 7-frame video


@pytest.mark.parametrize("edit, message", [
    (lambda r: tube_b(r).__setitem__((3, 0), 9), r"video 'b/v2' label 1 tube 0: frames 2\.\.9 .*\[1, 7\]"),
    (lambda r: tube_b(r).__setitem__((1, 3), np.nan), r"video 'b/v2' label 1 tube 0: non-finite .*frame 3"),
    (lambda r: tube_b(r).__setitem__((2, 0), 7), r"tube 0: frames must be consecutive, frame 3 is followed by 7"),
    (lambda r: r["gttubes"]["b/v2"].__setitem__(5, []), r"video 'b/v2': label 5 is not an index into the 2 labels"),
    (lambda r: r["nframes"].__setitem__("a/v1", 0), r"video 'a/v1': field 'nframes' must be an int in \[1, 10000000\]"),
    (lambda r: r["nframes"].__setitem__("a/v1", 10 ** 12), r"video 'a/v1': field 'nframes' .* got 1000000000000"),
    (lambda r: tube_b(r).__setitem__((1, 1), 70), r"video 'b/v2' label 1 tube 0: the box of frame 3 has x1 > x2"),
    (lambda r: tube_b(r).__setitem__((1, 4), 10), r"video 'b/v2' label 1 tube 0: the box of frame 3 has .*y1 > y2"),
    (lambda r: tube_b(r).__setitem__((0, 3), 400), r"tube 0: the box of frame 2 .* outside the 320x240 \(w x h\)"),
    (lambda r: tube_b(r).__setitem__((0, 1), -1e30), r"tube 0: the box of frame 2 .* outside the 320x240"),
    (lambda r: r.pop("resolution"), r"missing keys \['resolution'\]"),
    (lambda r: r["test_videos"][0].append("c/v3"), r"test_videos split 1: video 'c/v3' has no nframes"),
    (lambda r: r["gttubes"]["a/v1"][0].__setitem__(0, np.zeros((3, 4))), r"expected \(n, 5\) rows"),
])
def test_validation_names_what_is_wrong(edit, message):
    raw = raw_gt()
    edit(raw)
    with pytest.raises(AnnotationError, match=message):
        validate_gt(raw, "X-GT.pkl")


def test_boxes_a_little_past_the_border_are_kept():
    raw = raw_gt()
    tube_b(raw)[0, 1:] = [-20, -10, 340, 250]   # drawn past the frame, within a tenth of its side
    assert validate_gt(raw).gttubes["b/v2"][1][0][0, 1] == -20


def shared_lists_bomb(levels, fanout=10):
    """A tube of ``fanout ** levels`` rows built from one row shared by reference: a few hundred bytes
    pickled, ``5 * fanout ** levels`` numbers once NumPy copies it."""
    tube = [[1.0, 10.0, 20.0, 50.0, 60.0]]
    for _ in range(levels):
        tube = [tube] * fanout
    return tube


def test_a_pickle_of_shared_lists_is_refused_fast_and_in_bounded_memory(tmp_path):
    import time
    import tracemalloc

    raw = raw_gt()
    raw["gttubes"]["a/v1"][0] = [shared_lists_bomb(7), shared_lists_bomb(7)]   # 10^8 numbers, 800 MB as float64
    path = tmp_path / "Bomb-GT.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=4))
    assert path.stat().st_size < 16_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(AnnotationError, match=r"Bomb-GT.pkl: \['gttubes'\]\['a/v1'\]\[0\]\[0\]: expands to "
                                                  r"more than 50000000 elements"):
            load_gt(path)
        seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1 and peak < 20 * 2 ** 20


def test_deep_nesting_and_cycles_are_refused(tmp_path):
    raw = raw_gt()
    deep = [1.0]
    for _ in range(17):
        deep = [deep]
    raw["gttubes"]["a/v1"][0] = [deep]
    path = tmp_path / "Deep-GT.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=4))
    with pytest.raises(AnnotationError, match=r"Deep-GT.pkl: \['gttubes'\]\['a/v1'\]\[0\]\[0\](\[0\])*: nested "
                                              r"more than 16 levels deep"):
        load_gt(path)
    # 100,000 levels, written opcode by opcode (pickle.dumps itself would recurse too deep)
    depth = 100_000
    path.write_bytes(b"\x80\x02" + b"]" * depth + b"G?\xf0\x00\x00\x00\x00\x00\x00" + b"a" * depth + b".")
    with pytest.raises(AnnotationError, match=r"Deep-GT.pkl: (\[0\])+: nested more than 16 levels deep"):
        load_gt(path)
    cycle = raw_gt()
    loop = []
    loop.append(loop)
    cycle["gttubes"]["a/v1"][0] = [loop]
    with pytest.raises(AnnotationError, match="nested more than 16 levels"):
        validate_gt(cycle)
