"""Everything around the actors: textured backgrounds, the camera, occluders, sensor effects.

All of it is drawn from the video's random generator independently of the action class,
so none of it carries class information; it is there to make frames look less clean
(texture clutter, global motion, occlusion, blur, noise, lighting changes), which is what
a detector trained on it must learn to ignore.
"""
from typing import NamedTuple

import cv2
import numpy as np


def background(rng, height, width):
    """A procedural texture ``(height, width, 3)`` uint8: gradient, floor, blobs, shapes, grain."""
    h, w = height, width
    c0, c1 = rng.uniform(20, 235, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = c0 + ramp[..., None] * (c1 - c0)
    horizon = int(rng.uniform(0.35, 0.75) * h)                     # a floor of another colour
    img[horizon:] = img[horizon:] * rng.uniform(0.5, 1.0) + rng.uniform(-40, 40, size=3)
    grid = rng.uniform(-1, 1, size=(rng.integers(3, 8), rng.integers(3, 8), 3)).astype(np.float32)
    img += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(10, 40)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 8)):                             # clutter
        color = tuple(float(v) for v in rng.uniform(0, 255, size=3))
        kind = rng.integers(3)
        x, y = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        size = int(rng.uniform(0.03, 0.2) * max(h, w))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + size, y + int(size * rng.uniform(0.3, 2))), color, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), max(1, size // 2), color, -1, cv2.LINE_AA)
        else:
            end = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            cv2.line(img, (x, y), end, color, int(rng.integers(1, 4)), cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0))       # depth of field
    grain = rng.normal(0, rng.uniform(2, 10), size=(h, w, 1)).astype(np.float32)
    return np.clip(img + grain, 0, 255).astype(np.uint8)


def camera_path(rng, n, pan_speed, shake):
    """Per-frame camera offset ``(n, 2)`` in pixels: a slow linear pan plus smoothed hand shake."""
    velocity = rng.uniform(-pan_speed, pan_speed, size=2) * np.array([1.0, 0.3])
    path = np.arange(n)[:, None] * velocity
    if shake > 0 and rng.random() < 0.7:
        jitter = rng.normal(0, 1, size=(n, 2))
        kernel = np.ones(3) / 3
        jitter = np.stack([np.convolve(jitter[:, i], kernel, mode="same") for i in range(2)], axis=1)
        path = path + jitter * shake
    return path


def view(texture, offset, height, width):
    """The ``(height, width)`` window of ``texture`` at the sub-pixel camera ``offset`` (x, y)."""
    th, tw = texture.shape[:2]
    m = np.float32([[1, 0, (tw - width) / 2 + offset[0]], [0, 1, (th - height) / 2 + offset[1]]])
    return cv2.warpAffine(texture, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


class Occluder(NamedTuple):
    """An object crossing the frame in front of the actors at constant velocity."""

    patch: np.ndarray       # (h, w, 3) uint8 appearance
    mask: np.ndarray        # (h, w) uint8: 255 where the object is
    start: np.ndarray       # top-left (x, y) at frame 0
    velocity: np.ndarray    # pixels per frame


def sample_occluder(rng, n, height, width):
    """A pole, panel or ball that enters on one side and leaves on the other during the video."""
    kind = rng.integers(3)
    if kind == 0:       # pole
        ow, oh = int(rng.uniform(0.05, 0.12) * width), height
    elif kind == 1:     # panel
        ow, oh = int(rng.uniform(0.15, 0.3) * width), int(rng.uniform(0.3, 0.6) * height)
    else:               # ball
        ow = oh = int(rng.uniform(0.15, 0.3) * height)
    ow, oh = max(ow, 3), max(oh, 3)
    patch = background(rng, oh, ow)
    mask = np.zeros((oh, ow), np.uint8)
    if kind == 2:
        cv2.ellipse(mask, (ow // 2, oh // 2), (ow // 2, oh // 2), 0, 0, 360, 255, -1, cv2.LINE_AA)
    else:
        mask[:] = 255
    direction = rng.choice([-1.0, 1.0])
    y = 0.0 if kind == 0 else rng.uniform(0, height - oh)
    x0 = -ow if direction > 0 else width
    speed = (width + ow) / max(n * rng.uniform(0.6, 1.0), 1)
    return Occluder(patch, mask, np.array([x0, y]), np.array([direction * speed, 0.0]))


def paste(image, occ, t):
    """Draw occluder ``occ`` at frame ``t`` into ``image`` in place (clipped to the frame)."""
    x, y = (occ.start + occ.velocity * t).round().astype(int)
    h, w = image.shape[:2]
    oh, ow = occ.mask.shape
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + ow, w), min(y + oh, h)
    if x1 >= x2 or y1 >= y2:
        return
    alpha = occ.mask[y1 - y:y2 - y, x1 - x:x2 - x, None].astype(np.float32) / 255
    region = image[y1:y2, x1:x2].astype(np.float32)
    image[y1:y2, x1:x2] = (region + alpha * (occ.patch[y1 - y:y2 - y, x1 - x:x2 - x] - region)).astype(np.uint8)


class Sensor(NamedTuple):
    """Per-video photometric settings applied to every finished frame."""

    gain: np.ndarray        # (n, 3) per-frame, per-channel multiplier (lighting drift, colour cast)
    blur: np.ndarray        # (n,) Gaussian sigma in pixels, 0 = sharp
    noise: float            # sensor noise standard deviation (grey levels)


def sample_sensor(rng, n, blur_probability):
    """Lighting that drifts slowly, bursts of blur, and Gaussian noise."""
    t = np.arange(n, dtype=np.float64)
    level = 1 + rng.uniform(0, 0.2) * np.sin(2 * np.pi * t / rng.uniform(n, 3 * n) + rng.uniform(0, 2 * np.pi))
    cast = 1 + np.outer(t / max(n - 1, 1), rng.uniform(-0.08, 0.08, size=3))
    blur = np.zeros(n)
    if rng.random() < blur_probability:
        start = int(rng.integers(0, n))
        blur[start:start + int(rng.integers(2, 8))] = rng.uniform(0.7, 1.6)
    return Sensor(level[:, None] * cast, blur, float(rng.uniform(1, 6)))


def expose(image, sensor, t, rng):
    """Apply the ``sensor`` lighting, blur and noise of frame ``t``; returns a new uint8 image."""
    out = image.astype(np.float32) * sensor.gain[t].astype(np.float32)
    if sensor.blur[t] > 0:
        out = cv2.GaussianBlur(out, (0, 0), float(sensor.blur[t]))
    out += rng.standard_normal(out.shape, dtype=np.float32) * sensor.noise
    return np.clip(out, 0, 255).astype(np.uint8)
