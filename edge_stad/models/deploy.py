"""Inference-only rewrites that keep a trained model's function and cut its exported graph.

In ONNX Runtime's INT8 CPU path a small-map encoder pays per graph node: every node between
the convolutions is a copy, a layout transpose or a Q/DQ pair, and an 8x8 map's convolution
costs little more than its dispatch. These rewrites trade multiply-adds for nodes, which pays
in INT8 and not in FP32, where the wider 1x1 weights cost more than the nodes saved
(``benchmarks/results/int8_cpu.md``); the build uses them for the ``cpu`` INT8 flavour only.
All are exact up to float rounding:

* :func:`fold_shuffle_block`: a ShuffleNetV2 unit (split, branch, concat, channel shuffle:
  about ten nodes, four of them copies) becomes three convolutions whose weights do the
  split and the shuffle. A stride-1 unit carries its pass-through half through every
  convolution as identity channels (a 1 in a 1x1 weight, a centred 1 in a depthwise
  kernel), which the ReLUs leave alone because a unit's input is non-negative (the output of
  the previous unit's ReLUs; checked in :func:`fold_shufflenet`). A stride-2 unit
  concatenates its input with the second branch's first output, runs both depthwise
  convolutions as one, and writes the interleaved output with one 1x1 convolution.
* :class:`PairedShuffleNetV2`: AMMA's RGB and micro-motion streams run the same units on
  separate inputs until the last fused stage; paired, each unit of both streams is one
  set of grouped convolutions over the two streams' channels side by side, and each
  lateral fusion ``w * rgb + (1 - w) * motion`` one 1x1 convolution: half the nodes (an
  isolated chain of 8x8 units took about 30% less time grouped than as two streams).
* :class:`FoldedDecoder`: the decoder's 4x4/2 transposed convolution, which ONNX Runtime has
  no integer kernel for, becomes a 3x3 convolution to four phase channels per output channel
  and a pixel shuffle (reshape, transpose, reshape), all of which run on uint8; the head's
  per-clip ``shrink`` moves before the shuffle.
* :class:`FoldedMicroMotion`: the micro-motion module reads the raw frames (the
  normalisation folds into its convolution weights), pools the frames it uses as one
  batch and takes the differences to the key frame *before* the shared convolution (its
  bias cancels in the difference): one convolution per pair instead of one per frame.

BatchNorm is folded into the convolutions. The rewritten modules are for export only: the
state-dict layout of training and checkpoints is untouched.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from edge_stad.models.backbones.shufflenetv2 import ShuffleBlock, ShuffleNetV2
from edge_stad.models.decoder import Decoder
from edge_stad.models.fused_backbones import AMMAShuffleNetV2


def fold_bn(conv, bn):
    """``(weight, bias)`` of ``conv`` followed by the eval-mode ``bn``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight.detach(), bias.detach()


def _conv(weight, bias, stride=1, groups=1):
    k = weight.shape[-1]
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], k, stride, (k - 1) // 2, groups=groups)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


class FoldedShuffleBlock(nn.Module):
    """Three convolutions: ``relu(a)``, depthwise ``b``, ``relu(c)`` (and a concat before ``b`` at stride 2)."""

    def __init__(self, a, b, c, concat_input):
        super().__init__()
        self.a, self.b, self.c = a, b, c
        self.concat_input = concat_input

    def forward(self, x):
        y = F.relu(self.a(x))
        if self.concat_input:
            y = torch.cat((x, y), 1)
        return F.relu(self.c(self.b(y)))


