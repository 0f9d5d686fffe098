"""The frame-level detector path (MENet): key-frame samples, frame-by-frame prediction, training."""
import numpy as np
import pytest

from edge_stad.data.act import ActDataset
from edge_stad.data.frame_samples import FrameSamples, annotated_frames, box_rows
from edge_stad.errors import ConfigError
from edge_stad.eval.predict_frames import evaluate_frame_backend, predict_frame_detections, predict_frame_rows
from edge_stad.train.presets import lr_factor, preset
from tests.synth_data import tiny_synth


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ActDataset(tiny_synth(tmp_path_factory))


def test_annotated_frames_are_the_frames_tubes_cover(tiny):
    gt = tiny.gt
    video = tiny.train_videos[0]
    covered = sorted({int(f) for tubes in gt.gttubes[video].values() for t in tubes for f in t[:, 0]})
    assert [f for v, f in annotated_frames(gt, [video])] == covered
    assert all(v == video for v, _ in annotated_frames(gt, [video]))


def test_box_rows_normalise_pad_and_put_the_label_last():
    rows = box_rows({2: [np.array([[10, 20, 50, 60]], np.float32)], 0: [np.array([[0, 0, 200, 10]], np.float32)]},
                    (100, 200), max_boxes=3)
    np.testing.assert_allclose(rows, [[0, 0, 1, 0.1, 0], [0.05, 0.2, 0.25, 0.6, 2], [-1, -1, -1, -1, -1]])


def test_frame_samples_clip_ends_at_the_key_frame(tiny):
    samples = FrameSamples(tiny, tiny.train_videos[:1], clip_len=3, input_size=64)
    video, frame = samples.samples[0]
    item = samples[0]
    assert item["clips"].shape == (9, 64, 64) and item["clips"].dtype == np.float32
    from edge_stad.preprocess import normalize_clip, resize

    key = normalize_clip([resize(tiny.read_frame(video, frame), (64, 64))])
    np.testing.assert_array_equal(item["clips"][-3:], key)
    labelled = item["boxes"][item["boxes"][:, 4] >= 0]
    assert len(labelled) >= 1 and (labelled[:, :4] >= 0).all() and (labelled[:, :4] <= 1).all()


class FakeFrameBackend:
    """One anchor, two classes, a 2x2 grid: a confident class-1 box on cell (0, 0) only."""

    kind, manifest, labels = "frame", None, ()

    config = {"name": "menet-lite", "clip_len": 3, "srm_frames": 2, "input_size": [64, 64], "num_classes": 2,
              "anchors": [[1.0, 1.0]]}

    def __init__(self):
        self.encoded, self.detected = [], []

    def encode_3d(self, frames):
        assert frames.shape == (1, 3, 64, 64, 3) and frames.dtype == np.uint8
        self.encoded.append(frames)
        return np.zeros((1, 4, 2, 2), np.float32)

    def detect(self, frames, feat3d):
        assert frames.shape == (1, 2, 64, 64, 3)
        self.detected.append(frames)
        region = np.full((1, 7, 2, 2), -10.0, np.float32)
        region[0, :4, 0, 0] = 0.0      # centre in the middle of cell (0, 0), anchor-sized (half the image)
        region[0, 4, 0, 0] = 10.0      # objectness ~1
        region[0, 6, 0, 0] = 10.0      # class 1
        return region


