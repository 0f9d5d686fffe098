"""The STMA path end to end on the tiny synthetic set: samples, window-by-window prediction, training."""
import numpy as np
import pytest

from edge_stad.core.snippets import layout_of
from edge_stad.data.act import ActDataset
from edge_stad.data.snippet_samples import SnippetSamples
from edge_stad.errors import ConfigError
from edge_stad.eval.predict_snippets import evaluate_snippet_backend, predict_snippet_windows, predict_snippets
from edge_stad.preprocess import normalize_clip, resize
from tests.synth_data import tiny_synth

# Model configs as the samples and the predictor read them (no torch needed for those).
LITE = {"name": "stma-lite", "num_classes": 8, "input_size": [64, 64], "K": 3, "clip_len": 4, "key_frame": "last",
        "backbone": "shufflenetv2", "backbone_3d": "shufflenetv2", "class_agnostic": True,
        "gaussian_regression": True}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ActDataset(tiny_synth(tmp_path_factory))


@pytest.mark.parametrize("key_frame,clip_len,backbone", [("last", 4, "shufflenetv2"), ("center", 6, "dla34")])
def test_samples_hold_the_clip_around_the_snippet(tiny, key_frame, clip_len, backbone):
    config = dict(LITE, key_frame=key_frame, clip_len=clip_len, backbone=backbone)
    samples = SnippetSamples(tiny, tiny.train_videos, config)
    layout = layout_of(config)
    index = next(i for i, (v, _) in enumerate(samples.samples) if len(tiny.gt.gttubes[v][
        next(iter(tiny.gt.gttubes[v]))]) == 1 and i > 3)    # a one-actor video, a few frames in
    video, end = samples.samples[index]
    item = samples[index]
    numbers = layout.clip_frames(end, tiny.gt.nframes[video])
    expected = normalize_clip([resize(tiny.read_frame(video, f), (64, 64)) for f in numbers])
    np.testing.assert_array_equal(item["clips"], expected)
    assert numbers[layout.snippet[1]] == end and item["num"].tolist() == [1]
    stride = 4 if backbone == "dla34" else 8
    (label, (tube,)), = tiny.gt.gttubes[video].items()
    h, w = tiny.gt.resolution[video]
    scale = np.array([64 / stride / w, 64 / stride / h] * 2, np.float32)
    for j, f in enumerate(range(end - layout.K + 1, end + 1)):   # frame j's box target, at frame j's centre
        box = tube[int(f - tube[0, 0]), 1:5] * scale
        cell = int(np.round((box[1] + box[3]) / 2)), int(np.round((box[0] + box[2]) / 2))
        np.testing.assert_allclose(item["box"][j][:, cell[0], cell[1]], box, rtol=1e-6)
        if j == layout.key:
            assert item["hm"][0][cell] == 1
    assert item["hm"].shape == (1, 64 // stride, 64 // stride) and item["cls"][label] == 1


class FakeSnippetBackend:
    """Records what it is asked; one confident tubelet of class 1 (a 2x2-cell box at cell (3, 3)) per window."""

    def __init__(self, config):
        self.config = config
        self.encoded, self.clips, self.windows = [], [], []

    def encode(self, frames):
        assert frames.ndim == 4 and frames.shape[1:] == (64, 64, 3) and frames.dtype == np.uint8
        self.encoded.append(len(frames))
        n = len(frames)
        act = np.zeros((n, 8, 2, 2), np.float32) if self.config["class_agnostic"] else None
        return np.zeros((n, 64, 8, 8), np.float32), np.ones((n, 4, 8, 8), np.float32), act

    def encode_3d(self, clips):
        assert clips.shape == (1, self.config["clip_len"], 64, 64, 3)
        self.clips.append(clips)
        return np.zeros((1, 16, 2, 2), np.float32)

    def detect(self, feats, whs, acts, feat3d):
        K = self.config["K"]
        assert feats.shape == (1, K, 64, 8, 8) and whs.shape == (1, K, 4, 8, 8)
        self.windows.append(acts.shape[1] if acts is not None else 0)
        row = np.array([[2, 2, 4, 4] * K + [0.9, 1]], np.float32)
        return row[None]


@pytest.mark.parametrize("refresh", [1, 3])
def test_prediction_encodes_every_frame_once_and_refreshes_the_3d_branch(tiny, refresh):
    video = tiny.test_videos[0]
    n = tiny.gt.nframes[video]
    backend = FakeSnippetBackend(LITE)
    windows = predict_snippet_windows(backend, tiny, video, refresh=refresh)
    assert [w.frames for w in windows] == [tuple(range(e - 2, e + 1)) for e in range(3, n + 1)]
    assert sum(backend.encoded) == n                      # one backbone pass per frame
    assert len(backend.clips) == -(-(n - 2) // refresh)   # the 3D branch on windows 0, s, 2s, ...
    assert backend.windows == [3] * (n - 2)               # motion excitation over the K snippet frames
    h, w = tiny.gt.resolution[video]
    np.testing.assert_allclose(windows[0].tubelets[1][0], [w / 4, h / 4, w / 2, h / 2] * 3 + [0.9], rtol=1e-6)
    assert all(len(windows[0].tubelets[c]) == 0 for c in (0, 2, 3, 4, 5, 6, 7))


def test_prediction_without_3d_reads_the_cached_sequence(tiny):
    config = dict(LITE, backbone_3d=None, clip_len=5)
    backend = FakeSnippetBackend(config)
    video = tiny.test_videos[1]
    detections = predict_snippets(backend, tiny, [video])
    n = tiny.gt.nframes[video]
    assert not backend.clips and backend.windows == [5] * (n - 2) and sum(backend.encoded) == n
    assert detections.K == 3 and detections.clip_len == 1 and detections.mode == "normal"
    with pytest.raises(ConfigError, match="refresh"):
        predict_snippet_windows(backend, tiny, video, refresh=0)


def test_evaluation_links_and_scores_the_windows(tiny):
    ev = evaluate_snippet_backend(FakeSnippetBackend(LITE), tiny)
    assert 0 <= ev.frame.mean <= 1 and set(ev.video) >= {0.2, 0.5}


# -- with torch ------------------------------------------------------------------------------------
torch = pytest.importorskip("torch")
from edge_stad.core.snippet_decode import decode_stma  # noqa: E402
from edge_stad.core.tubelet_decode import to_pixels  # noqa: E402
from edge_stad.models import create_model, load_checkpoint, save_checkpoint  # noqa: E402
from edge_stad.torch_backends.snippet import TorchSnippetBackend  # noqa: E402
from edge_stad.train.stma_loss import stma_loss  # noqa: E402
from edge_stad.train.trainer import TrainConfig, Trainer, _collate  # noqa: E402

TINY = dict(num_classes=8, input_size=64, K=3, clip_len=4, backbone_3d="shufflenetv2", width_3d=0.25, head_conv=16,
            wh_head_conv=16, action_channels=16, fused_channels=32)


def tiny_model(**config):
    torch.manual_seed(0)
    return create_model("stma-lite", **dict(TINY, **config)).eval()


@pytest.mark.parametrize("config", [{}, dict(backbone_3d=None, width_3d=None, clip_len=5)])
def test_cached_stream_equals_the_whole_window_forward(tiny, config):
    model = tiny_model(**config)
    video = tiny.test_videos[0]
    windows = predict_snippet_windows(TorchSnippetBackend(model), tiny, video)
    layout, n = model.layout, tiny.gt.nframes[video]
    for window in windows[:4] + windows[-2:]:
        numbers = layout.clip_frames(window.frame, n)
        clips = normalize_clip([resize(tiny.read_frame(video, f), (64, 64)) for f in numbers])
        with torch.no_grad():
            out = model(torch.from_numpy(clips)[None])
        prob = torch.softmax(out["cls"], 1).numpy()
        rows = decode_stma(out["hm"].numpy(), out["mov"].numpy(), out["wh"].numpy(), prob)[0]
        whole = to_pixels(rows, 8, (8, 8), tiny.gt.resolution[video])
        for label in whole:
            np.testing.assert_allclose(window.tubelets[label], whole[label], rtol=1e-4, atol=1e-3)


def test_a_few_steps_lower_the_loss(tiny):
    model = tiny_model(backbone_3d=None, width_3d=None)
    samples = SnippetSamples(tiny, tiny.train_videos, model.config)
    batch = {k: v for k, v in _collate([samples[i] for i in range(0, len(samples), len(samples) // 4)][:4]).items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(10):
        total, parts = stma_loss(model(batch["clips"]), batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append((float(total.detach()), {k: float(v.detach()) for k, v in parts.items()}))
    first, last = losses[0], losses[-1]
    assert last[0] < 0.6 * first[0]
    assert all(last[1][k] < first[1][k] for k in ("hm", "mov", "wh", "cls")), (first, last)


def test_stma_lite_trains_validates_resumes_and_reloads(tmp_path_factory, tmp_path, tiny):
    data = str(tiny_synth(tmp_path_factory))

    def config(out, **kw):
        values = dict(data=data, out=str(out), model="stma-lite", input_size=64, K=3, clip_len=4, batch_size=2,
                      epochs=2, workers=0, log_every=1, val_every=0, progress=False, seed=5, schedule="constant",
                      device="cpu", width_3d=0.25)
        return TrainConfig(**dict(values, **kw))

    result = Trainer(config(tmp_path / "a", max_steps=3, val_every=1)).fit()
    assert result["history"][-1]["step"] == 3 and 0 <= result["history"][-1]["frame_mAP"] <= 100
    model = load_checkpoint(result["last"])    # weights_only loading
    assert model.config["name"] == "stma-lite" and model.config["key_frame"] == "last"
    assert model.config["num_classes"] == 8 and model.config["width_3d"] == 0.25
    log = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert log[0].split(",")[4:8] == ["loss", "hm", "mov", "wh"] and log[1].startswith("train,1,1,")
    Trainer(config(tmp_path / "b", max_steps=2)).fit()
    Trainer(config(tmp_path / "b", max_steps=3, resume=str(tmp_path / "b" / "last.pt"))).fit()
    a, b = (load_checkpoint(p / "last.pt") for p in (tmp_path / "a", tmp_path / "b"))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    none = Trainer(config(tmp_path / "c", max_steps=1, backbone_3d="none", clip_len=5)).model
    assert none.backbone_3d is None and none.config["width_3d"] is None and none.action.frames == 5


def test_checkpoint_round_trip(tmp_path):
    model = tiny_model(backbone_3d=None, width_3d=None, clip_len=5, class_agnostic=True)
    path = tmp_path / "stma.pt"
    save_checkpoint(path, model, labels=list("abcdefgh"))
    again = load_checkpoint(path)
    assert again.config == model.config and again.config["backbone_3d"] is None
    clips = torch.randn(1, 15, 64, 64)
    with torch.no_grad():
        for key, value in model(clips).items():
            assert torch.equal(value, again(clips)[key]), key
    rebuilt = create_model(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(clips)["cls"], model(clips)["cls"])


def test_pretrained_2d_and_3d_weights_load_by_name(tmp_path):
    from edge_stad.errors import ConfigError as Refused
    from edge_stad.models.dla import DLASeg
    from edge_stad.train.snippet_task import SnippetTask

    torch.manual_seed(1)
    centernet = {f"module.{k}": v for k, v in DLASeg(deformable=True).state_dict().items()}   # ctdet_coco_dla layout
    centernet["hm.2.weight"] = torch.zeros(80, 256, 1, 1)
    torch.save({"epoch": 140, "state_dict": centernet}, tmp_path / "ctdet_coco_dla.pth")
    model = tiny_model(backbone="dla34", decoder="dcn")
    report = SnippetTask().load_pretrained(model, str(tmp_path / "ctdet_coco_dla.pth"))
    assert report["loaded"] == len(centernet) - 1       # all but the detection head
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, centernet["module." + key]), key
    student = {f"backbone_3d.{k}": v + 1 for k, v in model.backbone_3d.state_dict().items()}
    torch.save(student, tmp_path / "backbone_3d.pt")
    SnippetTask().load_pretrained(model, str(tmp_path / "backbone_3d.pt"))
    assert torch.equal(model.backbone_3d.conv1[0].weight, student["backbone_3d.conv1.0.weight"])
    with pytest.raises(Refused, match="has none"):
        SnippetTask().load_pretrained(tiny_model(backbone_3d=None, width_3d=None), str(tmp_path / "backbone_3d.pt"))


@pytest.mark.parametrize("blocks,expected", [
    ("", dict(class_agnostic=False, motion_excitation=False, attention=False, gaussian_regression=False,
              backbone_3d="none")),
    ("cal", dict(class_agnostic=True, motion_excitation=False, attention=False, gaussian_regression=False)),
    ("cal,me,gr", dict(class_agnostic=True, motion_excitation=True, attention=False, gaussian_regression=True)),
    ("gr,sta,me,cal", dict(class_agnostic=True, motion_excitation=True, attention=True, gaussian_regression=True)),
])
def test_blocks_select_the_table_2_rows(blocks, expected):
    from edge_stad.train.snippet_task import ablation_blocks

    assert ablation_blocks(blocks) == expected


@pytest.mark.parametrize("blocks,match", [("me", "me and sta belong to the recognition branch"),
                                          ("cal,sta,ca", "subset of cal,me,sta,gr"), ("CAL", "subset of")])
def test_bad_blocks_are_refused(blocks, match):
    from edge_stad.train.snippet_task import ablation_blocks

    with pytest.raises(ConfigError, match=match):
        ablation_blocks(blocks)


def test_the_baseline_block_set_builds_moc_s_class_heatmap(tmp_path_factory, tiny):
    cfg = TrainConfig(data=str(tiny_synth(tmp_path_factory)), model="stma-lite", input_size=64, K=3, clip_len=4,
                      blocks="", device="cpu", progress=False)
    model = Trainer(cfg, dataset=tiny).model
    assert model.action is None and model.backbone_3d is None and model.config["class_agnostic"] is False
    assert model.detection.hm[-1].out_channels == len(tiny.labels)
    assert model.config["gaussian_regression"] is False
