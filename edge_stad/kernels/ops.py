"""The kernels as calls on device pointers (:class:`CudaKernels`), and the linker's matrices on the GPU.

Shapes and layouts are those of the NumPy references in :mod:`edge_stad.kernels.reference`;
the argument checks here keep a bad call from reaching the device, where it would read
out of bounds instead of failing.
"""
import numpy as np

from edge_stad.errors import KernelError
from edge_stad.kernels.loader import Kernels, open_driver
from edge_stad.kernels.reference import EPS
from edge_stad.preprocess import MEAN_BGR, STD_BGR

MAX_PAIRS = 7          # 4 bits per frame index in one signed 32-bit int
MAX_USED_FRAMES = 8    # micro_motion.cu keeps this many frames' features per pixel


def pack_pairs(pairs):
    """``[(a, b), ...]`` -> the two ints micro_motion.cu reads (4 bits per frame index)."""
    pairs = [(int(a), int(b)) for a, b in pairs]
    used = {f for pair in pairs for f in pair}
    if not 1 <= len(pairs) <= MAX_PAIRS or not all(0 <= f < 16 for f in used) or len(used) > MAX_USED_FRAMES:
        raise KernelError(f"micro_motion takes 1..{MAX_PAIRS} pairs of frame indices 0..15 using at most "
                          f"{MAX_USED_FRAMES} frames, got {pairs}")
    return (sum(a << 4 * p for p, (a, _) in enumerate(pairs)), sum(b << 4 * p for p, (_, b) in enumerate(pairs)))


def _blocks(n, size):
    return (int(n) + size - 1) // size


