"""Checkpoint -> engine folder: export, reduce precision, gate, (TensorRT), verify, manifest.

AMMA engines hold ``encoder`` + ``head``; MENet / MENet-Lite engines ``encoder3d`` + ``detector``,
calibrated on clips and their latest frames, gated on decoded boxes and frame-mAP of the
frame-level evaluation, their attention products kept out of INT8 (:class:`_FrameModel`); STMA
engines ``encoder``, ``encoder3d``, ``head`` (:class:`_SnippetModel`); flow-fusion engines ``flow``
and ``detect``, only the detector reduced in precision (:class:`_SsdModel`).

The folder is assembled under a temporary sibling and renamed into place only when every
stage passed, so a failed or interrupted build leaves no engine behind (the INT8 report
in ``calibration/<engine>/`` stays, to show why). Stages:

1. export the FP32 graphs (encoder/head or encoder3d/detector) and check them against PyTorch;
2. FP16: convert (I/O and sensitive ops FP32); INT8: calibrate on real windows, quantize
   to QDQ, run the accuracy gate against FP32 on held-out windows (output agreement and,
   on a labelled dataset, frame-mAP); when the frame-mAP drop exceeds ``max_map_drop``,
   keep the layers with the worst measured quantization noise in float and retry, then
   refuse if it still fails. Where the FP32 model's frame-mAP is below ``min_fp32_map`` the
   gate is not applicable (a model that detects nothing has nothing to lose): the engine is
   built, and its report and manifest say so instead of "passed";
3. TensorRT plans when TensorRT is importable (``backend`` auto/tensorrt);
4. reference inputs/outputs (``reference_io.npz``, from ONNX Runtime on the final graphs)
   for checking a TensorRT build on the device against this machine;
5. ``manifest.json`` with config, versions, calibration summary and sha256 of every file.
"""
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from edge_stad.atomic import atomic_write, write_json
from edge_stad.build import tensorrt_plans
from edge_stad.core.snippets import layout_of
from edge_stad.data.staging import check_output_dir, staged_dir
from edge_stad.defaults import GATE_MIN_FP32_MAP, MAX_MAP_DROP
from edge_stad.engines import tensorrt_runtime
from edge_stad.engines.graph_io import graph_metadata
from edge_stad.engines.manifest import INT8_REPORT, write_manifest
from edge_stad.engines.onnxruntime_backend import (
    OnnxRuntimeBackend,
    OnnxRuntimeFrameBackend,
    OnnxRuntimeSnippetBackend,
    OnnxRuntimeSsdBackend,
    is_frame_model,
)
from edge_stad.errors import ConfigError, ExportError, MissingDependencyError
from edge_stad.model_config import SSD, engine_kind, graph_names
from edge_stad.version import __version__

PRECISIONS = ("fp32", "fp16", "int8")
SPEED_ONLY = "random weights (untrained): for speed measurements only, its detections mean nothing"
BACKENDS = ("auto", "onnxruntime", "tensorrt")
EXCLUDE_STEPS = (1, 2, 4, 8, 16)  # layers kept in float on successive gate retries


@dataclass
class BuildOptions:
    precision: str = "fp32"
    backend: str = "auto"
    calib_data: Optional[str] = None        # ACT folder, video(s) or .npy windows; INT8 only
    calib_clips: int = 64                    # calibration windows
    calib_method: str = "minmax"
    int8_flavor: str = "auto"                # tensorrt | cpu | auto (tensorrt when building plans)
    gate_windows: int = 32
    max_map_drop: float = MAX_MAP_DROP       # frame-mAP points
    min_fp32_map: float = GATE_MIN_FP32_MAP  # frame-mAP points below which the gate is not applicable
    decode_in_graph: Optional[bool] = None   # None: in the head graph for tubelet models, on the host for MENet
    dynamic_batch: bool = False
    workspace_mb: int = 1024
    dla_core: Optional[int] = None
    timing_cache: Optional[str] = None
    trt_calib_cache: bool = False            # implicit INT8 cache for TensorRT <= 10
    calibration_dir: str = "calibration"
    force: bool = False
    random_weights: bool = False             # an untrained model: the manifest marks the engine speed-only


def engine_name(config, precision):
    if config["name"] in SSD:
        return f"{config['name']}_{config['backbone']}_{config['motion']}_{config['fusion']}_{precision}"
    if is_frame_model(config):
        return f"{config['name']}_{config['backbone_3d']}_t{config['clip_len']}_{precision}"
    return f"{config['name']}_{config['backbone']}_k{config['K']}_{precision}"


