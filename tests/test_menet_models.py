import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_stad import cli  # noqa: E402
from edge_stad.bench.complexity import count_macs, profile_menet  # noqa: E402
from edge_stad.errors import ConfigError  # noqa: E402
from edge_stad.models import create_model  # noqa: E402
from edge_stad.models.backbones3d import NonLocalBlock3D, create_backbone_3d  # noqa: E402
from edge_stad.models.darknet import YOLOv2Tiny, darknet_reorg  # noqa: E402
from edge_stad.models.menet import YOWO_UCF24_ANCHORS, ChannelAttention  # noqa: E402
from edge_stad.models.registry import available  # noqa: E402

M, G = 1e6, 1e9
# 3D depthwise convolutions are slow on CPU: real forward passes use 6 frames at 32x64 (a 1x2 grid).
SMALL = dict(num_classes=8, input_size=(32, 64), clip_len=6)


def meta_model(name, **config):
    """Built on the meta device: shapes only, instant even for the 130M-parameter paper model."""
    with torch.device("meta"):
        return create_model(name, **config).eval()


def small_lite(**config):
    torch.manual_seed(0)
    return create_model("menet-lite", **dict(SMALL, **config)).eval()


@pytest.fixture(scope="module")
def paper_profile():
    return profile_menet(meta_model("menet"))


# The MENet paper's cost table (224x224, 16 frames, per output frame): params (M), GMACs, relative tolerance.
COST_TABLE = {
    "backbone_3d": (47.5, 38.0, 0.01),
    "backbone_2d": (51.0, 4.3, 0.01),
    "non_local": (8.4, 0.42, 0.02),
    "cfam+head": (22.6, 1.2, 0.02),
}


def test_paper_model_cost_matches_the_seed_estimate(paper_profile):
    r = paper_profile
    assert r["config"]["name"] == "menet" and r["config"]["clip_len"] == 16 and r["config"]["num_classes"] == 24
    params, macs = r["params"]["components"], r["macs"]["frame"]["components"]
    params["cfam+head"], macs["cfam+head"] = params["cfam"] + params["head"], macs["cfam"] + macs["head"]
    for comp, (p, g, tol) in COST_TABLE.items():
        assert params[comp] / M == pytest.approx(p, rel=tol), comp
        assert macs[comp] / G == pytest.approx(g, rel=tol), comp
    assert params["srm"] == 8 * 3 * 7 * 7 + 8 and macs["srm"] / G == pytest.approx(0.24, rel=0.02)
    assert r["params"]["total"] / M == pytest.approx(130, rel=0.05)
    assert r["macs"]["frame"]["total"] / G == pytest.approx(44, rel=0.05)
    print("menet params", r["params"], "GMACs", {c: m / G for c, m in r["macs"]["frame"]["components"].items()})


def test_stream_figures_divide_only_the_3d_branch(paper_profile):
    frame = paper_profile["macs"]["frame"]["components"]
    for s in ("2", "3", "4"):
        stream = paper_profile["macs"]["stream"][s]
        for comp, macs in stream["components"].items():
            scale = int(s) if comp in ("backbone_3d", "non_local") else 1
            assert macs == pytest.approx(frame[comp] / scale, rel=1e-12)
        assert stream["total"] == pytest.approx(sum(stream["components"].values()), rel=1e-12)
    assert paper_profile["macs"]["stream"]["4"]["total"] / G == pytest.approx(15.4, abs=0.1)


@pytest.mark.parametrize("config,max_gmacs", [({}, 10.0), (dict(num_classes=8, input_size=128), 1.0)])
def test_lite_is_an_edge_model(config, max_gmacs):
    r = profile_menet(meta_model("menet-lite", **config))
    cfg = r["config"]
    assert (cfg["backbone_3d"], cfg["width_3d"], cfg["clip_len"], cfg["backbone_2d"], cfg["cfam_channels"],
            cfg["srm_frames"], cfg["non_local"]) == ("shufflenetv2", 2.0, 8, "tiny", 256, 4, False)
    assert r["macs"]["frame"]["total"] < max_gmacs * G
    assert r["params"]["total"] < 20 * M and r["params"]["components"]["non_local"] == 0
    assert sum(r["params"]["components"].values()) == r["params"]["total"]
    print("menet-lite", config, r["params"], {c: m / G for c, m in r["macs"]["frame"]["components"].items()})