class CudaKernels:
    """preprocess, micro_motion and the two linking matrices on CUDA device ``device``.

    Every call takes device pointers (ints: ``tensor.data_ptr()``, ``cudaMalloc`` results) and
    a stream (see :mod:`edge_stad.kernels.loader` for what each driver takes) and only queues
    work: synchronise before reading the outputs on the host.
    """

    def __init__(self, device=0, driver="auto"):
        self.driver = open_driver(driver, device) if isinstance(driver, str) else driver
        self._pre = Kernels("preprocess", self.driver)
        self._link = Kernels("tube_link", self.driver)
        self._mm = {}

    def preprocess(self, src, frames, src_hw, row_stride, dst, dst_hw, half=False, stream=0, frame_stride=None):
        """uint8 BGR frames at ``src`` (``frames`` x ``src_hw`` x 3, rows ``row_stride`` bytes apart,
        frames ``frame_stride`` apart, default contiguous) -> planar ``(3 * frames, H, W)`` at ``dst``."""
        (h, w), (out_h, out_w) = (int(v) for v in src_hw), (int(v) for v in dst_hw)
        if min(h, w, out_h, out_w, frames) < 1 or row_stride < 3 * w:
            raise KernelError(f"preprocess: bad sizes: {frames} frames of {h}x{w} (row stride {row_stride} bytes) "
                              f"to {out_h}x{out_w}")
        frame_stride = h * row_stride if frame_stride is None else frame_stride
        norm = [(m, "f32") for m in MEAN_BGR] + [(s, "f32") for s in STD_BGR]
        self._pre["preprocess_f16" if half else "preprocess_f32"](
            (_blocks(out_w, 32), _blocks(out_h, 8), int(frames)), (32, 8, 1),
            [(src, "ptr"), (h, "i32"), (w, "i32"), (row_stride, "i64"), (frame_stride, "i64"),
             (dst, "ptr"), (out_h, "i32"), (out_w, "i32")] + norm, stream=stream)

    def micro_motion(self, clip, clips, clip_len, hw, weight, bias, pairs, out, channels=8, kernel_size=5, eps=EPS,
                     pool=True, stream=0):
        """Clips ``(clips, 3 * clip_len, H, W)`` float32 at ``clip`` -> motion ``(clips, len(pairs), H, W)`` at
        ``out``; ``weight`` ``(channels, 3, k, k)`` and ``bias`` float32 on the device."""
        h, w = (int(v) for v in hw)
        if pool and (h % 2 or w % 2):
            raise KernelError(f"micro_motion pools by 2: height and width must be even, got {h}x{w}")
        if any(f >= clip_len for pair in pairs for f in pair):
            raise KernelError(f"micro_motion pairs {list(pairs)} name frames outside a {clip_len}-frame clip")
        if kernel_size % 2 == 0:
            raise KernelError(f"micro_motion needs an odd conv kernel size, got {kernel_size}")
        pairs_a, pairs_b = pack_pairs(pairs)
        key = (int(channels), int(kernel_size))
        if key not in self._mm:
            self._mm[key] = Kernels("micro_motion", self.driver, {"MM_CHANNELS": key[0], "MM_KSIZE": key[1]})
        hp, wp = ((h - 1) // 2 + 1, (w - 1) // 2 + 1) if pool else (h, w)
        self._mm[key]["micro_motion"](
            (_blocks(wp, 16), _blocks(hp, 16), int(clips)), (16, 16, 1),
            [(clip, "ptr"), (clip_len, "i32"), (h, "i32"), (w, "i32"), (weight, "ptr"), (bias, "ptr"),
             (len(pairs), "i32"), (pairs_a, "i32"), (pairs_b, "i32"), (eps, "f32"), (int(bool(pool)), "i32"),
             (out, "ptr")], stream=stream)

    def nms_overlap(self, boxes, K, seg, start, out_start, out, rows, widest, stream=0):
        self._link["nms_overlap"]((int(rows), 1, 1), (_threads(widest), 1, 1),
                                  [(boxes, "ptr"), (K, "i32"), (seg, "ptr"), (start, "ptr"), (out_start, "ptr"),
                                   (out, "ptr")], stream=stream)

    def match_iou(self, tubes, offset, K, tube_seg, tube_start, candidates, start, out_start, out, tubes_count,
                  widest, stream=0):
        self._link["match_iou"]((int(tubes_count), 1, 1), (_threads(widest), 1, 1),
                                [(tubes, "ptr"), (offset, "ptr"), (K, "i32"), (tube_seg, "ptr"),
                                 (tube_start, "ptr"), (candidates, "ptr"), (start, "ptr"), (out_start, "ptr"),
                                 (out, "ptr")], stream=stream)


def _threads(widest):
    return int(min(256, max(32, 32 * _blocks(widest, 32))))


class CudaLinkMatrices:
    """The linker's two matrices for every label of a window: one upload, one launch, one download each.

    Drop-in for :class:`edge_stad.core.linking.HostMatrices` (``Linker(..., matrices=...)``).
    Inputs are packed into one host buffer and copied in one transfer; the packed matrices
    come back in one transfer. Device buffers grow to the largest window seen and are reused.
    """

    def __init__(self, kernels, stream=0):
        self.kernels, self.stream = kernels, stream
        self._buffers = {}   # "in"/"out" -> (bytes, pointer)

    def _buffer(self, name, nbytes):
        driver = self.kernels.driver
        if name not in self._buffers or self._buffers[name][0] < nbytes:
            if name in self._buffers:
                driver.free(self._buffers.pop(name)[1])
            self._buffers[name] = (nbytes, driver.alloc(nbytes))
        return self._buffers[name][1]

    def _run(self, parts, out_sizes, launch):
        """Upload ``parts`` (named arrays) in one copy, ``launch(pointers, out)``, download the packed output."""
        offsets, total = {}, 0
        for name, array in parts:
            offsets[name] = total
            total += -(-array.nbytes // 16) * 16
        staging = np.zeros(total, np.uint8)
        for name, array in parts:
            staging[offsets[name]:offsets[name] + array.nbytes] = np.ascontiguousarray(array).view(np.uint8).ravel()
        out_host = np.empty(max(int(sum(out_sizes)), 1), np.float32)
        driver, base = self.kernels.driver, self._buffer("in", total)
        out = self._buffer("out", out_host.nbytes)
        driver.to_device(base, staging, self.stream)
        launch({name: int(base) + off for name, off in offsets.items()}, out)
        driver.to_host(out_host, out, self.stream)
        driver.synchronize(self.stream)
        return out_host

    def nms_overlap(self, groups):
        if not groups:
            return []
        K = groups[0].shape[1]
        sizes = [len(g) for g in groups]
        start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
        out_sizes = [m * m for m in sizes]
        out_start = np.concatenate([[0], np.cumsum(out_sizes)[:-1]]).astype(np.int32)
        parts = [("boxes", np.concatenate(groups).astype(np.float32)),
                 ("seg", np.repeat(np.arange(len(groups), dtype=np.int32), sizes)), ("start", start),
                 ("out_start", out_start)]
        flat = self._run(parts, out_sizes, lambda p, out: self.kernels.nms_overlap(
            p["boxes"], K, p["seg"], p["start"], p["out_start"], out, int(start[-1]), max(sizes), self.stream))
        return [flat[o:o + m * m].reshape(m, m) for o, m in zip(out_start, sizes)]

    def match_iou(self, groups):
        if not groups:
            return []
        K = groups[0][0].shape[1]
        tubes = [len(g[0]) for g in groups]
        sizes = [len(g[2]) for g in groups]
        out_sizes = [a * m for a, m in zip(tubes, sizes)]
        out_start = np.concatenate([[0], np.cumsum(out_sizes)[:-1]]).astype(np.int32)
        parts = [("tubes", np.concatenate([g[0] for g in groups]).astype(np.float32)),
                 ("offset", np.concatenate([g[1] for g in groups]).astype(np.int32)),
                 ("tube_seg", np.repeat(np.arange(len(groups), dtype=np.int32), tubes)),
                 ("tube_start", np.concatenate([[0], np.cumsum(tubes)]).astype(np.int32)),
                 ("candidates", np.concatenate([g[2] for g in groups]).astype(np.float32)),
                 ("start", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)), ("out_start", out_start)]
        flat = self._run(parts, out_sizes, lambda p, out: self.kernels.match_iou(
            p["tubes"], p["offset"], K, p["tube_seg"], p["tube_start"], p["candidates"], p["start"], p["out_start"],
            out, sum(tubes), max(sizes), self.stream))
        return [flat[o:o + a * m].reshape(a, m) for o, a, m in zip(out_start, tubes, sizes)]

    def close(self):
        while self._buffers:
            self.kernels.driver.free(self._buffers.popitem()[1][1])
