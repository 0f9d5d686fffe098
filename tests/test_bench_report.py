"""Benchmark report writers: CSV and markdown round trips, unavailable values, PNG plots."""
import csv
import json

import pytest

from edge_stad.bench.report import CSV_FIELDS, field, markdown, write_outputs
from edge_stad.runtime.stream import STAGES

NO_POWER = "unavailable: no power sensor is read on a CPU-only machine (jtop on Jetson, NVML on NVIDIA GPUs)"


def record(backend, precision, fps, baseline_fps, flavor=None):
    return {
        "model": "amma", "backbone": "mobilenetv2", "K": 3, "clip_len": 5, "input_size": [128, 128],
        "decoder": "conv", "num_classes": 8, "precision": precision, "backend": backend, "int8_flavor": flavor,
        "device": "cpu", "weights": "random (untrained, built here; speed only)",
        "baseline": (backend, precision) == ("torch", "fp32"), "engine": None,
        "params_m": 6.827123, "paper_gmac_per_clip": 1.319871, "model_params_m": 6.69, "stream_gmac_per_clip": 0.4375,
        "engine_mb": 26.125, "fps": fps, "fps_rounds": [fps * 0.9, fps, fps * 1.1],
        "vs_pytorch_fp32": fps / baseline_fps,
        "latency_ms": {"p50": 0.125, "p90": 21.5, "p99": 30.25, "mean": 5.5, "max": 41.0, "samples": 750},
        "flush_ms": 12.5, "stages_ms_per_frame": {s: 0.5 * (i + 1) for i, s in enumerate(STAGES)},
        "clips_per_s": fps / 5, "achieved_gmac_per_s": 0.4375 * fps / 5, "peak_gmac_per_s": 100.0,
        "fraction_of_peak": 0.4375 * fps / 500, "rss_peak_mb": 611.0, "gpu_memory_mb": "unavailable: no GPU memory "
        "reading (CPU run)", "power_w": NO_POWER, "energy_per_clip_j": NO_POWER, "fps_per_w": NO_POWER,
        "telemetry": {"psutil": {"samples": 12, "cpu_load_pct": {"mean": 97.0}, "process_cpu_pct": {"mean": 180.0},
                                 "rss_mb": {"mean": 600.0, "max": 611.0}}, "power": NO_POWER},
        "accuracy": "unavailable: no labelled set given (--data)",
    }


@pytest.fixture
def doc():
    records = [record("onnxruntime", "int8", 212.345678, 80.5, "cpu"), record("onnxruntime", "fp32", 150.25, 80.5),
               record("torch", "fp32", 80.5, 80.5)]
    records[0]["accuracy"] = {"frame_mAP@0.5": 23.456, "video_mAP@0.5": 12.5, "test_videos": 48}
    return {"command": "edge-stad bench --backbones mobilenetv2", "wall_s": 123.4, "weights": records[0]["weights"],
            "machine": {"cpu": "AMD EPYC", "cores": 2, "memory_gb": 23.5, "board": None, "gpu": None, "device": "cpu",
                        "os": "Linux", "arch": "x86_64"},
            "versions": {"edge_stad": "0.1.0", "python": "3.11.7", "onnxruntime": "1.31.1"},
            "video": {"source": "synthetic benchmark", "frames": 300, "resolution": "160x120", "warmup_frames": 50,
                      "rounds": 3},
            "peaks": [{"backend": "onnxruntime", "precision": "fp32", "device": "cpu", "int8_flavor": None,
                       "gmac_per_s": 100.0, "gemm": "1024x1024x1024, chains of 1 and 4"},
                      {"backend": "torch", "precision": "fp32", "device": "cpu", "int8_flavor": None,
                       "gmac_per_s": "unavailable: timing noise"}],
            "telemetry": {"sources": ["psutil"], "unavailable": {"power": NO_POWER}},
            "records": records,
            "skipped": [{"model": "amma", "backbone": "mobilenetv2", "K": 3, "backend": "tensorrt", "precision": "int8",
                         "reason": "TensorRT runs on NVIDIA GPUs"}]}


