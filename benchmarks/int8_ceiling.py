"""What INT8 multiply-add rate can this CPU reach at all, and what does a frame rate ask of it?

    python benchmarks/int8_ceiling.py --checkpoint runs/ablation/mm_k3/last.pt --input-size 288 \
        --runtime-results benchmarks/results/runtime_cpu_288.json

Three rates, in one run:

* the instruction ceiling: ``int8_ceiling.c`` (AVX-512 VNNI ``VPDPBUSD`` back to back, 64 uint8 x
  int8 multiply-adds each, no memory traffic), one copy alone and one copy per core at once; the
  best of ``--rounds``. No code on this CPU does INT8 multiply-adds faster;
* ONNX Runtime's INT8 GEMM (:func:`edge_stad.bench.peak.measure_peak`, 1024^3 chains), one thread
  and one per core: the rate its kernels reach where the work is all large matrix products;
* with ``--checkpoint``: the model's streaming multiply-adds per clip
  (:func:`edge_stad.bench.complexity.profile_amma`, ``stream``), so each rate reads as frames per
  second if every multiply-add ran at it, and ``--fps`` (and the best ONNX Runtime INT8 rate in
  ``--runtime-results``, a ``runtime_throughput.py`` JSON) as a fraction of each.

Needs a C compiler (``cc``, or ``--cc``) and a CPU with AVX-512 VNNI. Writes ``--results`` .md and .json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "int8_ceiling.c")
MACS_PER_INSTRUCTION = 64
FLAGS = ("-O2", "-mavx512f", "-mavx512bw", "-mavx512vnni")


def compile_ceiling(cc, folder):
    """Path of ``int8_ceiling.c`` compiled into ``folder``; any compiler warning fails."""
    binary = os.path.join(folder, "int8_ceiling")
    subprocess.run([cc, *FLAGS, "-Wall", "-Werror", SOURCE, "-o", binary], check=True)
    return binary


def ceiling_gmacs(binary, copies, iterations):
    """Summed GMAC/s of ``copies`` concurrent runs of the compiled ``int8_ceiling.c``."""
    runs = [subprocess.Popen([binary, str(iterations)], stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    total = 0.0
    for run in runs:
        out, _ = run.communicate()
        if run.returncode:
            raise RuntimeError(f"{binary} exited with {run.returncode}")
        seconds, instructions = (float(v) for v in out.split()[:2])
        total += instructions * MACS_PER_INSTRUCTION / seconds / 1e9
    return total


def stream_gmac_per_clip(checkpoint, input_size):
    """``(GMAC per clip, frames per clip)`` of the model in streaming."""
    from edge_stad.bench.complexity import profile_amma
    from edge_stad.models.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint, input_size=(input_size, input_size))
    return profile_amma(model)["macs"]["stream"]["total"] / 1e9, model.clip_len


def best_runtime_fps(path):
    """``(name, frames/s)`` of the fastest ONNX Runtime INT8 configuration in a runtime_throughput.py JSON."""
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)["summary"]
    name = max((n for n in summary if n.startswith("onnxruntime INT8")), key=lambda n: summary[n]["fps"])
    return name, summary[name]["fps"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="an AMMA checkpoint: rates as frames/s of its streaming multiply-adds")
    parser.add_argument("--input-size", type=int, default=288)
    parser.add_argument("--fps", type=float, nargs="*", default=[500.0],
                        help="frame rates to express as a fraction of each rate (default: 500)")
    parser.add_argument("--runtime-results", help="a runtime_throughput.py JSON: its best ONNX Runtime INT8 rate too")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=100_000_000, help="loop iterations of each C run")
    parser.add_argument("--cc", default="cc", help="C compiler (default: cc)")
    parser.add_argument("--results", default=os.path.join(os.path.dirname(SOURCE), "results", "int8_ceiling_cpu"))
    args = parser.parse_args(argv)
    from edge_stad.bench.machine import cpuinfo

    info = cpuinfo()
    if "avx512_vnni" not in info.get("flags", "").split():
        parser.error("this CPU has no AVX-512 VNNI (avx512_vnni in /proc/cpuinfo)")
    cpu = f"{info.get('model name', '?')}, family {info.get('cpu family', '?')} model {info.get('model', '?')}"
    from edge_stad.bench.peak import measure_peak
    from edge_stad.bench.results import save_results

    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as folder:
        binary = compile_ceiling(args.cc, folder)
        rates = {"VNNI instruction ceiling, 1 core": max(ceiling_gmacs(binary, 1, args.iterations)
                                                         for _ in range(args.rounds)),
                 f"VNNI instruction ceiling, {cores} cores": max(ceiling_gmacs(binary, cores, args.iterations)
                                                                 for _ in range(args.rounds))}
    for threads in (1, cores):
        rates[f"ONNX Runtime INT8 GEMM, {threads} thread{'s' if threads > 1 else ''}"] = \
            measure_peak("onnxruntime", "int8", threads=threads)["gmac_per_s"]
    fps = {f"{f:g} frames/s": f for f in args.fps}
    if args.runtime_results:
        name, measured = best_runtime_fps(args.runtime_results)
        fps[f"{measured:.0f} frames/s (measured: {name}, {os.path.basename(args.runtime_results)})"] = measured
    per_clip = clip_len = None
    if args.checkpoint:
        per_clip, clip_len = stream_gmac_per_clip(args.checkpoint, args.input_size)

    command = "python benchmarks/int8_ceiling.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("checkpoint", args.checkpoint), ("input_size", args.input_size),
                                                     ("runtime_results", args.runtime_results)) if v)
    columns = list(fps) if per_clip else []
    header = ["rate", "GMAC/s"] + (["frames/s if every multiply-add ran at it"] if per_clip else [])
    header += [f"{c}: share" for c in columns]
    lines = [f"# INT8 multiply-add rates of this CPU ({cpu}, {cores} cores)", "",
             f"Command: `{command}`", ""]
    if per_clip:
        lines += [f"Model: {per_clip:.3f} GMAC per {clip_len}-frame clip in streaming at "
                  f"{args.input_size}x{args.input_size} ({args.checkpoint}).", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table = {}
    for name, rate in rates.items():
        row = {"gmac_per_s": rate}
        cells = [f"{rate:.0f}"]
        if per_clip:
            row["frames_per_s_bound"] = rate / per_clip * clip_len
            row["share_needed"] = {c: f * per_clip / clip_len / rate for c, f in fps.items()}
            cells += [f"{row['frames_per_s_bound']:.0f}"] + [f"{row['share_needed'][c]:.0%}" for c in columns]
        table[name] = row
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Share: the fraction of that rate the model's multiply-adds run at when the stream keeps that frame "
              "rate (everything else in the stream, the resize, decode, linking and the data movement between "
              "layers, in no time).", ""]
    save_results(args.results, "\n".join(lines), {"command": command, "cpu": cpu, "cores": cores,
                                                  "gmac_per_clip": per_clip, "clip_len": clip_len,
                                                  "input_size": args.input_size, "rates": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
