"""Multi-scale detection backbones of SSD-style detectors: six feature maps, finest first.

* :class:`VGGRFB` - RFBNet300's VGG16 (Liu, Huang and Wang, ECCV 2018; ``RFB_Net_vgg.py``):
  SSD's reduced VGG16 (pool3 in ceil mode, pool5 3x3/1, atrous fc6 (dilation 6) and fc7 as
  convolutions, no batch norm), an RFB-a module on conv4_3 (``Norm``, scale 1), and extras: an
  RFB on fc7, two stride-2 RFBs, and two 1x1 + 3x3 (valid) conv pairs. At 300x300 the maps are
  512@38, 1024@19, 512@10, 256@5, 256@3, 256@1 - the channels the flow-fusion paper lists.
* :class:`SSDLite` - the SSDLite neck of MobileNetV2 (Sandler et al. 2018) on this project's
  MobileNetV2 or ShuffleNetV2: taps at stride 16 (MobileNetV2: the 576-channel expansion of
  block 14, as the paper; ShuffleNetV2: stage 3) and stride 32 (the 1x1 tail), then four
  extra blocks (1x1 to half, depthwise 3x3/2, 1x1) of 512, 256, 256 and 128 channels.

Each backbone has ``out_channels`` and ``feature_sizes(h, w)``, the maps' sizes worked out
from the layer arithmetic (no forward pass), which the priors are laid out on.
"""
import torch
from torch import nn

from edge_stad.models.backbones import MobileNetV2, ShuffleNetV2


def _halve(size, ceil=True):
    """Size after a stride-2 layer: 3x3/2 pad 1 convs and ceil-mode pools give ``ceil``, floor pools ``floor``."""
    return (size + 1) // 2 if ceil else size // 2


