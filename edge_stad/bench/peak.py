"""The machine's measured peak: MAC/s of large matrix products in the backend and precision an engine runs
in, so that an engine's achieved MAC/s reads as a fraction of what this hardware really does there,
not of a datasheet figure.

The product is a chain of ``r`` n x n matmuls in one call (INT8: quantize/dequantize around each, as
the engines are quantized, so ONNX Runtime and TensorRT pick their integer kernels). Two chain lengths
are timed, interleaved, and the fastest run of each kept (a peak: what the hardware does when nothing
disturbs it); the extra MACs over the extra time cancel everything but the matmuls: copies to and from
the device, call overhead, launch latency.
"""
import os
import tempfile

import numpy as np

from edge_stad.bench.latency import measure
from edge_stad.errors import ConfigError

SIZE = {"cpu": 1024, "cuda": 4096}
CHAINS = {"cpu": (1, 4), "cuda": (2, 18)}   # short and long chain lengths


class PeakUnavailable(Exception):
    """This backend and precision has no GEMM to measure here; the message says why."""


def gemm_onnx(n, repeats, precision, int8_flavor="cpu"):
    """Serialized ONNX (opset 17): ``y = x @ W @ W ...`` (``repeats`` matmuls), x and y ``(n, n)``.

    ``fp16``: half-precision I/O and weights; ``int8``: Q/DQ before every matmul and int8 weights, with
    uint8 activations around 128 (``cpu`` flavour) or symmetric int8 ones (``tensorrt``), as
    :mod:`edge_stad.quant.int8` quantizes engines.
    """
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise PeakUnavailable("the GEMM graph needs onnx (pip install onnx)") from None
    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32) / np.sqrt(n)  # keeps |y| ~ |x|
    half = precision == "fp16"
    if precision == "int8":
        w_scale = float(np.abs(w).max() / 127)
        zero = np.array(128, np.uint8) if int8_flavor == "cpu" else np.array(0, np.int8)
        weights = [numpy_helper.from_array(np.round(w / w_scale).astype(np.int8), "w_q"),
                   numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
                   numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
                   numpy_helper.from_array(np.array(4 / 127, np.float32), "x_scale"),
                   numpy_helper.from_array(zero, "x_zero")]
    else:
        weights = [numpy_helper.from_array(w.astype(np.float16 if half else np.float32), "w")]
    nodes, y = [], "x"
    for i in range(repeats):
        out = "y" if i == repeats - 1 else f"y{i}"
        if precision == "int8":
            nodes += [helper.make_node("QuantizeLinear", [y, "x_scale", "x_zero"], [f"q{i}"]),
                      helper.make_node("DequantizeLinear", [f"q{i}", "x_scale", "x_zero"], [f"d{i}"]),
                      helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], [f"w{i}"]),
                      helper.make_node("MatMul", [f"d{i}", f"w{i}"], [out])]
        else:
            nodes.append(helper.make_node("MatMul", [y, "w"], [out]))
        y = out
    dtype = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", dtype, [n, n])],
                              [helper.make_tensor_value_info("y", dtype, [n, n])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime >= 1.14 and TensorRT 8.5 read
    return model.SerializeToString()


def _input(n, precision):
    return np.random.default_rng(1).standard_normal((n, n)).astype(np.float16 if precision == "fp16" else np.float32)


def _onnxruntime(n, chains, precision, threads, providers, int8_flavor):
    from edge_stad.engines.onnxruntime_backend import create_session
    from edge_stad.errors import EngineError

    feed = {"x": _input(n, precision)}
    runs = {}
    for r in chains:
        try:
            session = create_session(gemm_onnx(n, r, precision, int8_flavor), threads, providers)
        except EngineError as e:
            raise PeakUnavailable(str(e)) from None
        runs[r] = lambda session=session: session.run(None, feed)
    return runs, lambda: None


def _torch(n, chains, precision, device):
    import torch

    if precision != "fp32":
        raise PeakUnavailable("the PyTorch backend runs FP32 here")
    x = torch.from_numpy(_input(n, precision)).to(device)
    w = x.T.contiguous() / float(np.sqrt(n))
    cuda = device.startswith("cuda")

    def chain(r):
        def run():
            with torch.no_grad():
                y = x
                for _ in range(r):
                    y = y @ w
            if cuda:
                torch.cuda.synchronize(device)
        return run

    return {r: chain(r) for r in chains}, lambda: None


def _tensorrt(n, chains, precision, device, int8_flavor, folder):
    from edge_stad.build import tensorrt_plans
    from edge_stad.engines.tensorrt_backend import open_plan

    feed = {"x": _input(n, precision)}
    plans = {}
    for r in chains:
        onnx_path, plan_path = (os.path.join(folder, f"gemm{r}.{ext}") for ext in ("onnx", "plan"))
        with open(onnx_path, "wb") as f:
            f.write(gemm_onnx(n, r, precision, int8_flavor))
        tensorrt_plans.build_plan(onnx_path, plan_path, precision)
        plans[r] = open_plan(plan_path, int(device.partition(":")[2] or 0))

    def close():
        for plan in plans.values():
            plan.close()

    return {r: (lambda plan=plans[r]: plan.run(feed)) for r in chains}, close


def measure_peak(backend, precision, device="cpu", threads=None, providers=None, int8_flavor="cpu"):
    """``{"gmac_per_s", "gemm"}``: the GEMM MAC/s of ``backend`` (onnxruntime, torch, tensorrt) in
    ``precision`` on ``device``; raises :class:`PeakUnavailable` where it cannot run here."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    n, chains = SIZE[kind], CHAINS[kind]
    with tempfile.TemporaryDirectory(prefix="edge_stad_gemm_") as folder:
        if backend == "onnxruntime":
            runs, close = _onnxruntime(n, chains, precision, threads, providers, int8_flavor)
        elif backend == "torch":
            runs, close = _torch(n, chains, precision, device)
        elif backend == "tensorrt":
            runs, close = _tensorrt(n, chains, precision, device, int8_flavor, folder)
        else:
            raise ConfigError(f"no GEMM peak for backend {backend!r}")
        try:
            times = measure(runs, repeat=3, rounds=3, warmup=2)
        finally:
            close()
    short, long = chains
    extra = (times[long]["min_ms"] - times[short]["min_ms"]) / 1e3
    if extra <= 0:
        raise PeakUnavailable(f"{long} chained matmuls did not take longer than {short} (timing noise)")
    return {"gmac_per_s": (long - short) * n ** 3 / extra / 1e9,
            "gemm": f"{n}x{n}x{n}, chains of {short} and {long}"}