def test_profile_equals_direct_counts_of_the_real_calls():
    model = meta_model("menet-lite", non_local=True, num_classes=8, input_size=64)
    r = profile_menet(model, refresh_every=(3,))
    clips = torch.zeros(1, 24, 64, 64, device="meta")
    feat = model.encode_3d(clips)
    assert r["macs"]["frame"]["total"] == pytest.approx(count_macs(lambda: model(clips)), rel=1e-12)
    stream = count_macs(lambda: model.encode_3d(clips)) / 3 + count_macs(lambda: model.detect(clips[:, -12:], feat))
    assert r["macs"]["stream"]["3"]["total"] == pytest.approx(stream, rel=1e-12)


def test_forward_shapes_and_stream_api_agree():
    model = small_lite()
    clips = torch.randn(2, 18, 32, 64)
    with torch.no_grad():
        out = model(clips)
        feat = model.encode_3d(clips)
        again = model.detect(clips[:, -12:], feat)
    assert out.shape == (2, 5 * (5 + 8), 1, 2) and feat.shape == (2, 2048, 1, 2)
    assert torch.isfinite(out).all() and out.std() > 0
    assert torch.equal(out, again)
    # the paper model's shapes, on meta (anchors x [tx, ty, tw, th, conf, 24 classes] at 7x7)
    paper = meta_model("menet")
    assert paper(torch.zeros(1, 48, 224, 224, device="meta")).shape == (1, 145, 7, 7)
    assert paper.encode_3d(torch.zeros(1, 48, 224, 224, device="meta")).shape == (1, 2048, 7, 7)


def test_temporal_axis_is_averaged_when_the_backbone_keeps_it():
    model = small_lite(backbone_3d="mobilenetv2", width_3d=0.5, clip_len=17, input_size=32)  # 17 -> 9 -> 5 -> 3 -> 2
    clips = torch.randn(1, 51, 32, 32)
    with torch.no_grad():
        video = model.backbone_3d(model.clip_to_video(clips))
        assert video.shape[2] == 2
        assert torch.allclose(model.encode_3d(clips), video.mean(2))


def test_config_round_trip_rebuilds_the_same_architecture():
    model = small_lite(anchors=[[1, 2]] * 5, srm_frames=2)
    config = json.loads(json.dumps(model.config))
    rebuilt = create_model(**config)
    assert rebuilt.config == model.config and rebuilt.config["name"] == "menet-lite"
    rebuilt.load_state_dict(model.state_dict())  # strict: same keys and shapes
    paper = meta_model("menet")
    assert paper.config["anchors"] == [list(a) for a in YOWO_UCF24_ANCHORS] and paper.config["width_3d"] is None
    assert meta_model(**paper.config).config == paper.config


