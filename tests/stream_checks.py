"""What a Runtime streamed, compared with the offline path of the same frames (windows, tubes, detections)."""
import numpy as np

from edge_stad.core.frame_detections import frame_detections
from edge_stad.core.linking import link_video


def assert_stream_equals_offline(runtime, results, offline, K, clip_len, detections=None):
    """The windows the ``runtime`` processed equal ``offline``'s bit for bit, its ended tubes the offline linker's
    tubes of them, and the per-frame detections of ``results`` the offline per-frame detections (``detections``,
    the decoded rows of a frame-level detector, else those of the windows); returns the offline tubes
    ``{label: [Tube]}``."""
    windows = [w for _, w in runtime.windows()]
    assert [w.frames for w in windows] == [w.frames for w in offline]
    for mine, ref in zip(windows, offline):
        assert sorted(mine.tubelets) == sorted(ref.tubelets)
        for label in ref.tubelets:
            np.testing.assert_array_equal(mine.tubelets[label], ref.tubelets[label])
    expected = link_video(offline, K, clip_len)
    got = {}
    for _, tube in runtime.tubes():
        got.setdefault(tube.label, []).append(tube)
    assert {c: len(t) for c, t in got.items()} == {c: len(t) for c, t in expected.items() if t}
    for label, tubes in expected.items():
        for mine, ref in zip(got.get(label, []), tubes):
            assert mine.score == ref.score
            np.testing.assert_array_equal(mine.boxes, ref.boxes)
    rows = np.concatenate([np.column_stack([np.full(len(r.detections), r.frame, np.float32), r.detections])
                           for r in results])
    np.testing.assert_array_equal(rows, frame_detections(offline, K, "stream") if detections is None else detections)
    return expected


def assert_same_streams(backend, reference, frames, **options):
    """``frames`` pushed through a Runtime on ``backend`` and on ``reference`` (then flushed) give a result per frame,
    with the same tubes and per-frame detections bit for bit."""
    from edge_stad import Runtime

    streams = []
    for opened in (backend, reference):
        runtime = Runtime(opened, frame_detections=True, min_tube_score=0.0, **options)
        streams.append([r for f in frames for r in runtime.push(f)] + runtime.flush())
    assert [r.frame for r in streams[0]] == list(range(1, len(frames) + 1))
    for got, want in zip(*streams):
        np.testing.assert_array_equal(got.tubes, want.tubes)
        np.testing.assert_array_equal(got.detections, want.detections)
