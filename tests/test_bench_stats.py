"""Benchmark statistics: known-answer percentiles, warm-up exclusion, timed streaming and interleaving."""
import contextlib
import os

import numpy as np
import pytest

from edge_stad.bench.latency import latency_summary
from edge_stad.bench.streaming import StreamTiming, interleaved, stream
from edge_stad.runtime.stream import STAGES

MS = 1e-3


def test_percentiles_known_answer():
    s = latency_summary([[i * MS for i in range(1, 101)]])
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["max"] == pytest.approx(100) and s["samples"] == 100
    odd = latency_summary([[3 * MS, 1 * MS, 2 * MS]])     # order does not matter; linear interpolation
    assert (odd["p50"], odd["p90"], odd["p99"]) == pytest.approx((2.0, 2.8, 2.98))


def test_warmup_samples_of_every_run_are_dropped():
    slow_start = [5.0] * 7  # first calls: seconds, not milliseconds
    runs = [slow_start + [i * MS for i in range(1, 51)], slow_start + [i * MS for i in range(51, 101)]]
    s = latency_summary(runs, warmup=7)
    assert s["samples"] == 100 and s["max"] == pytest.approx(100)
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01)
    assert latency_summary(runs, warmup=6)["max"] == pytest.approx(5000)   # one warm-up sample too few shows
    with pytest.raises(ValueError, match="no samples left"):
        latency_summary(runs, warmup=57)
    with pytest.raises(ValueError):
        latency_summary(runs, warmup=-1)


def test_stream_timing_fps_counts_steady_pushes_only():
    t = StreamTiming(push_s=[1.0, 1.0, 0.1, 0.1, 0.2], warmup=2, flush_s=0.5, stage_s={}, clips=1, windows=1)
    assert t.steady_s == pytest.approx(0.4) and t.fps == pytest.approx(3 / 0.4)
    assert t.total_s == pytest.approx(2.9)


class FakeBackend:
    """Runtime backend answering instantly with fixed maps: K=2, clip_len 5, 32x32 input, 2 classes."""

    kind, decodes_in_graph, device_resident, link_matrices, manifest, labels = "tubelet", False, False, None, None, ()

    def __init__(self):
        self.config = {"K": 2, "clip_len": 5, "input_size": [32, 32], "num_classes": 2}
        self.encoded = 0
        rng = np.random.default_rng(0)
        self.maps = (rng.uniform(0, 0.5, (1, 2, 4, 4)).astype(np.float32), np.zeros((1, 4, 4, 4), np.float32),
                     np.full((1, 4, 4, 4), 2.0, np.float32))

    def encode(self, frames):
        self.encoded += len(frames)
        return np.zeros((len(frames), 8, 4, 4), np.float32), np.zeros((len(frames), 2, 4, 4), np.float32)

    def head(self, feats, whs):
        return tuple(np.repeat(m, len(feats), axis=0) for m in self.maps)


FRAMES = [np.full((24, 32, 3), i, np.uint8) for i in range(40)]


def test_stream_counts_the_steady_state_after_warmup():
    backend = FakeBackend()
    t = stream(backend, FRAMES, warmup=20)
    assert len(t.push_s) == 40 and t.warmup == 20 and t.flush_s >= 0
    # in steady state a window (one new clip) runs every clip_len = 5 frames: 20 pushes -> 4 of each
    assert t.windows == 4 and t.clips == 4
    assert set(t.stage_s) == set(STAGES) and t.stage_s["encoder"] > 0 and t.fps > 0
    # the process's CPU time during the pushes and the flush: some, and no more than all cores' over that time
    assert 0 < t.cpu_s <= t.total_s * (os.cpu_count() or 1) + 0.01
    whole = stream(FakeBackend(), FRAMES)
    assert whole.clips > t.clips and whole.windows == 7  # first window at frame 10 (K x clip_len), then every 5
    with pytest.raises(ValueError):
        stream(backend, FRAMES, warmup=40)


def test_interleaved_rounds_alternate_backends_after_one_untimed_warmup():
    backends = {"a": FakeBackend(), "b": FakeBackend()}
    order = []

    @contextlib.contextmanager
    def around(name):
        order.append(name)
        yield

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    runs = interleaved(backends, FRAMES, rounds=2, warmup=20, around=around, progress=bar, pipelined={"b": 2})
    assert order == ["a", "b", "a", "b"] and bar.n == 4
    assert [r.latency_frames for n in "ab" for r in runs[n]] == [(5, 9)] * 2 + [(15, 19)] * 2   # K=2; b 2 windows later
    assert [len(runs[n]) for n in "ab"] == [2, 2] and all(r.windows == 4 for n in "ab" for r in runs[n])
    # untimed warm-up, frames 1-21: 2 clips for the first window, 1 for each of the 3 next; each timed
    # stream: 8 clips over 40 frames, then 1 more for the uneven last window at the flush
    assert backends["a"].encoded == backends["b"].encoded == 5 + 2 * 9
