"""What a model config may hold: the schema an engine manifest's ``model`` and a checkpoint's
``model_config`` are checked against before anything is built, allocated or run (no torch).

A config comes from a file someone else wrote, so every field the code reads is checked for
its type and a sane range: ``input_size [100000, 100000]`` would make the runtime allocate
tens of GB per clip, a string ``K`` would fail deep inside NumPy. The bounds are far above
any model of the papers (inputs 128-512 pixels, clips of 5-16 frames, K up to 7, 24 classes)
and far below what breaks a machine. A violation is the caller's typed error (``EngineError``,
``CheckpointError``) naming the field, the value and what was expected.
"""
import math
import reprlib

# The graphs an engine of each model family holds, in run order.
# STMA's encoder3d exists only in models with a 3D branch, flow fusion's flow graph only in models whose flow
# network learns (graph_names).
SNIPPET = ("stma", "stma-lite")
SNIPPET_GRAPHS = ("encoder", "encoder3d", "head")
SSD = ("flow-fusion", "flow-fusion-lite")
SSD_GRAPHS = ("flow", "detect")
SSD_MOTIONS = ("flow", "micro-motion", "dis")   # the learned flow network, AMMA's micro-motion, host DIS flow
GRAPHS = {"amma": ("encoder", "head"), "menet": ("encoder3d", "detector"), "menet-lite": ("encoder3d", "detector"),
          **{name: SNIPPET_GRAPHS for name in SNIPPET}, **{name: SSD_GRAPHS for name in SSD}}
FAMILIES = tuple(GRAPHS)       # the detectors, which engines hold
CLASSIFIER = "classifier3d"    # edge-stad distill's 3D video classifier (checkpoints only)
SCORE_FUSION = "attention-fusion"               # edge-stad distill fuse's score fusion (checkpoints only)
CHECKPOINT_FAMILIES = FAMILIES + (CLASSIFIER, SCORE_FUSION)
MAX_INPUT_SIDE = 2048   # pixels; a multiple of 32 (the backbones' stride)
MAX_CLIP_LEN = 128
MAX_K = 32
MAX_CLASSES = 4096
MAX_CHANNELS = 8192     # head_conv, cfam_channels, channels_2d
MAX_ANCHORS = 64
MAX_LEVELS = 16         # an SSD prior spec's feature maps


def graph_names(config):
    """The graphs of an engine of the model ``config``, in run order (``encoder, head``; ``encoder3d,
    detector``; ``encoder, encoder3d, head``, without ``encoder3d`` for an STMA without 3D branch; ``flow,
    detect``, without ``flow`` for a flow-fusion model whose motion is DIS flow or micro-motion)."""
    names = GRAPHS["amma"] if config.get("name") not in GRAPHS else GRAPHS[config["name"]]
    if config.get("name") in SNIPPET and config.get("backbone_3d") is None:
        return tuple(g for g in names if g != "encoder3d")
    if config.get("name") in SSD and config.get("motion") != "flow":
        return tuple(g for g in names if g != "flow")
    return names


def frames_per_clip(config):
    """Frames one clip (a calibration or benchmark window's unit) holds: ``clip_len``, or the ``frames`` one
    flow-fusion detection reads."""
    return config["clip_len"] if "clip_len" in config else config["frames"]