def test_state_dict_names_follow_yowo_and_the_pretrained_backbones():
    paper = meta_model("menet").state_dict()
    assert {k.split(".")[0] for k in paper} == {"srm", "backbone_2d", "backbone_3d", "non_local", "cfam",
                                                "conv_final"}
    for key in ("backbone_3d.conv1.weight", "backbone_3d.layer1.0.downsample.0.weight",
                "backbone_3d.layer3.22.conv2.weight", "backbone_3d.layer4.2.bn3.running_var", "non_local.W.1.weight",
                "non_local.theta.weight", "cfam.sc.gamma", "cfam.conv_bn_relu1.0.weight", "cfam.conv_out.1.bias"):
        assert key in paper, key
    assert paper["backbone_3d.layer4.0.conv2.weight"].shape == (1024, 32, 3, 3, 3)  # cardinality 32
    assert paper["srm.shallow_conv.weight"].shape == (8, 3, 7, 7)
    assert paper["backbone_2d.stage16.0.0.weight"].shape == (32, 6, 3, 3)  # RGB + 3 SRM maps
    assert paper["backbone_2d.fuse.0.weight"].shape == (1024, 256 + 1024, 3, 3)
    assert paper["conv_final.weight"].shape == (145, 1024, 1, 1) and "conv_final.bias" not in paper
    lite = meta_model("menet-lite").state_dict()
    assert "non_local.g.weight" not in lite
    assert lite["backbone_3d.features.15.banch2.5.weight"].shape == (488, 488, 1, 1, 1)
    assert lite["backbone_3d.conv_last.0.weight"].shape == (2048, 976, 1, 1, 1)
    mobile = meta_model("menet-lite", backbone_3d="mobilenetv2").state_dict()
    assert mobile["backbone_3d.features.18.0.weight"].shape == (1280, 320, 1, 1, 1)


def test_srm_is_the_micro_motion_operator_on_adjacent_pairs():
    model = small_lite()
    assert model.srm.pairs == ((0, 1), (1, 2), (2, 3)) and not model.srm.pool
    frames = torch.randn(1, 12, 32, 64)
    image = model.image_2d(frames)
    assert torch.equal(image[:, :3], frames[:, -3:]) and torch.equal(image[:, 3:], model.srm(frames))


@pytest.mark.parametrize("srm_frames,stem", [(0, 3), (2, 4)])
def test_fewer_srm_frames(srm_frames, stem):
    model = small_lite(srm_frames=srm_frames)
    assert model.backbone_2d.features[0][0].in_channels == stem and model.frames_2d == max(srm_frames, 1)
    assert (model.srm is None) == (srm_frames == 0)
    clips = torch.randn(1, 18, 32, 64)
    with torch.no_grad():
        assert torch.equal(model(clips), model.detect(clips[:, -3 * model.frames_2d:], model.encode_3d(clips)))


def test_attention_blocks_start_as_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 3, 5)
    cam = ChannelAttention()
    assert cam.gamma.item() == 0 and torch.equal(cam(x), x)
    with torch.no_grad():
        cam.gamma.fill_(0.5)
    f = x.double().flatten(2)
    energy = f @ f.transpose(1, 2)
    attention = torch.softmax(energy.max(-1, keepdim=True).values - energy, -1)
    expected = 0.5 * (attention @ f).reshape(x.shape) + x.double()
    assert torch.allclose(cam(x).double(), expected, atol=1e-5)
    assert cam.bfloat16()(x.bfloat16()).dtype == torch.bfloat16  # float32 inside, the model's type outside
    nl = NonLocalBlock3D(16).eval()
    v = torch.randn(1, 16, 2, 3, 3)
    assert nl.theta.out_channels == 8 and torch.equal(nl(v), v)


def test_backbones_3d_levels_line_up():
    video = torch.zeros(1, 3, 16, 224, 224, device="meta")
    for name in available("3d"):
        with torch.device("meta"):
            net = create_backbone_3d(name)
        levels = net.forward_levels(video)
        assert [tuple(v.shape[2:]) for v in levels] == [(8, 56, 56), (4, 28, 28), (2, 14, 14), (1, 7, 7)], name
        assert [v.shape[1] for v in levels] == list(net.stage_channels) and net.out_channels == levels[-1].shape[1]
    with pytest.raises(ValueError, match=r"expects \(B, 3, T, H, W\)"):
        net(torch.zeros(1, 3, 224, 224, device="meta"))
    with torch.device("meta"):
        flow = create_backbone_3d("resnext101", in_channels=2)  # a flow teacher's (x, y) input
    assert flow.conv1.in_channels == 2 and flow(torch.zeros(1, 2, 16, 64, 64, device="meta")).shape[1] == 2048


