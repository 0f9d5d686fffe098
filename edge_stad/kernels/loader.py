"""Compile, cache, load and launch the ``.cu`` kernels of this folder at run time.

Compilation is NVRTC (no nvcc on the target) for the GPU's own architecture; the
binary is cached on disk under a key of the source text, the compile options, the
architecture and the NVRTC version, so a Jetson compiles once per kernel and loads
from the cache on every later start. Two drivers, picked by what is installed
(``driver="auto"`` tries them in this order):

* ``cuda-python``: ``cuda.bindings.nvrtc`` / ``driver`` (12.x, 13.x) or ``cuda.nvrtc`` /
  ``cuda.cuda`` (11.x, JetPack 5); launches take a stream handle (an int, e.g.
  ``torch.cuda.current_stream().cuda_stream``);
* ``pycuda`` (common on JetPack 5 images): its driver loads and launches (streams are
  ``pycuda.driver.Stream`` objects); it compiles with NVRTC through cuda-python when that
  imports, else with ``pycuda.compiler`` (nvcc, which JetPack installs).

Both work in the device's primary context, the one PyTorch, TensorRT and the CUDA runtime
API use, so pointers from any of them can be passed to the kernels.
"""
import hashlib
import os
import re
import threading

import numpy as np

from edge_stad.atomic import atomic_write
from edge_stad.errors import KernelError, MissingDependencyError

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = ("preprocess", "micro_motion", "tube_link")
ARG_TYPES = ("ptr", "i32", "i64", "f32")
_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.M)


def source(kernel):
    """The text of ``<kernel>.cu`` with its local includes inlined (NVRTC then needs no include path)."""
    if kernel not in KERNELS:
        raise KernelError(f"unknown kernel {kernel!r}; the kernels are {', '.join(KERNELS)}")

    def read(name):
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            return _INCLUDE.sub(lambda m: read(m.group(1)), f.read())

    return read(kernel + ".cu")


def cache_dir():
    """``$EDGE_STAD_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/edge_stad/kernels`` (``~/.cache`` by default)."""
    explicit = os.environ.get("EDGE_STAD_KERNEL_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edge_stad", "kernels")


def compile_options(arch, defines=None):
    """NVRTC options for ``arch`` (e.g. 87: a cubin for sm_87; ``"compute_87"``: PTX) and ``-D`` defines."""
    target = arch if isinstance(arch, str) else f"sm_{int(arch)}"
    options = [f"--gpu-architecture={target}", "--std=c++14"]
    return options + [f"-D{k}={v}" for k, v in sorted((defines or {}).items())]


def nvrtc_module():
    """cuda-python's NVRTC binding: ``cuda.bindings.nvrtc`` (12.x, 13.x), else ``cuda.nvrtc`` (11.x, JetPack 5)."""
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        try:
            from cuda import nvrtc
        except ImportError as e:
            raise MissingDependencyError("compiling the CUDA kernels needs NVRTC through cuda-python: "
                                         "pip install cuda-python") from e
    return nvrtc


def _checked(call, *args):
    """Call a cuda-python function (which returns ``(status, *values)``); raise on a bad status."""
    result = call(*args)
    status = result[0]
    if int(status) != 0:
        raise KernelError(f"{call.__name__} failed: {status}")
    return result[1] if len(result) == 2 else result[1:]


def nvrtc_version():
    return tuple(_checked(nvrtc_module().nvrtcVersion))


def supported_archs():
    """The SM architectures this NVRTC can compile cubins for."""
    nvrtc = nvrtc_module()
    if not hasattr(nvrtc, "nvrtcGetSupportedArchs"):   # NVRTC 11.0 and older: no list
        return []
    return [int(a) for a in _checked(nvrtc.nvrtcGetSupportedArchs)]


def target_for(capability, archs=None, version=None):
    """Cubin arch for a device of compute ``capability`` (e.g. 87), or PTX of the newest arch below it.

    NVRTC builds cubins for the archs it knows; for a GPU newer than the NVRTC, PTX of the
    newest older arch is produced and the driver compiles it at load. ``archs`` and ``version``
    default to this NVRTC's (:func:`supported_archs`, :func:`nvrtc_version`); ``edge-stad doctor``
    passes a recorded machine's.
    """
    archs = supported_archs() if archs is None else archs
    if not archs or capability in archs:
        return capability
    older = [a for a in archs if a <= capability]
    if not older:
        version = nvrtc_version() if version is None else version
        raise KernelError(f"this NVRTC ({'.'.join(map(str, version))}) cannot compile for compute "
                          f"capability {capability // 10}.{capability % 10}; it knows sm_{min(archs)}..sm_{max(archs)}")
    return f"compute_{max(older)}"


def compile_kernel(kernel, arch, defines=None, cache=True):
    """The compiled binary (cubin, or PTX for a ``compute_XY`` arch) of ``kernel``; cached on disk."""
    text = source(kernel)
    options = compile_options(arch, defines)
    key = hashlib.sha256("\0".join([text, *options, repr(nvrtc_version())]).encode()).hexdigest()[:20]
    path = os.path.join(cache_dir(), f"{kernel}-{key}.{'ptx' if 'compute_' in options[0] else 'cubin'}")
    if cache and os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    binary, _ = _nvrtc_compile(text, kernel, options)
    if cache:
        with atomic_write(path) as f:
            f.write(binary)
    return binary


