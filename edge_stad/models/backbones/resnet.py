"""ResNet-18, laid out like torchvision / CenterNet so that their weights load by name."""
from torch import nn

from edge_stad.models.backbones.base import StagedBackbone

BN_MOMENTUM = 0.1


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes, momentum=BN_MOMENTUM),
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


def resnet_layer(inplanes, planes, blocks=2, stride=1):
    return nn.Sequential(BasicBlock(inplanes, planes, stride), *[BasicBlock(planes, planes) for _ in range(blocks - 1)])


class ResNet18(StagedBackbone):
    """ResNet-18 without its classifier.

    Stages (the points AMMA can fuse after): 0 = stem (conv1, bn1, relu, maxpool) 64@/4,
    1 = layer1 64@/4, 2 = layer2 128@/8, 3 = layer3 256@/16, 4 = layer4 512@/32.
    """

    stage_channels = (64, 64, 128, 256, 512)
    out_channels = 512

    def __init__(self, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = resnet_layer(64, 64)
        self.layer2 = resnet_layer(64, 128, stride=2)
        self.layer3 = resnet_layer(128, 256, stride=2)
        self.layer4 = resnet_layer(256, 512, stride=2)

    def stage(self, i, x):
        if i == 0:
            return self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return getattr(self, f"layer{i}")(x)
