"""Train AMMA, MENet or STMA on an ACT-layout dataset (UCF101-24, JHMDB-21, the synthetic set, your own data).

--model amma (default) trains the tubelet detector on --backbone resnet18 / mobilenetv2 / shufflenetv2;
--model menet-lite (3D --backbone shufflenetv2 / mobilenetv2) and --model menet (resnext101) train the
YOWO-style frame detector with YOWO's region loss, anchors from k-means on the training boxes and
--srm-frames short-range-motion frames (4 = 3 SRM maps, as the paper; 0 = RGB key frame only).

Options left out come from --preset (AMMA's):

  synthetic       AdamW 1e-3, cosine annealed over --time-budget (or --max-steps, else 20
                  epochs), batch 8, K=3, 128x128, no augmentation: from scratch on the
                  synthetic benchmark on a CPU (the default)
  demo            synthetic, tuned for a few hundred --max-steps (edge-stad demo): see
                  benchmarks/results/demo_recipe.md
  paper-jhmdb     the AMMA paper on JHMDB-21: Adam, lr 5e-4 (ResNet-18) / 2.5e-4, 10 epochs,
                  x0.1 at epochs 6 and 8, batch 16, K=5, 288x288
  paper-ucf24     the paper on UCF101-24: same, the lr halved every epoch after the second
  reference-code  the authors' README: AdamW (wd 0.03), lr 2.5e-4, 16 epochs, x0.1 at 8

--model stma (DLA-34 at stride 4 + a 16-frame 3D-ResNeXt-101, centred key frame; --decoder dcn for the paper's
deformable up path) and --model stma-lite (--backbone resnet18 / mobilenetv2 / shufflenetv2 at stride 8, a 3D
ShuffleNetV2 over 8 frames or --backbone-3d none, the snippet's last frame as key frame) train the class-agnostic
tubelet detector with the STMA loss. Their presets: synthetic (AdamW 1e-3, cosine, batch 8, K=5, 128x128; lite:
3D width 1.0), paper-ucf24 / paper-jhmdb (Adam, cosine from 1e-4, batch 24, K=5, 288x288, 16 / 12 epochs).

MENet's presets: synthetic (AdamW 1e-3, cosine, batch 8, 8 frames, 128x128, 3D width 1.0), paper-ucf24 (SGD 0.9,
wd 5e-4, lr 1e-3, batch 32, halved at 20k/30k/40k/50k steps) and paper-jhmdb (lr 1e-4, batch 16,
halved every 10k steps), both 16 frames at 224x224 with augmentation.

--model flow-fusion trains the two-path SSD with an integrated PWC-Net (Zhang, He, Tu et al. 2020: VGG16 + RFB
at 300x300, frames k-1, k, k+1) and --model flow-fusion-lite its edge variant (--backbone mobilenetv2 /
shufflenetv2 SSDLite, causal frames, a small flow network or --motion micro-motion); --fusion picks Table 2's
block (m-concat, m-sum, m-average, stfp). The loss is SSD's multibox loss plus PWC-Net's multi-scale flow loss
against OpenCV DIS flow (cached under DATA/flow-cache; no FlyingChairs weights are used), and detection losses
reach the flow network only from step --flow-unfreeze on (the paper freezes it at first). Presets: paper-ucf24 /
paper-jhmdb (SGD lr 1e-3 x0.1 at 30k/60k/100k of 150k steps, batch 40, unfrozen at 75k) and synthetic (AdamW,
cosine, 300x300 batch 4 / lite 128x128 batch 8, unfrozen at step 100).

Writes OUT/last.pt (every epoch), OUT/best.pt (best validation frame-mAP), OUT/metrics.csv
(and TensorBoard scalars if tensorboard is installed). --resume OUT/last.pt continues
exactly where the run stopped. Multi-GPU / multi-node: torchrun --nproc_per_node N
$(which edge-stad) train ...  (gloo on CPU, NCCL on GPU).

Examples:
  edge-stad train --data data/synth_bench --backbone shufflenetv2 --time-budget 20
  edge-stad train --data data/synth_bench --model menet-lite --time-budget 20 --out runs/menet_lite
  edge-stad train --data data/synth_bench --model stma-lite --time-budget 20 --out runs/stma_lite
  edge-stad train --data data/synth_bench --model flow-fusion-lite --time-budget 20 --out runs/flow_lite
  edge-stad train --data data/JHMDB --preset paper-jhmdb --backbone resnet18 --pretrained ctdet_coco_resdcn18.pth
"""
HELP = "train an AMMA, MENet, STMA or flow-fusion model (presets, progress, CSV log, atomic checkpoints, --resume, DDP)"


