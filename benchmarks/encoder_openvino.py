"""Does another CPU runtime get the INT8 encoder to 2x FP32? ONNX Runtime vs OpenVINO on the same ONNX files.

    python benchmarks/int8_build.py --checkpoint runs/ablation/mm_k3/last.pt --threads 2   # writes runs/bench_int8
    pip install openvino
    python benchmarks/encoder_openvino.py --engines runs/bench_int8 --threads 2

Times one graph (default the encoder, one clip) of the FP32 engine and of each INT8 engine
(``cpu`` and ``tensorrt`` flavours, the QDQ files ``int8_build.py`` wrote) on ONNX Runtime's CPU
provider and on OpenVINO's CPU plugin (which turns Q/DQ pairs into its own low-precision
kernels), interleaved in one process (edge_stad.bench.latency), on the inputs saved in the FP32
engine's reference_io.npz. Ratios are to ONNX Runtime FP32. Writes --results .md and .json.
"""
import argparse
import os
import platform
import sys

ENGINES = ("fp32", "int8-cpu", "int8-tensorrt")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=os.path.join("runs", "bench_int8"),
                        help="folder holding fp32/, int8-cpu/, int8-tensorrt/ (benchmarks/int8_build.py --out)")
    parser.add_argument("--graph", default="encoder")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results", "encoder_openvino"))
    args = parser.parse_args(argv)
    try:
        import openvino as ov
    except ImportError:
        parser.error("this benchmark needs OpenVINO: pip install openvino")
    import json

    import numpy as np
    import onnxruntime

    from edge_stad.bench.latency import measure
    from edge_stad.bench.results import save_results
    from edge_stad.engines.onnxruntime_backend import create_session

    found = [e for e in ENGINES if os.path.isfile(os.path.join(args.engines, e, f"{args.graph}.onnx"))]
    if "fp32" not in found:
        parser.error(f"no {args.engines}/fp32/{args.graph}.onnx: run benchmarks/int8_build.py first")
    reference = np.load(os.path.join(args.engines, "fp32", "reference_io.npz"))
    with open(os.path.join(args.engines, "fp32", "manifest.json"), encoding="utf-8") as f:
        model = json.load(f)["model"]
    prefix = args.graph + "."
    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": args.threads})
    calls = {}
    for engine in found:
        path = os.path.join(args.engines, engine, f"{args.graph}.onnx")
        session = create_session(path, threads=args.threads)
        feeds = {i.name: reference[prefix + i.name] for i in session.get_inputs()}
        calls[f"onnxruntime {engine}"] = lambda s=session, x=feeds: s.run(None, x)
        compiled = core.compile_model(core.read_model(path), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        calls[f"openvino {engine}"] = lambda r=request, x=feeds: r.infer(x)
    timing = measure(calls, repeat=10, rounds=10)
    base = timing["onnxruntime fp32"]["median_ms"]
    rows = [f"| {name} | {t['median_ms']:.2f} ({t['p90_ms']:.2f}) | {base / t['median_ms']:.2f}x |"
            for name, t in timing.items()]
    command = (f"python benchmarks/encoder_openvino.py --engines {args.engines} --graph {args.graph} "
               f"--threads {args.threads}")
    lines = [f"# {args.graph}: ONNX Runtime vs OpenVINO, FP32 and INT8 QDQ", "",
             f"{model.get('backbone')} K={model.get('K')} {model['input_size'][0]}x{model['input_size'][1]}. "
             f"Command: `{command}`",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, onnxruntime "
             f"{onnxruntime.__version__}, openvino {ov.__version__}", "",
             "| runtime, engine | ms per call (median, p90) | vs ONNX Runtime FP32 |", "|---|---|---|", *rows]
    save_results(args.results, "\n".join(lines) + "\n", {"command": command, "model": model, "timing": timing})
    return 0


if __name__ == "__main__":
    sys.exit(main())
