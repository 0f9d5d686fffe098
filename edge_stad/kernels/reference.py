"""Exact NumPy references of the CUDA kernels in this folder (no torch).

Each function computes what its kernel computes, with the same float32 operation order
where the kernel rounds every step explicitly (``preprocess``, ``nms_overlap``,
``match_iou``: bit-identical results) and to float rounding where it accumulates freely
(``micro_motion``: a 75-term conv sum). The CPU runtime runs these; the GPU runtime runs
the kernels; the tests hold the two to each other. The linking kernels' references are the CPU
linker's own math, :mod:`edge_stad.core.link_math`, named here too.
"""
import numpy as np

from edge_stad.core.link_math import block_pairs, match_iou, match_iou_pairs, nms_overlap, nms_overlap_pairs  # noqa: F401
from edge_stad.preprocess import normalize_clip

EPS = 1e-6  # the reference micro-motion eps (nn.PairwiseDistance's default)


def resize_bilinear(frames, size):
    """uint8 ``(F, h, w, 3)`` -> uint8 ``(F, H, W, 3)``, ``size = (H, W)``: OpenCV's INTER_LINEAR sampling in float32.

    Half-pixel centres, taps clamped at the edges, the interpolated value rounded half to
    even. OpenCV itself interpolates in 11-bit fixed point, so ``cv2.resize`` differs from
    this by at most one grey level on some pixels.
    """
    frames = np.asarray(frames)
    f32 = np.float32
    h, w = frames.shape[1:3]
    out_h, out_w = size

    def taps(n_out, n_in):
        s = (np.arange(n_out, dtype=f32) + f32(0.5)) * (f32(n_in) / f32(n_out)) - f32(0.5)
        i0 = np.floor(s).astype(np.int64)
        frac = s - i0.astype(f32)
        frac[i0 < 0] = 0
        i0[i0 < 0] = 0
        frac[i0 >= n_in - 1] = 0
        i0[i0 >= n_in - 1] = n_in - 1
        return i0, np.minimum(i0 + 1, n_in - 1), frac

    y0, y1, fy = taps(out_h, h)
    x0, x1, fx = taps(out_w, w)
    p = frames.astype(f32)
    fx = fx[None, None, :, None]
    fy = fy[None, :, None, None]
    rows0, rows1 = p[:, y0], p[:, y1]
    top = rows0[:, :, x0] + fx * (rows0[:, :, x1] - rows0[:, :, x0])
    bottom = rows1[:, :, x0] + fx * (rows1[:, :, x1] - rows1[:, :, x0])
    return np.rint(top + fy * (bottom - top)).astype(np.uint8)


def preprocess(frames, size, half=False):
    """``preprocess.cu``: uint8 BGR frames ``(F, h, w, 3)`` of a clip -> planar ``(3F, H, W)`` model input.

    :func:`resize_bilinear` then :func:`edge_stad.preprocess.normalize_clip`; float16 when ``half``.
    """
    out = normalize_clip(list(resize_bilinear(frames, size)))
    return out.astype(np.float16) if half else out


def micro_motion(clip, weight, bias, pairs, eps=EPS, pool=True):
    """``micro_motion.cu``: clips ``(N, 3n, H, W)`` float32 -> motion ``(N, len(pairs), H, W)``.

    ``weight`` ``(C, 3, k, k)`` and ``bias`` ``(C,)`` are the shallow conv's; ``pairs`` the
    ``(a, b)`` frame pairs; ``pool`` the 3x3/2 max-pool before the conv and the 2x nearest
    upsample after the norm (``H`` and ``W`` even).
    """
    clip = np.asarray(clip, np.float32)
    weight, bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
    n_clips, channels, h, w = clip.shape
    used = sorted({f for pair in pairs for f in pair})
    x = clip.reshape(n_clips, channels // 3, 3, h, w)[:, used]
    if pool:
        padded = np.pad(x, [(0, 0)] * 3 + [(1, 1), (1, 1)], constant_values=-np.inf)
        hp, wp = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        x = np.max([padded[..., dy:dy + 2 * hp:2, dx:dx + 2 * wp:2] for dy in range(3) for dx in range(3)], axis=0)
    r = weight.shape[-1] // 2
    padded = np.pad(x, [(0, 0)] * 3 + [(r, r), (r, r)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, weight.shape[-2:], axis=(-2, -1))
    feats = np.einsum("nfchwyx,ocyx->nfohw", windows, weight, optimize=True) + bias[:, None, None]
    slot = {f: i for i, f in enumerate(used)}
    maps = []
    for a, b in pairs:
        diff = feats[:, slot[a]] - feats[:, slot[b]] + np.float32(eps)
        maps.append(np.sqrt(np.sum(diff * diff, axis=1)))
    motion = np.stack(maps, axis=1).astype(np.float32)
    if pool:
        motion = motion.repeat(2, axis=2).repeat(2, axis=3)[:, :, :h, :w]
    return np.ascontiguousarray(motion)


