"""FP32 vs INT8 engines: accuracy (the build's gate, on a trained checkpoint) and ONNX Runtime CPU speed.

    python benchmarks/int8_build.py --checkpoint runs/demo/best.pt [--data data/synth_bench]
    python benchmarks/int8_build.py --random-weights --backbone resnet18 --input-size 288   # speed only

Builds the FP32 engine and the INT8 engine of each --flavors (cpu: uint8 activations,
tensorrt: symmetric int8) with `edge-stad build` semantics (ONNX Runtime backend,
calibration on the train videos, gate on the test split), then times the encoder (one
clip) and the head (one window) of all of them, interleaved in one process
(edge_stad.bench.latency), with --threads ONNX Runtime threads. Appends a section to
benchmarks/results/int8_cpu.md and the numbers to int8_cpu.json (--results).
"""
import argparse
import json
import os
import platform
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=os.path.join("runs", "demo", "best.pt"))
    parser.add_argument("--random-weights", action="store_true", help="untrained model: speed only")
    parser.add_argument("--backbone", default="shufflenetv2")
    parser.add_argument("--input-size", type=int, default=None,
                        help="input side (default: 128 with --random-weights, else the checkpoint's)")
    parser.add_argument("--K", type=int, default=3)
    parser.add_argument("--data", default=os.path.join("data", "synth_bench"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--calib-clips", type=int, default=64)
    parser.add_argument("--calib-method", default="minmax", choices=("minmax", "entropy", "percentile"))
    parser.add_argument("--flavors", default="cpu,tensorrt")
    parser.add_argument("--out", default=os.path.join("runs", "bench_int8"))
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results", "int8_cpu"))
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime
    import torch

    from edge_stad.atomic import atomic_write, write_json
    from edge_stad.backends import open_backend
    from edge_stad.bench.latency import measure
    from edge_stad.build.pipeline import BuildOptions, build_engine
    from edge_stad.export.onnx_export import example_inputs
    from edge_stad.models import create_model, load_checkpoint, read_checkpoint

    if args.random_weights:
        torch.manual_seed(0)
        model = create_model("amma", backbone=args.backbone, K=args.K, num_classes=8,
                             input_size=args.input_size or 128).eval()
        labels, source = (), "random weights (speed only)"
    else:   # fully convolutional: a checkpoint runs at another input size
        size = {"input_size": (args.input_size, args.input_size)} if args.input_size else {}
        model = load_checkpoint(args.checkpoint, **size)
        labels, source = read_checkpoint(args.checkpoint)["meta"].get("labels") or (), args.checkpoint
    builds = dict([("fp32", ("fp32", "auto"))] + [(f"int8-{f}", ("int8", f)) for f in args.flavors.split(",")])
    manifests = {}
    for name, (precision, flavor) in builds.items():
        opts = BuildOptions(precision=precision, backend="onnxruntime", calib_data=args.data, int8_flavor=flavor,
                            calib_clips=args.calib_clips, calib_method=args.calib_method, force=True,
                            calibration_dir=os.path.join(args.out, "calibration", name))
        manifests[name] = build_engine(model, os.path.join(args.out, name), opts, labels=labels)
    engines = {name: open_backend(os.path.join(args.out, name), "onnxruntime", threads=args.threads) for name in builds}
    cfg = model.config
    clip = example_inputs(cfg, batch=1)
    feat, wh = engines["fp32"].encode(np.repeat(clip, cfg["K"], axis=0))
    window = {"feats": feat[None], "whs": wh[None]}
    calls = {}
    for name, engine in engines.items():
        calls[f"{name} encoder"] = lambda e=engine: e.encoder.run(None, {"frames": clip})
        calls[f"{name} head"] = lambda e=engine: e.head_session.run(None, window)
    timing = measure(calls, repeat=20, rounds=5)
    h, w = cfg["input_size"]
    record = {"source": source, "model": cfg, "threads": args.threads, "timing": timing, "engines": {}}
    for name in builds:
        entry = {part + "_speedup": timing[f"fp32 {part}"]["median_ms"] / timing[f"{name} {part}"]["median_ms"]
                 for part in ("encoder", "head")}
        gate = manifests[name]["calibration"]
        if gate is not None:
            last = gate["attempts"][-1]
            entry.update(frame_mAP_fp32=gate["frame_mAP_fp32"], frame_mAP=last["frame_mAP_int8"],
                         frame_mAP_drop=last["frame_mAP_drop"], agreement=last["agreement"],
                         kept_float=sum(len(v) for v in last["kept_float"].values()))
        record["engines"][name] = entry
    fp32_map = next((e["frame_mAP_fp32"] for e in record["engines"].values() if "frame_mAP_fp32" in e), None)
    record["engines"]["fp32"]["frame_mAP"] = fp32_map
    rows = []
    for name, entry in record["engines"].items():
        enc, head = timing[f"{name} encoder"], timing[f"{name} head"]
        fmap = "n/a" if args.random_weights or entry.get("frame_mAP") is None else f"{entry['frame_mAP']:.2f}"
        rows.append(f"| {name} | {fmap} | {enc['median_ms']:.2f} ({enc['p90_ms']:.2f}) | "
                    f"{entry['encoder_speedup']:.2f}x | {head['median_ms']:.2f} ({head['p90_ms']:.2f}) | "
                    f"{entry['head_speedup']:.2f}x |")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    flags = (f"--random-weights --backbone {args.backbone} --K {args.K}"
             if args.random_weights else f"--checkpoint {args.checkpoint}")
    for option in ("input_size", "calib_clips", "flavors", "out"):
        if getattr(args, option) != parser.get_default(option):
            flags += f" --{option.replace('_', '-')} {getattr(args, option)}"
    lines = [f"## {cfg['backbone']} K={cfg['K']} {h}x{w}, {source}", "",
             f"Command: `python benchmarks/int8_build.py {flags} --threads {args.threads}`",
             f"Machine: {machine}, onnxruntime {onnxruntime.__version__}, torch {torch.__version__}", "",
             "| engine | frame-mAP@0.5 (test) | encoder ms/clip (median, p90) | encoder vs FP32 | "
             "head ms/window (median, p90) | head vs FP32 |", "|---|---|---|---|---|---|", *rows, ""]
    for name, entry in record["engines"].items():
        if "frame_mAP_drop" in entry and not args.random_weights:
            lines.append(f"{name}: frame-mAP drop {entry['frame_mAP_drop']:.2f} points (gate limit 1.0), "
                         f"{entry['kept_float']} layer(s) kept in float, tubelet agreement "
                         f"{entry['agreement']['peak_agreement']:.3f}, box L1 "
                         f"{entry['agreement']['box_l1_grid_cells']:.3f} grid cells.")
    text = "\n".join(lines) + "\n\n"
    md, js = args.results + ".md", args.results + ".json"
    previous = "# INT8 vs FP32 engines on the CPU (ONNX Runtime)\n\n"
    if os.path.isfile(md):
        with open(md, encoding="utf-8") as f:
            previous = f.read().rstrip("\n") + "\n\n"   # notes added by hand may lack the blank line
    with atomic_write(md, "w", encoding="utf-8") as f:
        f.write(previous + text)
    runs = []
    if os.path.isfile(js):
        with open(js, encoding="utf-8") as f:
            runs = json.load(f)
    write_json(js, runs + [json.loads(json.dumps(record, default=str))])
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
