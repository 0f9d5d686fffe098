"""PyTorch AMMA on a CUDA device with edge_stad's kernels: the GPU path for machines without TensorRT.

A frame is uploaded once as uint8 and stays on the device: ``preprocess.cu`` resizes and
normalises it into the planar layout, ``micro_motion.cu`` turns a clip of them into the
motion image, the model's backbone, decoder and head run in PyTorch, and the K-deep feature
FIFO holds device tensors. The decode (peak filter and TopK, the exact twin of the host
decode) runs on the device too, so the only copy back per window is its ``(N, 4K+2)``
tubelet rows. :class:`~edge_stad.runtime.stream.Runtime` recognises such a backend by its
``device_resident`` flag and hands it frames and features instead of arrays.

``ops`` does the two kernels' work: :class:`CudaTensorOps` (the kernels, on PyTorch's
current stream) or :class:`ReferenceTensorOps` (their NumPy references: the same path on
any device, which is how the CPU test suite checks this backend's plumbing).
"""
import numpy as np
import torch

from edge_stad.core.tubelet_decode import TOP_N
from edge_stad.export.graphs import decode_rows, inference_copy
from edge_stad.kernels import reference
from edge_stad.kernels.ops import CudaKernels, CudaLinkMatrices
from edge_stad.torch_backends.streaming import TorchBackend


class ReferenceTensorOps:
    """The kernels' NumPy references on tensors of any device."""

    def preprocess(self, frame, size):
        out = reference.preprocess(frame.cpu().numpy()[None], size)
        return torch.from_numpy(out).to(frame.device)

    def micro_motion(self, clips, mm):
        out = reference.micro_motion(clips.cpu().numpy(), mm.shallow_conv.weight.detach().cpu().numpy(),
                                     mm.shallow_conv.bias.detach().cpu().numpy(), mm.pairs, mm.eps, mm.pool)
        return torch.from_numpy(out).to(clips.device)


class CudaTensorOps:
    """The CUDA kernels on PyTorch CUDA tensors, queued on PyTorch's current stream (cuda-python driver)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.kernels = CudaKernels(self.device.index or 0, driver="cuda-python")
        self._weights = {}

    def _stream(self):
        return torch.cuda.current_stream(self.device).cuda_stream

    def preprocess(self, frame, size):
        frame = frame.contiguous()
        out = torch.empty((3, *size), dtype=torch.float32, device=self.device)
        self.kernels.preprocess(frame.data_ptr(), 1, frame.shape[:2], frame.stride(0), out.data_ptr(), size,
                                stream=self._stream())
        return out

    def micro_motion(self, clips, mm):
        if id(mm) not in self._weights:
            conv = mm.shallow_conv
            self._weights[id(mm)] = (conv.weight.detach().float().contiguous(), conv.bias.detach().float().contiguous())
        weight, bias = self._weights[id(mm)]
        clips = clips.float().contiguous()
        n, _, h, w = clips.shape
        out = torch.empty((n, len(mm.pairs), h, w), dtype=torch.float32, device=self.device)
        self.kernels.micro_motion(clips.data_ptr(), n, mm.clip_len, (h, w), weight.data_ptr(), bias.data_ptr(),
                                  mm.pairs, out.data_ptr(), channels=weight.shape[0], kernel_size=weight.shape[-1],
                                  eps=mm.eps, pool=mm.pool, stream=self._stream())
        return out


class TorchCudaBackend(TorchBackend):
    """``model`` on ``device`` with the kernels of ``ops`` (default: :class:`CudaTensorOps`).

    Also a plain array backend (``encode``/``head``/``detect`` of :class:`TorchBackend`), so
    offline evaluation can take it as well.
    """

    device_resident = True

    def __init__(self, model, device="cuda", ops=None):
        super().__init__(inference_copy(model).to(device))
        self.input_size = tuple(self.config["input_size"])
        self.ops = CudaTensorOps(self.device) if ops is None else ops
        #: the linker's IoU matrices on the GPU too (Runtime passes them to its Linkers)
        self.link_matrices = CudaLinkMatrices(self.ops.kernels) if isinstance(self.ops, CudaTensorOps) else None
        h, w = self.model.grid_size
        self.top_n = min(TOP_N, h * w)

    @torch.no_grad()
    def prepare(self, frame):
        """A checked uint8 BGR ``(h, w, 3)`` NumPy frame -> its ``(3, H, W)`` model input on the device."""
        upload = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device, non_blocking=False)
        return self.ops.preprocess(upload, self.input_size)

    @torch.no_grad()
    def encode_prepared(self, clips):
        """Clips as lists of prepared frames, oldest first -> device ``(feat, wh)``, one row per clip."""
        x = torch.stack([torch.cat(list(frames)) for frames in clips])
        motion = self.ops.micro_motion(x, self.model.mm) if self.model.mm is not None else None
        return self.model.encode(x, motion=motion)

    @torch.no_grad()
    def detect_prepared(self, feats, whs):
        """Per window the K feature and size-map tensors, oldest first -> host tubelet rows ``(B, N, 4K+2)``."""
        out = self.model.head(torch.stack([torch.stack(list(f)) for f in feats]),
                              torch.stack([torch.stack(list(w)) for w in whs]))
        return decode_rows(out["hm"], out["mov"], out["wh"], self.top_n, stable=True).cpu().numpy()