def fold_shuffle_block(block):
    """The :class:`FoldedShuffleBlock` computing what the eval-mode :class:`ShuffleBlock` ``block`` computes."""
    pw1, bn1, _, dw, bn2, pw3, bn3, _ = block.banch2
    w1, b1 = fold_bn(pw1, bn1)
    wd, bd = fold_bn(dw, bn2)
    w3, b3 = fold_bn(pw3, bn3)
    half = w3.shape[0]
    if block.stride == 1:
        channels = 2 * half
        wa = torch.zeros(channels, channels, 1, 1)
        wa[torch.arange(half), torch.arange(half)] = 1.0          # pass-through half
        wa[half:, half:] = w1
        a = _conv(wa, torch.cat([torch.zeros(half), b1]))
        identity = torch.zeros(half, 1, 3, 3)
        identity[:, 0, 1, 1] = 1.0
        b = _conv(torch.cat([identity, wd]), torch.cat([torch.zeros(half), bd]), groups=channels)
        wc = torch.zeros(channels, channels, 1, 1)
        wc[2 * torch.arange(half), torch.arange(half)] = 1.0       # shuffled: pass-through on even outputs
        wc[1::2, half:] = w3
        bc = torch.zeros(channels)
        bc[1::2] = b3
        return FoldedShuffleBlock(a, b, _conv(wc, bc), concat_input=False)
    dw1, bn1_1, pw1_1, bn1_2, _ = block.banch1
    wd1, bd1 = fold_bn(dw1, bn1_1)
    wp1, bp1 = fold_bn(pw1_1, bn1_2)
    inp = wd1.shape[0]
    b = _conv(torch.cat([wd1, wd]), torch.cat([bd1, bd]), stride=block.stride, groups=inp + half)
    wc = torch.zeros(2 * half, inp + half, 1, 1)
    wc[0::2, :inp] = wp1                                           # shuffled: branch 1 on even outputs
    wc[1::2, inp:] = w3
    bc = torch.stack([bp1, b3], 1).reshape(-1)
    return FoldedShuffleBlock(_conv(w1, b1), b, _conv(wc, bc), concat_input=True)


def fold_shufflenet(blocks):
    """A copy of the ``nn.Sequential`` of eval-mode ShuffleNetV2 ``blocks`` with every unit folded.

    A stride-1 unit may only follow another unit (whose ReLUs make its input non-negative),
    never start the sequence: its pass-through channels go through a ReLU.
    """
    out = []
    for i, block in enumerate(blocks):
        if not isinstance(block, ShuffleBlock):
            raise TypeError(f"expected ShuffleBlock units, got {type(block).__name__}")
        if block.stride == 1 and i == 0:
            raise ValueError("a stride-1 unit cannot start a folded sequence: its input may be negative")
        out.append(fold_shuffle_block(block))
    return nn.Sequential(*out)


class FoldedMicroMotion(nn.Module):
    """An eval-mode :class:`~edge_stad.models.micro_motion.MicroMotion` on raw frames, in fewer nodes and
    a quarter fewer multiply-adds (one convolution per pair instead of one per frame).

    It takes the frames before normalisation, ``(N, n, 3, H, W)`` of any type: the normalisation
    ``x * scale + shift`` (``input_scale``, per colour channel, positive) commutes with the max-pool,
    its shift cancels in the differences and its scale moves into the convolution weights; the
    eps added to the differences is the convolution's bias.
    """

    def __init__(self, mm, input_scale):
        super().__init__()
        self.pool = mm.pool
        used = sorted({f for pair in mm.pairs for f in pair})
        slot = {f: i for i, f in enumerate(used)}
        self.register_buffer("used", torch.tensor(used))
        self.register_buffer("first", torch.tensor([slot[a] for a, _ in mm.pairs]))
        self.register_buffer("second", torch.tensor([slot[b] for _, b in mm.pairs]))
        self.maxpool = copy.deepcopy(mm.maxpool) if mm.pool else nn.Identity()
        weight = mm.shallow_conv.weight.detach() * torch.as_tensor(input_scale, dtype=torch.float32)[:, None, None]
        self.conv = _conv(weight, torch.full((weight.shape[0],), float(mm.eps)))   # the eps as the bias

    def forward(self, frames):
        x = self.maxpool(frames[:, self.used].float().reshape(-1, *frames.shape[-3:]))
        h, w = x.shape[-2:]
        x = x.reshape(-1, len(self.used), 3, h, w)
        diff = self.conv((x[:, self.first] - x[:, self.second]).reshape(-1, 3, h, w))
        motion = torch.linalg.vector_norm(diff, dim=1).reshape(-1, len(self.first), h, w)   # one ReduceL2
        return F.interpolate(motion, scale_factor=2.0, mode="nearest") if self.pool else motion


