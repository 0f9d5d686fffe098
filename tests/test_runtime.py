"""edge_stad.Runtime: streaming equals the offline evaluation path; latency, multi-stream, threads, bad input."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from engine_helpers import broken_copies  # noqa: E402
from media import faststart, stream, video, write_video  # noqa: E402
from model_helpers import tiny_model  # noqa: E402
from stream_checks import assert_stream_equals_offline  # noqa: E402
from synth_data import tiny_synth  # noqa: E402

from edge_stad import Runtime  # noqa: E402
from edge_stad.core.linking import ENDED  # noqa: E402
from edge_stad.errors import ConfigError, EngineError, FrameError  # noqa: E402
from edge_stad.eval.predict import predict_windows  # noqa: E402

K, N = 3, 5


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return tiny_engine(("a", "b", "c", "d"))   # K = 3


class FrameList:
    """The dataset interface predict_windows reads, over frames held in memory."""

    def __init__(self, frames):
        self.frames = frames
        gt = type("GT", (), {})()
        gt.nframes = {"v": len(frames)}
        gt.resolution = {"v": frames[0].shape[:2]}
        self.gt = gt

    def read_frame(self, name, f):
        return self.frames[f - 1]


class Delegating:
    """An engine's backend (with in-graph decode) behind a wrapper that tests override."""

    kind, decodes_in_graph, device_resident, link_matrices, manifest, labels = "tubelet", True, False, None, None, ()

    def __init__(self, backend):
        self.backend, self.config = backend, backend.config

    def encode(self, frames):
        return self.backend.encode(frames)

    def detect(self, feats, whs):
        return self.backend.detect(feats, whs)


def check_against_offline(engine, frames, dataset=None, name="v", pipeline=False):
    """Stream ``frames`` and compare windows, tubes and per-frame detections with the offline path."""
    nframes = len(frames)
    runtime = Runtime(engine, min_tube_score=0.0, frame_detections=True, pipeline=pipeline)
    results = [r for _, r in stream(runtime, frames)]
    runtime.close()
    assert [r.frame for r in results] == list(range(1, nframes + 1))
    assert [r.timestamp for r in results] == pytest.approx([f / 25 for f in range(1, nframes + 1)])
    if nframes < N:  # too short for one clip: every frame final, nothing detected (offline refuses it)
        assert not runtime.windows() and all(len(r.tubes) == len(r.detections) == 0 for r in results)
        return {}
    offline = predict_windows(runtime.backend, dataset or FrameList(frames), name)
    return assert_stream_equals_offline(runtime, results, offline, K, N)


@pytest.mark.parametrize("nframes", [4, 5, 7, 11, 13, 14, 15, 16, 19, 20, 37])
def test_stream_equals_the_offline_evaluation_path(engine, nframes):
    check_against_offline(engine, video(nframes, seed=nframes))


@pytest.mark.parametrize("nframes, depth", [(4, True), (14, True), (16, True), (20, 1), (37, 1), (16, 2), (37, 2),
                                            (37, 3)])
def test_pipelined_stream_equals_the_offline_evaluation_path(engine, nframes, depth):
    check_against_offline(engine, video(nframes, seed=nframes), pipeline=depth)


def _same_results(got, expected):
    assert [(r.stream, r.frame, r.timestamp) for r in got] == [(r.stream, r.frame, r.timestamp) for r in expected]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.tubes, b.tubes)
        np.testing.assert_array_equal(a.detections, b.detections)


def test_pipelined_runtime_gives_the_same_results_one_window_later(engine):
    frames = video(53, seed=11)
    plain = Runtime(engine, min_tube_score=0.0, frame_detections=True)
    expected = stream(plain, frames)
    with Runtime(engine, min_tube_score=0.0, frame_detections=True, pipeline=True) as piped:
        got = stream(piped, frames)
        assert piped.latency_frames == tuple(x + N for x in plain.latency_frames)
        _same_results([r for _, r in got], [r for _, r in expected])
        events = [[e[:4] + (e.tube is not None,) for _, e in r.events()] for r in (piped, plain)]
        assert events[0] == events[1]   # same order, same tube ids
        lo, hi = piped.latency_frames
        running = [(i, r.frame) for i, r in got if i <= len(frames) and r.frame > N]
        assert running and all(lo <= i - f <= hi for i, f in running)
        assert any(i - f > plain.latency_frames[1] for i, f in running)   # results really come later
        stats = piped.stats()
        assert stats["windows"] == plain.stats()["windows"] and stats["queue_depth"] == 0
        piped.push(frames[0])
    assert piped._stepper.worker is None   # closed: the Runtime runs on
    assert [r.frame for r in piped.flush()] == [1]