def _say(log, stage, text):
    log(f"[{stage}] {text}")


def _errors(record):
    return ", ".join(f"{k} {v:.2e}" for k, v in record["parity_max_abs_error"].items())


class _Strategy:
    """A family's build strategy for the model ``config`` (one instance per build): its ``graphs``, in run order,
    and the ``reduced`` ones FP16 and INT8 engines hold in that precision (all of them unless a family says)."""

    float_scopes = ()

    def __init__(self, config):
        self.graphs = graph_names(config)
        self.reduced = self.graphs

    def always_float(self, fp32):
        """``{graph: [node]}``: the attention products under :attr:`float_scopes` kept out of INT8."""
        from edge_stad.quant.int8 import attention_nodes

        nodes = {g: attention_nodes(fp32[g], self.float_scopes) for g in self.graphs} if self.float_scopes else {}
        return {g: found for g, found in nodes.items() if found}

    @staticmethod
    def frame_map(backend, dataset):
        """Frame-mAP@0.5 (points) of ``backend`` on ``dataset``'s test split, as its Runtime would stream it."""
        from edge_stad.eval.predictors import evaluate_backend_of_any_kind

        return float(evaluate_backend_of_any_kind(backend, dataset).frame.mean * 100)


def _tubelet_message(agree):
    return f"peak agreement {agree['peak_agreement']:.3f}, box L1 {agree['box_l1_grid_cells']:.3f} cells"


class _TubeletModel(_Strategy):
    """AMMA: windows of K clips; the head is calibrated on the encoder's features; the gate compares tubelets."""

    fp16_float = "FP32 I/O, normalisation, micro-motion and decode"
    float_scopes = ()

    @staticmethod
    def backend(paths, config):
        return OnnxRuntimeBackend(*(paths[g] for g in graph_names(config)), config)

    @staticmethod
    def feeds(windows, fp32_backend):
        from edge_stad.quant.int8 import encoder_feeds, head_feeds

        return {"encoder": encoder_feeds(windows), "head": head_feeds(windows, fp32_backend.encode)}

    @staticmethod
    def agreement(reference, candidate, windows):
        from edge_stad.quant.gate import output_agreement

        agree = output_agreement(reference, candidate, windows)
        return agree, _tubelet_message(agree)

    @staticmethod
    def reference_io(folder, backend, config):
        save_reference_io(folder, backend, config)


class _FrameModel(_Strategy):
    """MENet: one-clip windows; the detector is calibrated on each clip's latest frames and the FP32
    encoder3d's feature of it; the gate compares decoded boxes; the attention products stay float."""

    fp16_float = "FP32 I/O, normalisation, SRM and attention energy/softmax"
    float_scopes = ("/cfam/sc/", "/non_local/")
    float_reason = ("attention energies and softmax weights (E = F F^T) span a range one int8 scale cannot "
                    "resolve; the model computes them in FP32 (edge_stad.export.frame_graphs)")

    @staticmethod
    def backend(paths, config):
        return OnnxRuntimeFrameBackend(*(paths[g] for g in graph_names(config)), config)

    @staticmethod
    def feeds(windows, fp32_backend):
        from edge_stad.quant.int8 import frame_feeds

        return frame_feeds(windows, fp32_backend.encode_3d, fp32_backend.frames_2d)

    @staticmethod
    def agreement(reference, candidate, windows):
        from edge_stad.quant.gate import region_agreement

        agree = region_agreement(reference, candidate, windows)
        return agree, (f"box agreement {agree['box_agreement']:.3f} of {agree['reference_boxes']} boxes (IoU "
                       f"{agree['mean_iou']:.3f}, score diff {agree['score_abs_diff']:.3f}), top-box IoU "
                       f"{agree['top_box_iou']:.3f}, region max diff {agree['region_max_abs_diff']:.3g}")

    @staticmethod
    def reference_io(folder, backend, config):
        from edge_stad.export.onnx_export import example_inputs

        clip = example_inputs(config, batch=1)
        frames = clip[:, -backend.frames_2d:]
        feat3d = backend.encode_3d(clip)
        _write_reference_io(folder, {"encoder3d.clip": clip, "encoder3d.feat3d": feat3d, "detector.frames": frames,
                                     "detector.feat3d": feat3d, "detector.region": backend.detect(frames, feat3d)})


