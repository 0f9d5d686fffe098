"""ShuffleNetV2 (1.0x), laid out like the reference (and its ImageNet weights), typo ``banch`` included."""
import torch
from torch import nn

from edge_stad.models.backbones.base import StagedBackbone

STAGE_REPEATS = (4, 8, 4)
STAGE_OUT_CHANNELS = (24, 116, 232, 464, 1024)


def conv_bn_relu(inp, oup, kernel_size, stride):
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


def channel_shuffle(x, groups=2):
    """Interleave channel groups; written with ``reshape(-1, ...)`` so ONNX export keeps the batch free."""
    _, c, h, w = x.shape
    return x.reshape(-1, groups, c // groups, h, w).transpose(1, 2).reshape(-1, c, h, w)


class SplitShuffleUnit(nn.Module):
    """The ShuffleNetV2 unit's data flow, 2D or 3D: stride 1 passes one half of the channels through and
    transforms the other (``banch2``), stride 2 transforms the input twice (``banch1``, ``banch2``); then
    the halves are interleaved (``shuffle``)."""

    def forward(self, x):
        if self.stride == 1:
            half = x.shape[1] // 2
            out = torch.cat((x[:, :half], self.banch2(x[:, half:])), 1)
        else:
            out = torch.cat((self.banch1(x), self.banch2(x)), 1)
        return self.shuffle(out)


class ShuffleBlock(SplitShuffleUnit):
    """ShuffleNetV2 unit: stride 1 splits channels and transforms one half; stride 2 transforms both."""

    shuffle = staticmethod(channel_shuffle)

    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        half = oup // 2
        branch_in = inp if stride == 2 else half
        if stride == 2:
            self.banch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, half, 1, 1, 0, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        self.banch2 = nn.Sequential(
            nn.Conv2d(branch_in, half, 1, 1, 0, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, 1, 0, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )


def shufflenetv2_features():
    """The 16 ``features`` blocks of stages 2-4."""
    blocks = []
    channels = STAGE_OUT_CHANNELS[0]
    for repeats, out in zip(STAGE_REPEATS, STAGE_OUT_CHANNELS[1:4]):
        for i in range(repeats):
            blocks.append(ShuffleBlock(channels, out, 2 if i == 0 else 1))
            channels = out
    return blocks


class ShuffleNetV2(StagedBackbone):
    """ShuffleNetV2 1.0x without its classifier.

    Stages: 0 = stem (``conv1`` 3x3/2 + max-pool) 24@/4, 1 = ``features[0:4]`` 116@/8,
    2 = ``features[4:12]`` 232@/16, 3 = ``features[12:16]`` 464@/32; the tail is ``conv_last``
    (1x1 to 1024).
    """

    STAGE_ENDS = (3, 11, 15)  # last ``features`` index of stages 1..3
    stage_channels = STAGE_OUT_CHANNELS[:4]
    out_channels = STAGE_OUT_CHANNELS[4]

    def __init__(self, in_channels=3):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels, STAGE_OUT_CHANNELS[0], 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.features = nn.Sequential(*shufflenetv2_features())
        self.conv_last = conv_bn_relu(STAGE_OUT_CHANNELS[3], STAGE_OUT_CHANNELS[4], 1, 1)

    @classmethod
    def stage_range(cls, i):
        """``features`` indices of stage ``i >= 1`` as a ``range``."""
        start = 0 if i == 1 else cls.STAGE_ENDS[i - 2] + 1
        return range(start, cls.STAGE_ENDS[i - 1] + 1)

    def stage(self, i, x):
        if i == 0:
            return self.maxpool(self.conv1(x))
        for j in self.stage_range(i):
            x = self.features[j](x)
        return x

    def tail(self, x):
        return self.conv_last(x)
