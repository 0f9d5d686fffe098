"""Helpers shared by the model tests: a BN-calibrated tiny AMMA and the backbones it comes in."""
import torch

from edge_stad.models import create_model


def calibrate_bn(model, x):
    """Give a randomly initialised model realistic activations: BN running stats from one batch.

    Without this, random deep nets collapse to outputs ~1e-8 and any tolerance passes.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


BACKBONES = ["resnet18", "mobilenetv2", "shufflenetv2"]


def tiny_model(backbone, K=2, size=64, decoder="conv", seed=0, num_classes=4):
    torch.manual_seed(seed)
    model = create_model("amma", backbone=backbone, K=K, num_classes=num_classes, input_size=size, decoder=decoder)
    return calibrate_bn(model, torch.randn(2, K, 15, size, size))
