import json
import re
import subprocess
import sys

import pytest

from edge_stad import cli


def test_help_lists_every_command(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    assert len(capsys.readouterr().out) > 150


def test_profile_json(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "p.json"
    assert cli.main(["profile", "--backbone", "shufflenetv2", "--K", "3", "--decoder", "dcn", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "total" in text and "paper GMAC" in text
    (result,) = json.loads(out.read_text())
    assert result["config"]["K"] == 3 and result["params"]["total"] == 5354299
    assert result["macs"]["paper"]["total"] == pytest.approx(0.974e9, rel=0.001)


def test_profile_bad_backbone(capsys):
    pytest.importorskip("torch")
    assert cli.main(["profile", "--backbone", "vgg"]) == 1
    assert "unknown backbone 'vgg'" in capsys.readouterr().err


CORE = ["edge_stad", "edge_stad.cli", "edge_stad.atomic", "edge_stad.errors", "edge_stad.preprocess",
        "edge_stad.boxes", "edge_stad.core.tubelet_decode", "edge_stad.core.linking", "edge_stad.eval.evaluate",
        "edge_stad.eval.detections", "edge_stad.eval.report", "edge_stad.data.act", "edge_stad.data.samples",
        "edge_stad.data.custom", "edge_stad.data.synth.generate", "edge_stad.eval.predict",
        "edge_stad.engines.manifest", "edge_stad.engines.onnxruntime_backend", "edge_stad.build.tensorrt_plans",
        "edge_stad.quant.calibration", "edge_stad.bench.latency", "edge_stad.bench.ort_profile",
        "edge_stad.runtime.stream", "edge_stad.runtime.sources", "edge_stad.runtime.drawing",
        "edge_stad.engines.loader", "edge_stad.engines.tensorrt_backend", "edge_stad.commands.run",
        "edge_stad.bench.streaming", "edge_stad.bench.telemetry", "edge_stad.bench.peak", "edge_stad.bench.machine",
        "edge_stad.bench.harness", "edge_stad.bench.report", "edge_stad.commands.bench",
        "edge_stad.core.region_decode", "edge_stad.eval.predict_frames", "edge_stad.eval.viterbi",
        "edge_stad.data.anchors", "edge_stad.data.flow", "edge_stad.data.frame_samples", "edge_stad.commands.distill",
        "edge_stad.core.snippets", "edge_stad.data.stma_targets", "edge_stad.data.snippet_samples",
        "edge_stad.core.snippet_decode", "edge_stad.eval.predict_snippets", "edge_stad.core.windows",
        "edge_stad.core.ssd_decode", "edge_stad.core.road_linking", "edge_stad.core.frame_detections",
        "edge_stad.core.link_math", "edge_stad.backends", "edge_stad.engines.tensorrt_runtime",
        "edge_stad.engines.protocols"]


def test_core_imports_without_torch():
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {CORE!r}]; "
            "import edge_stad.cli; edge_stad.cli.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_trains_a_step_budget_and_stops_below_its_floor(tmp_path, capsys):
    """(The demo's engine build and streaming run in tests/test_readme.py, as the README's quick start.)"""
    pytest.importorskip("torch")
    data, out = tmp_path / "synth", tmp_path / "run"
    assert cli.main(["demo", "--data", str(data), "--out", str(out), "--synth-preset", "tiny", "--steps", "2",
                     "--min-map", "0", "--no-engine", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "generating the synthetic benchmark" in text and "FP32 model (PyTorch), test split: frame-mAP@0.5" in text
    assert (out / "last.pt").exists() and (data / "Synth-GT.pkl").exists() and "training: 2 steps" in text
    assert "next: edge-stad build" in text and not (out / "engine_int8").exists()
    first = re.search(r"weights sha256 ([0-9a-f]{16})", text).group(1)
    # the budget is in steps and the sample order seeded: the same steps give the same weights
    assert cli.main(["demo", "--data", str(data), "--out", str(out / "again"), "--steps", "2", "--min-map", "0",
                     "--no-engine", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "using the synthetic set" in text   # not regenerated
    assert re.search(r"weights sha256 ([0-9a-f]{16})", text).group(1) == first
    # a model below the floor: one clear line, exit 1, no engine
    assert cli.main(["demo", "--data", str(data), "--out", str(out / "floor"), "--steps", "1", "--min-map", "101",
                     "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edge-stad demo: error: after 1 steps the model reaches frame-mAP@0.5")
    assert "below the floor of 101" in err[-1] and not (out / "floor" / "engine_int8").exists()
