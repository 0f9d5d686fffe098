"""Streaming runtime: ``Runtime`` (stream.py) over the shared tube core (:mod:`edge_stad.core`), the video
sources and drawing of ``edge-stad run``, and the event sinks.

``Runtime`` and the core import only NumPy (sources and drawing add OpenCV), so they run on a device
that has the inference stack alone (Python 3.8+, no torch).
"""