class _SnippetModel(_Strategy):
    """STMA: one-clip windows holding the snippet; the encoder is calibrated on the clip's frames, encoder3d on
    the clip, the head on the FP32 graphs' outputs for its window; the gate compares tubelets; STA's channel
    attention stays float."""

    fp16_float = "FP32 I/O, normalisation and the recognition branch (down-sampling, motion excitation, STA)"
    float_scopes = ("/action/sta/sc/",)
    float_reason = _FrameModel.float_reason

    @staticmethod
    def backend(paths, config):
        return OnnxRuntimeSnippetBackend(*(paths[g] for g in graph_names(config)), config=config)

    @staticmethod
    def feeds(windows, fp32_backend):
        from edge_stad.quant.int8 import snippet_feeds

        return snippet_feeds(windows, fp32_backend)

    @staticmethod
    def agreement(reference, candidate, windows):
        from edge_stad.quant.gate import snippet_agreement

        agree = snippet_agreement(reference, candidate, windows)
        return agree, _tubelet_message(agree)

    @staticmethod
    def reference_io(folder, backend, config):
        from edge_stad.engines.snippet_backend import window_feeds
        from edge_stad.export.onnx_export import example_inputs

        clip = example_inputs(config, batch=1)
        first = layout_of(config).encoded[0]
        _graph_reference_io(folder, backend, {"encoder": {"frames": clip[:, first:first + 1]},
                                              "encoder3d": {"clip": clip}, "head": window_feeds(backend, clip[0])})


class _SsdModel(_Strategy):
    """Flow fusion: one-clip windows of the frames a detection reads; only ``detect`` is reduced (calibrated on the
    key frame and the FP32 flow graph's or DIS flows), the flow graph stays FP32 (:mod:`edge_stad.export.ssd_graphs`);
    the gate compares decoded boxes."""

    fp16_float = "FP32 I/O, normalisation, the flow network, micro-motion and the flow-image convolution"

    def __init__(self, config):
        super().__init__(config)
        self.reduced = ("detect",)

    @staticmethod
    def backend(paths, config):
        return OnnxRuntimeSsdBackend(*(paths[g] for g in graph_names(config)), config=config)

    @staticmethod
    def feeds(windows, fp32_backend):
        from edge_stad.quant.int8 import ssd_feeds

        return ssd_feeds(windows, fp32_backend)

    @staticmethod
    def agreement(reference, candidate, windows):
        from edge_stad.quant.gate import ssd_agreement

        agree = ssd_agreement(reference, candidate, windows)
        return agree, (f"box agreement {agree['box_agreement']:.3f} of {agree['reference_boxes']} boxes (IoU "
                       f"{agree['mean_iou']:.3f}), top-box IoU {agree['top_box_iou']:.3f}, output max diff "
                       f"{agree['output_max_abs_diff']:.3g}")

    @staticmethod
    def reference_io(folder, backend, config):
        from edge_stad.export.ssd_graphs import example_frames
        from edge_stad.quant.int8 import ssd_feeds

        frames = example_frames(config, batch=1)
        _graph_reference_io(folder, backend, {"flow": {"frames": frames[:, :2]},
                                              "detect": ssd_feeds([frames], backend)["detect"][0]})


#: The build strategy of each model family: what to export, how to calibrate and how to gate. A new
#: family that streams adds its strategy here (docs/architecture.md, "Adding a model family").
STRATEGIES = {"amma": _TubeletModel, "menet": _FrameModel, "menet-lite": _FrameModel, "stma": _SnippetModel,
              "stma-lite": _SnippetModel, "flow-fusion": _SsdModel, "flow-fusion-lite": _SsdModel}


def model_kind(config):
    """The build strategy of the model ``config``, or a ConfigError for a family without one yet."""
    name = config.get("name", "amma")
    if name not in STRATEGIES:
        raise ConfigError(f"edge-stad build has no strategy for {name} models (it builds the detectors: "
                          f"{', '.join(STRATEGIES)})")
    return STRATEGIES[name](config)


def _quantize(work, fp32, feeds, opts, exclude, graphs):
    from edge_stad.quant.int8 import quantize_int8

    paths = {}
    for graph in graphs:
        paths[graph] = os.path.join(work, f"{graph}.int8.onnx")
        quantize_int8(fp32[graph], paths[graph], feeds[graph], opts.calib_method, exclude.get(graph, ()),
                      flavor=opts.int8_flavor,
                      ranges_path=os.path.join(work, f"{graph}.ranges.json"))
    return paths