def test_pipelined_push_batch_reset_and_flush_of_one_stream(engine):
    cams = [video(31, seed=s) for s in (12, 13)]

    def run(pipeline):
        runtime = Runtime(engine, streams=2, min_tube_score=0.0, pipeline=pipeline)
        out, before_reset = [], 0
        for t, pair in enumerate(zip(*cams)):
            out += runtime.push_batch([None if t % 7 == 3 and s else f for s, f in enumerate(pair)])
            if t == 16:   # stream 1's first window has just run (pipelined: is in flight)
                runtime.reset(1)   # stream 1 starts over with the next frame
                before_reset = sum(r.stream for r in out)
        out += runtime.flush(0)
        for frame in cams[0][:12]:
            out += runtime.push(frame, stream=0)
        out += runtime.flush()
        runtime.close()
        return [r for r in out if r.stream == 0], [r for r in out if r.stream == 1], before_reset

    piped, plain = run(True), run(False)
    _same_results(piped[0], plain[0])
    # reset drops the pending frames: pipelined, those of the window in flight too
    assert piped[2] < plain[2]
    _same_results(piped[1][:piped[2]], plain[1][:piped[2]])
    _same_results(piped[1][piped[2]:], plain[1][plain[2]:])


def test_pipelined_runtimes_lower_the_switch_interval_while_open(engine):
    before = sys.getswitchinterval()
    first = Runtime(engine, pipeline=True)
    second = Runtime(engine, pipeline=True)
    assert sys.getswitchinterval() == min(before, 0.0005)
    first.close()
    first.close()   # closing twice releases once
    assert sys.getswitchinterval() == min(before, 0.0005)   # the second is still open
    second.close()
    assert sys.getswitchinterval() == before
    Runtime(engine).close()   # a sequential Runtime leaves it alone
    assert sys.getswitchinterval() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice levels are Linux's")
def test_pipeline_workers_run_below_the_callers_priority(engine):
    from edge_stad.runtime.steppers import WORKER_NICE

    class Recording(Delegating):
        """The engine's backend, recording the nice level its encoder calls run at."""

        def __init__(self, backend):
            super().__init__(backend)
            self.nice = set()

        def encode(self, frames):
            self.nice.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return super().encode(frames)

    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    recording = Recording(Runtime(engine).backend)
    for depth in (0, 2):
        recording.nice.clear()
        with Runtime(recording, pipeline=depth) as runtime:
            stream(runtime, video(40))
        assert recording.nice == {min(19, caller + WORKER_NICE) if depth else caller}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller   # the caller's is untouched


def test_session_threads_and_spinning(engine):
    # the caller's thread decodes and links between engine calls: ONNX Runtime's pool must not spin
    # on the core it needs, and a pipelined Runtime leaves that core to it
    for pipeline, threads in ((False, 2), (True, max(1, os.cpu_count() - 1))):   # pipeline_threads()
        runtime = Runtime(engine, "onnxruntime", threads=2 if not pipeline else None, pipeline=pipeline)
        for session in (runtime.backend.encoder, runtime.backend.head_session):
            options = session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
            assert options.intra_op_num_threads == threads
        runtime.close()


