"""Wall-clock latency of callables, measured so that their ratios mean something on a noisy machine.

The candidates are interleaved: every round runs each of them ``repeat`` times in turn,
so slow drifts of a shared machine (other jobs, frequency changes) hit all of them alike
and the ratio of their medians is stable even when the absolute numbers move. No torch.
"""
import time

import numpy as np


def measure(calls, repeat=20, rounds=5, warmup=3):
    """``{name: fn}`` -> ``{name: {median_ms, p10_ms, p90_ms, mean_ms, runs}}``."""
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
    return {name: {"median_ms": 1e3 * float(np.median(t)), "p10_ms": 1e3 * float(np.percentile(t, 10)),
                   "p90_ms": 1e3 * float(np.percentile(t, 90)), "mean_ms": 1e3 * float(np.mean(t)), "runs": len(t)}
            for name, t in times.items()}
