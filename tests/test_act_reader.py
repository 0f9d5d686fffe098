"""ActDataset: ACT-layout reading, and errors that name the video and frame."""
import os
import pickle

import cv2
import numpy as np
import pytest
from synth_data import tiny_synth

from edge_stad.data.act import ActDataset, find_gt, write_gt
from edge_stad.errors import DataError, UnsafePickleError

H, W = 48, 64


def make_act(root, nframes=6, splits=1, label=0):
    """A two-video ACT folder of textured JPEG frames (so a cut falls in the entropy-coded data)."""
    frames = os.path.join(root, "rgb-images")
    rng = np.random.default_rng(0)
    for video in ("jump/a", "run/b"):
        os.makedirs(os.path.join(frames, video))
        for f in range(1, nframes + 1):
            image = (rng.integers(0, 60, (H, W, 3)) + 20 * f).astype(np.uint8)
            cv2.imwrite(os.path.join(frames, video, f"{f:05d}.jpg"), image)
    tube = np.array([[f, 5, 6, 30, 40] for f in range(2, nframes + 1)], dtype=np.float32)
    gt = {"labels": ["jump", "run"], "gttubes": {"jump/a": {label: [tube]}, "run/b": {1: [tube[:3]]}},
          "nframes": {"jump/a": nframes, "run/b": nframes},
          "train_videos": [["jump/a"]] * splits, "test_videos": [["run/b"]] * splits,
          "resolution": {"jump/a": (H, W), "run/b": (H, W)}}
    # written directly, not with write_gt, so tests can make it inconsistent
    with open(os.path.join(root, "Test-GT.pkl"), "wb") as f:
        pickle.dump(gt, f)
    return root


@pytest.fixture
def act(tmp_path):
    return make_act(str(tmp_path / "act"))


def test_reads_the_act_layout(act):
    ds = ActDataset(act)
    assert ds.gt_path == os.path.join(act, "Test-GT.pkl") == find_gt(act)
    assert ds.labels == ["jump", "run"] and ds.train_videos == ["jump/a"] and ds.test_videos == ["run/b"]
    assert ds.videos == ["jump/a", "run/b"] and ds.nframes("run/b") == 6 and ds.resolution("run/b") == (H, W)
    np.testing.assert_array_equal(ds.tubes("jump/a")[0][0][:, 0], np.arange(2, 7))
    assert ds.frame_path("run/b", 3) == os.path.join(act, "rgb-images", "run", "b", "00003.jpg")
    image = ds.read_frame("run/b", 3)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, cv2.imread(ds.frame_path("run/b", 3)))
    ds.verify(decode="all")


def test_reads_the_synthetic_set(tmp_path_factory):
    ds = ActDataset(tiny_synth(tmp_path_factory))
    assert len(ds.labels) == 8 and len(ds.train_videos) == len(ds.test_videos) == 8
    video = ds.test_videos[0]
    assert ds.read_frame(video, ds.nframes(video)).shape == ds.resolution(video) + (3,)
    ds.verify()


def test_cache_returns_copies(act):
    ds = ActDataset(act, cache_size=2)
    first = ds.read_frame("run/b", 2)
    first[:] = 0
    again = ds.read_frame("run/b", 2)
    assert again.mean() > 30   # the cached frame was not changed through the returned array
    for f in (3, 4, 5):
        ds.read_frame("run/b", f)
    np.testing.assert_array_equal(ds.read_frame("run/b", 2), again)   # evicted and decoded again


def test_missing_frame(act):
    os.remove(os.path.join(act, "rgb-images", "jump", "a", "00004.jpg"))
    ds = ActDataset(act)
    with pytest.raises(DataError, match=r"video 'jump/a' frame 4: missing file .*00004\.jpg"):
        ds.read_frame("jump/a", 4)
    with pytest.raises(DataError, match=r"video 'jump/a' frame 4: missing .*needed by tube 0 of label 'jump'"):
        ds.verify(decode="none")


def test_truncated_jpeg(act):
    path = os.path.join(act, "rgb-images", "run", "b", "00005.jpg")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) * 2 // 3])
    assert cv2.imread(path) is not None   # why the reader checks for itself: OpenCV only warns
    with pytest.raises(DataError, match=r"video 'run/b' frame 5 .*truncated JPEG"):
        ActDataset(act).read_frame("run/b", 5)
    with pytest.raises(DataError, match=r"video 'run/b' frame 5 .*truncated"):
        ActDataset(act).verify(decode="all")


