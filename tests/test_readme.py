"""The README's examples, run as printed: its blocks are read from README.md by their markers
(``<!-- example: NAME -->``, ``<!-- main-command -->``), so the README and these tests cannot drift apart."""
import ast
import os
import re
import shlex

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from model_helpers import tiny_model  # noqa: E402
from synth_data import tiny_synth  # noqa: E402

from edge_stad import cli  # noqa: E402
from edge_stad.build.pipeline import BuildOptions, build_engine  # noqa: E402
from edge_stad.runtime.stream import Runtime  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join("engines", "amma_shufflenetv2_k3_int8")   # the path the README's examples use


def readme_block(marker):
    """The code block that follows ``<!-- marker -->`` in README.md."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    found = re.search(r"<!-- " + re.escape(marker) + r" -->\s*```\w*\n(.*?)```", text, re.S)
    assert found, f"README.md has no code block after <!-- {marker} -->"
    return found.group(1)


def command_lines(block):
    """The ``edge-stad`` command lines of a bash block, each as the argument list after ``edge-stad``."""
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "edge-stad", line
            commands.append(words[1:])
    return commands


def write_video(path, frames, fps=25):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()


def moving_block(nframes, hw=(96, 128)):
    """A bright block drifting over smooth noise (enough structure for peaks and tubes)."""
    rng = np.random.default_rng(3)
    base = np.kron(rng.integers(0, 256, (hw[0] // 8, hw[1] // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    frames = []
    for t in range(nframes):
        frame = base.copy()
        frame[30:70, 10 + 2 * t:40 + 2 * t] = (230, 200, 40)
        frames.append(frame)
    return frames


@pytest.fixture
def confident_engine(tmp_path, monkeypatch):
    """``engines/amma_shufflenetv2_k3_int8`` in a fresh working folder: an untrained K=3 model whose heatmap
    bias is raised so that it reports tubes above the default min_tube_score on any video."""
    torch.manual_seed(0)
    model = tiny_model("shufflenetv2", K=3, size=64)
    with torch.no_grad():
        model.branch.hm_cls[0].bias.fill_(4.0)
    monkeypatch.chdir(tmp_path)
    build_engine(model, ENGINE, BuildOptions(backend="onnxruntime"), labels=("a", "b", "c", "d"), log=lambda _: None)
    return tmp_path


def run_camera_example(monkeypatch, capsys, source):
    """Exec the README's camera example with ``cv2.VideoCapture(0)`` opening ``source``; its stdout."""
    import cv2

    real = cv2.VideoCapture
    monkeypatch.setattr(cv2, "VideoCapture", lambda index: real(str(source) if index == 0 else index))
    exec(compile(readme_block("example: camera"), "README.md (camera example)", "exec"), {"__name__": "__main__"})
    return capsys.readouterr().out


def test_camera_example_as_printed_with_a_video_for_the_camera(confident_engine, monkeypatch, capsys):
    import cv2

    frames = moving_block(40)
    write_video(confident_engine / "camera.avi", frames)
    printed = run_camera_example(monkeypatch, capsys, confident_engine / "camera.avi").splitlines()
    # the same frames through the API: every result, the ones flush() returns included
    capture, decoded = cv2.VideoCapture("camera.avi"), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    runtime = Runtime(ENGINE)
    results = [r for f in decoded for r in runtime.push(f)]
    flushed = runtime.flush()
    expected = [f"{r.frame} {int(t[0])} {runtime.labels[int(t[1])]} {round(float(t[2]), 2)}"
                for r in results + flushed for t in r.tubes]
    assert printed == expected
    assert len(decoded) == 40 and flushed and any(line.startswith(f"{flushed[-1].frame} ") for line in printed)


def test_camera_example_says_when_the_camera_does_not_open(confident_engine, monkeypatch, capsys):
    with pytest.raises(SystemExit, match="camera 0 did not open"):
        run_camera_example(monkeypatch, capsys, confident_engine / "no_such_camera.avi")


def test_quick_start_then_run_as_printed(tmp_path, tmp_path_factory, monkeypatch, capsys):
    """The quick-start lines one after the other (the demo shortened to the tiny set and 2 steps), then the
    run example on a video file: every line exits 0, and the demo leaves engines/ to `build`."""
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_synth(tmp_path_factory), os.path.join("data", "synth_bench"))
    quick = command_lines(readme_block("example: quick-start"))
    assert [c[0] for c in quick] == ["demo", "build", "eval"]
    assert cli.main(quick[0] + ["--steps", "2", "--min-map", "0", "--no-progress"]) == 0
    assert os.path.isfile(os.path.join("runs", "demo", "engine_int8", "manifest.json"))
    assert not os.path.exists("engines")
    for command in quick[1:]:
        assert cli.main(command) == 0, command
    assert "frame-mAP" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(ENGINE, "manifest.json"))
    write_video("video.mp4", moving_block(30))
    run = command_lines(readme_block("example: run"))[0]   # the others need a camera or a stream
    assert run[:2] == ["run", "video.mp4"]
    assert cli.main(run + ["--no-progress"]) == 0
    assert os.path.getsize("annotated.mp4") > 0 and os.path.getsize("run.jsonl") > 0


def test_main_command_installs_what_bench_reports():
    """The README's install (the train extra) brings what `bench` needs for its documented columns: torch and
    onnx to build, matplotlib for the plots, psutil for the memory column."""
    main = readme_block("main-command")
    assert 'pip install -e ".[train]"' in main and "edge-stad demo" in main
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    train = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "TRAIN")
    names = {re.split(r"[<>=!~;\[ ]", requirement)[0] for requirement in train}
    assert {"torch", "onnx", "matplotlib", "psutil"} <= names
