"""Inference-only rewrites that keep a trained model's function and cut its exported graph.

Written for ONNX Runtime's INT8 CPU path, where every node between the convolutions is a copy,
a layout transpose or a Q/DQ pair; the build uses them for the ``cpu`` INT8 flavour only
(``benchmarks/results/int8_cpu.md``). All are exact up to float rounding:

* :func:`split_backbone`: ShuffleNetV2 units without their channel shuffles. A shuffle
  (reshape, transpose, reshape: in ONNX Runtime's channels-last INT8 graph, layout transposes
  around it) is a fixed permutation of channels, so each unit's output stays in the order its
  convolutions write it and the next unit's weights read that order. A stride-1 unit's
  transformed half is one slice of its input and its pass-through half a few slices
  (:func:`split_unit`); a stride-2 unit concatenates its two branches (:class:`DownUnit`).
  The multiply-adds are the units' own. An earlier form folded each unit into three
  convolutions carrying the pass-through half as identity channels and paired the RGB and
  micro-motion streams into grouped convolutions: fewer nodes but four times the stride-1
  units' multiply-adds. The INT8 AMMA-ShuffleNetV2 encoder per clip, this form against that one
  (ad hoc, interleaved): one thread 13.2 vs 16.5 ms at 288x288 and 4.4 vs 4.8 ms at 128x128;
  two threads 10.3 vs 10.6 ms and 4.4 vs 4.1 ms (slices and concatenations barely use a
  second thread). Zero channels pad the widths at which ONNX Runtime's uint8 kernels are slow
  (:data:`DEPTHWISE_ALIGN`, :data:`POINTWISE_ALIGN`): every branch's depthwise convolution, and
  stage 1's 58-channel halves to 60 in storage. With the micro-motion's squared norm as a sum,
  the INT8 encoder per clip took 11.4 against 13.0 ms (288x288, one thread, ad hoc, interleaved).
* :class:`FoldedDecoder`: the decoder's 4x4/2 transposed convolution, which ONNX Runtime has
  no integer kernel for, becomes a 2x2 convolution to four phase channels per output channel,
  a pixel shuffle (reshape, transpose, reshape) and a crop, all of which run on uint8; the
  head's per-clip ``shrink`` moves before the shuffle.
* :class:`FoldedMicroMotion`: the micro-motion module reads the raw frames (the
  normalisation folds into its convolution weights), pools the frames it uses as one
  batch and takes the differences to the key frame *before* the shared convolution (its
  bias cancels in the difference): one convolution per pair instead of one per frame. That
  convolution reads even and odd columns as separate channels (:func:`column_phase_weight`).
  Its motion image stays at the pooled resolution: the motion stem's stride-2 convolution on the
  upsampled image is a smaller convolution on that one (:func:`upsampled_input_conv`).

BatchNorm is folded into the convolutions. The rewritten modules are for export only: the
state-dict layout of training and checkpoints is untouched.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from edge_stad.models.backbones.shufflenetv2 import ShuffleBlock, ShuffleNetV2
from edge_stad.models.decoder import Decoder

#: Zero channels pad a ShuffleNetV2 branch's inner width to a multiple of DEPTHWISE_ALIGN, and the
#: widths its 1x1 convolutions read and write to a multiple of POINTWISE_ALIGN: ONNX Runtime's
#: uint8 kernels are much faster there (ad hoc, one thread, 36x36: depthwise 3x3 over 58 channels
#: 98 us, over 64 38 us; a chain of 1x1 convolutions 64-58-64 70 us each, 64-64-64 38 us, 64-60-64 32 us)
DEPTHWISE_ALIGN = 16
POINTWISE_ALIGN = 4


def fold_bn(conv, bn):
    """``(weight, bias)`` of ``conv`` followed by the eval-mode ``bn``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight.detach(), bias.detach()


def _conv(weight, bias, stride=1, groups=1, padding=None):
    k = tuple(weight.shape[2:])
    padding = tuple((size - 1) // 2 for size in k) if padding is None else padding
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], k, stride, padding, groups=groups)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


def _take(tensor, index, dim=0):
    """``tensor`` indexed along ``dim`` by the list ``index``, where a ``None`` entry gives zeros."""
    zeros_at = tensor.shape[dim]
    tensor = torch.cat((tensor, tensor.new_zeros(*tensor.shape[:dim], 1, *tensor.shape[dim + 1:])), dim)
    return tensor.index_select(dim, torch.tensor([zeros_at if i is None else i for i in index]))


