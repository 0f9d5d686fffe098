"""``edge-stad doctor``: what this machine has, and what ``Runtime(engine, backend="auto")`` runs here and why.

:func:`probe` records the machine as plain data: the Python, the board (a Jetson's model and L4T release), the
NVIDIA driver and its GPUs (asked of ``libcuda`` itself, so the answer does not depend on any Python binding),
NVRTC and the driver the kernels would use (asked of :mod:`edge_stad.kernels.loader`), TensorRT, ONNX Runtime
and its providers, OpenCV and its GStreamer, PyTorch, and the versions of the other GPU packages.
:func:`diagnose` decides from such a record alone, with the rules the runtime itself follows
(:func:`~edge_stad.engines.loader.auto_backend`, :func:`~edge_stad.engines.loader.default_providers`,
:func:`~edge_stad.engines.tensorrt_backend.plan_version_problem`, :func:`~edge_stad.kernels.loader.target_for`),
so a record from another machine (``edge-stad doctor --json`` in a bug report) replays there. :func:`doctor`
probes this machine, diagnoses, and, for an engine folder, opens the engine as the runtime would.
"""
import ctypes
import importlib.util
import os
import platform
import re
import sys

from edge_stad.errors import ConfigError, EngineError, KernelError
from edge_stad.version import __version__

PROBE_FORMAT = 1
CUDA_DEVICE_ATTRIBUTES = {"integrated": 18, "major": 75, "minor": 76}   # CUdevice_attribute values
JETPACK = {32: "4", 34: "5", 35: "5", 36: "6", 38: "7"}                 # L4T major -> JetPack major
KERNEL_USE = "the CUDA kernels run with a checkpoint on a CUDA PyTorch"


def _error(e):
    if isinstance(e.__cause__, ImportError) or isinstance(e, ImportError):   # "No module named ..." says it best
        return {"error": str(e.__cause__ or e)}
    return {"error": f"{type(e).__name__}: {e}"}


def _safely(probe):
    try:
        return probe()
    except Exception as e:   # any library can fail in its own way; the record says how
        return _error(e)


# -- probes: each returns plain data, or {"error": "..."} -------------------------------------------------

def _system():
    from edge_stad.bench.machine import cpu_model, memory_gb

    return {"os": platform.system(), "arch": platform.machine(), "python": platform.python_version(),
            "libc": " ".join(platform.libc_ver()).strip(), "cpu": cpu_model(), "memory_gb": memory_gb()}


def _jetson():
    """The board's model and L4T release where ``/etc/nv_tegra_release`` says this is a Jetson, else None."""
    from edge_stad.bench.machine import read_text

    release = read_text("/etc/nv_tegra_release")
    if release is None:
        return None
    found = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", release)
    l4t = f"{found.group(1)}.{found.group(2)}" if found else None
    return {"model": read_text("/proc/device-tree/model"), "l4t": l4t,
            "jetpack": JETPACK.get(int(found.group(1))) if found else None}


