"""`edge-stad eval` end to end on small ACT-layout datasets."""
import json
import os
import pickle

import numpy as np
import pytest
from synthetic_tubelets import make_dataset

from edge_stad import cli
from edge_stad.core.windows import window_schedule
from edge_stad.eval.detections import open_writer, read_detections
from edge_stad.eval.evaluate import evaluate


def write_dataset(folder, gt):
    raw = dict(gt._asdict())
    (folder / "Synth-GT.pkl").write_bytes(pickle.dumps(raw, protocol=2))


def write_windows(path, gt, windows, K, n, mode):
    with open_writer(path, K, n, mode, gt.labels) as w:
        for video, ws in windows.items():
            for window in ws:
                w.window(video, window.frames, window.tubelets)


def write_toy(folder, labels):
    """Three videos, each one actor spanning the whole video and moving 1 px per frame, detected
    perfectly by K=3, clip_len=4 stream-mode tubelets."""
    K, n, mode = 3, 4, "stream"
    nframes = {"v0": 30, "v1": 41, "v2": 25}
    label = {"v0": 0, "v1": 1, "v2": 0}

    def box(f):
        return [f, 2 * f, f + 40, 2 * f + 50]

    gttubes = {v: {label[v]: [np.array([[f] + box(f) for f in range(1, F + 1)], dtype=np.float64)]}
               for v, F in nframes.items()}
    raw = {"labels": labels, "gttubes": gttubes, "nframes": nframes, "train_videos": [[]],
           "test_videos": [sorted(nframes)], "resolution": {v: (240, 320) for v in nframes}}
    (folder / "Toy-GT.pkl").write_bytes(pickle.dumps(raw))
    with open_writer(folder / "det.jsonl", K, n, mode, labels) as w:
        for v, F in nframes.items():
            for frames in window_schedule(K, n, F, mode):
                row = np.array([sum((box(f) for f in frames), []) + [0.9]], dtype=np.float32)
                w.window(v, frames, {label[v]: row})
    return ["eval", "--data", str(folder), "--detections", str(folder / "det.jsonl")]


def test_perfect_detections_score_100(tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = cli.main(write_toy(tmp_path, ["run", "jump"]) + ["--json", str(out), "--plot", str(tmp_path / "eval.png")])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "trimmed"  # every tube spans its video
    assert result["classes_without_gt"] == []
    assert result["frame_mAP"] == 100.0
    assert result["video_mAP"] == {"0.2": 100.0, "0.5": 100.0, "0.75": 100.0, "0.5:0.95": 100.0}
    assert result["frame_errors_mean"]["ap"] == 100.0 and result["frame_errors_mean"]["missed"] == 0.0
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "mean" in printed and "100.00" in printed and "localization" in printed


def test_class_without_ground_truth_counts_as_zero(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli.main(write_toy(tmp_path, ["run", "jump", "clap"]) + ["--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["classes_without_gt"] == ["clap"]
    assert result["frame_AP"] == {"run": 100.0, "jump": 100.0, "clap": 0.0}
    assert result["frame_mAP"] == pytest.approx(200 / 3)
    assert "note: 1 class(es) without ground truth in this split count as AP 0" in capsys.readouterr().out


def test_cli_numbers_equal_the_library(tmp_path):
    gt, windows = make_dataset(11, 3, 4, num_videos=4, num_labels=3, mode="normal")
    write_dataset(tmp_path, gt)
    write_windows(tmp_path / "d.jsonl.gz", gt, windows, 3, 4, "normal")
    out = tmp_path / "r.json"
    assert cli.main(["eval", "--data", str(tmp_path / "Synth-GT.pkl"), "--detections", str(tmp_path / "d.jsonl.gz"),
                     "--mode", "untrimmed", "--iou", "0.4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    direct = evaluate(gt, read_detections(tmp_path / "d.jsonl.gz"), mode="untrimmed", iou_threshold=0.4)
    assert result["frame_mAP"] == pytest.approx(100 * direct.frame.mean, abs=1e-9)
    assert result["video_mAP"]["0.5"] == pytest.approx(100 * direct.video[0.5].mean, abs=1e-9)
    assert 0 < result["frame_mAP"] < 100 and result["mode"] == "untrimmed" and result["iou_threshold"] == 0.4
    for name in gt.labels:  # each class's breakdown sums to 100
        assert sum(result["frame_errors"][k][name] for k in result["frame_errors"]) == pytest.approx(100, abs=1e-4)


def test_cli_errors(tmp_path, capsys):
    gt, windows = make_dataset(12, 2, 3, num_videos=3, num_labels=2, mode="stream")
    write_dataset(tmp_path, gt)
    del windows[gt.test_videos[0][1]]
    write_windows(tmp_path / "d.jsonl", gt, windows, 2, 3, "stream")
    args = ["eval", "--data", str(tmp_path), "--detections", str(tmp_path / "d.jsonl")]
    assert cli.main(args) == 1
    assert "1 of 3 test videos have no records" in capsys.readouterr().err
    assert cli.main(args + ["--split", "2"]) == 1
    assert "split must be in 1..1" in capsys.readouterr().err
    (tmp_path / "Other-GT.pkl").write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    assert cli.main(args) == 1
    assert "expected exactly one *-GT.pkl" in capsys.readouterr().err
    os.remove(tmp_path / "Synth-GT.pkl")
    assert cli.main(args) == 1
    assert "refusing to load os.system" in capsys.readouterr().err
