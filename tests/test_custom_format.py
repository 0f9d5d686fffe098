"""The custom dataset format (docs/custom_dataset_format.md) and its converters to/from ACT."""
import json
import os

import cv2
import numpy as np
import pytest
from synth_data import tiny_synth

from edge_stad.data.act import ActDataset
from edge_stad.data.annotations import load_gt
from edge_stad.data.custom import FORMAT, act_to_custom, custom_to_act, read_custom
from edge_stad.errors import ConfigError, DataError


def assert_same_gt(a, b):
    assert a.labels == b.labels and a.nframes == b.nframes and a.resolution == b.resolution
    assert a.train_videos == b.train_videos and a.test_videos == b.test_videos
    assert a.gttubes.keys() == b.gttubes.keys()
    for video, per in a.gttubes.items():
        assert per.keys() == b.gttubes[video].keys()
        for label, tubes in per.items():
            assert len(tubes) == len(b.gttubes[video][label])
            for x, y in zip(tubes, b.gttubes[video][label]):
                np.testing.assert_array_equal(x, y)


def test_act_custom_act_round_trip(tmp_path_factory, tmp_path):
    act = tiny_synth(tmp_path_factory)
    spec = tmp_path / "spec" / "clips.json"
    act_to_custom(act, spec)
    raw = json.load(open(spec))
    assert raw["format"] == FORMAT and raw["name"] == "Synth" and len(raw["splits"]) == 1
    assert not os.path.isabs(raw["videos"][0]["source"])
    gt_file = custom_to_act(spec, tmp_path / "back")
    assert os.path.basename(gt_file) == "Synth-GT.pkl"
    before, after = load_gt(os.path.join(act, "Synth-GT.pkl")), load_gt(gt_file)
    assert_same_gt(before, after)
    for video in before.nframes:   # JPEG folders are copied, not re-encoded
        for f in (1, before.nframes[video]):
            name = os.path.join("rgb-images", video, f"{f:05d}.jpg")
            assert (tmp_path / "back" / name).read_bytes() == open(os.path.join(act, name), "rb").read()
    ActDataset(tmp_path / "back").verify(decode="all")


