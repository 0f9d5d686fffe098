import pytest

torch = pytest.importorskip("torch")

from model_helpers import calibrate_bn  # noqa: E402

from edge_stad.errors import ConfigError  # noqa: E402
from edge_stad.models import available_models, create_model  # noqa: E402

BACKBONES = ("resnet18", "mobilenetv2", "shufflenetv2")


def count(model):
    return sum(p.numel() for p in model.parameters())


# Acceptance: params at 288x288, 21 classes, K=5, dcn decoder (reference build; paper Table 3: 15.8 / 6.8 / 6.0 M).
@pytest.mark.parametrize("backbone,expected", [("resnet18", 15.75e6), ("mobilenetv2", 6.83e6),
                                               ("shufflenetv2", 5.95e6)])
def test_params_match_reference(backbone, expected):
    dcn = create_model("amma", backbone=backbone, K=5, num_classes=21, decoder="dcn")
    conv = create_model("amma", backbone=backbone, K=5, num_classes=21, decoder="conv")
    assert count(dcn) == pytest.approx(expected, rel=0.01)
    # the conv decoder lacks only the deformable offset/mask conv (512*27*9 + 27)
    assert count(dcn) - count(conv) == 512 * 27 * 9 + 27


# Acceptance: paper Table 2 (ResNet-18, K=5): RGB only, then fusion after stages 1, 1-2, ..., 1-5.
def test_params_table2():
    expected = [15.07e6, 15.08e6, 15.23e6, 15.75e6, 17.85e6, 26.24e6]
    got = [count(create_model("amma", backbone="resnet18", K=5, num_classes=21, decoder="dcn", fusion_stages=f))
           for f in range(6)]
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, rel=0.01)


def test_rgb_only_has_no_micro_motion():
    model = create_model("amma", backbone="shufflenetv2", K=1, fusion_stages=0, clip_len=1, input_size=64)
    assert model.mm is None and not any("rgb_weight" in k for k in model.state_dict())
    out = model.eval()(torch.randn(2, 1, 3, 64, 64))
    assert out["hm"].shape == (2, 21, 8, 8) and out["mov"].shape == (2, 2, 8, 8)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shapes_and_ranges(backbone):
    model = create_model("amma", backbone=backbone, K=3, num_classes=24, input_size=(96, 128)).eval()
    with torch.no_grad():
        out = model([torch.randn(2, 15, 96, 128) for _ in range(3)])  # the reference's list input
    assert out["hm"].shape == (2, 24, 12, 16)
    assert out["mov"].shape == out["wh"].shape == (2, 6, 12, 16)
    assert 0 < out["hm"].min() and out["hm"].max() < 1
    assert model.grid_size == (12, 16)


@pytest.mark.parametrize("decoder", ["dcn", "conv"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_stream_mode_equals_normal_mode(backbone, decoder):
    """Encode clips one at a time into a K-deep FIFO, run the head: same as all K clips at once."""
    torch.manual_seed(0)
    k = 3
    model = create_model("amma", backbone=backbone, K=k, num_classes=5, decoder=decoder, input_size=128)
    calibrate_bn(model, torch.randn(2, k, 15, 128, 128))
    video = torch.randn(1, 7, 15, 128, 128)  # 7 consecutive clips
    with torch.no_grad():
        fifo = []
        for t in range(video.shape[1]):
            fifo = (fifo + [model.encode(video[:, t])])[-k:]
            if len(fifo) < k:
                continue
            feats = torch.stack([f for f, _ in fifo], 1)
            whs = torch.stack([w for _, w in fifo], 1)
            stream = model.head(feats, whs)
            normal = model(video[:, t - k + 1:t + 1])
            for key in ("hm", "mov", "wh"):
                assert normal[key].abs().max() > 0.05  # realistic magnitudes, so the tolerance means something
                torch.testing.assert_close(stream[key], normal[key], rtol=0, atol=1e-5)


@pytest.mark.parametrize("decoder", ["dcn", "conv"])
def test_both_decoders_train(decoder):
    torch.manual_seed(0)
    model = create_model("amma", backbone="shufflenetv2", K=2, num_classes=3, decoder=decoder, input_size=64).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    clips = torch.randn(2, 2, 15, 64, 64)
    target = torch.rand(2, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(clips)
    loss = torch.nn.functional.binary_cross_entropy(out["hm"], target) + out["mov"].abs().mean()
    loss = loss + out["wh"].abs().mean()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["backbone.rgb_weight1"].abs() > 0 and grads["mm.shallow_conv.weight"].abs().sum() > 0
    if decoder == "dcn":
        assert grads["deconv_layer.deconv_layers.0.conv_offset_mask.weight"].abs().sum() > 0
    opt.step()
    after = model.state_dict()
    assert not torch.equal(before["deconv_layer.deconv_layers.0.weight"], after["deconv_layer.deconv_layers.0.weight"])
    assert not torch.equal(before["branch.hm_cls.0.bias"], after["branch.hm_cls.0.bias"])


def test_reference_initialisation():
    model = create_model("amma", backbone="resnet18", K=5, num_classes=21)
    sd = model.state_dict()
    assert torch.all(sd["branch.hm_cls.0.bias"] == -2.19)
    assert torch.all(sd["backbone.rgb_weight3"] == 0.6)
    assert torch.all(sd["branch.mov_cls.0.bias"] == 0) and torch.all(sd["branch.wh.2.bias"] == 0)
    # CenterNet's bilinear init writes the separable [0.25, 0.75, 0.75, 0.25] kernel into weight[:, 0] only
    up = sd["deconv_layer.deconv_layers.3.weight"]
    k = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(up[:, 0], torch.outer(k, k).expand(256, 4, 4))


def test_registry_and_config_round_trip():
    assert "amma" in available_models()
    model = create_model("amma", backbone="mobile_v2", K=4, num_classes=7, clip_len=6, decoder="dcn")
    clone = create_model(**model.config)
    assert clone.config == model.config and model.config["backbone"] == "mobilenetv2"
    assert model.config["pairs"] == [[1, 5], [2, 5], [3, 5]]
    assert list(clone.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("kwargs,match", [
    ({"backbone": "vgg16"}, "unknown backbone"),
    ({"K": 0}, "must be >= 1"),
    ({"input_size": 300}, "multiples of 32"),
    ({"decoder": "dcnv3"}, "decoder must be"),
    ({"backbone": "shufflenetv2", "fusion_stages": 5}, "fusion_stages must be in 0..4"),
    ({"clip_len": 1}, "clip_len >= 2"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model("amma", **kwargs)
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("yowo")


def test_bad_inputs():
    model = create_model("amma", backbone="shufflenetv2", K=2, input_size=64).eval()
    with pytest.raises(ValueError, match="K=2"):
        model(torch.randn(1, 3, 15, 64, 64))
    with pytest.raises(ValueError, match=r"\(N, 15, H, W\)"):
        model(torch.randn(1, 2, 12, 64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 2, 15, 48, 64))
    feats, whs = torch.randn(1, 3, 64, 8, 8), torch.randn(1, 3, 2, 8, 8)
    with pytest.raises(ValueError, match="K=2"):
        model.head(feats, whs)
