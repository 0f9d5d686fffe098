"""From nothing to a running action detector, on the built-in synthetic benchmark.

Generates the synthetic `bench` set if DATA has none (about 10 seconds), trains a
small AMMA-ShuffleNetV2 (K=3, 128x128, micro-motion) on the CPU for --minutes, builds
its INT8 engine (`edge-stad build --int8`, calibrated and accuracy-gated), then streams
the held-out test videos through edge_stad.Runtime frame by frame: prints the engine's
frame-mAP / video-mAP and frames per second, and writes an annotated video of the first
test videos (tube boxes, class, score, tube id). No dataset, GPU or download needed.

  edge-stad demo                      # data/synth_bench, runs/demo, 5 minutes of training
  edge-stad demo --minutes 20         # the budget behind the numbers in benchmarks/README.md
  edge-stad demo --no-engine          # stop after training
"""
import os

HELP = "synthetic set -> train AMMA-ShuffleNetV2 on CPU -> INT8 engine -> stream the test videos (mAP, FPS, video)"
ANNOTATED_VIDEOS = 12  # test videos drawn into the annotated demo video


def add_arguments(p):
    p.add_argument("--data", default=os.path.join("data", "synth_bench"),
                   help="synthetic dataset folder, generated if absent (default data/synth_bench)")
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="run folder (default runs/demo)")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget in minutes (default 5)")
    p.add_argument("--backbone", default="shufflenetv2", choices=("resnet18", "mobilenetv2", "shufflenetv2"))
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    p.add_argument("--synth-preset", default="bench", choices=("tiny", "small", "bench"),
                   help="size of the synthetic set generated when DATA has none (default bench)")
    p.add_argument("--engine", default=os.path.join("engines", "amma_shufflenetv2_k3_int8"),
                   help="where the INT8 engine goes (default engines/amma_shufflenetv2_k3_int8)")
    p.add_argument("--no-engine", action="store_true", help="stop after training (no build, no streaming)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args):
    from edge_stad.data.act import is_act_dataset
    from edge_stad.train.trainer import TrainConfig, Trainer

    if is_act_dataset(args.data):
        print(f"using the synthetic set in {args.data}")
    else:
        from edge_stad.data.synth.generate import generate_dataset

        print(f"generating the synthetic benchmark in {args.data} ...")
        generate_dataset(args.data, preset=args.synth_preset, seed=args.seed, progress=not args.no_progress)
    cfg = TrainConfig(data=args.data, out=args.out, preset="synthetic", backbone=args.backbone,
                      time_budget=args.minutes, progress=not args.no_progress)
    result = Trainer(cfg).fit()
    final = result["history"][-1] if result["history"] else None
    print(f"\ncheckpoint: {result['best'] or result['last']}")
    if final:
        print(f"test split: frame-mAP@0.5 {final['frame_mAP']:.1f}  video-mAP@0.5 {final['video_mAP@0.5']:.1f}")
    print(f"log: {os.path.join(args.out, 'metrics.csv')}")
    ckpt = result["best"] or result["last"]
    if args.no_engine:
        print(f"next: edge-stad build --checkpoint {ckpt} --int8 --calib-data {args.data}   (an INT8 engine)")
        return 0
    from edge_stad import cli

    print("\nbuilding the INT8 engine ...")
    if cli.main(["build", "--checkpoint", ckpt, "--int8", "--calib-data", args.data, "--out", args.engine,
                 "--force"]) != 0:
        return 1
    annotated = os.path.join(args.out, "annotated.mp4")
    print(f"\nstreaming the test videos through edge_stad.Runtime({args.engine!r}) ...")
    evaluation, stats = stream_test_videos(args.engine, args.data, annotated, not args.no_progress)
    print(f"engine on the test split: frame-mAP@0.5 {100 * evaluation.frame.mean:.1f}  "
          f"video-mAP@0.5 {100 * evaluation.video[0.5].mean:.1f}  ({stats['frames']} frames streamed at "
          f"{stats['fps']:.0f} frames/s on this CPU, video decoding excluded)")
    print(f"annotated video: {annotated}")
    print(f"next: edge-stad run VIDEO --engine {args.engine} --out annotated.mp4")
    return 0


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

    runtime = Runtime(engine, min_tube_score=0.2)
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
