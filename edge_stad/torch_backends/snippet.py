"""An STMA model behind the snippet-backend interface of :mod:`edge_stad.eval.predict_snippets`.

The reference for the engines a later build will export: NumPy normalisation of uint8 frames, the
model's own stream calls (``encode``, ``encode_3d``, ``head``), host decoding.
"""
import numpy as np
import torch

from edge_stad.core.snippet_decode import TOP_N, decode_snippet
from edge_stad.preprocess import normalize_clip
from edge_stad.torch_backends.base import TorchModelBackend


def _numpy(x):
    return None if x is None else x.cpu().numpy()


class TorchSnippetBackend(TorchModelBackend):
    kind = "snippet"

    def __init__(self, model, top_n=TOP_N):
        super().__init__(model)
        self.top_n = top_n

    def _tensor(self, x):
        return None if x is None else torch.from_numpy(x).to(self.device)

    @torch.no_grad()
    def encode(self, frames):
        """uint8 BGR frames ``(N, H, W, 3)`` -> ``(feat, wh, act)`` NumPy arrays (``act`` may be None)."""
        x = np.stack([normalize_clip([f]) for f in frames])
        return tuple(_numpy(o) for o in self.model.encode(self._tensor(x)))

    @torch.no_grad()
    def encode_3d(self, frames):
        """uint8 BGR clips ``(N, T, H, W, 3)`` -> 3D features ``(N, C3, h, w)``."""
        return _numpy(self.model.encode_3d(self._clips(frames)))

    @torch.no_grad()
    def head(self, feats, whs, acts=None, feat3d=None):
        out = self.model.head(*(self._tensor(x) for x in (feats, whs, acts, feat3d)))
        return {k: _numpy(v) for k, v in out.items()}

    def detect(self, feats, whs, acts=None, feat3d=None):
        return decode_snippet(self.head(feats, whs, acts, feat3d), self.top_n)
