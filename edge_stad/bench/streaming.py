"""Timed streaming of a fixed video through :class:`edge_stad.Runtime`, several backends interleaved.

What a camera loop sees: every frame goes through ``Runtime.push`` (preprocess, and every ``clip_len``
frames the encoder, head, decode and linking) and every push is timed. The first ``warmup`` pushes of
each stream are kept out of the steady-state figures (the FIFO fills during the first ``K·clip_len``
frames), and before the first round every backend streams them once untimed (first calls allocate and
pick kernels); ``flush`` is timed on its own. Rounds interleave the backends, so a slow drift of a
shared machine hits them all alike and their ratios hold. No torch.
"""
import contextlib
import time
from typing import Dict, List, NamedTuple

from edge_stad.defaults import MIN_TUBE_SCORE
from edge_stad.runtime.stream import Runtime


class StreamTiming(NamedTuple):
    """One stream of the video through a fresh Runtime."""

    push_s: List[float]         # every push, in order
    warmup: int                 # pushes before the steady state
    flush_s: float
    stage_s: Dict[str, float]   # Runtime stage seconds over the steady-state pushes
    clips: int                  # clips encoded over the steady-state pushes
    windows: int                # windows run over the steady-state pushes
    latency_frames: tuple = ()  # (min, max) frames from a push to its result
    cpu_s: float = 0.0          # the process's CPU time (every thread) during the pushes and the flush

    @property
    def steady_s(self):
        return sum(self.push_s[self.warmup:])

    @property
    def fps(self):
        """Frames per second over the steady-state pushes."""
        return (len(self.push_s) - self.warmup) / self.steady_s

    @property
    def total_s(self):
        """Every push and the flush: the whole video."""
        return sum(self.push_s) + self.flush_s


def stream(backend, frames, warmup=0, min_tube_score=MIN_TUBE_SCORE, pipeline=False):
    """Push ``frames`` one by one through a fresh Runtime on ``backend``, then flush; a :class:`StreamTiming`."""
    if not 0 <= warmup < len(frames):
        raise ValueError(f"warmup must be in [0, {len(frames)}) for {len(frames)} frames, got {warmup}")
    runtime = Runtime(backend, min_tube_score=min_tube_score, pipeline=pipeline)
    times = []
    before = None
    cpu = 0.0
    for i, frame in enumerate(frames):
        if i == warmup:
            before = runtime.stats()
        start, cpu_start = time.perf_counter(), time.process_time()
        runtime.push(frame)
        times.append(time.perf_counter() - start)
        cpu += time.process_time() - cpu_start
    after = runtime.stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    runtime.flush()
    flush = time.perf_counter() - start
    cpu += time.process_time() - cpu_start
    runtime.close()
    stages = {k: after["seconds"][k] - before["seconds"][k] for k in after["seconds"]}
    return StreamTiming(times, warmup, flush, stages, after["clips_encoded"] - before["clips_encoded"],
                        after["windows"] - before["windows"], after["latency_frames"], cpu)


def interleaved(backends, frames, rounds=3, warmup=0, min_tube_score=MIN_TUBE_SCORE, around=None, progress=None,
                pipelined=None):
    """``{name: [StreamTiming per round]}`` for ``{name: backend}``; round r streams every backend in turn.

    ``around(name)``, when given, returns a context manager entered around each timed stream (telemetry
    sampling, thread settings); ``progress`` (a tqdm bar) advances once per stream; ``pipelined``
    maps a name to its Runtime's ``pipeline`` (windows in flight), the others stream unpipelined.
    """
    pipelined = dict(pipelined or {})
    for name, backend in backends.items():
        stream(backend, frames[:warmup + 1], warmup, min_tube_score, pipelined.get(name, 0))
    runs = {name: [] for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            with around(name) if around is not None else contextlib.nullcontext():
                runs[name].append(stream(backend, frames, warmup, min_tube_score, pipelined.get(name, 0)))
            if progress is not None:
                progress.update(1)
    return runs
