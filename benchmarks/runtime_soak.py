"""Soak test: one long stream through edge_stad.Runtime, with memory, latency and tube ids watched.

    python benchmarks/runtime_soak.py --engine engines/amma_shufflenetv2_k3_int8 --frames 100000
    python benchmarks/runtime_soak.py --pipeline    # Runtime(pipeline=True): the encoder on a worker thread
    python benchmarks/runtime_soak.py --pipeline 2  # two windows' encoder calls in flight
    python benchmarks/runtime_soak.py --untrained --static --frames 200000   # detections that never end

The stream cycles through the synthetic test videos (decoded once; every other pass
mirrored, so that tubes differ), pushed frame by frame into one Runtime that is never
flushed until the end; --static pushes the first test frame for ever instead (a camera on a
still scene). --untrained builds and streams an FP32 engine of a randomly initialised
AMMA-ShuffleNetV2 (K=3, 128x128, seed 0) in a temporary folder: its detections hardly change
from frame to frame, so its tubes never end. Every --every frames it records the process RSS
and its anonymous part, the open tubes and the linker's stored tubelets, the segments of long
tubes handed out so far, and the push latency (median, p99, max) of that stretch; tube ids of ``started`` events must
only increase (never reused). Passes when RSS grows less than 5% from the first checkpoint
after warm-up (frame 2 x --every) to the end. Writes --results .md and .json. Frames per second
here include the checks and say nothing about speed on a loaded machine.
"""
import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default=os.path.join("engines", "amma_shufflenetv2_k3_int8"))
    parser.add_argument("--data", default=os.path.join("data", "synth_bench"))
    parser.add_argument("--frames", type=int, default=100000)
    parser.add_argument("--every", type=int, default=10000)
    parser.add_argument("--pipeline", type=int, nargs="?", const=1, default=0, metavar="N",
                        help="a pipelined Runtime, N windows in flight (default 1)")
    parser.add_argument("--results", help="results path without extension (default: results/runtime_soak, "
                                          "runtime_soak_pipelined, or runtime_soak_pipelined<N> for N > 1)")
    parser.add_argument("--untrained", action="store_true",
                        help="stream a randomly initialised engine (built here, in a temporary folder) instead of "
                             "--engine")
    parser.add_argument("--static", action="store_true", help="push the first test frame for ever")
    args = parser.parse_args(argv)
    suffix = "" if not args.pipeline else "_pipelined" + (str(args.pipeline) if args.pipeline > 1 else "")
    results_path = args.results or os.path.join(os.path.dirname(__file__), "results", "runtime_soak" + suffix)

    import numpy as np
    import psutil
    from tqdm import tqdm

    from edge_stad.bench.results import save_results
    from edge_stad.core.linking import SEGMENT
    from edge_stad.data.act import ActDataset
    from edge_stad.runtime.stream import Runtime

    dataset = ActDataset(args.data, split=1)
    clips = [dataset.read_frame(v, f) for v in dataset.gt.test_videos[0] for f in range(1, dataset.gt.nframes[v] + 1)]
    clips = clips[:1] if args.static else clips
    engine = args.engine
    if args.untrained:   # built in a child process, so that torch stays out of the RSS measured here
        engine = os.path.join(tempfile.mkdtemp(prefix="soak_"), "amma_untrained_fp32")
        child = multiprocessing.get_context("spawn").Process(target=untrained_engine, args=(engine,))
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(f"building the untrained engine failed ({child.exitcode})")
    runtime = Runtime(engine, pipeline=args.pipeline)
    process = psutil.Process()
    rows, latencies = [], []
    last_id, reused, tubes, results, segments = -1, 0, 0, 0, 0
    start = time.perf_counter()
    for i in tqdm(range(args.frames), unit="frame", mininterval=2, file=sys.stderr):
        frame = clips[i % len(clips)]
        if (i // len(clips)) % 2:
            frame = frame[:, ::-1]
        t0 = time.perf_counter()
        results += len(runtime.push(frame, timestamp=i / 25))
        latencies.append(time.perf_counter() - t0)
        for _, event in runtime.events():
            if event.kind == "started":
                reused += event.tube_id <= last_id
                last_id = max(last_id, event.tube_id)
            segments += event.kind == SEGMENT
        tubes += len(runtime.tubes())
        runtime.windows()
        if (i + 1) % args.every == 0:
            ms = 1000 * np.asarray(latencies)
            stats = runtime.stats()
            memory = process.memory_info()
            rows.append({"frames": i + 1, "rss_mib": memory.rss / 2**20,
                         "anon_mib": (memory.rss - memory.shared) / 2**20,
                         "open_tubes": stats["open_tubes"],
                         "stored_tubelets": stats["stored_tubelets"], "segments": segments,
                         "queue_depth": stats["queue_depth"], "tubes_ended": tubes,
                         "push_ms_median": float(np.median(ms)), "push_ms_p99": float(np.percentile(ms, 99)),
                         "push_ms_max": float(ms.max())})
            latencies = []
    results += len(runtime.flush())
    runtime.close()
    seconds = time.perf_counter() - start
    base, end = rows[min(1, len(rows) - 1)]["rss_mib"], rows[-1]["rss_mib"]
    growth = (end - base) / base
    ok = growth < 0.05 and reused == 0 and results == args.frames
    name = "an untrained engine" if args.untrained else os.path.basename(os.path.normpath(args.engine))
    command = ("python benchmarks/runtime_soak.py " + ("--untrained" if args.untrained else f"--engine {args.engine}")
               + (" --static" if args.static else "") + f" --frames {args.frames}"
               + (f" --every {args.every}" if args.every != 10000 else "")
               + (" --pipeline" if args.pipeline else "") + (f" {args.pipeline}" if args.pipeline > 1 else "")
               + (f" --results {args.results}" if args.results else ""))
    lines = [f"# Runtime soak: {args.frames} frames through {name}", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}. "
             f"{seconds:.0f} s in all ({args.frames / seconds:.0f} frames/s including the checks).", "",
             "| frames | RSS (MiB) | anonymous (MiB) | open tubes | stored tubelets | segments | queue depth | "
             "tubes out | push median (ms) | push p99 (ms) | push max (ms) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += ["| {frames} | {rss_mib:.1f} | {anon_mib:.1f} | {open_tubes} | {stored_tubelets} | {segments} | "
              "{queue_depth} | {tubes_ended} | {push_ms_median:.2f} | {push_ms_p99:.2f} | "
              "{push_ms_max:.2f} |".format(**r) for r in rows]
    lines += ["", "Anonymous memory is RSS less its file-backed pages (psutil's `shared`), which the kernel may drop "
              "under memory pressure from other processes; tubes out counts `Runtime.tubes()`: ended tubes and the "
              "segments of long ones."]
    lines += ["", f"RSS growth from frame {rows[min(1, len(rows) - 1)]['frames']} to the end: {100 * growth:+.2f}% "
              "(limit 5%); tube ids reused: {}; results returned: {} of {} frames. {}".format(
                  reused, results, args.frames, "PASS" if ok else "FAIL"), ""]
    save_results(results_path, "\n".join(lines), {"command": command, "frames": args.frames, "seconds": seconds,
                                                  "rows": rows, "rss_growth": growth, "tube_ids_reused": reused,
                                                  "results": results, "segments": segments, "pass": ok})
    return 0 if ok else 1


def untrained_engine(out):
    """An FP32 engine of a randomly initialised AMMA-ShuffleNetV2 (K=3, 128x128, seed 0) at ``out``."""
    import torch

    from edge_stad.build.pipeline import BuildOptions, build_engine
    from edge_stad.models import create_model

    torch.manual_seed(0)
    model = create_model("amma", backbone="shufflenetv2", K=3, num_classes=8, input_size=128).eval()
    build_engine(model, out, BuildOptions(backend="onnxruntime"), command="runtime_soak.py --untrained",
                 log=lambda _: None)


if __name__ == "__main__":
    sys.exit(main())
