"""The generated dataset: ACT layout, ground truth, determinism, atomic output, the CLI."""
import hashlib
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from synth_data import tiny_synth

from edge_stad import cli
from edge_stad.data.act import ActDataset
from edge_stad.data.annotations import load_gt
from edge_stad.data.synth import generate
from edge_stad.data.synth.motions import CLASSES
from edge_stad.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_synth(tmp_path_factory)


def frame_hashes(root, videos, frames=(1, 7, 15)):
    return {(v, f): hashlib.sha256(open(os.path.join(root, "rgb-images", v, f"{f:05d}.jpg"), "rb").read()).hexdigest()
            for v in videos for f in frames}


def test_layout_and_metadata(tiny):
    assert sorted(os.listdir(tiny)) == ["Synth-GT.pkl", "Synth-annotations.json", "rgb-images", "synth.json"]
    meta = json.load(open(os.path.join(tiny, "synth.json")))
    assert meta["preset"] == "tiny" and meta["seed"] == 0 and meta["generator_version"] == generate.GENERATOR_VERSION
    assert [c["name"] for c in meta["classes"]] == [m.name for m in CLASSES]
    gt = load_gt(os.path.join(tiny, "Synth-GT.pkl"))
    assert set(meta["videos"]) == set(gt.nframes)
    for video, n in gt.nframes.items():
        label, _ = video.split("/")
        assert label in gt.labels
        files = sorted(os.listdir(os.path.join(tiny, "rgb-images", label, video.split("/")[1])))
        assert files == [f"{f:05d}.jpg" for f in range(1, n + 1)]
        assert meta["videos"][video]["nframes"] == n


def test_gt_pickle_is_plain_data_and_round_trips(tiny):
    with open(os.path.join(tiny, "Synth-GT.pkl"), "rb") as f:
        raw = pickle.load(f)
    assert set(raw) == {"labels", "gttubes", "nframes", "train_videos", "test_videos", "resolution"}
    gt = load_gt(os.path.join(tiny, "Synth-GT.pkl"))
    twin = load_gt(os.path.join(tiny, "Synth-annotations.json"))
    assert gt.labels == raw["labels"] == twin.labels == [m.name for m in CLASSES]
    assert gt.nframes == raw["nframes"] == twin.nframes
    assert gt.train_videos == raw["train_videos"] == twin.train_videos and len(gt.train_videos) == 1
    assert gt.test_videos == raw["test_videos"] == twin.test_videos
    assert not set(gt.train_videos[0]) & set(gt.test_videos[0])
    assert set(gt.train_videos[0]) | set(gt.test_videos[0]) == set(gt.nframes)
    assert gt.resolution == twin.resolution == {v: (96, 128) for v in gt.nframes}
    for video, per in raw["gttubes"].items():
        assert per.keys() == gt.gttubes[video].keys() == twin.gttubes[video].keys()
        for label, tubes in per.items():
            assert video.startswith(gt.labels[label] + "/")
            for a, b, c in zip(tubes, gt.gttubes[video][label], twin.gttubes[video][label]):
                assert isinstance(a, np.ndarray) and a.shape[1] == 5
                np.testing.assert_array_equal(a, b)
                np.testing.assert_array_equal(a, c)


def test_every_tube_inside_its_video_and_frame(tiny):
    ds = ActDataset(tiny)
    for video in ds.videos:
        h, w = ds.resolution(video)
        for tubes in ds.tubes(video).values():
            for tube in tubes:
                frames, boxes = tube[:, 0], tube[:, 1:]
                assert frames[0] >= 1 and frames[-1] <= ds.nframes(video)
                assert (np.diff(frames) == 1).all()
                assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w - 1).all()
                assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h - 1).all()
                box_h = boxes[:, 3] - boxes[:, 1]
                assert (boxes[:, 2] - boxes[:, 0] >= 3).all() and (box_h >= 0.2 * h).all()


def test_tiny_has_every_kind_of_video(tiny):
    gt = load_gt(os.path.join(tiny, "Synth-GT.pkl"))
    kinds = set()
    for video, per in gt.gttubes.items():
        tubes = [t for ts in per.values() for t in ts]
        trimmed = all(t[0, 0] == 1 and t[-1, 0] == gt.nframes[video] for t in tubes)
        if not trimmed:   # untrimmed: the action starts and/or ends inside the video
            assert all(len(t) < gt.nframes[video] for t in tubes)
        kinds.add((trimmed, len(tubes) > 1))
    assert kinds == {(True, False), (True, True), (False, False), (False, True)}
    meta = json.load(open(os.path.join(tiny, "synth.json")))["videos"]
    assert any(v["distractors"] for v in meta.values()) and any(v["occluders"] for v in meta.values())


def test_deterministic_and_independent_of_workers(tiny, tmp_path):
    again = generate.generate_dataset(tmp_path / "again", "tiny", 0, workers=2)
    for name in ("Synth-GT.pkl", "Synth-annotations.json", "synth.json"):
        assert open(os.path.join(tiny, name), "rb").read() == open(os.path.join(again, name), "rb").read(), name
    videos = ["walk/walk_001", "jump/jump_002", "arm_circles_fast/arm_circles_fast_001"]
    assert frame_hashes(tiny, videos) == frame_hashes(again, videos)
    other = generate.generate_dataset(tmp_path / "other", "tiny", 1)
    assert frame_hashes(tiny, videos) != frame_hashes(other, videos)


def test_existing_output_refused_and_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        generate.generate_dataset(out, "tiny", 0)
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    real = generate.render_video
    monkeypatch.setattr(generate, "render_video", failing)
    with pytest.raises(KeyboardInterrupt):
        generate.generate_dataset(out, "tiny", 0, force=True)
    assert os.listdir(tmp_path) == ["data"] and os.listdir(out) == ["keep.txt"]   # old data intact, no temp left
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        generate.generate_dataset(tmp_path / "new", "tiny", 0)
    assert os.listdir(tmp_path) == ["data"]


def test_cli_synth(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert cli.main(["synth", "--out", out, "--preset", "tiny", "--seed", "3", "--workers", "1", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert ActDataset(out).read_frame("squat/squat_001", 1).shape == (96, 128, 3)
    assert cli.main(["synth", "--out", out, "--preset", "tiny", "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["synth", "--out", out, "--preset", "tiny", "--seed", "4", "--force", "--quiet"]) == 0
    assert json.load(open(os.path.join(out, "synth.json")))["seed"] == 4


def test_data_modules_import_without_torch():
    code = ("import sys; import edge_stad.data.act, edge_stad.data.custom, edge_stad.data.synth.generate, "
            "edge_stad.commands.synth; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dataset_folder_gets_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        out = generate.generate_dataset(tmp_path / "d", "tiny", 0)
    finally:
        os.umask(old)
    assert os.stat(out).st_mode & 0o777 == 0o755   # not 0o700 as a tempfile.mkdtemp folder would be
