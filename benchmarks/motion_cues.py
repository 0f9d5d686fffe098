"""Which motion cue pays on an edge CPU: INT8 engines of detectors trained at one budget, side by side.

    python benchmarks/train_ablation.py --variants rgb_k1,mm_diff_k3,mm_k3,menet_lite,ffl_flow,ffl_dis \
        --minutes 60 --parallel --results benchmarks/results/motion_cues_training
    python benchmarks/motion_cues.py --training benchmarks/results/motion_cues_training.json

For every trained variant of ``--training`` (train_ablation's JSON; checkpoints under ``--runs``):
build the gated INT8 engine for ONNX Runtime's CPU kernels, calibrated and gated on ``--data`` (the
synthetic benchmark), evaluate it on the test split as the Runtime streams it (frame-mAP@0.5,
video-mAP@0.5, the online linker for every family), then time each engine streaming the same synthetic
video through ``edge_stad.Runtime`` (all cores), in ``--rounds`` interleaved rounds (the median counts),
one engine after another so that whatever else loads the machine hits them alike. A DIS-flow engine's
time includes OpenCV DIS on the host. Writes OUT.md, OUT.json and OUT.png (INT8 frames/s vs frame-mAP),
and, where the training JSON holds the flow-fusion paper's four fusion blocks (Table 2: ffl_flow is
M-Concat, ffl_sum, ffl_average, ffl_stfp), OUT_fusion.md with their FP32 accuracy (ROAD's linker, the
paper's) from the same training run.
"""
import argparse
import json
import os
import platform
import re
import statistics
import sys
import time

FUSIONS = {"ffl_flow": "M-Concat", "ffl_sum": "M-Sum", "ffl_average": "M-Average", "ffl_stfp": "STFP"}
CUES = {   # variant -> the motion cue it stands for
    "rgb_k1": "none (RGB only)", "mm_diff_k3": "raw RGB difference (AMMA MM_Diff)",
    "mm_k3": "micro-motion (AMMA)", "menet_lite": "SRM (MENet-Lite)",
    "ffl_flow": "learned flow network (flow-fusion-lite)", "ffl_dis": "precomputed DIS flow (flow-fusion-lite)",
}


def training_command(path):
    """The command line train_ablation.py wrote into the markdown beside its JSON ``path``."""
    with open(os.path.splitext(path)[0] + ".md", encoding="utf-8") as f:
        match = re.search(r"^Command: `(.*)`$", f.read(), re.M)
    return match.group(1) if match else f"see {path}"


def build(record, args, log):
    from edge_stad.build.pipeline import BuildOptions, build_engine
    from edge_stad.models.checkpoint import load_checkpoint, read_checkpoint

    checkpoint = os.path.join(args.runs, record["variant"], "last.pt")
    out = os.path.join(args.work, "engines", record["variant"])
    opts = BuildOptions(precision="int8", backend="onnxruntime", int8_flavor="cpu", calib_data=args.data,
                        calib_clips=args.calib_clips, gate_windows=args.gate_windows, force=True,
                        calibration_dir=os.path.join(args.work, "calibration"))
    labels = tuple(read_checkpoint(checkpoint)["meta"].get("labels") or ())
    manifest = build_engine(load_checkpoint(checkpoint).eval(), out, opts, labels=labels, log=log)
    return out, manifest["calibration"]


def accuracy(engine, dataset):
    from edge_stad.backends import open_backend
    from edge_stad.eval.predictors import evaluate_backend_of_any_kind

    ev = evaluate_backend_of_any_kind(open_backend(engine, "onnxruntime"), dataset)
    return 100 * float(ev.frame.mean), 100 * float(ev.video[0.5].mean)


def frames_per_second(engine, frames, warmup):
    """Frames/s of one pass of ``frames`` through a Runtime on ``engine`` (the first ``warmup`` pushes excluded)."""
    from edge_stad import Runtime

    runtime = Runtime(engine, "onnxruntime")
    for frame in frames[:warmup]:
        runtime.push(frame)
    start = time.perf_counter()
    for frame in frames[warmup:]:
        runtime.push(frame)
    runtime.flush()
    return (len(frames) - warmup) / (time.perf_counter() - start)


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in records:   # a legend, not labels: the slow models sit close together
        ax.scatter(r["int8_fps"], r["int8_frame_mAP"], s=40, label=f"{r['cue']}: {r['int8_fps']:.0f} fps")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("INT8 frames/s (ONNX Runtime, CPU, Runtime.push)")
    ax.set_ylabel("INT8 frame-mAP@0.5 (synthetic test split)")
    ax.set_title("Motion cues at one training budget")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(records, machine):
    command = " ".join(["python"] + sys.argv)
    lines = ["# Motion cues: INT8 engines of detectors trained at one budget", "",
             f"Training: `{records[0]['training_command']}`", f"Engines and timing: `{command}`",
             f"Machine: {machine}", "",
             "| motion cue | variant | params (M) | GMAC/frame | steps | FP32 frame-mAP | INT8 frame-mAP | "
             "INT8 video-mAP@0.5 | INT8 gate | INT8 frames/s |", "|" + "---|" * 10]
    for r in records:
        lines.append(f"| {r['cue']} | {r['variant']} | {r['params_m']:.2f} | {r['gmac_per_frame']:.3f} | {r['steps']} "
                     f"| {r['fp32_frame_mAP']:.1f} | {r['int8_frame_mAP']:.1f} | {r['int8_video_mAP']:.1f} | "
                     f"{r['gate'].split(':')[0]} | {r['int8_fps']:.0f} |")
    return "\n".join(lines) + "\n"