def _gate(kind, model_config, fp32_backend, int8_paths, gate_windows, eval_dataset):
    int8_backend = kind.backend(int8_paths, model_config)
    agreement, message = kind.agreement(fp32_backend, int8_backend, gate_windows)
    result = {"agreement": agreement}
    if eval_dataset is not None:
        result["frame_mAP_int8"] = kind.frame_map(int8_backend, eval_dataset)
    return result, message


def calibration_sets(model_config, opts, log, given=None):
    """Calibration and gate windows (read before any export, so bad data fails fast): from ``given`` (windows
    or a CalibrationDataReader, :func:`edge_stad.quant.calibration.user_windows`) or ``opts.calib_data``."""
    from edge_stad.quant.calibration import calibration_windows, user_windows

    if given is not None:
        windows = user_windows(given, model_config, opts.calib_clips)
        _say(log, "int8", f"calibrating on {len(windows)} windows given by the caller ({opts.calib_method}); gate on "
                          f"{min(len(windows), opts.gate_windows)} of them (no test split)")
        return windows, windows[:opts.gate_windows], False
    if opts.calib_data is None:
        raise ConfigError("INT8 needs calibration data: --calib-data DIR (an ACT dataset such as the synthetic "
                          "set, a folder of videos, or a .npy of windows)")
    from edge_stad.data.act import is_act_dataset

    labelled = is_act_dataset(opts.calib_data)
    windows = calibration_windows(opts.calib_data, model_config, opts.calib_clips, part="train")
    gate_windows = (calibration_windows(opts.calib_data, model_config, opts.gate_windows, part="test")
                    if labelled else windows[:opts.gate_windows])
    _say(log, "int8", f"calibrating on {len(windows)} windows of {opts.calib_data} ({opts.calib_method}); gate on "
                      f"{len(gate_windows)} {'held-out test' if labelled else 'calibration (no test split)'} windows")
    return windows, gate_windows, labelled


def build_int8(model_config, fp32, work, opts, log, windows, gate_windows, labelled):
    """Quantize and gate; returns ``(int8 paths, report, calibration feeds)``.

    The report's ``passed`` is True or False, or None where the gate is not applicable (the FP32
    model's frame-mAP below ``opts.min_fp32_map``); ``verdict`` says which in words.
    """
    from edge_stad.data.act import ActDataset
    from edge_stad.quant.sensitivity import layer_errors

    kind = model_kind(model_config)
    fp32_backend = kind.backend(fp32, model_config)
    feeds = kind.feeds(windows, fp32_backend)
    eval_dataset = ActDataset(opts.calib_data) if labelled else None
    source = "windows given to build_engine" if opts.calib_data is None else os.path.abspath(opts.calib_data)
    report = {"calibration": {"source": source, "windows": len(windows),
                              "method": opts.calib_method, "gate_windows": len(gate_windows)},
              "max_map_drop": opts.max_map_drop, "attempts": []}
    always = kind.always_float(fp32)
    if always:
        report["always_float"] = {"nodes": always, "why": kind.float_reason}
        _say(log, "int8", f"kept in float: {', '.join(n for nodes in always.values() for n in nodes)} (attention)")
    if eval_dataset is not None:
        report["frame_mAP_fp32"] = kind.frame_map(fp32_backend, eval_dataset)
        if report["frame_mAP_fp32"] < opts.min_fp32_map:
            report["passed"], report["verdict"] = None, gate_not_applicable(report["frame_mAP_fp32"])
            _say(log, "int8", f"warning: accuracy gate {report['verdict']}; the engine is built unchecked")
            eval_dataset = None   # INT8 against an FP32 model that detects nothing says nothing
    ranking = paths = None
    for kept in (0,) + EXCLUDE_STEPS:
        exclude = {}
        if kept:
            if ranking is None:
                ranking = {g: layer_errors(fp32[g], paths[g], feeds[g][:4]) for g in kind.reduced}
                report["sensitivity"] = {g: [r._asdict() for r in rows[:16]] for g, rows in ranking.items()}
            worst = sorted(((r.local_db, g, r.node) for g, rows in ranking.items() for r in rows))[:kept]
            for _, g, node in worst:
                exclude.setdefault(g, []).append(node)
        paths = {**fp32, **_quantize(work, fp32, feeds, opts,
                                     {g: always.get(g, []) + exclude.get(g, []) for g in kind.reduced}, kind.reduced)}
        gate, msg = _gate(kind, model_config, fp32_backend, paths, gate_windows, eval_dataset)
        gate["kept_float"] = exclude
        report["attempts"].append(gate)
        if eval_dataset is None:
            if "verdict" in report:
                _say(log, "int8", msg)
                return paths, report, feeds
            _say(log, "int8", msg + " (no labelled test split: frame-mAP gate skipped)")
            break
        drop = report["frame_mAP_fp32"] - gate["frame_mAP_int8"]
        gate["frame_mAP_drop"] = drop
        _say(log, "int8", f"{msg}; frame-mAP FP32 {report['frame_mAP_fp32']:.2f} INT8 {gate['frame_mAP_int8']:.2f} "
                          f"(drop {drop:.2f}, limit {opts.max_map_drop:g})"
                          + (f", {kept} layer(s) kept in float" if kept else ""))
        if drop <= opts.max_map_drop:
            break
    else:
        report["passed"], report["verdict"] = False, "failed"
        return paths, report, feeds
    report["passed"], report["verdict"] = True, "passed"
    return paths, report, feeds


