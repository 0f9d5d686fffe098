"""Validation of a PyTorch model during training: the evaluation code, run in eval mode."""
from edge_stad.engines.torch_backend import TorchBackend
from edge_stad.eval.predict import evaluate_backend


def evaluate_model(model, dataset, split=1, mode="stream", progress=None):
    """Frame-mAP / video-mAP of ``model`` on the test videos of ``split`` (an ``Evaluation``)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_backend(TorchBackend(model), dataset, split, mode, progress=progress)
    finally:
        model.train(was_training)
