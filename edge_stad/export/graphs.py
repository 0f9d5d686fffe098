"""The two streaming graphs an AMMA model is exported as: each clip encoded once, the head run per window.

* :class:`EncoderGraph`: one clip of resized uint8 BGR frames ``(B, n, H, W, 3)``, oldest
  first, exactly what OpenCV hands the runtime -> clip feature ``(B, 64, h, w)`` and size
  map ``(B, 2, h, w)``. The normalisation of :func:`edge_stad.preprocess.normalize_clip`,
  ``(x / 255 - mean) / std``, happens in the graph as one ``x * a + b`` per channel after
  the transpose to planar layout: it agrees to float rounding (features within ~1e-5)
  and costs a quarter less of the whole encoder than two broadcasts over the 3-wide
  channel axis of the interleaved frames (ONNX Runtime, ShuffleNetV2 at 128x128).
* :class:`HeadGraph`: the K cached features and size maps, oldest first -> ``hm``
  (after sigmoid), ``mov``, ``wh``; or, with ``decode=True``, the decoded tubelet rows
  ``(B, N, 4K+2)`` of :func:`edge_stad.core.tubelet_decode.decode`, computed in the graph
  (3x3 max-pool peak filter and two TopK) so that only N rows leave the device; the
  trajectory branch then runs at those N cells only (:class:`TrajectoryAtCells`).

``half=True`` makes FP16 graphs with FP32 inputs and outputs: the weights and activations
of the backbone, decoder and head are FP16; the input normalisation, the micro-motion
module (a squared feature difference above 256 already overflows FP16, and the reference
eps of 1e-6 vanishes next to any difference) and the decode stay FP32.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from edge_stad.core.tubelet_decode import TOP_N
from edge_stad.models.deploy import fold_model
from edge_stad.preprocess import MEAN_BGR, STD_BGR


def inference_copy(model, half=False):
    """An eval-mode copy of ``model`` whose micro-motion skips frames no pair uses (bit-exact),
    with everything but the micro-motion module in FP16 if ``half``."""
    model = copy.deepcopy(model).eval()
    if model.mm is not None:
        model.mm.convolve_unused = False
    if half:
        for part in (model.backbone, model.deconv_layer, model.branch):
            part.half()
    return model


def normalization(n):
    """``(scale, shift)``, each ``(1, 3n, 1, 1)``: ``x * scale + shift`` is :func:`~edge_stad.preprocess.normalize_clip`
    of ``n`` planar frames (one multiply-add per channel; see the module docstring)."""
    scale = [1.0 / (255.0 * s) for s in STD_BGR] * n
    shift = [-m / s for m, s in zip(MEAN_BGR, STD_BGR)] * n
    return (torch.tensor(scale, dtype=torch.float32).reshape(1, 3 * n, 1, 1),
            torch.tensor(shift, dtype=torch.float32).reshape(1, 3 * n, 1, 1))


def planar(frames, scale, shift, n, hw):
    """uint8 BGR frames ``(B, n, H, W, 3)`` -> the normalised planar model input ``(B, 3n, H, W)`` (float32)."""
    return frames.permute(0, 1, 4, 2, 3).reshape(-1, 3 * n, *hw).float() * scale + shift


class NormalizedInput(nn.Module):
    """A graph around ``model`` (an inference copy) that takes ``frames`` uint8 BGR frames and normalises them
    in the graph (:func:`planar`); ``half`` says whether the copy is FP16."""

    def __init__(self, model, frames, half):
        super().__init__()
        self.model, self.half, self.frames = model, half, frames
        scale, shift = normalization(frames)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def normalized(self, frames):
        return planar(frames, self.scale, self.shift, self.frames, self.model.config["input_size"])


class EncoderGraph(nn.Module):
    """``fold=True`` (FP32 only) rewrites the model into fewer nodes (:mod:`edge_stad.models.deploy`):
    the micro-motion module reads the raw frames and only the key frame is normalised."""

    def __init__(self, model, half=False, fold=False):
        super().__init__()
        if fold and half:
            raise ValueError("fold is for FP32 graphs")
        self.model = inference_copy(model, half)
        self.half = half
        self.fold = fold
        scale, shift = normalization(self.model.clip_len)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)
        if fold:
            fold_model(self.model, scale[0, :3, 0, 0])

    def forward(self, frames):
        if self.fold:   # each part changes the layout of the frames it reads only
            key = frames[:, -1].permute(0, 3, 1, 2).float() * self.scale[:, -3:] + self.shift[:, -3:]
            motion = None if self.model.mm is None else self.model.mm(frames)
            return self.model.branch.encode(self.model.deconv_layer(self.model.backbone(key, motion)))
        x = planar(frames, self.scale, self.shift, self.model.clip_len, self.model.config["input_size"])
        if not self.half:
            return self.model.encode(x)
        feat, wh = self.model.encode(x, body_dtype=torch.float16)
        return feat.float(), wh.float()


class HeadGraph(nn.Module):
    def __init__(self, model, decode=False, top_n=TOP_N, half=False):
        super().__init__()
        self.model = inference_copy(model, half)
        self.half = half
        self.decode = decode
        h, w = self.model.grid_size
        self.top_n = min(top_n, h * w)
        if decode:
            self.moves = TrajectoryAtCells(self.model.branch)

    def forward(self, feats, whs):
        if self.half:
            feats, whs = feats.half(), whs.half()
        if not self.decode:
            out = self.model.head(feats, whs)
            return tuple(out[k].float() for k in ("hm", "mov", "wh"))
        branch = self.model.branch
        stacked = branch.stack(feats)
        hm = branch.heatmap(stacked).float()
        score, cls, idx = top_cells(hm, self.top_n)
        wh = whs.reshape(whs.shape[0], -1, *whs.shape[-2:]).float()
        return tubelet_rows(score, cls, idx, self.moves(stacked, idx).float(), wh, hm.shape[-1])


class TrajectoryAtCells(nn.Module):
    """The trajectory branch (``mov``, ``mov_cls``) of a :class:`~edge_stad.models.head.TubeletHead` at
    given cells only: the decode reads ``mov`` at its N peak cells and nowhere else, and the whole map
    costs as many MACs as the center branch. The 3x3 convolution becomes a 1x1 one over the N
    gathered 3x3 patches (taps outside the grid read an appended zero row: the conv's zero padding)."""

    def __init__(self, branch):
        super().__init__()
        conv = branch.mov[0]
        self.conv = nn.Conv2d(9 * conv.in_channels, conv.out_channels, 1).to(conv.weight.dtype)
        with torch.no_grad():   # (out, in, 3, 3) -> (out, 3, 3, in): the patches are tap-major
            self.conv.weight.copy_(conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1, 1, 1))
            self.conv.bias.copy_(conv.bias)
        self.relu = nn.ReLU()
        self.cls = branch.mov_cls

    def forward(self, stacked, idx):
        """``stacked (B, C, h, w)`` and flat cells ``idx (B, N)`` -> ``(B, 2K, N)``."""
        b, c, h, w = stacked.shape
        n = idx.shape[1]
        rows = torch.cat([stacked.reshape(b, c, h * w), torch.zeros_like(stacked[:, :, 0, :1])], dim=2)
        rows = rows.transpose(1, 2).reshape(b * (h * w + 1), c)
        y = torch.div(idx, w, rounding_mode="trunc")[:, :, None]
        x = idx[:, :, None] - y * w
        dy = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1], device=idx.device)
        dx = torch.tensor([-1, 0, 1, -1, 0, 1, -1, 0, 1], device=idx.device)
        ty, tx = y + dy, x + dx                                                   # (B, N, 9)
        inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
        cell = torch.where(inside, ty * w + tx, torch.full_like(ty, h * w))
        cell = cell + torch.arange(b, device=idx.device)[:, None, None] * (h * w + 1)
        patches = rows[cell.reshape(-1)].reshape(b, n, 9 * c).transpose(1, 2).reshape(b, 9 * c, 1, n)
        return self.cls(self.relu(self.conv(patches))).reshape(b, -1, n)


