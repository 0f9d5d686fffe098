"""Build an engine folder from a checkpoint: export, FP16/INT8, accuracy gate, TensorRT, manifest.

  edge-stad build --backbone shufflenetv2 --int8      # the demo checkpoint, INT8, calibrated
                                                      # and gated on data/synth_bench
  edge-stad build --checkpoint runs/amma/best.pt --fp16 --backend tensorrt
  edge-stad build --checkpoint runs/menet/best.pt --int8          # a trained MENet / MENet-Lite
  edge-stad build --model menet-lite --random-weights --int8     # untrained, for speed only
  edge-stad build --checkpoint runs/stma_lite/best.pt --int8      # a trained STMA-Lite

Stages (each reports progress): export the encoder and head graphs to ONNX and check them
against PyTorch (error < 1e-4, relative to outputs larger than 1); FP16 graphs (FP32 I/O,
normalisation, micro-motion and decode), or INT8 explicit quantization (QDQ, per-channel
int8 weights; --int8-flavor tensorrt: symmetric int8 activations as TensorRT requires,
cpu: uint8 activations as ONNX Runtime's CPU kernels prefer) calibrated on real windows
of --calib-data, then the accuracy gate against FP32 on held-out windows: output
agreement and, on a labelled dataset, frame-mAP; if the drop exceeds --max-map-drop, the layers with the worst
measured quantization noise are kept in float and the gate rerun; if it still fails the
build is refused. Where the FP32 model itself detects nothing (frame-mAP below 1.0) the gate is
not applicable: the engine is built and the report and manifest say "not applicable", never
"passed". --random-weights engines are marked speed-only in the manifest (Runtime warns when it
opens one). TensorRT plans are built when TensorRT is importable (--backend auto) or
required (--backend tensorrt). The folder (default engines/<model>_<backbone>_k<K>_<precision>)
appears only when every stage passed: encoder.onnx, head.onnx, [*.plan], reference_io.npz,
manifest.json (config, versions, calibration summary, sha256 of every file). The INT8
report goes to calibration/<engine>/report.json.

MENet and MENet-Lite (the model is read from the checkpoint; --model menet-lite with
--random-weights) build encoder3d.onnx (T-frame clip -> 3D feature, what the runtime caches)
and detector.onnx (latest SRM frames + that feature -> YOLOv2 region map, decoded on the
host), into engines/<model>_<3D backbone>_t<T>_<precision>. FP16 keeps the SRM and the
channel attention's energy/softmax in FP32; INT8 calibrates on clips of --calib-data and their
latest frames, keeps the attention MatMul/Softmax in float, and gates on decoded-box agreement
and the frame-level frame-mAP. `edge-stad eval --engine` scores such an engine;
edge_stad.backends.open_backend opens it (a frame backend: edge_stad.eval.predict_frames).

STMA and STMA-Lite build encoder.onnx (one frame -> its features, cached per frame), encoder3d.onnx
(models with a 3D branch: the window's clip -> 3D feature) and head.onnx (one window's cached
outputs -> centre heatmap, movement, size, class logits; decoded on the host), into
engines/<model>_<backbone>_k<K>_<precision>. FP16 keeps the recognition branch in FP32; INT8
calibrates each graph on clips of --calib-data, keeps STA's attention MatMul/Softmax in float and
gates on tubelet agreement and frame-mAP. edge_stad.Runtime streams a causal one (STMA-Lite).

flow-fusion and flow-fusion-lite build detect.onnx (key frame + its frame pairs' flows, or the
micro-motion frames -> SSD loc/conf, decoded on the host) and, where the flow network learns,
flow.onnx (a frame pair -> its flow, run once per new frame by the Runtime), into
engines/<model>_<backbone>_<motion>_<fusion>_<precision>. FP16 and INT8 reduce the detector only:
the flow network stays FP32. A --motion dis model's flow is OpenCV DIS, computed on the host. The
flow graph warps with GridSample, which TensorRT parses from 8.5 on: an older TensorRT gets no plan
(the build says so; use --backend onnxruntime).

Without --checkpoint the demo checkpoint (runs/demo/best.pt, from `edge-stad demo`) is
used; --random-weights builds an untrained model, for speed benchmarks only.
"""
import os
import shlex
import sys

