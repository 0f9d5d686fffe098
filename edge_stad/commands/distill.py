"""Pre-train a 3D backbone for MENet's 3D branch by motion distillation (MARS; seed 003's losses).

Two stages on an ACT-layout dataset, as video classification (a video's class is the
label of its tubes; clips are sampled inside the annotated span):

  teacher   train a 3D classifier on optical flow (OpenCV DIS or Farneback, clipped to
            +-20 px, cached under --flow-cache); writes OUT/teacher.pt, OUT/teacher.json
  student   train an RGB 3D classifier with CE + alpha * MSE(pooled features) against the
            frozen teacher (alpha 50, MARS), or with --levels seed 003's multi-level L1 +
            Gram losses (1x1x1 adapters where widths differ); writes OUT/student.pt,
            OUT/student.json and OUT/backbone_3d.pt (the state dict, "backbone_3d." keys,
            that initialises MENet's 3D branch)

  fuse      Lu et al.'s attention score fusion: two linear layers over the concatenated
            class scores of the frozen student (RGB) and teacher (flow) give per-clip
            stream weights; trained with cross-entropy, both streams frozen. Writes
            OUT/fusion.pt and OUT/fuse.json with the held-out accuracy of each stream
            alone, of their plain average and of the fusion. The fused classifier needs
            optical flow at test time (the teacher's input): a two-stream upper bound, not
            an edge-device model.

The student and the fusion read clip length, input size and flow settings from the teacher
checkpoint. Flow is needed only here: the distilled detector runs on RGB alone.

Examples:
  edge-stad distill teacher --data data/synth --out runs/kd --clip-len 8 --input-size 64 --time-budget 10
  edge-stad distill student --data data/synth --teacher runs/kd/teacher.pt --out runs/kd --levels all
  edge-stad distill fuse --data data/synth --teacher runs/kd/teacher.pt --student runs/kd/student.pt --out runs/kd
"""
import os

HELP = "pre-train MENet's 3D branch: flow teacher, then RGB student by motion distillation; score fusion"


