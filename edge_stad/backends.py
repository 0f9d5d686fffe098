"""Open what runs a model: an engine folder (:mod:`edge_stad.engines.loader`) or a checkpoint file
(:mod:`edge_stad.torch_backends`, imported only then, with torch)."""
import os

from edge_stad.errors import ConfigError

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def open_backend(source, backend="auto", threads=None, providers=None, device=0):
    """A backend (:mod:`edge_stad.engines.protocols`) with ``manifest`` and ``labels`` set.

    ``source`` is an engine folder (manifest and checksums verified first) or a
    checkpoint file. ``threads`` sets ONNX Runtime's intra-op threads (CPU), ``providers``
    its execution providers, ``device`` the CUDA device of TensorRT and PyTorch.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    source = os.fspath(source)
    if os.path.isfile(source) and source.endswith(CHECKPOINT_SUFFIXES):
        if backend not in ("auto", "torch"):
            raise ConfigError(f"{source} is a checkpoint; only the torch backend runs it (build an engine for "
                              f"{backend}: edge-stad build --checkpoint {source})")
        from edge_stad.torch_backends import open_checkpoint

        return open_checkpoint(source, device)
    if backend == "torch":
        raise ConfigError(f"the torch backend runs a checkpoint file (.pt), not the engine folder {source}")
    from edge_stad.engines.loader import open_engine

    return open_engine(source, backend, threads, providers, device)
