"""A PyTorch flow-fusion model behind the SSD backend interface of :mod:`edge_stad.eval.predict_ssd`:
the same preprocessing as every engine (NumPy normalisation of uint8 frames), host decoding."""
import torch

from edge_stad.torch_backends.base import TorchModelBackend


class TorchSSDBackend(TorchModelBackend):
    kind = "ssd"

    @torch.no_grad()
    def detect(self, frames):
        """uint8 BGR frames ``(N, T, H, W, 3)`` -> ``loc (N, P, 4)``, ``conf (N, P, C+1)`` NumPy arrays."""
        out = self.model(self._clips(frames))
        return out["loc"].cpu().numpy(), out["conf"].cpu().numpy()
