"""Training augmentation of a K-clip sample, as the reference does it (its section 6).

One set of random parameters is drawn per sample and applied to all its K*n frames, so
the motion between frames is untouched. Order: horizontal mirror (p 0.5), photometric
distortion (brightness, contrast, saturation, hue, each p 0.5, in one of two orders),
expand (p 0.5: ratio U(1, 2), the image at the bottom-right of a mean-coloured canvas,
as the reference places it) and an SSD-style crop chosen among samplers with minimum
mean-IoU constraints against the tubes. Frames are float32 0..255 BGR; ``tubes`` is
``{label: [float32 (K, 4) boxes in pixels]}`` and is updated alongside.
"""
import cv2
import numpy as np

from edge_stad.boxes import iou

EXPAND_FILL_BGR = (104.0136177, 114.0342201, 119.91659325)
MAX_EXPAND_RATIO = 2.0
# (min scale, max scale, min mean IoU with a tube, max mean IoU); None = no constraint.
CROP_SAMPLERS = (
    (0.6, 1.0, 0.1, None), (0.6, 1.0, 0.3, None), (0.5, 1.0, 0.5, None),
    (0.3, 1.0, 0.7, None), (0.3, 1.0, 0.9, None), (0.3, 1.0, None, 1.0),
)
CROP_TRIALS = 50
ASPECT_RANGE = (0.5, 2.0)


def mirror(frames, tubes, width):
    frames = [f[:, ::-1] for f in frames]
    out = {}
    for label, boxes in tubes.items():
        flipped = []
        for b in boxes:
            b = b.copy()
            b[:, 0], b[:, 2] = width - b[:, 2], width - b[:, 0]
            flipped.append(b)
        out[label] = flipped
    return frames, out


def _hsv_channel(frames, channel, op):
    out = []
    for f in frames:
        hsv = cv2.cvtColor(f.astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[:, :, channel] = op(hsv[:, :, channel])
        out.append(cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32))
    return out


def distort(frames, rng):
    """Photometric distortion; every step keeps values in 0..255."""
    def brightness(fs):
        if rng.random() < 0.5:
            delta = rng.uniform(-32, 32)
            fs = [np.clip(f + delta, 0, 255) for f in fs]
        return fs

    def contrast(fs):
        if rng.random() < 0.5:
            alpha = rng.uniform(0.5, 1.5)
            fs = [np.clip(f * alpha, 0, 255) for f in fs]
        return fs

    def saturation(fs):
        if rng.random() < 0.5:
            s = rng.uniform(0.5, 1.5)
            fs = _hsv_channel(fs, 1, lambda c: np.clip(c * s, 0, 255))
        return fs

    def hue(fs):
        if rng.random() < 0.5:
            d = rng.uniform(-18, 18)
            fs = _hsv_channel(fs, 0, lambda c: (c + d) % 180.0)
        return fs

    steps = (brightness, contrast, saturation, hue) if rng.random() > 0.5 else (brightness, saturation, hue, contrast)
    for step in steps:
        frames = step(frames)
    return frames


def expand(frames, tubes, rng):
    ratio = rng.uniform(1.0, MAX_EXPAND_RATIO)
    oh, ow = frames[0].shape[:2]
    h, w = int(oh * ratio), int(ow * ratio)
    y0, x0 = h - oh, w - ow
    out = []
    for f in frames:
        canvas = np.empty((h, w, 3), dtype=np.float32)
        canvas[:] = EXPAND_FILL_BGR
        canvas[y0:, x0:] = f
        out.append(canvas)
    shift = np.array([x0, y0, x0, y0], dtype=np.float32)
    return out, {label: [b + shift for b in boxes] for label, boxes in tubes.items()}


def _crop_candidates(tubes, height, width, rng):
    """The whole image plus, per sampler, the first of up to 50 random crops meeting its constraint.

    Crops that do not fit the image are redrawn without counting as a trial, as in the
    reference; the 50 trials of a sampler are drawn and scored at once.
    """
    all_tubes = [b for boxes in tubes.values() for b in boxes]
    candidates = [np.array([0, 0, width, height], dtype=np.float32)]
    if not all_tubes:  # the reference accepts no constrained crop without ground truth
        return candidates
    stacked = np.stack(all_tubes)  # (T, K, 4)
    for min_scale, max_scale, min_iou, max_iou in CROP_SAMPLERS:
        sizes = np.zeros((0, 2))
        while len(sizes) < CROP_TRIALS:
            scale = rng.uniform(min_scale, max_scale, 4 * CROP_TRIALS)
            aspect = rng.uniform(*ASPECT_RANGE, 4 * CROP_TRIALS)
            drawn = np.stack([scale * np.sqrt(aspect), scale / np.sqrt(aspect)], axis=1)
            sizes = np.concatenate([sizes, drawn[(drawn <= 1).all(axis=1)]])
        cw, ch = sizes[:CROP_TRIALS, 0], sizes[:CROP_TRIALS, 1]
        x, y = rng.uniform(0, 1 - cw), rng.uniform(0, 1 - ch)
        cuboids = np.stack([x * width, y * height, (x + cw) * width, (y + ch) * height], axis=1).astype(np.float32)
        ious = iou(stacked[None], cuboids[:, None, None]).mean(axis=2)  # (trials, T): mean over K boxes
        ok = np.zeros(CROP_TRIALS, dtype=bool)
        if min_iou is not None:
            ok |= ious.max(axis=1) >= min_iou
        if max_iou is not None:
            ok |= ious.min(axis=1) >= max_iou
        if ok.any():
            candidates.append(cuboids[int(ok.argmax())])
    return candidates


def crop(frames, tubes, rng):
    """Crop all frames to one sampled cuboid; tubes whose centre leaves it are dropped."""
    h, w = frames[0].shape[:2]
    candidates = _crop_candidates(tubes, h, w, rng)
    x1, y1, x2, y2 = (int(v) for v in candidates[rng.integers(len(candidates))])
    frames = [f[y1:y2 + 1, x1:x2 + 1] for f in frames]
    cw, ch = x2 - x1, y2 - y1
    out = {}
    for label, boxes in tubes.items():
        for b in boxes:
            b = b - np.array([x1, y1, x1, y1], dtype=np.float32)
            cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            if (cx < 0).any() or (cy < 0).any() or (cx > cw).any() or (cy > ch).any():
                continue
            b[:, 0::2] = np.clip(b[:, 0::2], 0, cw)
            b[:, 1::2] = np.clip(b[:, 1::2], 0, ch)
            out.setdefault(label, []).append(b)
    return frames, out


def augment(frames, tubes, rng):
    """The reference's training augmentation of one sample (see module docstring)."""
    if rng.random() < 0.5:
        frames, tubes = mirror(frames, tubes, frames[0].shape[1])
    frames = distort([f.astype(np.float32) for f in frames], rng)
    if rng.random() < 0.5:
        frames, tubes = expand(frames, tubes, rng)
    return crop(frames, tubes, rng)