def test_predict_frame_rows_decodes_every_frame_in_pixels(tiny):
    video = tiny.test_videos[0]
    backend = FakeFrameBackend()
    rows = predict_frame_rows(backend, tiny, video, refresh=3)
    n = tiny.gt.nframes[video]
    h, w = tiny.gt.resolution[video]
    assert len(rows) == n and rows[:, 0].tolist() == list(range(1, n + 1))
    assert (rows[:, 1] == 1).all() and (rows[:, 2] > 0.99).all()
    np.testing.assert_allclose(rows[0, 3:], [0, 0, w / 2, h / 2], atol=1e-4)
    assert len(backend.encoded) == -(-n // 3) and len(backend.detected) == n   # 3D branch on frames 1, 4, 7, ...
    first = backend.detected[0][0]
    np.testing.assert_array_equal(first[0], first[1])   # frame 1 repeats before the video's start


def test_detections_link_online_or_by_viterbi(tiny):
    videos = list(tiny.test_videos[:2])
    online = predict_frame_detections(FakeFrameBackend(), tiny, videos)
    assert online.K == 1 and not online.tubes and len(online.windows[videos[0]]) == tiny.gt.nframes[videos[0]]
    viterbi = predict_frame_detections(FakeFrameBackend(), tiny, videos, linker="viterbi")
    tube = viterbi.tubes[videos[0]][1][0]
    assert len(tube.boxes) == tiny.gt.nframes[videos[0]] and tube.score > 0.99
    ev = evaluate_frame_backend(FakeFrameBackend(), tiny)
    assert 0 <= ev.frame.mean <= 1
    with pytest.raises(ConfigError, match="linker"):
        predict_frame_detections(FakeFrameBackend(), tiny, videos, linker="greedy")
    with pytest.raises(ConfigError, match="refresh"):
        predict_frame_rows(FakeFrameBackend(), tiny, videos[0], refresh=0)


def test_step_schedules_and_menet_presets():
    assert lr_factor("iter-step", 0, 5, (20000, 30000), 0.5, step=19999) == 1.0
    assert lr_factor("iter-step", 0, 5, (20000, 30000), 0.5, step=30000) == 0.25
    assert lr_factor("iter-every", 0, 5, (10000,), 0.5, step=25000) == 0.25
    ucf = preset("paper-ucf24", "resnext101", "menet")
    assert (ucf["optimizer"], ucf["lr"], ucf["batch_size"], ucf["clip_len"]) == ("sgd", 1e-3, 32, 16)
    assert preset("synthetic", "shufflenetv2", "menet-lite")["srm_frames"] == 4
    with pytest.raises(ConfigError, match="reference-code"):
        preset("reference-code", "shufflenetv2", "menet-lite")


def test_menet_lite_trains_validates_and_resumes(tmp_path_factory, tmp_path):
    torch = pytest.importorskip("torch")
    from edge_stad.models import load_checkpoint
    from edge_stad.train.trainer import TrainConfig, Trainer

    data = str(tiny_synth(tmp_path_factory))

    def config(out, **kw):
        values = dict(data=data, out=str(out), model="menet-lite", input_size=64, clip_len=4, batch_size=2,
                      epochs=2, workers=0, log_every=1, val_every=0, progress=False, seed=5, schedule="constant",
                      device="cpu")
        return TrainConfig(**dict(values, **kw))

    result = Trainer(config(tmp_path / "a", max_steps=3, val_every=1)).fit()
    assert result["history"][-1]["step"] == 3 and 0 <= result["history"][-1]["frame_mAP"] <= 100
    model = load_checkpoint(result["last"])
    assert model.config["name"] == "menet-lite" and model.config["srm_frames"] == 4
    areas = [w * h for w, h in model.config["anchors"]]   # k-means on the training boxes, stored with the weights
    assert len(areas) == 5 and areas == sorted(areas) and areas[-1] < 4   # a 2x2 grid at 64x64
    Trainer(config(tmp_path / "b", max_steps=2)).fit()
    Trainer(config(tmp_path / "b", max_steps=3, resume=str(tmp_path / "b" / "last.pt"))).fit()
    a, b = (load_checkpoint(p / "last.pt") for p in (tmp_path / "a", tmp_path / "b"))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    rgb = Trainer(config(tmp_path / "c", max_steps=1, srm_frames=0)).model
    assert rgb.srm is None and rgb.config["srm_frames"] == 0


def stream_video(runtime, dataset, video):
    results = []
    for f in range(1, dataset.gt.nframes[video] + 1):
        results += runtime.push(dataset.read_frame(video, f))
    return results + runtime.flush()


@pytest.mark.parametrize("refresh", [1, 4])
def test_runtime_streams_a_frame_detector_like_the_offline_path(tiny, refresh):
    from edge_stad.core.linking import link_video
    from edge_stad.runtime.stream import Runtime

    video = tiny.test_videos[0]
    offline = predict_frame_rows(FakeFrameBackend(), tiny, video, refresh=refresh)
    backend = FakeFrameBackend()
    runtime = Runtime(backend, frame_detections=True, refresh=refresh, min_tube_score=0.0)
    results = stream_video(runtime, tiny, video)
    assert [r.frame for r in results] == list(range(1, tiny.gt.nframes[video] + 1))
    streamed = np.concatenate([np.c_[np.full(len(r.detections), r.frame, np.float32), r.detections]
                               for r in results])
    np.testing.assert_array_equal(streamed, offline)
    assert runtime.latency_frames == (0, 0) and runtime.stats()["clips_encoded"] == len(backend.encoded)
    windows = [w for _, w in runtime.windows()]
    expected = link_video(windows, 1, 1)[1]
    tubes = [t for _, t in runtime.tubes()]
    assert len(tubes) == len(expected) == 1
    np.testing.assert_array_equal(tubes[0].boxes, expected[0].boxes)
    assert all(len(r.tubes) == 1 and r.tubes[0, 0] == tubes[0].tube_id for r in results[1:])


def test_runtime_streams_a_torch_menet_lite_exactly(tiny):
    torch = pytest.importorskip("torch")
    from edge_stad.models import create_model
    from edge_stad.runtime.stream import Runtime
    from edge_stad.torch_backends.streaming import TorchFrameBackend

    torch.manual_seed(0)
    model = create_model("menet-lite", num_classes=8, input_size=64, clip_len=4, width_3d=0.5).eval()
    backend = TorchFrameBackend(model)
    video = tiny.test_videos[0]
    offline = predict_frame_rows(backend, tiny, video, refresh=2)
    results = stream_video(Runtime(backend, frame_detections=True, refresh=2), tiny, video)
    streamed = np.concatenate([np.c_[np.full(len(r.detections), r.frame, np.float32), r.detections]
                               for r in results])
    np.testing.assert_array_equal(streamed, offline)
    with pytest.raises(ConfigError, match="refresh"):
        Runtime(backend, refresh=0)