def test_pipeline_errors(engine):
    class Failing(Delegating):
        """The engine's backend, its encoder failing at the calls ``failing``."""

        def __init__(self, backend, failing):
            super().__init__(backend)
            self.calls, self.failing = 0, failing

        def encode(self, frames):
            self.calls += 1
            if self.calls in self.failing:
                raise EngineError("encoder failed")
            return super().encode(frames)

    backend = Runtime(engine).backend
    for depth in (1, 2):
        runtime = Runtime(Failing(backend, range(3, 100)), pipeline=depth)
        with pytest.raises(EngineError, match="encoder failed"):   # raised in the worker, surfaces here
            for frame in video(40):
                runtime.push(frame)
        runtime.close()   # the other call in flight failed too: dropped, not raised again
    # one failed call: its windows are lost, the stream goes on (the next window encodes the clips it lacks)
    frames = video(60, seed=3)
    runtime, failed, results = Runtime(Failing(backend, {3}), pipeline=2), 0, []
    for frame in frames:
        try:
            results += runtime.push(frame)
        except EngineError:
            failed += 1
    results += runtime.flush()
    runtime.close()
    assert failed == 1 and [r.frame for r in results] == list(range(1, 61))
    plain = Runtime(backend)
    stream(plain, frames)
    expected = [w for _, w in plain.windows()]
    got = [w for _, w in runtime.windows()]
    lost = [w.frames for w in expected if w.frames not in [g.frames for g in got]]
    # lost: the window of the failed (third) call, the one in flight behind it, the one of the push that raised
    assert lost == [w.frames for w in expected[2:5]] and len(got) == len(expected) - 3
    for mine, ref in zip(got[2:], expected[5:]):   # later windows: the same tubelets
        assert mine.frames == ref.frames and sorted(mine.tubelets) == sorted(ref.tubelets)
        for label in ref.tubelets:
            np.testing.assert_array_equal(mine.tubelets[label], ref.tubelets[label])
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ConfigError, match="pipeline must be a bool or the number of windows"):
            Runtime(backend, pipeline=bad)
    frame_model = type("FrameBackend", (), {"config": {"clip_len": N, "input_size": (64, 64), "num_classes": 2},
                                            "kind": "frame", "manifest": None, "labels": ()})()
    with pytest.raises(ConfigError, match="pipeline=True needs a tubelet"):
        Runtime(frame_model, pipeline=True)


def test_synthetic_test_videos_stream_like_the_evaluation_path(engine, tmp_path_factory):
    from edge_stad.data.act import ActDataset

    dataset = ActDataset(tiny_synth(tmp_path_factory), split=1)
    tubes = 0
    for name in dataset.gt.test_videos[0][:3]:
        frames = [dataset.read_frame(name, f) for f in range(1, dataset.gt.nframes[name] + 1)]
        tubes += sum(len(t) for t in check_against_offline(engine, frames, dataset, name).values())
    assert tubes > 0


def test_per_frame_tube_boxes_are_the_finished_tubes_boxes(engine):
    runtime = Runtime(engine, min_tube_score=0.0)
    results = [r for _, r in stream(runtime, video(60, seed=3))]
    finished = {t.tube_id: t for _, t in runtime.tubes()}
    assert finished
    matched = 0
    for result in results:
        for row in result.tubes:
            tube = finished.get(int(row[0]))
            if tube is None:
                continue  # an open tube that was later dropped by the filters (too short or weak)
            at = result.frame - int(tube.boxes[0, 0])
            np.testing.assert_allclose(row[3:], tube.boxes[at, 1:5], rtol=0, atol=1e-4)
            assert int(row[1]) == tube.label
            matched += 1
    covered = sum(len(t.boxes) for t in finished.values())
    assert matched >= 0.9 * covered  # all but frames in gaps a tube bridged later


def test_latency_and_stats(engine):
    runtime = Runtime(engine)
    pushed = stream(runtime, video(60))
    lo, hi = runtime.latency_frames
    assert (lo, hi) == ((K - 1) * N, K * N - 1)
    running = [(i, r.frame) for i, r in pushed if i <= 60 and r.frame > N]
    assert running and all(lo <= i - f <= hi for i, f in running)
    stats = runtime.stats()
    assert stats["frames"] == 60 and stats["queue_depth"] == 0
    assert stats["windows"] == len(range(11, 60, N)) + 1            # every clip_len frames, plus the last frame
    assert stats["clips_encoded"] == stats["windows"] + K - 1       # each clip encoded once
    assert set(stats["ms_per_frame"]) == {"preprocess", "encoder", "head", "decode", "link", "results"}
    assert stats["fps"] > 0


