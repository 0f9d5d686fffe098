"""PyTorch models behind the backend interfaces of :mod:`edge_stad.eval.predict` (AMMA: tubelet
windows) and :mod:`edge_stad.eval.predict_frames` (MENet: frame by frame).

The reference for every exported engine: same preprocessing (NumPy normalisation of
uint8 frames), the model's own stream calls, host decoding.
"""
import torch

from edge_stad.core.tubelet_decode import decode
from edge_stad.model_config import SNIPPET, SSD
from edge_stad.torch_backends.base import TorchModelBackend


class TorchBackend(TorchModelBackend):
    kind = "tubelet"
    device_resident = False
    link_matrices = None
    decodes_in_graph = False

    @torch.no_grad()
    def encode(self, frames):
        """uint8 BGR clips ``(N, n, H, W, 3)`` -> ``(feat, wh)`` NumPy arrays."""
        feat, wh = self.model.encode(self._clips(frames))
        return feat.cpu().numpy(), wh.cpu().numpy()

    @torch.no_grad()
    def head(self, feats, whs):
        out = self.model.head(torch.from_numpy(feats).to(self.device), torch.from_numpy(whs).to(self.device))
        return tuple(out[k].cpu().numpy() for k in ("hm", "mov", "wh"))

    def detect(self, feats, whs, reference_y_rounding=False):
        return decode(*self.head(feats, whs), reference_y_rounding=reference_y_rounding)


class TorchFrameBackend(TorchModelBackend):
    """A MENet model: ``encode_3d`` on the T-frame clip (cached, refreshed every s frames) and
    ``detect`` per frame on the latest frames and that cached feature -> the raw region map."""

    kind = "frame"

    @torch.no_grad()
    def encode_3d(self, frames):
        """uint8 BGR clips ``(N, T, H, W, 3)`` -> 3D-branch features ``(N, C3, h, w)``."""
        return self.model.encode_3d(self._clips(frames)).cpu().numpy()

    @torch.no_grad()
    def detect(self, frames, feat3d):
        """uint8 BGR latest frames ``(N, S, H, W, 3)`` + ``encode_3d``'s features -> region ``(N, A(5+C), h, w)``."""
        return self.model.detect(self._clips(frames), torch.from_numpy(feat3d).to(self.device)).cpu().numpy()


def torch_backend(model):
    """The backend that runs ``model`` (AMMA, MENet, STMA or flow fusion) the way its engines do."""
    if model.config["name"] in SNIPPET:
        from edge_stad.torch_backends.snippet import TorchSnippetBackend

        return TorchSnippetBackend(model)
    if model.config["name"] in SSD:
        from edge_stad.torch_backends.ssd import TorchSSDBackend

        return TorchSSDBackend(model)
    return TorchFrameBackend(model) if model.config["name"].startswith("menet") else TorchBackend(model)
