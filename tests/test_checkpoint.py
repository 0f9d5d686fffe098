import logging
import os
import pickle

import pytest

torch = pytest.importorskip("torch")

from model_helpers import calibrate_bn  # noqa: E402

from edge_stad.errors import CheckpointError  # noqa: E402
from edge_stad.models import create_model, load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from edge_stad.models.backbones.mobilenetv2 import mobilenetv2_features  # noqa: E402

# Key counts of the authors' AMMA_Net state dicts (reference doc section 2).
REFERENCE_KEYS = {"resnet18": 218, "mobilenetv2": 536, "shufflenetv2": 626}


def reference_layout(model, seed=0):
    """An authors'-release-like checkpoint: random weights, their names, DataParallel prefix, dead blocks."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            sd[key] = value.clone()
        elif "running_var" in key:
            sd[key] = torch.rand(value.shape, generator=g) * 0.2 + 0.9
        else:
            sd[key] = torch.randn(value.shape, generator=g) * 0.05
    if model.config["backbone"] == "mobilenetv2":  # features_pa[7:11]: built by the reference, never run
        full = torch.nn.Sequential(*mobilenetv2_features(3)[:11]).state_dict()
        for key, value in full.items():
            if int(key.split(".")[0]) >= 7:
                sd["backbone.features_pa." + key] = torch.randn(value.shape, generator=g)
    return sd


def to_reference_names(sd, legacy=False):
    out = {}
    for key, value in sd.items():
        if legacy and key.startswith("mm."):
            key = "pa." + key[3:]
        if legacy and key.startswith("branch.mov_cls.0."):
            key = "branch.mov.2." + key[len("branch.mov_cls.0."):]
        out["module." + key] = value
    return out


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("backbone", sorted(REFERENCE_KEYS))
def test_authors_checkpoint_loads_exactly(tmp_path, backbone, legacy):
    native = create_model("amma", backbone=backbone, K=5, num_classes=21, decoder="dcn", input_size=64)
    sd = reference_layout(native)
    assert len(sd) == REFERENCE_KEYS[backbone]
    path = tmp_path / "amma_ref.pth"
    torch.save({"epoch": 12, "best": 0.71, "state_dict": to_reference_names(sd, legacy),
                "optimizer": {"state": {}, "param_groups": [{"lr": 2.5e-4, "params": [0, 1]}]}}, path)

    loaded = load_checkpoint(path, input_size=64)
    assert loaded.config["backbone"] == backbone and loaded.config["K"] == 5
    assert loaded.config["decoder"] == "dcn" and loaded.config["num_classes"] == 21 and not loaded.training
    native.load_state_dict({k: v for k, v in sd.items() if k in native.state_dict()}, strict=True)
    native.eval()
    clips = torch.randn(1, 5, 15, 64, 64)
    with torch.no_grad():
        a, b = loaded(clips), native(clips)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    meta = read_checkpoint(path)
    assert meta["layout"] == "reference" and meta["meta"]["epoch"] == 12


def test_dead_mobilenet_blocks_are_reported(tmp_path, caplog):
    model = create_model("amma", backbone="mobilenetv2", K=5, decoder="dcn", input_size=64)
    torch.save({"state_dict": reference_layout(model)}, tmp_path / "m.pth")
    with caplog.at_level(logging.INFO, logger="edge_stad.models.checkpoint"):
        load_checkpoint(tmp_path / "m.pth")
    assert "ignoring 72 reference parameters that never run" in caplog.text


def test_own_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("amma", backbone="shufflenetv2", K=3, num_classes=4, clip_len=6, input_size=96)
    calibrate_bn(model, torch.randn(2, 3, 18, 96, 96))
    path = tmp_path / "ckpt" / "best.pt"
    save_checkpoint(path, model, epoch=7, optimizer={"lr": 0.1})
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    clips = torch.randn(1, 3, 18, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips)["hm"], model(clips)["hm"], rtol=0, atol=0)
    info = read_checkpoint(path)
    assert info["layout"] == "edge_stad" and info["meta"]["epoch"] == 7 and info["meta"]["optimizer"] == {"lr": 0.1}
    assert os.listdir(path.parent) == ["best.pt"]  # no temporary left behind


def test_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model = create_model("amma", backbone="shufflenetv2", K=2, input_size=64)
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, epoch=1)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, epoch=2)
    monkeypatch.undo()
    assert read_checkpoint(path)["meta"]["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pth", "wb") as f:
        pickle.dump({"state_dict": {"w": Exploit()}}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint("evil.pth")
    assert not os.path.exists("pwned")


def test_truncated_and_missing_checkpoints(tmp_path):
    model = create_model("amma", backbone="shufflenetv2", K=2, input_size=64)
    path = tmp_path / "a.pt"
    save_checkpoint(path, model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)


def test_mismatches_are_refused_with_details(tmp_path):
    model = create_model("amma", backbone="shufflenetv2", K=3, num_classes=21, decoder="dcn", input_size=64)
    path = tmp_path / "ref.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="backbone='shufflenetv2', not 'resnet18'"):
        load_checkpoint(path, backbone="resnet18")
    with pytest.raises(CheckpointError, match="K=3, not 5"):
        load_checkpoint(path, K=5)
    assert load_checkpoint(path, backbone="shuffle_v2").config["K"] == 3  # aliases agree

    from edge_stad.models.checkpoint import load_state_dict_checked

    conv = create_model("amma", backbone="shufflenetv2", K=3, decoder="conv", input_size=64)
    with pytest.raises(CheckpointError, match=r"(?s)unexpected \(2\).*decoder='dcn'"):
        load_state_dict_checked(conv, model.state_dict())
    sd = model.state_dict()
    sd["branch.hm.0.weight"] = sd["branch.hm.0.weight"][:, :128]
    sd["branch.wh.0.bias"] = sd["branch.wh.0.bias"] * float("nan")
    del sd["backbone.rgb_weight2"]
    with pytest.raises(CheckpointError) as err:
        load_state_dict_checked(model, sd)
    text = str(err.value)
    assert "missing (1): backbone.rgb_weight2" in text
    assert "shape mismatch (1): branch.hm.0.weight (256, 128, 3, 3) (model (256, 192, 3, 3))" in text
    assert "non-finite values (1): branch.wh.0.bias" in text


def _edited(model, change):
    payload = {"format": "edge_stad.checkpoint", "version": 1, "edge_stad_version": "0", "labels": ["a", "b"],
               "model_config": dict(model.config), "state_dict": model.state_dict()}
    change(payload)
    return payload


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(version="2"), r"field 'version' is '2'; expected an int in \[1, 1\]"),
    (lambda p: p.update(version=True), "field 'version' is True"),
    (lambda p: p.update(model_config=["amma"]), "'model_config' is a list"),
    (lambda p: p["model_config"].update(input_size=[100000, 100000]),
     r"'model_config.input_size' is \[100000, 100000\]"),
    (lambda p: p["model_config"].update(K="2"), "'model_config.K' is '2'"),
    (lambda p: p["model_config"].update(head_conv=10 ** 9), "'model_config.head_conv'"),
    (lambda p: p["model_config"].pop("num_classes"), "'model_config.num_classes' is missing"),
    (lambda p: p.update(labels=["a", "b", "c"]), "field 'labels' names 3 classes; expected 2"),
    (lambda p: p.update(labels="ab"), "field 'labels' is 'ab'"),
    (lambda p: p.update(state_dict={1: torch.zeros(1)}), "not a mapping of names to tensors"),
])
def test_checkpoint_fields_are_checked_against_the_schema(tmp_path, change, message):
    model = create_model("amma", backbone="shufflenetv2", K=2, num_classes=2, input_size=64)
    torch.save(_edited(model, change), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "m.pt")


@pytest.mark.parametrize("content", [b"hello world\n", b"\x80\x02}q\x00.", b"PK\x03\x04garbage", b""])
def test_files_that_are_not_checkpoints_are_checkpoint_errors(tmp_path, content):
    (tmp_path / "notes.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="notes.pt"):
        read_checkpoint(tmp_path / "notes.pt")