def test_new_stream_after_flush_and_reset_gives_the_same_results_with_new_ids(engine):
    frames = video(30, seed=5)
    fresh = Runtime(engine, min_tube_score=0.0)
    reference = [r for _, r in stream(fresh, frames)]
    runtime = Runtime(engine, min_tube_score=0.0)
    for frame in video(12, seed=9):
        runtime.push(frame)
    runtime.reset()
    stream(runtime, video(17, seed=8))
    ids_before = {e.tube_id for _, e in runtime.events()}
    again = [r for _, r in stream(runtime, frames)]
    ids_after = {e.tube_id for _, e in runtime.events()}
    assert ids_before and ids_after and not ids_before & ids_after
    assert [r.frame for r in again] == [r.frame for r in reference]
    for a, b in zip(again, reference):
        np.testing.assert_array_equal(a.tubes[:, 1:], b.tubes[:, 1:])


def test_push_batch_serves_several_cameras_like_separate_runtimes(engine):
    cams = [video(26, seed=s) for s in (1, 2)]
    separate = [[r for _, r in stream(Runtime(engine, min_tube_score=0.0), frames)] for frames in cams]
    runtime = Runtime(engine, streams=2, min_tube_score=0.0)
    together = []
    for pair in zip(*cams):
        together += runtime.push_batch(list(pair))
    together += runtime.flush()
    for s in (0, 1):
        mine = [r for r in together if r.stream == s]
        assert [r.frame for r in mine] == [r.frame for r in separate[s]]
        for a, b in zip(mine, separate[s]):
            np.testing.assert_allclose(a.tubes[:, 2:], b.tubes[:, 2:], atol=1e-5)
    with pytest.raises(ConfigError, match="one frame per stream"):
        runtime.push_batch([cams[0][0]])
    with pytest.raises(ConfigError, match="stream must be"):
        runtime.push(cams[0][0], stream=2)


def test_runtimes_in_threads_and_one_runtime_shared_by_threads(engine):
    cams = [video(24, seed=s) for s in range(3)]
    expected = [[r.tubes for _, r in stream(Runtime(engine, min_tube_score=0.0), f)] for f in cams]
    out = [None] * 3

    def own(i):
        out[i] = [r.tubes for _, r in stream(Runtime(engine, threads=1, min_tube_score=0.0), cams[i])]

    shared = Runtime(engine, streams=3, threads=1, min_tube_score=0.0)
    shared_out = [None] * 3

    def share(i):
        shared_out[i] = [r.tubes for _, r in stream(shared, cams[i], stream_id=i)]

    for target in (own, share):
        workers = [threading.Thread(target=target, args=(i,)) for i in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    for i in range(3):
        for got in (out[i], shared_out[i]):
            assert len(got) == len(expected[i])
            for a, b in zip(got, expected[i]):
                np.testing.assert_allclose(a[:, 1:], b[:, 1:], atol=1e-5)


BAD_FRAMES = [
    (np.zeros((64, 64, 3), np.float32), "dtype is float32, expected uint8"),
    (np.full((64, 64, 3), np.nan, np.float32), "NaN or inf"),
    (np.zeros((64, 64, 3), np.int16), "dtype is int16"),
    (np.zeros((0, 64, 3), np.uint8), "empty frame"),
    (np.zeros((64, 64, 2), np.uint8), "expected HxWx3"),
    (np.zeros((4, 64, 64, 3), np.uint8), "expected HxWx3"),
    (np.zeros((20000, 8, 3), np.uint8), "larger than"),
    ([[1, 2, 3]], "NumPy array"),
    (None, "NumPy array"),
]


def test_bad_inputs_raise_their_errors_and_leave_the_stream_intact(engine):
    frames = video(22, seed=4)
    reference = [r for _, r in stream(Runtime(engine, min_tube_score=0.0), frames)]
    runtime = Runtime(engine, min_tube_score=0.0)
    got = []
    for i, frame in enumerate(frames):
        bad, message = BAD_FRAMES[i % len(BAD_FRAMES)]
        with pytest.raises(FrameError, match=message):
            runtime.push(bad)
        with pytest.raises(FrameError, match="timestamp"):
            runtime.push(frame, timestamp=float("nan") if i % 2 else "noon")
        got += runtime.push(frame, timestamp=(i + 1) / 25)
    got += runtime.flush()
    assert [r.frame for r in got] == [r.frame for r in reference]
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a.tubes, b.tubes)


