"""Motion distillation: optical flow and its cache, clip datasets, losses, teacher/student training, CLI."""
import logging
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from edge_stad import cli  # noqa: E402
from edge_stad.data import flow as flow_module  # noqa: E402
from edge_stad.data.act import ActDataset  # noqa: E402
from edge_stad.data.flow import FlowCache  # noqa: E402
from edge_stad.data.synth.generate import generate_dataset  # noqa: E402
from edge_stad.errors import ConfigError, DataError  # noqa: E402
from edge_stad.optical_flow import compute_flow, dequantize_flow, quantize_flow  # noqa: E402
from edge_stad.train import distill  # noqa: E402

SIZE, T = 32, 4


class TinyNet(nn.Module):
    """A stand-in 3D backbone with the backbones3d interface, small enough for unit tests."""

    def __init__(self, in_channels, widths=(4, 8)):
        super().__init__()
        self.in_channels, self.stage_channels, self.out_channels = in_channels, tuple(widths), widths[-1]
        chans = (in_channels, *widths)
        self.stages = nn.ModuleList(nn.Sequential(nn.Conv3d(a, b, 3, (1, 2, 2), 1), nn.BatchNorm3d(b), nn.ReLU())
                                    for a, b in zip(chans, widths))

    def forward_levels(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, x):
        return self.forward_levels(x)[-1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ActDataset(generate_dataset(tmp_path_factory.mktemp("data") / "tiny", preset="tiny", seed=1))


@pytest.fixture(scope="module")
def cache(tiny, tmp_path_factory):
    return FlowCache(tiny, tmp_path_factory.mktemp("flow"), "dis", "ultrafast", SIZE)


def clips(tiny, cache, videos, modalities, train=True, **kw):
    return distill.ClipDataset(tiny, videos, T, SIZE, modalities, cache, train=train, **kw)


def fit_config(out, **kw):
    values = dict(out=str(out), epochs=None, max_steps=2, batch_size=4, optimizer="adam", lr=1e-2, progress=False,
                  device="cpu")
    values.update(kw)
    return distill.FitConfig(**values)


# -- flow ---------------------------------------------------------------------------------------

def texture(shape=(96, 96), seed=0):
    noise = np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_of_a_shifted_texture(method):
    image = texture()
    shifted = np.roll(image, (-2, 3), axis=(0, 1))  # content moves 3 px right and 2 px up
    grey = [cv2.normalize(i, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8) for i in (image, shifted)]
    flow = compute_flow(grey[0], grey[1], method)
    dx, dy = np.median(flow[16:-16, 16:-16].reshape(-1, 2), axis=0)
    assert flow.shape == (96, 96, 2) and flow.dtype == np.float32
    assert dx == pytest.approx(3, abs=0.3) and dy == pytest.approx(-2, abs=0.3)


def test_quantization_clips_and_round_trips():
    flow = np.array([[-25.0, -20.0], [0.0, 7.3], [19.9, 40.0]], dtype=np.float32)
    q = quantize_flow(flow)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    back = dequantize_flow(q)
    expected = np.clip(flow, -20, 20)
    assert np.abs(back - expected).max() <= 20 / 255 + 1e-6  # half a step of 40/255


def test_cache_round_trip_and_keys(tiny, tmp_path, monkeypatch):
    calls = []
    real = flow_module.compute_flow
    monkeypatch.setattr(flow_module, "compute_flow", lambda *a: calls.append(a[2:]) or real(*a))
    video = tiny.train_videos[0]
    store = FlowCache(tiny, tmp_path, "dis", "ultrafast", SIZE)
    first = store.flow(video, 5)
    assert first.shape == (SIZE, SIZE, 2) and first.dtype == np.uint8 and len(calls) == 1
    assert np.array_equal(store.flow(video, 5), first) and len(calls) == 1  # read back, not recomputed
    assert np.array_equal(store.flow(video, 1), store.flow(video, 2))  # frame 1 repeats frame 2's flow
    assert len(calls) == 2
    other_method = FlowCache(tiny, tmp_path, "farneback", size=SIZE)
    other_size = FlowCache(tiny, tmp_path, "dis", "ultrafast", (24, 40))
    assert other_method.flow(video, 5).shape == (SIZE, SIZE, 2) and calls[-1][0] == "farneback"
    assert other_size.flow(video, 5).shape == (24, 40, 2) and len(calls) == 4
    assert len({store.path(video, 5), other_method.path(video, 5), other_size.path(video, 5)}) == 3
    with pytest.raises(DataError, match="outside"):
        store.flow(video, 10_000)
    with pytest.raises(ConfigError, match="unknown flow method"):
        FlowCache(tiny, tmp_path, "tvl1")


def test_corrupt_cache_file_is_recomputed(tiny, tmp_path, caplog):
    store = FlowCache(tiny, tmp_path, "dis", "ultrafast", SIZE)
    video = tiny.train_videos[0]
    good = store.flow(video, 3)
    path = store.path(video, 3)
    for bad in (b"not a numpy file", None):
        if bad is None:  # readable, but the wrong shape (e.g. written by a buggy older version)
            np.save(path, np.zeros((4, 4, 2), np.uint8))
        else:
            with open(path, "wb") as f:
                f.write(bad)
        with caplog.at_level(logging.WARNING, logger="edge_stad.data.flow"):
            assert np.array_equal(store.flow(video, 3), good)
        assert "recomputing" in caplog.text and path in caplog.text
        assert np.array_equal(np.load(path), good)  # repaired on disk
        caplog.clear()


def test_precompute_fills_the_cache_once(tiny, tmp_path):
    store = FlowCache(tiny, tmp_path, "dis", "ultrafast", SIZE)
    video = tiny.test_videos[0]
    pairs = [(video, f) for f in range(1, tiny.nframes(video) + 1)]
    assert store.precompute(pairs, progress=False) == tiny.nframes(video) - 1  # frame 1 shares frame 2's file
    assert store.precompute(pairs, progress=False) == 0
    fresh = FlowCache(tiny, tmp_path / "again", "dis", "ultrafast", SIZE)
    assert np.array_equal(fresh.flow(video, 7), store.flow(video, 7))  # sequential precompute = one-off compute


# -- clips --------------------------------------------------------------------------------------

def test_clip_dataset(tiny, cache):
    videos = tiny.train_videos
    data = clips(tiny, cache, videos, ("rgb", "flow"), clips_per_video=2, seed=3)
    item = data[5]
    assert item["rgb"].shape == (3, T, SIZE, SIZE) and item["flow"].shape == (2, T, SIZE, SIZE)
    assert item["rgb"].dtype == item["flow"].dtype == np.float32
    assert -1 <= item["flow"].min() and item["flow"].max() <= 1
    video, frames, _ = data.clip(5)
    assert video == videos[2] and int(item["label"]) == next(iter(tiny.tubes(video)))
    lo, hi = distill.annotated_span(tiny, video)
    assert lo <= frames[0] and frames[-1] <= hi and frames == sorted(frames)
    assert data.clip(5) == data.clip(5)
    starts = set()
    for epoch in range(6):
        data.set_epoch(epoch)
        starts.add(data.clip(5)[1][0])
    assert len(starts) > 1  # the epoch changes the draw
    held_out = clips(tiny, cache, tiny.test_videos, ("rgb",), train=False, clips_per_video=3)
    spread = [held_out.clip(i)[1][0] for i in range(3)]
    lo, hi = distill.annotated_span(tiny, tiny.test_videos[0])
    assert spread[0] == lo and spread[-1] == hi - T + 1 and "flow" not in held_out[0]


def test_mirrored_clip_negates_dx(tiny, cache):
    plain = clips(tiny, cache, tiny.train_videos[:1], ("rgb", "flow"), seed=0)
    mirrored = clips(tiny, cache, tiny.train_videos[:1], ("rgb", "flow"), seed=0, augment=True)
    epoch = next(e for e in range(20) if (mirrored.set_epoch(e) or mirrored.clip(0)[2]))
    plain.set_epoch(epoch)
    a, b = plain[0], mirrored[0]
    np.testing.assert_array_equal(b["flow"][0], -a["flow"][0][..., ::-1])
    np.testing.assert_array_equal(b["flow"][1], a["flow"][1][..., ::-1])
    np.testing.assert_array_equal(b["rgb"], a["rgb"][..., ::-1])


def test_clip_dataset_checks(tiny, cache):
    with pytest.raises(ConfigError, match="FlowCache computed at the clip size"):
        distill.ClipDataset(tiny, tiny.train_videos, T, 48, ("flow",), cache)
    with pytest.raises(ConfigError, match="modalities"):
        distill.ClipDataset(tiny, tiny.train_videos, T, SIZE, ("depth",))


# -- losses -------------------------------------------------------------------------------------

def features(seed=0, shape=(2, 6, 2, 3, 3)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g)


def test_mars_loss_is_ce_plus_alpha_mse():
    logits, labels = features(1, (4, 5)), torch.tensor([0, 3, 1, 4])
    teacher = features(2, (4, 16))
    ce = F.cross_entropy(logits, labels)
    plain = distill.DistillLoss((8,), (8,), 16, 16, alpha=0.0)
    total, parts = plain(logits, labels, (teacher + 1.0,), (teacher,))
    assert torch.equal(total, ce) and float(parts["mse"]) == pytest.approx(1.0)
    mars = distill.DistillLoss((8,), (8,), 16, 16)
    noise = features(3, (4, 16))
    totals = [float(mars(logits, labels, (teacher + k * noise,), (teacher,))[0]) for k in (0.0, 0.5, 1.0, 2.0)]
    assert totals[0] == pytest.approx(float(ce)) and totals == sorted(totals) and totals[-1] > totals[0] + 50


def test_gram_loss_sees_channels_not_positions():
    x = features()
    assert torch.equal(distill.gram(x), distill.gram(x.clone()))
    positions = x.flatten(2).roll(1, dims=2).reshape(x.shape)  # every value moves to another place
    channels = x.roll(1, dims=1)
    loss = distill.DistillLoss((6,), (6,), 4, 4, alpha=1.0, levels=(0,))
    pooled, logits, labels = torch.zeros(2, 4), torch.zeros(2, 3), torch.tensor([0, 1])

    def parts(student, teacher):
        return loss(logits, labels, (pooled, [student]), (pooled, [teacher]))[1]

    assert float(parts(x, x)["gram"]) == 0 and float(parts(x, x)["mae"]) == 0
    moved = parts(positions, x)
    assert float(moved["gram"]) == pytest.approx(0, abs=1e-6) and float(moved["mae"]) > 0.3  # (0 + ~1.1) / 2 terms
    assert float(parts(channels, x)["gram"]) > 0.1


def test_adapters_only_where_widths_differ():
    same = distill.DistillLoss((4, 8, 16), (4, 8, 16), 16, 16, levels=(0, 1, 2))
    assert len(same.adapters) == 0 and isinstance(same.pooled_adapter, nn.Identity)
    mixed = distill.DistillLoss((4, 8, 16), (4, 12, 16), 16, 32, levels=(0, 1, 2))
    assert list(mixed.adapters) == ["1"] and mixed.adapters["1"].kernel_size == (1, 1, 1)
    assert mixed.adapters["1"].in_channels == 8 and mixed.adapters["1"].out_channels == 12
    assert isinstance(mixed.pooled_adapter, nn.Linear)
    assert len(distill.DistillLoss((4, 8), (4, 12), 8, 12).adapters) == 0  # MARS mode compares pooled features only
    with pytest.raises(ConfigError, match="do not exist"):
        distill.DistillLoss((4, 8), (4, 8), 8, 8, levels=(2,))


# -- training -----------------------------------------------------------------------------------

def test_teacher_training_decreases_the_loss(tiny, cache, tmp_path):
    torch.manual_seed(0)
    model = distill.Classifier3D(TinyNet(2, (8, 16)), len(tiny.labels))
    train = clips(tiny, cache, tiny.train_videos, ("flow",), clips_per_video=2)
    held_out = clips(tiny, cache, tiny.test_videos, ("flow",), train=False)
    result = distill.train_teacher(model, train, held_out, fit_config(tmp_path, max_steps=40, lr=3e-2))
    assert result["steps"] == 40 and result["epochs"] == 10
    assert result["final_loss"] < 0.9 * result["first_loss"]
    assert 0 <= result["val_accuracy"] <= 100
    again, meta = distill.load_classifier(result["checkpoint"],
                                          distill.Classifier3D(TinyNet(2, (8, 16)), len(tiny.labels)))
    assert meta["kind"] == "teacher" and meta["data"] == {"clip_len": T, "input_size": [SIZE, SIZE], "flow": {
        "method": "dis", "preset": "ultrafast", "bound": 20.0}}
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_student_learns_and_the_teacher_stays_frozen(tiny, cache, tmp_path):
    torch.manual_seed(0)
    teacher = distill.Classifier3D(TinyNet(2, (4, 12)), len(tiny.labels))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = distill.Classifier3D(TinyNet(3), len(tiny.labels))
    train = clips(tiny, cache, tiny.train_videos, ("rgb", "flow"), clips_per_video=2)
    held_out = clips(tiny, cache, tiny.test_videos, ("rgb",), train=False)
    result = distill.distill_student(student, teacher, train, held_out, fit_config(tmp_path, max_steps=20),
                                     levels=(0, 1))
    assert result["final_loss"] < result["first_loss"] and {"final_ce", "final_mae", "final_gram"} <= set(result)
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN statistics included
    state = distill.export_backbone_state(student)
    assert set(state) == {"backbone_3d." + k for k in student.backbone.state_dict()}


def test_training_needs_an_end_and_a_batch(tiny, cache, tmp_path):
    model = distill.Classifier3D(TinyNet(2), len(tiny.labels))
    train = clips(tiny, cache, tiny.train_videos, ("flow",))
    with pytest.raises(ConfigError, match="needs an end"):
        distill.train_teacher(model, train, train, fit_config(tmp_path, max_steps=None))
    with pytest.raises(ConfigError, match="fewer than one batch"):
        distill.train_teacher(model, train, train, fit_config(tmp_path, batch_size=100))


def test_cli_teacher_then_student_with_shufflenet(tiny, tmp_path, capsys):
    pytest.importorskip("edge_stad.models.backbones3d")
    out, common = tmp_path / "kd", ["--data", tiny.root, "--backbone", "shufflenetv2", "--width-mult", "0.25",
                                    "--max-steps", "2", "--batch-size", "4", "--clips-per-video", "1",
                                    "--flow-cache", str(tmp_path / "flow"), "--no-progress", "--device", "cpu"]
    assert cli.main(["distill", "teacher", *common, "--out", str(out), "--clip-len", "4", "--input-size", "32",
                     "--dis-preset", "ultrafast"]) == 0
    assert "teacher: 2 steps" in capsys.readouterr().out
    assert cli.main(["distill", "student", *common, "--out", str(out), "--teacher", str(out / "teacher.pt"),
                     "--levels", "all"]) == 0
    text = capsys.readouterr().out
    assert "student: 2 steps" in text and "backbone_3d.pt" in text
    state = torch.load(out / "backbone_3d.pt", weights_only=True)
    rgb = distill.build_classifier("shufflenetv2", len(tiny.labels), 3, 0.25).backbone
    rgb.load_state_dict({k[len("backbone_3d."):]: v for k, v in state.items()})
    teacher, meta = distill.load_classifier(out / "teacher.pt")
    assert teacher.backbone.in_channels == 2 and meta["data"]["input_size"] == [32, 32]
    assert os.path.exists(out / "student.json") and os.path.exists(out / "teacher.json")


def test_cli_help(capsys):
    for argv in (["distill", "--help"], ["distill", "teacher", "--help"], ["distill", "student", "--help"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0
    assert "--levels" in capsys.readouterr().out