def _cuda():
    """The driver's CUDA version and its devices, from ``libcuda`` through ctypes."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return {"error": "no NVIDIA driver: libcuda.so.1 is not on the library path"}
    version = ctypes.c_int(0)
    cuda.cuDriverGetVersion(ctypes.byref(version))
    found = {"driver": f"{version.value // 1000}.{version.value % 1000 // 10}", "devices": []}
    status = cuda.cuInit(0)
    if status != 0:
        found["error"] = f"cuInit failed with CUDA error {status} (no usable GPU)"
        return found
    count = ctypes.c_int(0)
    cuda.cuDeviceGetCount(ctypes.byref(count))
    for ordinal in range(count.value):
        device, name, memory = ctypes.c_int(0), ctypes.create_string_buffer(256), ctypes.c_size_t(0)
        cuda.cuDeviceGet(ctypes.byref(device), ordinal)
        cuda.cuDeviceGetName(name, 256, device)
        cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), device)
        attributes = {}
        for key, attribute in CUDA_DEVICE_ATTRIBUTES.items():
            value = ctypes.c_int(0)
            cuda.cuDeviceGetAttribute(ctypes.byref(value), attribute, device)
            attributes[key] = value.value
        found["devices"].append({"name": name.value.decode(errors="replace"),
                                 "capability": 10 * attributes["major"] + attributes["minor"],
                                 "memory_gb": round(memory.value / 2 ** 30, 1),
                                 "integrated": bool(attributes["integrated"])})
    return found


def _nvrtc():
    from edge_stad.kernels import loader

    return {"version": list(loader.nvrtc_version()), "archs": loader.supported_archs(),
            "binding": loader.nvrtc_module().__name__}


def _kernel_driver():
    from edge_stad.kernels import loader

    driver = loader.open_driver()
    return {"driver": driver.name, "capability": driver.capability}


def _tensorrt():
    from edge_stad.engines import tensorrt_runtime

    return {"version": tensorrt_runtime.tensorrt().__version__}


def _onnxruntime():
    import onnxruntime

    return {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}


def _opencv():
    import cv2

    found = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return {"version": cv2.__version__, "gstreamer": bool(found) and found.group(1).upper() == "YES"}


def _torch():
    if importlib.util.find_spec("torch") is None:
        return {"error": "not installed"}
    import torch

    cuda = torch.cuda.is_available()
    return {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
            "capabilities": [10 * a + b for a, b in (torch.cuda.get_device_capability(i)
                                                     for i in range(torch.cuda.device_count()))] if cuda else []}


def probe():
    """This machine as plain data (JSON-able): the ``machine`` of ``edge-stad doctor --json``."""
    from edge_stad.bench.machine import versions

    probes = {"system": _system, "jetson": _jetson, "cuda": _cuda, "nvrtc": _nvrtc, "kernels": _kernel_driver,
              "tensorrt": _tensorrt, "onnxruntime": _onnxruntime, "opencv": _opencv, "torch": _torch,
              "libraries": versions}
    record = {"format": PROBE_FORMAT, "edge_stad": __version__}
    record.update((name, _safely(fn)) for name, fn in probes.items())
    return record


PROBES = ("system", "cuda", "nvrtc", "kernels", "tensorrt", "onnxruntime", "opencv", "torch")


def load_machine(path):
    """A machine recorded by ``edge-stad doctor --json`` (the whole report or its ``machine``), checked."""
    from edge_stad.atomic import read_json

    recorded = read_json(path, ConfigError)
    machine = recorded.get("machine", recorded) if isinstance(recorded, dict) else None
    if not isinstance(machine, dict) or machine.get("format") != PROBE_FORMAT:
        raise ConfigError(f"{path} is not a machine recorded by `edge-stad doctor --json` (format {PROBE_FORMAT})")
    bad = [name for name in PROBES if not isinstance(machine.get(name), dict)]
    if bad:
        raise ConfigError(f"{path}: the recorded machine lacks {', '.join(bad)}")
    return machine


# -- decisions -------------------------------------------------------------------------------------------

def _driver_major(machine):
    driver = machine["cuda"].get("driver")
    return int(driver.split(".")[0]) if driver else None


def _gpus(machine):
    return machine["cuda"].get("devices") or []


def kernel_target(machine):
    """``(target, why)``: what the CUDA kernels compile to on ``machine`` (``"sm_72"``, ``"compute_87"``,
    ``"sm_72 (nvcc)"``), or None and why they cannot load there."""
    from edge_stad.kernels import loader

    driver, nvrtc = machine["kernels"], machine["nvrtc"]
    if not _gpus(machine):
        return None, "no NVIDIA GPU"
    if "error" in driver:
        return None, f"no CUDA driver binding for them: {driver['error']}"
    capability = driver["capability"]
    if "error" in nvrtc:
        if driver["driver"] == "pycuda":
            return f"sm_{capability} (nvcc)", "pycuda compiles them with nvcc (no NVRTC through cuda-python)"
        return None, f"no NVRTC: {nvrtc['error']}"
    try:
        target = loader.target_for(capability, nvrtc["archs"], nvrtc["version"])
    except KernelError as e:
        return None, str(e)
    nvrtc_name = f"NVRTC {'.'.join(map(str, nvrtc['version']))}"
    if isinstance(target, str):
        return target, f"{nvrtc_name} predates compute {capability}: PTX, which the driver compiles at load"
    return f"sm_{target}", f"{nvrtc_name} compiles a cubin for the GPU, loaded through {driver['driver']}"


def _advice(machine):
    """What to install for more: TensorRT, ONNX Runtime's CUDA provider, the kernels' bindings, jtop."""
    gpu, jetson, major = bool(_gpus(machine)), machine.get("jetson"), _driver_major(machine)
    libraries = machine.get("libraries") or {}
    advice = []
    if gpu and "version" not in machine["tensorrt"]:
        advice.append("TensorRT (the fastest backend): " + (
            "it comes with JetPack: sudo apt install python3-libnvinfer" if jetson else
            f"pip install tensorrt-cu{major}" if major in (12, 13) else
            "pip install tensorrt-cu11 (TensorRT 10.x; a CUDA 12 or 13 driver opens tensorrt-cu12/-cu13)")
            + "; then build plans here: edge-stad build --checkpoint CKPT --backend tensorrt [--fp16|--int8]")
    if gpu and "CUDAExecutionProvider" not in machine["onnxruntime"].get("providers", []):
        advice.append("ONNX Runtime's CUDA provider: " + (
            "NVIDIA's onnxruntime-gpu wheel for this JetPack" if jetson else
            "pip uninstall onnxruntime && pip install onnxruntime-gpu"))
    if gpu and kernel_target(machine)[0] is None:
        bindings = libraries.get("cuda-bindings") or libraries.get("cuda-python")
        if "error" in machine["kernels"] and not bindings and "pycuda" not in libraries:
            advice.append(f"the CUDA kernels' bindings: pip install 'cuda-python=={major}.*' (the driver's CUDA "
                          f"major; or pycuda)")
        elif "error" in machine["kernels"] and bindings and int(bindings.split(".")[0]) != major:
            advice.append(f"the CUDA kernels' bindings: cuda-python {bindings} needs a CUDA "
                          f"{bindings.split('.')[0]} driver, this one is CUDA {major}: "
                          f"pip install 'cuda-python=={major}.*'")
        elif "error" in machine["nvrtc"]:
            advice.append("NVRTC for the CUDA kernels: " + (
                "JetPack's CUDA has it: add /usr/local/cuda/lib64 to LD_LIBRARY_PATH" if jetson else
                f"pip install nvidia-cuda-nvrtc{f'-cu{major}' if major and major < 13 else ''}"))
    if jetson and machine["opencv"].get("gstreamer") is False:
        advice.append("CSI cameras and GStreamer pipelines: this OpenCV has no GStreamer (pip's opencv-python-headless "
                      "shadows JetPack's): pip uninstall opencv-python-headless lets JetPack's python3-opencv load")
    if jetson and "jetson-stats" not in libraries:
        advice.append("power readings in edge-stad bench: pip install jetson-stats (and start its jtop service)")
    return advice


def _engine_choices(machine, path, manifest):
    """The runtime's choices for engine folder ``path`` on ``machine``: ``(facts, choices, problems, advice)``."""
    from edge_stad.engines.loader import auto_backend, check_model, default_providers
    from edge_stad.engines.tensorrt_backend import plan_version_problem

    model = manifest["model"]
    built = (manifest.get("tensorrt") or {}).get("tensorrt")
    facts = {"path": path, "model": model.get("name"), "backbone": model.get("backbone") or model.get("backbone_3d"),
             "input_size": model.get("input_size"), "precision": manifest["precision"],
             "int8_flavor": manifest.get("int8_flavor"), "graphs": sorted(manifest["graphs"]),
             "plans": sorted(manifest.get("plans") or {}), "plans_built_by": built}
    choices, problems, advice = [], [], []
    try:
        check_model(path, manifest)
    except EngineError as e:
        return facts, choices, [str(e)], advice
    trt = machine["tensorrt"].get("version")
    backend, why = auto_backend(manifest, lambda: trt is not None)
    choices.append({"what": "backend", "choice": backend, "why": why})
    if backend == "tensorrt":
        problem = plan_version_problem(path, manifest, trt)
        if problem:
            problems.append(problem)
        choices.append({"what": "precision", "choice": manifest["precision"],
                        "why": f"the plans' own (TensorRT {built or 'unrecorded'})"})
    else:
        ort = machine["onnxruntime"]
        if "error" in ort:
            problems.append(f"ONNX Runtime is not importable: {ort['error']} (pip install onnxruntime)")
        else:
            providers = default_providers(ort["providers"])
            why = ("onnxruntime-gpu has the CUDA provider; CPU takes what it cannot run"
                   if "CUDAExecutionProvider" in providers else "this onnxruntime has no CUDAExecutionProvider")
            if "TensorrtExecutionProvider" in ort["providers"]:
                why += "; providers=['TensorrtExecutionProvider', ...] picks its TensorRT provider"
            choices.append({"what": "providers", "choice": ", ".join(providers), "why": why})
        flavor = manifest.get("int8_flavor")
        why = "the ONNX graphs' own"
        if manifest["precision"] == "int8":
            why += f" (QDQ, {flavor} flavour)"
            if flavor == "tensorrt" and not _gpus(machine):
                advice.append("this CPU: the INT8 'cpu' flavour is the one ONNX Runtime's CPU kernels are fast "
                              "with: edge-stad build ... --int8 --int8-flavor cpu")
        choices.append({"what": "precision", "choice": manifest["precision"], "why": why})
        if manifest.get("plans") and trt is None and _gpus(machine):
            advice.append("this engine has TensorRT plans that need TensorRT here")
        if not manifest.get("plans") and trt is not None:
            advice.append(f"TensorRT {trt} is here but this engine has no plans: edge-stad build --checkpoint CKPT "
                          f"--backend tensorrt --out {path} --force builds them")
    target, why = kernel_target(machine)
    choices.append({"what": "kernels", "choice": f"not used by {backend}",
                    "why": f"{KERNEL_USE}; here they would be "
                           + (f"{target} ({why})" if target else f"unavailable: {why}")})
    return facts, choices, problems, advice


