"""Darknet 2D detectors for MENet's key-frame branch: YOLOv2 on Darknet-19, and YOLOv2-tiny.

Both take ``(B, C_in, H, W)`` - C_in = 3 for the key frame plus one channel per SRM map
(6 in MENet) - and return the stride-32 map of their final 1x1 conv (COCO: 425 = 5 anchors
x 85), which MENet concatenates with the 3D branch as YOWO does. Layers are declared in
the order of Darknet's ``yolov2.cfg`` / ``yolov2-tiny.cfg``, so a ``.weights`` reader can
fill the convolutions in ``modules()`` order.
"""
import torch
import torch.nn.functional as F
from torch import nn

# Darknet cfg layouts: (filters, kernel) convs with BN + leaky ReLU; "M" = 2x2/2 max-pool,
# "m" = 2x2/1 max-pool (YOLOv2-tiny's sixth pool, which keeps the stride at 32).
DARKNET19_TO_16 = ((32, 3), "M", (64, 3), "M", (128, 3), (64, 1), (128, 3), "M", (256, 3), (128, 1), (256, 3), "M",
                   (512, 3), (256, 1), (512, 3), (256, 1), (512, 3))
# Darknet-19's last stage, then YOLOv2's two 3x3 detection convs.
DARKNET19_TO_32 = ("M", (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3), (1024, 3), (1024, 3))
YOLOV2_TINY = ((16, 3), "M", (32, 3), "M", (64, 3), "M", (128, 3), "M", (256, 3), "M", (512, 3), "m", (1024, 3),
               (512, 3))
PASSTHROUGH_CHANNELS = 64
COCO_CHANNELS = 425


def conv_bn_leaky(inp, oup, kernel_size):
    return nn.Sequential(nn.Conv2d(inp, oup, kernel_size, 1, kernel_size // 2, bias=False), nn.BatchNorm2d(oup),
                         nn.LeakyReLU(0.1, inplace=True))


class MaxPoolStride1(nn.Module):
    """Darknet's 2x2 max-pool with stride 1: the window overhangs the right and bottom edges, which count once."""

    def forward(self, x):
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)


def darknet_layers(spec, in_channels):
    """Modules for a cfg ``spec`` (see above) and the channel count they end with."""
    layers = []
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif item == "m":
            layers.append(MaxPoolStride1())
        else:
            layers.append(conv_bn_leaky(in_channels, *item))
            in_channels = item[0]
    return layers, in_channels


def darknet_reorg(x, stride=2):
    """YOLOv2's passthrough ``reorg`` exactly as Darknet computes it, as one reshape/permute/reshape.

    Darknet's ``reorg_cpu`` reads the ``(C, H, W)`` buffer as if it were ``(C/s^2, sH, sW)`` and
    gathers each s x s block of *that* image into channels, block offset outermost; the result
    is then read as ``(s^2 C, H/s, W/s)``. This is not ``pixel_unshuffle`` (channel outermost)
    nor the space-to-depth YOWO's PyTorch port uses (which regroups true neighbours); COCO
    ``yolo.weights`` were trained with this ordering.
    """
    b, c, h, w = x.shape
    x = x.reshape(b, c // (stride * stride), h, stride, w, stride).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, c * stride * stride, h // stride, w // stride)


class _Detector2D(nn.Module):
    """Shared input check: ``(B, in_channels, H, W)`` with H and W multiples of the stride, 32."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels

    def check(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"{type(self).__name__} expects (B, {self.in_channels}, H, W) with H and W multiples "
                             f"of 32, got {tuple(x.shape)}")


class Darknet19YOLOv2(_Detector2D):
    """YOLOv2 (COCO ``yolov2.cfg``): Darknet-19 + two 3x3 convs, passthrough from the stride-16 map, 1x1 output.

    The passthrough reduces the last stride-16 feature (512) to 64 channels and reorganises
    it to stride 32 (256 channels); it is concatenated *before* the deep 1024 channels, as
    Darknet's ``route -1,-4`` does, then a 3x3 conv and the 1x1 output conv (with bias).
    """

    def __init__(self, in_channels=3, out_channels=COCO_CHANNELS):
        super().__init__(in_channels, out_channels)
        layers, fine = darknet_layers(DARKNET19_TO_16, in_channels)
        self.stage16 = nn.Sequential(*layers)
        layers, deep = darknet_layers(DARKNET19_TO_32, fine)
        self.stage32 = nn.Sequential(*layers)
        self.passthrough = conv_bn_leaky(fine, PASSTHROUGH_CHANNELS, 1)
        self.fuse = conv_bn_leaky(4 * PASSTHROUGH_CHANNELS + deep, deep, 3)
        self.conv_out = nn.Conv2d(deep, out_channels, 1)

    def forward(self, x):
        self.check(x)
        fine = self.stage16(x)
        routed = torch.cat((darknet_reorg(self.passthrough(fine)), self.stage32(fine)), 1)
        return self.conv_out(self.fuse(routed))


class YOLOv2Tiny(_Detector2D):
    """YOLOv2-tiny (COCO ``yolov2-tiny.cfg``): eight 3x3 convs, six max-pools (the last of stride 1), 1x1 output."""

    def __init__(self, in_channels=3, out_channels=COCO_CHANNELS):
        super().__init__(in_channels, out_channels)
        layers, channels = darknet_layers(YOLOV2_TINY, in_channels)
        self.features = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x):
        self.check(x)
        return self.conv_out(self.features(x))
