"""Export an AMMA model to ``encoder.onnx`` + ``head.onnx`` and prove the files right (MENet models:
``encoder3d.onnx`` + ``detector.onnx``, :mod:`edge_stad.export.frame_graphs`, same machinery).

TorchScript-based exporter (``dynamo=False``), opset 17 for the ``conv`` decoder (the
deployment default, TensorRT 8.5 included); the ``dcn`` decoder exports its deformable
conv as one ONNX ``DeformConv`` node, which needs opset 19 (ONNX Runtime, TensorRT >= 10). Static shapes
(batch 1, the model's input size) unless ``dynamic_batch`` (multi-camera batching).
After each export: ``onnx.checker`` (full check), strict shape inference (the inferred
shapes are stored in the file, which TensorRT and ORT use), and a parity run of ONNX Runtime against PyTorch on the same
inputs; an error above the tolerance (:func:`scaled_error`) is an :class:`ExportError`.
"""
import io
import os
import warnings

import numpy as np
import torch

from edge_stad.atomic import atomic_write
from edge_stad.core.tubelet_decode import decode as decode_rows_host
from edge_stad.engines.onnxruntime_backend import create_session, is_frame_model
from edge_stad.errors import ConfigError, ExportError, MissingDependencyError
from edge_stad.export.graphs import EncoderGraph, HeadGraph
from edge_stad.model_config import SNIPPET, SSD
from edge_stad.models.deform_conv import deform_conv2d_op

OPSET = 17
DCN_OPSET = 19  # first opset with DeformConv
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 3e-2   # FP16 graphs against the FP32 PyTorch model
# SSDLite detectors: PyTorch's own FP32 output of a BN-calibrated random flow-fusion-lite differs from float64 by
# 1.8e-4 (scaled), ONNX Runtime's by 1.1e-4: the bound is the model's conditioning, not the export's
SSD_FP32_TOLERANCE = 1e-3
ENCODER_OUTPUTS = ("feat", "wh")
HEAD_OUTPUTS = ("hm", "mov", "wh")
DECODED_OUTPUTS = ("tubelets",)


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise MissingDependencyError("exporting needs onnx: pip install 'edge_stad[train]'") from e
    return onnx


def example_inputs(config, batch=1, seed=0):
    """Random uint8 frames for the encoder, shaped as the runtime feeds them."""
    h, w = config["input_size"]
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, config["clip_len"], h, w, 3), dtype=np.uint8)