def _checkpoint_choices(machine, path):
    torch, (target, why) = machine["torch"], kernel_target(machine)
    choices, problems = [], []
    if "error" in torch:
        problems.append(f"a checkpoint runs on the torch backend and torch is not importable: {torch['error']}")
    elif torch.get("cuda_available"):
        choices.append({"what": "backend", "choice": "torch on cuda:0", "why": "a checkpoint; this torch sees a GPU"})
        choices.append({"what": "kernels", "choice": target or "none",
                        "why": (f"AMMA runs with them ({why}); MENet runs PyTorch alone" if target else
                                f"PyTorch with host preprocessing and linking: {why}")})
    else:
        choices.append({"what": "backend", "choice": "torch on the CPU",
                        "why": f"a checkpoint; this torch ({torch['version']}) sees no GPU"})
    return {"path": path, "checkpoint": True}, choices, problems, []


def diagnose(machine, engine=None):
    """What the runtime picks on ``machine`` (a :func:`probe` record) for ``engine`` (an engine folder or a
    checkpoint ``.pt``, or None), with the reason for each choice, what blocks the engine, and what to install
    for more. ``runs`` is False when the engine cannot run there."""
    from edge_stad.backends import CHECKPOINT_SUFFIXES
    from edge_stad.engines.manifest import read_manifest

    report = {"edge_stad": __version__, "machine": machine, "engine": None, "choices": [], "problems": [],
              "advice": _advice(machine), "runs": None}
    if engine is None:
        return report
    path = os.fspath(engine)
    if os.path.isfile(path) and path.endswith(CHECKPOINT_SUFFIXES):
        facts, choices, problems, advice = _checkpoint_choices(machine, path)
    else:
        try:
            manifest = read_manifest(path)
        except EngineError as e:
            facts, choices, problems, advice = {"path": path}, [], [str(e)], []
        else:
            facts, choices, problems, advice = _engine_choices(machine, path, manifest)
    report.update(engine=facts, choices=choices, problems=problems, advice=report["advice"] + advice,
                  runs=not problems)
    return report