# One ptxas report line per entry function: "Used 80 registers, 7232 bytes smem, ..." (NVRTC 11.x) or
# "Used 59 registers, used 1 barriers, 320 bytes cumulative stack size, 7232 bytes smem, ..." (12.x, 13.x).
_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers(.*)")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log):
    """ptxas's ``-v`` report -> ``{entry: {"registers", "smem", "stack", "spill_stores", "spill_loads"}}`` (bytes)."""
    usage, entry = {}, None
    for line in log.splitlines():
        found = _PTXAS_ENTRY.search(line)
        if found:
            entry = usage.setdefault(found.group(1), {"registers": 0, "smem": 0, "stack": 0, "spill_stores": 0,
                                                      "spill_loads": 0})
            continue
        if entry is None:
            continue
        frame, used = _PTXAS_FRAME.search(line), _PTXAS_USED.search(line)
        if frame:
            entry.update(stack=int(frame.group(1)), spill_stores=int(frame.group(2)), spill_loads=int(frame.group(3)))
        if used:
            smem = _PTXAS_SMEM.search(used.group(2))
            entry.update(registers=int(used.group(1)), smem=int(smem.group(1)) if smem else 0)
    return usage


def resource_usage(kernel, arch, defines=None):
    """Registers, shared memory, stack frame and spills per entry function of ``kernel`` compiled to a cubin
    for ``arch`` (e.g. 72): ptxas's own report, asked of NVRTC with ``--ptxas-options=-v``. Not cached."""
    if isinstance(arch, str):
        raise KernelError(f"resource usage needs a cubin arch (an int such as 72), got {arch!r}")
    _, log = _nvrtc_compile(source(kernel), kernel, compile_options(arch, defines) + ["--ptxas-options=-v"])
    return parse_ptxas_log(log)


def _nvrtc_compile(text, kernel, options):
    """``(binary, log)``: the cubin (PTX for a ``compute_XY`` arch) and NVRTC's log."""
    nvrtc = nvrtc_module()
    program = _checked(nvrtc.nvrtcCreateProgram, text.encode(), f"{kernel}.cu".encode(), 0, [], [])
    try:
        status = nvrtc.nvrtcCompileProgram(program, len(options), [o.encode() for o in options])[0]
        # NVRTC writes into the buffers: they must be fresh mutable memory. ``b" " * size`` (cuda-python's
        # examples) hands it CPython's shared one-byte ``b" "`` when the log is empty, and the NUL written
        # there then corrupts every later user of that object (torch.save wrote unreadable checkpoints).
        size = _checked(nvrtc.nvrtcGetProgramLogSize, program)
        log = bytearray(size)
        _checked(nvrtc.nvrtcGetProgramLog, program, log)
        log = bytes(log).decode(errors="replace").rstrip(chr(0))
        if int(status) != 0:
            raise KernelError(f"NVRTC could not compile {kernel}.cu ({' '.join(options)}):\n{log}")
        ptx = "compute_" in options[0]
        size = _checked(nvrtc.nvrtcGetPTXSize if ptx else nvrtc.nvrtcGetCUBINSize, program)
        binary = bytearray(size)
        _checked(nvrtc.nvrtcGetPTX if ptx else nvrtc.nvrtcGetCUBIN, program, binary)
        return bytes(binary), log
    finally:
        nvrtc.nvrtcDestroyProgram(program)


# -- drivers: load a binary, get a function, launch it, move memory -----------------------------

class CudaPythonDriver:
    """cuda-python's driver API in the device's primary context."""

    name = "cuda-python"

    def __init__(self, device=0):
        try:
            from cuda.bindings import driver
        except ImportError:
            from cuda import cuda as driver  # 11.x layout; an ImportError here means no cuda-python
        import ctypes

        self.cu, self._ctypes = driver, {"ptr": ctypes.c_void_p, "i32": ctypes.c_int, "i64": ctypes.c_longlong,
                                         "f32": ctypes.c_float}
        try:
            _checked(driver.cuInit, 0)
        except Exception as e:   # a missing driver library raises its own error types
            raise KernelError(f"no usable NVIDIA driver for the CUDA kernels: {e}") from e
        self.ordinal = int(device)
        self.device = _checked(driver.cuDeviceGet, self.ordinal)
        self.context = _checked(driver.cuDevicePrimaryCtxRetain, self.device)
        attr = driver.CUdevice_attribute
        self.capability = (10 * _checked(driver.cuDeviceGetAttribute,
                                         attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.device)
                           + _checked(driver.cuDeviceGetAttribute,
                                      attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.device))

    def current(self):
        _checked(self.cu.cuCtxSetCurrent, self.context)   # the current context is per thread

    def load(self, binary):
        self.current()
        return _checked(self.cu.cuModuleLoadData, binary)

    def function(self, module, name):
        return _checked(self.cu.cuModuleGetFunction, module, name.encode())

    def launch(self, function, grid, block, args, shared=0, stream=0):
        self.current()
        values = tuple(int(v) if t in ("ptr", "i32", "i64") else float(v) for v, t in args)
        types = tuple(self._ctypes[t] for _, t in args)
        _checked(self.cu.cuLaunchKernel, function, *grid, *block, shared, stream, (values, types), 0)

    def alloc(self, nbytes):
        self.current()
        return int(_checked(self.cu.cuMemAlloc, max(int(nbytes), 1)))

    def free(self, pointer):
        _checked(self.cu.cuMemFree, pointer)

    def to_device(self, pointer, array, stream=0):
        _checked(self.cu.cuMemcpyHtoDAsync, pointer, array.ctypes.data, array.nbytes, stream)

    def to_host(self, array, pointer, stream=0):
        _checked(self.cu.cuMemcpyDtoHAsync, array.ctypes.data, pointer, array.nbytes, stream)

    def synchronize(self, stream=0):
        _checked(self.cu.cuStreamSynchronize, stream)


