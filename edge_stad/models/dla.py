"""DLA-34 with iterative deep aggregation up to stride 4 (Yu et al., "Deep Layer Aggregation"), as
CenterNet and MOC-Detector use it: 64 channels at a quarter of the input resolution.

* :class:`DLA34` - the base network: a 7x7 stem, two plain conv levels and four aggregation
  trees (levels 2-5, channels 64 / 128 / 256 / 512 at strides 4 / 8 / 16 / 32).
* :class:`DLAUp` and :class:`IDAUp` - the up path: every level is projected by a 3x3 conv, upsampled
  by a per-channel transposed conv initialised as bilinear interpolation, added to the level
  above and merged by another 3x3 conv.
* :class:`DLASeg` - base + up path + the final IDA over strides 4, 8 and 16 (MOC's ``MOC_DLA``).

The up path's 3x3 convs are modulated deformable convs (DCNv2) in CenterNet and MOC
(``deformable=True``, through :mod:`edge_stad.models.deform_conv`), or plain 3x3 convs with a bias
(``deformable=False``), which export everywhere. Module names follow CenterNet's ``pose_dla_dcn``
so that its state dicts map by key, with one exception: a tree of two levels builds, but never
uses, a projection of its input (``level3/4.project``); it is not built here, because weights
that never receive a gradient break distributed data-parallel training.
"""
import torch
from torch import nn

from edge_stad.models.decoder import bilinear_upsampling_init
from edge_stad.models.deform_conv import ModulatedDeformConv2d

BN_MOMENTUM = 0.1
DLA34_LEVELS = (1, 1, 1, 2, 2, 1)
DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)
FIRST_LEVEL = 2  # stride 4: where the up path ends
OUT_CHANNELS = DLA34_CHANNELS[FIRST_LEVEL]


def _bn(channels):
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class DLABlock(nn.Module):
    """DLA's basic residual block; the residual can come from outside (a tree's projected input)."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)

    def forward(self, x, residual=None):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if residual is None else residual))


class Root(nn.Module):
    """1x1 conv + BN + ReLU over the concatenated children of a tree."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = _bn(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *children):
        return self.relu(self.bn(self.conv(torch.cat(children, 1))))


class Tree(nn.Module):
    """A hierarchical aggregation tree of ``levels`` levels; ``level_root`` feeds its (downsampled) input
    to the root as well."""

    def __init__(self, levels, in_channels, out_channels, stride=1, level_root=False, root_dim=0):
        super().__init__()
        root_dim = root_dim or 2 * out_channels
        if level_root:
            root_dim += in_channels
        self.levels, self.level_root = levels, level_root
        if levels == 1:
            self.tree1 = DLABlock(in_channels, out_channels, stride)
            self.tree2 = DLABlock(out_channels, out_channels)
            self.root = Root(root_dim, out_channels)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride)
            self.tree2 = Tree(levels - 1, out_channels, out_channels, root_dim=root_dim + out_channels)
        self.downsample = nn.MaxPool2d(stride, stride) if stride > 1 else None
        self.project = None
        if levels == 1 and in_channels != out_channels:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), _bn(out_channels))

    def forward(self, x, children=None):
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            x1 = self.tree1(x, self.project(bottom) if self.project is not None else bottom)
            return self.root(self.tree2(x1), x1, *children)
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children)


def conv_level(inplanes, planes, stride=1):
    return nn.Sequential(nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False), _bn(planes), nn.ReLU(inplace=True))


