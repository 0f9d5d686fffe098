"""From nothing to a running action detector, on the built-in synthetic benchmark.

Generates the synthetic `bench` set if DATA has none (about 10 seconds), trains a small
AMMA-ShuffleNetV2 (K=3, 128x128, micro-motion) from scratch on the CPU for --steps optimizer
steps (the `demo` training preset), checks that it learned (frame-mAP@0.5 on the test split
of at least --min-map, else it says so and exits 1), builds its INT8 engine into OUT/engine_int8
(calibrated and accuracy-gated, as `edge-stad build --int8`), then streams the held-out test
videos through edge_stad.Runtime frame by frame: prints the engine's frame-mAP / video-mAP and
frames per second, and writes an annotated video of the first test videos (tube boxes, class,
score, tube id). No dataset, GPU or download needed.

The budget is a number of steps, the sample order is seeded and the data are not augmented at
random, so the model depends on --steps, --seed and the number of torch threads, not on how busy
the machine is: a busy machine gives the same model later. The summary prints the sha256 of the
final weights to check that.

  edge-stad demo                      # data/synth_bench, runs/demo, the default step budget
  edge-stad demo --steps 2000         # a longer run, a better model
  edge-stad demo --no-engine          # stop after training
"""
import os

HELP = "synthetic set -> train AMMA-ShuffleNetV2 on CPU -> INT8 engine -> stream the test videos (mAP, FPS, video)"
ANNOTATED_VIDEOS = 12  # test videos drawn into the annotated demo video
#: Optimizer steps of the demo (batch 16, the `demo` preset): what the README's main command, install included,
#: affords within 10 minutes on 2 idle cores (benchmarks/results/demo_recipe.md has the measurements).
DEMO_STEPS = 400
#: Below this test frame-mAP@0.5 the demo calls the model untrained and stops: an engine of it would detect nothing.
MIN_MAP = 10.0


