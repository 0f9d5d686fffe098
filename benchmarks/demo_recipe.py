"""Training recipes for `edge-stad demo`, compared at a fixed number of optimizer steps.

    python benchmarks/demo_recipe.py --name base --steps 450
    python benchmarks/demo_recipe.py --name lr3e-3_w50 --steps 450 --set lr=3e-3 --set warmup=50
    python benchmarks/demo_recipe.py --report            # rewrite the table from the records

Each run trains AMMA-ShuffleNetV2 K=3 (the demo's model) from scratch on the synthetic `bench` set
with the `synthetic` preset plus the ``--set KEY=VALUE`` overrides (any TrainConfig field) for
exactly ``--steps`` optimizer steps (seeded sample order, so a run is a function of its recipe and
its thread count, not of how busy the machine is), then evaluates the final weights on the test
split. The step budget is what the demo can afford, so recipes are compared by the accuracy they
reach in it and by their cost per step: the process CPU time per step (data-loading worker
included), which a busy machine inflates far less than wall time (still: compare costs measured in
the same conditions). Records accumulate in ``--results``.json (one per run, with its command);
the markdown table beside it is rewritten after every run.
"""
import argparse
import ast
import contextlib
import fcntl
import json
import os
import platform
import resource
import shlex
import sys
import time


def parse_sets(values):
    """``["lr=3e-3", "input_size=96"]`` -> ``{"lr": 0.003, "input_size": 96}`` (Python literals, else strings)."""
    out = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {value!r}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def cpu_seconds():
    """CPU time of this process and its finished children (the data-loading workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def train_recipe(args, overrides):
    import torch

    from edge_stad.data.act import ActDataset
    from edge_stad.train.inference import evaluate_model
    from edge_stad.train.trainer import TrainConfig, Trainer, weights_sha256

    torch.set_num_threads(args.threads)
    dataset = ActDataset(args.data)
    cfg = TrainConfig(data=args.data, out=os.path.join(args.out, args.name), max_steps=args.steps, epochs=1000,
                      val_every=0, progress=False, seed=args.seed, **overrides)
    trainer = Trainer(cfg, dataset=dataset)
    began, cpu = time.monotonic(), cpu_seconds()
    trainer.fit()
    train_wall, train_cpu = time.monotonic() - began, cpu_seconds() - cpu
    began = time.monotonic()
    summary = evaluate_model(trainer.model, dataset, split=1).to_json()
    resolved = {k: v for k, v in vars(trainer.cfg).items() if k not in ("data", "out", "progress", "resume")}
    return {"name": args.name, "overrides": overrides, "config": resolved, "threads": args.threads,
            "steps": trainer.step, "samples_seen": trainer.step * trainer.cfg.batch_size,
            "train_wall_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
            "cpu_s_per_step": round(train_cpu / trainer.step, 3), "eval_wall_s": round(time.monotonic() - began, 1),
            "frame_mAP": summary["frame_mAP"], "video_mAP@0.5": summary["video_mAP"]["0.5"],
            "weights_sha256": weights_sha256(trainer.model), "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/demo_recipe.py " + " ".join(shlex.quote(a) for a in args.argv)}


@contextlib.contextmanager
def locked(path):
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)["runs"]


def report(base, runs):
    import torch

    from edge_stad.bench.results import save_results

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    lines = ["# Demo training recipes at a fixed step budget", "",
             "AMMA-ShuffleNetV2 K=3 (micro-motion, clip_len 5) from scratch on the synthetic `bench` set (seed 0), "
             "the `synthetic` preset plus the listed overrides, evaluated after the last step on the test split "
             "(frame-mAP@0.5 untrimmed, video-mAP@0.5; ACT protocol). CPU s/step: process CPU time per step "
             "(data loading included), measured on a shared machine: compare within the table, not with idle "
             f"wall time. Machine: {machine}.", "",
             "| run | overrides | batch | input | lr | warm-up | steps | threads | CPU s/step | frame-mAP@0.5 | "
             "video-mAP@0.5 | command |", "|" + "---|" * 12]
    for r in runs:
        c = r["config"]
        sets = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(preset)"
        lines.append(f"| {r['name']} | {sets} | {c['batch_size']} | {c['input_size']} | {c['lr']:g} | "
                     f"{c.get('warmup') or 0} | {r['steps']} | {r['threads']} | {r['cpu_s_per_step']:.2f} | "
                     f"{r['frame_mAP']:.1f} | {r['video_mAP@0.5']:.1f} | `{r['command']}` |")
    save_results(base, "\n".join(lines) + "\n", {"runs": runs}, echo=False)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", help="run name (a row of the table)")
    parser.add_argument("--steps", type=int, default=450, help="optimizer steps (default 450)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="TrainConfig override, repeatable (e.g. lr=3e-3, warmup=50, batch_size=4)")
    parser.add_argument("--seed", type=int, default=317, help="sample-order seed (default 317, the trainer's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data", default=os.path.join("data", "synth_bench"))
    parser.add_argument("--out", default=os.path.join("runs", "recipe"))
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results", "demo_recipe"))
    parser.add_argument("--report", action="store_true", help="only rewrite the markdown table from the records")
    args = parser.parse_args(argv)
    args.argv = argv
    path = args.results + ".json"
    if not args.report:
        if not args.name:
            parser.error("--name is required (unless --report)")
        try:
            overrides = parse_sets(args.set)
        except ValueError as err:
            parser.error(str(err))
        record = train_recipe(args, overrides)
        print(json.dumps(record, indent=1), flush=True)
    with locked(path):
        runs = _load(path)
        if not args.report:
            runs.append(record)
        report(args.results, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