def test_corrupt_jpeg(act):
    path = os.path.join(act, "rgb-images", "run", "b", "00002.jpg")
    open(path, "wb").write(b"this is not an image")
    with pytest.raises(DataError, match=r"video 'run/b' frame 2 .*not a JPEG"):
        ActDataset(act).read_frame("run/b", 2)


def test_wrong_resolution(act):
    cv2.imwrite(os.path.join(act, "rgb-images", "jump", "a", "00001.jpg"), np.zeros((H, W + 2, 3), np.uint8))
    with pytest.raises(DataError, match=r"video 'jump/a' frame 1 .*48x66 \(h x w\) but the ground truth says 48x64"):
        ActDataset(act).read_frame("jump/a", 1)
    with pytest.raises(DataError, match="48x66"):
        ActDataset(act).verify()


def test_unknown_label(tmp_path):
    root = make_act(str(tmp_path / "act"), label=5)
    with pytest.raises(DataError, match=r"video 'jump/a': label 5 is not an index into the 2 labels"):
        ActDataset(root)


def test_tube_past_the_last_frame(tmp_path):
    root = make_act(str(tmp_path / "act"))
    gt = pickle.load(open(os.path.join(root, "Test-GT.pkl"), "rb"))
    gt["nframes"]["jump/a"] = 4
    pickle.dump(gt, open(os.path.join(root, "Test-GT.pkl"), "wb"))
    with pytest.raises(DataError, match=r"video 'jump/a' label 0 tube 0: frames 2..6 must be integers within \[1, 4\]"):
        ActDataset(root)


@pytest.mark.parametrize("split", [0, 2, "1", True])
def test_bad_split(act, split):
    message = rf"split {split!r} does not exist; this dataset has 1 split\(s\), numbered 1..1"
    with pytest.raises(DataError, match=message):
        ActDataset(act, split=split)


def test_three_splits(tmp_path):
    ds = ActDataset(make_act(str(tmp_path / "act"), splits=3), split=3)
    assert ds.train_videos == ["jump/a"]
    with pytest.raises(DataError, match="split 4 does not exist"):
        ActDataset(ds.root, split=4)


def test_unknown_video_and_frame_out_of_range(act):
    ds = ActDataset(act)
    with pytest.raises(DataError, match=r"video 'jump/zz': not in"):
        ds.nframes("jump/zz")
    for frame in (0, 7, 2.0):
        with pytest.raises(DataError, match=rf"video 'run/b' frame {frame}: outside 1..6"):
            ds.read_frame("run/b", frame)


def test_gt_file_discovery(act, tmp_path):
    ds = ActDataset(act, gt_path=os.path.join(act, "Test-GT.pkl"))
    write_gt(act, "Second", {k: getattr(ds.gt, k) for k in ds.gt._fields})   # a second *-GT.pkl
    with pytest.raises(DataError, match=r"expected exactly one \*-GT.pkl or \*-GT.json .*Second-GT.pkl"):
        ActDataset(act)
    assert ActDataset(act, gt_path=os.path.join(act, "Second-GT.pkl")).labels == ["jump", "run"]
    with pytest.raises(DataError, match="no such dataset folder"):
        ActDataset(str(tmp_path / "nope"))


def test_unsafe_video_name_refused(act):
    gt = pickle.load(open(os.path.join(act, "Test-GT.pkl"), "rb"))
    gt["nframes"]["../../etc"] = 1
    pickle.dump(gt, open(os.path.join(act, "Test-GT.pkl"), "wb"))
    with pytest.raises(DataError, match=r"video name '../../etc' is not a relative 'label/name' path"):
        ActDataset(act)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_gt_pickle_is_refused(act, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(os.path.join(act, "Test-GT.pkl"), "wb") as f:
        pickle.dump({"labels": _Payload()}, f)
    with pytest.raises(UnsafePickleError, match="refusing to load posix.system"):
        ActDataset(act)
    assert not os.path.exists(tmp_path / "pwned")



@pytest.mark.parametrize("nframes", [7, 10 ** 6])
def test_nframes_past_the_frames_on_disk_is_refused_at_once(tmp_path, nframes):
    import time

    root = make_act(str(tmp_path / "act"))
    gt = pickle.load(open(os.path.join(root, "Test-GT.pkl"), "rb"))
    gt["nframes"]["run/b"] = nframes   # 6 frames on disk; a training run would loop over all of them
    pickle.dump(gt, open(os.path.join(root, "Test-GT.pkl"), "wb"))
    start = time.perf_counter()
    with pytest.raises(DataError, match=rf"video 'run/b': field 'nframes' is {nframes}, but its frame {nframes} is not "
                                        r"on disk .*run/b/0*" + str(nframes) + r"\.jpg"):
        ActDataset(root)
    assert time.perf_counter() - start < 1