def _try_open(report):
    """Open the engine as the runtime would (``open_backend(..., backend="auto")``); a failure is a problem."""
    from edge_stad.backends import open_backend

    try:
        backend = open_backend(report["engine"]["path"])
    except Exception as e:   # what the runtime would raise here is the answer
        report["problems"].append(f"opening it failed: {_error(e)['error']}")
        report["runs"] = False
        return
    report["engine"]["opened"] = type(backend).__name__
    close = getattr(backend, "close", None)
    if close is not None:
        close()


def doctor(engine=None, machine=None, out=sys.stdout):
    """Probe this machine (or take a recorded ``machine``), diagnose ``engine``, print the report to ``out``
    (None: do not print) and return it; on this machine an engine is also opened as the runtime would."""
    report = diagnose(probe() if machine is None else machine, engine)
    if machine is None and report["runs"]:
        _try_open(report)
    if out is not None:
        out.write(format_report(report))
    return report


# -- text ------------------------------------------------------------------------------------------------

def _status(entry, fmt):
    return f"not available ({entry['error']})" if "error" in entry and len(entry) == 1 else fmt(entry)


def _nvrtc_line(nvrtc):
    archs = nvrtc["archs"]
    return (f"{'.'.join(map(str, nvrtc['version']))} through {nvrtc['binding']}"
            + (f", sm_{min(archs)}..sm_{max(archs)}" if archs else ""))


