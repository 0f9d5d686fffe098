"""Convert a dataset between the custom format and the ACT layout.

The direction follows SRC:

  SRC is a .json file (custom format, docs/custom_dataset_format.md)
      -> decode every clip into the ACT layout at OUT (rgb-images/ + <name>-GT.pkl),
         built under a temporary sibling and renamed into place at the end;
  SRC is an ACT dataset folder (UCF101-24, JHMDB-21, the synthetic set)
      -> write OUT, a custom-format JSON whose sources are SRC's frame folders.

Truncated or corrupt sources, tubes outside the decoded frames and unknown labels stop
the conversion with an error naming the clip and frame. Examples:

  edge-stad convert my_clips.json --out data/my_clips
  edge-stad convert data/synth_bench --out synth_bench.json
"""
import os

HELP = "convert between the custom dataset format (JSON + clips) and the ACT layout"


def add_arguments(p):
    p.add_argument("src", metavar="SRC", help="custom-format JSON, or an ACT dataset folder")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="ACT folder to create (from a JSON) or JSON file to write (from a folder)")
    p.add_argument("--name", default=None,
                   help="GT name when writing ACT, giving <NAME>-GT.pkl (default: the JSON's name, else Custom)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty ACT output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    from edge_stad.data.custom import act_to_custom, custom_to_act
    from edge_stad.errors import DataError

    if os.path.isdir(args.src):
        if os.path.exists(args.out) and not args.force:
            raise DataError(f"{args.out} exists; pass --force to overwrite it")
        act_to_custom(args.src, args.out)
        print(f"wrote {args.out}")
    elif os.path.isfile(args.src):
        gt = custom_to_act(args.src, args.out, force=args.force, name=args.name, progress=not args.quiet)
        print(f"wrote {os.path.dirname(gt)} ({os.path.basename(gt)})")
    else:
        raise DataError(f"{args.src}: no such file or folder (expected a custom-format JSON or an ACT dataset folder)")
    return 0
