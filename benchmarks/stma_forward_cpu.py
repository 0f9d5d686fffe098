"""PyTorch CPU time of STMA and STMA-Lite: one tubelet window from scratch and one streamed frame.

    python benchmarks/stma_forward_cpu.py --threads 1 --out benchmarks/results/stma_forward_cpu

Random weights (time does not depend on them), eval mode, ``torch.no_grad``. Per model: ``window``
is ``model(clips)`` (the paper's unit: every snippet frame through the 2D backbone, the 3D branch on
the clip, the heads); ``frame`` is what a stream pays per new frame with cached per-frame outputs:
``encode`` of one frame, ``head`` of one window and ``encode_3d`` (every frame for STMA; STMA-Lite's
figure is with the 3D branch every frame as well, divide its ``encode_3d`` share by s for a refresh
every s frames). Medians over --rounds after one warm-up; rounds interleave the models. Measure on
an idle machine: the numbers are wall-clock times.
"""
import argparse
import platform
import statistics
import time


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="stma,stma-lite", help="comma-separated model names")
    parser.add_argument("--input-size", type=int, default=288)
    parser.add_argument("--num-classes", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="results path without extension (.md and .json); default: print only")
    args = parser.parse_args(argv)

    import torch

    from edge_stad.bench.results import save_results
    from edge_stad.models import create_model

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    s = args.input_size
    models = {name: create_model(name, num_classes=args.num_classes, input_size=s).eval()
              for name in args.models.split(",")}
    calls = {}
    for name, model in models.items():
        layout = model.layout
        clips = torch.randn(1, 3 * layout.clip_len, s, s)
        frame = clips[:, :3]
        with torch.no_grad():
            feat, wh, act = model.encode(frame)
            feat3d = model.encode_3d(clips) if model.backbone_3d is not None else None
        k, motion = layout.K, layout.motion[1] - layout.motion[0] + 1
        window = (feat.unsqueeze(1).expand(-1, k, -1, -1, -1), wh.unsqueeze(1).expand(-1, k, -1, -1, -1),
                  act.unsqueeze(1).expand(-1, motion, -1, -1, -1), feat3d)
        calls[name] = {
            "window": lambda m=model, c=clips: m(c),
            "encode": lambda m=model, f=frame: m.encode(f),
            "encode_3d": (lambda m=model, c=clips: m.encode_3d(c)) if feat3d is not None else None,
            "head": lambda m=model, w=window: m.head(*w),
        }
    times = {name: {part: [] for part, fn in parts.items() if fn is not None} for name, parts in calls.items()}
    with torch.no_grad():
        for round_ in range(args.rounds + 1):
            for name, parts in calls.items():
                for part, fn in parts.items():
                    if fn is not None:
                        seconds = _timed(fn)
                        if round_:
                            times[name][part].append(seconds)
    rows, data = [], {"input_size": s, "threads": args.threads, "rounds": args.rounds,
                      "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "models": {}}
    for name, parts in times.items():
        ms = {part: 1000 * statistics.median(values) for part, values in parts.items()}
        ms["frame"] = ms["encode"] + ms["head"] + ms.get("encode_3d", 0.0)
        data["models"][name] = {"config": models[name].config, "median_ms": ms}
        rows.append(f"| {name} | {ms['window']:.0f} | {ms['frame']:.0f} | {ms['encode']:.0f} | "
                    f"{ms.get('encode_3d', 0.0):.0f} | {ms['head']:.0f} |")
    markdown = (f"STMA PyTorch CPU time, {s}x{s}, {args.threads} thread(s), median of {args.rounds} rounds (ms)\n\n"
                "| model | window | frame | encode | encode_3d | head |\n|---|---|---|---|---|---|\n"
                + "\n".join(rows) + "\n")
    if args.out:
        save_results(args.out, markdown, data)
    else:
        print(markdown)


if __name__ == "__main__":
    main()