def engine_kind(config):
    """How an engine of the model ``config`` runs (:mod:`edge_stad.engines.protocols`): ``tubelet`` (AMMA),
    ``frame`` (MENet), ``snippet`` (STMA) or ``ssd`` (flow fusion)."""
    name = config.get("name", "amma")
    if name in SSD:
        return "ssd"
    return "snippet" if name in SNIPPET else "frame" if name in ("menet", "menet-lite") else "tubelet"


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    def __init__(self, error, where, prefix):
        self.error, self.where, self.prefix = error, where, prefix

    def fail(self, field, value, expected):
        raise self.error(f"{self.where}: field '{self.prefix}{field}' is {short_repr(value)}; expected {expected}")

    def int(self, config, field, low, high, optional=False):
        if field not in config:
            if optional:
                return None
            self.fail(field, _MISSING, f"an int in [{low}, {high}]")
        value = config[field]
        if not _int(value) or not low <= value <= high:
            self.fail(field, value, f"an int in [{low}, {high}]")
        return value

    def text(self, config, field, optional=True):
        if field in config and not isinstance(config[field], str):
            self.fail(field, config[field], "a string")
        if field not in config and not optional:
            self.fail(field, _MISSING, "a string")

    def width(self, config, field):
        value = config.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 < value <= 8 or not math.isfinite(value)):
            self.fail(field, value, "null or a number in (0, 8]")

    def flag(self, config, field):
        if field in config and not isinstance(config[field], bool):
            self.fail(field, config[field], "true or false")

    def numbers(self, config, field, count, expected, items=0, high=1e4):
        """``config[field]``: a list of ``count`` entries (None: 1 to ``MAX_LEVELS``), each a number in
        ``(0, high)`` (``items`` 0) or a list of such numbers (``items`` of them; -1: up to ``MAX_LEVELS``)."""
        value = config.get(field)

        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < high

        def entry(v):
            if not items:
                return number(v)
            return (isinstance(v, (list, tuple)) and (len(v) == items or items < 0 and len(v) <= MAX_LEVELS)
                    and all(map(number, v)))

        if (not isinstance(value, (list, tuple)) or not 0 < len(value) <= MAX_LEVELS
                or (count is not None and len(value) != count) or not all(map(entry, value))):
            self.fail(field, value, expected)
        return value


def check_model_config(config, error, where, prefix="model.", families=FAMILIES):
    """``config`` checked against the schema of its family (one of ``families``); ``error(message)`` is
    raised on the first violation, naming ``where`` (the file) and the field as ``prefix + name``.
    Returns ``config``."""
    c = _Checker(error, where, prefix)
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise error(f"{where}: '{prefix.rstrip('.') or 'model'}' is a {type(config).__name__}; expected an object "
                    "mapping field names to values")
    name = config.get("name")
    if name not in families:
        c.fail("name", name, "one of " + ", ".join(families))
    c.int(config, "num_classes", 1, MAX_CLASSES)
    if name == SCORE_FUSION:
        c.int(config, "hidden", 1, MAX_CHANNELS, optional=True)
        return config
    if name == CLASSIFIER:
        c.text(config, "backbone")
        c.int(config, "in_channels", 1, 16, optional=True)
        c.width(config, "width_mult")
        return config
    size = config.get("input_size")
    multiple = 1 if name in SSD else 32   # SSD runs at 300 x 300
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(_int(s) and 32 <= s <= MAX_INPUT_SIDE and s % multiple == 0 for s in size)):
        c.fail("input_size", size, f"[height, width], multiples of {multiple} in [32, {MAX_INPUT_SIDE}]")
    if name in SSD:
        return _check_ssd(c, config)
    clip_len = c.int(config, "clip_len", 1, MAX_CLIP_LEN)
    if name in SNIPPET:
        c.int(config, "K", 1, clip_len)   # the clip holds the snippet
        if config.get("key_frame", "center") not in ("center", "last"):
            c.fail("key_frame", config["key_frame"], "'center' or 'last'")
        for field in ("backbone", "decoder"):
            c.text(config, field)
        if config.get("backbone_3d") is not None:
            c.text(config, "backbone_3d")
        c.width(config, "width_3d")
        for field in ("head_conv", "wh_head_conv", "action_channels", "fused_channels"):
            c.int(config, field, 1, MAX_CHANNELS, optional=True)
        for field in ("class_agnostic", "motion_excitation", "attention", "gaussian_regression"):
            c.flag(config, field)
        return config
    if name == "amma":
        c.int(config, "K", 1, MAX_K)
        c.int(config, "fusion_stages", 0, 4, optional=True)
        c.int(config, "head_conv", 1, MAX_CHANNELS, optional=True)
        for field in ("backbone", "decoder"):
            c.text(config, field)
        c.flag(config, "mm_pool")
        pairs = config.get("pairs")
        if pairs is not None and (not isinstance(pairs, (list, tuple)) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(_int(i) and 0 <= i < clip_len for i in p)
                for p in pairs)):
            c.fail("pairs", pairs, f"null or a list of [i, j] frame pairs, indices in [0, {clip_len})")
        return config
    for field in ("backbone_3d", "backbone_2d"):
        c.text(config, field)
    c.flag(config, "non_local")
    for field in ("cfam_channels", "channels_2d"):
        c.int(config, field, 1, MAX_CHANNELS, optional=True)
    srm = c.int(config, "srm_frames", 0, clip_len, optional=True)
    if srm == 1:
        c.fail("srm_frames", srm, f"0 (RGB only) or an int in [2, clip_len = {clip_len}]")
    kernel = c.int(config, "srm_kernel", 1, 31, optional=True)
    if kernel is not None and kernel % 2 == 0:
        c.fail("srm_kernel", kernel, "an odd int in [1, 31]")
    c.width(config, "width_3d")
    count = c.int(config, "num_anchors", 1, MAX_ANCHORS, optional=True)
    anchors = config.get("anchors")
    if anchors is not None and (
            not isinstance(anchors, (list, tuple)) or (count is not None and len(anchors) != count)
            or not all(isinstance(a, (list, tuple)) and len(a) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e4 for v in a) for a in anchors)):
        c.fail("anchors", anchors, f"{count or 'num_anchors'} [w, h] pairs of positive numbers (grid cells)")
    return config


