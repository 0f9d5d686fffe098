"""Typed errors: every bad input the SDK detects raises one of these.

Each also derives from the builtin a caller would naturally catch
(``ValueError`` for bad data, ``RuntimeError`` for an unusable environment),
so code that does not know edge_stad still handles them sensibly.
"""


class EdgeStadError(Exception):
    """Base class of every error edge_stad raises on purpose."""


class ConfigError(EdgeStadError, ValueError):
    """A model or command configuration that cannot work (unknown backbone, K < 1, ...)."""


class OutputExistsError(ConfigError):
    """An output folder that exists and is not empty, which a call replaces only when told to (``force``)."""

    def __init__(self, path):
        super().__init__(f"{path} already exists and is not an empty folder; choose another path or pass force=True "
                         "to replace it")
        self.path = path


class CheckpointError(EdgeStadError, ValueError):
    """A checkpoint that is corrupt, untrusted, or does not match the model asked for."""


class MissingDependencyError(EdgeStadError, RuntimeError):
    """An optional dependency (torch, tensorrt, ...) needed for this call is not installed."""


class AnnotationError(EdgeStadError, ValueError):
    """A ground-truth annotation file that is unreadable or inconsistent (names the video and frame)."""


class UnsafePickleError(AnnotationError):
    """A pickle that asks to load something other than plain data and NumPy arrays; nothing was executed."""


class DetectionsFormatError(EdgeStadError, ValueError):
    """A detections file that does not follow docs/detections_format.md (names the line and field)."""


class TubeletError(EdgeStadError, ValueError):
    """Tubelets handed to the linker with a wrong shape, non-finite values or out-of-order frames."""


class EvaluationError(EdgeStadError, ValueError):
    """Detections and ground truth that cannot be evaluated together (labels, K, videos disagree)."""


class DataError(EdgeStadError, ValueError):
    """A dataset on disk that does not match its annotations (missing/corrupt frame, wrong size, bad split)."""


class EngineError(EdgeStadError, ValueError):
    """An engine folder whose manifest, files or versions do not match what it claims or what runs it."""


class ExportError(EdgeStadError, RuntimeError):
    """An export, quantization or build that failed a check (ONNX validity, parity, accuracy gate)."""


class SourceError(EdgeStadError, ValueError):
    """A video source (file, image folder, camera, stream URL) that cannot be opened or read."""


class FrameError(EdgeStadError, ValueError):
    """A frame pushed to the runtime that it cannot use (shape, dtype, NaN/inf, empty, too large)."""


class KernelError(EdgeStadError, RuntimeError):
    """A CUDA kernel that cannot be compiled, loaded or launched (names the kernel and the driver's status)."""
