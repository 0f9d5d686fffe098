"""Packaging for edge_stad.

setup.py (not only pyproject.toml) on purpose: JetPack 5 ships a pip/setuptools
that needs it for editable installs.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "edge_stad", "version.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


# The runtime core (engines, runtime, eval, bench without training) needs only these.
CORE = [
    "numpy>=1.19",
    "opencv-python-headless>=4.5",
    "onnxruntime>=1.14",
    "tqdm>=4.60",
]
# torch is not pinned: `pip install torch==2.13.0` first on a CPU machine, or use
# the JetPack wheel on Jetson; an unpinned request would pull CUDA builds.
# what train, build, demo and bench need beyond the core; psutil: bench's memory (peak RSS) column
TRAIN = ["torch>=1.13", "onnx>=1.13", "matplotlib>=3.3", "psutil>=5.8"]
# Desktop NVIDIA GPUs: cuda-python of the driver's CUDA major (pip picks 13, which needs a CUDA 13 driver: add
# 'cuda-python==12.*' on a CUDA 12 one), NVML for power, Polygraphy to check plans. TensorRT itself is
# `pip install tensorrt-cu12` (or -cu13); `edge-stad doctor` says what is missing.
GPU = ["cuda-python>=12,<14", "nvidia-ml-py>=11.0", "polygraphy>=0.49"]
# Jetson: JetPack 5 (Python 3.8, CUDA 11.4) takes cuda-python 11.x, JetPack 6 (Python 3.10, CUDA 12) 12.x;
# pycuda builds from source with JetPack's nvcc (on PATH: /usr/local/cuda/bin); jetson-stats (jtop) knows
# JetPack 5 and 6. TensorRT comes with JetPack (python3-libnvinfer).
JETSON = ['cuda-python>=11.4,<12; python_version < "3.9"', 'cuda-python>=12,<13; python_version >= "3.9"',
          'pycuda>=2022.1; platform_machine == "aarch64"', "jetson-stats>=4.2", "polygraphy>=0.49"]
# NVRTC (pip wheels, no GPU needed) lets the tests compile every CUDA kernel on any Linux x86-64 machine
_LINUX_X86_64 = 'platform_system == "Linux" and platform_machine == "x86_64" and python_version >= "3.10"'
NVRTC = ["cuda-bindings>=13,<14; " + _LINUX_X86_64, "nvidia-cuda-nvrtc>=13,<14; " + _LINUX_X86_64]
# Action events to an MQTT broker (edge_stad.runtime.sinks.MqttSink, `edge-stad run --mqtt`)
MQTT = ["paho-mqtt>=2.0"]
# the tests also validate events against docs/events_schema.json (jsonschema) and generate inputs (hypothesis)
DEV = TRAIN + NVRTC + MQTT + ["pytest>=7.3", "ruff>=0.4", "vermin>=1.5", "hypothesis>=6.0",
                              "jsonschema>=4.0"]

setup(
    name="edge_stad",
    version=read_version(),
    description="Real-time spatio-temporal action detection (AMMA, MENet) on embedded GPUs and CPUs",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["edge_stad", "edge_stad.*"]),
    package_data={"edge_stad": ["kernels/*.cu"]},
    python_requires=">=3.8",
    install_requires=CORE,
    extras_require={
        "train": TRAIN,
        "gpu": GPU,
        "jetson": JETSON,
        "mqtt": MQTT,
        "dev": DEV,
        # a desktop's all; [jetson] pins another cuda-python on JetPack 5 and builds pycuda, so it stays apart
        "all": sorted(set(TRAIN + GPU + MQTT + DEV)),
    },
    entry_points={"console_scripts": ["edge-stad=edge_stad.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.8",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