def test_gray_bgra_non_contiguous_and_resized_frames(engine):
    frames = video(20, seed=6)
    reference = [r for _, r in stream(Runtime(engine, min_tube_score=0.0), frames)]
    gray = [np.repeat(f[:, :, 1:2], 3, axis=2) for f in frames]
    gray_ref = [r for _, r in stream(Runtime(engine, min_tube_score=0.0), gray)]
    for variant in ([f[:, :, 1] for f in frames], [f[:, :, 1:2] for f in frames]):
        got = [r for _, r in stream(Runtime(engine, min_tube_score=0.0), variant)]
        for a, b in zip(got, gray_ref):
            np.testing.assert_array_equal(a.tubes, b.tubes)
    for variant in ([np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]) for f in frames],   # BGRA
                    [np.asfortranarray(f) for f in frames],                                  # non-contiguous
                    [np.ascontiguousarray(np.pad(f, ((0, 0), (0, 4), (0, 0)))[:, :-4]) for f in frames]):
        got = [r for _, r in stream(Runtime(engine, min_tube_score=0.0), variant)]
        for a, b in zip(got, reference):
            np.testing.assert_array_equal(a.tubes, b.tubes)
    # A frame of another size: same content, boxes in its own pixels.
    import cv2

    twice = [cv2.resize(f, (192, 144), interpolation=cv2.INTER_NEAREST) if i % 2 else f for i, f in enumerate(frames)]
    got = [r for _, r in stream(Runtime(engine, min_tube_score=0.0), twice)]
    scaled = [r for r in got if r.frame % 2 == 0 and len(r.tubes)]
    assert scaled
    for r in scaled:
        assert r.tubes[:, 3:].max() <= 191 and r.tubes[:, [3, 5]].max() > 95  # beyond the first frame's width


@pytest.mark.parametrize("pipeline", [False, 2])
@pytest.mark.parametrize("hw", [(64, 64), (72, 96)])   # the engine's input size (resize is the identity), another
def test_a_reused_frame_buffer_gives_the_results_of_fresh_arrays(engine, hw, pipeline):
    frames = video(23, hw=hw, seed=8)
    fresh = Runtime(engine, min_tube_score=0.0, frame_detections=True, pipeline=pipeline)
    expected = [r for _, r in stream(fresh, frames)]
    fresh.close()
    runtime = Runtime(engine, min_tube_score=0.0, frame_detections=True, pipeline=pipeline)
    buffer = np.empty(hw + (3,), np.uint8)   # as cap.read(buffer) and camera SDKs fill one array
    got = []
    for i, frame in enumerate(frames, start=1):
        buffer[...] = frame
        got += runtime.push(buffer, timestamp=i / 25)
        buffer[...] = 0   # the caller reuses it at once
    got += runtime.flush()
    runtime.close()
    assert any(len(r.tubes) for r in expected)
    _same_results(got, expected)
    assert [w.frames for _, w in runtime.windows()] == [w.frames for _, w in fresh.windows()]


@pytest.mark.parametrize("pipeline", [False, 2])
def test_long_tubes_come_out_in_segments_without_changing_any_frame_result(engine, pipeline):
    from edge_stad.core.linking import SEGMENT

    frames = video(90, hw=(64, 64), seed=13)
    runs = {}
    for segment in (None, 2 * K * N):
        runtime = Runtime(engine, min_tube_score=0.0, pipeline=pipeline, segment_frames=segment)
        runs[segment] = ([r for _, r in stream(runtime, frames)], runtime.events(), runtime.tubes())
        runtime.close()
    (whole, whole_events, whole_tubes), (parts, part_events, part_tubes) = runs[None], runs[2 * K * N]
    assert [(r.frame, r.timestamp) for r in parts] == [(r.frame, r.timestamp) for r in whole]
    for a, b in zip(parts, whole):   # every frame's tubes: ids, labels and boxes bit for bit; the score of a
        np.testing.assert_array_equal(a.tubes[:, [0, 1, 3, 4, 5, 6]], b.tubes[:, [0, 1, 3, 4, 5, 6]])
        np.testing.assert_allclose(a.tubes[:, 2], b.tubes[:, 2], rtol=1e-6)   # segmented tube: its running mean
    assert [e[:4] for _, e in part_events if e.kind != SEGMENT] == [e[:4] for _, e in whole_events]
    pieces = {}
    for _, tube in part_tubes:
        pieces.setdefault(tube.tube_id, []).append(tube.boxes)
    assert any(len(p) > 1 for p in pieces.values())
    for _, tube in whole_tubes:
        np.testing.assert_array_equal(np.concatenate(pieces[tube.tube_id]), tube.boxes)


