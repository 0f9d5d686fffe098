"""3D CNN backbones for MENet's clip branch (no torchvision); input ``(B, 3, T, H, W)``.

* :class:`ResNeXt3D` - Hara et al.'s 3D-ResNeXt (the layout YOWO and MARS load Kinetics
  weights into): 7x7x7 stem, bottlenecks of cardinality 32, shortcut type B.
* :class:`ShuffleNetV2_3D`, :class:`MobileNetV2_3D` - Koepueklue et al.'s resource-efficient
  3D CNNs ("Efficient-3DCNNs"), without their classifiers.

Module names follow those repositories so their checkpoints load by key. Every backbone is
cut into four levels at spatial strides 4, 8, 16 and 32 (temporal strides 2, 4, 8, 16), the
last one being its output: a flow teacher and a smaller student then pair up level by level
for multi-level distillation (seed 003).
"""
from itertools import accumulate

import torch
from torch import nn

from edge_stad.errors import ConfigError
from edge_stad.models.backbones.base import StagedBackbone
from edge_stad.models.backbones.shufflenetv2 import SplitShuffleUnit

RESNEXT_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# ShuffleNetV2 widths: stem, stage 2-4 and conv_last channels (Efficient-3DCNNs' table).
SHUFFLENET_CHANNELS = {
    0.25: (24, 32, 64, 128, 1024),
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 224, 488, 976, 2048),
}
# MobileNetV2 inverted residuals: expansion t, channels c, repeats n, first stride s (T, H and W).
MOBILENETV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1))