def write_video(path, n, size=(64, 48)):
    """An MJPG clip whose frames differ (a square moving right on a gradient); returns the frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    gradient = np.linspace(40, 160, size[0], dtype=np.float64)[None, :, None]
    frames = []
    for i in range(n):
        frame = np.tile(gradient, (size[1], 1, 3)).astype(np.uint8)
        cv2.rectangle(frame, (2 * i, 10), (2 * i + 12, 30), (255, 255, 255), -1)
        frames.append(frame)
        writer.write(frame)
    writer.release()
    return frames


def spec_for(tmp_path, source, boxes, label="wave", nframes=None, **video):
    entry = {"name": "wave/clip1", "source": source, "tubes": [{"label": label, "boxes": boxes}], **video}
    if nframes is not None:
        entry["nframes"] = nframes
    spec = {"format": FORMAT, "name": "Mine", "labels": ["wave", "kick"], "videos": [entry],
            "splits": [{"train": ["wave/clip1"], "test": []}]}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(spec))
    return path


def rows(first, last):
    return [[f, 4, 5, 30.5, 40] for f in range(first, last + 1)]


def test_video_source(tmp_path):
    frames = write_video(tmp_path / "clip.avi", 12)
    gt_file = custom_to_act(spec_for(tmp_path, "clip.avi", rows(3, 10), nframes=12, fps=25), tmp_path / "out")
    ds = ActDataset(tmp_path / "out")
    assert ds.gt_path == gt_file and os.path.basename(gt_file) == "Mine-GT.pkl"
    assert ds.nframes("wave/clip1") == 12 and ds.resolution("wave/clip1") == (48, 64)
    assert ds.train_videos == ["wave/clip1"] and ds.test_videos == []
    np.testing.assert_array_equal(ds.tubes("wave/clip1")[0][0], np.array(rows(3, 10), dtype=np.float64))
    decoded = ds.read_frame("wave/clip1", 7).astype(int)
    errors = [np.abs(decoded - frame).mean() for frame in frames]
    assert np.argmin(errors) == 6 and errors[6] < 3   # frame 7 is the 7th frame, after MJPG + JPEG coding


def test_truncated_video_names_file_and_last_frame(tmp_path):
    write_video(tmp_path / "clip.avi", 30)
    data = (tmp_path / "clip.avi").read_bytes()
    (tmp_path / "clip.avi").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"clip\.avi: the container declares 30 frames but decoding stopped after "
                                        r"frame \d+ \(the last frame decoded\)"):
        custom_to_act(spec_for(tmp_path, "clip.avi", rows(1, 5)), tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_unreadable_video(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match=r"clip\.mp4: cannot open as a video"):
        custom_to_act(spec_for(tmp_path, "clip.mp4", rows(1, 5)), tmp_path / "out")


def test_tube_past_the_decoded_frames(tmp_path):
    write_video(tmp_path / "clip.avi", 8)
    with pytest.raises(DataError, match=r"video 'wave/clip1' tube 0: needs frames up to 9 but .*clip\.avi ends after "
                                        r"frame 8 \(the last frame decoded\)"):
        custom_to_act(spec_for(tmp_path, "clip.avi", rows(2, 9)), tmp_path / "out")
    with pytest.raises(DataError, match=r"JSON says nframes = 9 but the last frame decoded is frame 8"):
        custom_to_act(spec_for(tmp_path, "clip.avi", rows(2, 5), nframes=9), tmp_path / "out")


def test_frame_folder_with_a_truncated_jpeg(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(1, 12):   # f1 .. f11: name order with numbers compared by value
        cv2.imwrite(str(folder / f"f{i}.jpg"), rng.integers(0, 255, (48, 40, 3)).astype(np.uint8))
    gt_file = custom_to_act(spec_for(tmp_path, "frames", rows(1, 11)), tmp_path / "ok")
    assert load_gt(gt_file).nframes == {"wave/clip1": 11}
    copied = tmp_path / "ok" / "rgb-images" / "wave" / "clip1" / "00010.jpg"
    assert copied.read_bytes() == (folder / "f10.jpg").read_bytes()
    data = (folder / "f10.jpg").read_bytes()
    (folder / "f10.jpg").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"frames: frame 10 \(f10\.jpg\): truncated JPEG"):
        custom_to_act(spec_for(tmp_path, "frames", rows(1, 11)), tmp_path / "bad")


@pytest.mark.parametrize("tube,message", [
    ({"label": "jog", "boxes": rows(1, 3)}, r"video 'wave/clip1' tube 0: unknown label 'jog'; the labels are"),
    ({"label": "wave", "boxes": [[1, 4, 5, 30, 40], [3, 4, 5, 30, 40]]},
     r"video 'wave/clip1' tube 0: frames must be whole numbers >= 1, consecutive"),
    ({"label": "wave", "boxes": [[0, 4, 5, 30, 40]]}, r"tube 0: frames must be whole numbers >= 1"),
    ({"label": "wave", "boxes": [[2, 40, 5, 30, 40]]}, r"tube 0 frame 2: box .* x1 <= x2"),
    ({"label": "wave", "boxes": [[2, 4, 5, 30]]}, r"tube 0: 'boxes' must be a non-empty list of \[frame, x1"),
    ({"label": "wave", "boxes": rows(1, 12)}, r"tube 0: frame 12 is past nframes = 10"),
])
def test_bad_tubes(tmp_path, tube, message):
    path = spec_for(tmp_path, "x.avi", [], nframes=10)
    spec = json.loads(path.read_text())
    spec["videos"][0]["tubes"] = [tube]
    path.write_text(json.dumps(spec))
    with pytest.raises(DataError, match=message):
        read_custom(path)


@pytest.mark.parametrize("change,message", [
    (lambda s: s.update(format="other"), r'expected an object with "format"'),
    (lambda s: s.update(labels=["a", "a"]), r"'labels' must be a non-empty list of distinct"),
    (lambda s: s["splits"][0]["test"].append("nope"), r"split 1: video 'nope' is not in 'videos'"),
    (lambda s: s.pop("splits"), r"'splits' must be a non-empty list"),
    (lambda s: s["videos"][0].update(name="../up"), r"video '../up': the name must be a relative path"),
    (lambda s: s["videos"].append(dict(s["videos"][0])), r"video 'wave/clip1': appears twice"),
])
def test_bad_spec(tmp_path, change, message):
    path = spec_for(tmp_path, "x.avi", rows(1, 2))
    spec = json.loads(path.read_text())
    change(spec)
    path.write_text(json.dumps(spec))
    with pytest.raises(DataError, match=message):
        read_custom(path)


def test_output_folder_refused_unless_forced(tmp_path):
    write_video(tmp_path / "clip.avi", 6)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    spec = spec_for(tmp_path, "clip.avi", rows(1, 6))
    with pytest.raises(ConfigError, match="already exists"):
        custom_to_act(spec, tmp_path / "out")
    custom_to_act(spec, tmp_path / "out", force=True)
    assert sorted(os.listdir(tmp_path / "out")) == ["Mine-GT.pkl", "Mine-annotations.json", "rgb-images"]


def test_convert_command_both_ways(tmp_path_factory, tmp_path, capsys):
    from edge_stad import cli

    act = tiny_synth(tmp_path_factory)
    spec = tmp_path / "clips.json"
    assert cli.main(["convert", str(act), "--out", str(spec)]) == 0
    assert cli.main(["convert", str(act), "--out", str(spec)]) == 1      # exists, no --force
    assert "pass --force" in capsys.readouterr().err
    assert cli.main(["convert", str(spec), "--out", str(tmp_path / "back"), "--name", "Mine", "--quiet"]) == 0
    assert_same_gt(load_gt(os.path.join(act, "Synth-GT.pkl")), load_gt(tmp_path / "back" / "Mine-GT.pkl"))
    assert cli.main(["convert", str(tmp_path / "nothing.json"), "--out", str(tmp_path / "x")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "clips.json"
    path.write_text('{"format": ')
    with pytest.raises(DataError, match=r"clips.json: cannot read as JSON"):
        read_custom(path)
