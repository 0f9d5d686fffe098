"""STMA and STMA-Lite models: shapes, the streaming split, parameters and MACs, DLA-34, configs."""
import json

import pytest

torch = pytest.importorskip("torch")

from edge_stad import cli  # noqa: E402
from edge_stad.bench.complexity import count_macs  # noqa: E402
from edge_stad.bench.stma_complexity import COMPONENTS, component_params, profile_stma  # noqa: E402
from edge_stad.errors import ConfigError  # noqa: E402
from edge_stad.models import create_model  # noqa: E402
from edge_stad.models.dla import DLASeg  # noqa: E402
from edge_stad.models.stma_branches import MotionExcitation  # noqa: E402

M, G = 1e6, 1e9
# Small enough for real forward passes on a CPU: 64x64 input, K=3, a 6-frame 3D ShuffleNetV2 0.25x.
TINY = dict(num_classes=3, input_size=64, K=3, clip_len=6, backbone_3d="shufflenetv2", width_3d=0.25, head_conv=16,
            wh_head_conv=16, action_channels=16, fused_channels=32)


def meta_model(name, **config):
    """Built on the meta device: shapes only, instant even for the 76M-parameter paper model."""
    with torch.device("meta"):
        return create_model(name, **config).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def paper_model():
    return meta_model("stma", num_classes=24)


@pytest.fixture(scope="module")
def paper_profile(paper_model):
    return profile_stma(paper_model, refresh_every=(1, 4))


def tiny(name="stma-lite", **config):
    torch.manual_seed(0)
    return create_model(name, **dict(TINY, **config)).eval()


def test_full_model_parameters_at_24_classes(paper_model):
    model = paper_model
    cfg = model.config
    assert (cfg["backbone"], cfg["decoder"], cfg["backbone_3d"], cfg["K"], cfg["clip_len"], cfg["key_frame"],
            cfg["input_size"]) == ("dla34", "dcn", "resnext101", 5, 16, "center", [288, 288])
    parts = component_params(model)
    assert sum(p.numel() for p in model.parameters()) == 76_414_600 == sum(parts.values())
    assert parts["backbone_2d"] == 19_169_440          # DLA-34 + deformable up path (MOC's layout)
    assert parts["backbone_3d"] == 47_521_216          # 3D-ResNeXt-101
    assert parts["centre_movement"] + parts["size_head"] == 1_626_639   # MOC heads, head_conv 256, 1 + 10 + 4 outputs
    assert sum(p.numel() for p in model.detection.hm.parameters()) == (320 * 9 + 1) * 256 + 256 + 1


def test_full_model_cost_compares_with_the_component_estimate(paper_profile):
    """The estimate: 3D 62.9, DLA-34 40.4 (5 frames), heads 11.5, the STMA block left out: about 115 GMACs."""
    r = paper_profile
    clip = r["macs"]["clip"]["components"]
    assert clip["backbone_3d"] / G == pytest.approx(62.9, rel=0.01)
    assert clip["backbone_2d"] / G == pytest.approx(40.4, rel=0.01)
    assert (clip["centre_movement"] + clip["size_head"]) / G == pytest.approx(11.5, rel=0.01)
    assert r["macs"]["clip"]["total"] / G == pytest.approx(117.4, abs=0.1)   # + 2.7 for down-sampling and STA
    stream = r["macs"]["stream"]
    assert stream["1"]["total"] / G == pytest.approx(80.4, abs=0.1)          # one new frame, 3D every window
    assert stream["4"]["components"]["backbone_3d"] == pytest.approx(clip["backbone_3d"] / 4, rel=1e-12)
    assert r["encoded_frames"] == 5


