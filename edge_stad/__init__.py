"""edge_stad: real-time spatio-temporal action detection on embedded GPUs and CPUs.

The top-level package imports neither torch nor onnxruntime, so that the
runtime core stays usable on a device that has only the inference stack.
"""
__version__ = "0.1.0"