def test_engine_checks(engine, tmp_path):
    tampered, other = broken_copies(engine, tmp_path)
    with pytest.raises(EngineError, match="sha256"):
        Runtime(tampered)
    with pytest.raises(EngineError, match="format version 99"):
        Runtime(other)
    with pytest.raises(EngineError, match="not an engine folder"):
        Runtime(tmp_path)
    with pytest.raises(ConfigError, match="backend must be one of"):
        Runtime(engine, backend="cuda")
    with pytest.raises(ConfigError, match="checkpoint file"):
        Runtime(engine, backend="torch")


def test_torch_backend_from_a_checkpoint(engine, tmp_path):
    from edge_stad.models import save_checkpoint

    model = tiny_model("shufflenetv2", K=K, size=64)
    save_checkpoint(tmp_path / "m.pt", model, labels=["a", "b", "c", "d"])
    frames = video(21, seed=7)
    torch_results = [r for _, r in stream(Runtime(tmp_path / "m.pt", min_tube_score=0.0), frames)]
    onnx_results = [r for _, r in stream(Runtime(engine, min_tube_score=0.0), frames)]
    assert Runtime(tmp_path / "m.pt").labels == ("a", "b", "c", "d")
    assert sum(len(r.tubes) for r in torch_results) > 0
    for a, b in zip(torch_results, onnx_results):
        assert a.tubes.shape == b.tubes.shape
        np.testing.assert_allclose(a.tubes[:, 2:], b.tubes[:, 2:], atol=1e-3)


def test_runtime_runs_without_torch(engine):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from edge_stad import Runtime\n"
            "import edge_stad.kernels.ops, edge_stad.kernels.loader  # the GPU path's host side is torch-free too\n"
            f"rt = Runtime({str(engine)!r})\n"
            "frames = [np.full((48, 64, 3), i * 9 % 256, np.uint8) for i in range(17)]\n"
            "n = sum(len(rt.push(f)) for f in frames) + len(rt.flush())\n"
            "loaded = {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n"
            "print(n, sorted(loaded & {'torch', 'onnx'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[0] == "17 []"


def test_events_tell_the_tube_story(engine):
    runtime = Runtime(engine)
    stream(runtime, video(40, seed=2))
    events = [e for _, e in runtime.events()]
    started = {e.tube_id for e in events if e.kind == "started"}
    ended = {e.tube_id for e in events if e.kind == ENDED}
    assert started and started == ended  # flush ends every tube
    kept = {t.tube_id for _, t in runtime.tubes()}
    assert kept == {e.tube_id for e in events if e.kind == ENDED and e.tube is not None}
    assert runtime.events() == [] and runtime.tubes() == []  # drained


def test_run_command_writes_video_and_detections(engine, tmp_path, capsys):
    import cv2

    from edge_stad import cli
    from edge_stad.eval.detections import read_detections

    folder = tmp_path / "frames"
    folder.mkdir()
    frames = video(23, seed=11)
    for i, frame in enumerate(frames, start=1):
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    offline = predict_windows(Runtime(engine).backend, FrameList(frames), "v")
    for extra in ([], ["--pipeline"], ["--pipeline", "2"]):
        out, jsonl = tmp_path / "annotated.mp4", tmp_path / "det.jsonl"
        assert cli.main(["run", str(folder), "--engine", str(engine), "--out", str(out), "--json", str(jsonl),
                         "--min-score", "0", "--no-progress"] + extra) == 0
        assert "23 frames" in capsys.readouterr().out
        capture = cv2.VideoCapture(str(out))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 23
        detections = read_detections(jsonl)
        assert [w.frames for w in detections.windows["frames"]] == [w.frames for w in offline]
        for mine, ref in zip(detections.windows["frames"], offline):
            assert sorted(mine.tubelets) == sorted(ref.tubelets)
        assert detections.labels == ("a", "b", "c", "d") and detections.mode == "stream"


