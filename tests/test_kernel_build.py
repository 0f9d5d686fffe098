"""Compiling the CUDA kernels: nvcc with warnings as errors (the CI check), NVRTC and its disk cache,
the drivers' selection, and the link-matrix packing checked against an emulated device."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from edge_stad.errors import KernelError, MissingDependencyError
from edge_stad.kernels import loader, reference
from edge_stad.kernels.ops import CudaLinkMatrices
from edge_stad.runtime.linking import HostMatrices

NVCC = shutil.which("nvcc")


def _nvcc_archs():
    if NVCC is None:
        return []
    out = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True).stdout
    return [int(a.split("_")[1]) for a in out.split()]


def _nvrtc_missing():
    try:
        loader.nvrtc_version()
    except MissingDependencyError as e:
        return str(e)
    return None


# sm_87 (Orin) and sm_90 (Hopper) always; sm_72 (Xavier) where this nvcc still has it (CUDA 13 dropped it)
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", [87, 90, 72])
@pytest.mark.parametrize("kernel", loader.KERNELS)
def test_nvcc_compiles_without_warnings(kernel, arch, tmp_path):
    if arch not in _nvcc_archs():
        pytest.skip(f"this nvcc cannot target sm_{arch}")
    result = subprocess.run([NVCC, f"-arch=sm_{arch}", "-Werror", "all-warnings", "-cubin", "-o",
                             str(tmp_path / f"{kernel}.cubin"), os.path.join(loader.HERE, f"{kernel}.cu")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{kernel}.cubin").read_bytes()[:4] == b"\x7fELF"


def test_source_inlines_local_includes():
    text = loader.source("preprocess")
    assert "#include" not in text and "float_to_half_bits" in text
    with pytest.raises(KernelError, match="unknown kernel"):
        loader.source("nope")


def test_cache_dir_and_options(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_STAD_KERNEL_CACHE", str(tmp_path))
    assert loader.cache_dir() == str(tmp_path)
    monkeypatch.delenv("EDGE_STAD_KERNEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert loader.cache_dir() == os.path.join(str(tmp_path), "edge_stad", "kernels")
    assert loader.compile_options(87, {"MM_KSIZE": 5}) == ["--gpu-architecture=sm_87", "--std=c++14", "-DMM_KSIZE=5"]
    assert loader.compile_options("compute_90")[0] == "--gpu-architecture=compute_90"


def test_target_falls_back_to_ptx_for_newer_gpus(monkeypatch):
    monkeypatch.setattr(loader, "supported_archs", lambda: [75, 80, 87, 90])
    monkeypatch.setattr(loader, "nvrtc_version", lambda: (13, 0))
    assert loader.target_for(87) == 87
    assert loader.target_for(89) == "compute_87"
    with pytest.raises(KernelError, match="cannot compile for compute capability 7.2"):
        loader.target_for(72)


@pytest.mark.skipif(_nvrtc_missing() is not None, reason=f"NVRTC unavailable: {_nvrtc_missing()}")
def test_nvrtc_compiles_every_kernel_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_STAD_KERNEL_CACHE", str(tmp_path))
    archs = [a for a in (87, 90) if a in loader.supported_archs()]
    assert archs, loader.supported_archs()
    for kernel in loader.KERNELS:
        for arch in archs:
            assert loader.compile_kernel(kernel, arch)[:4] == b"\x7fELF"
    assert len(os.listdir(tmp_path)) == len(loader.KERNELS) * len(archs)
    # a second request reads the cache; other defines are another binary
    monkeypatch.setattr(loader, "_nvrtc_compile", lambda *a: pytest.fail("recompiled a cached kernel"))
    assert loader.compile_kernel("tube_link", archs[0])[:4] == b"\x7fELF"
    with pytest.raises(BaseException, match="recompiled"):
        loader.compile_kernel("micro_motion", archs[0], {"MM_CHANNELS": 4})
    monkeypatch.undo()
    monkeypatch.setenv("EDGE_STAD_KERNEL_CACHE", str(tmp_path))
    assert loader.compile_kernel("micro_motion", archs[0], {"MM_CHANNELS": 4, "MM_KSIZE": 3})[:4] == b"\x7fELF"
    ptx = loader.compile_kernel("preprocess", f"compute_{archs[0]}")
    assert b".entry preprocess_f32" in ptx and b".entry preprocess_f16" in ptx


@pytest.mark.skipif(_nvrtc_missing() is not None, reason=f"NVRTC unavailable: {_nvrtc_missing()}")
def test_nvrtc_errors_carry_the_log(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_STAD_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(loader, "source", lambda kernel: "extern \"C\" __global__ void k() { undefined_thing; }")
    with pytest.raises(KernelError, match="undefined_thing"):
        loader.compile_kernel("tube_link", 87)
    assert os.listdir(tmp_path) == []


def test_driver_choice_errors(monkeypatch):
    with pytest.raises(KernelError, match="unknown CUDA driver"):
        loader.open_driver("opencl")

    def missing(device):
        raise ImportError("No module named 'x'")

    monkeypatch.setattr(loader, "DRIVERS", {"cuda-python": missing, "pycuda": missing})
    with pytest.raises(MissingDependencyError, match="cuda-python .* or pycuda"):
        loader.open_driver()


class EmulatedDevice:
    """Device memory as one host byte array and the two linking kernels as loops that index it exactly
    as tube_link.cu does (segments, row starts, output starts), to check the host-side packing."""

    name, ordinal = "emulated", 0

    def __init__(self):
        self.memory = np.zeros(1 << 20, np.uint8)
        self.top = 16

    def alloc(self, nbytes):
        pointer, self.top = self.top, self.top + -(-nbytes // 16) * 16
        return pointer

    def free(self, pointer):
        pass

    def to_device(self, pointer, array, stream=0):
        self.memory[pointer:pointer + array.nbytes] = array.view(np.uint8).ravel()

    def to_host(self, array, pointer, stream=0):
        array.view(np.uint8).ravel()[:] = self.memory[pointer:pointer + array.nbytes]

    def synchronize(self, stream=0):
        pass

    def view(self, pointer, dtype, count):
        return self.memory[pointer:pointer + count * np.dtype(dtype).itemsize].view(dtype)

    def nms_overlap(self, boxes, K, seg, start, out_start, out, rows, widest, stream=0):
        segs = self.view(seg, np.int32, rows)
        for i in range(rows):
            s = segs[i]
            begin, end = self.view(start, np.int32, s + 2)[s:s + 2]
            base = self.view(out_start, np.int32, s + 1)[s]
            block = reference.nms_overlap(self.view(boxes, np.float32, end * 4 * K).reshape(-1, K, 4)[begin:end])
            self.view(out, np.float32, base + (end - begin) ** 2)[base + (i - begin) * (end - begin):][:end - begin] \
                = block[i - begin]

    def match_iou(self, tubes, offset, K, tube_seg, tube_start, candidates, start, out_start, out, tubes_count,
                  widest, stream=0):
        segs = self.view(tube_seg, np.int32, tubes_count)
        all_tubes = self.view(tubes, np.float32, tubes_count * 4 * K).reshape(-1, K, 4)
        for a in range(tubes_count):
            s = segs[a]
            begin, end = self.view(start, np.int32, s + 2)[s:s + 2]
            first = self.view(tube_start, np.int32, s + 1)[s]
            base = self.view(out_start, np.int32, s + 1)[s]
            cands = self.view(candidates, np.float32, end * 4 * K).reshape(-1, K, 4)[begin:end]
            row = reference.match_iou(all_tubes[a:a + 1], self.view(offset, np.int32, a + 1)[a:], cands)[0]
            self.view(out, np.float32, base + (a - first + 1) * (end - begin))[base + (a - first) * (end - begin):] \
                = row


def test_link_matrix_packing_round_trips_every_label():
    device = EmulatedDevice()
    device.driver = device
    matrices = CudaLinkMatrices(device)
    rng = np.random.default_rng(0)
    K = 3

    def boxes(n):
        xy = rng.uniform(0, 100, (n, K, 2)).astype(np.float32)
        return np.concatenate([xy, xy + rng.uniform(5, 40, (n, K, 2)).astype(np.float32)], axis=2)

    groups = [boxes(n) for n in (4, 1, 7)]
    for got, boxes_ in zip(matrices.nms_overlap(groups), groups):
        np.testing.assert_array_equal(got, HostMatrices.nms_overlap([boxes_])[0])
    groups = [(boxes(a), rng.integers(0, 5, a), boxes(m)) for a, m in ((3, 5), (1, 1), (6, 2))]
    for got, group in zip(matrices.match_iou(groups), groups):
        np.testing.assert_array_equal(got, HostMatrices.match_iou([group])[0])
    assert matrices.nms_overlap([]) == [] and matrices.match_iou([]) == []