def gate_not_applicable(frame_map_fp32):
    """The gate's verdict for an FP32 model whose frame-mAP (points) is below the floor."""
    return f"not applicable: the FP32 model detects nothing (frame-mAP {frame_map_fp32:.2f})"


def save_reference_io(folder, backend, config, seed=0):
    """``reference_io.npz``: one clip, the encoder outputs, one window and the head outputs (ONNX Runtime)."""
    from edge_stad.export.onnx_export import example_inputs

    frames = example_inputs(config, batch=config["K"], seed=seed)
    feat, wh = backend.encode(frames)
    arrays = {"encoder.frames": frames[:1], "encoder.feat": feat[:1], "encoder.wh": wh[:1],
              "head.feats": feat[None], "head.whs": wh[None]}
    outputs = backend.head_session.run(None, {"feats": feat[None], "whs": wh[None]})
    for output, value in zip(backend.head_session.get_outputs(), outputs):
        arrays["head." + output.name] = value
    _write_reference_io(folder, arrays)


def _stamped_copy(source, target, config, graph, labels, precision):
    """Copy the ONNX graph ``source`` to ``target`` describing itself in its ``metadata_props``
    (:func:`edge_stad.engines.graph_io.graph_metadata`): the model fields its shapes depend on, which the
    backends compare with the manifest, and the model, version, class names and input contract, for tools
    that see the ONNX file alone (Netron, onnx.load)."""
    import onnx

    from edge_stad.export.onnx_export import save_model

    proto = onnx.load(source)
    entries = graph_metadata(config, graph, labels, precision)
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    save_model(proto, target)


def _graph_reference_io(folder, backend, feeds):
    """``reference_io.npz`` of a ``run_graph`` backend: ``feeds`` and the outputs of each of its model's graphs."""
    arrays = {}
    for graph in graph_names(backend.config):
        for name, value in {**feeds[graph], **backend.run_graph(graph, feeds[graph])}.items():
            arrays[f"{graph}.{name}"] = value
    _write_reference_io(folder, arrays)


def _write_reference_io(folder, arrays):
    """``folder/reference_io.npz`` from ``{"<graph>.<input or output>": array}``."""
    with atomic_write(os.path.join(folder, "reference_io.npz"), "wb") as f:
        np.savez(f, **arrays)


