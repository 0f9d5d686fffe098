"""Text tables and plots of an :class:`~edge_stad.eval.evaluate.Evaluation` (values in percent)."""
from __future__ import annotations

import numpy as np

from edge_stad.atomic import atomic_write
from edge_stad.eval.evaluate import VIDEO_THRESHOLDS
from edge_stad.eval.frame_errors import ERRORS


def _table(header, rows, name_width):
    widths = [max(name_width, 5)] + [max(8, len(h)) for h in header[1:]]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for name, values in rows:
        cells = [name.ljust(widths[0])] + [f"{100 * v:.2f}".rjust(w) for v, w in zip(values, widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def format_tables(ev):
    """Per-class AP table and the error breakdown table, with a mean row each."""
    width = max(len(x) for x in ev.labels + ("mean",))
    video_cols = [f"video@{th:g}" for th in VIDEO_THRESHOLDS]
    aps = [ev.frame.ap] + [ev.video[th].ap for th in VIDEO_THRESHOLDS]
    rows = [(name, [a[i] for a in aps]) for i, name in enumerate(ev.labels)]
    rows.append(("mean", [ev.frame.mean] + [ev.video[th].mean for th in VIDEO_THRESHOLDS]))
    out = [f"frame-mAP@{ev.iou_threshold:g} ({ev.mode}) and video-mAP, split {ev.split}, {len(ev.videos)} videos, "
           "percent",
           _table(["class", "frame"] + video_cols, rows, width),
           f"video-mAP@0.5:0.95: {100 * ev.video_range:.2f}",
           "",
           f"frame-mAP error breakdown@{ev.iou_threshold:g}, percent (every detection counts, as ACT "
           "frameAP_error; each row sums to 100)"]
    if ev.without_gt:
        out.insert(2, f"note: {len(ev.without_gt)} class(es) without ground truth in this split count as AP 0 "
                      f"in the means (as the reference's frame-mAP): {', '.join(ev.without_gt)}")
    columns = [ev.errors.ap] + [getattr(ev.errors, e) for e in ERRORS]
    rows = [(name, [c[i] for c in columns]) for i, name in enumerate(ev.labels)]
    rows.append(("mean", [float(np.mean(c)) for c in columns]))
    out.append(_table(["class", "AP"] + list(ERRORS), rows, width))
    return "\n".join(out)


def plot(ev, path):
    """PNG with the frame-level PR curve of every class and the mean error breakdown."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5.5))
    FigureCanvasAgg(fig)
    curves, bars = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, c in zip(ev.labels, ev.frame.per_class):
        curves.plot(c.recall, c.precision, linewidth=1, label=f"{name} ({100 * c.ap:.1f})")
    curves.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"frame-level PR @{ev.iou_threshold:g} ({ev.mode}): mAP {100 * ev.frame.mean:.2f}")
    curves.legend(fontsize=6, ncol=2, loc="lower left")
    means = ev.errors.mean()
    names = ["AP"] + list(ERRORS)
    values = [100 * means["ap"]] + [100 * means[e] for e in ERRORS]
    bars.bar(names, values, color=["tab:green"] + ["tab:red"] * len(ERRORS))
    for x, v in enumerate(values):
        bars.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    bars.set(ylabel="percent of the frame-AP budget", ylim=(0, 100),
             title="frame-mAP error breakdown (mean over classes)")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