def conv_bn(inp, oup, kernel_size=1, stride=1, groups=1, act=nn.ReLU):
    """Conv3d + BN (+ activation) as a flat list, so blocks built from several keep the reference keys."""
    layers = [nn.Conv3d(inp, oup, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
              nn.BatchNorm3d(oup)]
    return layers + [act(inplace=True)] if act is not None else layers


def channel_shuffle_3d(x, groups=2):
    _, c, t, h, w = x.shape
    return x.reshape(-1, groups, c // groups, t, h, w).transpose(1, 2).reshape(-1, c, t, h, w)


class Backbone3D(StagedBackbone):
    """Four levels (see the module docstring); ``forward`` returns the last, ``(B, C, T', H', W')``.

    ``in_channels`` is 3 for RGB clips, 2 for a flow teacher's (x, y) clips.
    """

    def __init__(self, in_channels=3):
        super().__init__()
        self.in_channels = in_channels

    @property
    def out_channels(self):
        return self.stage_channels[-1]

    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_levels(self, x):
        """Output of every level, shallowest first."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        return self.forward_stages(x)

    def forward(self, x):
        return self.forward_levels(x)[-1]


class ResNeXtBottleneck(nn.Module):
    """1x1x1 -> grouped 3x3x3 (the stride) -> 1x1x1 to ``2 * planes``, with a projection shortcut when needed."""

    expansion = 2

    def __init__(self, inplanes, planes, cardinality, stride=1):
        super().__init__()
        mid = cardinality * (planes // 32)
        out = planes * self.expansion
        self.conv1 = nn.Conv3d(inplanes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(*conv_bn(inplanes, out, 1, stride, act=None))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNeXt3D(Backbone3D):
    """3D-ResNeXt-``depth`` (50/101/152), cardinality 32; levels = stem + layer1, layer2, layer3, layer4."""

    def __init__(self, depth=101, cardinality=32, in_channels=3):
        super().__init__(in_channels)
        if depth not in RESNEXT_BLOCKS:
            raise ConfigError(f"3D-ResNeXt depth must be one of {sorted(RESNEXT_BLOCKS)}, got {depth}")
        self.conv1 = nn.Conv3d(self.in_channels, 64, 7, (1, 2, 2), 3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        inplanes, channels = 64, []
        for i, blocks in enumerate(RESNEXT_BLOCKS[depth]):
            planes = 128 * 2 ** i
            layer = [ResNeXtBottleneck(inplanes, planes, cardinality, 1 if i == 0 else 2)]
            inplanes = planes * ResNeXtBottleneck.expansion
            layer += [ResNeXtBottleneck(inplanes, planes, cardinality) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            channels.append(inplanes)
        self.stage_channels = tuple(channels)
        self.init_weights()

    def stage(self, i, x):
        if i == 0:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return getattr(self, f"layer{i + 1}")(x)


class ShuffleBlock3D(SplitShuffleUnit):
    """ShuffleNetV2 unit in 3D: stride 1 transforms half the channels, stride 2 (T, H, W) both halves."""

    shuffle = staticmethod(channel_shuffle_3d)

    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        half = oup // 2
        if stride == 2:
            self.banch1 = nn.Sequential(*conv_bn(inp, inp, 3, stride, groups=inp, act=None), *conv_bn(inp, half))
        self.banch2 = nn.Sequential(*conv_bn(inp if stride == 2 else half, half),
                                    *conv_bn(half, half, 3, stride, groups=half, act=None), *conv_bn(half, half))


class ShuffleNetV2_3D(Backbone3D):
    """3D ShuffleNetV2; levels = stem (3x3x3 conv (1,2,2) + max-pool), stages 2, 3, and stage 4 + ``conv_last``."""

    STAGE_REPEATS = (4, 8, 4)
    FEATURE_BOUNDS = (0, *accumulate(STAGE_REPEATS))  # ``features`` slices of levels 1, 2, 3

    def __init__(self, width_mult=2.0, in_channels=3):
        super().__init__(in_channels)
        if width_mult not in SHUFFLENET_CHANNELS:
            raise ConfigError(f"3D ShuffleNetV2 width must be one of {sorted(SHUFFLENET_CHANNELS)}, got {width_mult}")
        channels = SHUFFLENET_CHANNELS[width_mult]
        self.conv1 = nn.Sequential(*conv_bn(self.in_channels, channels[0], 3, (1, 2, 2)))
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        blocks, inp = [], channels[0]
        for repeats, oup in zip(self.STAGE_REPEATS, channels[1:4]):
            blocks += [ShuffleBlock3D(inp if i == 0 else oup, oup, 2 if i == 0 else 1) for i in range(repeats)]
            inp = oup
        self.features = nn.Sequential(*blocks)
        self.conv_last = nn.Sequential(*conv_bn(channels[3], channels[4]))
        self.stage_channels = (channels[0], channels[1], channels[2], channels[4])
        self.init_weights()

    def stage(self, i, x):
        if i == 0:
            return self.maxpool(self.conv1(x))
        x = self.features[self.FEATURE_BOUNDS[i - 1]:self.FEATURE_BOUNDS[i]](x)
        return self.conv_last(x) if i == 3 else x


class InvertedResidual3D(nn.Module):
    """MobileNetV2 block in 3D: (1x1x1 expand) -> depthwise 3x3x3 -> linear 1x1x1, residual when shapes allow."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        expand = conv_bn(inp, hidden, act=nn.ReLU6) if expand_ratio != 1 else []
        self.conv = nn.Sequential(*expand, *conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                                  *conv_bn(hidden, oup, act=None))

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2_3D(Backbone3D):
    """3D MobileNetV2; levels end at ``features`` 3, 6, 13 and 18 (the last 1x1x1 conv, 1280 channels at 1.0x)."""

    LEVEL_ENDS = (4, 7, 14, 19)  # exclusive ``features`` indices

    def __init__(self, width_mult=1.0, in_channels=3):
        super().__init__(in_channels)
        if not width_mult > 0:
            raise ConfigError(f"3D MobileNetV2 width must be positive, got {width_mult}")
        inp = int(32 * width_mult)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        layers = [nn.Sequential(*conv_bn(self.in_channels, inp, 3, (1, 2, 2), act=nn.ReLU6))]
        for t, c, n, s in MOBILENETV2_SETTING:
            oup = int(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual3D(inp, oup, s if i == 0 else 1, t))
                inp = oup
        layers.append(nn.Sequential(*conv_bn(inp, last, act=nn.ReLU6)))
        self.features = nn.Sequential(*layers)
        self.stage_channels = (int(24 * width_mult), int(32 * width_mult), int(96 * width_mult), last)
        self.init_weights()

    def stage(self, i, x):
        return self.features[self.LEVEL_ENDS[i - 1] if i else 0:self.LEVEL_ENDS[i]](x)


class NonLocalBlock3D(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al.), ``x + W(softmax(theta^T phi) g)``.

    ``W`` ends with a BN whose scale and shift start at zero, so the block starts as the
    identity and pretrained features pass through unchanged. The affinity and its softmax
    are computed in float32 whatever the input type: at fp16 the position Gram matrix can
    overflow (measured on MENet's 3D branch).
    """

    def __init__(self, in_channels, inter_channels=None):
        super().__init__()
        inter = inter_channels or max(in_channels // 2, 1)
        self.g = nn.Conv3d(in_channels, inter, 1)
        self.theta = nn.Conv3d(in_channels, inter, 1)
        self.phi = nn.Conv3d(in_channels, inter, 1)
        self.W = nn.Sequential(nn.Conv3d(inter, in_channels, 1), nn.BatchNorm3d(in_channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x):
        b, _, t, h, w = x.shape
        theta, phi, g = (f(x).flatten(2).float() for f in (self.theta, self.phi, self.g))  # (B, C', N)
        affinity = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (B, N, N), rows sum to 1
        y = (g @ affinity.transpose(1, 2)).to(x.dtype)
        return x + self.W(y.reshape(b, -1, t, h, w))


# Width multiplier used when none is given (None: the backbone has none); 2.0x / 1.0x are YOWO's lite choices.
DEFAULT_WIDTH_3D = {"resnext50": None, "resnext101": None, "resnext152": None, "shufflenetv2": 2.0,
                    "mobilenetv2": 1.0}


def resolve_width_3d(name, width_mult=None):
    """The width a 3D backbone is built with (its default when ``width_mult`` is None); ConfigError if it has none."""
    if name not in DEFAULT_WIDTH_3D:
        raise ConfigError("unknown 3D backbone {!r}; choose one of {}".format(name, ", ".join(DEFAULT_WIDTH_3D)))
    default = DEFAULT_WIDTH_3D[name]
    if width_mult is None:
        return default
    if default is None:
        raise ConfigError(f"{name} has no width multiplier, got width_3d={width_mult}")
    return float(width_mult)


def create_backbone_3d(name, width_mult=None, in_channels=3):
    """The registry's 3D backbone ``name`` (:func:`edge_stad.models.registry.create_backbone`) at its width."""
    from edge_stad.models.registry import create_backbone

    width = resolve_width_3d(name, width_mult)
    return create_backbone("3d", name, in_channels=in_channels) if width is None else \
        create_backbone("3d", name, width, in_channels=in_channels)
