"""MobileNetV2 (1.0x), laid out like torchvision so that ImageNet / SSDLite weights load by name."""
from torch import nn

from edge_stad.models.backbones.base import StagedBackbone

# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
LAST_CHANNEL = 1280


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [ConvBNReLU(inp, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def mobilenetv2_features(in_channels=3):
    """The 19 ``features`` layers: stem, 17 inverted residuals, the 1x1 conv to 1280."""
    layers = [ConvBNReLU(in_channels, 32, stride=2)]
    channels = 32
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            layers.append(InvertedResidual(channels, c, s if i == 0 else 1, expand_ratio=t))
            channels = c
    layers.append(ConvBNReLU(channels, LAST_CHANNEL, kernel_size=1))
    return layers


def init_mobilenetv2(module):
    """torchvision's MobileNetV2 init (kaiming fan-out convs, unit BN), also used by the reference."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MobileNetV2(StagedBackbone):
    """MobileNetV2 1.0x without its classifier.

    Stage ``i`` ends at ``features[STAGE_ENDS[i]]``: 16@/2, 24@/4, 32@/8, 96@/16, 320@/32;
    the tail is ``features[18]`` (1x1 conv to 1280). AMMA fuses after stages 0-2
    (``features`` indices 1, 3, 6, as in the reference).
    """

    STAGE_ENDS = (1, 3, 6, 13, 17)
    stage_channels = (16, 24, 32, 96, 320)
    out_channels = LAST_CHANNEL

    def __init__(self, in_channels=3):
        super().__init__()
        self.features = nn.Sequential(*mobilenetv2_features(in_channels))
        init_mobilenetv2(self)

    @classmethod
    def stage_range(cls, i):
        """``features`` indices of stage ``i`` as a ``range``."""
        start = 0 if i == 0 else cls.STAGE_ENDS[i - 1] + 1
        return range(start, cls.STAGE_ENDS[i] + 1)

    def stage(self, i, x):
        for j in self.stage_range(i):
            x = self.features[j](x)
        return x

    def tail(self, x):
        return self.features[len(self.features) - 1](x)
