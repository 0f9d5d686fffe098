"""The CUDA kernels on a GPU against their NumPy references: bit for bit where the kernel rounds every
step (preprocess, linking matrices), to 1e-5 where it accumulates freely (micro-motion).

Runs wherever a CUDA driver, a GPU and cuda-python or pycuda are present; skips with the reason elsewhere.
"""
import numpy as np
import pytest

from edge_stad.core.linking import HostMatrices
from edge_stad.errors import EdgeStadError
from edge_stad.kernels import loader, reference
from edge_stad.kernels.ops import CudaKernels, CudaLinkMatrices


def _kernels():
    try:
        return CudaKernels(), None
    except (EdgeStadError, ImportError, OSError) as e:
        return None, f"no CUDA device for the kernels: {e}"


KERNELS, WHY = _kernels()
pytestmark = pytest.mark.skipif(KERNELS is None, reason=str(WHY))


class Device:
    """Host arrays to the device and back through the kernels' own driver."""

    def __init__(self, kernels):
        self.driver, self.held = kernels.driver, []

    def put(self, array):
        array = np.ascontiguousarray(array)
        pointer = self.driver.alloc(array.nbytes)
        self.driver.to_device(pointer, array)
        self.held.append(pointer)
        return pointer

    def empty(self, nbytes):
        pointer = self.driver.alloc(nbytes)
        self.held.append(pointer)
        return pointer

    def get(self, pointer, shape, dtype):
        out = np.empty(shape, dtype)
        self.driver.synchronize()
        self.driver.to_host(out, pointer)
        self.driver.synchronize()
        return out

    def free(self):
        for pointer in self.held:
            self.driver.free(pointer)


@pytest.fixture
def device():
    d = Device(KERNELS)
    yield d
    d.free()


@pytest.mark.parametrize("src, dst", [((37, 53), (32, 48)), ((480, 640), (288, 288)), ((100, 90), (128, 128))])
@pytest.mark.parametrize("half", [False, True])
def test_preprocess_bit_exact(device, src, dst, half):
    clip = np.random.default_rng(0).integers(0, 256, (5, *src, 3), dtype=np.uint8)
    out = device.empty(clip.shape[0] * 3 * dst[0] * dst[1] * (2 if half else 4))
    KERNELS.preprocess(device.put(clip), 5, src, src[1] * 3, out, dst, half=half)
    got = device.get(out, (15, *dst), np.float16 if half else np.float32)
    np.testing.assert_array_equal(got, reference.preprocess(clip, dst, half=half))


def test_preprocess_reads_padded_rows(device):
    padded = np.random.default_rng(1).integers(0, 256, (3, 40, 64 * 3 + 32), dtype=np.uint8)
    frames = padded[:, :, :64 * 3].reshape(3, 40, 64, 3)   # a pitched frame: 32 bytes of padding per row
    out = device.empty(9 * 32 * 32 * 4)
    KERNELS.preprocess(device.put(padded), 3, (40, 64), 64 * 3 + 32, out, (32, 32))
    np.testing.assert_array_equal(device.get(out, (9, 32, 32), np.float32), reference.preprocess(frames, (32, 32)))


@pytest.mark.parametrize("clip_len, pairs, pool, size, channels, ksize", [
    (5, ((0, 4), (1, 4), (2, 4)), True, (288, 288), 8, 5),
    (5, ((0, 4), (1, 4), (2, 4)), True, (34, 50), 8, 5),
    (4, ((0, 1), (1, 2), (2, 3)), False, (30, 22), 4, 3),
])
def test_micro_motion_matches_reference(device, clip_len, pairs, pool, size, channels, ksize):
    rng = np.random.default_rng(2)
    clip = rng.standard_normal((2, 3 * clip_len, *size)).astype(np.float32)
    weight = (0.2 * rng.standard_normal((channels, 3, ksize, ksize))).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    out = device.empty(2 * len(pairs) * size[0] * size[1] * 4)
    KERNELS.micro_motion(device.put(clip), 2, clip_len, size, device.put(weight), device.put(bias), pairs, out,
                         channels=channels, kernel_size=ksize, pool=pool)
    got = device.get(out, (2, len(pairs), *size), np.float32)
    np.testing.assert_allclose(got, reference.micro_motion(clip, weight, bias, pairs, pool=pool), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("K", [1, 3, 5])
def test_link_matrices_bit_exact(K):
    rng = np.random.default_rng(K)

    def boxes(n):
        xy = rng.uniform(0, 300, (n, K, 2)).astype(np.float32)
        wh = rng.uniform(-2, 80, (n, K, 2)).astype(np.float32)   # a few degenerate boxes too
        return np.concatenate([xy, xy + wh], axis=2)

    matrices = CudaLinkMatrices(KERNELS)
    try:
        groups = [boxes(n) for n in (100, 1, 37, 300)]
        for got, expected in zip(matrices.nms_overlap(groups), HostMatrices.nms_overlap(groups)):
            np.testing.assert_array_equal(got, expected)
        groups = [(boxes(a), rng.integers(0, 2 * K + 1, a), boxes(m)) for a, m in ((10, 100), (1, 3), (40, 7))]
        for got, expected in zip(matrices.match_iou(groups), HostMatrices.match_iou(groups)):
            np.testing.assert_array_equal(got, expected)
    finally:
        matrices.close()


def test_compiled_modules_are_cached_per_process():
    assert loader.Kernels("tube_link", KERNELS.driver).module is KERNELS._link.module
