"""edge_stad: real-time spatio-temporal action detection on embedded GPUs and CPUs.

The top-level package imports neither torch nor onnxruntime, so that the
runtime core stays usable on a device that has only the inference stack.
"""
from edge_stad.version import __version__  # noqa: F401


def __getattr__(name):
    # ``edge_stad.Runtime`` and ``edge_stad.doctor`` without loading NumPy/OpenCV on ``import edge_stad``.
    if name == "Runtime":
        from edge_stad.runtime.stream import Runtime

        return Runtime
    if name == "doctor":
        from edge_stad.diagnosis import doctor

        return doctor
    raise AttributeError(f"module 'edge_stad' has no attribute {name!r}")
