"""Compiling the CUDA kernels: nvcc with warnings as errors (the CI check), NVRTC and its disk cache, CUDA 11.8's
NVRTC (JetPack 5's) for Xavier, Orin and Hopper with ptxas's register counts, the drivers' selection, and the
link-matrix packing checked against an emulated device."""
import json
import os
import re
import shutil
import string
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import edge_stad
from edge_stad.core.linking import HostMatrices
from edge_stad.errors import KernelError, MissingDependencyError
from edge_stad.kernels import loader, reference
from edge_stad.kernels.ops import CudaLinkMatrices

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
    # NVRTC wrote its (empty) logs into fresh buffers, not into CPython's shared one-byte b" "
    assert (b" " * 1)[0] == 32


@pytest.mark.skipif(_nvrtc_missing() is not None, reason=f"NVRTC unavailable: {_nvrtc_missing()}")
def test_nvrtc_errors_carry_the_log(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_STAD_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(loader, "source", lambda kernel: "extern \"C\" __global__ void k() { undefined_thing; }")
    with pytest.raises(KernelError, match="undefined_thing"):
        loader.compile_kernel("tube_link", 87)
    assert os.listdir(tmp_path) == []


# CUDA 11.8's NVRTC through cuda-python 11.8's ``cuda.nvrtc``: the layout of JetPack 5 (CUDA 11.4), whose Xavier
# (sm_72) no CUDA 13 compiler targets. $EDGE_STAD_CUDA11 names a `pip install --target` of both (.ci/run makes one);
# the loader runs in a subprocess that sees that cuda-python instead of the 13.x one of the dev extras.
CUDA11 = os.environ.get("EDGE_STAD_CUDA11", "")
CUDA11_INSTALL = ("pip install --target DIR 'cuda-python==11.8.3' 'nvidia-cuda-nvrtc-cu11==11.8.89' and set "
                  "EDGE_STAD_CUDA11=DIR (.ci/run does)")
JETSON_ARCHS = (72, 87, 90)   # Xavier (JetPack 5), Orin (JetPack 5 and 6), Hopper
EM_CUDA = 190


def _cuda11_missing():
    if not CUDA11:
        return f"EDGE_STAD_CUDA11 is not set: {CUDA11_INSTALL}"
    wanted = [os.path.join(CUDA11, "cuda", "nvrtc.pxd"), os.path.join(CUDA11, "nvidia", "cuda_nvrtc", "lib",
                                                                         "libnvrtc.so.11.2")]
    missing = [path for path in wanted if not os.path.isfile(path)]
    return f"{', '.join(missing)} missing: {CUDA11_INSTALL}" if missing else None


_CUDA11_SCRIPT = """
import json, sys
from edge_stad.kernels import loader
out = {"binding": loader.nvrtc_module().__name__, "version": loader.nvrtc_version(),
       "archs": loader.supported_archs(), "kernels": {}}
archs = [int(a) for a in sys.argv[1:]]
for kernel in loader.KERNELS:
    out["kernels"][kernel] = {"ptx": loader.compile_kernel(kernel, "compute_%d" % archs[0]).decode().rstrip(chr(0))}
    for arch in archs:
        cubin = loader.compile_kernel(kernel, arch)
        out["kernels"][kernel][arch] = {
            "cubin": {"magic": cubin[:4].hex(), "machine": int.from_bytes(cubin[18:20], "little"),
                      "sm": int.from_bytes(cubin[48:52], "little") & 0xFF},
            "usage": loader.resource_usage(kernel, arch)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cuda11(tmp_path_factory):
    reason = _cuda11_missing()
    if reason:
        pytest.skip(f"CUDA 11.8 NVRTC unavailable: {reason}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(edge_stad.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([CUDA11, root]),
               LD_LIBRARY_PATH=os.path.join(CUDA11, "nvidia", "cuda_nvrtc", "lib"),
               EDGE_STAD_KERNEL_CACHE=str(tmp_path_factory.mktemp("kernels11")))
    result = subprocess.run([sys.executable, "-c", _CUDA11_SCRIPT, *map(str, JETSON_ARCHS)], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _entries(kernel):
    pattern = r'extern "C" __global__ void (?:__launch_bounds__\(.*?\) )?(\w+)\('
    return sorted(re.findall(pattern, loader.source(kernel)))


def test_cuda11_nvrtc_compiles_every_kernel_for_xavier_orin_and_hopper(cuda11, report_section):
    assert cuda11["binding"] == "cuda.nvrtc" and tuple(cuda11["version"]) == (11, 8)
    assert set(JETSON_ARCHS) <= set(cuda11["archs"])
    lines = [f"NVRTC {'.'.join(map(str, cuda11['version']))} through {cuda11['binding']} (JetPack 5's layout); "
             "ptxas -v per entry function",
             f"{'kernel':<14}{'entry':<16}{'arch':<7}{'registers':>10}{'smem B':>8}{'stack B':>9}{'spills B':>10}"]
    for kernel in loader.KERNELS:
        entries = _entries(kernel)
        assert entries, kernel
        ptx = cuda11["kernels"][kernel]["ptx"]   # what a GPU newer than the NVRTC loads (loader.target_for)
        assert f".target sm_{JETSON_ARCHS[0]}" in ptx and sorted(re.findall(r"\.entry (\w+)\(", ptx)) == entries
        for arch in JETSON_ARCHS:
            built = cuda11["kernels"][kernel][str(arch)]
            assert built["cubin"]["magic"] == "7f454c46" and built["cubin"]["machine"] == EM_CUDA
            assert built["cubin"]["sm"] == arch, (kernel, arch, built["cubin"])
            assert sorted(built["usage"]) == entries
            for entry, usage in sorted(built["usage"].items()):
                assert 0 < usage["registers"] <= 255, (kernel, arch, usage)
                assert usage["spill_stores"] == usage["spill_loads"] == 0, (kernel, arch, usage)
                spills = usage["spill_stores"] + usage["spill_loads"]
                lines.append(f"{kernel:<14}{entry:<16}sm_{arch:<4}{usage['registers']:>10}{usage['smem']:>8}"
                             f"{usage['stack']:>9}{spills:>10}")
    report_section("CUDA kernels compiled for sm_72, sm_87, sm_90 with CUDA 11.8's NVRTC", lines)


# ptxas -v as NVRTC 11.8 and 13.x log it (micro_motion for sm_72 and sm_87)
PTXAS_11 = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'micro_motion' for 'sm_72'
ptxas info    : Function properties for micro_motion
ptxas         .     320 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 80 registers, 7232 bytes smem, 424 bytes cmem[0], 16 bytes cmem[2]
"""
PTXAS_13 = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'micro_motion' for 'sm_87'
ptxas info    : Function properties for micro_motion
ptxas         .     320 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 59 registers, used 1 barriers, 320 bytes cumulative stack size, 7232 bytes smem, 424 bytes cmem[0]
ptxas info    : Compile time = 311.607 ms
"""


def test_ptxas_report_parses_both_nvrtc_formats():
    assert loader.parse_ptxas_log(PTXAS_11) == {"micro_motion": {"registers": 80, "smem": 7232, "stack": 320,
                                                                 "spill_stores": 0, "spill_loads": 0}}
    assert loader.parse_ptxas_log(PTXAS_13) == {"micro_motion": {"registers": 59, "smem": 7232, "stack": 320,
                                                                 "spill_stores": 0, "spill_loads": 0}}
    assert loader.parse_ptxas_log("") == {}
    with pytest.raises(KernelError, match="needs a cubin arch"):
        loader.resource_usage("preprocess", "compute_87")


@given(st.dictionaries(st.text(string.ascii_lowercase + "_", min_size=1, max_size=20),
                       st.tuples(*[st.integers(0, 1 << 16)] * 5), max_size=4))
def test_ptxas_report_round_trips(entries):
    log = "ptxas info    : 0 bytes gmem\n"
    for name, (registers, smem, stack, stores, loads) in entries.items():
        log += (f"ptxas info    : Compiling entry function '{name}' for 'sm_72'\n"
                f"ptxas info    : Function properties for {name}\n"
                f"ptxas         .     {stack} bytes stack frame, {stores} bytes spill stores, "
                f"{loads} bytes spill loads\n"
                f"ptxas info    : Used {registers} registers" + (f", {smem} bytes smem" if smem else "")
                + ", 424 bytes cmem[0]\n")
    assert loader.parse_ptxas_log(log) == {
        name: {"registers": r, "smem": m, "stack": s, "spill_stores": a, "spill_loads": b}
        for name, (r, m, s, a, b) in entries.items()}


@pytest.mark.skipif(_nvrtc_missing() is not None, reason=f"NVRTC unavailable: {_nvrtc_missing()}")
def test_resource_usage_lists_every_entry_function():
    arch = max(a for a in loader.supported_archs() if a <= 90)
    for kernel in loader.KERNELS:
        usage = loader.resource_usage(kernel, arch)
        assert sorted(usage) == _entries(kernel)
        assert all(0 < u["registers"] <= 255 for u in usage.values()), usage
    assert loader.resource_usage("micro_motion", arch)["micro_motion"]["smem"] > 0   # the shared weight tile


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
