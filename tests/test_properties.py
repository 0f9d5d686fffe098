"""Property-based tests (hypothesis) over what users and other people's files hand the SDK: frames, engine
manifests, checkpoint configs, ground-truth pickles and detections lines. Whatever comes in: a typed error or a
result, never another exception or a hang (each example has a deadline), never a file opened outside the engine
folder, and after any rejected frame the stream's results equal a clean run's bit for bit."""
import hashlib
import json
import os
import pickle
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_stad.data.annotations import load_gt, validate_gt
from edge_stad.errors import AnnotationError, CheckpointError, DetectionsFormatError, EngineError, FrameError
from edge_stad.eval.detections import read_detections
from edge_stad.model_config import check_model_config

FAST = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
SLOW = settings(max_examples=15, deadline=10000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

# No subnormal floats: a library loaded earlier in the test process (compiled with fast math) may flush them
# to zero, and hypothesis then refuses to generate them.
floats = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | floats | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


scalars = (st.floats(-1e3, 1e3, allow_subnormal=False) | floats | st.integers(-5, 400)
           | st.booleans() | st.none() | st.sampled_from(["0.5", "1", ""]))


def rows_of(width):
    """Lists of rows of about ``width`` scalars of any JSON type: numbers in and out of range, strings, booleans."""
    return st.lists(st.lists(scalars, min_size=width - 1, max_size=width + 1), max_size=3)


@st.composite
def mutated(draw, document):
    """``document`` (nested dicts and lists) with one to three values replaced by arbitrary JSON, a key removed,
    or a list entry dropped: what a careless or hostile writer makes of a valid file."""
    doc = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        path, node = [], doc
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            path.append(key)
            node = node[key]
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete"]))
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return doc


# -- checkpoint configs -------------------------------------------------------------------------------------

AMMA = {"name": "amma", "backbone": "shufflenetv2", "K": 3, "num_classes": 8, "clip_len": 5, "decoder": "conv",
        "fusion_stages": 3, "pairs": [[0, 4], [1, 4], [2, 4]], "mm_pool": True, "input_size": [128, 128],
        "head_conv": 256}
MENET = {"name": "menet-lite", "num_classes": 24, "input_size": [224, 224], "clip_len": 8,
         "backbone_3d": "shufflenetv2", "width_3d": 2.0, "non_local": False, "backbone_2d": "tiny", "srm_frames": 4,
         "srm_kernel": 7, "cfam_channels": 256, "num_anchors": 5, "anchors": [[0.7, 1.2]] * 5, "channels_2d": 1024}


@FAST
@given(st.one_of(mutated(AMMA), mutated(MENET), json_values))
def test_model_configs_pass_or_raise_the_typed_error(config):
    try:
        checked = check_model_config(config, CheckpointError, "m.pt")
    except CheckpointError as e:
        assert "m.pt: " in str(e)
    else:
        assert checked["name"] in ("amma", "menet", "menet-lite")
        h, w = checked["input_size"]
        assert 32 <= h <= 2048 and 32 <= w <= 2048 and 1 <= checked["num_classes"] <= 4096


@SLOW
@given(st.fixed_dictionaries({"version": json_values | st.just(1), "model_config": mutated(AMMA) | json_values,
                              "labels": json_values | st.just(["a"] * 8)}))
def test_checkpoint_headers_pass_or_raise_the_typed_error(header):
    torch = pytest.importorskip("torch")
    from edge_stad.models import read_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.pt")
        torch.save(dict(header, format="edge_stad.checkpoint", state_dict={"w": torch.zeros(1)}), path)
        try:
            read_checkpoint(path)
        except CheckpointError:
            pass


# -- ground-truth pickles ------------------------------------------------------------------------------------

def raw_gt():
    tube = [[f, 10.0, 20.0, 50.0, 60.0] for f in range(1, 6)]
    return {"labels": ["a", "b"], "gttubes": {"a/v1": {"0": [tube]}, "b/v2": {"1": [tube[1:]]}},
            "nframes": {"a/v1": 5, "b/v2": 7}, "train_videos": [["a/v1"]], "test_videos": [["b/v2"]],
            "resolution": {"a/v1": [240, 320], "b/v2": [240, 320]}}


def as_pickled_gt(doc):
    """JSON-shaped ``doc`` as the ACT pickle holds it: int label keys, tubes as NumPy arrays where they can be."""
    if isinstance(doc, dict) and isinstance(doc.get("gttubes"), dict):
        for per in doc["gttubes"].values():
            if isinstance(per, dict):
                for key in [k for k in per if isinstance(k, str) and k.isdigit()]:
                    per[int(key)] = per.pop(key)
    return doc


tubes_of_any_boxes = st.lists(st.lists(st.floats(-1e3, 1e3, allow_subnormal=False) | st.integers(-5, 400),
                                       min_size=4, max_size=4),
                              min_size=1, max_size=4).map(
    lambda boxes: [[f + 1] + box for f, box in enumerate(boxes)])   # frames right, boxes any numbers


@FAST
@given(st.one_of(mutated(raw_gt()), (rows_of(5) | tubes_of_any_boxes).map(
    lambda tube: dict(raw_gt(), gttubes={"a/v1": {"0": [tube]}, "b/v2": {}}))), st.booleans())
def test_ground_truth_pickles_pass_or_raise_the_typed_error(doc, as_file):
    doc = as_pickled_gt(doc)
    try:
        if as_file:
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "X-GT.pkl")
                with open(path, "wb") as f:
                    pickle.dump(doc, f, protocol=4)
                gt = load_gt(path)
        else:
            gt = validate_gt(doc)
    except AnnotationError:
        return
    for per in gt.gttubes.values():
        for tubes in per.values():
            for tube in tubes:
                assert tube.shape[1] == 5 and (tube[:, 1] <= tube[:, 3]).all() and (tube[:, 2] <= tube[:, 4]).all()


