"""Dense optical flow of two frames with OpenCV (DIS or Farneback), and its uint8 storage form (no torch).

A leaf module: the flow cache of training (:mod:`edge_stad.data.flow`) and the engines of the
flow-fusion models that take precomputed DIS flow (``motion="dis"``) call the same functions, so
that a frame pair gives the network the same input in training, offline evaluation and streaming.
"""
import cv2
import numpy as np

from edge_stad.errors import ConfigError

BOUND = 20.0
METHODS = ("dis", "farneback")
DIS_PRESETS = {"ultrafast": cv2.DISOpticalFlow_PRESET_ULTRAFAST, "fast": cv2.DISOpticalFlow_PRESET_FAST,
               "medium": cv2.DISOpticalFlow_PRESET_MEDIUM}


def compute_flow(prev, frame, method="dis", preset="medium"):
    """Dense flow from BGR (or grey) ``prev`` to ``frame``: float32 ``(H, W, 2)`` as (dx, dy) in pixels."""
    prev, frame = _grey(prev), _grey(frame)
    if method == "dis":
        if preset not in DIS_PRESETS:
            raise ConfigError(f"unknown DIS preset {preset!r}; expected one of {sorted(DIS_PRESETS)}")
        return cv2.DISOpticalFlow_create(DIS_PRESETS[preset]).calc(prev, frame, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(prev, frame, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                            poly_n=5, poly_sigma=1.2, flags=0)
    raise ConfigError(f"unknown flow method {method!r}; expected one of {METHODS}")


def _grey(image):
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def quantize_flow(flow, bound=BOUND):
    """Float flow in pixels -> uint8, clipped to +-``bound`` (0 -> 127.5 rounds to 128)."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))
    return np.round(scaled).astype(np.uint8)


def dequantize_flow(q, bound=BOUND):
    """uint8 flow -> float32 pixels (the inverse of :func:`quantize_flow` up to its step)."""
    return q.astype(np.float32) * np.float32(2 * bound / 255.0) - np.float32(bound)


def pair_flow(prev, frame, preset="medium", bound=BOUND):
    """DIS flow of two resized uint8 BGR frames as the flow cache stores it and the network sees it: float32
    ``(2, H, W)`` (dx, dy) in pixels, clipped to +-``bound`` and rounded to its uint8 steps (0.16 px)."""
    return np.ascontiguousarray(dequantize_flow(quantize_flow(compute_flow(prev, frame, "dis", preset), bound),
                                                bound).transpose(2, 0, 1))
