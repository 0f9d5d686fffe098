"""AMMA backbones: an RGB backbone plus a partial copy fed with micro-motion, fused laterally.

After each of the first ``fusion_stages`` stages the RGB feature becomes
``w * rgb + (1 - w) * motion`` with one learnable scalar ``w`` per fusion point
(``rgb_weight<i>``, initialised to 0.6, unconstrained, as in the reference). The
fusion is uni-lateral: the motion stream never sees RGB features. Module names
follow the authors' code so that their checkpoints load by name.
"""
import torch
from torch import nn

from edge_stad.errors import ConfigError
from edge_stad.models.backbones.mobilenetv2 import MobileNetV2, init_mobilenetv2, mobilenetv2_features
from edge_stad.models.backbones.resnet import BN_MOMENTUM, ResNet18, resnet_layer
from edge_stad.models.backbones.shufflenetv2 import ShuffleNetV2, conv_bn_relu, shufflenetv2_features

FUSION_WEIGHT_INIT = 0.6
FEATURE_CHANNELS = 512  # what every AMMA backbone hands to the decoder


class LateralFusion:
    """Mixin for a :class:`StagedBackbone` subclass that defines ``motion_stage(i, m)``."""

    #: default number of fused stages (the reference fuses after the first three)
    DEFAULT_FUSION_STAGES = 3

    def _init_fusion(self, fusion_stages):
        if not 0 <= fusion_stages <= self.num_stages:
            raise ConfigError(f"{type(self).__name__} has {self.num_stages} stages; fusion_stages must be in "
                              f"0..{self.num_stages}, got {fusion_stages}")
        self.fusion_stages = fusion_stages
        for i in range(1, fusion_stages + 1):
            self.register_parameter(f"rgb_weight{i}", nn.Parameter(torch.full((1,), FUSION_WEIGHT_INIT)))

    def neck(self, x):
        return x

    #: attribute names of the motion stream's modules (for per-component profiling)
    motion_modules = ()
    #: the motion stream's first convolution (stride 2) and its BatchNorm, as submodule paths
    MOTION_STEM = None

    def forward_motion(self, motion):
        """Run only the motion stream (it never depends on RGB); returns its last fused stage output."""
        for i in range(self.fusion_stages):
            motion = self.motion_stage(i, motion)
        return motion

    def forward(self, rgb, motion=None):
        if self.fusion_stages and motion is None:
            raise ValueError("this backbone fuses micro-motion: pass the motion image")
        x, m = rgb, motion
        for i in range(self.num_stages):
            x = self.stage(i, x)
            if i < self.fusion_stages:
                m = self.motion_stage(i, m)
                w = getattr(self, f"rgb_weight{i + 1}")
                x = w * x + (1.0 - w) * m
        return self.neck(self.tail(x))


class AMMAResNet18(LateralFusion, ResNet18):
    """Reference ``AMMA_ResNet(18, 'TTTFF')``: motion stem ``conv1_5``/``bn1_5``/``maxpool_diff``,
    then ``resnext_layer<i>`` copies of ``layer<i>`` (fusion after stem, layer1, layer2 by default)."""

    MOTION_STEM = ("conv1_5", "bn1_5")

    def __init__(self, fusion_stages=3, motion_channels=3):
        super().__init__()
        self._init_fusion(fusion_stages)
        names = []
        if fusion_stages >= 1:
            self.conv1_5 = nn.Conv2d(motion_channels, 64, 7, 2, 3, bias=False)
            self.bn1_5 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
            self.maxpool_diff = nn.MaxPool2d(3, 2, 1)
            names += ["conv1_5", "bn1_5", "maxpool_diff"]
        for i in range(1, fusion_stages):
            inplanes, planes = self.stage_channels[i - 1], self.stage_channels[i]
            setattr(self, f"resnext_layer{i}", resnet_layer(inplanes, planes, stride=1 if i == 1 else 2))
            names.append(f"resnext_layer{i}")
        self.motion_modules = tuple(names)

    def motion_stage(self, i, m):
        if i == 0:
            return self.maxpool_diff(self.relu(self.bn1_5(self.conv1_5(m))))
        return getattr(self, f"resnext_layer{i}")(m)


class AMMAMobileNetV2(LateralFusion, MobileNetV2):
    """Reference ``AMMA_MobileNetV2``: ``features_pa`` copies the fused prefix of ``features``
    (the reference also builds indices 7-10, which never run: they are not built here),
    and ``shrink`` (1x1 conv + BN, no activation) maps 1280 to 512 channels."""

    MOTION_STEM = ("features_pa.0.0", "features_pa.0.1")

    def __init__(self, fusion_stages=3, motion_channels=3):
        super().__init__()
        self._init_fusion(fusion_stages)
        if fusion_stages:
            used = self.STAGE_ENDS[fusion_stages - 1] + 1
            self.features_pa = nn.Sequential(*mobilenetv2_features(motion_channels)[:used])
            self.motion_modules = ("features_pa",)
        self.shrink = nn.Sequential(nn.Conv2d(self.out_channels, FEATURE_CHANNELS, 1, bias=False),
                                    nn.BatchNorm2d(FEATURE_CHANNELS))
        init_mobilenetv2(self)

    def motion_stage(self, i, m):
        for j in self.stage_range(i):
            m = self.features_pa[j](m)
        return m

    def neck(self, x):
        return self.shrink(x)


class AMMAShuffleNetV2(LateralFusion, ShuffleNetV2):
    """Reference ``AMMA_ShuffleNetV2``: motion stem ``conv1_mm``/``maxpool_mm`` and ``features_mm``
    copying the fused prefix of ``features``; ``shrink`` maps 1024 to 512 channels."""

    MOTION_STEM = ("conv1_mm.0", "conv1_mm.1")

    def __init__(self, fusion_stages=3, motion_channels=3):
        super().__init__()
        self._init_fusion(fusion_stages)
        names = []
        if fusion_stages >= 1:
            self.conv1_mm = conv_bn_relu(motion_channels, self.stage_channels[0], 3, 2)
            self.maxpool_mm = nn.MaxPool2d(3, 2, 1)
            names += ["conv1_mm", "maxpool_mm"]
        if fusion_stages >= 2:
            used = self.STAGE_ENDS[fusion_stages - 2] + 1
            self.features_mm = nn.Sequential(*shufflenetv2_features()[:used])
            names.append("features_mm")
        self.motion_modules = tuple(names)
        self.shrink = nn.Sequential(nn.Conv2d(self.out_channels, FEATURE_CHANNELS, 1, bias=False),
                                    nn.BatchNorm2d(FEATURE_CHANNELS))

    def motion_stage(self, i, m):
        if i == 0:
            return self.maxpool_mm(self.conv1_mm(m))
        for j in self.stage_range(i):
            m = self.features_mm[j](m)
        return m

    def neck(self, x):
        return self.shrink(x)

