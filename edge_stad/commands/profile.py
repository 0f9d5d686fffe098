"""Parameters and MACs per component of AMMA (default), MENet or STMA models.

AMMA (--model amma) is counted in three conventions, per clip:

  paper   normal-mode MACs of a K-clip tubelet / K, counted like the authors' counter
          (ptflops rules: conv + bias, BN, ReLU, pooling; the deformable conv's main
          convolution is invisible to it and the transposed conv is left out, which is
          what reproduces the paper's Table 3: 5.2 / 1.3 / 1.0 GMACs)
  normal  every conv and matmul really run in normal mode / K (all of the decoder)
  stream  what one new clip really costs when streaming: encoder on 1 clip + head on K

MENet (--model menet: the paper's 3D-ResNeXt-101 + non-local, YOLOv2 + SRM, CFAM 1024;
--model menet-lite: 3D ShuffleNetV2 2.0x, 8 frames, YOLOv2-tiny + SRM, CFAM 256) is
counted per output frame, split into backbone_3d, non_local, srm, backbone_2d, cfam and
head:

  frame       every component on every frame (the plain sliding-window detector)
  stream s=N  the 3D branch (backbone_3d + non_local) refreshed every N frames and
              reused in between, the 2D branch, SRM, CFAM and head on every frame

STMA (--model stma: the paper's DLA-34 + 16-frame 3D-ResNeXt-101 at 288x288, K=5;
--model stma-lite: ShuffleNetV2 at stride 8 + 3D ShuffleNetV2 over 8 frames) is counted per
component: backbone_2d, size_head, downsample (per frame), backbone_3d (per clip),
centre_movement, motion_excitation, aggregation, classifier (per window):

  clip        one tubelet window from scratch (what the model's forward runs)
  stream s=N  one new frame with per-frame outputs cached, the 3D branch every N frames

flow-fusion (--model flow-fusion: PWC-Net, VGG16 + RFB at 300x300, --fusion m-concat;
--model flow-fusion-lite: small flow network or --motion micro-motion, --backbone mobilenetv2 /
shufflenetv2 SSDLite) is counted per output frame, split into flow (or micro_motion),
flow_image, backbone (both paths), fusion and head:

  frame   everything for one detection (every frame's flow pyramid, every pair)
  stream  one new frame with the streaming caches (one pyramid, one pair)

The paper reports no parameter or MAC counts, only GTX 1080Ti times (6 ms flow at 320x320,
24.1 ms for both paths, 37.8 frames/s); they are printed beside the counts, with PWC-Net's
8.75 M parameters.

Counting uses torch.utils.flop_counter on shapes only (no weights, no data), so it is
instant. Examples:

  edge-stad profile --backbone shufflenetv2 --K 3
  edge-stad profile --backbone all --decoder dcn --json profile.json
  edge-stad profile --checkpoint runs/demo/best.pt
  edge-stad profile --model menet
  edge-stad profile --model menet-lite --num-classes 8 --input-size 128 --refresh-every 2,4 --json
  edge-stad profile --model stma
  edge-stad profile --model stma-lite --backbone-3d none --clip-len 8
  edge-stad profile --model flow-fusion
  edge-stad profile --model flow-fusion-lite --backbone shufflenetv2 --motion micro-motion
"""
import json
import sys

from edge_stad.errors import ConfigError

HELP = "parameters and MACs (paper convention and true streaming cost) per component"
BACKBONE_CHOICES = ("resnet18", "mobilenetv2", "shufflenetv2")
MODEL_CHOICES = ("amma", "menet", "menet-lite", "stma", "stma-lite", "flow-fusion", "flow-fusion-lite")
FLOW_MODELS = ("flow-fusion", "flow-fusion-lite")
AMMA_DEFAULTS = {"num_classes": 21, "clip_len": 5, "input_size": 288}