def test_field_paths():
    r = record("torch", "fp32", 10.0, 10.0)
    assert field(r, "latency_ms.p99") == 30.25 and field(r, "model") == "amma"
    assert field(r, "accuracy.frame_mAP@0.5") == r["accuracy"]          # the reason, not a number
    assert field(r, "nothing.here") is None


def test_csv_round_trip(doc, tmp_path):
    write_outputs(doc, str(tmp_path / "b"), plots=False)
    with open(tmp_path / "b.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and tuple(rows[0]) == CSV_FIELDS
    for row, rec in zip(rows, doc["records"]):
        for name in CSV_FIELDS:
            value = field(rec, name)
            if isinstance(value, bool):
                assert row[name] == str(value)
            elif isinstance(value, (int, float)):
                assert float(row[name]) == value                          # exact: floats written with repr
            elif isinstance(value, list):
                assert row[name] == "128x128"
            else:
                assert row[name] == ("" if value is None else value)
    assert rows[0]["accuracy.frame_mAP@0.5"] == "23.456" and rows[1]["power_w"].startswith("unavailable: ")


def _tables(text):
    """Markdown tables as lists of row dicts, in order."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                rows.append(dict(zip(header, (c.strip() for c in row.strip("|").split("|")))))
            tables.append(rows)
    return tables


def test_markdown_round_trip(doc, tmp_path):
    text, written, notes = write_outputs(doc, str(tmp_path / "b"), json_path=str(tmp_path / "records.json"),
                                         plots=False)
    assert (tmp_path / "b.md").read_text(encoding="utf-8") == text == markdown(doc)
    assert json.loads((tmp_path / "records.json").read_text())["records"][0]["fps"] == 212.345678
    assert not (tmp_path / "b.json").exists() and str(tmp_path / "records.json") in written
    speed, stages, power, accuracy, peaks = _tables(text)
    for row, rec in zip(speed, doc["records"]):
        assert float(row["frames/s"]) == pytest.approx(rec["fps"], abs=0.051)
        assert row["vs PyTorch FP32"] == f"{rec['vs_pytorch_fp32']:.2f}x"
        assert float(row["params (M) [1]"]) == pytest.approx(rec["params_m"], abs=5e-4)
        assert float(row["GMAC/clip [1]"]) == pytest.approx(rec["paper_gmac_per_clip"], abs=5e-4)
        assert float(row["p99 ms"]) == rec["latency_ms"]["p99"]
        assert row["of GEMM peak [3]"] == f"{100 * rec['fraction_of_peak']:.0f}%"
    assert speed[2]["backend"] == "torch (baseline)" and speed[2]["vs PyTorch FP32"] == "1.00x"
    assert [float(stages[0][s]) for s in STAGES] == [rec for rec in doc["records"][0]["stages_ms_per_frame"].values()]
    assert float(stages[0]["total"]) == pytest.approx(sum(doc["records"][0]["stages_ms_per_frame"].values()))
    assert power[0]["power (W)"] == "n/a" and power[0]["CPU load % (all cores)"] == "97"
    assert accuracy[0]["frame-mAP@0.5"] == "23.46" and accuracy[1]["frame-mAP@0.5"] == "n/a"
    assert peaks[1]["GMAC/s"] == "unavailable: timing noise"
    assert f"- {NO_POWER}" in text and "**random (untrained, built here; speed only)**" in text
    assert "tensorrt int8: TensorRT runs on NVIDIA GPUs" in text and "Command: `edge-stad bench" in text


def test_plots(doc, tmp_path):
    pytest.importorskip("matplotlib")
    _, written, notes = write_outputs(doc, str(tmp_path / "b"))
    assert not notes
    for name in ("b_fps.png", "b_stages.png"):
        assert str(tmp_path / name) in written
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
