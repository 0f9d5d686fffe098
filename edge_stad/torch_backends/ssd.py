"""A PyTorch flow-fusion model behind the SSD backend interface of :mod:`edge_stad.eval.predict_ssd`:
the same preprocessing as every engine (NumPy normalisation of uint8 frames), host decoding."""
import numpy as np
import torch

from edge_stad.preprocess import normalize_clip


class TorchSSDBackend:
    kind = "ssd"
    manifest = None
    labels = ()

    def __init__(self, model):
        self.model = model
        self.config = model.config
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def detect(self, frames):
        """uint8 BGR frames ``(N, T, H, W, 3)`` -> ``loc (N, P, 4)``, ``conf (N, P, C+1)`` NumPy arrays."""
        clips = torch.from_numpy(np.stack([normalize_clip(list(clip)) for clip in frames])).to(self.device)
        out = self.model(clips)
        return out["loc"].cpu().numpy(), out["conf"].cpu().numpy()