def add_arguments(p):
    p.add_argument("--model", choices=MODEL_CHOICES, default="amma",
                   help="model family to profile (default amma); menet, menet-lite, stma and stma-lite print a "
                        "per-component table with the per-window or per-frame and the streaming cost")
    p.add_argument("--backbone", default="all",
                   help="AMMA: resnet18, mobilenetv2, shufflenetv2, a comma-separated list, or all (default); "
                        "STMA: one 2D backbone (dla34 or those; default: the variant's)")
    p.add_argument("--K", type=int, default=5, help="AMMA: clips per tubelet; STMA: frames per snippet (default 5, "
                                                      "as the papers)")
    p.add_argument("--num-classes", type=int,
                   help="action classes (21 = JHMDB, 24 = UCF101-24; default 21 for AMMA, 24 for MENet)")
    p.add_argument("--clip-len", type=int,
                   help="frames per clip (AMMA default 5, as the authors' code; MENet's 3D branch: 16, lite 8)")
    p.add_argument("--input-size", type=int,
                   help="square input size, a multiple of 32 (default 288 for AMMA, 224 for MENet)")
    p.add_argument("--fusion-stages", type=int, default=3,
                   help="AMMA: backbone stages followed by micro-motion fusion; 0 = RGB only (default 3)")
    p.add_argument("--decoder", choices=("dcn", "conv", "both"), default="both",
                   help="AMMA: dcn = deformable as the reference, conv = plain 3x3 deployment default (default both)")
    p.add_argument("--backbone-3d",
                   help="MENet, STMA: 3D backbone (resnext101, resnext50, shufflenetv2, mobilenetv2; STMA also none; "
                        "default: the variant's)")
    p.add_argument("--refresh-every", default="2,3,4",
                   help="MENet, STMA-Lite: comma-separated 3D-branch refresh intervals s for the stream figures "
                        "(default 2,3,4)")
    p.add_argument("--fusion", choices=("m-concat", "m-sum", "m-average", "stfp"),
                   help="flow-fusion: per-scale fusion block (default m-concat)")
    p.add_argument("--motion", choices=("flow", "micro-motion"),
                   help="flow-fusion-lite: flow network (default) or micro-motion image")
    p.add_argument("--checkpoint", help="profile the architecture stored in this checkpoint instead")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the results as JSON to FILE (or stdout when FILE is omitted)")


def _shared(args, defaults):
    """--num-classes / --clip-len / --input-size given on the command line, else ``defaults``."""
    given = {"num_classes": args.num_classes, "clip_len": args.clip_len, "input_size": args.input_size}
    return dict(defaults, **{k: v for k, v in given.items() if v is not None})


def _configs(args):
    if args.model in FLOW_MODELS:
        given = {"num_classes": args.num_classes, "input_size": args.input_size, "fusion": args.fusion,
                 "motion": args.motion, "backbone": None if args.backbone == "all" else args.backbone}
        yield {k: v for k, v in given.items() if v is not None}
        return
    if args.model != "amma":
        cfg = _shared(args, {})
        if args.backbone_3d:
            cfg["backbone_3d"] = None if args.backbone_3d == "none" else args.backbone_3d
        if args.model.startswith("stma"):
            cfg["K"] = args.K
            if args.backbone != "all":
                cfg["backbone"] = args.backbone
            if args.decoder != "both":
                cfg["decoder"] = args.decoder
        yield cfg
        return
    names = BACKBONE_CHOICES if args.backbone == "all" else [b.strip() for b in args.backbone.split(",")]
    decoders = ("dcn", "conv") if args.decoder == "both" else (args.decoder,)
    for backbone in names:
        for decoder in decoders:
            yield dict(_shared(args, AMMA_DEFAULTS), backbone=backbone, K=args.K, fusion_stages=args.fusion_stages,
                       decoder=decoder)