class BasicConv(nn.Sequential):
    """RFBNet's ``BasicConv``: bias-free conv, BN (eps 1e-5, momentum 0.01), optional ReLU."""

    def __init__(self, inp, out, kernel_size, stride=1, padding=0, dilation=1, relu=True):
        layers = [nn.Conv2d(inp, out, kernel_size, stride, padding, dilation, bias=False),
                  nn.BatchNorm2d(out, eps=1e-5, momentum=0.01)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _RFB(nn.Module):
    def forward(self, x):
        out = self.ConvLinear(torch.cat([b(x) for b in self.branches], 1))
        return torch.relu(out * self.scale + self.shortcut(x))


class BasicRFB(_RFB):
    """RFBNet's ``BasicRFB``: three branches of growing receptive field (dilations ``visual``,
    ``visual + 1``, ``2 visual + 1``), a 1x1 merge, a 1x1 shortcut and ``scale``."""

    def __init__(self, inp, out, stride=1, scale=0.1, visual=1):
        super().__init__()
        self.scale = scale
        inter = inp // 8
        self.branches = nn.ModuleList([
            nn.Sequential(BasicConv(inp, 2 * inter, 1, stride),
                          BasicConv(2 * inter, 2 * inter, 3, 1, visual, visual, relu=False)),
            nn.Sequential(BasicConv(inp, inter, 1),
                          BasicConv(inter, 2 * inter, 3, stride, 1),
                          BasicConv(2 * inter, 2 * inter, 3, 1, visual + 1, visual + 1, relu=False)),
            nn.Sequential(BasicConv(inp, inter, 1),
                          BasicConv(inter, inter // 2 * 3, 3, 1, 1),
                          BasicConv(inter // 2 * 3, 2 * inter, 3, stride, 1),
                          BasicConv(2 * inter, 2 * inter, 3, 1, 2 * visual + 1, 2 * visual + 1, relu=False)),
        ])
        self.ConvLinear = BasicConv(6 * inter, out, 1, relu=False)
        self.shortcut = BasicConv(inp, out, 1, stride, relu=False)


class BasicRFBa(_RFB):
    """RFBNet's ``BasicRFB_a`` on conv4_3: four branches with 1x3 / 3x1 kernels and dilations 1, 3, 3, 5."""

    def __init__(self, inp, out, stride=1, scale=0.1):
        super().__init__()
        self.scale = scale
        inter = inp // 4
        self.branches = nn.ModuleList([
            nn.Sequential(BasicConv(inp, inter, 1), BasicConv(inter, inter, 3, 1, 1, relu=False)),
            nn.Sequential(BasicConv(inp, inter, 1), BasicConv(inter, inter, (3, 1), 1, (1, 0)),
                          BasicConv(inter, inter, 3, 1, 3, 3, relu=False)),
            nn.Sequential(BasicConv(inp, inter, 1), BasicConv(inter, inter, (1, 3), stride, (0, 1)),
                          BasicConv(inter, inter, 3, 1, 3, 3, relu=False)),
            nn.Sequential(BasicConv(inp, inter // 2, 1), BasicConv(inter // 2, inter // 4 * 3, (1, 3), 1, (0, 1)),
                          BasicConv(inter // 4 * 3, inter, (3, 1), stride, (1, 0)),
                          BasicConv(inter, inter, 3, 1, 5, 5, relu=False)),
        ])
        self.ConvLinear = BasicConv(4 * inter, out, 1, relu=False)
        self.shortcut = BasicConv(inp, out, 1, stride, relu=False)


# SSD's VGG16 to conv5_3: channels, 'M' floor max-pool, 'C' ceil max-pool.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)
CONV4_3 = 23   # ``base`` index after conv4_3's ReLU: the first source


def vgg_base():
    layers, inp = [], 3
    for v in VGG16:
        if v in ("M", "C"):
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=v == "C"))
        else:
            layers += [nn.Conv2d(inp, v, 3, padding=1), nn.ReLU(inplace=True)]
            inp = v
    layers += [nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True),
               nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True)]
    return layers


class VGGRFB(nn.Module):
    """RFBNet300's VGG16 + RFB backbone: six maps (512, 1024, 512, 256, 256, 256 channels)."""

    out_channels = (512, 1024, 512, 256, 256, 256)

    def __init__(self):
        super().__init__()
        self.base = nn.ModuleList(vgg_base())
        self.Norm = BasicRFBa(512, 512, stride=1, scale=1.0)
        self.extras = nn.ModuleList([
            BasicRFB(1024, 1024, scale=1.0, visual=2),
            BasicRFB(1024, 512, stride=2, scale=1.0, visual=2),
            BasicRFB(512, 256, stride=2, scale=1.0, visual=2),
            BasicConv(256, 128, 1), BasicConv(128, 256, 3),
            BasicConv(256, 128, 1), BasicConv(128, 256, 3),
        ])
        self.sources = (0, 1, 2, 4, 6)   # extras whose outputs feed the head (RFBNet: k < 3 or k even)

    @staticmethod
    def feature_sizes(h, w):
        def sizes(s):
            s = _halve(_halve(s, False), False)      # pool1, pool2
            s = _halve(s)                            # pool3 (ceil): conv4_3
            out = [s]
            s = _halve(s, False)                     # pool4: fc7
            out.append(s)
            for _ in range(2):                       # stride-2 RFBs
                s = _halve(s)
                out.append(s)
            for _ in range(2):                       # valid 3x3 convs
                s -= 2
                out.append(s)
            return out
        return list(zip(sizes(h), sizes(w)))

    def forward(self, x):
        for layer in self.base[:CONV4_3]:
            x = layer(x)
        maps = [self.Norm(x)]
        for layer in self.base[CONV4_3:]:
            x = layer(x)
        for k, layer in enumerate(self.extras):
            x = layer(x)
            if k in self.sources:
                maps.append(x)
        return maps


def conv_bn_relu6(inp, out, kernel_size=1, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(inp, out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


def ssdlite_extra(inp, out):
    """SSDLite's extra block: 1x1 to ``out/2``, depthwise 3x3 stride 2, 1x1 to ``out`` (BN + ReLU6 each)."""
    mid = out // 2
    return nn.Sequential(conv_bn_relu6(inp, mid), conv_bn_relu6(mid, mid, 3, 2, groups=mid), conv_bn_relu6(mid, out))


EXTRA_CHANNELS = (512, 256, 256, 128)


class SSDLite(nn.Module):
    """SSDLite neck on MobileNetV2 or ShuffleNetV2 (``backbone``): maps at strides 16, 32, 64, 128, 256, 512."""

    def __init__(self, backbone="mobilenetv2"):
        super().__init__()
        if backbone == "mobilenetv2":
            self.body = MobileNetV2()
            taps = (6 * MobileNetV2.stage_channels[3], MobileNetV2.out_channels)    # 576, 1280
        else:
            self.body = ShuffleNetV2()
            taps = (ShuffleNetV2.stage_channels[2], ShuffleNetV2.out_channels)      # 232, 1024
        self.kind = backbone
        self.extras = nn.ModuleList()
        inp = taps[1]
        for out in EXTRA_CHANNELS:
            self.extras.append(ssdlite_extra(inp, out))
            inp = out
        self.out_channels = taps + EXTRA_CHANNELS

    @staticmethod
    def feature_sizes(h, w):
        def sizes(s):
            for _ in range(4):
                s = _halve(s)
            out = [s]
            for _ in range(5):
                s = _halve(s)
                out.append(s)
            return out
        return list(zip(sizes(h), sizes(w)))

    def _taps(self, x):
        body = self.body
        if self.kind == "mobilenetv2":
            for j in range(14):                           # to block 13 (96 channels, stride 16)
                x = body.features[j](x)
            block = body.features[14].conv                # block 14: expansion, depthwise /2, projection
            first = block[0](x)                           # the 576-channel expansion SSDLite taps
            x = first
            for layer in block[1:]:
                x = layer(x)
            for j in range(15, len(body.features)):
                x = body.features[j](x)
            return first, x
        for i in range(3):
            x = body.stage(i, x)
        first = x
        return first, body.tail(body.stage(3, x))

    def forward(self, x):
        maps = list(self._taps(x))
        x = maps[-1]
        for block in self.extras:
            x = block(x)
            maps.append(x)
        return maps