def _conv_rows(weight, bias, rows, columns=None, stride=1, groups=1):
    """A convolution with ``weight[rows][:, columns]`` and ``bias[rows]``; ``None`` rows and columns are zeros."""
    if columns is not None:
        weight = _take(weight, columns, 1)
    return _conv(_take(weight, rows), _take(bias, rows), stride, groups)


def _padding(n, align):
    """How many zero channels make ``n`` a multiple of ``align``."""
    return -n % align


def _branch2(block):
    """The folded ``(weight, bias)`` pairs of a unit's ``banch2`` (1x1, depthwise 3x3, 1x1), its inner
    width padded with zero channels to a multiple of :data:`DEPTHWISE_ALIGN`."""
    pw1, bn1, _, dw, bn2, pw3, bn3, _ = block.banch2
    (w1, b1), (wd, bd), (w3, b3) = fold_bn(pw1, bn1), fold_bn(dw, bn2), fold_bn(pw3, bn3)
    extra = _padding(w1.shape[0], DEPTHWISE_ALIGN)
    rows = (0, 0, 0, 0, 0, 0, 0, extra)
    return ((F.pad(w1, rows), F.pad(b1, (0, extra))), (F.pad(wd, rows), F.pad(bd, (0, extra))),
            (F.pad(w3, (0, 0, 0, 0, 0, extra)), b3))


def _output_layout(half, passed_at=None):
    """Storage layout of a unit's output: ``(first, second)``.

    Shuffled, output channel ``2i`` is channel ``i`` of the unit's first part (pass-through or
    ``banch1``) and ``2i + 1`` channel ``i`` of ``banch2``; the next unit transforms channels
    ``half..2·half-1``. Stored as [first part, those the next unit passes on, then those it
    transforms; second part, those it transforms, then the rest], the next unit's branch is one
    slice. ``first`` and ``second`` list each part's channels in storage order. ``passed_at`` (a
    pass-through's input storage positions) keeps the first part in input order within each group, in
    as few slices as that allows.
    """
    kept = [i for i in range(half) if 2 * i < half]
    moved = [i for i in range(half) if 2 * i >= half]
    if passed_at is not None:
        kept, moved = sorted(kept, key=passed_at.get), sorted(moved, key=passed_at.get)
    first = kept + moved
    second = [i for i in range(half) if 2 * i + 1 >= half] + [i for i in range(half) if 2 * i + 1 < half]
    return first, second


def _stored(first, pad, second, tail=()):
    """``order``: the shuffled channel at each storage position, ``None`` at a padding channel.
    The padding between the parts sits inside the next unit's branch slice."""
    return [2 * i for i in first] + list(pad) + [2 * i + 1 for i in second] + list(tail)


class DownUnit(nn.Module):
    """A stride-2 ShuffleNetV2 unit, BatchNorm folded, its two branches concatenated unshuffled:
    ``[relu(c1(b1(x))), relu(c2(b2(relu(a(x)))))]``."""

    def __init__(self, b1, c1, a, b2, c2):
        super().__init__()
        self.b1, self.c1, self.a, self.b2, self.c2 = b1, c1, a, b2, c2

    def forward(self, x):
        return torch.cat((F.relu(self.c1(self.b1(x))), F.relu(self.c2(self.b2(F.relu(self.a(x)))))), 1)


class SplitUnit(nn.Module):
    """A stride-1 ShuffleNetV2 unit, BatchNorm folded, its split and shuffle left to the storage
    order: the branch reads the input slice ``branch``; the output concatenates ``plan``'s input
    slices and, at ``None``, the branch's output."""

    def __init__(self, a, b, c, branch, plan):
        super().__init__()
        self.a, self.b, self.c = a, b, c
        self.branch, self.plan = tuple(branch), tuple(plan)

    def forward(self, x):
        y = F.relu(self.c(self.b(F.relu(self.a(x[:, self.branch[0]:self.branch[1]])))))
        return torch.cat([y if part is None else x[:, part[0]:part[1]] for part in self.plan], 1)


def _runs(positions):
    """Consecutive runs of ``positions`` as ``(start, stop)`` slices."""
    runs = []
    for p in positions:
        if runs and runs[-1][1] == p:
            runs[-1][1] = p + 1
        else:
            runs.append([p, p + 1])
    return [tuple(r) for r in runs]


