"""A PyTorch AMMA model behind the backend interface of :mod:`edge_stad.eval.predict`.

The reference for every exported engine: same preprocessing (NumPy normalisation of
uint8 frames), the model's own ``encode``/``head``, host decoding.
"""
import numpy as np
import torch

from edge_stad.preprocess import normalize_clip
from edge_stad.runtime.decode import decode


class TorchBackend:
    def __init__(self, model):
        self.model = model
        self.config = model.config
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def encode(self, frames):
        """uint8 BGR clips ``(N, n, H, W, 3)`` -> ``(feat, wh)`` NumPy arrays."""
        clips = np.stack([normalize_clip(list(clip)) for clip in frames])
        feat, wh = self.model.encode(torch.from_numpy(clips).to(self.device))
        return feat.cpu().numpy(), wh.cpu().numpy()

    @torch.no_grad()
    def head(self, feats, whs):
        out = self.model.head(torch.from_numpy(feats).to(self.device), torch.from_numpy(whs).to(self.device))
        return tuple(out[k].cpu().numpy() for k in ("hm", "mov", "wh"))

    def detect(self, feats, whs, reference_y_rounding=False):
        return decode(*self.head(feats, whs), reference_y_rounding=reference_y_rounding)
