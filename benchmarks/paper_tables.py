"""Reproduce the complexity columns of AMMA's Tables 2 and 3 and write them as markdown.

    python benchmarks/paper_tables.py [--out benchmarks/results/paper_tables.md]

Counting is shape-only (meta device), so this takes seconds on any CPU.
"""
import argparse
import os
import sys

from edge_stad.atomic import atomic_write
from edge_stad.bench.complexity import profile_amma
from edge_stad.models import create_model

TABLE3 = {"resnet18": (15.8, 5.2), "mobilenetv2": (6.8, 1.3), "shufflenetv2": (6.0, 1.0)}
TABLE2 = [("RGB only", 15.07, 3.49), ("Stage 1", 15.08, 3.95), ("Stage 1-2", 15.23, 4.72),
          ("Stage 1-3", 15.75, 5.40), ("Stage 1-4", 17.85, 6.08), ("Stage 1-5", 26.24, 6.76)]


def profile(**cfg):
    base = dict(K=5, num_classes=21, decoder="dcn")
    base.update(cfg)
    return profile_amma(create_model("amma", **base))


def table3():
    rows = ["| backbone | params (M) | paper | paper-convention GMAC/clip | paper | normal GMAC/clip | "
            "stream GMAC/clip |",
            "|---|---|---|---|---|---|---|"]
    for backbone, (p_params, p_macs) in TABLE3.items():
        r = profile(backbone=backbone)
        rows.append("| {} | {:.3f} | {} | {:.3f} | {} | {:.3f} | {:.3f} |".format(
            backbone, r["params"]["total"] / 1e6, p_params, r["macs"]["paper"]["total"] / 1e9, p_macs,
            r["macs"]["normal"]["total"] / 1e9, r["macs"]["stream"]["total"] / 1e9))
    return rows


def table2():
    rows = ["| fusion | params (M) | paper | GMAC, mm at 144x144 (code) | GMAC, mm at 288x288 | paper | "
            "step (288) | paper step |", "|---|---|---|---|---|---|---|---|"]
    prev = None
    for stages, (name, p_params, p_macs) in enumerate(TABLE2):
        pooled, full = profile(backbone="resnet18", fusion_stages=stages), \
            profile(backbone="resnet18", fusion_stages=stages, mm_pool=False)
        g = full["macs"]["paper"]["total"] / 1e9
        step = "" if prev is None else f"{g - prev[0]:+.3f}"
        p_step = "" if prev is None else f"{p_macs - prev[1]:+.2f}"
        rows.append("| {} | {:.3f} | {} | {:.3f} | {:.3f} | {} | {} | {} |".format(
            name, pooled["params"]["total"] / 1e6, p_params, pooled["macs"]["paper"]["total"] / 1e9, g, p_macs,
            step, p_step))
        prev = (g, p_macs)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "paper_tables.md"))
    args = parser.parse_args(argv)
    text = "\n".join(
        ["# AMMA complexity vs the paper", "", "Command: `python benchmarks/paper_tables.py` (shape-only counting, "
         "torch.utils.flop_counter; 288x288, 21 classes, clip_len 5, dcn decoder, K=5).", "",
         "## Table 3", ""] + table3() + ["", "## Table 2 (ResNet-18)", ""] + table2()) + "\n"
    with atomic_write(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
