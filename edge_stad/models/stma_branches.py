"""STMA's two branches (Zhang and Zhao, "Spatio-Temporal Motion Aggregation Network for Video Action
Detection"): Action Recognition (down-sampling, Motion Excitation, Spatio-Temporal Aggregation,
classifier) and Spatial Detection (centre heatmap, movement, size).

Both are split the way streaming needs them: a per-frame part (:meth:`ActionRecognition.downsample`,
:meth:`SpatialDetection.size`), whose output is cached per frame, and a per-window part over the
cached frames (:meth:`ActionRecognition.forward`, :meth:`SpatialDetection.forward`).
"""
import torch
import torch.nn.functional as F
from torch import nn

from edge_stad.models.head import HM_BIAS_INIT
from edge_stad.models.menet import CFAM

# l, t, r, b = relu(conv), in head-grid cells. TTFNet's size output is ``relu(x) * 16`` pixels (4 cells at its
# stride 4); on our grids, where a person is a few cells across, a scale of 4 cells left the GIoU of a model
# overfitting the tiny synthetic set at 0.18 after 150 steps, 2 cells at 0.55 and 1 cell at 0.56 (frame-mAP on
# its training videos 4.8 / 42.7 / 52.7), so 1 cell. The last conv's bias starts at 1: a fresh model predicts
# boxes two cells across.
WH_BIAS_INIT = 1.0


def conv_bn_relu_s2(inp, oup):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, 2, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class MotionExcitation(nn.Module):
    """The paper's eq. (1)-(2), TEA's motion excitation: ``f_m(t) = conv(f(t+1)) - f(t)`` with a zero
    difference for the last frame, spatially average-pooled, a 1x1 conv and a sigmoid give a per-frame
    channel mask ``M``; the output is ``f + f * M``. ``conv`` is TEA's depthwise 3x3 conv.
    """

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.excite = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        """``x (B, L, C, h, w)``, oldest frame first -> the same shape."""
        b, length, c, h, w = x.shape
        later = self.conv(x[:, 1:].reshape(-1, c, h, w)).reshape(b, length - 1, c, h, w)
        diff = torch.cat((later - x[:, :-1], x.new_zeros(b, 1, c, h, w)), 1)
        mask = torch.sigmoid(self.excite(diff.mean((3, 4)).reshape(b * length, c, 1, 1)))
        return x + x * mask.reshape(b, length, c, 1, 1)


class ActionRecognition(nn.Module):
    """Per frame: ``levels`` 3x3 stride-2 Conv-BN-ReLU layers bring the 2D feature to the 3D branch's
    stride (32) and ``channels`` channels. Per window: motion excitation over the ``frames`` cached
    down-sampled features, the excited features flattened over time and concatenated with the 3D
    feature, YOWO's CFAM block (1x1 reduce, 3x3, DANet channel self-attention, 3x3, 1x1) of
    ``fused_channels``, global average pooling and a 1x1 conv to class logits.

    ``motion_excitation=False`` and ``attention=False`` drop those blocks (the paper's Table 2 ablation).
    """

    def __init__(self, in_channels, levels, frames, num_classes, channels=256, fused_channels=512,
                 channels_3d=0, motion_excitation=True, attention=True):
        super().__init__()
        layers = [conv_bn_relu_s2(in_channels if i == 0 else channels, channels) for i in range(levels)]
        self.down = nn.Sequential(*layers)
        self.channels, self.frames = channels, frames
        self.me = MotionExcitation(self.channels) if motion_excitation else None
        self.sta = CFAM(frames * self.channels + channels_3d, fused_channels)
        if not attention:
            self.sta.sc = nn.Identity()
        self.classifier = nn.Conv2d(fused_channels, num_classes, 1)

    def downsample(self, feat):
        """Per frame: ``(N, c, h, w)`` -> ``(N, channels, h / 2^levels, w / 2^levels)``."""
        return self.down(feat)

    def forward(self, acts, feat3d=None):
        """``acts (B, frames, channels, h', w')`` (+ the 3D feature ``(B, C3, h', w')``) -> logits ``(B, C)``."""
        if self.me is not None:
            acts = self.me(acts)
        x = acts.flatten(1, 2)
        if feat3d is not None:
            x = torch.cat((x, feat3d), 1)
        x = self.sta(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1)).flatten(1)


def _head(in_channels, head_conv, out_channels):
    """MOC's head layout: 3x3 conv to ``head_conv``, ReLU, 1x1 conv; biases start at 0."""
    branch = nn.Sequential(nn.Conv2d(in_channels, head_conv, 3, padding=1), nn.ReLU(inplace=True),
                           nn.Conv2d(head_conv, out_channels, 1))
    for m in branch:
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.bias)
    return branch


class SpatialDetection(nn.Module):
    """MOC's branch layout with STMA's outputs. Over the K snippet features stacked on channels (oldest
    first): ``hm`` (one class-agnostic channel, or ``heat_channels`` classes, sigmoid, bias -2.19) and
    ``mov`` (2K: ``dx, dy`` of each frame's centre from the key frame's). Per frame: ``wh`` (``l, t, r,
    b``: distances from the cell to the box sides, in cells).
    """

    def __init__(self, K, channels, head_conv=256, wh_head_conv=256, heat_channels=1):
        super().__init__()
        self.K = K
        self.hm = _head(K * channels, head_conv, heat_channels)
        nn.init.constant_(self.hm[-1].bias, HM_BIAS_INIT)
        self.mov = _head(K * channels, head_conv, 2 * K)
        self.wh = _head(channels, wh_head_conv, 4)
        nn.init.constant_(self.wh[-1].bias, WH_BIAS_INIT)

    def size(self, feat):
        """Per frame: ``(N, c, h, w)`` -> ``l, t, r, b`` ``(N, 4, h, w)``, non-negative."""
        return F.relu(self.wh(feat))

    def forward(self, feats):
        """``feats (B, K, c, h, w)`` -> ``hm (B, 1 or C, h, w)``, ``mov (B, 2K, h, w)``."""
        b, k, c, h, w = feats.shape
        if k != self.K:
            raise ValueError(f"the spatial detection branch was built for K={self.K} frames, got {k}")
        stacked = feats.reshape(b, k * c, h, w)
        return torch.sigmoid(self.hm(stacked)), self.mov(stacked)