def down_unit(block, order):
    """``(DownUnit, order_out)`` for the eval-mode stride-2 ``block`` reading an input whose storage
    position ``s`` holds channel ``order[s]`` (see :func:`_output_layout` for ``order_out``)."""
    (w1, b1), (wd, bd), (w3, b3) = _branch2(block)
    dw1, bn1_1, pw1_1, bn1_2, _ = block.banch1
    wd1, bd1 = fold_bn(dw1, bn1_1)
    wp1, bp1 = fold_bn(pw1_1, bn1_2)
    first, second = _output_layout(w3.shape[0])
    pad = [None] * _padding(len(first), POINTWISE_ALIGN)   # after each part: both convolutions write aligned widths
    unit = DownUnit(_conv_rows(wd1, bd1, order, stride=block.stride, groups=len(order)),
                    _conv_rows(wp1, bp1, first + pad, order), _conv_rows(w1, b1, range(len(w1)), order),
                    _conv(wd, bd, stride=block.stride, groups=wd.shape[0]), _conv_rows(w3, b3, second + pad))
    return unit, _stored(first, pad, second, pad)


def split_unit(block, order, read_whole=False):
    """``(SplitUnit, order_out)`` for the eval-mode stride-1 ``block`` reading an input whose storage
    position ``s`` holds channel ``order[s]``, the transformed half in one slice. ``read_whole``: the
    next unit reads all of the output, so its width is padded to :data:`POINTWISE_ALIGN` (with copies
    of input channels that nothing reads)."""
    (w1, b1), (wd, bd), (w3, b3) = _branch2(block)
    half = w3.shape[0]
    at = {c: s for s, c in enumerate(order) if c is not None}
    start = min(at[c] for c in range(half, 2 * half))
    stop = max(at[c] for c in range(half, 2 * half)) + 1
    if any(c is not None and not half <= c < 2 * half for c in order[start:stop]):
        raise ValueError("the unit's transformed half is not one slice of its input")
    first, second = _output_layout(half, passed_at=at)
    pad = [None] * _padding(half, POINTWISE_ALIGN)   # before the branch's output: inside the next branch slice
    order_out = _stored(first, pad, second)
    extra = _padding(len(order_out), POINTWISE_ALIGN) if read_whole else 0
    unit = SplitUnit(_conv_rows(w1, b1, range(len(w1)), [c if c is None else c - half for c in order[start:stop]]),
                     _conv(wd, bd, groups=wd.shape[0]), _conv_rows(w3, b3, pad + second), (start, stop),
                     _runs([at[i] for i in first]) + [None] + ([(0, extra)] if extra else []))
    return unit, order_out + [None] * extra


def split_shufflenet(blocks):
    """``(nn.Sequential, orders)``: the eval-mode ShuffleNetV2 ``blocks`` as :class:`DownUnit` and
    :class:`SplitUnit` modules; storage position ``s`` of unit ``j``'s output holds its channel ``orders[j][s]``
    (``None``: a padding channel, which every convolution reads with zero weights).

    The units' multiply-adds (and those of the zero channels), and no channel shuffle (a reshape-transpose-reshape copy,
    in ONNX Runtime a layout transpose): each unit's weights read its input in the order left by the
    previous one. A stride-1 unit concatenates its pass-through half from slices of its input
    (two more per unit since the last stride-2 one).
    """
    if not all(isinstance(block, ShuffleBlock) for block in blocks):
        raise TypeError("expected ShuffleBlock units, got " + ", ".join(type(b).__name__ for b in blocks))
    units, orders = [], []
    order = list(range(blocks[0].banch2[0].in_channels * (2 if blocks[0].stride == 1 else 1)))
    for j, block in enumerate(blocks):
        if block.stride == 2:
            unit, order = down_unit(block, order)
        else:
            unit, order = split_unit(block, order, read_whole=j + 1 == len(blocks) or blocks[j + 1].stride == 2)
        units.append(unit)
        orders.append(order)
    return nn.Sequential(*units), orders


def split_backbone(backbone):
    """Rewrite the eval-mode ShuffleNetV2 (or AMMA ShuffleNetV2) ``backbone`` in place with
    :func:`split_shufflenet`; the lateral fusions mix the two streams channel by channel, in the
    same storage order, and ``conv_last`` reads the last unit's order."""
    backbone.features, orders = split_shufflenet(backbone.features)
    if hasattr(backbone, "features_mm"):   # a prefix of the same units: it leaves the same orders
        backbone.features_mm = split_shufflenet(backbone.features_mm)[0]
    conv = backbone.conv_last[0]
    conv.weight.data = _take(conv.weight.data, orders[-1], 1)
    return backbone