def _versions():
    import onnx
    import onnxruntime
    import torch

    versions = {"edge_stad": __version__, "python": platform.python_version(), "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "numpy": np.__version__}
    if tensorrt_runtime.available():
        versions["tensorrt"] = tensorrt_runtime.tensorrt().__version__
    return versions


def resolve_int8_flavor(opts, use_trt, log):
    """``auto`` -> ``tensorrt`` when plans are built here, else ``cpu``; a CPU flavour cannot feed TensorRT."""
    from dataclasses import replace

    from edge_stad.quant.int8 import FLAVORS

    if opts.int8_flavor not in FLAVORS and opts.int8_flavor != "auto":
        raise ConfigError(f"--int8-flavor must be auto, {' or '.join(FLAVORS)}; got {opts.int8_flavor!r}")
    flavor = opts.int8_flavor if opts.int8_flavor != "auto" else ("tensorrt" if use_trt else "cpu")
    if use_trt and flavor != "tensorrt":
        raise ConfigError("TensorRT builds need --int8-flavor tensorrt (symmetric int8 activations)")
    if opts.int8_flavor == "auto":
        hint = "" if use_trt else " (for ONNX files TensorRT can build on the device: --int8-flavor tensorrt)"
        _say(log, "int8", f"flavour {flavor}{hint}")
    return replace(opts, int8_flavor=flavor)


def build_engine(model, out, opts, labels=(), command=None, log=print, calibration=None):
    """Build the engine folder ``out`` for ``model`` (an AMMA or MENet in eval mode); returns its manifest.

    ``labels`` names the classes (from the checkpoint); ``command`` is recorded in the manifest.
    ``calibration``: INT8 calibration data from Python instead of ``opts.calib_data``: an iterable of
    windows ``uint8 (K, clip_len, H, W, 3)`` or an ONNX Runtime ``CalibrationDataReader`` of the first
    graph's feeds (the gate then runs on those windows: there is no test split).

    The stages, each below: checks (before any work), export, precision, the engine's files, TensorRT
    plans, the manifest. Everything is written into a staged folder renamed to ``out`` at the end.
    """
    if opts.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {opts.precision!r}")
    if opts.backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {opts.backend!r}")
    use_trt = opts.backend == "tensorrt" or (opts.backend == "auto" and tensorrt_runtime.available())
    if opts.precision == "int8":
        opts = resolve_int8_flavor(opts, use_trt, log)
    if opts.backend == "tensorrt":
        tensorrt_runtime.tensorrt()  # fail before any work when it is missing
    check_output_dir(out, opts.force)   # before any work: calibration alone takes a while
    config = dict(model.config)
    if labels and len(labels) != config["num_classes"]:
        raise ConfigError(f"{len(labels)} class names for a model of {config['num_classes']} classes: {list(labels)}")
    kind = model_kind(config)
    # Reports and caches are kept per engine folder, so builds into other --out folders never collide.
    reports = os.path.join(opts.calibration_dir, os.path.basename(os.path.normpath(os.fspath(out))))
    calibration = calibration_sets(config, opts, log, calibration) if opts.precision == "int8" else None
    with tempfile.TemporaryDirectory(prefix="edge_stad_build_") as work, staged_dir(out, opts.force) as folder:
        fp32, export = _export(model, kind, work, opts, log)
        final, report, feeds = _precision(model, kind, fp32, export, work, folder, reports, opts, log, calibration)
        graphs = {g: f"{g}.onnx" for g in kind.graphs}
        for g in kind.graphs:
            _stamped_copy(final[g], os.path.join(folder, graphs[g]), config, g, labels, opts.precision)
        kind.reference_io(folder, kind.backend({g: os.path.join(folder, graphs[g]) for g in kind.graphs}, config),
                          config)
        plans, trt = _plans(folder, kind, graphs, fp32, work, reports, feeds, opts, log) if use_trt else ({}, None)
        manifest = {
            "name": engine_name(config, opts.precision), "model": config, "precision": opts.precision,
            "int8_flavor": opts.int8_flavor if opts.precision == "int8" else None,
            "backend": "tensorrt" if use_trt else "onnxruntime", "graphs": graphs, "plans": plans,
            "export": export, "normalization": {"order": "BGR", "input": "uint8, resized with cv2.INTER_LINEAR",
                                                "in_graph": "(x / 255 - mean) / std"},
            "labels": list(labels) or [f"class_{i}" for i in range(config["num_classes"])], "versions": _versions(),
            "calibration": None if report is None else {k: report[k] for k in report if k != "sensitivity"},
            "command": command or " ".join(sys.argv), "options": asdict(opts),
            "speed_only": SPEED_ONLY if opts.random_weights else None,
        }
        if trt is not None:
            manifest["tensorrt"] = trt
        manifest = write_manifest(folder, manifest)
    return manifest


def _export(model, kind, work, opts, log):
    """FP32 ONNX graphs of ``model`` in ``work`` (checked against PyTorch); ``({graph: path}, export record)``."""
    from edge_stad.export.onnx_export import export_onnx

    _say(log, "export", f"{engine_name(model.config, opts.precision)}: FP32 ONNX, checking against PyTorch")
    fold = opts.precision == "int8" and opts.int8_flavor == "cpu"  # the graph quantized for ONNX Runtime's CPU
    export = export_onnx(model, work, dynamic_batch=opts.dynamic_batch, decode=_decodes(model.config, opts),
                         fold=fold)
    fp32 = {g: os.path.join(work, f"{g}.fp32.onnx") for g in kind.graphs}
    for g in fp32:
        os.replace(os.path.join(work, f"{g}.onnx"), fp32[g])
    _say(log, "export", f"opset {export['opset']}; error vs PyTorch (max abs): " + _errors(export))
    return fp32, export


def _decodes(config, opts):
    """Whether the head graph decodes the tubelets (AMMA's default; the other families decode on the host)."""
    default = engine_kind(config) == "tubelet"
    return default if opts.decode_in_graph is None else opts.decode_in_graph


def _precision(model, kind, fp32, export, work, folder, reports, opts, log, calibration):
    """The graphs at ``opts.precision``: ``({graph: path}, INT8 report or None, INT8 calibration feeds or None)``.

    FP16 exports again in half precision; INT8 calibrates, quantizes and gates (:func:`build_int8`),
    writes its report beside the calibration ranges and into the engine ``folder``, and raises where the
    gate failed."""
    if opts.precision == "fp16":
        os.mkdir(os.path.join(work, "fp16"))
        from edge_stad.export.onnx_export import export_onnx

        export["fp16"] = export_onnx(model, os.path.join(work, "fp16"), dynamic_batch=opts.dynamic_batch,
                                     decode=_decodes(model.config, opts), half=True)
        _say(log, "fp16", f"FP16 graphs ({kind.fp16_float}); error vs FP32 PyTorch: " + _errors(export["fp16"]))
        return {g: os.path.join(work, "fp16", f"{g}.onnx") for g in fp32}, None, None
    if opts.precision != "int8":
        return fp32, None, None
    final, report, feeds = build_int8(dict(model.config), fp32, work, opts, log, *calibration)
    write_json(os.path.join(reports, "report.json"), report)
    write_json(os.path.join(folder, INT8_REPORT), report)   # travels with the engine, hashed in its manifest
    for g in kind.reduced:
        shutil.copyfile(os.path.join(work, f"{g}.ranges.json"), os.path.join(reports, f"{g}.ranges.json"))
    if report["passed"] is False:
        last = report["attempts"][-1]
        kept = sum(map(len, last["kept_float"].values()))
        raise ExportError(f"INT8 accuracy gate failed: frame-mAP drops {last['frame_mAP_drop']:.2f} points "
                          f"(limit {opts.max_map_drop:g}) even with {kept} layers kept in float; see "
                          f"{reports}/report.json. No engine was written; "
                          "try --calib-method entropy/percentile, more --calib-clips, or --fp16")
    _say(log, "int8", f"report: {reports}/report.json")
    return final, report, feeds


def _plans(folder, kind, graphs, fp32, work, reports, feeds, opts, log):
    """TensorRT plans of the engine's graphs, checked against ONNX Runtime where polygraphy is installed;
    ``({graph: plan}, build record)``."""
    plans = {}
    for g in kind.graphs:
        _say(log, "tensorrt", f"building {g}.plan")
        plans[g] = f"{g}.plan"
        precision = opts.precision if g in kind.reduced else "fp32"   # flow fusion's flow network stays FP32
        info = tensorrt_plans.build_plan(os.path.join(folder, graphs[g]), os.path.join(folder, plans[g]),
                                         precision, opts.workspace_mb, opts.timing_cache, opts.dla_core,
                                         fp32_scopes=kind.float_scopes)
        if opts.trt_calib_cache and opts.precision == "int8" and g in kind.reduced:
            cache = os.path.join(reports, f"{g}.trt-calibration.cache")
            _say(log, "tensorrt", f"implicit INT8 calibration of {g} -> {cache}")
            tensorrt_plans.build_plan(fp32[g], os.path.join(work, f"{g}.implicit.plan"), "int8",
                                      opts.workspace_mb, None, opts.dla_core, feeds[g], cache,
                                      fp32_scopes=kind.float_scopes)
    try:
        check = tensorrt_plans.verify_plans(folder, plans)
        info["max_abs_error_vs_onnxruntime"] = check
        _say(log, "tensorrt", f"plans vs ONNX Runtime (max abs): {check}")
    except MissingDependencyError as e:
        _say(log, "tensorrt", f"plans not checked against ONNX Runtime: {e}")
    return plans, info