def fusion_table(trained, training):
    """The fusion blocks' rows of the training run (FP32 PyTorch, evaluated by the trainer: ROAD's linker)."""
    lines = ["# Flow-fusion fusion blocks (the paper's Table 2) at the synthetic budget", "",
             f"Training: `{training_command(training)}` (flow-fusion-lite, MobileNetV2 SSDLite, learned small "
             "flow network, 128x128; FP32 PyTorch evaluated on the test split, ROAD's online linker)", "",
             "| fusion | variant | params (M) | GMAC/frame | steps | frame-mAP@0.5 | video-mAP@0.2 | video-mAP@0.5 |",
             "|" + "---|" * 8]
    for name, block in FUSIONS.items():
        r = trained[name]
        lines.append(f"| {block} | {name} | {r['params_m']:.2f} | {r['gmac_per_frame']:.3f} | {r['steps']} | "
                     f"{r['frame_mAP']:.1f} | {r['video_mAP']['0.2']:.1f} | {r['video_mAP']['0.5']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training", required=True, help="train_ablation.py's JSON of the trained variants")
    parser.add_argument("--runs", default=os.path.join("runs", "ablation"), help="their checkpoints' folder")
    parser.add_argument("--variants", default=",".join(CUES), help=f"comma-separated, of {', '.join(CUES)}")
    parser.add_argument("--data", default=os.path.join("data", "synth_bench"))
    parser.add_argument("--work", default=os.path.join("runs", "motion_cues"))
    parser.add_argument("--calib-clips", type=int, default=32)
    parser.add_argument("--gate-windows", type=int, default=16)
    parser.add_argument("--frames", type=int, default=500, help="frames streamed per timing round")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results", "motion_cues"))
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in CUES]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(CUES)}")
    with open(args.training, encoding="utf-8") as f:
        trained = {r["variant"]: r for r in json.load(f)}
    missing = [n for n in names if n not in trained]
    if missing:
        parser.error(f"{args.training} has no {missing}")

    import onnxruntime
    import torch

    from edge_stad.bench.results import save_results
    from edge_stad.data.act import ActDataset
    from edge_stad.data.synth.generate import synthetic_stream

    dataset = ActDataset(args.data)
    records = []
    for name in names:
        t = trained[name]
        engine, calibration = build(t, args, lambda line, name=name: print(f"[{name}] {line}", flush=True))
        frame_map, video_map = accuracy(engine, dataset)
        records.append({"variant": name, "cue": CUES[name], "engine": engine, "params_m": t["params_m"],
                        "gmac_per_frame": t["gmac_per_frame"], "steps": t["steps"],
                        "fp32_frame_mAP": t["frame_mAP"], "fp32_video_mAP": t["video_mAP"]["0.5"],
                        "int8_frame_mAP": frame_map, "int8_video_mAP": video_map,
                        "gate": calibration["verdict"], "calibration": calibration,
                        "training_command": training_command(args.training)})
        print(f"[{name}] INT8 frame-mAP {frame_map:.1f}, video-mAP@0.5 {video_map:.1f}", flush=True)
    frames = synthetic_stream(args.frames + args.warmup, split="test")
    timings = {r["variant"]: [] for r in records}
    for round_ in range(args.rounds):
        for r in records:
            timings[r["variant"]].append(frames_per_second(r["engine"], frames, args.warmup))
            print(f"[round {round_ + 1}] {r['variant']}: {timings[r['variant']][-1]:.1f} frames/s", flush=True)
    for r in records:
        r["int8_fps_rounds"] = timings[r["variant"]]
        r["int8_fps"] = statistics.median(timings[r["variant"]])
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
               f"onnxruntime {onnxruntime.__version__}")
    save_results(args.results, table(records, machine), {"machine": machine, "records": records})
    plot(records, args.results + ".png")
    if all(name in trained for name in FUSIONS):
        save_results(args.results + "_fusion", fusion_table(trained, args.training),
                     [trained[name] for name in FUSIONS])
    return 0


if __name__ == "__main__":
    sys.exit(main())