def decode_rows(hm, mov, wh, n, stable=False):
    """Torch twin of :func:`edge_stad.core.tubelet_decode.decode` (correct ``idx // W`` rows), traceable to ONNX.

    Equal scores rank the lower index first in ONNX ``TopK`` and the host decode, not in
    ``torch.topk``; ``stable=True`` ranks with a stable sort instead, for PyTorch itself.
    """
    score, cls, idx = top_cells(hm, n, stable)
    b, k2 = mov.shape[:2]
    moves = torch.gather(mov.reshape(b, k2, -1), 2, idx[:, None, :].expand(b, k2, idx.shape[1]))
    return tubelet_rows(score, cls, idx, moves, wh, hm.shape[-1])


def top_cells(hm, n, stable=False):
    """Peak filter and the two TopK of the decode: ``hm (B, C, h, w)`` -> score, class, flat cell, each ``(B, N)``."""
    b, c, h, w = hm.shape
    peaks = F.max_pool2d(hm, 3, stride=1, padding=1)
    heat = torch.where(hm == peaks, hm, torch.zeros_like(hm)).reshape(b, c, h * w)
    cell_score, cell_index = _top(heat, n, 2, stable)                         # (B, C, N)
    score, pick = _top(cell_score.reshape(b, c * n), n, 1, stable)            # (B, N)
    cls = torch.div(pick, n, rounding_mode="trunc")  # non-negative: trunc == floor, exports as one Div
    return score, cls, torch.gather(cell_index.reshape(b, c * n), 1, pick)


