"""Parameters and MACs of AMMA models, per component, in three conventions.

  paper   normal-mode MACs of a K-clip tubelet / K, counted like the authors' counter
          (ptflops rules: conv + bias, BN, ReLU, pooling; the deformable conv's main
          convolution is invisible to it and the transposed conv is left out, which is
          what reproduces the paper's Table 3: 5.2 / 1.3 / 1.0 GMACs)
  normal  every conv and matmul really run in normal mode / K (all of the decoder)
  stream  what one new clip really costs when streaming: encoder on 1 clip + head on K

Counting uses torch.utils.flop_counter on shapes only (no weights, no data), so it is
instant. Examples:

  edge-stad profile --backbone shufflenetv2 --K 3
  edge-stad profile --backbone all --decoder dcn --json profile.json
  edge-stad profile --checkpoint runs/demo/best.pt
"""
import json
import sys

HELP = "parameters and MACs (paper convention and true streaming cost) per component"
BACKBONE_CHOICES = ("resnet18", "mobilenetv2", "shufflenetv2")


def add_arguments(p):
    p.add_argument("--backbone", default="all",
                   help="resnet18, mobilenetv2, shufflenetv2, a comma-separated list, or all (default)")
    p.add_argument("--K", type=int, default=5, help="clips per tubelet (default 5, as the paper)")
    p.add_argument("--num-classes", type=int, default=21, help="action classes (21 = JHMDB, 24 = UCF101-24)")
    p.add_argument("--clip-len", type=int, default=5, help="frames per clip (default 5, as the authors' code)")
    p.add_argument("--input-size", type=int, default=288, help="square input size, a multiple of 32 (default 288)")
    p.add_argument("--fusion-stages", type=int, default=3,
                   help="backbone stages followed by micro-motion fusion; 0 = RGB only (default 3)")
    p.add_argument("--decoder", choices=("dcn", "conv", "both"), default="both",
                   help="dcn = deformable as the reference, conv = plain 3x3 deployment default (default both)")
    p.add_argument("--checkpoint", help="profile the architecture stored in this checkpoint instead")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the results as JSON to FILE (or stdout when FILE is omitted)")


def _configs(args):
    names = BACKBONE_CHOICES if args.backbone == "all" else [b.strip() for b in args.backbone.split(",")]
    decoders = ("dcn", "conv") if args.decoder == "both" else (args.decoder,)
    for backbone in names:
        for decoder in decoders:
            yield {"backbone": backbone, "K": args.K, "num_classes": args.num_classes, "clip_len": args.clip_len,
                   "input_size": args.input_size, "fusion_stages": args.fusion_stages, "decoder": decoder}


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


def run(args):
    from edge_stad.bench.complexity import profile_amma
    from edge_stad.models import create_model, load_checkpoint

    if args.checkpoint:
        models = [load_checkpoint(args.checkpoint)]
    else:
        models = [create_model("amma", **cfg) for cfg in _configs(args)]
    results = [profile_amma(m) for m in models]
    if args.json != "-":
        print("\n\n".join(_table(r) for r in results))
        print("\nGMAC figures are per clip; see `edge-stad profile --help` for the conventions.")
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
