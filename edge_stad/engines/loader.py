"""Pick and open the backend that runs an engine: ONNX Runtime, native TensorRT or PyTorch.

``auto`` takes the TensorRT plans when the folder has them and TensorRT imports, else
ONNX Runtime, with its CUDA provider when onnxruntime-gpu has one. A checkpoint file
(``.pt``/``.pth``) instead of an engine folder runs the PyTorch model itself, the
reference every engine is compared with. Only the backend asked for is imported.

MENet / MENet-Lite engines and checkpoints open as *frame backends*
(:mod:`edge_stad.eval.predict_frames`): ONNX Runtime's :class:`OnnxRuntimeFrameBackend`,
TensorRT's ``TensorRTFrameBackend`` or PyTorch's ``TorchFrameBackend``.
"""
import os
import warnings

from edge_stad.engines.manifest import read_manifest, verified_files
from edge_stad.engines.onnxruntime_backend import is_frame_model
from edge_stad.errors import ConfigError, EngineError
from edge_stad.model_config import GRAPHS, SNIPPET, graph_names

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def default_providers(available=None):
    """ONNX Runtime providers to use: CUDA first where onnxruntime-gpu offers it, always CPU
    (among ``available``, by default this ONNX Runtime's)."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or list(available)


def auto_backend(manifest, tensorrt_available):
    """``(backend, reason)``: what ``backend="auto"`` runs the engine folder of ``manifest`` with, and why.

    ``tensorrt_available()`` is asked only when the folder has plans (importing TensorRT takes seconds).
    """
    if not manifest.get("plans"):
        return "onnxruntime", "the engine folder has no TensorRT plans"
    if not tensorrt_available():
        return "onnxruntime", "the engine folder has TensorRT plans, but TensorRT is not importable here"
    return "tensorrt", "the engine folder has TensorRT plans and TensorRT is importable here"


def check_model(source, manifest):
    """An :class:`EngineError` unless the engine folder ``source`` holds a model this version runs, with its graphs."""
    name = manifest["model"].get("name")
    if name not in GRAPHS:
        raise EngineError(f"engine {source} holds a {name!r} model; this version runs " + ", ".join(GRAPHS))
    missing = [g for g in graph_names(manifest["model"]) if g not in manifest["graphs"]]
    if missing:
        raise EngineError(f"engine {source} holds a {name} model but its manifest lists no {', '.join(missing)} "
                          f"graph (it has {', '.join(manifest['graphs'])}): rebuild it with `edge-stad build`")


def open_backend(source, backend="auto", threads=None, providers=None, device=0):
    """A backend (:mod:`edge_stad.eval.predict` interface; a frame backend for MENet) with ``manifest``
    and ``labels`` set.

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
        return _torch_backend(source, device)
    if backend == "torch":
        raise ConfigError(f"the torch backend runs a checkpoint file (.pt), not the engine folder {source}")
    manifest = read_manifest(source, verify=False)   # the schema; the files are verified as they are loaded
    check_model(source, manifest)
    frame_model = is_frame_model(manifest["model"])
    if backend == "auto":
        from edge_stad.engines import tensorrt_build

        backend = auto_backend(manifest, tensorrt_build.available)[0]
    if backend == "tensorrt":
        from edge_stad.engines.tensorrt_backend import open_tensorrt_engine

        opened = open_tensorrt_engine(source, device=device, manifest=manifest)
    else:
        from edge_stad.engines.onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeFrameBackend

        rels = [manifest["graphs"][g] for g in graph_names(manifest["model"])]
        graphs = verified_files(source, manifest, load=rels)
        opened = (OnnxRuntimeFrameBackend if frame_model else OnnxRuntimeBackend)(
            *(graphs[rel] for rel in rels), manifest["model"], threads=threads,
            providers=providers or default_providers(), where=f"engine {source}")
    opened.manifest = manifest
    opened.labels = tuple(manifest.get("labels") or ())
    return opened


def _torch_backend(path, device):
    import torch

    from edge_stad.engines.torch_backend import TorchBackend, TorchFrameBackend
    from edge_stad.models.checkpoint import load_checkpoint, read_checkpoint

    model = load_checkpoint(path)
    if model.config["name"] not in GRAPHS:   # STMA, flow-fusion: offline evaluation only, for now
        offline = "predict_snippets" if model.config["name"] in SNIPPET else "predict_ssd"
        raise EngineError(f"{path} holds a {model.config['name']} model, which the Runtime cannot stream yet; "
                          f"evaluate it with edge_stad.eval.{offline}")
    target = f"cuda:{device}" if torch.cuda.is_available() else "cpu"
    opened = None
    if is_frame_model(model.config):
        opened = TorchFrameBackend(model.to(target))
    elif torch.cuda.is_available():
        opened = _torch_cuda_backend(model, target)
    if opened is None:
        opened = TorchBackend(model.to(target))
    opened.manifest = None
    opened.labels = tuple(read_checkpoint(path)["meta"].get("labels") or ())
    return opened


def _torch_cuda_backend(model, device):
    """The kernels' GPU path for ``model``, or None (with a warning saying why) where they cannot load."""
    from edge_stad.engines.torch_cuda_backend import TorchCudaBackend
    from edge_stad.errors import KernelError, MissingDependencyError

    try:
        return TorchCudaBackend(model, device)
    except (KernelError, MissingDependencyError) as e:
        warnings.warn(f"running PyTorch on {device} without edge_stad's CUDA kernels (host preprocessing and "
                      f"linking): {e}", stacklevel=3)
        return None