def _deform_conv_symbolic(g, x, offset, mask, weight, bias, stride, padding, dilation):
    from torch.onnx import symbolic_helper

    s, p, d = (symbolic_helper._get_const(v, "i", name)
               for v, name in ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    kh, kw = weight.type().sizes()[2:]
    return g.op("DeformConv", x, weight, offset, bias, mask, kernel_shape_i=[kh, kw], strides_i=[s, s],
                pads_i=[p] * 4, dilations_i=[d, d], group_i=1, offset_group_i=1)


def opset_for(config):
    """17, or 19 where the ``dcn`` decoder becomes ``DeformConv`` (torch >= 2.4; else plain gathers at 17)."""
    if config["decoder"] == "dcn" and deform_conv2d_op is not None:
        torch.onnx.register_custom_op_symbolic("edge_stad::deform_conv2d", _deform_conv_symbolic, DCN_OPSET)
        return DCN_OPSET
    return OPSET


def _export(module, args, input_names, output_names, opset, dynamic_batch):
    dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic on static shapes
        torch.onnx.export(module, args, buffer, input_names=list(input_names), output_names=list(output_names),
                          opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
    onnx = _onnx()
    proto = tidy(onnx.load_from_string(buffer.getvalue()))
    try:
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported {output_names} graph is not valid ONNX: {e}") from e
    return proto


def tidy(proto):
    """Make every constant an initializer and drop Identity nodes that only rename one.

    The exporter passes deduplicated biases through Identity nodes and emits shape
    constants as Constant nodes; quantizers and TensorRT's QDQ rules want weights and
    biases to be initializers feeding the layer directly.
    """
    from onnx import numpy_helper

    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    rename, keep = {}, []
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
            graph.initializer.append(tensor)
            initializers.add(node.output[0])
        elif node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return proto


def save_model(proto, path):
    """Serialize an ONNX model atomically (graphs here stay far below protobuf's 2 GiB limit)."""
    with atomic_write(path, "wb") as f:
        f.write(proto.SerializeToString())


def save_graphs(folder, protos, opset, half, dynamic_batch, inputs, outputs):
    """Write each graph of ``protos`` (``{graph: proto}``, in run order) as ``folder/<graph>.onnx``; returns ``(paths,
    the manifest's export record)`` given ``inputs`` ``{graph: {input: shape without the batch}}`` and ``outputs``
    ``{graph: [output names]}`` (host-decoded families: STMA, flow fusion)."""
    paths = {g: os.path.join(folder, f"{g}.onnx") for g in protos}
    for g, proto in protos.items():
        save_model(proto, paths[g])
    batch = "batch" if dynamic_batch else 1
    record = {"opset": opset, "precision": "fp16" if half else "fp32", "dynamic_batch": bool(dynamic_batch),
              "decode_in_graph": False,
              "inputs": {g: {n: [batch, *shape] for n, shape in inputs[g].items()} for g in protos},
              "outputs": {g: list(outputs[g]) for g in protos}}
    return paths, record


def max_abs_error(got, reference):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(got, reference))


def scaled_error(got, reference):
    """Max abs error, divided by the reference's max magnitude where that exceeds 1.

    FP32 kernels that sum in another order differ by a few ulps of the values they sum, so
    a feature map of magnitude 30 legitimately differs by more than one of magnitude 1.
    """
    return max(max_abs_error([x], [y]) / max(1.0, float(np.max(np.abs(y)))) for x, y in zip(got, reference))


def export_onnx(model, folder, dynamic_batch=False, decode=False, half=False, verify=True, tolerance=None, seed=0,
                fold=False):
    """Write ``folder/encoder.onnx`` and ``folder/head.onnx`` for ``model``; returns what the manifest records.

    ``decode=True`` puts the peak filter, the TopK decode and the trajectory branch at the top cells
    in the head graph (output ``tubelets (B, N, 4K+2)``, :class:`~edge_stad.export.graphs.TrajectoryAtCells`);
    ``half=True`` exports FP16 graphs (see
    :mod:`edge_stad.export.graphs`), checked against the FP32 PyTorch model with the looser
    ``FP16_TOLERANCE``; ``fold=True`` exports the encoder in the folded form that the ``cpu`` INT8
    flavour quantizes (:mod:`edge_stad.models.deploy`). With ``verify``, ONNX Runtime must reproduce PyTorch to
    ``tolerance`` (:func:`scaled_error`) on random frames (encoder) and on the features of
    K random clips (head, checked on its ``hm, mov, wh`` form); an in-graph decode must then equal the
    host decode of that head's ONNX Runtime outputs to ``tolerance`` (its trajectory branch sums in
    another order; a float comparison, not a tie-break, decides which of two equal-looking peaks
    ranks first, so torch's outputs cannot serve).
    A MENet model gets ``encoder3d.onnx`` + ``detector.onnx`` instead
    (:func:`~edge_stad.export.frame_graphs.export_frame_onnx`), an STMA model ``encoder.onnx``,
    ``encoder3d.onnx`` and ``head.onnx`` (:func:`~edge_stad.export.snippet_graphs.export_snippet_onnx`), a
    flow-fusion model ``detect.onnx`` and, with a learned flow network, ``flow.onnx``
    (:func:`~edge_stad.export.ssd_graphs.export_ssd_onnx`).
    """
    config = model.config
    if tolerance is None:
        tolerance = FP16_TOLERANCE if half else SSD_FP32_TOLERANCE if config["name"] in SSD else FP32_TOLERANCE
    if is_frame_model(config):
        if decode:
            raise ConfigError(f"{config['name']} region maps are decoded on the host (YOLOv2 regions); "
                              "build with --decode host")
        from edge_stad.export.frame_graphs import export_frame_onnx

        return export_frame_onnx(model, folder, dynamic_batch, half, verify, tolerance, seed)
    if config["name"] in SNIPPET:
        if decode:
            raise ConfigError(f"{config['name']} head outputs are decoded on the host; build with --decode host")
        from edge_stad.export.snippet_graphs import export_snippet_onnx

        return export_snippet_onnx(model, folder, dynamic_batch, half, verify, tolerance, seed)
    if config["name"] in SSD:
        if decode:
            raise ConfigError(f"{config['name']} outputs are decoded on the host; build with --decode host")
        from edge_stad.export.ssd_graphs import export_ssd_onnx

        return export_ssd_onnx(model, folder, dynamic_batch, half, verify, tolerance, seed)
    opset = opset_for(config)
    encoder, head = EncoderGraph(model, half, fold), HeadGraph(model, half=half)
    frames = torch.from_numpy(example_inputs(config, batch=config["K"], seed=seed))
    with torch.no_grad():   # the FP32 reference
        feats, whs = EncoderGraph(model)(frames)
        window = (feats[None], whs[None])
        head_out = HeadGraph(model)(*window)
    encoder_proto = _export(encoder, (frames[:1],), ["frames"], ENCODER_OUTPUTS, opset, dynamic_batch)
    head_proto = _export(head, window, ["feats", "whs"], HEAD_OUTPUTS, opset, dynamic_batch)
    shipped_head = head_proto
    if decode:
        shipped_head = _export(HeadGraph(model, decode=True, half=half), window, ["feats", "whs"], DECODED_OUTPUTS,
                               opset, dynamic_batch)
    paths = {"encoder": os.path.join(folder, "encoder.onnx"), "head": os.path.join(folder, "head.onnx")}
    save_model(encoder_proto, paths["encoder"])
    save_model(shipped_head, paths["head"])
    batch = "batch" if dynamic_batch else 1
    record = {"opset": opset, "precision": "fp16" if half else "fp32", "dynamic_batch": bool(dynamic_batch),
              "decode_in_graph": bool(decode),
              "inputs": {"encoder": {"frames": [batch, config["clip_len"], *config["input_size"], 3]},
                         "head": {"feats": [batch, *feats.shape], "whs": [batch, *whs.shape]}},
              "outputs": {"encoder": list(ENCODER_OUTPUTS), "head": list(DECODED_OUTPUTS if decode else HEAD_OUTPUTS)}}
    if not verify:
        return record
    enc = create_session(paths["encoder"])
    got = [enc.run(None, {"frames": frames[i:i + 1].numpy()}) for i in range(len(frames))]
    feeds = {"feats": window[0].numpy(), "whs": window[1].numpy()}
    ort_head = create_session(head_proto.SerializeToString()).run(None, feeds)
    pairs = {"encoder": ([np.concatenate(p) for p in zip(*got)], (feats.numpy(), whs.numpy())),
             "head": (ort_head, [t.numpy() for t in head_out])}
    if decode:
        pairs["decode"] = ([create_session(paths["head"]).run(None, feeds)[0]], [decode_rows_host(*ort_head)])
    return check_parity(record, pairs, tolerance)


def check_parity(record, pairs, tolerance):
    """Add the errors of ``pairs`` (``{graph: (ONNX Runtime outputs, reference outputs)}``) to the export
    ``record`` and return it; an :class:`ExportError` when one exceeds ``tolerance`` (:func:`scaled_error`)."""
    record["parity_max_abs_error"] = {graph: max_abs_error(*pair) for graph, pair in pairs.items()}
    record["parity_scaled_error"] = {graph: scaled_error(*pair) for graph, pair in pairs.items()}
    for graph, error in record["parity_scaled_error"].items():
        if not error <= tolerance:
            raise ExportError(f"ONNX {graph} differs from {'the host decode' if graph == 'decode' else 'PyTorch'} "
                              f"by {record['parity_max_abs_error'][graph]:.3g} (max abs; {error:.3g} scaled by the "
                              f"output magnitude), above the {tolerance:g} tolerance")
    return record
