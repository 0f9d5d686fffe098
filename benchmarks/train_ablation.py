"""Train detector variants on the synthetic benchmark under one time budget and compare them.

    python benchmarks/train_ablation.py [--data data/synth_bench] [--minutes 20] [--out runs/ablation]
    python benchmarks/train_ablation.py --variants mm_k3,menet_lite,menet_lite_rgb --parallel \
        --results benchmarks/results/menet_synthetic
    python benchmarks/train_ablation.py --variants menet_lite --init ce=runs/distill/ce/backbone_3d.pt \
        --init mars=runs/distill/mars/backbone_3d.pt --results benchmarks/results/menet_distill

Each variant is trained with `edge-stad train` semantics (its family's `synthetic` preset, CPU),
then its last checkpoint is evaluated on the test split (frame-mAP@0.5 with the error breakdown,
video-mAP). Variants run one after another so they get the same machine, or with --parallel all at
once, one process each with an equal share of the cores, so that whatever else loads the machine
hits them alike and the budget is matched. Each ``--init NAME=PATH`` adds, for every MENet variant,
a run ``VARIANT+NAME`` whose 3D branch starts from PATH (`edge-stad distill student`'s
``backbone_3d.pt``). Writes a markdown table (and JSON beside it).
"""
import argparse
import os
import platform
import sys

VARIANTS = {
    # name: TrainConfig overrides
    "mm_k3": dict(K=3, clip_len=5, fusion_stages=3),
    "rgb_k1": dict(K=1, clip_len=1, fusion_stages=0),
    "menet_lite": dict(model="menet-lite", srm_frames=4),
    "menet_lite_rgb": dict(model="menet-lite", srm_frames=0),
    # STMA-Lite (ShuffleNetV2, 3D ShuffleNetV2 1.0x over 8 frames, K=5) with the blocks of the paper's Table 2 rows
    "stma_base": dict(model="stma-lite", blocks=""),
    "stma_cal": dict(model="stma-lite", blocks="cal"),
    "stma_cal_me": dict(model="stma-lite", blocks="cal,me"),
    "stma_cal_me_sta": dict(model="stma-lite", blocks="cal,me,sta"),
    "stma_cal_me_gr": dict(model="stma-lite", blocks="cal,me,gr"),
    "stma_lite": dict(model="stma-lite"),   # all: CAL + ME + STA + GR
    # the motion cues at one budget: AMMA's raw RGB difference (its Table 1 MM_Diff) beside mm_k3, rgb_k1 and
    # menet_lite; flow-fusion-lite (MobileNetV2 SSDLite, causal pairs) with the learned small flow network or
    # with OpenCV DIS flow given as an input
    "mm_diff_k3": dict(K=3, clip_len=5, fusion_stages=3, motion="diff"),
    "ffl_flow": dict(model="flow-fusion-lite"),
    "ffl_dis": dict(model="flow-fusion-lite", motion="dis"),
    # the other fusion blocks of the flow-fusion paper's Table 2 (ffl_flow is M-Concat, its default)
    "ffl_sum": dict(model="flow-fusion-lite", fusion="m-sum"),
    "ffl_average": dict(model="flow-fusion-lite", fusion="m-average"),
    "ffl_stfp": dict(model="flow-fusion-lite", fusion="stfp"),
}


def complexity(model):
    """Params (M) and GMACs per frame of the trained model as the runtime streams it."""
    from edge_stad.bench.complexity import profile_amma, profile_menet
    from edge_stad.bench.flow_complexity import profile_flow_fusion
    from edge_stad.bench.stma_complexity import profile_stma

    if model.config["name"] == "amma":
        p = profile_amma(model)
        return p["params"]["total"] / 1e6, p["macs"]["stream"]["total"] / model.config["clip_len"] / 1e9
    if model.config["name"] == "stma-lite":   # a new frame: per-frame parts, the 3D branch and the window parts
        p = profile_stma(model)
        return p["params"]["total"] / 1e6, p["macs"]["stream"]["1"]["total"] / 1e9
    if model.config["name"].startswith("flow-fusion"):   # a new frame with the streaming caches
        p = profile_flow_fusion(model)
        return p["params"]["total"] / 1e6, p["macs"]["stream"]["total"] / 1e9
    p = profile_menet(model)
    return p["params"]["total"] / 1e6, p["macs"]["frame"]["total"] / 1e9