def test_run_command_reports_what_the_api_gives(engine, tmp_path, capsys):
    """One frames/s figure (the Runtime's, defined), tube counts as the API gives them with the API's default
    threshold, and an unwritable --out refused before the source is even opened."""
    import cv2

    from edge_stad import cli
    from edge_stad.commands import run as run_command
    from edge_stad.defaults import MIN_TUBE_SCORE

    folder = tmp_path / "frames"
    folder.mkdir()
    frames = video(40, seed=2)
    for i, frame in enumerate(frames, start=1):
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    api = Runtime(engine)
    cli_default = cli.build_parser().parse_args(["run", "x", "--engine", "e"]).min_score
    assert api.min_tube_score == MIN_TUBE_SCORE == cli_default
    stream(api, frames)
    started = sum(e.kind == "started" for _, e in api.events())
    kept = [t for _, t in api.tubes()]
    drawn = sum(t.score >= MIN_TUBE_SCORE for t in kept)
    assert started > len(kept) > 0
    assert cli.main(["run", str(folder), "--engine", str(engine), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (f"40 frames; {len(kept)} tubes (Runtime.tubes(): finished and kept; {drawn} with mean score >= "
            f"{MIN_TUBE_SCORE:g}, drawn), of {started} started") in out
    assert out.count("frames/s") == 1 and "frames/s in edge_stad.Runtime (push and flush; decoding" in out
    assert "rate" not in run_command.BAR and "{postfix}" in run_command.BAR   # no tqdm rate beside it
    for name in ("x.gif", "x.webm"):
        assert cli.main(["run", str(tmp_path / "missing.mp4"), "--engine", str(engine), "--out",
                         str(tmp_path / name)]) == 1
        err = capsys.readouterr().err
        assert "annotated videos are .mp4, .m4v, .mov, .mkv, .avi files" in err and "camera index" not in err
    assert sorted(os.listdir(tmp_path)) == ["frames"]


def test_run_command_on_a_truncated_video_ends_cleanly(engine, tmp_path, capsys):

    from edge_stad import cli

    path = tmp_path / "clip.avi"
    write_video(path, video(40, seed=12))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    assert cli.main(["run", str(path), "--engine", str(engine), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "truncated or corrupt" in captured.err
    decoded = int(captured.out.split(" frames")[0])
    assert 5 < decoded < 40
    assert cli.main(["run", str(tmp_path / "missing.mp4"), "--engine", str(engine)]) == 1
    assert "camera index" in capsys.readouterr().err


def test_run_command_strict_refuses_a_truncated_video_and_a_bad_image(engine, tmp_path, capsys):
    import cv2

    from edge_stad import cli

    path = tmp_path / "clip.mp4"
    write_video(path, video(40, seed=12), "mp4v")
    data = faststart(path.read_bytes())
    path.write_bytes(data[:len(data) // 2])
    common = ["--engine", str(engine), "--no-progress", "--json", str(tmp_path / "d.jsonl")]
    assert cli.main(["run", str(path)] + common) == 0
    assert "warning: " in capsys.readouterr().err and (tmp_path / "d.jsonl").exists()
    os.remove(tmp_path / "d.jsonl")
    assert cli.main(["run", str(path), "--strict"] + common) == 1
    assert "frames its container declares" in capsys.readouterr().err and not (tmp_path / "d.jsonl").exists()
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(video(12, seed=2), start=1):
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    (folder / "5.png").write_bytes(b"broken")
    assert cli.main(["run", str(folder)] + common) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("11 frames") and "5.png is not a readable image" in captured.err
    assert cli.main(["run", str(folder), "--strict"] + common) == 1
