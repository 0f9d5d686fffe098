"""Streaming runtime: window schedule, online tube linking and box interpolation.

Every module here imports only NumPy, so the runtime core runs on a device that has
the inference stack alone (Python 3.8+, no torch).
"""
