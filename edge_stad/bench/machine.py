"""What a benchmark ran on: the machine and the library versions, read without importing the libraries."""
import os
import platform
import sys

from edge_stad.version import __version__

# (distribution, module): a module already imported reports its own version (JetPack's apt-installed
# TensorRT has no pip metadata), any other the installed distribution's.
LIBRARIES = (("numpy", "numpy"), ("onnxruntime", "onnxruntime"), ("onnxruntime-gpu", None), ("onnx", "onnx"),
             ("torch", "torch"), ("tensorrt", "tensorrt"), ("cuda-python", None), ("cuda-bindings", None),
             ("pycuda", "pycuda"), ("opencv-python-headless", "cv2"), ("opencv-python", None),
             ("nvidia-ml-py", "pynvml"), ("jetson-stats", "jtop"), ("polygraphy", "polygraphy"), ("psutil", "psutil"))


def versions():
    from importlib import metadata

    found = {"edge_stad": __version__, "python": platform.python_version()}
    for dist, module in LIBRARIES:
        version = getattr(sys.modules.get(module or ""), "__version__", None)
        if version is None:
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        found[dist] = str(version)
    return found


def read_text(path):
    """A small system file's text (``/proc``, ``/etc``), stripped, or None where it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None


def cpuinfo():
    """The first processor's ``/proc/cpuinfo`` fields (``model name``, ``cpu family``, ``flags``...); empty if none."""
    fields = {}
    for line in (read_text("/proc/cpuinfo") or "").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_model():
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def memory_gb():
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def gpu_name(device):
    """The CUDA device's name (torch, else NVML), or None on the CPU or where neither can say."""
    if not device.startswith("cuda"):
        return None
    index = int(device.partition(":")[2] or 0)
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(index)
    except ImportError:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
        return name.decode() if isinstance(name, bytes) else name
    except Exception:  # nvidia-ml-py missing, or no driver: the name is only informative
        return None


def machine_info(device):
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb(),
            "board": read_text("/proc/device-tree/model"), "gpu": gpu_name(device), "device": device,
            "os": platform.platform(), "arch": platform.machine()}
