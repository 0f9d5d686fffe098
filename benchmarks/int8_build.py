"""FP32 vs INT8 engines of one trained checkpoint: accuracy (the build's gate) and ONNX Runtime speed.

    python benchmarks/int8_build.py [--checkpoint runs/demo/best.pt] [--data data/synth_bench]
                                    [--threads 2] [--out runs/bench_int8]

Builds the FP32 and the INT8 engine with `edge-stad build` semantics (ONNX Runtime backend,
calibration on the train videos, gate on the test split), then times the encoder (one clip)
and the head (one window) of both, interleaved in one run (edge_stad.bench.latency), on
the CPU with --threads ONNX Runtime threads. Writes benchmarks/results/int8_cpu.{md,json}.
"""
import argparse
import os
import platform
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=os.path.join("runs", "demo", "best.pt"))
    parser.add_argument("--data", default=os.path.join("data", "synth_bench"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--calib-clips", type=int, default=64)
    parser.add_argument("--calib-method", default="minmax", choices=("minmax", "entropy", "percentile"))
    parser.add_argument("--out", default=os.path.join("runs", "bench_int8"))
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results", "int8_cpu"))
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime
    import torch

    from edge_stad.bench.latency import measure
    from edge_stad.bench.results import save_results
    from edge_stad.engines.build import BuildOptions, build_engine
    from edge_stad.engines.onnxruntime_backend import open_engine
    from edge_stad.export.onnx_export import example_inputs
    from edge_stad.models import load_checkpoint, read_checkpoint

    model = load_checkpoint(args.checkpoint)
    labels = read_checkpoint(args.checkpoint)["meta"].get("labels") or ()
    manifests = {}
    for precision in ("fp32", "int8"):
        opts = BuildOptions(precision=precision, backend="onnxruntime", calib_data=args.data,
                            calib_clips=args.calib_clips, calib_method=args.calib_method, force=True,
                            calibration_dir=os.path.join(args.out, "calibration"))
        manifests[precision] = build_engine(model, os.path.join(args.out, precision), opts, labels=labels)
    engines = {p: open_engine(os.path.join(args.out, p), threads=args.threads) for p in manifests}
    cfg = model.config
    clip = example_inputs(cfg, batch=1)
    feat, wh = engines["fp32"].encode(np.repeat(clip, cfg["K"], axis=0))
    window = {"feats": feat[None], "whs": wh[None]}
    calls = {}
    for p, e in engines.items():
        calls[f"{p} encoder"] = lambda e=e: e.encoder.run(None, {"frames": clip})
        calls[f"{p} head"] = lambda e=e: e.head_session.run(None, window)
    timing = measure(calls, repeat=20, rounds=5)
    gate = manifests["int8"]["calibration"]
    last = gate["attempts"][-1]
    result = {
        "checkpoint": os.path.abspath(args.checkpoint), "data": os.path.abspath(args.data), "model": cfg,
        "threads": args.threads, "timing": timing,
        "encoder_speedup": timing["fp32 encoder"]["median_ms"] / timing["int8 encoder"]["median_ms"],
        "head_speedup": timing["fp32 head"]["median_ms"] / timing["int8 head"]["median_ms"],
        "frame_mAP_fp32": gate["frame_mAP_fp32"], "frame_mAP_int8": last["frame_mAP_int8"],
        "frame_mAP_drop": last["frame_mAP_drop"], "kept_float": last["kept_float"],
        "agreement": last["agreement"], "calibration": gate["calibration"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
    }
    h, w = cfg["input_size"]
    lines = [
        "# INT8 vs FP32 engines on the CPU (ONNX Runtime)", "",
        f"Command: `python benchmarks/int8_build.py --threads {args.threads}` "
        f"(checkpoint {os.path.relpath(args.checkpoint)}, {cfg['backbone']} K={cfg['K']} {h}x{w})",
        f"Machine: {result['machine']}, onnxruntime {onnxruntime.__version__}", "",
        "| engine | frame-mAP@0.5 (test) | encoder ms/clip (median, p90) | head ms/window (median, p90) |",
        "|---|---|---|---|",
    ]
    for p in ("fp32", "int8"):
        enc, head = timing[f"{p} encoder"], timing[f"{p} head"]
        lines.append(f"| {p} | {result['frame_mAP_' + p]:.2f} | {enc['median_ms']:.2f} ({enc['p90_ms']:.2f}) | "
                     f"{head['median_ms']:.2f} ({head['p90_ms']:.2f}) |")
    kept = sum(len(v) for v in last["kept_float"].values())
    lines += ["", f"Encoder speed-up INT8/FP32: **{result['encoder_speedup']:.2f}x**, head: "
                  f"{result['head_speedup']:.2f}x (ratios of medians, interleaved runs, one process).",
              f"frame-mAP drop {result['frame_mAP_drop']:.2f} points (gate limit 1.0); {kept} layer(s) kept in float; "
              f"peak agreement {last['agreement']['peak_agreement']:.3f}, box L1 "
              f"{last['agreement']['box_l1_grid_cells']:.3f} grid cells; calibration {gate['calibration']['windows']} "
              f"windows ({gate['calibration']['method']})."]
    save_results(args.results, "\n".join(lines) + "\n", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
