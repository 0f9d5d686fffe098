"""Cost of online tube linking per window: edge_stad's vectorized Linker vs a plain BuildTubes.

Each window holds 100 candidate tubelets of one class: 10 actors that stay in view
(so about 10 tubes are active) and 90 low-scored clutter tubelets. The plain reference
is the loop-per-tube/per-box BuildTubes of tests/act_reference.py; both produce the same
tubes. With --hour the Linker also runs through one hour of a 30 fps stream (a window
every clip_len=5 frames, actors coming and going in 4 classes) and reports its memory.

    python benchmarks/linking_bench.py [--hour] [--out benchmarks/results/linking_cpu.md]
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from act_reference import plain_build_tubes  # noqa: E402

from edge_stad.core.linking import Linker, link_video  # noqa: E402
from edge_stad.core.windows import Window, regular_window  # noqa: E402

CLIP_LEN = 5


def persistent_windows(rng, K, count, actors=10, candidates=100):
    """Windows of one class: ``actors`` tubelets that follow their actors, the rest clutter."""
    origin = rng.uniform([0, 0], [260, 180], (actors, 2))
    size = rng.uniform(30, 60, (actors, 2))
    speed = rng.uniform(-1, 1, (actors, 2))
    windows = []
    for i in range(count):
        frames = regular_window(K * CLIP_LEN + i * CLIP_LEN, K, CLIP_LEN)
        t = np.asarray(frames, dtype=np.float64)[None, :, None]
        corner = origin[:, None] + speed[:, None] * t
        boxes = np.concatenate([corner, corner + size[:, None]], axis=2).reshape(actors, 4 * K)
        real = np.column_stack([boxes + rng.normal(0, 1, boxes.shape), rng.uniform(0.5, 1, actors)])
        xy = rng.uniform(0, 300, (candidates - actors, 2))
        wh = rng.uniform(20, 60, (candidates - actors, 2))
        clutter = np.tile(np.concatenate([xy, xy + wh], axis=1), K) + rng.normal(0, 3, (candidates - actors, 4 * K))
        clutter = np.column_stack([clutter, rng.uniform(0, 0.45, candidates - actors)])
        windows.append(Window(frames, {0: np.concatenate([real, clutter]).astype(np.float32)}))
    return windows


def per_window_table(fast_windows, plain_windows, repeats):
    rows = []
    for K in range(2, 8):
        rng = np.random.default_rng(K)
        windows = persistent_windows(rng, K, fast_windows)
        push, active = [], []
        for _ in range(repeats):
            linker = Linker(K, CLIP_LEN)
            for w in windows:
                start = time.perf_counter()
                linker.push(w.frame, w.tubelets, w.frames)
                push.append(time.perf_counter() - start)
                active.append(linker.active_tubes)
            linker.finish()
        start = time.perf_counter()
        for _ in range(repeats):
            link_video(windows, K, CLIP_LEN)
        offline = (time.perf_counter() - start) / repeats / len(windows)
        subset = windows[:plain_windows]
        start = time.perf_counter()
        plain = plain_build_tubes([(w.frames, w.tubelets) for w in subset], K, CLIP_LEN, subset[-1].frame, [0])
        plain_time = (time.perf_counter() - start) / len(subset)
        same = link_video(subset, K, CLIP_LEN)[0]
        assert len(same) == len(plain[0]) and all(np.array_equal(a.boxes, b[0]) for a, b in zip(same, plain[0]))
        rows.append((K, np.median(push) * 1e6, offline * 1e6, plain_time * 1e6, np.mean(active)))
        print(f"K={K} done", file=sys.stderr)
    return rows


def churning_stream(rng, K, count, labels=4, actors=6, clutter=60):
    """An endless stream: actors of random classes come and go; clutter in every class."""
    cast = []
    for i in range(count):
        f = K * CLIP_LEN + i * CLIP_LEN
        frames = regular_window(f, K, CLIP_LEN)
        cast = [a for a in cast if a[0] > f]
        while len(cast) < actors:  # (leaves at frame, label, origin, speed), stays 10 s to 2 min
            cast.append((f + int(rng.integers(60, 720)) * CLIP_LEN, int(rng.integers(labels)),
                         rng.uniform(20, 200, 2), rng.uniform(-0.3, 0.3, 2)))
        rows = {}
        t = np.asarray(frames, dtype=np.float64)[:, None] - f
        for _, label, origin, speed in cast:
            corner = origin + speed * t
            boxes = np.concatenate([corner, corner + 50], axis=1).ravel()
            rows.setdefault(label, []).append(np.append(boxes + rng.normal(0, 1, 4 * K), rng.uniform(0.5, 1)))
        xy = rng.uniform(0, 250, (clutter, 2))
        junk = np.column_stack([np.tile(np.concatenate([xy, xy + 40], axis=1), K), rng.uniform(0, 0.4, clutter)])
        for label, row in zip(rng.integers(labels, size=clutter), junk):
            rows.setdefault(int(label), []).append(row)
        yield f, frames, {c: np.array(r, dtype=np.float32) for c, r in rows.items()}


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def hour_run(K=5, fps=30):
    count = 3600 * fps // CLIP_LEN
    rng = np.random.default_rng(0)
    linker = Linker(K, CLIP_LEN)
    samples, spent, finished = [], 0.0, 0
    for i, (f, frames, tubelets) in enumerate(churning_stream(rng, K, count)):
        start = time.perf_counter()
        events = linker.push(f, tubelets, frames)
        spent += time.perf_counter() - start
        finished += sum(e.kind == "ended" and e.tube is not None for e in events)
        if (i + 1) % (count // 10) == 0:
            samples.append((f / fps / 60, linker.active_tubes, linker.stored_tubelets, rss_mib(), finished))
    return count, spent, samples


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores available; "
            f"Python {platform.python_version()}, NumPy {np.__version__}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=300, help="windows per K for the Linker (default 300)")
    parser.add_argument("--plain-windows", type=int, default=30, help="windows per K for the plain reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hour", action="store_true", help="also stream one hour at 30 fps and report memory")
    parser.add_argument("--out", help="also write the markdown report here")
    args = parser.parse_args()
    rows = per_window_table(args.windows, args.plain_windows, args.repeats)
    lines = ["# Tube linking cost per window (CPU)", "",
             "Command: `python benchmarks/linking_bench.py {}`".format(" ".join(sys.argv[1:])).replace("  ", " "),
             "", "Machine: " + machine(), "",
             "Each window: 100 candidate tubelets of one class (10 actors in view, 90 clutter), clip_len 5.",
             "`Linker.push` is the online cost (median); `link_video` and the plain loop-per-tube BuildTubes",
             "(tests/act_reference.py) include building the final tubes and give identical tubes.", "",
             "| K | Linker.push median (us) | link_video (us/window) | plain BuildTubes (us/window) | speed-up | "
             "active tubes |",
             "|---|---|---|---|---|---|"]
    for K, push, offline, plain, active in rows:
        lines.append(f"| {K} | {push:.0f} | {offline:.0f} | {plain:.0f} | {plain / offline:.0f}x | {active:.1f} |")
    pushes = [r[1] for r in rows]
    lines += ["", f"Linker.push at K=7 / K=2: {pushes[-1] / pushes[0]:.2f}x; "
                  f"speed-up at K=5: {rows[3][3] / rows[3][2]:.0f}x."]
    if args.hour:
        count, spent, samples = hour_run()
        lines += ["", f"## One hour at 30 fps (K=5, a window every 5 frames: {count} windows)", "",
                  "Actors of 4 classes come and go (10 s to 2 min each, 6 in view), 60 clutter tubelets per window.",
                  "Most tubes handed out are short ones linked from clutter, which the reference's filters keep.",
                  f"Linking time {spent:.1f} s in total, {spent / count * 1e6:.0f} us per window.", "",
                  "| stream minute | active tubes | stored tubelets | process RSS (MiB) | tubes handed out |",
                  "|---|---|---|---|---|"]
        lines += ["| {:.0f} | {} | {} | {:.1f} | {} |".format(*s) for s in samples]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        from edge_stad.atomic import atomic_write

        with atomic_write(args.out, "w", encoding="utf-8") as f:
            f.write(report)


if __name__ == "__main__":
    main()
