"""Benchmark engines: params, MACs, FPS, latency, time per stage, memory and power, against the FP32
PyTorch model measured in the same run.

For every model x backbone x K x precision x backend asked for, the engine is built from the
checkpoint (or, without one, from an untrained model: random weights, speed only, and labelled so in
every output), then a fixed synthetic video (the synthetic benchmark's test videos rendered in memory,
no dataset needed) streams through edge_stad.Runtime frame by frame, in interleaved rounds with the
FP32 PyTorch model behind the same Runtime. Each engine gets: params and paper-convention GMAC at
paper Table 3's setting (288x288, whatever the timed size), the true streaming GMAC per clip at the
timed size, engine size, frames/s and its ratio to PyTorch FP32, per-push latency p50/p90/p99 after
the warm-up pushes, ms per frame in preprocess/encoder/head/decode/link/results, peak RSS, GPU memory,
achieved GMAC/s as a share of a large GEMM's in the same backend and precision, and telemetry sampled
in the background: jtop on Jetson (power, loads, temperatures, clocks, nvpmodel -> J per clip, frames/s
per W), NVML on desktop NVIDIA GPUs, psutil everywhere. Whatever cannot be measured here is reported as
unavailable with the reason; backends that are not installed are skipped, and listed with why. With
--data (a labelled ACT set such as `edge-stad synth` output) each engine's frame-/video-mAP is measured
too, and INT8 is calibrated and gated on that set instead of synthetic training frames.

  edge-stad bench                                   # ShuffleNetV2 K=3, FP32 + INT8, every installed backend
  edge-stad bench --backbones resnet18,mobilenetv2,shufflenetv2 --precisions fp32,int8 --backend onnxruntime
  edge-stad bench --checkpoint runs/demo/best.pt --data data/synth_bench       # + accuracy of each engine
  edge-stad bench --device cuda --backends tensorrt,onnxruntime,torch --precisions fp32,fp16,int8
  edge-stad bench --input-size 288 --frames 600 --out benchmarks/results/bench_288 --json bench_288.json

Writes OUT.md (tables ready for a README), OUT.csv (one row per engine), OUT.json (or --json FILE: one
record per engine with machine, versions and options), OUT_fps.png (frames/s vs GMAC per backbone and
precision) and OUT_stages.png (time per stage). Jetson procedure (nvpmodel, jetson_clocks, thermal
steady state): benchmarks/README.md.
"""
import os
import shlex
import sys

HELP = "params, MACs, FPS, latency, time per stage, memory and power of engines vs PyTorch FP32, in one run"


def add_arguments(p):
    what = p.add_argument_group("what to benchmark (comma-separated lists)")
    what.add_argument("--models", default="amma",
                      help="amma, menet-lite, menet, stma-lite, flow-fusion-lite (default amma; MENet streams frame "
                           "by frame, its 3D branch every frame; STMA-Lite encodes each frame once and runs its head "
                           "every frame; flow-fusion-lite runs its flow network once per frame pair and its detector "
                           "every frame)")
    what.add_argument("--backbones", "--backbone",
                      help="resnet18, mobilenetv2, shufflenetv2; MENet's 3D branch: shufflenetv2, mobilenetv2, "
                           "resnext101 (default shufflenetv2, menet resnext101; with --checkpoint its own)")
    what.add_argument("--K", help="frames or clips per tubelet of AMMA (default 3) and STMA-Lite (default 5); with "
                      "--checkpoint its own")
    what.add_argument("--precisions", "--precision", default="fp32,int8", help="fp32, fp16, int8 (default fp32,int8)")
    what.add_argument("--backends", "--backend", default="onnxruntime,tensorrt,torch",
                      help="onnxruntime, tensorrt, torch (default: all; those not installed are skipped, with why)")
    what.add_argument("--device", default="auto", help="auto (a CUDA GPU where one is usable), cpu, cuda or cuda:N")
    weights = p.add_argument_group("weights").add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="benchmark this trained checkpoint (its backbone and K)")
    weights.add_argument("--random-weights", action="store_true",
                         help="untrained models built on the fly, for speed only (the default without --checkpoint)")
    size = p.add_argument_group("model input")
    size.add_argument("--input-size", type=int,
                      help="square input size timed (default 128 with random weights, else the checkpoint's); the "
                           "params and paper GMAC columns are always counted at 288x288")
    size.add_argument("--num-classes", type=int, default=8, help="classes of random-weight models (default 8)")
    timing = p.add_argument_group("timing")
    timing.add_argument("--frames", type=int, default=300, help="frames of the synthetic video (default 300)")
    timing.add_argument("--warmup", type=int, default=50,
                        help="pushes per stream excluded from the statistics (default 50)")
    timing.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    timing.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime and PyTorch (default: all cores)")
    timing.add_argument("--telemetry-interval", type=float, default=0.1, help="seconds between samples (default 0.1)")
    data = p.add_argument_group("accuracy and INT8 calibration")
    data.add_argument("--data", metavar="DIR", help="labelled ACT set: frame-/video-mAP of every engine; INT8 is "
                                                    "calibrated and gated on it")
    data.add_argument("--calib-clips", type=int, default=32, help="INT8 calibration windows (default 32)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default=os.path.join("runs", "bench", "bench"),
                     help="base path of the .md, .csv, .json and .png files (default runs/bench/bench)")
    out.add_argument("--json", metavar="FILE", help="write the records to FILE instead of OUT.json")
    out.add_argument("--work", default=os.path.join("runs", "bench"),
                     help="where engines and calibration windows are built (default runs/bench)")
    out.add_argument("--no-plots", action="store_true", help="no PNG plots")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def _names(text):
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


def _ints(text, flag):
    from edge_stad.errors import ConfigError

    try:
        return tuple(int(t) for t in _names(text)) if text else None
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}") from None


def config_from_args(args):
    from edge_stad.bench.harness import BenchConfig

    return BenchConfig(
        models=_names(args.models) or (), backbones=_names(args.backbones), Ks=_ints(args.K, "--K"),
        precisions=_names(args.precisions) or (), backends=_names(args.backends) or (), device=args.device,
        checkpoint=args.checkpoint, input_size=args.input_size, num_classes=args.num_classes, frames=args.frames,
        warmup=args.warmup, rounds=args.rounds, threads=args.threads, data=args.data, calib_clips=args.calib_clips,
        telemetry_interval=args.telemetry_interval, work=args.work).check()


def run(args):
    from tqdm import tqdm

    from edge_stad.bench.harness import run_bench
    from edge_stad.bench.report import write_outputs

    config = config_from_args(args)
    command = "edge-stad bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["bench"] \
        else None
    doc = run_bench(config, command=command, log=tqdm.write, progress=not args.no_progress)
    text, written, notes = write_outputs(doc, args.out, args.json, plots=not args.no_plots)
    print("\n" + text)
    for note in notes:
        print(note)
    for path in written:
        print("wrote", path)
    return 0