def test_profile_equals_direct_counts_of_the_real_calls():
    model = tiny().requires_grad_(False)
    r = profile_stma(model, refresh_every=(1, 3))
    clips = torch.zeros(1, 18, 64, 64)
    frame = clips[:, :3]
    feat, wh, act = model.encode(frame)
    feat3d = model.encode_3d(clips)
    window = count_macs(lambda: model.head(feat.unsqueeze(1).expand(-1, 3, -1, -1, -1),
                                           wh.unsqueeze(1).expand(-1, 3, -1, -1, -1),
                                           act.unsqueeze(1).expand(-1, 3, -1, -1, -1), feat3d))
    assert r["macs"]["clip"]["total"] == pytest.approx(count_macs(lambda: model(clips)), rel=1e-9)
    stream = count_macs(lambda: model.encode(frame)) + count_macs(lambda: model.encode_3d(clips)) / 3 + window
    assert r["macs"]["stream"]["3"]["total"] == pytest.approx(stream, rel=1e-9)
    assert set(r["macs"]["clip"]["components"]) == set(COMPONENTS)
    assert sum(r["params"]["components"].values()) == r["params"]["total"]


def test_lite_is_an_edge_model():
    r = profile_stma(meta_model("stma-lite"), refresh_every=(1, 4))
    cfg = r["config"]
    assert (cfg["backbone"], cfg["decoder"], cfg["backbone_3d"], cfg["width_3d"], cfg["clip_len"],
            cfg["key_frame"]) == ("shufflenetv2", "conv", "shufflenetv2", 2.0, 8, "last")
    assert r["macs"]["clip"]["total"] < 6 * G and r["macs"]["stream"]["4"]["total"] < 2.1 * G
    assert r["params"]["total"] < 13 * M


@pytest.mark.parametrize("config", [
    dict(),                                                            # 3D branch, key frame last
    dict(backbone_3d=None, width_3d=None, clip_len=5),                 # ME over the 5 cached frames
    dict(backbone="resnet18", decoder="dcn", motion_excitation=False, attention=False),
])
def test_forward_is_the_streaming_calls(config):
    model = tiny(**config)
    layout = model.layout
    clips = torch.randn(2, 3 * layout.clip_len, 64, 64)
    with torch.no_grad():
        out = model(clips)
        frames = clips.reshape(2, layout.clip_len, 3, 64, 64)
        per_frame = [model.encode(frames[:, i]) for i in range(layout.clip_len)]
        s0, s1 = layout.snippet
        m0, m1 = layout.motion

        def stacked(part, lo, hi):
            return torch.stack([per_frame[i][part] for i in range(lo, hi + 1)], 1)

        feat3d = model.encode_3d(clips) if model.backbone_3d is not None else None
        again = model.head(stacked(0, s0, s1), stacked(1, s0, s1), stacked(2, m0, m1), feat3d)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "hm": (2, 1, 8, 8), "mov": (2, 6, 8, 8), "wh": (2, 12, 8, 8), "cls": (2, 3)}
    for key in out:
        torch.testing.assert_close(out[key], again[key], rtol=1e-5, atol=1e-5)
    assert (out["hm"] > 0).all() and (out["hm"] < 1).all() and (out["wh"] >= 0).all() and out["cls"].std() > 0


def test_full_model_layout_and_class_heatmap_baseline():
    model = tiny("stma", backbone="dla34", decoder="conv")
    assert model.layout.snippet == (2, 4) and model.layout.key == 1    # key frame = clip index 3 = 6 // 2
    with torch.no_grad():
        out = model(torch.randn(1, 18, 64, 64))
    assert out["hm"].shape == (1, 1, 16, 16) and out["wh"].shape == (1, 12, 16, 16)   # DLA-34: stride 4
    base = tiny("stma", backbone="dla34", decoder="conv", class_agnostic=False, backbone_3d=None, width_3d=None)
    assert base.action is None
    with torch.no_grad():
        out = base(torch.randn(1, 18, 64, 64))
    assert out["hm"].shape == (1, 3, 16, 16) and "cls" not in out


def test_dla_up_path_is_deformable_or_plain():
    dcn, plain = DLASeg(deformable=True), DLASeg(deformable=False)
    assert any("conv_offset_mask" in k for k in dcn.state_dict())
    assert not any("conv_offset_mask" in k for k in plain.state_dict())
    assert {k for k in dcn.state_dict() if "conv_offset_mask" not in k} == set(plain.state_dict())
    keys = set(plain.state_dict())   # CenterNet's pose_dla_dcn names
    assert {"base.level5.root.conv.weight", "dla_up.ida_2.node_3.actf.0.weight", "ida_up.up_2.weight",
            "base.level3.tree2.root.conv.weight"} <= keys
    assert not any(k.startswith(("base.level3.project", "base.level4.project")) for k in keys)
    with torch.no_grad():
        assert plain.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 64, 16, 24)
    up = dict(plain.named_modules())["ida_up.up_2"]
    assert (up.stride, up.kernel_size, up.groups) == ((4, 4), (8, 8), 64)


