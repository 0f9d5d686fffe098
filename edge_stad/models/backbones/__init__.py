"""2D backbones written for this project (no torchvision): ResNet-18, MobileNetV2, ShuffleNetV2.

Each is a :class:`StagedBackbone` whose stage outputs are the points AMMA fuses motion into; they are
built by name through :func:`edge_stad.models.registry.create_backbone` (kind ``"2d"``).
"""
from edge_stad.models.backbones.base import StagedBackbone
from edge_stad.models.backbones.mobilenetv2 import MobileNetV2
from edge_stad.models.backbones.resnet import ResNet18
from edge_stad.models.backbones.shufflenetv2 import ShuffleNetV2

# Names the authors' code and configs use.
ALIASES = {"resnet_18": "resnet18", "resnet": "resnet18", "mobile_v2": "mobilenetv2", "shuffle_v2": "shufflenetv2"}

__all__ = ["ALIASES", "StagedBackbone", "ResNet18", "MobileNetV2", "ShuffleNetV2"]
