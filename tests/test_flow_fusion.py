"""flow-fusion and flow-fusion-lite: PWC-Net pieces and their ONNX export, fusion blocks, shapes and sizes
against the paper, the streaming split, the flow loss, training, checkpoints; AMMA's MM_Diff option."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from edge_stad.errors import ConfigError  # noqa: E402
from edge_stad.models import create_model, load_checkpoint, save_checkpoint  # noqa: E402
from edge_stad.models.flow_fusion import ElementwiseFusion, PyramidFusion  # noqa: E402
from edge_stad.models.pwcnet import PWCNet, cost_volume, warp  # noqa: E402
from edge_stad.models.ssd_backbones import VGGRFB, SSDLite, vgg_base  # noqa: E402
from edge_stad.train.flow_fusion import flow_loss  # noqa: E402
from tests.model_helpers import calibrate_bn  # noqa: E402

SMALL = dict(pyramid=(8, 12, 16), estimator=(16, 8), max_displacement=2, dense=True, context=False)


def count(module):
    return sum(p.numel() for p in module.parameters())


# -- PWC-Net ------------------------------------------------------------------------------------

def test_cost_volume_equals_the_correlation_loop():
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(2, 5, 6, 7, generator=g), torch.randn(2, 5, 6, 7, generator=g)
    d = 2
    out = cost_volume(f1, f2, d)
    assert out.shape == (2, 25, 6, 7)
    expected = torch.zeros_like(out)
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            for y in range(6):
                for x in range(7):
                    if 0 <= y + dy < 6 and 0 <= x + dx < 7:
                        expected[:, (dy + d) * 5 + dx + d, y, x] = (f1[:, :, y, x] * f2[:, :, y + dy, x + dx]).mean(1)
    torch.testing.assert_close(out, expected)


def test_warp_shifts_by_the_flow_and_masks_what_falls_outside():
    x = torch.arange(24, dtype=torch.float32).reshape(1, 1, 4, 6)
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0] = 1.0                                       # sample one pixel to the right
    out = warp(x, flow)
    torch.testing.assert_close(out[..., :5], x[..., 1:])
    assert out[..., 5].abs().sum() == 0                    # outside the image: masked
    flow[:, 0], flow[:, 1] = 0.5, 0.0
    half = warp(x, flow)
    torch.testing.assert_close(half[..., :5], (x[..., :5] + x[..., 1:]) / 2)
    assert half[..., 5].abs().sum() == 0                   # half a tap outside: PWC-Net's mask drops it
    torch.testing.assert_close(warp(x, torch.zeros(1, 2, 4, 6)), x)


def test_pwc_net_size_and_shapes():
    model = PWCNet()
    # NVlabs' PyTorch layout counts 9,374,274 parameters; PWC-Net's paper states 8.75 M for its Caffe model
    assert count(model) == 9_374_274 and abs(count(model) / 8.75e6 - 1) < 0.08
    assert model.divisor == 64
    flows = model.to("meta")(torch.zeros(1, 3, 320, 320, device="meta"), torch.zeros(1, 3, 320, 320, device="meta"))
    assert [tuple(f.shape[2:]) for f in flows] == [(5, 5), (10, 10), (20, 20), (40, 40), (80, 80)]
    with pytest.raises(ValueError, match="multiple of 64"):
        PWCNet().features(torch.zeros(1, 3, 300, 300))


def test_pwc_net_exports_to_onnx_without_custom_ops_and_matches_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = PWCNet(**SMALL).eval()
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)

    class Finest(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x, y):
            return self.net(x, y)[-1]

    path = tmp_path / "pwc.onnx"
    torch.onnx.export(Finest(), (a, b), str(path), opset_version=16, input_names=["a", "b"], output_names=["flow"],
                      dynamo=False)
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    assert "GridSample" in ops and all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    assert graph.opset_import[0].version == 16            # GridSample needs opset 16
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"a": a.numpy(), "b": b.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, Finest()(a, b).numpy(), atol=1e-5, rtol=1e-4)


# -- backbones, fusion, model -------------------------------------------------------------------

def test_backbone_sizes_against_the_paper():
    base = torch.nn.ModuleList(vgg_base())
    assert count(base) == 20_483_904                       # SSD's reduced VGG16 (conv1_1 .. fc7)
    vgg = VGGRFB().eval()
    assert vgg.out_channels == (512, 1024, 512, 256, 256, 256)   # the paper's six levels
    maps = vgg.to("meta")(torch.zeros(1, 3, 300, 300, device="meta"))
    assert [tuple(m.shape[2:]) for m in maps] == VGGRFB.feature_sizes(300, 300) == \
        [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    for kind in ("mobilenetv2", "shufflenetv2"):
        lite = SSDLite(kind).eval()
        for size in (64, 96, 320):
            shapes = [tuple(m.shape[2:]) for m in lite.to("meta")(torch.zeros(1, 3, size, size, device="meta"))]
            assert shapes == SSDLite.feature_sizes(size, size)


def test_faithful_model_shapes_and_parameters():
    model = create_model("flow-fusion", num_classes=24)
    cfg = model.config
    assert (cfg["backbone"], cfg["fusion"], cfg["flow_size"], cfg["frames"], cfg["lookahead"]) == \
        ("vgg16", "m-concat", 320, 3, 1)
    assert model.priors.shape == (11620, 4) and model.key_index == 1
    assert count(model) == 50_018_865
    assert count(model.pwc) == 9_374_274
    out = model.to("meta").eval()(torch.zeros(2, 9, 300, 300, device="meta"))
    assert out["loc"].shape == (2, 11620, 4) and out["conf"].shape == (2, 11620, 25)
    with pytest.raises(ConfigError, match="too small"):
        create_model("flow-fusion", input_size=128)
    with pytest.raises(ConfigError, match="fusion"):
        create_model("flow-fusion", fusion="max")


@pytest.mark.parametrize("fusion", ["m-concat", "m-sum", "m-average", "stfp"])
def test_every_fusion_block_builds_and_runs(fusion):
    torch.manual_seed(0)
    model = create_model("flow-fusion-lite", num_classes=3, input_size=64, fusion=fusion,
                         backbone="shufflenetv2").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 9, 64, 64))
    assert out["loc"].shape == (1, len(model.priors), 4) and out["conf"].shape == (1, len(model.priors), 4)
    assert torch.isfinite(out["conf"]).all()


def identity_(conv, blocks=1):
    with torch.no_grad():
        c = conv.out_channels
        conv.weight.copy_(torch.cat([torch.eye(c)] * blocks, 1)[:, :, None, None])
        conv.bias.zero_()


def test_fusion_blocks_known_answers():
    g = torch.Generator().manual_seed(1)
    rgb = [torch.randn(1, 2, s, s, generator=g) for s in (4, 2, 1)]
    flow = [torch.randn_like(r) for r in rgb]
    for combine, blocks, scale in (("concat", 2, 1.0), ("sum", 1, 1.0), ("average", 1, 0.5)):
        block = ElementwiseFusion([2, 2, 2], combine)
        for conv in block.mix:
            identity_(conv, blocks)
        for out, a, f in zip(block(rgb, flow), rgb, flow):
            torch.testing.assert_close(out, (a + f) * scale)
    stfp = PyramidFusion([2, 2, 2])
    for conv in stfp.adapt:
        identity_(conv)
    out = stfp(rgb, flow)
    coarse = rgb[2] + flow[2]
    torch.testing.assert_close(out[2], coarse)
    torch.testing.assert_close(out[1], coarse.expand(1, 2, 2, 2) + rgb[1] + flow[1])   # 1x1 -> 2x2: a constant
    torch.testing.assert_close(out[0], F.interpolate(out[1], size=(4, 4), mode="bilinear") + rgb[0] + flow[0])


@pytest.mark.parametrize("motion", ["flow", "micro-motion"])
def test_streaming_split_equals_the_whole_model(motion):
    torch.manual_seed(0)
    model = create_model("flow-fusion-lite", num_classes=3, input_size=64, motion=motion, backbone="shufflenetv2")
    t = model.frames
    clips = torch.randn(2, 3 * t, 64, 64)
    calibrate_bn(model, clips)
    with torch.no_grad():
        whole = model(clips)
        key = clips[:, -3:]
        if motion == "flow":
            frames = [model.frame_features(clips[:, 3 * i:3 * i + 3]) for i in range(t)]   # one per new frame
            flows = [model.pair_flow(frames[i], frames[i + 1]) for i in range(t - 1)]      # one per new frame
            image = model.flow_image(torch.cat(flows, 1))
        else:
            image = model.flow_image(model.mm(clips))
        loc, conf = model.detect(key, image)
    torch.testing.assert_close(loc, whole["loc"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(conf, whole["conf"], atol=1e-5, rtol=1e-4)
    assert float(whole["conf"].std()) > 1e-2                              # not a collapsed net


def test_lookahead_puts_the_key_frame_before_the_newest():
    model = create_model("flow-fusion-lite", num_classes=2, input_size=64, lookahead=1)
    assert model.key_index == 1 and model.config["lookahead"] == 1
    with pytest.raises(ValueError, match="expected clips"):
        model(torch.zeros(1, 6, 64, 64))


def test_create_model_from_config_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("flow-fusion-lite", num_classes=4, input_size=64, fusion="stfp", backbone="shufflenetv2")
    again = create_model(**model.config)
    assert again.config == model.config
    save_checkpoint(tmp_path / "m.pt", model, step=3)
    loaded = load_checkpoint(tmp_path / "m.pt")            # weights_only loading
    assert loaded.config == model.config
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randn(1, 9, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)["conf"], loaded(x)["conf"])


# -- flow loss and training ---------------------------------------------------------------------

def test_flow_loss_known_answer_and_gradients():
    target = torch.zeros(2, 2, 8, 8)
    target[:, 0] = 4.0                                     # 4 px right everywhere, at an 8x8 input
    # predictions at levels 3 (2x2) and 2 (4x4) of a 16x16 flow input, in its pixels / 20
    levels = [torch.zeros(2, 2, 2, 2, requires_grad=True), torch.zeros(2, 2, 4, 4, requires_grad=True)]
    loss = flow_loss(levels, target, (16, 16), weights={3: 0.02, 2: 0.005})
    per_pixel = 4.0 * 16 / 8 / 20                          # 8 px at 16x16, / 20 = 0.4
    assert loss.item() == pytest.approx(0.02 * 4 * per_pixel + 0.005 * 16 * per_pixel)   # summed over pixels
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in levels)
    exact = [torch.full((2, 2, 2, 2), 0.0), torch.zeros(2, 2, 4, 4, requires_grad=True)]
    exact[0][:, 0] = per_pixel
    exact[1].data[:, 0] = per_pixel
    zero = flow_loss(exact, target, (16, 16), weights={3: 0.02, 2: 0.005})
    assert zero.item() == pytest.approx(0.0, abs=1e-6)
    zero.backward()
    assert torch.isfinite(exact[1].grad).all()             # the norm's gradient at 0 is 0, not NaN


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from edge_stad.data.act import ActDataset
    from tests.synth_data import tiny_synth

    return ActDataset(tiny_synth(tmp_path_factory))


def test_flow_samples_give_frames_boxes_and_dis_flow(tiny, tmp_path):
    from edge_stad.data.flow import FlowCache
    from edge_stad.data.flow_samples import FlowFusionSamples
    from edge_stad.preprocess import normalize_clip, resize

    cache = FlowCache(tiny, tmp_path / "flow", "dis", "ultrafast", 64)
    samples = FlowFusionSamples(tiny, tiny.train_videos, 3, 1, 64, cache)
    video, numbers, key = samples.numbers(0)
    assert numbers == (max(key - 1, 1), key, min(key + 1, tiny.nframes(video)))
    item = samples[0]
    assert item["clips"].shape == (9, 64, 64) and item["flow"].shape == (2, 2, 64, 64)
    expected = normalize_clip([resize(tiny.read_frame(video, f), (64, 64)) for f in numbers])
    np.testing.assert_array_equal(item["clips"], expected)
    for i, (a, b) in enumerate(zip(numbers, numbers[1:])):
        if a == b:
            assert not item["flow"][i].any()
        else:
            q = cache.flow(video, b).astype(np.float32) * (40 / 255) - 20
            np.testing.assert_allclose(item["flow"][i], q.transpose(2, 0, 1), atol=1e-5)
    assert item["boxes"][0, 4] >= 0 and (item["boxes"][1:, 4] == -1).all()
    with pytest.raises(ConfigError, match="input size"):
        FlowFusionSamples(tiny, tiny.train_videos, 3, 1, 32, cache)


def test_a_few_steps_lower_the_loss(tiny, tmp_path):
    from edge_stad.data.flow import FlowCache
    from edge_stad.data.flow_samples import FlowFusionSamples
    from edge_stad.train.flow_fusion import FlowFusionTask

    torch.manual_seed(0)
    model = create_model("flow-fusion-lite", num_classes=len(tiny.labels), input_size=64, backbone="shufflenetv2")
    samples = FlowFusionSamples(tiny, tiny.train_videos, 3, 0, 64, FlowCache(tiny, tmp_path, "dis", "ultrafast", 64))
    items = [samples[i] for i in range(0, len(samples), len(samples) // 4)][:4]
    batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
    task = FlowFusionTask()
    task.unfreeze = 100          # the paper's schedule: the flow network frozen (to detection losses) first
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for step in range(8):
        task.prepare_step(model, step)
        total, parts = task.loss(model, model(batch["clips"]), batch, 1)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append({k: v.item() for k, v in dict(parts, total=total).items()})
    assert losses[-1]["total"] < 0.7 * losses[0]["total"]
    assert losses[-1]["flow"] < 0.2 * losses[0]["flow"] and losses[-1]["loc"] < losses[0]["loc"]


def test_micro_motion_variant_trains_without_flow_targets(tiny):
    from edge_stad.data.flow_samples import FlowFusionSamples
    from edge_stad.train.flow_fusion import FlowFusionTask

    model = create_model("flow-fusion-lite", num_classes=len(tiny.labels), input_size=64, backbone="shufflenetv2",
                         motion="micro-motion").train()
    samples = FlowFusionSamples(tiny, tiny.train_videos, model.frames, 0, 64)
    item = samples[0]
    assert set(item) == {"clips", "boxes"} and item["clips"].shape == (12, 64, 64)
    other = samples[1]
    batch = {k: torch.from_numpy(np.stack([item[k], other[k]])) for k in item}
    total, parts = FlowFusionTask().loss(model, model(batch["clips"]), batch, 1)
    assert parts["flow"].item() == 0 and total.item() == pytest.approx(parts["loc"].item() + parts["conf"].item())


def test_pretrained_parts_load_by_name(tmp_path):
    from edge_stad.errors import CheckpointError
    from edge_stad.train.flow_fusion import FlowFusionTask

    torch.manual_seed(0)
    source = PWCNet(**{"pyramid": (16, 32, 64, 96), "estimator": (64, 48, 32, 16), "max_displacement": 3,
                       "dense": False, "context": False})
    torch.save({"pwc." + k: v for k, v in source.state_dict().items()}, tmp_path / "pwc.pt")
    model = create_model("flow-fusion-lite", num_classes=2, input_size=64, backbone="shufflenetv2")
    FlowFusionTask().load_pretrained(model, tmp_path / "pwc.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.pwc.state_dict().values(), source.state_dict().values()))
    torch.save({"pwc.conv1a.0.weight": torch.zeros(1, 1, 3, 3)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        FlowFusionTask().load_pretrained(model, tmp_path / "bad.pt")


def test_frozen_flow_network_learns_only_from_the_flow_loss(tiny):
    torch.manual_seed(0)
    model = create_model("flow-fusion-lite", num_classes=2, input_size=64, backbone="shufflenetv2").train()
    clips = torch.randn(2, 9, 64, 64)
    for detached, expect_grad in ((True, False), (False, True)):
        model.zero_grad()
        model.flow_detached = detached
        out = model(clips)
        out["conf"].sum().backward()                       # a detection loss only
        grads = [p.grad for p in model.pwc.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == expect_grad


def test_trainer_trains_validates_and_resumes(tiny, tmp_path):
    from edge_stad.train.trainer import TrainConfig, Trainer

    def config(out, **kw):
        values = dict(data=tiny.root, out=str(out), model="flow-fusion-lite", backbone="shufflenetv2", input_size=64,
                      batch_size=2, epochs=1, workers=0, log_every=1, val_every=0, progress=False, seed=5,
                      schedule="constant", device="cpu", flow_unfreeze=1)
        return TrainConfig(**dict(values, **kw))

    Trainer(config(tmp_path / "a", max_steps=3)).fit()
    Trainer(config(tmp_path / "b", max_steps=2)).fit()
    Trainer(config(tmp_path / "b", max_steps=3, resume=str(tmp_path / "b" / "last.pt"))).fit()
    a, b = (load_checkpoint(p / "last.pt") for p in (tmp_path / "a", tmp_path / "b"))
    assert a.config["name"] == "flow-fusion-lite" and a.config["num_classes"] == len(tiny.labels)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    log = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert log[0].endswith("loc,conf,flow") and len(log) == 4


def test_presets_follow_the_paper_and_the_cli_passes_the_options():
    from edge_stad.commands.train import add_arguments, config_from_args
    from edge_stad.train.presets import default_backbone, preset

    paper = preset("paper-ucf24", "vgg16", "flow-fusion")
    assert (paper["optimizer"], paper["lr"], paper["weight_decay"], paper["batch_size"], paper["input_size"]) == \
        ("sgd", 1e-3, 5e-4, 40, 300)
    assert (paper["schedule"], paper["milestones"], paper["gamma"], paper["max_steps"], paper["flow_unfreeze"]) == \
        ("iter-step", (30000, 60000, 100000), 0.1, 150000, 75000)
    assert preset("synthetic", "mobilenetv2", "flow-fusion-lite")["input_size"] == 128
    assert (default_backbone("flow-fusion"), default_backbone("flow-fusion-lite")) == ("vgg16", "mobilenetv2")
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--data", "d", "--model", "flow-fusion-lite", "--motion", "micro-motion",
                                              "--fusion", "stfp", "--flow-unfreeze", "7"]))
    assert (cfg.model, cfg.motion, cfg.fusion, cfg.flow_unfreeze) == ("flow-fusion-lite", "micro-motion", "stfp", 7)
    resolved = cfg.resolved()
    assert resolved.flow_unfreeze == 7 and resolved.backbone == "mobilenetv2" and resolved.batch_size == 8


def test_validation_links_frame_detections_with_road(tiny):
    from edge_stad.eval.predict_ssd import predict_ssd_detections
    from edge_stad.torch_backends.ssd import TorchSSDBackend

    torch.manual_seed(0)
    model = create_model("flow-fusion-lite", num_classes=len(tiny.labels), input_size=64, backbone="shufflenetv2")
    backend = TorchSSDBackend(model.eval())
    videos = tiny.test_videos[:1]
    for linker in ("road", "online", "viterbi"):
        det = predict_ssd_detections(backend, tiny, videos, linker=linker)
        rows = det.frames[videos[0]]
        frames = set(range(1, tiny.nframes(videos[0]) + 1))
        assert rows.shape[1] == 7 and set(np.unique(rows[:, 0]).astype(int)) <= frames
        assert len(det.windows[videos[0]]) == tiny.nframes(videos[0])
        assert (videos[0] in det.tubes) == (linker != "online")


# -- AMMA's MM_Diff -------------------------------------------------------------------------------

def test_amma_motion_diff_is_the_raw_rgb_difference():
    from edge_stad.models.micro_motion import MicroMotion

    torch.manual_seed(0)
    model = create_model("amma", backbone="resnet18", K=2, num_classes=3, input_size=64, motion="diff")
    assert model.config["motion"] == "diff" and "motion" not in create_model("amma", K=2, input_size=64).config
    clip = torch.randn(1, 15, 64, 64)
    pooled = F.max_pool2d(clip.reshape(5, 3, 64, 64), 3, 2, 1)
    diff = pooled[[0, 1, 2]] - pooled[4] + model.mm.eps                 # the reference pairs (i, 4)
    expected = F.interpolate(diff.pow(2).sum(1).sqrt()[None], scale_factor=2.0, mode="nearest")
    torch.testing.assert_close(model.mm(clip), expected)
    frozen = model.mm.shallow_conv.weight.clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(1, 2, 15, 64, 64))["hm"].sum().backward()
    optimizer.step()
    assert torch.equal(model.mm.shallow_conv.weight, frozen)              # MM_Diff has nothing to learn
    assert isinstance(create_model(**model.config).mm, MicroMotion)
    with pytest.raises(ConfigError, match="motion"):
        create_model("amma", motion="flow")


# -- profile ------------------------------------------------------------------------------------

def test_profile_splits_the_cost_and_streams_one_pyramid_and_one_pair(capsys):
    from edge_stad import cli
    from edge_stad.bench.complexity import count_macs
    from edge_stad.bench.flow_complexity import profile_flow_fusion

    model = create_model("flow-fusion-lite", num_classes=3, input_size=64, backbone="shufflenetv2")
    result = profile_flow_fusion(model)
    params, frame, stream = result["params"], result["macs"]["frame"], result["macs"]["stream"]
    assert params["total"] == count(model) and params["components"]["flow"] == count(model.pwc)
    assert sum(params["components"].values()) == params["total"]
    meta = PWCNet(**{"pyramid": (16, 32, 64, 96), "estimator": (64, 48, 32, 16), "max_displacement": 3,
                     "dense": False, "context": False}).to("meta")
    x = torch.zeros(1, 3, 64, 64, device="meta")
    feats = meta.features(x)
    pyramid, pair = count_macs(lambda: meta.features(x)), count_macs(lambda: meta.flows(feats, feats))
    assert frame["components"]["flow"] == pytest.approx(3 * pyramid + 2 * pair, rel=1e-3)
    assert stream["components"]["flow"] == pytest.approx(pyramid + pair, rel=1e-3)
    assert frame["total"] - stream["total"] == pytest.approx(2 * pyramid + pair, rel=1e-3)
    assert result["paper_reported"]["pwc_net_params_M"] == 8.75
    assert cli.main(["profile", "--model", "flow-fusion"]) == 0
    text = capsys.readouterr().out
    assert "flow-fusion  vgg16  motion=flow (pwc at 320)" in text and "50.019" in text and "no params or MACs" in text