def add_arguments(p):
    p.add_argument("--data", default=os.path.join("data", "synth_bench"),
                   help="synthetic dataset folder, generated if absent (default data/synth_bench)")
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="run folder (default runs/demo)")
    p.add_argument("--steps", type=int, default=DEMO_STEPS,
                   help="training budget in optimizer steps (default %(default)s; a busy machine takes longer, never "
                        "trains less)")
    p.add_argument("--backbone", default="shufflenetv2", choices=("resnet18", "mobilenetv2", "shufflenetv2"))
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    p.add_argument("--synth-preset", default="bench", choices=("tiny", "small", "bench"),
                   help="size of the synthetic set generated when DATA has none (default bench)")
    p.add_argument("--engine", help="where the INT8 engine goes (default OUT/engine_int8; `edge-stad build` "
                                    "writes engines/ and leaves this one alone)")
    p.add_argument("--min-map", type=float, default=MIN_MAP,
                   help="exit 1, without an engine, if the trained model's test frame-mAP@0.5 is below this "
                        "(default %(default)s)")
    p.add_argument("--no-engine", action="store_true", help="stop after training (no build, no streaming)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args):
    import sys
    import time

    import torch

    from edge_stad.data.act import is_act_dataset
    from edge_stad.train.trainer import TrainConfig, Trainer, weights_sha256

    began = time.monotonic()
    if is_act_dataset(args.data):
        print(f"using the synthetic set in {args.data}")
    else:
        from edge_stad.data.synth.generate import generate_dataset

        print(f"generating the synthetic benchmark in {args.data} ...")
        generate_dataset(args.data, preset=args.synth_preset, seed=args.seed, progress=not args.no_progress)
    cfg = TrainConfig(data=args.data, out=args.out, preset="demo", backbone=args.backbone, max_steps=args.steps,
                      progress=not args.no_progress)
    trainer = Trainer(cfg)
    print(f"training {args.steps} steps on {torch.get_num_threads()} threads (seed {trainer.cfg.seed}) ...")
    trained = time.monotonic()
    result = trainer.fit()
    trained = time.monotonic() - trained
    final = result["history"][-1]
    ckpt = result["best"] or result["last"]
    summary = [f"training: {trainer.step} steps on {torch.get_num_threads()} threads in {_clock(trained)}; weights "
               f"sha256 {weights_sha256(trainer.model)[:16]} (the same for the same steps, seed and threads)",
               f"FP32 model (PyTorch), test split: frame-mAP@0.5 {final['frame_mAP']:.1f}  "
               f"video-mAP@0.5 {final['video_mAP@0.5']:.1f}"]
    print(f"\ncheckpoint: {ckpt}\nlog: {os.path.join(args.out, 'metrics.csv')}")
    if final["frame_mAP"] < args.min_map:
        print(f"edge-stad demo: error: after {trainer.step} steps the model reaches frame-mAP@0.5 "
              f"{final['frame_mAP']:.1f} on the test split, below the floor of {args.min_map:g}: it has not learned "
              "enough to be worth an engine (train longer: --steps)", file=sys.stderr)
        return 1
    if args.no_engine:
        _summary(summary, began)
        print(f"next: edge-stad build --checkpoint {ckpt} --int8 --calib-data {args.data}   (an INT8 engine)")
        return 0
    engine = args.engine or os.path.join(args.out, "engine_int8")
    _build_engine(ckpt, engine, args)
    annotated = os.path.join(args.out, "annotated.mp4")
    print(f"\nstreaming the test videos through edge_stad.Runtime({engine!r}) ...")
    evaluation, stats = stream_test_videos(engine, args.data, annotated, not args.no_progress)
    summary.append(f"INT8 engine (ONNX Runtime), test split: frame-mAP@0.5 {100 * evaluation.frame.mean:.1f}  "
                   f"video-mAP@0.5 {100 * evaluation.video[0.5].mean:.1f}; {stats['frames']} frames streamed at "
                   f"{stats['fps']:.0f} frames/s on this CPU (Runtime.push/flush time, video decoding excluded)")
    _summary(summary, began)
    print(f"annotated video: {annotated}")
    print(f"next: edge-stad run VIDEO --engine {engine} --out annotated.mp4")
    return 0


def _clock(seconds):
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def _summary(lines, began):
    import time

    print("\ndemo summary\n" + "".join(f"  {line}\n" for line in lines)
          + f"  total: {_clock(time.monotonic() - began)} (this command; the install not included)")


def _build_engine(ckpt, engine, args):
    """The demo's INT8 engine, in the demo's run folder (its calibration report beside it)."""
    from edge_stad.build.pipeline import BuildOptions, build_engine
    from edge_stad.models.checkpoint import load_checkpoint, read_checkpoint

    print("\nbuilding the INT8 engine ...")
    opts = BuildOptions(precision="int8", calib_data=args.data, force=True,
                        calibration_dir=os.path.join(args.out, "calibration"))
    labels = read_checkpoint(ckpt)["meta"].get("labels") or ()
    build_engine(load_checkpoint(ckpt), engine, opts, labels=labels, command="edge-stad demo")


def stream_test_videos(engine, data, annotated, progress=True):
    """Stream every test video of split 1 through a Runtime (one stream each); evaluate the windows it
    processed with the ACT protocol and draw the first :data:`ANNOTATED_VIDEOS` videos (2x) into ``annotated``."""
    import sys

    import cv2
    from tqdm import tqdm

    from edge_stad.data.act import ActDataset
    from edge_stad.eval.detections import Detections
    from edge_stad.eval.evaluate import evaluate, split_videos
    from edge_stad.runtime.drawing import VideoSink, draw_tubes
    from edge_stad.runtime.stream import Runtime

    runtime = Runtime(engine)
    dataset = ActDataset(data, split=1)
    videos = split_videos(dataset.gt, 1)
    windows = {}
    with VideoSink(annotated, 25.0) as sink:
        for i, video in enumerate(tqdm(videos, unit="video", disable=not progress, file=sys.stderr)):
            frames = [dataset.read_frame(video, f) for f in range(1, dataset.gt.nframes[video] + 1)]
            results = []
            for frame in frames:
                results += runtime.push(frame)
            results += runtime.flush()
            windows[video] = [w for _, w in runtime.windows()]
            if i < ANNOTATED_VIDEOS:
                for result in results:
                    tubes = result.tubes.copy()
                    tubes[:, 3:] *= 2
                    big = cv2.resize(frames[result.frame - 1], None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
                    sink.write(draw_tubes(big, tubes, runtime.labels))
    detections = Detections(K=runtime.K, clip_len=runtime.clip_len, mode="stream", labels=tuple(dataset.labels),
                            windows=windows, frames={}, tubes={})
    return evaluate(dataset.gt, detections, split=1), runtime.stats()