def _common(p):
    p.add_argument("--data", required=True, help="ACT-layout dataset folder (rgb-images/ + *-GT.pkl)")
    p.add_argument("--out", default="runs/distill", help="output folder (default runs/distill)")
    p.add_argument("--split", type=int, default=1, help="dataset split (default 1)")
    p.add_argument("--backbone", default="shufflenetv2",
                   help="3D backbone of this stage's network: shufflenetv2 (default), mobilenetv2, resnext50, "
                        "resnext101, resnext152")
    p.add_argument("--width-mult", type=float, help="width multiplier (ShuffleNetV2/MobileNetV2; default theirs)")
    p.add_argument("--flow-cache", help="flow cache folder (default DATA/flow-cache)")
    p.add_argument("--clips-per-video", type=int, default=4,
                   help="training clips drawn per video and epoch; evaluation clips per test video (default 4)")
    p.add_argument("--augment", action="store_true", help="mirror half the training clips (flow dx negated)")
    p.add_argument("--epochs", type=int, default=10, help="(default 10)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--time-budget", type=float, metavar="MIN", help="stop after this many minutes")
    p.add_argument("--batch-size", type=int, default=8, help="(default 8)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="(default sgd, momentum 0.9)")
    p.add_argument("--lr", type=float, help="learning rate (default 0.1 for SGD, 1e-3 for Adam)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="(default 5e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of clip sampling and initialisation (default 0)")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes (default 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_arguments(p):
    stages = p.add_subparsers(dest="stage", metavar="<stage>", required=True)
    teacher = stages.add_parser("teacher", help="train the optical-flow teacher (cross-entropy)",
                                description="Train a 3D classifier on optical flow: the frozen teacher of stage 2.")
    _common(teacher)
    teacher.add_argument("--clip-len", type=int, default=16, help="frames per clip (default 16, MENet's)")
    teacher.add_argument("--input-size", type=int, default=112, help="square clip size (default 112, MARS's)")
    teacher.add_argument("--flow", choices=("dis", "farneback"), default="dis", help="flow method (default dis)")
    teacher.add_argument("--dis-preset", choices=("ultrafast", "fast", "medium"), default="medium",
                         help="OpenCV DIS preset (default medium)")
    student = stages.add_parser("student", help="distil the frozen teacher into an RGB student",
                                description="Train an RGB 3D classifier to mimic the flow teacher's features.")
    _common(student)
    student.add_argument("--teacher", required=True, help="teacher.pt written by `edge-stad distill teacher`")
    student.add_argument("--alpha", type=float, default=50.0, help="weight of the mimicry loss (default 50)")
    student.add_argument("--levels", help="seed 003's multi-level L1 + Gram losses on these stages: 'all' or "
                                          "comma-separated indices from 0 (shallowest); default: MARS's pooled MSE")
    fuse = stages.add_parser("fuse", help="attention fusion of the frozen student and teacher scores (Lu et al.)",
                             description="Train Lu et al.'s two-layer attention score fusion over the frozen RGB "
                                         "student and flow teacher; report each stream, their average and the "
                                         "fusion on held-out clips. Needs flow at test time.")
    _common(fuse)
    fuse.add_argument("--teacher", required=True, help="teacher.pt written by `edge-stad distill teacher`")
    fuse.add_argument("--student", required=True, help="student.pt written by `edge-stad distill student`")
    fuse.add_argument("--hidden", type=int, default=64, help="hidden width of the fusion's two layers (default 64)")


def run(args):
    import torch

    from edge_stad.atomic import atomic_write, write_json
    from edge_stad.data.act import ActDataset
    from edge_stad.data.flow import BOUND, FlowCache
    from edge_stad.train import distill

    dataset = ActDataset(args.data, split=args.split)
    cfg = distill.FitConfig(out=args.out, epochs=args.epochs, max_steps=args.max_steps, time_budget=args.time_budget,
                            batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                            weight_decay=args.weight_decay, seed=args.seed, workers=args.workers, device=args.device,
                            progress=not args.no_progress)
    cache_dir = args.flow_cache or os.path.join(args.data, "flow-cache")
    if args.stage == "teacher":
        clip_len, size = args.clip_len, args.input_size
        flow = {"method": args.flow, "preset": args.dis_preset, "bound": BOUND}
        teacher = None
    else:
        teacher, meta = distill.load_classifier(args.teacher)
        clip_len, size, flow = meta["data"]["clip_len"], tuple(meta["data"]["input_size"]), meta["data"]["flow"]
    cache = FlowCache(dataset, cache_dir, flow["method"], flow["preset"], size, flow["bound"])

    def clips(videos, modalities, train):
        return distill.ClipDataset(dataset, videos, clip_len, size, modalities, cache, args.clips_per_video,
                                   train=train, augment=args.augment and train, seed=args.seed)

    if args.stage == "fuse":
        return _fuse(args, cfg, teacher, dataset, clips)
    torch.manual_seed(args.seed)
    modality = "flow" if teacher is None else "rgb"
    model = distill.build_classifier(args.backbone, len(dataset.labels), distill.MODALITY_CHANNELS[modality],
                                     args.width_mult)
    if teacher is None:
        result = distill.train_teacher(model, clips(dataset.train_videos, ("flow",), True),
                                       clips(dataset.test_videos, ("flow",), False), cfg)
    else:
        result = distill.distill_student(model, teacher, clips(dataset.train_videos, ("rgb", "flow"), True),
                                         clips(dataset.test_videos, ("rgb",), False), cfg, args.alpha,
                                         _levels(args.levels, model, teacher))
        result["backbone_3d"] = os.path.join(args.out, "backbone_3d.pt")
        with atomic_write(result["backbone_3d"], "wb") as f:
            torch.save(distill.export_backbone_state(model), f)
    write_json(os.path.join(args.out, f"{args.stage}.json"), result)
    print(f"{args.stage}: {result['steps']} steps in {result['seconds']:.0f} s, loss {result['first_loss']:.3f} -> "
          f"{result['final_loss']:.3f}, held-out clip accuracy {result['val_accuracy']:.1f}%")
    print(f"checkpoint: {result['checkpoint']}")
    if "backbone_3d" in result:
        print(f"MENet 3D-branch weights: {result['backbone_3d']}")
    return 0


def _fuse(args, cfg, teacher, dataset, clips):
    from edge_stad.atomic import write_json
    from edge_stad.train import distill
    from edge_stad.train.score_fusion import train_fusion

    student, _ = distill.load_classifier(args.student)
    both = ("rgb", "flow")
    result = train_fusion(student, teacher, clips(dataset.train_videos, both, True),
                          clips(dataset.test_videos, both, False), cfg, args.hidden)
    write_json(os.path.join(args.out, "fuse.json"), result)
    acc = result["val_accuracy"]
    print(f"fuse: {result['steps']} steps, loss {result['first_loss']:.3f} -> {result['final_loss']:.3f}; held-out "
          f"clip accuracy: RGB {acc['rgb']:.1f}%, flow {acc['motion']:.1f}%, average {acc['average']:.1f}%, "
          f"attention fusion {acc['attention']:.1f}%")
    print(f"checkpoint: {result['checkpoint']}")
    return 0


def _levels(text, student, teacher):
    from edge_stad.errors import ConfigError

    if not text:
        return ()
    if text == "all":
        return tuple(range(min(len(student.backbone.stage_channels), len(teacher.backbone.stage_channels))))
    try:
        return tuple(int(i) for i in text.split(","))
    except ValueError:
        raise ConfigError(f"--levels must be 'all' or comma-separated stage indices, got {text!r}") from None
