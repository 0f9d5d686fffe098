import pytest

torch = pytest.importorskip("torch")

from edge_stad.models.backbones import MobileNetV2, ResNet18, ShuffleNetV2  # noqa: E402
from edge_stad.models.backbones.shufflenetv2 import channel_shuffle  # noqa: E402
from edge_stad.models.registry import available, create_backbone  # noqa: E402

# (channels, stride) of every stage at input 288, from the reference's shape table.
STAGES = {
    "resnet18": [(64, 4), (64, 4), (128, 8), (256, 16), (512, 32)],
    "mobilenetv2": [(16, 2), (24, 4), (32, 8), (96, 16), (320, 32)],
    "shufflenetv2": [(24, 4), (116, 8), (232, 16), (464, 32)],
}
TAIL = {"resnet18": 512, "mobilenetv2": 1280, "shufflenetv2": 1024}
# ImageNet backbones without classifier: torchvision's counts minus the fc layer.
PARAMS = {"resnet18": 11_689_512 - 513_000, "mobilenetv2": 3_504_872 - 1_281_000, "shufflenetv2": 2_278_604 - 1_025_000}


@pytest.mark.parametrize("name", available("2d"))
def test_stage_outputs_and_params(name):
    net = create_backbone("2d", name).eval()
    x = torch.randn(1, 3, 288, 288)
    with torch.no_grad():
        outs = net.forward_stages(x)
        final = net(x)
    assert [(o.shape[1], 288 // o.shape[2]) for o in outs] == STAGES[name]
    assert all(o.shape[2] == o.shape[3] for o in outs)
    assert final.shape == (1, TAIL[name], 9, 9)
    assert sum(p.numel() for p in net.parameters()) == PARAMS[name]


def test_torchvision_key_layout():
    # Names must match torchvision / the reference so that pretrained weights load by name.
    assert "layer4.1.bn2.running_var" in ResNet18().state_dict()
    assert "layer2.0.downsample.0.weight" in ResNet18().state_dict()
    mb = MobileNetV2().state_dict()
    assert "features.18.0.weight" in mb and "features.17.conv.3.running_mean" in mb and "features.1.conv.2.weight" in mb
    sh = ShuffleNetV2().state_dict()
    assert "features.0.banch1.2.weight" in sh and "features.15.banch2.6.num_batches_tracked" in sh
    assert "conv_last.0.weight" in sh


def test_channel_shuffle_interleaves_halves():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    # batch stays free (the reference baked the batch size into the reshape)
    assert channel_shuffle(torch.randn(3, 4, 2, 2)).shape == (3, 4, 2, 2)
