"""End-to-end streaming throughput of edge_stad.Runtime: ONNX Runtime INT8 / FP32 vs the PyTorch FP32 model.

    python benchmarks/runtime_throughput.py --checkpoint runs/ablation/mm_k3/last.pt --input-size 288
    python benchmarks/runtime_throughput.py --checkpoint runs/demo/best.pt                # its own size

Builds (once, into --work) the FP32 and the INT8 (`cpu` flavour) engines of the checkpoint
at --input-size with `edge-stad build`, decodes --frames frames of the synthetic test
videos into memory (video decoding is not timed), then streams them through a fresh
Runtime per backend and round (edge_stad.bench.streaming, as `edge-stad bench` does):
preprocess + encoder + head + decode + link + per-frame results, frame by frame; frames/s
counts the whole video, flush included, the stage times the pushes. Rounds interleave the
backends so that the ratios survive a noisy shared machine. The PyTorch baseline is the
same checkpoint at the same input size behind the same Runtime (``TorchBackend``). Every
backend also streams pipelined (``Runtime(pipeline=N)``: the encoder on N worker threads with
cores-1 threads each, head, decode and linking on the caller's; N = 1, 2 and 3 for ONNX Runtime
INT8 and PyTorch, 1 for FP32), and PyTorch once more on cores-1 threads; the ratios are to the
fastest PyTorch configuration. Also profiles the
INT8 graphs per ONNX operator type. Writes --results .md and .json.
`edge-stad bench` measures random-weight or checkpoint engines on a synthetic video with
telemetry; this script is the trained-checkpoint, real-test-video, per-operator view.
"""
import argparse
import os
import platform
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=os.path.join("runs", "demo", "best.pt"))
    parser.add_argument("--input-size", type=int, help="square model input (default: the checkpoint's)")
    parser.add_argument("--data", default=os.path.join("data", "synth_bench"))
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-tube-score", type=float, default=0.2)
    parser.add_argument("--work", default=os.path.join("runs", "bench_runtime"))
    parser.add_argument("--results", help="results path without extension (default: results/runtime_cpu_<size>)")
    args = parser.parse_args(argv)

    import contextlib

    import numpy as np
    import onnxruntime
    import torch

    from edge_stad import cli
    from edge_stad.backends import open_backend
    from edge_stad.bench.ort_profile import op_profile
    from edge_stad.bench.results import save_results
    from edge_stad.bench.streaming import interleaved, stream
    from edge_stad.data.act import ActDataset
    from edge_stad.models.checkpoint import load_checkpoint
    from edge_stad.preprocess import resize
    from edge_stad.runtime.stream import pipeline_threads
    from edge_stad.torch_backends.streaming import TorchBackend

    size = args.input_size
    overrides = {"input_size": (size, size)} if size else {}
    model = load_checkpoint(args.checkpoint, **overrides)
    size = model.config["input_size"][0]
    out_path = args.results or os.path.join(os.path.dirname(__file__), "results", f"runtime_cpu_{size}")
    cores = torch.get_num_threads()
    worker = pipeline_threads()
    backends, pipelined, torch_threads = {}, {}, {}
    for precision in ("int8", "fp32"):
        folder = os.path.join(args.work, f"{precision}_{size}")
        if not os.path.isdir(folder):
            build = ["build", "--checkpoint", args.checkpoint, "--input-size", str(size), "--out", folder]
            if precision == "int8":
                build += ["--int8", "--int8-flavor", "cpu", "--calib-data", args.data]
            if cli.main(build) != 0:
                return 1
        name = f"onnxruntime {precision.upper()}"
        piped = open_backend(folder, "onnxruntime", threads=worker)
        for depth in (1, 2, 3) if precision == "int8" else (1,):
            backends[f"{name}, {_pipelined(depth)}"] = piped
            pipelined[f"{name}, {_pipelined(depth)}"] = depth
        backends[name] = open_backend(folder, "onnxruntime", threads=cores)
    torch_model = TorchBackend(model)
    for threads, depth in ((cores, 0), (worker, 0), (worker, 1), (worker, 2), (worker, 3)):
        name = f"pytorch FP32, {threads} thread{'s' if threads > 1 else ''}"
        name += f", {_pipelined(depth)}" if depth else ""
        if name not in backends:
            backends[name] = torch_model
            torch_threads[name] = threads
            if depth:
                pipelined[name] = depth

    dataset = ActDataset(args.data, split=1)
    frames = []
    for video in dataset.gt.test_videos[0]:
        frames += [dataset.read_frame(video, f) for f in range(1, dataset.gt.nframes[video] + 1)]
        if len(frames) >= args.frames:
            break
    frames = frames[:args.frames]

    @contextlib.contextmanager
    def threads_of(name):   # torch's intra-op threads are process-wide
        torch.set_num_threads(torch_threads.get(name, cores))
        yield
        torch.set_num_threads(cores)

    for name, backend in backends.items():  # warm-up: first-call allocations, oneDNN/ORT kernel choices
        with threads_of(name):
            stream(backend, frames[:40], pipeline=pipelined.get(name, 0))
    runs = interleaved(backends, frames, args.rounds, min_tube_score=args.min_tube_score, around=threads_of,
                       pipelined=pipelined)
    summary = {}
    for name, results in runs.items():
        median = sorted(results, key=lambda r: r.total_s)[len(results) // 2]
        summary[name] = {"fps": len(frames) / median.total_s, "seconds": sorted(r.total_s for r in results),
                         "ms_per_frame": {k: 1e3 * v / len(frames) for k, v in median.stage_s.items()},
                         "windows": median.windows, "clips_encoded": median.clips,
                         "latency_frames": list(median.latency_frames),
                         "cpu_busy": median.cpu_s / median.total_s / (os.cpu_count() or 1)}
    baseline = max((n for n in summary if n.startswith("pytorch")), key=lambda n: summary[n]["fps"])
    for entry in summary.values():
        entry["vs_pytorch_fp32"] = entry["fps"] / summary[baseline]["fps"]

    clip = np.stack([resize(f, (size, size)) for f in frames[:model.config["clip_len"]]])[None]
    feat, wh = backends["onnxruntime INT8"].encode(clip)
    K = model.config["K"]
    feeds = {"encoder": {"frames": clip},
             "head": {"feats": np.repeat(feat[:, None], K, axis=1), "whs": np.repeat(wh[:, None], K, axis=1)}}
    profiles = {g: op_profile(os.path.join(args.work, f"int8_{size}", f"{g}.onnx"), feeds[g]) for g in feeds}

    machine = f"{platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}"
    lines = [f"# Runtime streaming throughput, AMMA-ShuffleNetV2 K={K} at {size}x{size} (CPU)", "",
             f"Command: `python benchmarks/runtime_throughput.py --checkpoint {args.checkpoint} --input-size {size} "
             f"--frames {args.frames} --rounds {args.rounds}"
             + (f" --work {args.work}" if args.work != parser.get_default("work") else "") + "`", "",
             f"Machine: {machine}; onnxruntime {onnxruntime.__version__}, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads)", "",
             f"{len(frames)} frames of the synthetic test videos ({frames[0].shape[1]}x{frames[0].shape[0]}), "
             "decoded beforehand, one stream; a fresh Runtime per run, flush included; median of "
             f"{args.rounds} interleaved rounds. ONNX Runtime sessions: {cores} intra-op threads, "
             f"{worker} per worker thread pipelined. Ratios are to the fastest PyTorch configuration, {baseline}.", "",
             "| backend | frames/s | vs fastest PyTorch | result latency (frames) | CPU busy | preprocess | encoder | "
             "head | decode | link | results |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in summary.items():
        ms = entry["ms_per_frame"]
        lines.append(f"| {name} | {entry['fps']:.0f} | {entry['vs_pytorch_fp32']:.2f}x | "
                     + "{}-{}".format(*entry["latency_frames"]) + f" | {entry['cpu_busy']:.0%} | "
                     + " | ".join(f"{ms[k]:.2f}" for k in ("preprocess", "encoder", "head", "decode", "link",
                                                           "results")) + " |")
    lines += ["", "Stage columns: milliseconds per frame (the encoder runs once per clip of "
              f"{model.config['clip_len']} frames, the head and decode once per window; the ONNX Runtime "
              "engines decode in the head graph, so their head includes the decode and their decode is "
              "the conversion to pixels); pipelined, the "
              "encoder overlaps the other stages, so they add up to more than the wall time "
              "(and with several windows in flight the encoder calls share the cores: each takes longer). CPU busy: "
              "the process's CPU time (all threads) over the wall time of the whole video and all cores.", ""]
    for graph, rows in profiles.items():
        lines += [f"INT8 {graph} by ONNX operator type (ms per run, share):", ""]
        lines += [f"- {op}: {ms:.2f} ms ({share:.0%})" for op, ms, share in rows[:8]] + [""]
    save_results(out_path, "\n".join(lines), {"machine": machine, "frames": len(frames), "input_size": size,
                                                  "summary": summary, "op_profiles": profiles})
    return 0


def _pipelined(depth):
    return "pipelined" if depth == 1 else f"pipelined x{depth}"


if __name__ == "__main__":
    sys.exit(main())