def phase_conv_weight(weight):
    """The ``(4·C_out, C_in, 3, 3)`` weight of the 3x3 convolution (padding 1) whose pixel-shuffled
    output is the 4x4/2 transposed convolution (padding 1) with ``weight`` ``(C_in, C_out, 4, 4)``.

    Output row ``2m + a`` of the transposed convolution reads input row ``m + d`` through kernel
    row ``a + 1 - 2d`` (``d`` in -1..1, where that index is in 0..3); the same for columns. Phase
    ``(a, b)`` of output channel ``c`` is channel ``4c + 2a + b``, the pixel shuffle's order.
    """
    c_in, c_out = weight.shape[:2]
    out = weight.new_zeros(c_out, 2, 2, c_in, 3, 3)
    for a in range(2):
        for dh in range(-1, 2):
            kh = a + 1 - 2 * dh
            for b in range(2):
                for dw in range(-1, 2):
                    kw = b + 1 - 2 * dw
                    if 0 <= kh < 4 and 0 <= kw < 4:
                        out[:, a, b, :, dh + 1, dw + 1] = weight[:, :, kh, kw].t()
    return out.reshape(4 * c_out, c_in, 3, 3)


class FoldedDecoder(nn.Module):
    """An eval-mode :class:`~edge_stad.models.decoder.Decoder` whose transposed convolution (with its
    BatchNorm) is a 3x3 convolution to phase channels followed by a pixel shuffle.

    Given the head's ``shrink`` (1x1 convolution + BatchNorm, no activation), it applies that too,
    before the pixel shuffle and the resize (a per-pixel linear map commutes with both): on a
    quarter of the pixels, and the shuffle and the resize move a quarter of the channels.
    """

    def __init__(self, decoder, shrink=None):
        super().__init__()
        first, bn, relu, up, up_bn, _ = decoder.deconv_layers
        if tuple(up.kernel_size) != (4, 4) or tuple(up.stride) != (2, 2) or tuple(up.padding) != (1, 1):
            raise ValueError(f"expected a 4x4/2 transposed convolution with padding 1, got {up}")
        self.first = nn.Sequential(first, bn, relu)
        scale = up_bn.weight / torch.sqrt(up_bn.running_var + up_bn.eps)
        shift = up_bn.bias - up_bn.running_mean * scale
        weight = phase_conv_weight(up.weight.detach() * scale.detach()[None, :, None, None])
        channels = up.out_channels
        # phase-major channels (phase * C + c), so that each phase is one group of the shrink
        weight = weight.reshape(channels, 4, *weight.shape[1:]).transpose(0, 1).reshape(weight.shape)
        self.up = _conv(weight, shift.detach().repeat(4))
        self.shrink = None
        if shrink is not None:
            w, b = fold_bn(*shrink)
            self.shrink = _conv(w.repeat(4, 1, 1, 1), b.repeat(4), groups=4)

    def forward(self, x):
        y = F.relu(self.up(self.first(x)))
        if self.shrink is not None:
            y = self.shrink(y)
        n, c, h, w = y.shape
        y = y.reshape(n, 2, 2, c // 4, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // 4, 2 * h, 2 * w)
        return F.interpolate(y, scale_factor=2.0, mode="nearest")


def pair_blocks(rgb, motion):
    """One :class:`FoldedShuffleBlock` computing the folded units ``rgb`` and ``motion`` side by side:
    input and output channels are the RGB stream's, then the motion stream's."""
    def cat(*convs, part=slice(None)):
        return torch.cat([c.weight.data[part] for c in convs]), torch.cat([c.bias.data[part] for c in convs])

    a = _conv(*cat(rgb.a, motion.a), groups=2)
    if not rgb.concat_input:
        b = _conv(*cat(rgb.b, motion.b), groups=2 * rgb.b.in_channels)
        return FoldedShuffleBlock(a, b, _conv(*cat(rgb.c, motion.c), groups=2), concat_input=False)
    # stride 2: the depthwise input is [x_rgb, x_motion, y_rgb, y_motion]
    inp, total = rgb.a.in_channels, rgb.b.in_channels
    first, second = cat(rgb.b, motion.b, part=slice(0, inp)), cat(rgb.b, motion.b, part=slice(inp, total))
    b = _conv(torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]]), stride=rgb.b.stride[0],
              groups=2 * total)
    out = rgb.c.out_channels
    wc = torch.zeros(2 * out, 2 * total, 1, 1)
    for k, block in enumerate((rgb, motion)):
        wc[k * out:(k + 1) * out, k * inp:(k + 1) * inp] = block.c.weight.data[:, :inp]
        wc[k * out:(k + 1) * out, 2 * inp + k * (total - inp):2 * inp + (k + 1) * (total - inp)] = \
            block.c.weight.data[:, inp:]
    return FoldedShuffleBlock(a, b, _conv(wc, torch.cat([rgb.c.bias.data, motion.c.bias.data])), concat_input=True)