from edge_stad.defaults import GATE_MIN_FP32_MAP, MAX_MAP_DROP
from edge_stad.model_config import FAMILIES, SNIPPET, SSD

HELP = "checkpoint -> ONNX -> FP16/INT8 (calibrated, gated) -> engine folder (ONNX Runtime or TensorRT)"
MODELS = FAMILIES
TUBELET_FAMILIES = ("amma",) + SNIPPET   # a 2D backbone and K frames or clips per tubelet (--backbone, --K)
DEMO_CHECKPOINTS = (os.path.join("runs", "demo", "best.pt"), os.path.join("runs", "demo", "last.pt"))


def add_model_arguments(p):
    src = p.add_argument_group("model")
    src.add_argument("--checkpoint", help="edge_stad (AMMA, MENet, MENet-Lite) or authors' AMMA checkpoint "
                                          "(default: the demo's)")
    src.add_argument("--random-weights", action="store_true",
                     help="build an untrained model (speed benchmarks only; never for detection)")
    src.add_argument("--model", choices=MODELS,
                     help="model family: the checkpoint's (must match if given); with --random-weights default amma")
    src.add_argument("--backbone", choices=("resnet18", "mobilenetv2", "shufflenetv2"),
                     help="AMMA, STMA-Lite and flow-fusion-lite; must match the checkpoint; with --random-weights "
                          "default shufflenetv2 (flow-fusion-lite: mobilenetv2)")
    src.add_argument("--K", type=int, help="AMMA's clips or STMA's frames per tubelet (must match the checkpoint; "
                                           "random default 3 for AMMA, 5 for STMA)")
    src.add_argument("--input-size", type=int,
                     help="square input size (default: the checkpoint's; 128 with --random-weights)")
    src.add_argument("--num-classes", type=int, default=8, help="classes for --random-weights (default 8)")


def add_arguments(p):
    add_model_arguments(p)
    prec = p.add_argument_group("precision").add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_const", const="fp16", dest="precision",
                      help="FP16 graphs (for GPUs; TensorRT FP16 plans)")
    prec.add_argument("--int8", action="store_const", const="int8", dest="precision",
                      help="calibrated, accuracy-gated INT8 (default precision: FP32)")
    p.set_defaults(precision="fp32")
    cal = p.add_argument_group("INT8 calibration and accuracy gate")
    cal.add_argument("--calib-data", default=os.path.join("data", "synth_bench"),
                     help="ACT dataset, video file/folder or .npy windows (default data/synth_bench)")
    cal.add_argument("--calib-clips", type=int, default=64, help="calibration windows (default 64)")
    cal.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax")
    cal.add_argument("--int8-flavor", choices=("auto", "tensorrt", "cpu"), default="auto",
                     help="tensorrt: symmetric int8 QDQ TensorRT builds (slow on ONNX Runtime CPUs); cpu: uint8 "
                          "activations ONNX Runtime's CPU kernels are fast with; auto: tensorrt when TensorRT plans "
                          "are built here, else cpu")
    cal.add_argument("--max-map-drop", type=float, default=MAX_MAP_DROP,
                     help="refuse INT8 if frame-mAP drops more than this many points (default %(default)s)")
    cal.add_argument("--min-fp32-map", type=float, default=GATE_MIN_FP32_MAP,
                     help="the gate is not applicable (the engine is built, marked so) where the FP32 model's "
                          "frame-mAP is below this many points: a model that detects nothing (default %(default)s)")
    out = p.add_argument_group("output")
    out.add_argument("--out", help="engine folder (default engines/<name>)")
    out.add_argument("--force", action="store_true", help="replace an existing engine folder")
    out.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                     help="auto: TensorRT plans too when TensorRT is importable (default)")
    add_decode_argument(out)
    out.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis (multi-camera batching)")
    trt = p.add_argument_group("TensorRT")
    trt.add_argument("--workspace-mb", type=int, default=1024)
    trt.add_argument("--dla-core", type=int, help="Jetson DLA core (FP16/INT8, GPU fallback)")
    trt.add_argument("--timing-cache", help="TensorRT timing cache file, read and updated")
    trt.add_argument("--trt-calib-cache", action="store_true",
                     help="also write TensorRT's implicit INT8 calibration cache (TensorRT <= 10, for DLA)")


