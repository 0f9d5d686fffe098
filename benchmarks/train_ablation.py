"""Train AMMA variants on the synthetic benchmark under one time budget and compare them.

    python benchmarks/train_ablation.py [--data data/synth_bench] [--minutes 20] [--out runs/ablation]

Each variant is trained with `edge-stad train` semantics (the `synthetic` preset, CPU),
then its best checkpoint is evaluated on the test split (frame-mAP@0.5 with the error
breakdown, video-mAP). Variants run one after another so they get the same machine.
Writes a markdown table to benchmarks/results/synthetic_ablation.md (and JSON beside it).
"""
import argparse
import os
import platform
import sys
import time

VARIANTS = {
    # name: TrainConfig overrides
    "mm_k3": dict(K=3, clip_len=5, fusion_stages=3),
    "rgb_k1": dict(K=1, clip_len=1, fusion_stages=0),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join("data", "synth_bench"))
    parser.add_argument("--out", default=os.path.join("runs", "ablation"))
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per variant")
    parser.add_argument("--steps", type=int, default=None, help="also cap the steps (the cosine schedule ends there)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results",
                                                          "synthetic_ablation"))
    args = parser.parse_args(argv)

    import torch

    from edge_stad.bench.results import save_results
    from edge_stad.data.act import ActDataset, is_act_dataset
    from edge_stad.eval.report import format_tables
    from edge_stad.models import load_checkpoint
    from edge_stad.train.inference import evaluate_model
    from edge_stad.train.trainer import TrainConfig, Trainer

    if not is_act_dataset(args.data):
        from edge_stad.data.synth.generate import generate_dataset

        generate_dataset(args.data, preset="bench", seed=0, progress=True)
    dataset = ActDataset(args.data)
    records = []
    for name in args.variants.split(","):
        out = os.path.join(args.out, name)
        cfg = TrainConfig(data=args.data, out=out, time_budget=args.minutes, max_steps=args.steps, epochs=100,
                          val_every=0, progress=False, **VARIANTS[name])
        began = time.monotonic()
        trainer = Trainer(cfg, dataset=dataset)
        result = trainer.fit()
        train_s = time.monotonic() - began
        model = load_checkpoint(result["last"])
        evaluation = evaluate_model(model, dataset, split=1)
        summary = evaluation.to_json()
        print(f"== {name}\n" + format_tables(evaluation), flush=True)
        records.append({"variant": name, "config": {k: v for k, v in vars(trainer.cfg).items() if k != "data"},
                        "steps": trainer.step, "samples_seen": trainer.step * trainer.cfg.batch_size,
                        "train_seconds": round(train_s, 1), "frame_mAP": summary["frame_mAP"],
                        "video_mAP": summary["video_mAP"], "frame_errors_mean": summary["frame_errors_mean"],
                        "frame_AP": summary["frame_AP"]})
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    lines = ["# AMMA on the synthetic benchmark: micro-motion K=3 vs RGB-only K=1", "",
             f"Command: `python benchmarks/train_ablation.py --minutes {args.minutes:g}"
             + (f" --steps {args.steps}" if args.steps else "") + "`", f"Machine: {machine}", "",
             "| variant | K | clip_len | fusion | input | steps | samples | frame-mAP@0.5 | video-mAP@0.2 | "
             "video-mAP@0.5 | classification err | missed | other |", "|" + "---|" * 13]
    for r in records:
        c, e = r["config"], r["frame_errors_mean"]
        lines.append(f"| {r['variant']} | {c['K']} | {c['clip_len']} | {c['fusion_stages']} | {c['input_size']} | "
                     f"{r['steps']} | {r['samples_seen']} | {r['frame_mAP']:.1f} | {r['video_mAP']['0.2']:.1f} | "
                     f"{r['video_mAP']['0.5']:.1f} | {e['classification']:.1f} | {e['missed']:.1f} | "
                     f"{e['other']:.1f} |")
    save_results(args.results, "\n".join(lines) + "\n", records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