def fusion_conv(weight, channels, keep_motion):
    """The 1x1 convolution of a lateral fusion on ``[rgb, motion]``: ``w * rgb + (1 - w) * motion``, followed
    by the motion channels themselves where ``keep_motion``."""
    eye = torch.eye(channels)
    w = float(weight.detach())
    rows = [torch.cat([w * eye, (1.0 - w) * eye], 1)]
    if keep_motion:
        rows.append(torch.cat([torch.zeros(channels, channels), eye], 1))
    matrix = torch.cat(rows)
    return _conv(matrix[:, :, None, None], torch.zeros(len(matrix)))


class PairedShuffleNetV2(nn.Module):
    """An eval-mode :class:`~edge_stad.models.backbones.fused.AMMAShuffleNetV2` with its two streams paired.

    The stems stay as they are (float, 3 input channels each); from the first fusion to the
    last fused stage one tensor holds both streams, each fusion is one 1x1 convolution
    (:func:`fusion_conv`) and each pair of units one folded unit (:func:`pair_blocks`); the
    stages after that are the RGB stream's folded units.
    """

    def __init__(self, backbone):
        super().__init__()
        fused = backbone.fusion_stages
        if fused < 2:
            raise ValueError(f"pairing needs at least two fused stages, got fusion_stages={fused}")
        self.conv1, self.maxpool = backbone.conv1, backbone.maxpool
        self.conv1_mm, self.maxpool_mm = backbone.conv1_mm, backbone.maxpool_mm
        rgb, motion = fold_shufflenet(backbone.features), fold_shufflenet(backbone.features_mm)
        layers = []
        for i in range(fused):
            if i:
                layers += [pair_blocks(rgb[j], motion[j]) for j in backbone.stage_range(i)]
            channels = backbone.stage_channels[i]
            layers.append(fusion_conv(getattr(backbone, f"rgb_weight{i + 1}"), channels, keep_motion=i < fused - 1))
        self.paired = nn.Sequential(*layers)
        rest = range(backbone.stage_range(fused).start, len(rgb)) if fused < backbone.num_stages else ()
        self.features = nn.Sequential(*[rgb[j] for j in rest])
        self.conv_last, self.shrink = backbone.conv_last, backbone.shrink

    def forward(self, rgb, motion):
        x = torch.cat([self.maxpool(self.conv1(rgb)), self.maxpool_mm(self.conv1_mm(motion))], 1)
        return self.shrink(self.conv_last(self.features(self.paired(x))))


def fold_model(model, input_scale):
    """Rewrite the eval-mode AMMA ``model`` in place: ShuffleNetV2 units folded (and its two streams
    paired), the decoder's transposed convolution as a convolution and a pixel shuffle with the
    head's ``shrink`` before the shuffle, micro-motion on raw frames normalised by ``input_scale``
    (see :class:`FoldedMicroMotion`)."""
    if isinstance(model.deconv_layer, Decoder):
        model.deconv_layer = FoldedDecoder(model.deconv_layer, model.branch.shrink)
        model.branch.shrink = nn.Identity()
    if model.mm is not None:
        model.mm = FoldedMicroMotion(model.mm, input_scale)
    if isinstance(model.backbone, AMMAShuffleNetV2) and model.backbone.fusion_stages >= 2:
        model.backbone = PairedShuffleNetV2(model.backbone)
    elif isinstance(model.backbone, ShuffleNetV2):
        for name in ("features", "features_mm"):
            if hasattr(model.backbone, name):
                setattr(model.backbone, name, fold_shufflenet(getattr(model.backbone, name)))
    return model