def add_decode_argument(p):
    p.add_argument("--decode", choices=("graph", "host"),
                   help="where tubelets are decoded. graph (AMMA's default): head.onnx runs the peak filter, the "
                        "TopK and the trajectory branch at the top cells only (about half the head's work) and "
                        "returns the tubelet rows; host: head.onnx returns the hm, mov, wh maps (MENet's only "
                        "choice)")


def load_model(args):
    """The model to build and its class names, or a CheckpointError/ConfigError saying what to do."""
    from edge_stad.errors import CheckpointError

    if args.random_weights:
        if args.checkpoint:
            raise CheckpointError("--random-weights and --checkpoint exclude each other")
        import torch

        from edge_stad.models import create_model

        torch.manual_seed(0)
        family = args.model or "amma"
        _amma_options_only(args, family)
        options = {k: v for k, v in (("backbone", args.backbone), ("K", args.K)) if v is not None}
        if family == "amma":
            options = dict({"backbone": "shufflenetv2", "K": 3}, **options)
        model = create_model(family, num_classes=args.num_classes, input_size=args.input_size or 128, **options)
        return model.eval(), ()
    path = args.checkpoint
    if path is None:
        path = next((p for p in DEMO_CHECKPOINTS if os.path.isfile(p)), None)
        if path is None:
            raise CheckpointError("no checkpoint given and no demo checkpoint in runs/demo/: run `edge-stad demo` "
                                  "first (trains one in a few minutes on CPU), pass --checkpoint PATH, or pass "
                                  "--random-weights for a speed-only build")
        print(f"using the demo checkpoint {path}")
    from edge_stad.models.checkpoint import load_checkpoint, read_checkpoint

    checkpoint = read_checkpoint(path)
    family = (checkpoint["model_config"] or {}).get("name", "amma")  # the authors' checkpoints are AMMA's
    if args.model and args.model != family:
        raise CheckpointError(f"{path} holds a {family} model, not {args.model}")
    _amma_options_only(args, family)
    overrides = {k: v for k, v in (("backbone", args.backbone), ("K", args.K)) if v is not None}
    if args.input_size:  # fully convolutional: a checkpoint runs at another input size
        overrides["input_size"] = (args.input_size, args.input_size)
    model = load_checkpoint(path, **overrides)
    return model, tuple(checkpoint["meta"].get("labels") or ())


def _amma_options_only(args, family):
    from edge_stad.errors import ConfigError

    given = [f"--{k}" for k in ("backbone", "K") if getattr(args, k) is not None
             and family not in TUBELET_FAMILIES and (k == "K" or family not in SSD)]
    if given:
        raise ConfigError(f"{' and '.join(given)} describe AMMA and STMA models"
                          f"{' and flow fusion' * (given == ['--backbone'])}, not {family}")


def run(args):
    return build_from_args(args)


def build_from_args(args):
    """Build from parsed arguments; options the parser lacks (``edge-stad export``) keep their defaults."""
    from edge_stad.build.pipeline import BuildOptions, build_engine, engine_name
    from edge_stad.engines.onnxruntime_backend import is_frame_model

    model, labels = load_model(args)
    names = [f for f in BuildOptions.__dataclass_fields__ if f != "calibration_dir"]
    opts = BuildOptions(**{f: getattr(args, f) for f in names if getattr(args, f, None) is not None})
    if getattr(args, "decode", None):
        opts.decode_in_graph = args.decode == "graph"
    out = args.out or os.path.join("engines", engine_name(model.config, args.precision))
    command = "edge-stad " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    manifest = build_engine(model, out, opts, labels=labels, command=command)
    print(f"\nengine: {os.path.abspath(out)} ({manifest['precision']}, {manifest['backend']})")
    verdict = (manifest["calibration"] or {}).get("verdict", "")
    if verdict.startswith("not applicable"):
        print(f"warning: INT8 accuracy gate {verdict}: the engine's accuracy is unchecked", file=sys.stderr)
    print(f"evaluate it: edge-stad eval --data DATASET --engine {out}")
    if is_frame_model(model.config):
        print(f"python: edge_stad.backends.open_backend({out!r}) (a frame backend)")
        return 0
    print(f"run it: edge-stad run VIDEO --engine {out} --out annotated.mp4")
    print(f"python: edge_stad.Runtime({out!r})")
    return 0
