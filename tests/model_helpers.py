"""Helpers shared by the model tests."""
import torch


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
