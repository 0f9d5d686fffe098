"""Streaming runtime: ``Runtime`` (stream.py), frame checks, window schedule, decode, online
tube linking, per-frame detections, and the video sources and drawing of ``edge-stad run``.

The core (everything but sources and drawing, which add OpenCV) imports only NumPy, so
it runs on a device that has the inference stack alone (Python 3.8+, no torch).
"""
