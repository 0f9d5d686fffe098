"""The streaming graphs an STMA / STMA-Lite model is exported as (:mod:`edge_stad.models.stma`'s streaming
contract), and their export.

* :class:`SnippetEncoderGraph` (``encoder``): one resized uint8 BGR frame ``(B, 1, H, W, 3)`` ->
  ``feat``, ``wh`` and, with the recognition branch, ``act``: what the runtime caches per frame (each
  frame goes through the 2D backbone once).
* :class:`Snippet3DGraph` (``encoder3d``, models with a 3D branch only): the window's clip
  ``(B, T, H, W, 3)``, oldest first -> ``feat3d``, refreshed every s windows.
* :class:`SnippetHeadGraph` (``head``): the cached outputs of one window (``feats (B, K, ...)``, ``whs``,
  ``acts (B, L, ...)``, ``feat3d``) -> ``hm`` (after the sigmoid), ``mov``, ``wh`` and ``cls`` logits,
  decoded on the host (:func:`edge_stad.core.snippet_decode.decode_snippet`).

Normalisation happens in the graphs, as AMMA's encoder does it. ``half=True`` makes FP16 graphs with FP32
inputs and outputs: the 2D backbone, its decoder, the spatial detection branch and the 3D branch are FP16;
the recognition branch (down-sampling, motion excitation, the channel self-attention of STA) stays FP32, as
MENet's attention does (:mod:`edge_stad.export.frame_graphs`: its energies span a range FP16 and INT8
resolve poorly, and at stride 32 it costs little).
"""
import copy

import torch
from torch import nn

from edge_stad.engines.onnxruntime_backend import _run, create_session
from edge_stad.export.graphs import NormalizedInput
from edge_stad.export.onnx_export import _export, check_parity, example_inputs, opset_for, save_graphs
from edge_stad.model_config import graph_names

ENCODER_OUTPUTS = ("feat", "wh", "act")
ENCODER3D_OUTPUTS = ("feat3d",)
HEAD_INPUTS = ("feats", "whs", "acts", "feat3d")
HEAD_OUTPUTS = ("hm", "mov", "wh", "cls")


def _to_float(module, args):
    return tuple(None if a is None else a.float() for a in args)


def snippet_inference_copy(model, half=False):
    """An eval-mode copy of ``model``; with ``half`` FP16 but for the recognition branch (its inputs cast to FP32)."""
    model = copy.deepcopy(model).eval()
    if half:
        model.half()
        if model.action is not None:
            model.action.float()
            model.action.register_forward_pre_hook(_to_float)
            model.action.down.register_forward_pre_hook(_to_float)
    return model


class _SnippetGraph(NormalizedInput):
    def __init__(self, model, frames, half):
        super().__init__(snippet_inference_copy(model, half), frames, half)

    def normalized(self, frames):
        x = super().normalized(frames)
        return x.half() if self.half else x


class SnippetEncoderGraph(_SnippetGraph):
    def __init__(self, model, half=False):
        super().__init__(model, 1, half)

    def forward(self, frames):
        return tuple(o.float() for o in self.model.encode(self.normalized(frames)) if o is not None)


class Snippet3DGraph(_SnippetGraph):
    def __init__(self, model, half=False):
        super().__init__(model, model.clip_len, half)

    def forward(self, clip):
        return self.model.encode_3d(self.normalized(clip)).float()


class SnippetHeadGraph(nn.Module):
    def __init__(self, model, half=False):
        super().__init__()
        self.model = snippet_inference_copy(model, half)
        self.half = half

    def forward(self, feats, whs, acts=None, feat3d=None):
        if self.half:
            feats, whs = feats.half(), whs.half()
        out = self.model.head(feats, whs, acts, feat3d)
        return tuple(out[k].float() for k in HEAD_OUTPUTS if k in out)


def head_inputs(config):
    """The head graph's input names for the model ``config`` (``acts`` with the recognition branch,
    ``feat3d`` with a 3D branch)."""
    return [n for n in HEAD_INPUTS if (n != "acts" or config["class_agnostic"])
            and (n != "feat3d" or config["backbone_3d"] is not None)]


def export_snippet_onnx(model, folder, dynamic_batch, half, verify, tolerance, seed):
    """Write ``folder/encoder.onnx``, ``head.onnx`` and, with a 3D branch, ``encoder3d.onnx``; returns what the
    manifest records. The arguments are :func:`~edge_stad.export.onnx_export.export_onnx`'s. With ``verify``,
    ONNX Runtime must reproduce the FP32 PyTorch model to ``tolerance`` on the frames of two random clips
    (encoder), on the clips (encoder3d) and on PyTorch's features of them (head, so that its error is its own).
    """
    config, layout = model.config, model.layout
    clips = torch.from_numpy(example_inputs(config, batch=2, seed=seed))
    (first, last), (s0, s1), (m0, m1) = layout.encoded, layout.snippet, layout.motion
    frames = clips[:, first:last + 1].reshape(-1, 1, *clips.shape[2:])   # every encoded frame of both clips
    graphs = graph_names(config)
    encoder, head = SnippetEncoderGraph(model), SnippetHeadGraph(model)
    with torch.no_grad():   # the FP32 reference
        encoded = encoder(frames)
        per_clip = [o.reshape(2, last - first + 1, *o.shape[1:]) for o in encoded]
        window = {"feats": per_clip[0][:, s0 - first:s1 - first + 1], "whs": per_clip[1][:, s0 - first:s1 - first + 1]}
        if "acts" in head_inputs(config):
            window["acts"] = per_clip[2][:, m0 - first:m1 - first + 1]
        if "encoder3d" in graphs:
            window["feat3d"] = Snippet3DGraph(model)(clips)
        references = {"encoder": [o.numpy() for o in encoded], "head": [o.numpy() for o in head(**window)]}
        if "encoder3d" in graphs:
            references["encoder3d"] = [window["feat3d"].numpy()]
    opset, names = opset_for(config), head_inputs(config)
    outputs = list(ENCODER_OUTPUTS[:len(encoded)])
    head_outputs = [n for n in HEAD_OUTPUTS if n != "cls" or config["class_agnostic"]]
    protos = {"encoder": _export(SnippetEncoderGraph(model, half), (frames[:1],), ["frames"], outputs, opset,
                                 dynamic_batch),
              "head": _export(SnippetHeadGraph(model, half), tuple(window[n][:1] for n in names), names,
                              head_outputs, opset, dynamic_batch)}
    feeds = {"encoder": {"frames": frames.numpy()}, "head": {n: window[n].numpy() for n in names}}
    inputs = {"encoder": {"frames": list(frames.shape[1:])}, "head": {n: list(window[n].shape[1:]) for n in names}}
    if "encoder3d" in graphs:
        protos["encoder3d"] = _export(Snippet3DGraph(model, half), (clips[:1],), ["clip"], ENCODER3D_OUTPUTS, opset,
                                      dynamic_batch)
        feeds["encoder3d"], inputs["encoder3d"] = {"clip": clips.numpy()}, {"clip": list(clips.shape[1:])}
    paths, record = save_graphs(folder, {g: protos[g] for g in graphs}, opset, half, dynamic_batch, inputs,
                                {"encoder": outputs, "encoder3d": ENCODER3D_OUTPUTS, "head": head_outputs})
    if not verify:
        return record
    return check_parity(record, {g: (_run(create_session(paths[g]), feeds[g]), references[g]) for g in graphs},
                        tolerance)
