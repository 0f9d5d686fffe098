"""TensorRT as the runtime sees it: imported lazily (it takes seconds and exists only on NVIDIA machines),
with one error that says where to get it. Building plans is :mod:`edge_stad.build.tensorrt_plans`."""
from edge_stad.errors import MissingDependencyError

#: ONNX operators TensorRT's parser reads only from some version on: GridSample (IGridSampleLayer, TensorRT 8.5;
#: the flow-fusion flow network's warping). A plan of a graph holding one is refused below that version.
OPERATOR_SINCE = {"GridSample": (8, 5)}


def tensorrt():
    """The ``tensorrt`` module, or a :class:`MissingDependencyError` saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise MissingDependencyError(
            "TensorRT is not importable here: it ships with JetPack on Jetson and with NVIDIA's "
            "TensorRT packages on desktop GPUs (the PyPI bindings alone do not carry its libraries); "
            "use --backend onnxruntime, or build on the target device") from e
    return trt


def available():
    try:
        tensorrt()
    except MissingDependencyError:
        return False
    return True


def major_version(trt):
    return int(trt.__version__.split(".")[0])


def cudart():
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (12.x, 13.x) or ``cuda.cudart`` (11.x, JetPack 5)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise MissingDependencyError(
                "TensorRT needs cuda-python for device memory and streams: pip install cuda-python "
                "(the major version of the device's CUDA, e.g. 'cuda-python==11.*' on JetPack 5)") from e
    return cudart
