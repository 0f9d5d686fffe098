"""Checking and preparing the frames a camera app pushes (no torch).

The runtime takes BGR uint8 frames of any size. Grayscale (HxW, HxWx1) is expanded to
three channels and BGRA loses its alpha, as OpenCV would do; everything else that is
not an image the model can use (another dtype, NaN, an empty or absurdly large array)
is refused with a :class:`~edge_stad.errors.FrameError` naming the problem, before the
runtime's state is touched.
"""
import numpy as np

from edge_stad.errors import FrameError

MAX_SIDE = 16384  # larger than any camera; a bigger array is a bug upstream, not a frame


def check_frame(frame, max_side=MAX_SIDE):
    """``frame`` as a contiguous BGR uint8 ``(H, W, 3)`` array, or a :class:`FrameError` saying why not."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"a frame must be a NumPy array (BGR uint8, HxWx3), got {type(frame).__name__}")
    if frame.size == 0:
        raise FrameError(f"empty frame: shape {frame.shape}")
    if frame.dtype != np.uint8:
        if frame.dtype.kind in "fc" and not np.isfinite(frame).all():
            raise FrameError(f"frame holds NaN or inf ({frame.dtype}); frames must be BGR uint8 0..255")
        raise FrameError(f"frame dtype is {frame.dtype}, expected uint8 (BGR 0..255); scale and convert "
                         "with np.clip(x, 0, 255).astype(np.uint8)")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise FrameError(f"frame shape {frame.shape}: expected HxWx3 (BGR), HxWx4 (BGRA), HxW or HxWx1 (gray)")
    h, w = frame.shape[:2]
    if max(h, w) > max_side:
        raise FrameError(f"frame of {w}x{h} pixels is larger than {max_side} on a side; resize it first")
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    elif frame.shape[2] == 4:
        frame = frame[:, :, :3]
    return np.ascontiguousarray(frame)
