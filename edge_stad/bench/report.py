"""Benchmark outputs: the JSON document, one CSV row per record, a markdown report whose tables drop into
a README, and PNG plots (frames/s against GMACs; per-stage time bars), all written atomically.

Values that could not be measured stay the ``"unavailable: <reason>"`` strings the harness put there;
the tables show ``n/a`` and list the reasons below them.
"""
import csv

from edge_stad.atomic import atomic_write
from edge_stad.bench.results import save_results
from edge_stad.runtime.stream import STAGES

# CSV columns: "key" or "key.subkey" of a record.
CSV_FIELDS = (
    "model", "backbone", "K", "clip_len", "input_size", "decoder", "num_classes", "precision", "backend",
    "int8_flavor", "device", "weights", "baseline", "params_m", "paper_gmac_per_clip", "model_params_m",
    "stream_gmac_per_clip", "engine_mb", "fps", "vs_pytorch_fp32", "latency_ms.p50", "latency_ms.p90",
    "latency_ms.p99", "latency_ms.mean", "latency_ms.max", "latency_ms.samples", "flush_ms",
    *(f"stages_ms_per_frame.{s}" for s in STAGES), "clips_per_s", "achieved_gmac_per_s", "peak_gmac_per_s",
    "fraction_of_peak", "rss_peak_mb", "gpu_memory_mb", "power_w", "energy_per_clip_j", "fps_per_w",
    "accuracy.frame_mAP@0.5", "accuracy.video_mAP@0.5",
)


def field(record, path):
    """The value at ``path`` ("key" or "key.subkey"); an ``unavailable`` string met on the way is the value;
    missing -> None."""
    value = record
    for key in path.split(".", 1):
        if not isinstance(value, dict):
            return value if isinstance(value, str) else None
        value = value.get(key)
    return value


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return value


def write_csv(records, path):
    with atomic_write(path, "w", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        for record in records:
            writer.writerow([_csv_value(field(record, name)) for name in CSV_FIELDS])


def _num(value, digits=1, suffix=""):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def _size(record):
    return "x".join(map(str, record["input_size"]))


def _row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows):
    return [_row(header), _row(["---"] * len(header))] + [_row(r) for r in rows]


SPEED_HEADER = ("model", "backbone", "K", "precision", "backend", "params (M) [1]", "GMAC/clip [1]",
                "stream GMAC/clip [2]", "engine (MB)", "frames/s", "vs PyTorch FP32", "p50 ms", "p90 ms", "p99 ms",
                "peak RSS (MB)", "GMAC/s [3]", "of GEMM peak [3]")
STAGE_HEADER = ("backbone", "K", "precision", "backend", *STAGES, "total")
POWER_HEADER = ("backbone", "K", "precision", "backend", "power (W)", "J/clip", "frames/s per W",
                "CPU load % (all cores)", "process CPU % (one core = 100)", "GPU load %", "GPU MHz", "GPU memory (MB)")


def speed_rows(records):
    rows = []
    for r in records:
        lat = r["latency_ms"]
        rows.append([r["model"], r["backbone"], r["K"], r["precision"], r["backend"] + (" (baseline)" if r["baseline"]
                                                                                         else ""),
                     _num(r["params_m"], 3), _num(r["paper_gmac_per_clip"], 3), _num(r["stream_gmac_per_clip"], 3),
                     _num(r["engine_mb"]), _num(r["fps"]), _num(r["vs_pytorch_fp32"], 2, "x"), _num(lat["p50"], 2),
                     _num(lat["p90"], 2), _num(lat["p99"], 2), _num(r["rss_peak_mb"], 0),
                     _num(r["achieved_gmac_per_s"]), _num(100 * r["fraction_of_peak"], 0, "%")
                     if isinstance(r["fraction_of_peak"], float) else "n/a"])
    return rows


def _telemetry_stat(record, key, stat="mean"):
    for summary in record["telemetry"].values():
        if isinstance(summary, dict) and isinstance(summary.get(key), dict) and stat in summary[key]:
            return summary[key][stat]
    return None


