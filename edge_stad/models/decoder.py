"""AMMA decoder (reference ``deconv_layer``): one 3x3 stage, a 2x transposed conv, a 2x resize.

``deconv_layers`` = [3x3 conv 512->256 (``dcn``: modulated deformable, as the reference;
``conv``: plain, which exports everywhere incl. TensorRT 8.5), BN, ReLU,
ConvTranspose 4x4/2 (bilinear init, no bias), BN, ReLU]; then a nearest 2x resize to
the head grid (input / 8). The reference hard-codes that resize as ``[36, 36]``, which
ties it to 288x288 input; a 2x factor is the same there and right for other sizes.
"""
import math

import torch.nn.functional as F
from torch import nn

from edge_stad.errors import ConfigError
from edge_stad.models.deform_conv import ModulatedDeformConv2d

DECODERS = ("conv", "dcn")
BN_MOMENTUM = 0.1


def bilinear_upsampling_init(deconv):
    """Initialise a transposed conv as bilinear upsampling (CenterNet's ``fill_up_weights``)."""
    w = deconv.weight.data
    f = math.ceil(w.size(2) / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    for i in range(w.size(2)):
        for j in range(w.size(3)):
            w[0, 0, i, j] = (1 - math.fabs(i / f - c)) * (1 - math.fabs(j / f - c))
    w[1:, 0] = w[0, 0]


class Decoder(nn.Module):
    def __init__(self, kind="conv", in_channels=512, channels=256):
        super().__init__()
        if kind not in DECODERS:
            raise ConfigError(f"decoder must be one of {DECODERS}, got {kind!r}")
        self.kind = kind
        if kind == "dcn":
            first = ModulatedDeformConv2d(in_channels, channels, 3, 1, 1)
        else:
            first = nn.Conv2d(in_channels, channels, 3, 1, 1)
            bound = 1.0 / math.sqrt(in_channels * 9)  # same init as the deformable version
            nn.init.uniform_(first.weight, -bound, bound)
            nn.init.zeros_(first.bias)
        up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, output_padding=0, bias=False)
        bilinear_upsampling_init(up)
        self.deconv_layers = nn.Sequential(
            first, nn.BatchNorm2d(channels, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
            up, nn.BatchNorm2d(channels, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return F.interpolate(self.deconv_layers(x), scale_factor=2.0, mode="nearest")