def parse_inits(values):
    """``["ce=path", ...]`` -> ``{"ce": "path"}``."""
    inits = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--init takes NAME=PATH, got {value!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--init {name}: no file {path}")
        inits[name] = path
    return inits


def run_names(names, inits):
    """The runs to do: every variant, then every MENet variant once per initialisation."""
    return names + [f"{n}+{i}" for n in names if VARIANTS[n].get("model", "amma") != "amma" for i in inits]


def train_variant(name, args, threads=None):
    """Train (unless ``args.evaluate_only``) and evaluate one run (``VARIANT`` or ``VARIANT+INIT``); its record."""
    import torch

    from edge_stad.data.act import ActDataset
    from edge_stad.eval.report import format_tables
    from edge_stad.models import load_checkpoint
    from edge_stad.models.checkpoint import read_checkpoint
    from edge_stad.train.inference import evaluate_model
    from edge_stad.train.trainer import TrainConfig, Trainer

    if threads:
        torch.set_num_threads(threads)
    dataset = ActDataset(args.data)
    variant, _, init = name.partition("+")
    last = os.path.join(args.out, name, "last.pt")
    if not args.evaluate_only:
        cfg = TrainConfig(data=args.data, out=os.path.join(args.out, name), time_budget=args.minutes,
                          max_steps=args.steps, epochs=100, val_every=0, progress=False,
                          pretrained=parse_inits(args.init)[init] if init else None, **VARIANTS[variant])
        last = Trainer(cfg, dataset=dataset).fit()["last"]
    meta = read_checkpoint(last)["meta"]   # what the run did, as its last checkpoint records it
    model = load_checkpoint(last)
    evaluation = evaluate_model(model, dataset, split=1)
    summary = evaluation.to_json()
    print(f"== {name}\n" + format_tables(evaluation), flush=True)
    params, gmacs = complexity(model)
    config = {k: v for k, v in meta["train_config"].items() if k != "data"}
    return {"variant": name, "init": config["pretrained"], "config": config, "model": model.config,
            "params_m": params, "gmac_per_frame": gmacs, "threads": torch.get_num_threads(),
            "steps": meta["step"], "samples_seen": meta["step"] * config["batch_size"],
            "train_seconds": round(meta["trained_seconds"], 1), "frame_mAP": summary["frame_mAP"],
            "video_mAP": summary["video_mAP"], "frame_errors_mean": summary["frame_errors_mean"],
            "frame_AP": summary["frame_AP"]}


def _describe(config):
    if config["model"] == "amma":
        motion = " RGB diff" if config.get("motion") == "diff" else ""
        return (f"AMMA {config['backbone']} K={config['K']} n={config['clip_len']} fusion={config['fusion_stages']}"
                + motion)
    if config["model"].startswith("flow-fusion"):
        return (f"{config['model']} {config['backbone']} motion={config['motion'] or 'flow'} "
                f"{config['fusion'] or 'm-concat'}")
    if config["model"] == "stma-lite":
        blocks = config["blocks"]
        blocks = "CAL+ME+STA+GR" if blocks is None else "+".join(blocks.upper().split(",")) or "base"
        return f"STMA-Lite {config['backbone']} K={config['K']} {blocks}"
    return f"{config['model']} 3D {config['backbone']} T={config['clip_len']} SRM frames={config['srm_frames']}"


def _flow_cache(data, variants):
    """Fill the DIS flow cache the flow-fusion runs read (their synthetic preset's input size)."""
    from edge_stad.data.act import ActDataset
    from edge_stad.data.flow import FlowCache
    from edge_stad.train.presets import preset

    sizes = {preset("synthetic", None, VARIANTS[v]["model"])["input_size"] for v in variants
             if VARIANTS[v].get("model", "").startswith("flow-fusion") and VARIANTS[v].get("motion") != "micro-motion"}
    for size in sizes:
        FlowCache(ActDataset(data), os.path.join(data, "flow-cache"), size=size).precompute()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join("data", "synth_bench"))
    parser.add_argument("--out", default=os.path.join("runs", "ablation"))
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per variant")
    parser.add_argument("--steps", type=int, default=None, help="also cap the steps (the cosine schedule ends there)")
    parser.add_argument("--variants", default="mm_k3,rgb_k1", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--init", action="append", default=[], metavar="NAME=PATH",
                        help="also train each MENet variant from this 3D-branch state (repeatable)")
    parser.add_argument("--parallel", action="store_true", help="train all variants at once, cores shared equally")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="evaluate the runs' last checkpoints under --out again (their steps and training time "
                             "from the checkpoints), without training")
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results",
                                                          "synthetic_ablation"))
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    try:
        names = run_names(names, parse_inits(args.init))
    except (ValueError, OSError) as err:
        parser.error(str(err))

    import torch

    from edge_stad.bench.results import save_results
    from edge_stad.data.act import is_act_dataset

    if not is_act_dataset(args.data):
        from edge_stad.data.synth.generate import generate_dataset

        generate_dataset(args.data, preset="bench", seed=0, progress=True)
    if any(VARIANTS[n.partition("+")[0]].get("model", "").startswith("flow-fusion") for n in names):
        _flow_cache(args.data, [n.partition("+")[0] for n in names])   # once, not in every parallel run
    if args.parallel:
        import concurrent.futures
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // len(names))
        with concurrent.futures.ProcessPoolExecutor(len(names), mp_context=multiprocessing.get_context("spawn")) as ex:
            records = list(ex.map(train_variant, names, [args] * len(names), [threads] * len(names)))
    else:
        records = [train_variant(name, args) for name in names]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    command = (f"python benchmarks/train_ablation.py --variants {args.variants} --minutes {args.minutes:g}"
               + (f" --steps {args.steps}" if args.steps else "") + "".join(f" --init {i}" for i in args.init)
               + (" --parallel" if args.parallel else "") + (" --evaluate-only" if args.evaluate_only else ""))
    budget = f"{args.steps} steps (at most {args.minutes:g} minutes)" if args.steps else f"{args.minutes:g} minutes"
    lines = [f"# Synthetic benchmark, {budget} of training per variant", "",
             f"Command: `{command}`", f"Machine: {machine}"
             + (f"; variants trained in parallel, {records[0]['threads']} thread(s) each" if args.parallel else ""),
             "", "| variant | model | input | params (M) | GMAC/frame | steps | samples | frame-mAP@0.5 | "
             "video-mAP@0.2 | video-mAP@0.5 | classification err | missed | other |", "|" + "---|" * 13]
    for r in records:
        c, e = r["config"], r["frame_errors_mean"]
        lines.append(f"| {r['variant']} | {_describe(c)} | {c['input_size']} | {r['params_m']:.2f} | "
                     f"{r['gmac_per_frame']:.3f} | {r['steps']} | {r['samples_seen']} | {r['frame_mAP']:.1f} | "
                     f"{r['video_mAP']['0.2']:.1f} | {r['video_mAP']['0.5']:.1f} | {e['classification']:.1f} | "
                     f"{e['missed']:.1f} | {e['other']:.1f} |")
    save_results(args.results, "\n".join(lines) + "\n", records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
