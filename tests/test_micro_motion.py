import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from edge_stad.errors import ConfigError  # noqa: E402
from edge_stad.models.micro_motion import MicroMotion, reference_pairs  # noqa: E402


def test_reference_pairs():
    assert reference_pairs(5) == ((0, 4), (1, 4), (2, 4))  # frame 3 unused, as in the authors' code
    assert reference_pairs(7) == ((2, 6), (3, 6), (4, 6))
    assert reference_pairs(4) == ((0, 3), (1, 3), (2, 3))  # the paper's t = 4 (the reference crashes)
    assert reference_pairs(2) == ((0, 1),)
    with pytest.raises(ConfigError):
        reference_pairs(1)


def slow_micro_motion(mm, clip):
    """Per frame, per pair, per pixel: the reference's steps written out with loops over pairs."""
    n = mm.clip_len
    frames = [clip[:, 3 * t:3 * t + 3] for t in range(n)]
    feats = [mm.shallow_conv(F.max_pool2d(f, 3, 2, 1)) for f in frames]
    maps = []
    for a, b in mm.pairs:
        d = feats[a] - feats[b] + 1e-6
        maps.append((d ** 2).sum(1).sqrt())
    m = torch.stack(maps, 1)
    return m.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


@pytest.mark.parametrize("clip_len", [4, 5, 6])
def test_matches_written_out_definition(clip_len):
    torch.manual_seed(0)
    mm = MicroMotion(clip_len)
    clip = torch.randn(2, 3 * clip_len, 16, 20)
    with torch.no_grad():
        out = mm(clip)
        ref = slow_micro_motion(mm, clip)
    assert out.shape == (2, 3, 16, 20)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_eps_is_added_to_the_difference():
    # Identical frames: every difference is 0, so each pixel is sqrt(8 * eps^2) = sqrt(8) * 1e-6.
    mm = MicroMotion(5)
    frame = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        out = mm(frame.repeat(1, 5, 1, 1))
    torch.testing.assert_close(out, torch.full_like(out, 8 ** 0.5 * 1e-6))


def test_only_paired_frames_matter():
    torch.manual_seed(1)
    mm = MicroMotion(5)
    clip = torch.randn(1, 15, 8, 8)
    changed = clip.clone()
    changed[:, 9:12] += 5.0  # frame 3 is in no reference pair
    with torch.no_grad():
        torch.testing.assert_close(mm(clip), mm(changed), rtol=0, atol=0)
        changed[:, 12:15] += 1.0  # the key frame is in every pair
        assert (mm(clip) - mm(changed)).abs().max() > 1e-2


@pytest.mark.parametrize("clip_len", [4, 5])
def test_skipping_unused_frames_is_bit_exact(clip_len):
    torch.manual_seed(2)
    mm = MicroMotion(clip_len)
    clip = torch.randn(3, 3 * clip_len, 16, 16)
    with torch.no_grad():
        full = mm(clip)
        mm.convolve_unused = False
        torch.testing.assert_close(mm(clip), full, rtol=0, atol=0)


def test_unpooled_variant_and_custom_pairs():
    mm = MicroMotion(3, pairs=[(0, 1), (1, 2)], kernel_size=3, pool=False)
    assert mm.out_channels == 2 and mm.shallow_conv.kernel_size == (3, 3)
    assert mm(torch.randn(1, 9, 10, 10)).shape == (1, 2, 10, 10)


@pytest.mark.parametrize("pairs", [[(0, 0)], [(0, 5)], []])
def test_bad_pairs(pairs):
    with pytest.raises(ConfigError):
        MicroMotion(5, pairs=pairs)


def test_bad_input_shapes():
    mm = MicroMotion(5)
    with pytest.raises(ValueError, match="15 channels"):
        mm(torch.randn(1, 12, 8, 8))
    with pytest.raises(ValueError, match="even"):
        mm(torch.randn(1, 15, 7, 8))
