"""PWC-Net optical flow (Sun et al., CVPR 2018), written to export to ONNX without custom ops.

The layout is PWC-Net's ``PWCDCNet`` (NVlabs' PyTorch model, whose layer names are kept):
a feature pyramid of 3x3 convolutions (16, 32, 64, 96, 128, 196 channels at 1/2 .. 1/64),
then from the coarsest level down to 1/4: warp the second image's features with the
upsampled flow, a cost volume of the first image's features against them, a DenseNet-style
flow estimator (128, 128, 96, 64, 32 channels, each layer's output concatenated to its
input), and at 1/4 a dilated context network (dilations 1, 2, 4, 8, 16, 1) that refines the
flow. Every activation is a LeakyReLU(0.1); about 8.75 M parameters.

Two pieces are normally custom CUDA ops; here they are plain tensor operations:

* the **cost volume** (``Correlation``, kernel 1, max displacement ``d``) is written as
  ``(2d+1)^2`` shifts: pad the second feature map by ``d``, slice each displaced window, multiply
  by the first map and average over channels (Pad, Slice, Mul, ReduceMean, Concat in ONNX);
* **warping** is ``grid_sample`` (bilinear, zero padding, ``align_corners=True``) followed by
  PWC-Net's validity mask; it exports as ONNX ``GridSample``, which needs opset >= 16.

Units follow PWC-Net: every level predicts flow in full-resolution pixels divided by 20
(:data:`FLOW_SCALE`); the level-``l`` warp multiplies it by ``20 / 2^l``. :class:`PWCNet` is
parameterised (levels, widths, search range, dense connections, context network) so that the
same code gives the faithful network and a small one for edge devices.
"""
import torch
import torch.nn.functional as F
from torch import nn

from edge_stad.errors import ConfigError

FLOW_SCALE = 20.0
PYRAMID = (16, 32, 64, 96, 128, 196)
ESTIMATOR = (128, 128, 96, 64, 32)
CONTEXT = ((128, 1), (128, 2), (128, 4), (96, 8), (64, 16), (32, 1))   # (channels, dilation)