def markdown(doc):
    """The report: how it was run, then the speed, stage, power and accuracy tables and what was skipped."""
    records, machine, video = doc["records"], doc["machine"], doc["video"]
    first = records[0] if records else None
    where = machine["gpu"] or machine["board"] or machine["cpu"]
    lines = [f"# edge-stad bench: {where} ({machine['device']})", ""]
    if doc.get("command"):
        lines += [f"Command: `{doc['command']}`", ""]
    v = doc["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in v if k not in ("edge_stad", "python"))
    lines += [f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GiB"
              + (f"; {machine['board']}" if machine["board"] else "") + (f"; GPU {machine['gpu']}" if machine["gpu"]
                                                                          else "") + f"; {machine['os']}.",
              f"Versions: edge_stad {v['edge_stad']}, Python {v['python']}, {libs}.", "",
              f"Weights: **{doc['weights']}**.",
              f"Video: {video['frames']} frames ({video['resolution']}) of the {video['source']}"
              + (f", model input {_size(first)}" if first else "") + "; a fresh Runtime per stream, every frame "
              "pushed (preprocess, encoder, head, decode, link, per-frame results); the first "
              f"{video['warmup_frames']} pushes of each stream are warm-up (streamed once untimed before the first "
              f"round too) and excluded; {video['rounds']} round(s), the backends interleaved, frames/s is the "
              f"median round. Wall time of the whole run: {doc['wall_s']:.0f} s.", ""]
    lines += ["## Speed", ""] + _table(SPEED_HEADER, speed_rows(records)) + [
        "",
        "[1] Params and GMAC per clip of the backbone's AMMA at paper Table 3's setting (288x288, K=5, DCN "
        "decoder, 21 classes), counted with the paper's convention, whatever the timed engine's size.",
        "[2] What one new clip costs the timed engine at its own input size: encoder on the clip plus the "
        "head on the K cached clip features.",
        "[3] Stream GMAC/clip x clips/s, and its share of the MAC/s a large GEMM reaches in the same backend and "
        "precision on this machine (the GEMM peak table below).",
        *(["MENet rows: a clip is one frame (the 3D branch, the 2D branch and the head run on every frame); [1] "
           "counts the whole model per frame at 224x224 with 24 classes (MENet's paper's cost setting), [2] at the "
           "timed size; K is 1 (every frame is its own window, linked online)."]
          if any(r["model"].startswith("menet") for r in records) else []),
        *(["STMA-Lite rows: a clip is one new frame (the 2D encoder on it, the 3D branch on its clip and the head "
           "on the window of K frames, every frame); [1] counts one window from scratch (every frame of its clip "
           "through the 2D encoder) at 224x224 with 24 classes, [2] a new frame at the timed size."]
          if any(r["model"].startswith("stma") for r in records) else []),
        "Latency is per `Runtime.push`: a window (encoder, head, decode, link) runs every clip_len-th frame, so "
        "p90/p99 are the frames that run one. `vs PyTorch FP32` is measured in the same run, same video. "
        "Peak RSS is the whole process's during that engine's streams (PyTorch and every engine of its group "
        "are loaded).", ""]
    lines += ["## Time per stage (ms per frame, paper Fig. 9)", ""]
    lines += _table(STAGE_HEADER, [[r["backbone"], r["K"], r["precision"], r["backend"],
                                    *(_num(r["stages_ms_per_frame"][s], 2) for s in STAGES),
                                    _num(sum(r["stages_ms_per_frame"].values()), 2)] for r in records]) + [""]
    lines += ["## Power and memory", ""]
    lines += _table(POWER_HEADER, [[r["backbone"], r["K"], r["precision"], r["backend"], _num(r["power_w"], 2),
                                    _num(r["energy_per_clip_j"], 3), _num(r["fps_per_w"], 1),
                                    *(_num(_telemetry_stat(r, key), 0) for key in ("cpu_load_pct", "process_cpu_pct",
                                                                                   "gpu_load_pct", "gpu_clock_mhz")),
                                    _num(r["gpu_memory_mb"], 0)] for r in records])
    reasons = sorted({r[k] for r in records for k in ("power_w", "gpu_memory_mb", "rss_peak_mb")
                      if isinstance(r[k], str)} | set(doc["telemetry"]["unavailable"].values()))
    lines += [""] + [f"- {reason}" for reason in reasons] + [""]
    if any(isinstance(r["accuracy"], dict) for r in records):
        lines += ["## Accuracy on the labelled set", ""] + _table(
            ("backbone", "K", "precision", "backend", "frame-mAP@0.5", "video-mAP@0.5"),
            [[r["backbone"], r["K"], r["precision"], r["backend"], _num(field(r, "accuracy.frame_mAP@0.5"), 2),
              _num(field(r, "accuracy.video_mAP@0.5"), 2)] for r in records]) + [""]
    lines += ["## GEMM peak", ""] + _table(
        ("backend", "precision", "device", "GEMM", "GMAC/s"),
        [[p["backend"], p["precision"] + (f" ({p['int8_flavor']})" if p.get("int8_flavor") else ""), p["device"],
          p.get("gemm", ""), _num(p["gmac_per_s"]) if not isinstance(p["gmac_per_s"], str) else p["gmac_per_s"]]
         for p in doc["peaks"]]) + [""]
    if doc["skipped"]:
        lines += ["## Skipped", ""] + [f"- {s['model']} {s['backbone']} K={s['K']} {s['backend']} {s['precision']}: "
                                       f"{s['reason']}" for s in doc["skipped"]] + [""]
    return "\n".join(lines)


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")


def label(record):
    return f"{record['backbone']} K{record['K']} {record['precision']} {record['backend']}"


def plot_fps_vs_gmacs(records, path):
    """Frames/s against the stream GMAC per clip: one colour per backbone, one marker per precision."""
    fig = _figure(7.5, 5)
    ax = fig.add_subplot(1, 1, 1)
    colours = {b: f"C{i}" for i, b in enumerate(sorted({r["backbone"] for r in records}))}
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    for r in records:
        ax.scatter(r["stream_gmac_per_clip"], r["fps"], color=colours[r["backbone"]], marker=markers[r["precision"]],
                   s=60, facecolors="none" if r["backend"] == "torch" else colours[r["backbone"]])
        ax.annotate(f"{r['precision']} {r['backend']}", (r["stream_gmac_per_clip"], r["fps"]), fontsize=7,
                    xytext=(5, -10 if r["backend"] == "torch" else 3), textcoords="offset points")
    for backbone, colour in colours.items():
        ax.scatter([], [], color=colour, label=backbone)
    for precision in sorted({r["precision"] for r in records}):
        ax.scatter([], [], color="grey", marker=markers[precision], label=precision)
    ax.set_xlabel(f"GMAC per clip, streaming, at the timed input size ({_size(records[0])})")
    ax.set_ylabel("frames/s")
    ax.set_title(f"edge-stad bench on {records[0]['device']} (hollow: PyTorch FP32 baseline)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_stages(records, path):
    """Stacked horizontal bars: ms per frame in each Runtime stage, one bar per record."""
    fig = _figure(8, 0.45 * len(records) + 1.5)
    ax = fig.add_subplot(1, 1, 1)
    names = [label(r) for r in records]
    left = [0.0] * len(records)
    for i, stage in enumerate(STAGES):
        widths = [r["stages_ms_per_frame"][stage] for r in records]
        ax.barh(names, widths, left=left, color=f"C{i}", label=stage)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame")
    ax.set_title("Time per stage")
    ax.legend(fontsize=8, ncol=len(STAGES), loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(records)))
    _save(fig, path)


def write_outputs(doc, base, json_path=None, plots=True):
    """``base.md``, ``base.csv``, the JSON (``json_path`` or ``base.json``) and, with matplotlib and
    ``plots``, ``base_fps.png`` and ``base_stages.png``. Returns the paths written and, for plots that
    could not be drawn, why."""
    text = markdown(doc)
    save_results(base, text, doc, json_path=json_path, echo=False)
    write_csv(doc["records"], base + ".csv")
    written = [base + ".md", json_path or base + ".json", base + ".csv"]
    notes = []
    if plots and doc["records"]:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            notes.append("plots skipped: matplotlib is not installed (pip install matplotlib)")
        else:
            plot_fps_vs_gmacs(doc["records"], base + "_fps.png")
            plot_stages(doc["records"], base + "_stages.png")
            written += [base + "_fps.png", base + "_stages.png"]
    return text, written, notes

