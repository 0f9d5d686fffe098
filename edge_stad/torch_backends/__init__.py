"""Backends that run a PyTorch model itself (a checkpoint, no engine): the reference every engine is
compared with, and the trainer's validation.

* :mod:`~edge_stad.torch_backends.streaming`: AMMA (tubelet windows) and MENet (frame by frame);
* :mod:`~edge_stad.torch_backends.cuda`: AMMA on a GPU with edge_stad's CUDA kernels (preprocessing,
  micro-motion, linking matrices);
* :mod:`~edge_stad.torch_backends.snippet`: STMA (snippet windows);
* :mod:`~edge_stad.torch_backends.ssd`: the flow-fusion SSDs (frame by frame, each pair's flow once).

They implement the contracts of :mod:`edge_stad.engines.protocols`.
"""
import warnings

from edge_stad.engines.onnxruntime_backend import is_frame_model
from edge_stad.errors import EngineError
from edge_stad.model_config import FAMILIES, SNIPPET, SSD


def open_checkpoint(path, device=0):
    """The PyTorch model of the checkpoint ``path`` behind the backend interface (``manifest`` None, ``labels`` from
    the checkpoint): on a GPU with edge_stad's CUDA kernels where they load."""
    import torch

    from edge_stad.models.checkpoint import load_checkpoint, read_checkpoint
    from edge_stad.torch_backends.streaming import TorchBackend, TorchFrameBackend

    model = load_checkpoint(path)
    if model.config["name"] not in FAMILIES:   # the distillation's classifier, the score fusion
        raise EngineError(f"{path} holds a {model.config['name']} model, not a detector the Runtime streams "
                          f"({', '.join(FAMILIES)})")
    target = f"cuda:{device}" if torch.cuda.is_available() else "cpu"
    opened = None
    if is_frame_model(model.config):
        opened = TorchFrameBackend(model.to(target))
    elif model.config["name"] in SNIPPET:
        from edge_stad.torch_backends.snippet import TorchSnippetBackend

        opened = TorchSnippetBackend(model.to(target))
    elif model.config["name"] in SSD:
        from edge_stad.torch_backends.ssd import TorchSSDBackend

        opened = TorchSSDBackend(model.to(target))
    elif torch.cuda.is_available():
        opened = _torch_cuda_backend(model, target)
    if opened is None:
        opened = TorchBackend(model.to(target))
    opened.manifest = None
    opened.labels = tuple(read_checkpoint(path)["meta"].get("labels") or ())
    return opened


def _torch_cuda_backend(model, device):
    """The kernels' GPU path for ``model``, or None (with a warning saying why) where they cannot load."""
    from edge_stad.errors import KernelError, MissingDependencyError
    from edge_stad.torch_backends.cuda import TorchCudaBackend

    try:
        return TorchCudaBackend(model, device)
    except (KernelError, MissingDependencyError) as e:
        warnings.warn(f"running PyTorch on {device} without edge_stad's CUDA kernels (host preprocessing and "
                      f"linking): {e}", stacklevel=3)
        return None