def column_phase_weight(weight):
    """The ``(2·C_out, 2·C_in, k_h, 3)`` weight of a convolution on the even and odd columns of a map as
    separate channels (input channel ``2c + r`` is column phase ``r`` of channel ``c``) that computes the
    stride-1 ``weight`` ``(C_out, C_in, k_h, k_w)`` (odd ``k_w`` up to 5, 'same' padding) for both output
    column phases: output channel ``b·C_out + c`` is phase ``b``. Padding ``((k_h - 1) / 2, 1)``.

    Tap ``t`` of output column ``2j + b`` reads column ``2j + b + t - p`` (``p = (k_w - 1) / 2``), phase
    ``(b + t - p) mod 2`` of half-column ``j + floor((b + t - p) / 2)``, one of ``j - 1 .. j + 1``. For the
    micro-motion's 3 -> 8 channel 5x5 convolution ONNX Runtime's CPU kernels pad the 8 output
    channels to 16; here all 16 are real, with 6·15 instead of 3·25 taps per output pair: about 1.0 against
    1.5 ms at 288x288 (three pairs, one thread, ad hoc).
    """
    c_out, c_in, k_h, k_w = weight.shape
    p = (k_w - 1) // 2
    if k_w % 2 == 0 or p > 2:
        raise ValueError(f"expected an odd kernel width up to 5, got {k_w}")
    out = weight.new_zeros(2, c_out, c_in, 2, k_h, 3)
    for b in range(2):
        for t in range(k_w):
            q, r = divmod(b + t - p, 2)
            out[b, :, :, r, :, q + 1] += weight[:, :, :, t]
    return out.reshape(2 * c_out, 2 * c_in, k_h, 3)


class FoldedMicroMotion(nn.Module):
    """An eval-mode :class:`~edge_stad.models.micro_motion.MicroMotion` on raw frames, in fewer nodes and
    a quarter fewer multiply-adds (one convolution per pair instead of one per frame), the convolution
    on column phases (:func:`column_phase_weight`) where the pooled width is even.

    It takes the frames before normalisation, channels last, ``(N, n, H, W, 3)`` of any type (the
    frames it uses are picked before the layout change): the normalisation
    ``x * scale + shift`` (``input_scale``, per colour channel, positive) commutes with the max-pool,
    its shift cancels in the differences and its scale moves into the convolution weights; the
    eps added to the differences is the convolution's bias. With the max-pool the motion image
    stays at the pooled resolution, without the module's 2x upsampling: the backbone's motion
    stem reads it through :func:`upsampled_input_conv`.
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
        eps = torch.full((weight.shape[0],), float(mm.eps))   # the eps as the bias
        self.conv = _conv(weight, eps)
        self.phase_conv = _conv(column_phase_weight(weight), eps.repeat(2), padding=((weight.shape[2] - 1) // 2, 1))

    def forward(self, frames):
        x = frames[:, self.used].permute(0, 1, 4, 2, 3).float()
        x = self.maxpool(x.reshape(-1, *x.shape[-3:]))
        h, w = x.shape[-2:]
        x = x.reshape(-1, len(self.used), 3, h, w)
        diff = x[:, self.first] - x[:, self.second]
        pairs = len(self.first)
        if w % 2:
            phases, y = 1, self.conv(diff.reshape(-1, 3, h, w))
        else:
            phases = 2
            diff = diff.reshape(-1, 3, h, w // 2, 2).permute(0, 1, 4, 2, 3).reshape(-1, 6, h, w // 2)
            y = self.phase_conv(diff)
        y = y.reshape(-1, phases, self.conv.out_channels, h, w // phases)
        # Mul, ReduceSum, Sqrt: ONNX Runtime's ReduceL2 over the channels takes about twice as long
        norm = (y * y).sum(2).sqrt()   # (pairs, column phase, h, w / phases)
        return (norm if phases == 1 else norm.permute(0, 2, 3, 1)).reshape(-1, pairs, h, w)


class _Cropped(nn.Module):
    """A convolution whose last output row and column are dropped."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x)[:, :, :-1, :-1]