class PyCudaDriver:
    """pycuda's driver in the device's primary context (pushed on the calling thread)."""

    name = "pycuda"

    def __init__(self, device=0):
        import pycuda.driver as cuda

        self.cuda = cuda
        cuda.init()
        self.ordinal = int(device)
        dev = cuda.Device(self.ordinal)
        self.context = dev.retain_primary_context()
        self.context.push()
        major, minor = dev.compute_capability()
        self.capability = 10 * major + minor
        self._types = {"ptr": np.uintp, "i32": np.int32, "i64": np.int64, "f32": np.float32}

    def load(self, binary):
        return self.cuda.module_from_buffer(binary)

    def function(self, module, name):
        return module.get_function(name)

    def launch(self, function, grid, block, args, shared=0, stream=None):
        function(*(self._types[t](v) for v, t in args), grid=tuple(grid), block=tuple(block), shared=shared,
                 stream=stream or None)

    def alloc(self, nbytes):
        return self.cuda.mem_alloc(max(int(nbytes), 1))

    def free(self, pointer):
        pointer.free()

    def to_device(self, pointer, array, stream=None):
        self.cuda.memcpy_htod_async(pointer, array, stream or None)

    def to_host(self, array, pointer, stream=None):
        self.cuda.memcpy_dtoh_async(array, pointer, stream or None)

    def synchronize(self, stream=None):
        (stream or self.cuda.Context).synchronize()


DRIVERS = {"cuda-python": CudaPythonDriver, "pycuda": PyCudaDriver}


def open_driver(driver="auto", device=0):
    """A driver for CUDA device ``device``: ``auto`` (cuda-python, else pycuda), ``cuda-python`` or ``pycuda``."""
    if driver != "auto" and driver not in DRIVERS:
        raise KernelError(f"unknown CUDA driver {driver!r}; use auto, {' or '.join(DRIVERS)}")
    missing = []
    for name in DRIVERS if driver == "auto" else [driver]:
        try:
            return DRIVERS[name](device)
        except ImportError as e:
            missing.append(f"{name}: {e}")
    raise MissingDependencyError("the CUDA kernels need cuda-python (pip install cuda-python, the major version "
                                 "of the device's CUDA) or pycuda; " + "; ".join(missing))


class Kernels:
    """The compiled kernels of one source file on one device; ``kernels["name"](grid, block, args)`` launches.

    ``args`` are ``(value, type)`` pairs, type one of ``ptr i32 i64 f32``. Modules are compiled
    (or read from the disk cache) and loaded once per process for each source, defines and device.
    """

    _loaded = {}
    _lock = threading.Lock()

    def __init__(self, kernel, driver, defines=None):
        self.kernel, self.driver = kernel, driver
        key = (kernel, tuple(sorted((defines or {}).items())), driver.name, driver.ordinal)
        with self._lock:
            if key not in self._loaded:
                binary = self._compile(kernel, driver, defines)
                self._loaded[key] = (driver.load(binary), {})
        self.module, self.functions = self._loaded[key]

    @staticmethod
    def _compile(kernel, driver, defines):
        try:
            return compile_kernel(kernel, target_for(driver.capability), defines)
        except MissingDependencyError:
            if driver.name != "pycuda":
                raise
        from pycuda.compiler import compile as nvcc_compile  # JetPack without cuda-python: nvcc

        options = [f"-D{k}={v}" for k, v in sorted((defines or {}).items())]
        return nvcc_compile(source(kernel), arch=f"sm_{driver.capability}", options=options, no_extern_c=True)

    def __getitem__(self, name):
        if name not in self.functions:
            self.functions[name] = self.driver.function(self.module, name)
        function = self.functions[name]

        def launch(grid, block, args, shared=0, stream=0):
            bad = [t for _, t in args if t not in ARG_TYPES]
            if bad:
                raise KernelError(f"{self.kernel}.{name}: argument types must be {ARG_TYPES}, got {bad}")
            self.driver.launch(function, grid, block, args, shared, stream)

        return launch