def tubelet_rows(score, cls, idx, moves, wh, w):
    """Rows ``(B, N, 4K+2)`` from the top cells, the trajectory ``moves (B, 2K, N)`` at them and the size maps
    ``wh (B, 2K, h, w)`` of a grid ``w`` cells wide."""
    b, n = idx.shape
    k = moves.shape[1] // 2
    h = wh.shape[-2]
    row = torch.div(idx, w, rounding_mode="trunc")  # non-negative: trunc == floor, exports as one Div
    x = (idx - row * w).float()   # not idx % w: TensorRT 8.5's ONNX parser has no Mod
    y = row.float()
    cx = x[:, None, :] + moves[:, 0::2]                                        # (B, K, N)
    cy = y[:, None, :] + moves[:, 1::2]
    gx = torch.cat([_trunc(cx[:, :-1]), x[:, None, :]], dim=1)                # key clip: the peak itself
    gy = torch.cat([_trunc(cy[:, :-1]), y[:, None, :]], dim=1)
    gather = torch.clamp(gx + gy * w, 0, h * w - 1).long()                    # (B, K, N)
    wh_flat = wh.reshape(b, k, 2, h * w)
    bw = torch.gather(wh_flat[:, :, 0], 2, gather)
    bh = torch.gather(wh_flat[:, :, 1], 2, gather)
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)  # (B, K, N, 4)
    return torch.cat([boxes.permute(0, 2, 1, 3).reshape(b, n, 4 * k), score[..., None], cls[..., None].float()],
                     dim=2)


def _top(x, n, dim, stable):
    if not stable:
        return torch.topk(x, n, dim=dim)
    values, index = torch.sort(x, dim=dim, descending=True, stable=True)
    return values.narrow(dim, 0, n), index.narrow(dim, 0, n)


def _trunc(x):
    """``torch.trunc`` from Floor/Ceil (ONNX has no Trunc); exact in floating point."""
    return torch.where(x >= 0, torch.floor(x), torch.ceil(x))
