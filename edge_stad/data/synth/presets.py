"""Dataset presets of the synthetic generator (kept free of heavy imports: the CLI help lists them)."""
from typing import NamedTuple, Tuple


class Preset(NamedTuple):
    """Size and difficulty of a generated dataset."""

    width: int
    height: int
    frames: Tuple[int, int]         # video length range, inclusive
    train_per_class: int
    test_per_class: int
    min_action: int                 # shortest action (tube) in an untrimmed video, frames
    max_actors: int                 # annotated actors in a multi-actor video (at least 2)
    pan_speed: float = 0.3          # max camera pan, pixels per frame
    shake: float = 0.6              # camera shake, pixels (standard deviation)
    distractor_probability: float = 0.4
    occluder_probability: float = 0.35
    blur_probability: float = 0.3


PRESETS = {
    # unit tests: generates in well under a second
    "tiny": Preset(128, 96, (16, 24), train_per_class=1, test_per_class=1, min_action=10, max_actors=2),
    # quick experiments and demos
    "small": Preset(160, 120, (30, 48), train_per_class=6, test_per_class=2, min_action=20, max_actors=3),
    # benchmarks: enough to learn the classes from scratch at ~128x128 input
    "bench": Preset(160, 120, (40, 60), train_per_class=25, test_per_class=6, min_action=24, max_actors=2),
}


def describe_presets():
    """One line per preset, for help texts."""
    return "\n".join(
        f"  {name:<6} {p.train_per_class} train + {p.test_per_class} test videos per class, "
        f"{p.frames[0]}-{p.frames[1]} frames, {p.width}x{p.height}"
        for name, p in PRESETS.items())