def _machine_lines(m):
    system, jetson, libraries = m["system"], m.get("jetson"), m.get("libraries") or {}
    board = f"{jetson.get('model')}, L4T {jetson.get('l4t')} (JetPack {jetson.get('jetpack')})" if jetson \
        else "not a Jetson"
    cuda = m["cuda"]
    gpus = "; ".join(f"{d['name']} (compute {d['capability'] // 10}.{d['capability'] % 10}, {d['memory_gb']} GB"
                     f"{', integrated' if d['integrated'] else ''})" for d in cuda.get("devices") or [])
    rows = [
        ("system", f"{system.get('os')} {system.get('arch')}, Python {system.get('python')}, {system.get('libc')}; "
                   f"{board}"),
        ("GPU", (f"driver CUDA {cuda['driver']}: " if cuda.get("driver") else "")
         + (gpus or cuda.get("error", "no device"))),
        ("TensorRT", _status(m["tensorrt"], lambda t: t["version"])),
        ("ONNX Runtime", _status(m["onnxruntime"], lambda o: f"{o['version']}: {', '.join(o['providers'])}")),
        ("NVRTC", _status(m["nvrtc"], _nvrtc_line)),
        ("kernels", "no NVIDIA GPU" if not cuda.get("devices") else
         _status(m["kernels"], lambda k: f"through {k['driver']} on compute {k['capability'] // 10}."
                                         f"{k['capability'] % 10}")),
        ("CUDA Python", ", ".join(f"{d} {libraries[d]}" for d in ("cuda-python", "cuda-bindings") if d in libraries)
         or "not installed"),
        ("pycuda", libraries.get("pycuda", "not installed")),
        ("OpenCV", _status(m["opencv"], lambda o: f"{o['version']}, GStreamer {'yes' if o['gstreamer'] else 'no'}")),
        ("PyTorch", _status(m["torch"], lambda t: f"{t['version']}, CUDA "
                                                  + (f"{t['cuda']} (GPU visible)" if t["cuda_available"] else
                                                     f"{t['cuda'] or 'none'} (no GPU visible)"))),
        ("power", f"jetson-stats (jtop) {libraries['jetson-stats']}" if "jetson-stats" in libraries else
         f"nvidia-ml-py {libraries['nvidia-ml-py']}" if "nvidia-ml-py" in libraries else
         "no reader (jetson-stats on a Jetson, nvidia-ml-py on a desktop GPU)"),
    ]
    return [f"  {name:<13}{value}" for name, value in rows]


def format_report(report):
    """The report as text: the machine, the engine's choices with their reasons, problems, and advice."""
    lines = [f"edge_stad {report['edge_stad']} doctor", "machine:"] + _machine_lines(report["machine"])
    engine = report["engine"]
    if engine is not None:
        size = "x".join(map(str, engine.get("input_size") or []))
        what = "checkpoint" if engine.get("checkpoint") else (
            f"{engine.get('model')} {engine.get('backbone') or ''} {size}, {engine.get('precision')}, "
            f"TensorRT plans: {', '.join(engine.get('plans') or []) or 'none'}" if "model" in engine else "unreadable")
        lines += ["", f"engine {engine['path']} ({what}):"]
        lines += [f"  {c['what']:<13}{c['choice']}: {c['why']}" for c in report["choices"]]
        if engine.get("opened"):
            lines.append(f"  {'opened':<13}yes ({engine['opened']})")
        lines += [f"  cannot run: {p}" for p in report["problems"]]
        lines.append(f"  {'verdict':<13}" + ("runs here" if report["runs"] else "CANNOT run here"))
    if report["advice"]:
        lines += ["", "to get more:"] + [f"  - {a}" for a in report["advice"]]
    return "\n".join(lines) + "\n"