def test_motion_excitation_is_the_papers_equation():
    torch.manual_seed(0)
    me = MotionExcitation(4).eval()
    x = torch.randn(2, 3, 4, 5, 5)
    with torch.no_grad():
        out = me(x)
        diff1 = me.conv(x[:, 1]) - x[:, 0]
        mask0 = torch.sigmoid(me.excite(diff1.mean((2, 3), keepdim=True)))
        mask_last = torch.sigmoid(me.excite.bias).view(1, 4, 1, 1)       # zero difference for the last frame
    torch.testing.assert_close(out[:, 0], x[:, 0] * (1 + mask0))
    torch.testing.assert_close(out[:, 2], x[:, 2] * (1 + mask_last))


def test_config_round_trip_rebuilds_the_same_architecture():
    for model in (tiny(), tiny("stma", backbone="dla34", decoder="dcn"), tiny(backbone_3d=None, width_3d=None)):
        again = create_model(**model.config)
        assert again.config == model.config
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in again.state_dict().items()} == shapes
    assert meta_model("stma-lite", backbone_3d=None).config["width_3d"] is None


@pytest.mark.parametrize("config,match", [
    (dict(clip_len=2), "K <= clip_len"),
    (dict(key_frame="first"), "key_frame must be one of"),
    (dict(K=4, clip_len=4, key_frame="center"), "use clip_len >= 5"),
    (dict(backbone_3d=None), "needs a 3D branch"),
    (dict(class_agnostic=False), "builds no recognition branch"),
    (dict(backbone="vgg"), "unknown backbone"),
    (dict(decoder="deform"), "decoder must be one of"),
    (dict(input_size=48), "multiples of 32"),
    (dict(head_conv=0), "head_conv must be >= 1"),
])
def test_bad_config(config, match):
    with pytest.raises(ConfigError, match=match):
        meta_model("stma-lite", **dict(TINY, **config))
    with pytest.raises(ConfigError, match="variant must be one of"):
        from edge_stad.models.stma import STMA

        STMA(name="stma-xl")


def test_bad_inputs_name_what_was_expected():
    model = tiny()
    with pytest.raises(ValueError, match=r"clips must be \(N, 18, H, W\).*got \(1, 15, 64, 64\)"):
        model(torch.zeros(1, 15, 64, 64))
    with pytest.raises(ValueError, match=r"frames must be \(N, 3, H, W\) with H and W multiples of 32"):
        model.encode(torch.zeros(1, 3, 64, 40))
    feats, whs = torch.zeros(1, 3, 64, 8, 8), torch.zeros(1, 3, 4, 8, 8)
    with pytest.raises(ValueError, match="cached features of 3 frames, got None"):
        model.head(feats, whs)
    with pytest.raises(ValueError, match="pass feat3d"):
        model.head(feats, whs, torch.zeros(1, 3, 16, 2, 2))
    with pytest.raises(ValueError, match="built for K=3 frames, got 2"):
        model.head(feats[:, :2], whs[:, :2], torch.zeros(1, 3, 16, 2, 2))


def test_profile_cli_stma_json(capsys):
    assert cli.main(["profile", "--model", "stma-lite", "--input-size", "128", "--num-classes", "8", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["config"]["name"] == "stma-lite" and set(result["macs"]["stream"]) == {"1", "2", "3", "4"}
    assert sum(result["params"]["components"].values()) == result["params"]["total"]
    assert cli.main(["profile", "--model", "stma-lite", "--backbone", "resnet18", "--backbone-3d", "none",
                     "--input-size", "128"]) == 0
    text = capsys.readouterr().out
    assert "2D resnet18 (conv)  no 3D branch" in text and "s=1 GMAC" in text and "s=2 GMAC" not in text
