"""What each graph of an engine takes and returns, given the manifest's model, and the check at open.

A manifest whose model fields contradict its graphs (another clip length, K, input size or
class count) would otherwise run: with changed results (labels past the graph's classes are
dropped), or until the first push fails inside ONNX Runtime or OpenCV. The backends compare
the shapes the graphs declare with what the manifest implies when they open, and the class
count and model fields that ``edge-stad build`` stamps into each ONNX graph's metadata
(:data:`METADATA_KEY`; engines built before carry none, and where their head decodes in the
graph the class count is then not visible). No torch here.
"""
import json

import numpy as np

from edge_stad.core.region_decode import detector_frames
from edge_stad.core.snippets import head_grid, layout_of
from edge_stad.core.ssd_decode import prior_boxes
from edge_stad.errors import EngineError, FrameError
from edge_stad.model_config import SNIPPET, SSD, graph_names
from edge_stad.preprocess import DOWN_RATIO
from edge_stad.version import __version__

METADATA_KEY = "edge_stad.model"
STAMPED = ("name", "K", "clip_len", "input_size", "num_classes", "num_anchors", "srm_frames", "frames", "lookahead",
           "motion")
MENET_STRIDE = 32


def stamp(config):
    """The metadata value ``edge-stad build`` writes into each graph: the model fields its shapes depend on."""
    return json.dumps({k: config[k] for k in STAMPED if k in config}, sort_keys=True)


def graph_metadata(config, graph, labels=(), precision="fp32"):
    """The ``metadata_props`` of an engine's graph ``graph``: :data:`METADATA_KEY` (checked at open) and what
    describes the file alone: its model config, version, class names, precision and input contract."""
    inputs, _ = expected_io(config)[graph]
    contract = {name: {"shape": ["batch" if d is None else d for d in shape],
                       "dtype": "uint8 BGR, resized with cv2.INTER_LINEAR; normalised in the graph"
                       if name in ("frames", "clip") else "float32"}
                for name, shape in inputs.items()}
    return {METADATA_KEY: stamp(config), "edge_stad.graph": graph, "edge_stad.version": __version__,
            "edge_stad.precision": precision, "edge_stad.model_config": json.dumps(config, sort_keys=True),
            "edge_stad.labels": json.dumps(list(labels) or [f"class_{i}" for i in range(config["num_classes"])]),
            "edge_stad.inputs": json.dumps(contract, sort_keys=True)}