@FAST
@given(st.integers(1, 40), st.integers(2, 12), st.sampled_from([list, tuple]))
def test_shared_list_bombs_are_refused_in_bounded_time(levels, fanout, kind):
    tube = [[1.0, 10.0, 20.0, 50.0, 60.0]]
    for _ in range(levels):
        tube = kind([tube] * fanout)
    doc = as_pickled_gt(raw_gt())
    doc["gttubes"]["a/v1"][0] = [tube]
    try:
        validate_gt(doc)
    except AnnotationError as e:
        assert "nested more than" in str(e) or "expands to more than" in str(e) or "expected (n, 5) rows" in str(e)


# -- detections lines ----------------------------------------------------------------------------------------

HEADER = {"format": "edge_stad.detections", "version": 1, "K": 2, "clip_len": 3, "mode": "stream", "labels": ["a"]}
RECORDS = [{"type": "window", "video": "v", "frames": [1, 4], "tubelets": [[0, 1, 2, 30, 40, 2, 3, 31, 41, 0.5]]},
           {"type": "frame", "video": "v", "frame": 3, "detections": [[0, 0.5, 1, 2, 30, 40]]},
           {"type": "tube", "video": "v", "label": 0, "score": 0.5, "boxes": [[1, 1, 2, 30, 40, 0.5]]}]


numeric_records = st.one_of(
    rows_of(10).map(lambda rows: dict(RECORDS[0], tubelets=[[0] + r for r in rows])),
    rows_of(6).map(lambda rows: dict(RECORDS[1], detections=[[0] + r[1:] for r in rows])),
    st.tuples(scalars, rows_of(6)).map(lambda t: dict(RECORDS[2], score=t[0], boxes=[[1] + r[1:] for r in t[1][:1]])))


@FAST
@given(st.one_of(*(mutated(r) for r in RECORDS), numeric_records, json_values),
       st.one_of(st.just(HEADER), mutated(HEADER)))
