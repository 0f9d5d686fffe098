"""The two streaming graphs a MENet / MENet-Lite model is exported as, and their export.

* :class:`Encoder3DGraph`: one clip of resized uint8 BGR frames ``(B, T, H, W, 3)``, oldest
  first -> ``feat3d (B, C3, H/32, W/32)``, the expensive 3D branch the runtime caches and
  refreshes every s frames. Normalisation in the graph, as AMMA's encoder does it.
* :class:`DetectorGraph`: the latest ``S = max(srm_frames, 1)`` frames ``(B, S, H, W, 3)`` and a
  cached ``feat3d`` -> the raw YOLOv2 ``region (B, A*(5+C), H/32, W/32)``, decoded on the
  host (:func:`edge_stad.core.region_decode.decode_region`).

``half=True`` makes FP16 graphs with FP32 inputs and outputs: the 3D backbone (and non-local
block), the 2D detector, the CFAM and the final conv are FP16; the normalisation, the SRM (the
micro-motion operator: a squared feature difference above 256 overflows FP16, and the eps
vanishes next to any difference) and the attention energies and softmaxes (channel attention,
non-local) stay FP32, as the model computes them whatever its dtype.

Measured for the channel attention (a forward hook on ``cfam.sc``, energy ``E = F F^T`` of its
C x N input, N = 49 at 224x224): with BN statistics from the batch, on random uint8 clips and on
``data/synth_bench`` clips alike, max |E| = 33 (MENet-Lite, C = 256) and 32 (MENet, C = 1024),
mean softmax logit range (``rowmax(E) - E``) 22-23, largest feature 4.2; a smoke-trained
MENet-Lite (64x64, N = 4) gives max |E| = 0.05. None of this overflows FP16 (65504): that needs
N * mean(f^2) > 65504, features ~9x the measured largest at N = 49, or larger inputs (N grows
with the grid). The softmax in FP16 still moves the attention weights by up to 1.2e-3 to 2.0e-3
(absolute; FP16 energy relative error 5e-4 to 7e-4) for no speed: the two products are
C^2 N MACs (6.4M for MENet-Lite), noise next to the backbones. So they stay FP32, and out of
INT8 (one int8 scale over E's range is a 0.26 step on the softmax logits at |E| = 33).
"""
import copy

import torch
from torch import nn

from edge_stad.engines.onnxruntime_backend import FRAME_GRAPHS, _run, create_session
from edge_stad.export.graphs import NormalizedInput
from edge_stad.export.onnx_export import OPSET, _export, check_parity, example_inputs, save_graphs

ENCODER3D_OUTPUTS = ("feat3d",)
DETECTOR_OUTPUTS = ("region",)


class _Cast(nn.Module):
    """``module`` run on its input cast to ``dtype``: where the FP32 SRM hands over to the FP16 2D detector."""

    def __init__(self, module, dtype):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x):
        return self.module(x.to(self.dtype))


def frame_inference_copy(model, half=False):
    """An eval-mode copy of ``model``; with ``half`` everything but the SRM in FP16 (see the module docstring)."""
    model = copy.deepcopy(model).eval()
    if half:
        for part in (model.backbone_3d, model.non_local, model.backbone_2d, model.cfam, model.conv_final):
            if part is not None:
                part.half()
        model.backbone_2d = _Cast(model.backbone_2d, torch.float16)
    return model


class _FrameGraph(NormalizedInput):
    def __init__(self, model, frames, half):
        super().__init__(frame_inference_copy(model, half), frames, half)


class Encoder3DGraph(_FrameGraph):
    def __init__(self, model, half=False):
        super().__init__(model, model.clip_len, half)

    def forward(self, clip):
        x = self.normalized(clip)
        return self.model.encode_3d(x.half() if self.half else x).float()


class DetectorGraph(_FrameGraph):
    def __init__(self, model, half=False):
        super().__init__(model, model.frames_2d, half)

    def forward(self, frames, feat3d):
        return self.model.detect(self.normalized(frames), feat3d.half() if self.half else feat3d).float()


def export_frame_onnx(model, folder, dynamic_batch, half, verify, tolerance, seed):
    """Write ``folder/encoder3d.onnx`` and ``folder/detector.onnx``; returns what the manifest records.

    The arguments are :func:`~edge_stad.export.onnx_export.export_onnx`'s (which calls this for
    MENet models). With ``verify``, ONNX Runtime must reproduce the FP32 PyTorch model to
    ``tolerance`` on two random clips (encoder3d) and on their latest frames with PyTorch's
    features of them (detector, so that its error is its own).
    """
    config = model.config
    clips = torch.from_numpy(example_inputs(config, batch=2, seed=seed))
    frames = clips[:, -model.frames_2d:]
    with torch.no_grad():   # the FP32 reference
        feat3d = Encoder3DGraph(model)(clips)
        region = DetectorGraph(model)(frames, feat3d)
    encoder, detector = FRAME_GRAPHS
    protos = {encoder: _export(Encoder3DGraph(model, half), (clips[:1],), ["clip"], ENCODER3D_OUTPUTS, OPSET,
                               dynamic_batch),
              detector: _export(DetectorGraph(model, half), (frames[:1], feat3d[:1]), ["frames", "feat3d"],
                                DETECTOR_OUTPUTS, OPSET, dynamic_batch)}
    paths, record = save_graphs(folder, protos, OPSET, half, dynamic_batch,
                                {encoder: {"clip": clips.shape[1:]},
                                 detector: {"frames": frames.shape[1:], "feat3d": feat3d.shape[1:]}},
                                {encoder: ENCODER3D_OUTPUTS, detector: DETECTOR_OUTPUTS})
    if not verify:
        return record
    feeds = {encoder: {"clip": clips.numpy()}, detector: {"frames": frames.numpy(), "feat3d": feat3d.numpy()}}
    references = {encoder: feat3d.numpy(), detector: region.numpy()}
    return check_parity(record, {g: (_run(create_session(paths[g]), feeds[g]), [references[g]]) for g in FRAME_GRAPHS},
                        tolerance)