def expected_io(config):
    """``{graph: ({input: shape}, [{output: shape}, ...])}`` for the model ``config``: the accepted output
    sets, with ``None`` for a dimension the manifest does not fix (the batch, feature channels, top-K)."""
    if config.get("name") in SNIPPET:
        return _snippet_io(config)
    if config.get("name") in SSD:
        return _ssd_io(config)
    h, w = config["input_size"]
    n, C = config["clip_len"], config["num_classes"]
    if graph_names(config)[0] == "encoder":
        K, grid = config["K"], (h // DOWN_RATIO, w // DOWN_RATIO)
        return {"encoder": ({"frames": (None, n, h, w, 3)},
                            [{"feat": (None, None) + grid, "wh": (None, 2) + grid}]),
                "head": ({"feats": (None, K, None) + grid, "whs": (None, K, 2) + grid},
                         [{"hm": (None, C) + grid, "mov": (None, 2 * K) + grid, "wh": (None, 2 * K) + grid},
                          {"tubelets": (None, None, 4 * K + 2)}])}
    grid = (h // MENET_STRIDE, w // MENET_STRIDE)
    anchors = config.get("num_anchors") or len(config.get("anchors") or ()) or None
    region = None if anchors is None else anchors * (5 + C)
    return {"encoder3d": ({"clip": (None, n, h, w, 3)}, [{"feat3d": (None, None) + grid}]),
            "detector": ({"frames": (None, detector_frames(config), h, w, 3), "feat3d": (None, None) + grid},
                         [{"region": (None, region) + grid}])}


def _snippet_io(config):
    """STMA's graphs (:mod:`edge_stad.export.snippet_graphs`): features at the head stride, the recognition
    branch's and the 3D branch's at stride 32."""
    h, w = config["input_size"]
    K, C, n = config["K"], config["num_classes"], config["clip_len"]
    grid, coarse = head_grid(config), (h // MENET_STRIDE, w // MENET_STRIDE)
    layout = layout_of(config)
    feat = {"feat": (None, None) + grid, "wh": (None, 4) + grid}
    window = {"feats": (None, K, None) + grid, "whs": (None, K, 4) + grid}
    outputs = {"hm": (None, 1 if config["class_agnostic"] else C) + grid, "mov": (None, 2 * K) + grid,
               "wh": (None, 4 * K) + grid}
    if config["class_agnostic"]:
        feat["act"] = (None, None) + coarse
        window["acts"] = (None, layout.motion[1] - layout.motion[0] + 1, None) + coarse
        outputs["cls"] = (None, C)
    io = {"encoder": ({"frames": (None, 1, h, w, 3)}, [feat]), "head": (window, [outputs])}
    if config.get("backbone_3d") is not None:
        window["feat3d"] = (None, None) + coarse
        io["encoder3d"] = ({"clip": (None, n, h, w, 3)}, [{"feat3d": (None, None) + coarse}])
    return io


def _ssd_io(config):
    """Flow fusion's graphs (:mod:`edge_stad.export.ssd_graphs`): ``flow`` (a frame pair -> its flow) and
    ``detect`` (the key frame and its pairs' flows, or micro-motion's frames -> SSD outputs over the priors)."""
    h, w = config["input_size"]
    T, C, P = config["frames"], config["num_classes"], len(prior_boxes(config["priors"]))
    out = [{"loc": (None, P, 4), "conf": (None, P, C + 1)}]
    if config["motion"] == "micro-motion":
        return {"detect": ({"frames": (None, T, h, w, 3)}, out)}
    io = {"detect": ({"frames": (None, 1, h, w, 3), "flows": (None, T - 1, 2, h, w)}, out)}
    if config["motion"] == "flow":
        io["flow"] = ({"frames": (None, 2, h, w, 3)}, [{"flow": (None, 2, h, w)}])
    return io


def check_graph_io(config, graph, inputs, outputs, where, metadata=None):
    """Compare the ``{name: shape}`` ``inputs`` and ``outputs`` that ``graph`` declares (ints, or anything
    else for a dynamic dimension) and its ``metadata`` (ONNX custom metadata) with the model ``config``;
    an :class:`EngineError` naming the graph, the field and both values on a contradiction."""
    wanted_in, wanted_outs = expected_io(config)[graph]
    _compare(graph, "input", wanted_in, inputs, where)
    matching = [o for o in wanted_outs if set(o) == set(outputs)]
    if not matching:
        raise EngineError(f"{where}: the {graph} graph returns {sorted(outputs)}; an edge_stad {graph} returns "
                          + " or ".join(str(sorted(o)) for o in wanted_outs))
    _compare(graph, "output", matching[0], outputs, where)
    stamped = (metadata or {}).get(METADATA_KEY)
    if stamped is not None:
        try:
            built = json.loads(stamped)
        except ValueError:
            raise EngineError(f"{where}: the {graph} graph's {METADATA_KEY} metadata is not JSON") from None
        for field, value in (built.items() if isinstance(built, dict) else ()):
            if field in STAMPED and config.get(field) != value:
                raise EngineError(f"{where}: the manifest says model.{field} = {config.get(field)!r} but the "
                                  f"{graph} graph was built for {value!r}: graph and manifest describe different "
                                  "models")


def _compare(graph, kind, wanted, declared, where):
    missing = sorted(set(wanted) - set(declared))
    if missing:
        raise EngineError(f"{where}: the {graph} graph has no {kind} {', '.join(missing)}; it takes "
                          f"{sorted(declared)}")
    for name, shape in wanted.items():
        have = list(declared[name])
        fixed = [d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else None for d in have]
        if len(have) != len(shape) or any(w is not None and d is not None and d != w for w, d in zip(shape, fixed)):
            show = "(" + ", ".join("N" if w is None else str(w) for w in shape) + ")"
            raise EngineError(f"{where}: the {graph} graph's {kind} {name} is shaped {tuple(have)}, but the manifest's "
                              f"model (clip length, K, input size, classes) implies {show}: graph and manifest "
                              "describe different models")


def frame_input(frames, count, config, what):
    """``frames`` as the graph takes them, or a :class:`FrameError` naming the expected layout."""
    frames = np.asarray(frames)
    h, w = config["input_size"]
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1:] != (count, h, w, 3):
        raise FrameError(f"{what} must be uint8 (N, {count}, {h}, {w}, 3) resized BGR frames, oldest first; got "
                         f"{frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)
