"""The CUDA kernels against the same work as PyTorch-CUDA ops and as their NumPy references (issue 7).

    python benchmarks/kernels_gpu.py                       # on a machine with an NVIDIA GPU
    python benchmarks/kernels_gpu.py --out benchmarks/results/kernels_h100

Per kernel: median time of the kernel, of the PyTorch-CUDA equivalent (separate ops, as the
model runs them) and of the NumPy reference on the CPU, interleaved (edge_stad.bench.latency),
plus the bytes each kernel must move (inputs read once, outputs written once) and the
achieved fraction of the GPU's memory bandwidth (from the device's memory clock and bus
width as NVML or PyTorch report them; ``--peak-gbs`` overrides). Parity with the reference
is checked on the same inputs first. Also the per-window linking time of a Linker with the
GPU matrices against the host ones (100 candidates x 10 tubes, K=5). Writes --out .md/.json.
"""
import argparse
import os
import platform
import sys

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=288, help="model input side (default 288, the paper's)")
    parser.add_argument("--clips", type=int, default=1, help="clips per micro-motion call")
    parser.add_argument("--source", default="720x1280", help="camera frame size HxW for preprocess")
    parser.add_argument("--peak-gbs", type=float, help="the GPU's memory bandwidth in GB/s (default: from the device)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "kernels_gpu"))
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from edge_stad.bench.latency import measure
    from edge_stad.bench.results import save_results
    from edge_stad.core.linking import Linker
    from edge_stad.kernels import reference
    from edge_stad.kernels.ops import CudaKernels, CudaLinkMatrices
    from edge_stad.models.micro_motion import MicroMotion
    from edge_stad.preprocess import MEAN_BGR, STD_BGR

    if not torch.cuda.is_available():
        sys.exit("kernels_gpu.py needs a CUDA device (PyTorch sees none)")
    dev = torch.device("cuda")
    kernels = CudaKernels(0, driver="cuda-python")
    stream = torch.cuda.current_stream().cuda_stream
    sync = torch.cuda.synchronize
    peak = args.peak_gbs or _bandwidth_gbs()
    rng = np.random.default_rng(0)
    rows, record = [], {"machine": {"gpu": torch.cuda.get_device_name(), "python": platform.python_version(),
                                    "torch": torch.__version__, "peak_gbs": peak}, "kernels": {}}

    def timed(name, calls, nbytes, parity):
        result = measure(calls, repeat=20, rounds=5, warmup=5)
        kernel_ms = result["kernel"]["median_ms"]
        entry = {"parity": parity, "bytes": nbytes, **{k: v["median_ms"] for k, v in result.items()},
                 "achieved_gbs": nbytes / kernel_ms / 1e6}
        entry["bandwidth_fraction"] = entry["achieved_gbs"] / peak if peak else None
        record["kernels"][name] = entry
        rows.append(f"| {name} | {parity} | {nbytes / 1e6:.2f} | {kernel_ms:.4f} | {entry['torch']:.4f} | "
                    f"{entry['numpy']:.2f} | {entry['torch'] / kernel_ms:.1f}x | {entry['achieved_gbs']:.0f} | "
                    + (f"{100 * entry['bandwidth_fraction']:.0f}% |" if peak else "n/a |"))

    # preprocess: one camera clip (5 frames) to the model input
    n, size = 5, (args.size, args.size)
    src_hw = tuple(int(v) for v in args.source.split("x"))
    frames = rng.integers(0, 256, (n, *src_hw, 3), dtype=np.uint8)
    src = torch.from_numpy(frames).to(dev)
    out = torch.empty((3 * n, *size), device=dev)
    mean = torch.tensor(MEAN_BGR, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD_BGR, device=dev).view(1, 3, 1, 1)

    def pre_kernel():
        kernels.preprocess(src.data_ptr(), n, src_hw, src_hw[1] * 3, out.data_ptr(), size, stream=stream)
        sync()

    def pre_torch():
        x = F.interpolate(src.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False)
        ((x.round() / 255 - mean) / std).reshape(3 * n, *size)
        sync()

    pre_kernel()
    parity = bool(np.array_equal(out.cpu().numpy(), reference.preprocess(frames, size)))
    timed("preprocess", {"kernel": pre_kernel, "torch": pre_torch,
                         "numpy": lambda: reference.preprocess(frames, size)},
          frames.nbytes + out.numel() * 4, "bit-exact" if parity else "MISMATCH")

    # micro-motion: the AMMA module at the model size
    mm = MicroMotion(5).to(dev).eval()
    mm.convolve_unused = False
    clip = torch.randn(args.clips, 15, *size, device=dev)
    motion = torch.empty(args.clips, 3, *size, device=dev)
    weight, bias = mm.shallow_conv.weight.detach().contiguous(), mm.shallow_conv.bias.detach().contiguous()

    def mm_kernel():
        kernels.micro_motion(clip.data_ptr(), args.clips, 5, size, weight.data_ptr(), bias.data_ptr(), mm.pairs,
                             motion.data_ptr(), stream=stream)
        sync()

    def mm_torch():
        with torch.no_grad():
            mm(clip)
        sync()

    mm_kernel()
    host_clip = clip.cpu().numpy()
    expected = reference.micro_motion(host_clip, weight.cpu().numpy(), bias.cpu().numpy(), mm.pairs)
    error = float(np.abs(motion.cpu().numpy() - expected).max())
    used_frames = 4   # frames 0, 1, 2 and the key frame
    timed("micro_motion", {"kernel": mm_kernel, "torch": mm_torch,
                           "numpy": lambda: reference.micro_motion(host_clip, weight.cpu().numpy(),
                                                                   bias.cpu().numpy(), mm.pairs)},
          clip.numel() * 4 * used_frames // 5 + motion.numel() * 4, f"max abs err {error:.1e}")

    # linking: one window of 100 candidates (10 actors + 90 clutter) against 10 open tubes, K=5
    K, clip_len = 5, 5
    actors = rng.uniform(20, 600, (10, 2)).astype(np.float32)

    def window(t):
        centres = np.concatenate([actors + t, rng.uniform(0, 640, (90, 2)).astype(np.float32)])
        boxes = np.concatenate([centres - 30, centres + 30], axis=1)
        tubelets = np.concatenate([np.tile(boxes, K), rng.uniform(0.01, 1, (100, 1)).astype(np.float32)], axis=1)
        return {0: tubelets.astype(np.float32)}

    windows = [window(t) for t in range(200)]
    matrices = CudaLinkMatrices(kernels)
    linkers = {"kernel": Linker(K, clip_len, matrices=matrices), "numpy": Linker(K, clip_len)}
    state = {name: 0 for name in linkers}

    def link(name):
        def step():
            i = state[name]
            linkers[name].push(clip_len * (i + K), windows[i % len(windows)])
            state[name] = i + 1
        return step

    result = measure({name: link(name) for name in linkers}, repeat=20, rounds=5, warmup=20)
    record["linking"] = {name: r["median_ms"] for name, r in result.items()}
    matrices.close()

    lines = [f"# CUDA kernels vs PyTorch-CUDA ops vs NumPy references ({record['machine']['gpu']})", "",
             f"Command: `python benchmarks/kernels_gpu.py {' '.join(argv or sys.argv[1:])}`", "",
             f"Input {args.size}x{args.size}, clip of 5 frames; preprocess from {args.source} frames. Medians of "
             "interleaved runs, synchronised after each call. Bytes: what the kernel must read and write once.", "",
             "| kernel | parity with reference | MB moved | kernel ms | PyTorch-CUDA ms | NumPy ms | "
             "vs PyTorch | GB/s | of peak |", "|---|---|---|---|---|---|---|---|---|", *rows, "",
             f"Linking, one window of 100 candidates x 10 tubes, K=5: Linker.push with the GPU matrices "
             f"{record['linking']['kernel']:.3f} ms, with the NumPy ones {record['linking']['numpy']:.3f} ms.", ""]
    save_results(args.out, "\n".join(lines), record)


def _bandwidth_gbs():
    """Theoretical memory bandwidth from NVML (memory clock x bus width x 2, DDR), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        return 2 * clock_mhz * 1e6 * bus_bits / 8 / 1e9
    except Exception:   # NVML missing or not answering: report no fraction rather than a guess
        return None


if __name__ == "__main__":
    main()
