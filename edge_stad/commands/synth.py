"""Generate the built-in synthetic action benchmark in the ACT layout.

Procedural videos of stick-figure actors on textured, moving backgrounds (camera pan and
shake, occluders, blur, noise, lighting drift). All classes share one appearance
distribution and differ only in how the actors move, in pairs whose single frames are
interchangeable, so temporal cues are needed:

  walk / march                        same gait; walk travels, march stays on the spot
  squat / jump                        same body poses; jump also leaves the ground
  arm_circles / arm_circles_fast      same circles; 18-28 vs 8-12 frames per turn
  sit_down / stand_up                 time reversal of each other

Videos are trimmed (the action fills the video, JHMDB-like) or untrimmed (actors idle,
unannotated, before and after it, UCF101-24-like), with one or several actors and
sometimes an idle distractor. Presets:

{presets}

Writes, atomically (a temporary sibling folder renamed at the end):
  OUT/rgb-images/<label>/<video>/00001.jpg ...
  OUT/Synth-GT.pkl             ACT ground truth (labels, gttubes, nframes, splits, resolution)
  OUT/Synth-annotations.json   the same as JSON
  OUT/synth.json               preset, seed, classes, generator version, per-video facts

The dataset is a pure function of (preset, seed). Example:

  edge-stad synth --out data/synth --preset bench --seed 0
"""
import os

from edge_stad.data.synth.presets import PRESETS, describe_presets

__doc__ = __doc__.format(presets=describe_presets())

HELP = "generate the built-in synthetic action benchmark (ACT layout)"


def add_arguments(p):
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create")
    p.add_argument("--preset", choices=sorted(PRESETS), default="bench", help="dataset size (default: bench)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="render videos in N processes; the output does not depend on N (default: min(4, CPUs))")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    import time

    from edge_stad.data.synth.generate import generate_dataset

    start = time.perf_counter()
    out = generate_dataset(args.out, args.preset, args.seed, force=args.force, workers=args.workers,
                           progress=not args.quiet)
    print(f"wrote {out} (preset {args.preset}, seed {args.seed}) in {time.perf_counter() - start:.1f} s")
    return 0
