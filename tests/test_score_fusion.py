"""Lu et al.'s attention score fusion: the module, its training on frozen scores, ``edge-stad distill fuse``."""
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from edge_stad import cli  # noqa: E402
from edge_stad.errors import ConfigError  # noqa: E402
from edge_stad.models import create_model, load_checkpoint  # noqa: E402
from edge_stad.models.score_fusion import AttentionScoreFusion  # noqa: E402
from edge_stad.train import distill  # noqa: E402
from edge_stad.train.score_fusion import accuracies, fit_fusion  # noqa: E402


def test_fused_scores_are_a_per_sample_convex_combination():
    torch.manual_seed(0)
    fusion = AttentionScoreFusion(4)
    rgb, motion = torch.softmax(torch.randn(5, 4), 1), torch.softmax(torch.randn(5, 4), 1)
    fused, weights = fusion(rgb, motion)
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    torch.testing.assert_close(fused, weights[:, :1] * rgb + weights[:, 1:] * motion)
    torch.testing.assert_close(fused.sum(1), torch.ones(5))
    with torch.no_grad():                       # a last layer that always says "RGB"
        fusion.attention[2].weight.zero_()
        fusion.attention[2].bias.copy_(torch.tensor([50.0, -50.0]))
    torch.testing.assert_close(fusion(rgb, motion)[0], rgb)
    with torch.no_grad():                       # equal logits: the plain average
        fusion.attention[2].bias.zero_()
    torch.testing.assert_close(fusion(rgb, motion)[0], (rgb + motion) / 2)
    assert create_model(**fusion.config).config == fusion.config == {"name": "attention-fusion", "num_classes": 4,
                                                                     "hidden": 64}


def scores(n, seed=0):
    """Each stream is right (0.7 on the label) on half the clips and confidently wrong (0.9) on the others:
    averaging is always wrong, a fusion that trusts the less peaked stream is always right."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    rgb_right = labels < 2
    rgb, motion = torch.full((n, 4), 0.1 / 3), torch.full((n, 4), 0.1 / 3)
    wrong = (labels + 2) % 4
    for s, right in ((rgb, rgb_right), (motion, ~rgb_right)):
        s[right] = 0.3 / 3
        s[torch.arange(n)[right], labels[right]] = 0.7
        s[torch.arange(n)[~right], wrong[~right]] = 0.9
    return rgb, motion, labels


def test_attention_learns_which_stream_to_trust(tmp_path):
    cfg = distill.FitConfig(out=str(tmp_path), epochs=None, max_steps=300, batch_size=16, optimizer="adam", lr=1e-2,
                            progress=False, device="cpu")
    fusion, history, _ = fit_fusion(*scores(256), cfg)
    acc = accuracies(fusion, *scores(128, seed=1))
    assert acc["average"] == 0 and 40 < acc["rgb"] < 60 and 40 < acc["motion"] < 60
    assert acc["attention"] > 95 and history[-1] < 0.5 * history[0]
    with pytest.raises(ConfigError, match="needs an end"):
        fit_fusion(*scores(32), distill.FitConfig(out=str(tmp_path), epochs=None, max_steps=None))


def test_cli_fuse_after_teacher_and_student(tmp_path, capsys, tmp_path_factory):
    pytest.importorskip("edge_stad.models.backbones3d")
    from tests.synth_data import tiny_synth

    data, out = str(tiny_synth(tmp_path_factory)), tmp_path / "kd"
    common = ["--data", data, "--backbone", "shufflenetv2", "--width-mult", "0.25", "--max-steps", "2",
              "--batch-size", "4", "--clips-per-video", "1", "--flow-cache", str(tmp_path / "flow"), "--no-progress",
              "--device", "cpu", "--out", str(out), "--optimizer", "adam"]
    assert cli.main(["distill", "teacher", *common, "--clip-len", "4", "--input-size", "32",
                     "--dis-preset", "ultrafast"]) == 0
    assert cli.main(["distill", "student", *common, "--teacher", str(out / "teacher.pt")]) == 0
    capsys.readouterr()
    assert cli.main(["distill", "fuse", *common, "--teacher", str(out / "teacher.pt"), "--student",
                     str(out / "student.pt"), "--hidden", "8", "--max-steps", "3"]) == 0
    text = capsys.readouterr().out
    assert "fuse: 3 steps" in text and "attention fusion" in text and "average" in text
    assert os.path.exists(out / "fuse.json")
    fusion = load_checkpoint(out / "fusion.pt")
    assert fusion.config["hidden"] == 8 and isinstance(fusion, AttentionScoreFusion)