def test_detections_lines_pass_or_raise_the_typed_error(record, header):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "d.jsonl")
        with open(path, "w") as f:
            f.write(json.dumps(header) + "\n" + json.dumps(record) + "\n")
        try:
            detections = read_detections(path)
        except DetectionsFormatError as e:
            assert str(e).startswith(path + ":")
            return
    tables = [rows for windows in detections.windows.values() for w in windows for rows in w.tubelets.values()]
    tables += [rows[:, [3, 4, 5, 6, 2]] for rows in detections.frames.values()]
    tables += [t.boxes[:, [1, 2, 3, 4, 5]] for per in detections.tubes.values() for ts in per.values() for t in ts]
    for rows in tables:   # boxes then a score, as float32
        boxes = rows[:, :-1].reshape(len(rows), (rows.shape[1] - 1) // 4, 4)
        assert np.isfinite(rows).all() and (np.abs(boxes) <= 1e6).all() and (rows[:, -1] <= 1).all()
        assert (boxes[..., 0] <= boxes[..., 2]).all() and (boxes[..., 1] <= boxes[..., 3]).all()


# -- engine manifests ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from model_helpers import tiny_model

    from edge_stad.build.pipeline import BuildOptions, build_engine

    out = tmp_path_factory.mktemp("property") / "engine"
    build_engine(tiny_model("shufflenetv2", K=2, size=64), out, BuildOptions(backend="onnxruntime"),
                 labels=("a", "b", "c", "d"), log=lambda _: None)
    return out


@st.composite
def hostile_manifests(draw, manifest, secret):
    """A mutated manifest, or one whose files, graphs or plans point outside the folder (``..``, absolute
    paths, the secret's true hash) or at names the test turns into links to the secret."""
    if draw(st.booleans()):
        return draw(mutated(manifest))
    doc = json.loads(json.dumps(manifest))
    data = open(secret, "rb").read()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    name = draw(st.sampled_from([os.path.relpath(secret, "/"), "../" + os.path.basename(secret), secret,
                                 "./head.onnx", "link.onnx", "linked/head.onnx", "head.onnx/..", "a//b"]))
    doc["files"][name] = entry
    field = draw(st.sampled_from(["graphs", "plans", "files"]))
    if field != "files":
        doc.setdefault(field, {})[draw(st.sampled_from(["encoder", "head"]))] = name
    return doc


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to see what a descriptor opened")
def test_manifests_never_open_a_file_outside_the_engine_folder(engine, tmp_path_factory, monkeypatch):
    from edge_stad.backends import open_backend

    root = tmp_path_factory.mktemp("hostile")
    secret = root / "secret.onnx"
    shutil.copyfile(engine / "head.onnx", secret)   # a graph that would load, were it reached
    manifest = json.loads((engine / "manifest.json").read_text())
    real_open, opened = os.open, []

    def recording_open(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        opened.append(os.readlink(f"/proc/self/fd/{fd}"))
        return fd

    @SLOW
    @given(hostile_manifests(manifest, str(secret)))
    def check(doc):
        folder = root / "engine"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(engine, folder)
        (folder / "link.onnx").symlink_to(secret)
        (folder / "linked").symlink_to(root)
        (folder / "manifest.json").write_text(json.dumps(doc))
        del opened[:]
        monkeypatch.setattr(os, "open", recording_open)
        try:
            open_backend(folder)
        except EngineError:
            pass
        finally:
            monkeypatch.setattr(os, "open", real_open)
        inside = os.path.realpath(folder)
        assert all(path == inside or path.startswith(inside + os.sep) for path in opened), opened

    check()


# -- frames --------------------------------------------------------------------------------------------------

def not_an_image(shape):
    """Shapes no camera gives: not HxW / HxWx{1,3,4}, or empty."""
    return len(shape) not in (2, 3) or 0 in shape or (len(shape) == 3 and shape[2] not in (1, 3, 4))


any_shape = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
garbage_frames = st.one_of(
    hnp.arrays(st.sampled_from([np.int16, np.bool_]), any_shape),
    hnp.arrays(np.float32, any_shape, elements=st.floats(width=32, allow_nan=True, allow_subnormal=False)),
    hnp.arrays(np.float64, any_shape, elements=floats),
    hnp.arrays(np.uint8, any_shape.filter(not_an_image)),
    hnp.arrays(np.uint8, st.sampled_from([(64, 64, 2), (0, 64, 3), (64, 64, 5), (2, 64, 64, 3), (20000, 1, 3)])),
    hnp.arrays(np.float32, (64, 64, 3), elements=st.sampled_from([np.nan, np.inf, 1.0])),
    st.none(), st.text(max_size=3), st.lists(st.integers(0, 255), max_size=3))


@pytest.mark.parametrize("pipeline", [False, 2])
def test_rejected_frames_leave_the_stream_bit_identical(engine, pipeline):
    from media import stream, video

    from edge_stad import Runtime

    frames = video(17, hw=(64, 64), seed=5)
    frames[8] = frames[8][:48, :80].copy()   # one of another size
    clean = Runtime(engine, min_tube_score=0.0, frame_detections=True, pipeline=pipeline)
    expected = [r for _, r in stream(clean, frames)]
    clean.close()

    @SLOW
    @given(st.lists(st.tuples(st.integers(0, len(frames) - 1), garbage_frames), max_size=6))
    def check(bad):
        runtime = Runtime(engine, min_tube_score=0.0, frame_detections=True, pipeline=pipeline)
        got, bad_before = [], {}
        for at, frame in bad:
            bad_before.setdefault(at, []).append(frame)
        for i, frame in enumerate(frames):
            for rejected in bad_before.get(i, []):
                try:
                    got += runtime.push(rejected)
                except FrameError:
                    continue
                raise AssertionError(f"accepted {type(rejected).__name__} {getattr(rejected, 'shape', '')}")
            got += runtime.push(frame, timestamp=(i + 1) / 25)
        got += runtime.flush()
        runtime.close()
        assert [(r.frame, r.timestamp) for r in got] == [(r.frame, r.timestamp) for r in expected]
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a.tubes, b.tubes)
            np.testing.assert_array_equal(a.detections, b.detections)

    check()

