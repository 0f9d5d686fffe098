"""From nothing to a trained action detector, on the built-in synthetic benchmark.

Generates the synthetic `bench` set if DATA has none (about 10 seconds), trains a
small AMMA-ShuffleNetV2 (K=3, 128x128, micro-motion) on the CPU for --minutes, then
evaluates it on the test split and prints where the checkpoint is. No dataset, GPU or
download needed.

  edge-stad demo                      # data/synth_bench, runs/demo, 5 minutes of training
  edge-stad demo --minutes 20         # the budget behind the numbers in benchmarks/README.md
"""
import os

HELP = "generate the synthetic set if needed, train AMMA-ShuffleNetV2 on CPU, report frame-mAP"


def add_arguments(p):
    p.add_argument("--data", default=os.path.join("data", "synth_bench"),
                   help="synthetic dataset folder, generated if absent (default data/synth_bench)")
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="run folder (default runs/demo)")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget in minutes (default 5)")
    p.add_argument("--backbone", default="shufflenetv2", choices=("resnet18", "mobilenetv2", "shufflenetv2"))
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    p.add_argument("--synth-preset", default="bench", choices=("tiny", "small", "bench"),
                   help="size of the synthetic set generated when DATA has none (default bench)")
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
    print(f"next: edge-stad build --checkpoint {ckpt} --int8 --calib-data {args.data}   (an INT8 engine)")
    return 0