def reorg_like_darknet(x, s=2):
    """Transcription of Darknet's ``reorg_cpu(x, w, h, c, batch, s, forward=0, out)`` loop."""
    b, c, h, w = x.shape
    src, out = x.reshape(-1).numpy(), np.empty(x.numel(), dtype=np.float32)
    out_c = c // (s * s)
    for n in range(b):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    offset = k // out_c
                    w2, h2 = i * s + offset % s, j * s + offset // s
                    out[i + w * (j + h * (k + c * n))] = src[w2 + w * s * (h2 + h * s * (k % out_c + out_c * n))]
    return torch.from_numpy(out).reshape(b, c * s * s, h // s, w // s)


def test_reorg_matches_darknet_and_detectors_keep_stride_32():
    x = torch.arange(2 * 8 * 4 * 6, dtype=torch.float32).reshape(2, 8, 4, 6)
    assert torch.equal(darknet_reorg(x), reorg_like_darknet(x))
    assert not torch.equal(darknet_reorg(x), torch.nn.functional.pixel_unshuffle(x, 2))
    tiny = YOLOv2Tiny(5, 30).eval()
    assert tiny(torch.randn(1, 5, 64, 96)).shape == (1, 30, 2, 3)


@pytest.mark.parametrize("config,match", [
    (dict(clip_len=3), r"clip_len \(3\) must cover the srm_frames \(4\)"),
    (dict(input_size=100), "multiples of 32"),
    (dict(backbone_3d="c3d"), "unknown 3D backbone 'c3d'"),
    (dict(backbone_2d="yolov8"), "unknown 2D detector 'yolov8'"),
    (dict(srm_frames=1), "srm_frames must be 0"),
    (dict(srm_kernel=6), "srm_kernel must be odd"),
    (dict(width_3d=3.0), "width must be one of"),
    (dict(backbone_3d="resnext101", width_3d=2.0), "has no width multiplier"),
    (dict(num_anchors=3), "give 3 anchors"),
    (dict(anchors=[[1, 1]] * 4), "5 positive"),
    (dict(num_classes=0), "num_classes must be >= 1"),
])
def test_bad_config(config, match):
    with pytest.raises(ConfigError, match=match):
        meta_model("menet-lite", **dict(SMALL, **config))


def test_bad_inputs_name_what_was_expected():
    model = small_lite()
    with pytest.raises(ValueError, match=r"clips must be \(B, 18, H, W\).*got \(1, 21, 32, 64\)"):
        model(torch.zeros(1, 21, 32, 64))
    with pytest.raises(ValueError, match=r"multiples of 32, got \(1, 18, 32, 40\)"):
        model.encode_3d(torch.zeros(1, 18, 32, 40))
    with pytest.raises(ValueError, match=r"frames must be \(B, 12, H, W\)"):
        model.detect(torch.zeros(1, 3, 32, 64), torch.zeros(1, 2048, 1, 2))
    with pytest.raises(ValueError, match=r"feat3d must be \(1, 2048, 1, 2\).*got \(1, 2048, 2, 2\)"):
        model.detect(torch.zeros(1, 12, 32, 64), torch.zeros(1, 2048, 2, 2))


def test_profile_cli_menet_lite_json(capsys):
    assert cli.main(["profile", "--model", "menet-lite", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["config"]["name"] == "menet-lite" and set(result["macs"]["stream"]) == {"2", "3", "4"}
    assert result["macs"]["frame"]["total"] < 10 * G
    assert sum(result["params"]["components"].values()) == result["params"]["total"]
    assert cli.main(["profile", "--model", "menet-lite", "--input-size", "128", "--refresh-every", "4"]) == 0
    text = capsys.readouterr().out
    assert "backbone_3d" in text and "s=4 GMAC" in text and "input=128x128" in text and "per output frame" in text
    assert cli.main(["profile", "--model", "menet-lite", "--refresh-every", "0"]) == 1
