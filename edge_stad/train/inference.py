"""Validation of a PyTorch model during training: the evaluation code, run in eval mode."""
import torch

from edge_stad.train.tasks import task_for


def evaluate_model(model, dataset, split=1, progress=None):
    """Frame-mAP / video-mAP of ``model`` (AMMA or MENet) on the test videos of ``split`` (an ``Evaluation``)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return task_for(model.config["name"]).evaluate(model, dataset, split, progress)
    finally:
        model.train(was_training)