class DLA34(nn.Module):
    """The DLA-34 base; ``forward`` returns the six level outputs (strides 1, 2, 4, 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        c, lv = DLA34_CHANNELS, DLA34_LEVELS
        self.channels = c
        self.base_layer = nn.Sequential(nn.Conv2d(3, c[0], 7, 1, 3, bias=False), _bn(c[0]), nn.ReLU(inplace=True))
        self.level0 = conv_level(c[0], c[0])
        self.level1 = conv_level(c[0], c[1], stride=2)
        self.level2 = Tree(lv[2], c[1], c[2], 2)
        self.level3 = Tree(lv[3], c[2], c[3], 2, level_root=True)
        self.level4 = Tree(lv[4], c[3], c[4], 2, level_root=True)
        self.level5 = Tree(lv[5], c[4], c[5], 2, level_root=True)

    def forward(self, x):
        levels = []
        x = self.base_layer(x)
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            levels.append(x)
        return levels


class UpConv(nn.Module):
    """CenterNet's ``DeformConv``: 3x3 conv (deformable or plain) + BN + ReLU."""

    def __init__(self, in_channels, out_channels, deformable):
        super().__init__()
        self.conv = (ModulatedDeformConv2d(in_channels, out_channels) if deformable
                     else nn.Conv2d(in_channels, out_channels, 3, 1, 1))
        self.actf = nn.Sequential(_bn(out_channels), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.actf(self.conv(x))


class IDAUp(nn.Module):
    """Iterative deep aggregation: levels ``startp + 1 .. endp - 1`` are projected to ``out_channels``,
    upsampled by ``factors`` and merged into the level above, in place."""

    def __init__(self, out_channels, channels, factors, deformable):
        super().__init__()
        for i in range(1, len(channels)):
            f = int(factors[i])
            up = nn.ConvTranspose2d(out_channels, out_channels, 2 * f, stride=f, padding=f // 2,
                                    groups=out_channels, bias=False)
            bilinear_upsampling_init(up)
            setattr(self, f"proj_{i}", UpConv(channels[i], out_channels, deformable))
            setattr(self, f"up_{i}", up)
            setattr(self, f"node_{i}", UpConv(out_channels, out_channels, deformable))

    def forward(self, layers, startp, endp):
        for i in range(startp + 1, endp):
            j = i - startp
            up = getattr(self, f"up_{j}")(getattr(self, f"proj_{j}")(layers[i]))
            layers[i] = getattr(self, f"node_{j}")(up + layers[i - 1])


class DLAUp(nn.Module):
    """The up path from stride 32 to the ``startp`` level, one :class:`IDAUp` per level."""

    def __init__(self, startp, channels, deformable):
        super().__init__()
        self.startp = startp
        in_channels, scales = list(channels), [2 ** i for i in range(len(channels))]
        for i in range(len(channels) - 1):
            j = -i - 2
            setattr(self, f"ida_{i}", IDAUp(channels[j], in_channels[j:], [s // scales[j] for s in scales[j:]],
                                            deformable))
            scales[j + 1:] = [scales[j]] * len(scales[j + 1:])
            in_channels[j + 1:] = [channels[j]] * len(in_channels[j + 1:])

    def forward(self, layers):
        out = [layers[-1]]
        for i in range(len(layers) - self.startp - 1):
            getattr(self, f"ida_{i}")(layers, len(layers) - i - 2, len(layers))
            out.insert(0, layers[-1])
        return out


class DLASeg(nn.Module):
    """DLA-34 + up path: ``(N, 3, H, W)`` -> ``(N, 64, H/4, W/4)`` (MOC's ``MOC_DLA``)."""

    out_channels = OUT_CHANNELS
    stride = 2 ** FIRST_LEVEL

    def __init__(self, deformable=True):
        super().__init__()
        self.base = DLA34()
        channels = self.base.channels[FIRST_LEVEL:]
        self.dla_up = DLAUp(FIRST_LEVEL, channels, deformable)
        last = len(channels) - 1  # the ida_up merges strides 4, 8, 16
        self.ida_up = IDAUp(OUT_CHANNELS, channels[:last], [2 ** i for i in range(last)], deformable)

    def forward(self, x):
        up = self.dla_up(self.base(x))
        levels = up[:len(up) - 1]
        self.ida_up(levels, 0, len(levels))
        return levels[-1]