def _check_ssd(c, config):
    """The flow-fusion fields; the prior spec's shape here, its meaning in ``runtime.ssd.check_prior_spec``."""
    for field in ("backbone", "fusion", "motion", "flow_net"):
        c.text(config, field)
    if config.get("motion", "flow") not in SSD_MOTIONS:   # what the engines and steppers branch on
        c.fail("motion", config["motion"], " or ".join(map(repr, SSD_MOTIONS)))
    if config.get("flow_size") is not None:
        c.int(config, "flow_size", 64, MAX_INPUT_SIDE)
    frames = c.int(config, "frames", 2, MAX_CLIP_LEN)
    c.int(config, "lookahead", 0, frames - 1)
    priors = config.get("priors")
    keys = ("feature_maps", "steps", "min_sizes", "max_sizes", "aspect_ratios", "clip")
    if not isinstance(priors, dict) or set(priors) != set(keys):
        c.fail("priors", priors, f"an object with the keys {', '.join(keys)}")
    p = _Checker(c.error, c.where, c.prefix + "priors.")
    levels = len(p.numbers(priors, "feature_maps", None, f"1 to {MAX_LEVELS} [h, w] feature map sizes", items=2,
                           high=MAX_INPUT_SIDE + 1))
    p.numbers(priors, "steps", levels, f"{levels} [step_y, step_x] pairs of positive numbers", items=2)
    for field in ("min_sizes", "max_sizes"):
        p.numbers(priors, field, levels, f"{levels} positive numbers")
    p.numbers(priors, "aspect_ratios", levels, f"{levels} lists of positive aspect ratios", items=-1)
    p.flag(priors, "clip")
    return config


def check_labels(labels, num_classes, error, where, field="labels"):
    """Class names: a list of ``num_classes`` strings; returns them as a tuple."""
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise error(f"{where}: field '{field}' is {short_repr(labels)}; expected a list of {num_classes} class names")
    if len(labels) != num_classes:
        raise error(f"{where}: field '{field}' names {len(labels)} classes; expected {num_classes} "
                    "(the model's num_classes)")
    return tuple(labels)


_MISSING = object()


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 4, 60, 60


def short_repr(value):
    """``repr(value)`` cut short, in bounded time: a field from a hostile file may hold a billion shared items."""
    return "missing" if value is _MISSING else _REPR.repr(value)
