"""What every PyTorch backend shares: the model, its config and device, and the engines' preprocessing."""
import numpy as np
import torch

from edge_stad.preprocess import normalize_clip


class TorchModelBackend:
    """A PyTorch ``model`` (in eval mode, on its device) behind a backend contract of
    :mod:`edge_stad.engines.protocols`; ``manifest`` None, ``labels`` set by whoever opened it."""

    manifest = None
    labels = ()

    def __init__(self, model):
        self.model = model
        self.config = model.config
        self.device = next(model.parameters()).device

    def _clips(self, frames):
        """uint8 BGR clips ``(N, T, H, W, 3)`` -> normalised ``(N, 3T, H, W)`` on the model's device, as every
        engine's graph normalises them (NumPy, :func:`edge_stad.preprocess.normalize_clip`)."""
        return torch.from_numpy(np.stack([normalize_clip(list(clip)) for clip in frames])).to(self.device)
