"""The NumPy references of the CUDA kernels against the code they stand for, and known answers."""
import cv2
import numpy as np
import pytest

from edge_stad.errors import KernelError
from edge_stad.kernels import reference
from edge_stad.kernels.ops import pack_pairs
from edge_stad.preprocess import STD_BGR, normalize_clip


def frames(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("src, dst", [((37, 53), (32, 32)), ((120, 160), (64, 96)), ((20, 30), (48, 40)),
                                      ((1, 7), (4, 4))])
def test_resize_within_one_level_of_opencv(src, dst):
    clip = frames(3, *src)
    ours = reference.resize_bilinear(clip, dst).astype(int)
    theirs = np.stack([cv2.resize(f, dst[::-1], interpolation=cv2.INTER_LINEAR) for f in clip]).astype(int)
    assert np.abs(ours - theirs).max() <= 1
    assert (ours == theirs).mean() > 0.8   # random noise: the worst case for rounding


def test_preprocess_is_normalize_clip_of_the_resize():
    clip = frames(5, 40, 52)
    out = reference.preprocess(clip, (32, 48))
    assert out.shape == (15, 32, 48) and out.dtype == np.float32
    np.testing.assert_array_equal(out, normalize_clip(list(reference.resize_bilinear(clip, (32, 48)))))
    same = frames(2, 16, 16, seed=1)   # at the model size nothing is resampled: exactly the training input
    np.testing.assert_array_equal(reference.preprocess(same, (16, 16)), normalize_clip(list(same)))
    # one grey level is the most it can differ from the runtime's cv2 path
    cv = normalize_clip([cv2.resize(f, (48, 32), interpolation=cv2.INTER_LINEAR) for f in clip])
    assert np.abs(out - cv).max() <= 1 / 255 / min(STD_BGR) + 1e-6
    half = reference.preprocess(clip, (32, 48), half=True)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, out.astype(np.float16))


@pytest.mark.parametrize("clip_len, pairs, pool, size", [
    (5, ((0, 4), (1, 4), (2, 4)), True, (24, 20)),
    (4, ((0, 3), (1, 3), (2, 3)), True, (16, 16)),
    (4, ((0, 1), (1, 2), (2, 3)), False, (12, 10)),   # MENet's SRM shape: adjacent frames, no pooling
])
def test_micro_motion_matches_the_torch_module(clip_len, pairs, pool, size):
    torch = pytest.importorskip("torch")
    from edge_stad.models.micro_motion import MicroMotion

    torch.manual_seed(0)
    mm = MicroMotion(clip_len, pairs=pairs, pool=pool).eval()
    with torch.no_grad():
        mm.shallow_conv.bias.normal_()
        clip = torch.randn(2, 3 * clip_len, *size)
        expected = mm(clip).numpy()
    got = reference.micro_motion(clip.numpy(), mm.shallow_conv.weight.detach().numpy(),
                                 mm.shallow_conv.bias.detach().numpy(), pairs, pool=pool)
    assert got.shape == expected.shape == (2, len(pairs), *size)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_micro_motion_known_answer():
    """A 1x1 identity conv without pooling: the norm of the frame difference itself, plus eps."""
    clip = np.zeros((1, 6, 2, 2), np.float32)
    clip[0, 0:3, 0, 0] = [3, 4, 0]          # frame 0 at pixel (0, 0); frame 1 stays 0
    weight = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    out = reference.micro_motion(clip, weight, np.zeros(3, np.float32), [(0, 1)], pool=False)
    assert out[0, 0, 0, 0] == pytest.approx(5.0, abs=1e-5)
    assert out[0, 0, 1, 1] == pytest.approx(np.sqrt(3) * 1e-6, rel=1e-3)   # eps on each of 3 channels