def add_arguments(p):
    p.add_argument("--data", required=True, help="ACT-layout dataset folder (rgb-images/ + *-GT.pkl)")
    p.add_argument("--out", default="runs/amma", help="output folder for checkpoints and logs (default runs/amma)")
    p.add_argument("--model", default="amma",
                   choices=("amma", "menet", "menet-lite", "stma", "stma-lite", "flow-fusion", "flow-fusion-lite"),
                   help="amma (tubelets, default), menet (paper) or menet-lite (edge) frame detectors, stma (paper) "
                        "or stma-lite (edge) class-agnostic tubelet detectors, flow-fusion (paper) or flow-fusion-lite "
                        "(edge) two-path SSDs")
    p.add_argument("--preset", default="synthetic",
                   choices=("synthetic", "demo", "paper-jhmdb", "paper-ucf24", "reference-code"))
    p.add_argument("--backbone", choices=("resnet18", "mobilenetv2", "shufflenetv2", "resnext101", "dla34", "vgg16"),
                   help="AMMA, STMA: 2D backbone (default shufflenetv2; stma dla34); MENet: 3D branch (menet-lite "
                        "default shufflenetv2, menet resnext101); flow-fusion: vgg16, lite mobilenetv2 (default) or "
                        "shufflenetv2")
    p.add_argument("--backbone-3d", choices=("shufflenetv2", "mobilenetv2", "resnext101", "none"),
                   help="STMA: 3D branch (default: stma resnext101, stma-lite shufflenetv2); none: without one, "
                        "motion excitation over the --clip-len cached frames")
    p.add_argument("--blocks", metavar="LIST",
                   help="STMA: the paper's Table 2 blocks to build, a comma-separated subset of cal (class-agnostic "
                        "centres and the recognition branch), me (motion excitation), sta (spatio-temporal "
                        "aggregation), gr (Gaussian-area regression); default all; '' the baseline")
    p.add_argument("--split", type=int, default=1, help="dataset split (JHMDB has 3; default 1)")
    p.add_argument("--K", type=int, help="AMMA: clips per tubelet; STMA: frames per snippet")
    p.add_argument("--clip-len", type=int, help="frames per clip (MENet, STMA: of the 3D branch)")
    p.add_argument("--input-size", type=int, help="square input size, a multiple of 32")
    p.add_argument("--decoder", choices=("conv", "dcn"), default="conv",
                   help="conv (deployable, default) or dcn (deformable, as AMMA's and STMA's DLA-34 reference)")
    p.add_argument("--fusion-stages", type=int, default=3, help="micro-motion fusion stages; 0 = RGB only")
    p.add_argument("--srm-frames", type=int, help="MENet: frames of the SRM maps (4 = 3 maps; 0 = RGB only)")
    p.add_argument("--width-3d", type=float,
                   help="MENet, STMA: width multiplier of the 3D branch (synthetic preset 1.0)")
    p.add_argument("--motion", choices=("conv", "diff", "flow", "micro-motion", "dis"),
                   help="AMMA: conv (micro-motion, default) or diff (raw RGB difference, the paper's MM_Diff); "
                        "flow-fusion(-lite): flow (the flow network, default), micro-motion, or dis (OpenCV DIS "
                        "flow computed on the host, given to the network)")
    p.add_argument("--fusion", choices=("m-concat", "m-sum", "m-average", "stfp"),
                   help="flow-fusion: per-scale fusion block (default m-concat, the paper's)")
    p.add_argument("--flow-unfreeze", type=int, metavar="STEPS",
                   help="flow-fusion: step from which detection losses train the flow network (default: the preset's)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int, metavar="STEPS", help="linear learning-rate warm-up over the first STEPS")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    p.add_argument("--max-steps", type=int, help="stop after this many steps (a cosine schedule ends there)")
    p.add_argument("--time-budget", type=float, metavar="MIN",
                   help="stop training after this many minutes (a cosine schedule anneals within them)")
    aug = p.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None,
                     help="the reference's augmentation (mirror, photometric, expand, crop); default: the preset's")
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="train on the frames as they are")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (0 = never; default 1)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="also write last.pt every N steps (default: epoch ends only)")
    p.add_argument("--workers", type=int, default=1, help="data-loading worker processes (default 1)")
    p.add_argument("--seed", type=int, default=317, help="seed of sample order and augmentation (default 317)")
    p.add_argument("--pretrained", help="initialise from local weights (AMMA: torchvision, CenterNet, SSDLite, AMMA; "
                                        "MENet: the 3D branch from `edge-stad distill student` (OUT/backbone_3d.pt))")
    p.add_argument("--resume", help="continue from a last.pt / best.pt of this trainer")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def config_from_args(args):
    from edge_stad.train.trainer import TrainConfig

    return TrainConfig(
        data=args.data, out=args.out, preset=args.preset, model=args.model, backbone=args.backbone, split=args.split,
        K=args.K, clip_len=args.clip_len, input_size=args.input_size, decoder=args.decoder,
        fusion_stages=args.fusion_stages, srm_frames=args.srm_frames, width_3d=args.width_3d, motion=args.motion,
        fusion=args.fusion, flow_unfreeze=args.flow_unfreeze, backbone_3d=args.backbone_3d, blocks=args.blocks,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
        optimizer=args.optimizer, seed=args.seed, workers=args.workers, max_steps=args.max_steps,
        time_budget=args.time_budget,
        augment=args.augment, val_every=args.val_every, checkpoint_every=args.checkpoint_every,
        pretrained=args.pretrained,
        resume=args.resume, device=args.device, progress=not args.no_progress)


def run(args):
    from edge_stad.train.trainer import Trainer

    trainer = Trainer(config_from_args(args))
    result = trainer.fit()
    if trainer.rank == 0:
        print(f"last checkpoint: {result['last']}")
        if result["best"]:
            best = max(h["frame_mAP"] for h in result["history"])
            print(f"best checkpoint: {result['best']} (frame-mAP@0.5 {best:.2f})")
    return 0