def _refresh_every(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ConfigError(f"--refresh-every takes positive integers separated by commas, got {text!r}")
    return values


def _table(result):
    cfg = result["config"]
    lines = ["AMMA {backbone}  decoder={decoder}  K={K}  classes={num_classes}  clip_len={clip_len}  "
             "input={size}  fusion_stages={fusion_stages}".format(size="x".join(map(str, cfg["input_size"])), **cfg),
             "  {:<14}{:>12}{:>14}{:>14}{:>14}".format("component", "params (M)", "paper GMAC", "normal GMAC",
                                                      "stream GMAC")]
    macs, params = result["macs"], result["params"]
    for comp in params["components"]:
        lines.append("  {:<14}{:>12.3f}{:>14.3f}{:>14.3f}{:>14.3f}".format(
            comp, params["components"][comp] / 1e6, *(macs[c]["components"][comp] / 1e9
                                                      for c in ("paper", "normal", "stream"))))
    lines.append("  {:<14}{:>12.3f}{:>14.3f}{:>14.3f}{:>14.3f}".format(
        "total", params["total"] / 1e6, *(macs[c]["total"] / 1e9 for c in ("paper", "normal", "stream"))))
    if params["dcn_offset"]:
        lines.append("  (deformable offset/mask conv: {:.3f} M params; the conv decoder is that much smaller)".format(
            params["dcn_offset"] / 1e6))
    return "\n".join(lines)


def _menet_table(result):
    cfg, params, macs = result["config"], result["params"], result["macs"]
    width = f" {cfg['width_3d']}x" if cfg["width_3d"] else ""
    non_local = " + non-local" if cfg["non_local"] else ""
    lines = [f"{cfg['name']}  3D {cfg['backbone_3d']}{width}{non_local} ({cfg['clip_len']} frames)  "
             f"2D {cfg['backbone_2d']}  srm_frames={cfg['srm_frames']}  cfam={cfg['cfam_channels']}  "
             f"classes={cfg['num_classes']}  input={cfg['input_size'][0]}x{cfg['input_size'][1]}"]
    return "\n".join(lines + _component_rows(params, macs, "frame"))


def _component_rows(params, macs, first, width=14):
    """Rows of params and GMACs per component: the ``first`` figure, then the stream figures per s."""
    figures = [macs[first]] + list(macs["stream"].values())
    heads = [f"{first} GMAC"] + [f"s={s} GMAC" for s in macs["stream"]]

    def row(name, n_params, gmacs):
        return f"  {name:<{width}}{n_params / 1e6:>12.3f}" + "".join(f"{m / 1e9:>14.3f}" for m in gmacs)

    lines = [f"  {'component':<{width}}{'params (M)':>12}" + "".join(f"{h:>14}" for h in heads)]
    lines += [row(comp, n, [f["components"][comp] for f in figures]) for comp, n in params["components"].items()]
    return lines + [row("total", params["total"], [f["total"] for f in figures])]


def _stma_table(result):
    cfg = result["config"]
    three_d = (f"3D {cfg['backbone_3d']}" + (f" {cfg['width_3d']}x" if cfg["width_3d"] else "")
               if cfg["backbone_3d"] else "no 3D branch")
    lines = [f"{cfg['name']}  2D {cfg['backbone']} ({cfg['decoder']})  {three_d}  K={cfg['K']}  "
             f"clip_len={cfg['clip_len']}  key={cfg['key_frame']}  classes={cfg['num_classes']}  "
             f"input={cfg['input_size'][0]}x{cfg['input_size'][1]}"]
    lines += _component_rows(result["params"], result["macs"], "clip", width=18)
    lines.append(f"  (clip: one window from scratch, {result['encoded_frames']} frames through the per-frame parts; "
                 "s=N: one new frame with cached per-frame outputs, the 3D branch every N frames)")
    return "\n".join(lines)


def _flow_table(result):
    cfg, params, macs = result["config"], result["params"], result["macs"]
    flow = f" ({cfg['flow_net']} at {cfg['flow_size'] or cfg['input_size'][0]})" if cfg["motion"] == "flow" else ""
    lines = [f"{cfg['name']}  {cfg['backbone']}  motion={cfg['motion']}{flow}"
             + f"  fusion={cfg['fusion']}  frames={cfg['frames']} (look-ahead {cfg['lookahead']})  "
               f"classes={cfg['num_classes']}  input={cfg['input_size'][0]}x{cfg['input_size'][1]}",
             f"  {'component':<14}{'params (M)':>12}{'frame GMAC':>14}{'stream GMAC':>14}"]
    for comp, n in params["components"].items():
        lines.append(f"  {comp:<14}{n / 1e6:>12.3f}{macs['frame']['components'][comp] / 1e9:>14.3f}"
                     f"{macs['stream']['components'][comp] / 1e9:>14.3f}")
    lines.append(f"  {'total':<14}{params['total'] / 1e6:>12.3f}{macs['frame']['total'] / 1e9:>14.3f}"
                 f"{macs['stream']['total'] / 1e9:>14.3f}")
    paper = result["paper_reported"]
    lines.append(f"  reported: PWC-Net {paper['pwc_net_params_M']} M params; the paper (GTX 1080Ti): flow "
                 f"{paper['flow_ms_at_320']} ms at 320x320, both paths {paper['network_ms_both_paths']} ms, "
                 f"{paper['fps_end_to_end']} frames/s end to end; no params or MACs reported")
    return "\n".join(lines)


def run(args):
    from edge_stad.bench.complexity import profile_amma, profile_menet
    from edge_stad.bench.flow_complexity import profile_flow_fusion
    from edge_stad.bench.stma_complexity import profile_stma
    from edge_stad.models import create_model, load_checkpoint

    if args.checkpoint:
        models = [load_checkpoint(args.checkpoint)]
    else:
        models = [create_model(args.model, **cfg) for cfg in _configs(args)]
    refresh = _refresh_every(args.refresh_every)
    results, tables = [], []
    for m in models:
        if m.config["name"] == "amma":
            results.append(profile_amma(m))
            tables.append(_table(results[-1]))
        elif m.config["name"].startswith("stma"):
            results.append(profile_stma(m, refresh_every=[1] + [s for s in refresh if s > 1]))
            tables.append(_stma_table(results[-1]))
        elif m.config["name"] in FLOW_MODELS:
            results.append(profile_flow_fusion(m))
            tables.append(_flow_table(results[-1]))
        else:
            results.append(profile_menet(m, refresh_every=refresh))
            tables.append(_menet_table(results[-1]))
    if args.json != "-":
        print("\n\n".join(tables))
        unit = {"amma": "per clip", "stma": "per tubelet window (clip) or new frame (s=N)",
                "stma-lite": "per tubelet window (clip) or new frame (s=N)"}.get(models[0].config["name"],
                                                                                 "per output frame")
        print(f"\nGMAC figures are {unit}; see `edge-stad profile --help` for the conventions.")
    if args.json:
        text = json.dumps(results, indent=2)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            from edge_stad.atomic import atomic_write

            with atomic_write(args.json, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            print("wrote", args.json)
    return 0