def test_nms_overlap_known_answers():
    a = [0, 0, 9, 9]        # 10x10 px (inclusive corners)
    half = [5, 0, 14, 9]    # overlaps a on 5x10 px: IoU 50 / 150
    far = [50, 50, 59, 59]
    boxes = np.array([[a, a], [half, half], [far, a]], np.float32)
    got = reference.nms_overlap(boxes)
    assert got.dtype == np.float32 and got.shape == (3, 3)
    np.testing.assert_allclose(got[0], [2.0, 2 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.diag(got), [2, 2, 2])
    np.testing.assert_array_equal(got, got.T)
    assert reference.nms_overlap(np.zeros((0, 3, 4), np.float32)).shape == (0, 0)


def test_match_iou_known_answers():
    K = 3
    box = np.array([0, 0, 9, 9], np.float32)
    shifted = box + [5, 0, 5, 0]                      # IoU 1/3 with box
    tube = np.stack([box, box, shifted])[None]        # tube's boxes oldest first
    candidate = np.stack([shifted, box, box])[None]
    # offset 1: candidate boxes 0, 1 face tube boxes 1, 2: IoU 1/3 and 1/3
    np.testing.assert_allclose(reference.match_iou(tube, [1], candidate), [[1 / 3]], rtol=1e-6)
    # offset 2: candidate box 0 faces tube box 2: both shifted, IoU 1
    np.testing.assert_allclose(reference.match_iou(tube, [2], candidate), [[1.0]], rtol=1e-6)
    # offset >= K: the candidate's first box against the tube's last box
    np.testing.assert_allclose(reference.match_iou(tube, [5], candidate), [[1.0]], rtol=1e-6)
    # offset 0 (same window): all K boxes, box by box
    np.testing.assert_allclose(reference.match_iou(tube, [0], candidate), [[(1 / 3 + 1 + 1 / 3) / K]], rtol=1e-6)
    assert reference.match_iou(np.zeros((2, K, 4), np.float32), [1, 1], np.zeros((0, K, 4))).shape == (2, 0)


def test_pack_pairs():
    assert pack_pairs([(0, 4), (1, 4), (2, 4)]) == (0x210, 0x444)
    for bad in ([], [(0, 16)], [(i, i + 1) for i in range(8)], [(i, i + 8) for i in range(5)]):
        with pytest.raises(KernelError):
            pack_pairs(bad)


def test_block_pairs_enumerate_each_block_row_major():
    rows, cols, starts = reference.block_pairs([2, 0, 1], [3, 4, 2])
    assert rows.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]      # block 1 is empty; block 2 starts at row 2
    assert cols.tolist() == [0, 1, 2, 0, 1, 2, 7, 8]      # ... and at column 3 + 4
    assert starts.tolist() == [0, 6, 6, 8]


def test_host_matrices_of_several_labels_equal_the_per_label_references():
    """The linker's default computes every label of a window in one call, bit for bit as label by label."""
    from edge_stad.core.linking import HostMatrices

    rng = np.random.default_rng(3)
    K = 3

    def boxes(m):
        corner = rng.uniform(0, 80, (m, 1, 2))
        return (np.concatenate([corner, corner + 20], axis=2) + rng.normal(0, 4, (m, K, 4))).astype(np.float32)

    for sizes in ((4, 0, 1, 9), (20, 1, 0, 2)):   # its blocks only; the whole matrix (one label dominates)
        groups = [boxes(m) for m in sizes]
        got = HostMatrices.nms_overlap(groups)
        assert len(got) == len(groups)
        for block, group in zip(got, groups):
            assert block.shape == (len(group), len(group)) and np.array_equal(block, reference.nms_overlap(group))
    matches = [(boxes(a), rng.integers(0, K + 2, a), boxes(m)) for a, m in ((3, 5), (0, 2), (4, 0), (6, 1))]
    for got, want in zip(HostMatrices.match_iou(matches), [reference.match_iou(*g) for g in matches]):
        assert got.shape == want.shape and np.array_equal(got, want)
    assert HostMatrices.nms_overlap([]) == [] and HostMatrices.match_iou([]) == []
