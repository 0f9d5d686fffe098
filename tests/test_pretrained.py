"""Pretrained-weight import from the layouts users have on disk (built here from our own modules)."""
import re

import pytest

torch = pytest.importorskip("torch")

from edge_stad.errors import CheckpointError  # noqa: E402
from edge_stad.models import create_model  # noqa: E402
from edge_stad.models.backbones import ResNet18, ShuffleNetV2  # noqa: E402
from edge_stad.train.pretrained import load_pretrained  # noqa: E402


def randomized(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in
            module.state_dict().items()}


def test_torchvision_resnet18_fills_backbone_and_motion_stream(tmp_path):
    source = randomized(ResNet18())
    source.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)})
    torch.save(source, tmp_path / "resnet18.pth")
    model = create_model("amma", backbone="resnet18", K=2, input_size=64)
    report = load_pretrained(model, tmp_path / "resnet18.pth")
    sd = model.state_dict()
    assert torch.equal(sd["backbone.layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])
    assert torch.equal(sd["backbone.resnext_layer2.0.downsample.0.weight"], source["layer2.0.downsample.0.weight"])
    assert torch.equal(sd["backbone.conv1_5.weight"], source["conv1.weight"])
    assert torch.equal(sd["backbone.bn1_5.running_var"], source["bn1.running_var"])
    assert report["shape_mismatch"] == [] and "branch.hm.0.weight" in report["not_in_file"]


def test_torchvision_shufflenet_names_are_mapped(tmp_path):
    ours = randomized(ShuffleNetV2(), seed=1)
    stages = {range(0, 4): "stage2", range(4, 12): "stage3", range(12, 16): "stage4"}
    source = {}
    for key, value in ours.items():
        m = re.match(r"features\.(\d+)\.banch([12])\.(.*)", key)
        if m:
            i = int(m.group(1))
            stage, first = next((s, r.start) for r, s in stages.items() if i in r)
            key = f"{stage}.{i - first}.branch{m.group(2)}.{m.group(3)}"
        key = key.replace("conv_last.", "conv5.")
        source[key] = value
    torch.save({"state_dict": {"module." + k: v for k, v in source.items()}}, tmp_path / "shufflenet.pth")
    model = create_model("amma", backbone="shufflenetv2", K=2, input_size=64)
    load_pretrained(model, tmp_path / "shufflenet.pth")
    sd = model.state_dict()
    assert torch.equal(sd["backbone.features.13.banch2.3.weight"], ours["features.13.banch2.3.weight"])
    assert torch.equal(sd["backbone.features_mm.5.banch2.0.weight"], ours["features.5.banch2.0.weight"])
    assert torch.equal(sd["backbone.conv_last.1.bias"], ours["conv_last.1.bias"])
    assert torch.equal(sd["backbone.conv1_mm.0.weight"], ours["conv1.0.weight"])


def test_centernet_resdcn18_brings_the_first_deconv_stage_and_wh_head(tmp_path):
    amma = create_model("amma", backbone="resnet18", K=2, decoder="dcn", input_size=64)
    source = {"module." + k: v for k, v in randomized(amma.backbone).items()
              if not re.search(r"conv1_5|bn1_5|resnext|rgb_weight", k)}
    for k, v in randomized(amma.deconv_layer, seed=2).items():
        source["module." + k] = v  # deconv_layers.<i>.*, as CenterNet names them
    source["module.deconv_layers.9.weight"] = torch.randn(128, 256, 4, 4)  # its later stages: not used
    source.update({"module.wh.0.weight": torch.randn(64, 64, 3, 3), "module.wh.2.weight": torch.randn(2, 64, 1, 1),
                   "module.hm.2.weight": torch.randn(80, 64, 1, 1), "module.reg.2.bias": torch.randn(2)})
    torch.save({"epoch": 140, "state_dict": source}, tmp_path / "ctdet_coco_resdcn18.pth")
    load_pretrained(amma, tmp_path / "ctdet_coco_resdcn18.pth")
    sd = amma.state_dict()
    assert torch.equal(sd["deconv_layer.deconv_layers.0.conv_offset_mask.weight"],
                       source["module.deconv_layers.0.conv_offset_mask.weight"])
    assert torch.equal(sd["branch.wh.0.weight"], source["module.wh.0.weight"])
    assert torch.equal(sd["backbone.resnext_layer1.0.conv1.weight"], source["module.layer1.0.conv1.weight"])


def test_wrong_backbone_is_refused(tmp_path):
    torch.save(randomized(ShuffleNetV2()), tmp_path / "shufflenet.pth")
    with pytest.raises(CheckpointError, match="no weight of .* fits this resnet18 model"):
        load_pretrained(create_model("amma", backbone="resnet18", K=2, input_size=64), tmp_path / "shufflenet.pth")


def test_amma_checkpoint_with_other_classes_keeps_what_fits(tmp_path):
    donor = create_model("amma", backbone="shufflenetv2", K=3, num_classes=24, input_size=64)
    torch.save({"state_dict": donor.state_dict()}, tmp_path / "ucf.pth")
    model = create_model("amma", backbone="shufflenetv2", K=3, num_classes=21, input_size=64)
    report = load_pretrained(model, tmp_path / "ucf.pth")
    assert [s.split()[0] for s in report["shape_mismatch"]] == ["branch.hm_cls.0.weight", "branch.hm_cls.0.bias"]
    assert torch.equal(model.state_dict()["branch.mov.0.weight"], donor.state_dict()["branch.mov.0.weight"])
