"""Wall-clock latency of callables and percentile summaries, measured so that ratios mean something on a
noisy machine. No torch.

The candidates of :func:`measure` are interleaved: every round runs each of them ``repeat`` times in
turn, so slow drifts of a shared machine (other jobs, frequency changes) hit all of them alike and the
ratio of their medians is stable even when the absolute numbers move.
"""
import time

import numpy as np

PERCENTILES = (50, 90, 99)


def measure(calls, repeat=20, rounds=5, warmup=3):
    """``{name: fn}`` -> ``{name: {median_ms, min_ms, p10_ms, p90_ms, mean_ms, runs}}``."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(repeat):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: {"median_ms": 1e3 * float(np.median(t)), "min_ms": 1e3 * float(np.min(t)),
                   "p10_ms": 1e3 * float(np.percentile(t, 10)),
                   "p90_ms": 1e3 * float(np.percentile(t, 90)), "mean_ms": 1e3 * float(np.mean(t)), "runs": len(t)}
            for name, t in times.items()}


def latency_summary(runs, warmup=0):
    """p50 / p90 / p99, mean and max in milliseconds of the samples (seconds) of ``runs``, a list of runs.

    The first ``warmup`` samples of *every* run are dropped (first calls: allocations, kernel choices, a
    stream's FIFO filling), the rest are pooled. Percentiles interpolate linearly between order
    statistics (NumPy's default): samples of 1 .. 100 ms give p50 50.5, p90 90.1, p99 99.01.
    """
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    kept = np.concatenate([np.asarray(run[warmup:], dtype=np.float64) for run in runs]) * 1e3 if runs else []
    if not len(kept):
        raise ValueError(f"no samples left after dropping {warmup} warm-up samples per run")
    summary = {f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(kept, PERCENTILES))}
    summary.update(mean=float(kept.mean()), max=float(kept.max()), samples=int(len(kept)))
    return summary
