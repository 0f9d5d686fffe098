"""The streaming graphs a flow-fusion model is exported as (:mod:`edge_stad.models.flow_fusion`'s streaming
split), and their export.

* :class:`FlowGraph` (``flow``, models whose flow network learns): one frame pair ``(B, 2, H, W, 3)``, older
  first -> ``flow (B, 2, H, W)``, a -> b in input pixels. The runtime runs it once per new frame and caches
  the flow for the next detections that read the pair. Its PWC-Net warps with ``GridSample`` (ONNX opset
  16+), which TensorRT's ONNX parser reads from TensorRT 8.5 on (``tensorrt_runtime.OPERATOR_SINCE``).
* :class:`DetectGraph` (``detect``): the key frame ``(B, 1, H, W, 3)`` and its pairs' flows
  ``(B, pairs, 2, H, W)`` (from the ``flow`` graph, or OpenCV DIS flow computed on the host for
  ``motion="dis"``); a micro-motion model takes its ``frames`` frames ``(B, T, H, W, 3)`` instead. Returns
  SSD's ``loc (B, P, 4)`` and ``conf (B, P, C + 1)`` logits, decoded on the host
  (:func:`edge_stad.core.ssd_decode.decode_ssd`).

``half=True`` makes the detect graph FP16 (backbone, fusion, head) with FP32 inputs and outputs; the flow
network stays FP32 in every engine (FP16 and INT8): its cost volume and warping resolve sub-pixel
displacements that the detector reads through one 1x1 convolution, and INT8 engines quantize the detect
graph only (:class:`edge_stad.build.pipeline._SsdModel`). The flow-image convolution and micro-motion stay
FP32 too (micro-motion's squared differences overflow FP16, :mod:`edge_stad.export.graphs`).
"""
import copy

import numpy as np
import torch

from edge_stad.engines.onnxruntime_backend import _run, create_session
from edge_stad.engines.ssd_backend import dis_flow, pair_flows
from edge_stad.engines.tensorrt_runtime import OPERATOR_SINCE
from edge_stad.export.graphs import NormalizedInput
from edge_stad.export.onnx_export import OPSET, _export, check_parity, save_graphs
from edge_stad.model_config import graph_names

DETECT_OUTPUTS = ("loc", "conf")


def ssd_inference_copy(model, half=False):
    """An eval-mode copy of ``model``; with ``half`` its backbone, fusion and head in FP16."""
    model = copy.deepcopy(model).eval()
    if half:
        for part in (model.backbone, model.fusion, model.head):
            part.half()
    return model


class FlowGraph(NormalizedInput):
    def __init__(self, model):
        super().__init__(ssd_inference_copy(model), 2, False)

    def forward(self, frames):
        x = self.normalized(frames)
        return self.model.flow_between(x[:, :3], x[:, 3:])


class DetectGraph(NormalizedInput):
    def __init__(self, model, half=False):
        self.micro_motion = model.config["motion"] == "micro-motion"
        super().__init__(ssd_inference_copy(model, half), model.frames if self.micro_motion else 1, half)

    def forward(self, frames, flows=None):
        m, x = self.model, self.normalized(frames)
        if self.micro_motion:
            k = 3 * m.key_index
            key, image = x[:, k:k + 3], m.flow_image(m.mm(x))
        else:
            key, image = x, m.flow_image(flows.reshape(x.shape[0], -1, *x.shape[2:]))
        if self.half:
            key, image = key.half(), image.half()
        return tuple(o.float() for o in m.detect(key, image))


def example_frames(config, batch=2, seed=0):
    """Random uint8 frames ``(batch, frames, H, W, 3)``: what a detection reads."""
    h, w = config["input_size"]
    return np.random.default_rng(seed).integers(0, 256, size=(batch, config["frames"], h, w, 3), dtype=np.uint8)


def export_ssd_onnx(model, folder, dynamic_batch, half, verify, tolerance, seed):
    """Write ``folder/detect.onnx`` and, where the flow network learns, ``flow.onnx``; returns what the manifest
    records. The arguments are :func:`~edge_stad.export.onnx_export.export_onnx`'s. With ``verify``, ONNX Runtime
    must reproduce the FP32 PyTorch graphs to ``tolerance`` on two random detections' frames (``flow`` on their
    first pair, ``detect`` on PyTorch's flows of them, so that its error is its own)."""
    config = model.config
    graphs = graph_names(config)
    frames = example_frames(config, seed=seed)
    motion, key = config["motion"], model.key_index
    protos, feeds, references = {}, {}, {}
    with torch.no_grad():   # the FP32 references
        if motion == "flow":
            flow = FlowGraph(model)
            feeds["flow"] = {"frames": frames[:, :2]}
            references["flow"] = [flow(torch.from_numpy(frames[:, :2])).numpy()]
            protos["flow"] = _export(flow, (torch.from_numpy(frames[:1, :2]),), ["frames"], ["flow"], OPSET,
                                     dynamic_batch)
            flows = pair_flows(frames, lambda a, b: flow(torch.from_numpy(np.stack([a, b], 1))).numpy())
        if motion == "micro-motion":
            feeds["detect"] = {"frames": frames}
        else:
            flows = flows if motion == "flow" else pair_flows(frames, dis_flow)
            feeds["detect"] = {"frames": frames[:, key:key + 1], "flows": flows.astype(np.float32)}
        inputs = {n: torch.from_numpy(v) for n, v in feeds["detect"].items()}
        references["detect"] = [o.numpy() for o in DetectGraph(model)(**inputs)]
    protos["detect"] = _export(DetectGraph(model, half), tuple(v[:1] for v in inputs.values()), list(inputs),
                               DETECT_OUTPUTS, OPSET, dynamic_batch)
    paths, record = save_graphs(folder, {g: protos[g] for g in graphs}, OPSET, half, dynamic_batch,
                                {g: {n: v.shape[1:] for n, v in feeds[g].items()} for g in graphs},
                                {"flow": ["flow"], "detect": DETECT_OUTPUTS})
    if motion == "flow":
        record["flow_precision"] = "fp32"
        record["tensorrt_needs"] = {"version": ".".join(map(str, OPERATOR_SINCE["GridSample"])),
                                    "why": "the flow graph warps with GridSample, which TensorRT's ONNX parser reads "
                                           "from 8.5 on"}
    if not verify:
        return record
    return check_parity(record, {g: (_run(create_session(paths[g]), feeds[g]), references[g]) for g in graphs},
                        tolerance)