def conv(inp, out, kernel_size=3, stride=1, dilation=1):
    """PWC-Net's ``conv``: a biased convolution and LeakyReLU(0.1)."""
    return nn.Sequential(nn.Conv2d(inp, out, kernel_size, stride, dilation * (kernel_size - 1) // 2, dilation),
                         nn.LeakyReLU(0.1))


def predict_flow(inp):
    return nn.Conv2d(inp, 2, 3, 1, 1)


def deconv(inp, out):
    """A learned exact 2x upsampling (transposed conv 4x4, stride 2, padding 1)."""
    return nn.ConvTranspose2d(inp, out, 4, 2, 1)


def cost_volume(f1, f2, max_displacement):
    """``Correlation(kernel 1, max displacement d)`` as shifts: ``(B, (2d+1)^2, H, W)``.

    Channel ``(dy + d) * (2d + 1) + (dx + d)`` holds the channel mean of ``f1(y, x) * f2(y + dy, x + dx)``
    (zero outside ``f2``), the order of the CUDA op.
    """
    d = max_displacement
    h, w = f1.shape[2:]
    padded = F.pad(f2, (d, d, d, d))
    return torch.cat([(f1 * padded[:, :, dy:dy + h, dx:dx + w]).mean(1, keepdim=True)
                      for dy in range(2 * d + 1) for dx in range(2 * d + 1)], 1)


def warp(x, flow):
    """Sample ``x`` at ``pixel + flow`` (bilinear, ``align_corners=True``), zero where any tap falls outside.

    The mask is PWC-Net's: warp a map of ones the same way and keep pixels where it stays >= 0.9999.
    """
    _, _, h, w = x.shape
    xs = torch.arange(w, dtype=x.dtype, device=x.device)
    ys = torch.arange(h, dtype=x.dtype, device=x.device)
    gx = (xs[None, None, :] + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0   # align_corners=True normalisation
    gy = (ys[None, :, None] + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    ones = torch.ones_like(x[:, :1])
    mask = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True) >= 0.9999
    return out * mask.to(x.dtype)


def _pyramid_names(level):
    """NVlabs' names of a pyramid level's three convs, the strided one first (``conv6aa`` at level 6)."""
    return ("conv6aa", "conv6a", "conv6b") if level == 6 else (f"conv{level}a", f"conv{level}aa", f"conv{level}b")


class PWCNet(nn.Module):
    """PWC-Net over levels ``1 .. len(pyramid)`` (channels ``pyramid``), flow estimated from the
    coarsest level down to ``out_level``.

    ``estimator`` are the flow estimator's widths (dense: each output concatenated to its input),
    ``max_displacement`` the cost volume's search range, ``context`` adds the dilated context network
    at ``out_level``. The defaults are PWC-Net's.
    """

    def __init__(self, pyramid=PYRAMID, estimator=ESTIMATOR, max_displacement=4, dense=True, context=True,
                 out_level=2):
        super().__init__()
        levels = len(pyramid)
        if not 1 <= out_level < levels or max_displacement < 1 or not estimator or min(pyramid) < 1:
            raise ConfigError(f"PWC-Net needs 1 <= out_level < levels ({levels}), a search range >= 1 and "
                              f"estimator widths; got out_level={out_level}, max_displacement={max_displacement}, "
                              f"estimator={estimator}")
        self.levels, self.out_level, self.max_displacement = levels, out_level, max_displacement
        self.dense, self.has_context, self.estimator_depth = dense, context, len(estimator)
        inp = 3
        for level, ch in enumerate(pyramid, 1):
            names = _pyramid_names(level)
            setattr(self, names[0], conv(inp, ch, stride=2))
            setattr(self, names[1], conv(ch, ch))
            setattr(self, names[2], conv(ch, ch))
            inp = ch
        self.leakyRELU = nn.LeakyReLU(0.1)
        corr = (2 * max_displacement + 1) ** 2
        for level in range(levels, out_level - 1, -1):
            od = corr if level == levels else corr + pyramid[level - 1] + 4
            width = od
            for k, ch in enumerate(estimator):
                setattr(self, f"conv{level}_{k}", conv(width if dense else (od if k == 0 else estimator[k - 1]), ch))
                width += ch
            last = width if dense else estimator[-1]
            setattr(self, f"predict_flow{level}", predict_flow(last))
            if level > out_level:
                setattr(self, f"deconv{level}", deconv(2, 2))
                setattr(self, f"upfeat{level}", deconv(last, 2))
        if context:
            inp = last
            for k, (ch, dilation) in enumerate(CONTEXT, 1):
                setattr(self, f"dc_conv{k}", conv(inp, ch, dilation=dilation))
                inp = ch
            self.dc_conv7 = predict_flow(inp)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight.data, mode="fan_in")
                nn.init.zeros_(m.bias)

    @property
    def divisor(self):
        """Input height and width must be multiples of this (the coarsest level's stride)."""
        return 2 ** self.levels

    def features(self, image):
        """The pyramid of one image ``(N, 3, H, W)``: a list, level 1 (1/2) first."""
        h, w = image.shape[2:]
        if h % self.divisor or w % self.divisor:
            raise ValueError(f"PWC-Net input must be a multiple of {self.divisor} in height and width, got {h}x{w}")
        feats, x = [], image
        for level in range(1, self.levels + 1):
            for name in _pyramid_names(level):
                x = getattr(self, name)(x)
            feats.append(x)
        return feats

    def _estimate(self, level, x):
        for k in range(self.estimator_depth):
            y = getattr(self, f"conv{level}_{k}")(x)
            x = torch.cat((y, x), 1) if self.dense else y
        return x

    def flows(self, feats1, feats2):
        """Pyramids of both images -> flow at every estimated level, coarsest first (``(N, 2, h_l, w_l)``,
        full-resolution pixels / 20); the last is the refined flow at ``out_level``."""
        out, up_flow, up_feat = [], None, None
        for level in range(self.levels, self.out_level - 1, -1):
            f1, f2 = feats1[level - 1], feats2[level - 1]
            if up_flow is not None:
                f2 = warp(f2, up_flow * (FLOW_SCALE / 2 ** level))
            corr = self.leakyRELU(cost_volume(f1, f2, self.max_displacement))
            x = corr if up_flow is None else torch.cat((corr, f1, up_flow, up_feat), 1)
            x = self._estimate(level, x)
            flow = getattr(self, f"predict_flow{level}")(x)
            if level > self.out_level:
                up_flow = getattr(self, f"deconv{level}")(flow)
                up_feat = getattr(self, f"upfeat{level}")(x)
            elif self.has_context:
                for k in range(1, len(CONTEXT) + 1):
                    x = getattr(self, f"dc_conv{k}")(x)
                flow = flow + self.dc_conv7(x)
            out.append(flow)
        return out

    def forward(self, image1, image2):
        return self.flows(self.features(image1), self.features(image2))
