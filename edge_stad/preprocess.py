"""Frame preprocessing shared by training, calibration and the runtime (no torch).

Frames are BGR (as ``cv2.imread`` returns them), resized to the model input with
``cv2.INTER_LINEAR`` without keeping the aspect ratio, and normalised per channel as
``(x / 255 - mean) / std`` with CenterNet's COCO statistics, exactly as the authors'
code does. Exported encoders take the resized uint8 frames and normalise in-graph.
"""
import numpy as np

MEAN_BGR = (0.40789654, 0.44719302, 0.47026115)
STD_BGR = (0.28863828, 0.27408164, 0.27809835)
DOWN_RATIO = 8  # model input size / head grid size


def grid_size(input_size):
    """Head grid ``(h, w)`` of a model whose input is ``input_size = (H, W)``."""
    h, w = input_size
    return h // DOWN_RATIO, w // DOWN_RATIO


def resize(frame, size):
    """Resize an HxWx3 frame to ``size = (height, width)`` with bilinear interpolation."""
    import cv2

    h, w = size
    if frame.shape[:2] == (h, w):
        return frame
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)


def normalize_clip(frames):
    """Resized BGR frames (uint8 or float 0..255), oldest first -> float32 ``(3n, H, W)`` model input."""
    x = np.stack(frames).astype(np.float32)  # (n, H, W, 3)
    mean = np.asarray(MEAN_BGR, dtype=np.float32)
    std = np.asarray(STD_BGR, dtype=np.float32)
    x = (x / 255.0 - mean) / std
    n, h, w, _ = x.shape
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(3 * n, h, w))