def upsampled_input_conv(conv, bn=None):
    """A module on a map ``m`` that equals the stride-2 ``conv`` (odd kernel ``k``, padding
    ``(k-1)/2``), followed by the eval-mode ``bn`` if given, on ``m`` upsampled 2x by nearest
    neighbour: a quarter of the input pixels and fewer taps.

    Kernel tap ``t`` of output ``i`` reads upsampled row ``2i - p + t``, which is row
    ``i + floor((t - p) / 2)`` of ``m``, so the taps that land on the same row of ``m`` add up
    into one (3x3 becomes 2x2, 7x7 becomes 4x4) and padding rows stay zero either way. That
    padding is one row more above than below where ``p`` is odd: the convolution pads both
    sides alike and drops its last row and column (an exporter's pad node would not fold).
    """
    k, p = conv.kernel_size, conv.padding
    if (tuple(conv.stride) != (2, 2) or tuple(conv.dilation) != (1, 1)
            or any(size % 2 == 0 or pad != (size - 1) // 2 for size, pad in zip(k, p))):
        raise ValueError(f"expected a stride-2 convolution with an odd kernel and 'same' padding, got {conv}")
    if p[0] % 2 != p[1] % 2:
        raise ValueError(f"expected the same padding parity on both axes, got {conv}")
    weight, bias = fold_bn(conv, bn) if bn is not None else (conv.weight.detach(), conv.bias)
    offsets = [[(t - pad) // 2 for t in range(size)] for size, pad in zip(k, p)]
    merged = weight.new_zeros(*weight.shape[:2], *(o[-1] - o[0] + 1 for o in offsets))
    for th, oh in enumerate(offsets[0]):
        for tw, ow in enumerate(offsets[1]):
            merged[:, :, oh - offsets[0][0], ow - offsets[1][0]] += weight[:, :, th, tw]
    out = nn.Conv2d(conv.in_channels, conv.out_channels, merged.shape[2:], padding=tuple(-o[0] for o in offsets),
                    groups=conv.groups, bias=bias is not None)
    out.weight.data.copy_(merged)
    if bias is not None:
        out.bias.data.copy_(bias.detach())
    return _Cropped(out) if p[0] % 2 else out


def phase_conv_weight(weight):
    """The ``(4·C_out, C_in, 2, 2)`` weight of the 2x2 convolution (padding 1: one row and column more
    than its input) whose pixel-shuffled output, less its outer pixels, is the 4x4/2 transposed
    convolution (padding 1) with ``weight`` ``(C_in, C_out, 4, 4)``.

    Output row ``2m + a`` of the transposed convolution reads input rows ``m - 1 + a`` and ``m + a``
    through kernel rows ``3 - a`` and ``1 - a``: the 2x2 window of the padded convolution's row
    ``m + a``. Stored as phase ``1 - a``, the shuffle puts it on row ``2(m + a) + 1 - a``, one
    below ``2m + a`` for both phases; the same for columns. Phase ``(a, b)`` of output channel
    ``c`` is channel ``4c + 2(1 - a) + 1 - b``. Against a 3x3 convolution over all phases, 4 of 9
    taps: 45% fewer multiply-adds on a 9x9 map, the extra row and column included.
    """
    c_in, c_out = weight.shape[:2]
    out = weight.new_empty(c_out, 2, 2, c_in, 2, 2)
    for a in range(2):
        for b in range(2):
            taps = weight[:, :, [3 - a, 1 - a]][:, :, :, [3 - b, 1 - b]]
            out[:, 1 - a, 1 - b] = taps.transpose(0, 1)
    return out.reshape(4 * c_out, c_in, 2, 2)


class FoldedDecoder(nn.Module):
    """An eval-mode :class:`~edge_stad.models.decoder.Decoder` whose transposed convolution (with its
    BatchNorm) is a 2x2 convolution to phase channels followed by a pixel shuffle and a crop.

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
        self.up = _conv(weight, shift.detach().repeat(4), padding=1)
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
        return F.interpolate(y[:, :, 1:-1, 1:-1], scale_factor=2.0, mode="nearest")


def fold_model(model, input_scale):
    """Rewrite the eval-mode AMMA ``model`` in place: ShuffleNetV2 units without their channel shuffles
    (:func:`split_backbone`), the decoder's transposed convolution as a convolution and a pixel shuffle with the
    head's ``shrink`` before the shuffle, micro-motion on raw frames normalised by ``input_scale``
    (see :class:`FoldedMicroMotion`), at the pooled resolution for the motion stem."""
    if isinstance(model.deconv_layer, Decoder):
        model.deconv_layer = FoldedDecoder(model.deconv_layer, model.branch.shrink)
        model.branch.shrink = nn.Identity()
    if model.mm is not None:
        model.mm = FoldedMicroMotion(model.mm, input_scale)
        if model.mm.pool:   # the motion stem reads the pooled-resolution motion image
            conv, bn = (model.backbone.get_submodule(path) for path in model.backbone.MOTION_STEM)
            _replace(model.backbone, model.backbone.MOTION_STEM[0], upsampled_input_conv(conv, bn))
            _replace(model.backbone, model.backbone.MOTION_STEM[1], nn.Identity())
    if isinstance(model.backbone, ShuffleNetV2):
        split_backbone(model.backbone)
    return model


def _replace(module, path, new):
    parent, _, name = path.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, new)
