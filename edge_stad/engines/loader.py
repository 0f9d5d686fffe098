"""Pick and open the backend that runs an engine folder: ONNX Runtime or native TensorRT.

``auto`` takes the TensorRT plans when the folder has them and TensorRT imports, else
ONNX Runtime, with its CUDA provider when onnxruntime-gpu has one. Only the backend asked
for is imported. (:func:`edge_stad.backends.open_backend` also opens checkpoints, through
:mod:`edge_stad.torch_backends`.)

MENet / MENet-Lite engines open as *frame backends* (:mod:`edge_stad.engines.protocols`):
ONNX Runtime's :class:`OnnxRuntimeFrameBackend` or TensorRT's ``TensorRTFrameBackend``; STMA engines as
*snippet backends* (``OnnxRuntimeSnippetBackend``, ``TensorRTSnippetBackend``), flow-fusion engines as *SSD
backends* (``OnnxRuntimeSsdBackend``, ``TensorRTSsdBackend``).
"""
import os

from edge_stad.engines.manifest import read_manifest, verified_files
from edge_stad.errors import ConfigError, EngineError
from edge_stad.model_config import GRAPHS, engine_kind, graph_names

ENGINE_BACKENDS = ("auto", "onnxruntime", "tensorrt")


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


def open_engine(source, backend="auto", threads=None, providers=None, device=0):
    """The backend that runs the engine folder ``source`` (manifest checked; each graph's sha256 verified as it
    is loaded), with ``manifest`` and ``labels`` set. ``backend``: ``auto``, ``onnxruntime`` or ``tensorrt``."""
    source = os.fspath(source)
    if backend not in ENGINE_BACKENDS:
        raise ConfigError(f"an engine folder runs on {', '.join(ENGINE_BACKENDS)}, not {backend!r}")
    manifest = read_manifest(source, verify=False)   # the schema; the files are verified as they are loaded
    check_model(source, manifest)
    if backend == "auto":
        from edge_stad.engines import tensorrt_runtime

        backend = auto_backend(manifest, tensorrt_runtime.available)[0]
    if backend == "tensorrt":
        from edge_stad.engines.tensorrt_backend import open_tensorrt_engine

        opened = open_tensorrt_engine(source, device=device, manifest=manifest)
    else:
        from edge_stad.engines import onnxruntime_backend as ort

        rels = [manifest["graphs"][g] for g in graph_names(manifest["model"])]
        graphs = verified_files(source, manifest, load=rels)
        kind = {"frame": ort.OnnxRuntimeFrameBackend, "snippet": ort.OnnxRuntimeSnippetBackend,
                "ssd": ort.OnnxRuntimeSsdBackend}.get(
            engine_kind(manifest["model"]), ort.OnnxRuntimeBackend)
        opened = kind(*(graphs[rel] for rel in rels), config=manifest["model"], threads=threads,
                      providers=providers or default_providers(), where=f"engine {source}")
    opened.manifest = manifest
    opened.labels = tuple(manifest.get("labels") or ())
    return opened
