"""Equal scores: the stable order (default) and the authors' ACT order (``ties="reference"``).

A tubelet's score lands on K frames, so equal scores are common in the ACT protocol. With
``reference`` ties the metrics must rank as the authors' code does with NumPy's default sort:
``np.argsort(-score)`` in frame-mAP and video-mAP, ``np.argsort(score)[::-1]`` in the per-frame
soft-NMS, the tubelet NMS and the tube NMS (tests/act_reference.py with those sorts).
"""
import json
import pickle

import numpy as np
import pytest
from act_reference import (
    plain_build_tubes,
    plain_frame_ap,
    plain_frame_detections,
    plain_tubelet_nms,
    plain_video_ap,
    reference_desc,
    reference_nms_order,
)
from synthetic_tubelets import make_dataset

from edge_stad import cli
from edge_stad.core.frame_detections import frame_detections
from edge_stad.core.linking import link_video, tubelet_nms
from edge_stad.core.windows import Window
from edge_stad.data.annotations import GroundTruth
from edge_stad.errors import ConfigError
from edge_stad.eval.detections import Detections, write_detections
from edge_stad.eval.evaluate import evaluate
from edge_stad.eval.frame_map import frame_map
from edge_stad.eval.video_map import video_maps

GT_BOX = [0.0, 0.0, 99.0, 99.0]
GOOD = [10.0, 0.0, 109.0, 99.0]   # IoU 90/110 = 0.82 with GT_BOX
BAD = [34.0, 0.0, 133.0, 99.0]    # IoU 66/134 = 0.49 with GT_BOX, 76/124 = 0.61 (> 0.6) with GOOD


def one_frame_case():
    """One frame, one ground-truth box, two detections of equal score 0.5: GOOD first, then BAD."""
    gt = GroundTruth(["a", "b"], {"v": {0: [np.array([[1] + GT_BOX])]}}, {"v": 1}, [[]], [["v"]],
                     {"v": (240, 320)})
    tubelets = np.array([GOOD + [0.5], BAD + [0.5]], dtype=np.float32)
    detections = Detections(K=1, clip_len=1, mode="normal", labels=("a", "b"),
                            windows={"v": [Window((1,), {0: tubelets})]}, frames={}, tubes={})
    return gt, detections


def test_tie_order_known_answer_per_frame_soft_nms():
    # The two boxes overlap by more than 0.6, so the per-frame soft-NMS keeps whichever it visits
    # first and scales the other by 1 - 0.61. Stable: GOOD first -> GOOD (TP) outranks BAD (FP):
    # AP = 1. The authors' np.argsort([0.5, 0.5])[::-1] visits BAD first, so BAD (FP) outranks
    # GOOD (TP): points (1, 0), (0, 0), (0.5, 1) -> AP = 1 * (0 + 0.5) / 2 = 0.25.
    assert np.argsort(np.array([0.5, 0.5], dtype=np.float32))[::-1].tolist() == [1, 0]
    gt, detections = one_frame_case()
    stable = evaluate(gt, detections, ties="stable")
    reference = evaluate(gt, detections, ties="reference")
    assert stable.frame.per_class[0].ap == 1.0
    assert reference.frame.per_class[0].ap == 0.25
    assert evaluate(gt, detections).frame.per_class[0].ap == 1.0     # stable is the default
    assert (stable.ties, reference.ties) == ("stable", "reference")
    assert reference.to_json()["ties"] == "reference"


def test_tie_order_known_answer_tubelet_nms():
    # Two tubelets one pixel apart (summed IoU 1.96 > 0.6 * 2) with equal scores: the one visited
    # first survives, the other's score becomes 0.5 * (1 - 1.96) and it ranks last.
    a = [0, 0, 99, 99, 10, 0, 109, 99]
    tubelets = np.array([a + [0.5], [x + 1 for x in a] + [0.5]], dtype=np.float32)
    stable = tubelet_nms(tubelets.copy(), 0.6, 10)
    reference = tubelet_nms(tubelets.copy(), 0.6, 10, ties="reference")
    assert np.array_equal(stable[:, :8], tubelets[[0, 1], :8]) and stable[0, -1] == 0.5 and stable[1, -1] < 0
    assert np.array_equal(reference[:, :8], tubelets[[1, 0], :8]) and reference[0, -1] == 0.5
    assert np.array_equal(reference, plain_tubelet_nms(tubelets, 0.6, 10, order=reference_nms_order))


@pytest.fixture(scope="module")
def tied():
    """Random videos whose tubelet scores are rounded to quarters: many ties in every ranking."""
    K, n, mode = 3, 4, "stream"
    gt, windows = make_dataset(10, K, n, num_videos=5, num_labels=3, mode=mode, nframes=(30, 50))
    for ws in windows.values():
        for w in ws:
            for rows in w.tubelets.values():
                rows[:, -1] = np.round(rows[:, -1] * 4) / 4
    return K, n, mode, gt, windows, list(gt.test_videos[0])


def test_reference_ties_equal_the_authors_sorts(tied):
    K, n, mode, gt, windows, videos = tied
    frames = {v: frame_detections(windows[v], K, mode, ties="reference") for v in videos}
    for v in videos:
        plain = plain_frame_detections([(w.frames, w.tubelets) for w in windows[v]], K, mode, 3,
                                       nms_order=reference_nms_order)
        assert np.array_equal(frames[v], plain)
    fast = frame_map(frames, gt, videos, 0.5, "untrimmed", ties="reference")
    plain = [plain_frame_ap(frames, gt.gttubes, videos, c, 0.5, "untrimmed", order=reference_desc) for c in range(3)]
    np.testing.assert_allclose(fast.ap, plain, rtol=0, atol=1e-6)
    # the same detections ranked stably score differently: the tie order matters on this set
    stable = frame_map(frames, gt, videos, 0.5, "untrimmed")
    assert np.abs(stable.ap - fast.ap).max() > 1e-3
    for v in videos:
        tubes = link_video(windows[v], K, n, ties="reference")
        plain = plain_build_tubes([(w.frames, w.tubelets) for w in windows[v]], K, n, gt.nframes[v], range(3),
                                  nms_order=reference_nms_order)
        for label, built in tubes.items():
            assert [t.score for t in built] == [s for _, s in plain[label]]
            for tube, (boxes, _) in zip(built, plain[label]):
                assert np.array_equal(tube.boxes, boxes)


def test_reference_video_map_equals_the_authors_sorts(tied):
    K, n, _, gt, windows, videos = tied
    tubes = {v: link_video(windows[v], K, n, ties="reference") for v in videos}
    # a few equal tube scores too, so that the tube NMS and the ranking meet ties
    for per in tubes.values():
        for label, ts in per.items():
            per[label] = [t._replace(score=float(np.float32(round(t.score * 4) / 4))) for t in ts]
    plain_tubes = {v: {c: [(t.boxes, t.score) for t in ts] for c, ts in per.items()} for v, per in tubes.items()}
    fast = video_maps(tubes, gt, videos, (0.2, 0.5), ties="reference")
    for th in (0.2, 0.5):
        plain = [plain_video_ap(plain_tubes, gt.gttubes, videos, c, th, order=reference_desc,
                                nms_order=reference_nms_order) for c in range(3)]
        np.testing.assert_allclose(fast[th].ap, plain, rtol=0, atol=1e-6)
        assert abs(video_maps(tubes, gt, videos, (th,))[th].mean - fast[th].mean) > 1e-3   # ties matter here


def test_eval_command_ties_option(tmp_path):
    gt, detections = one_frame_case()
    (tmp_path / "One-GT.pkl").write_bytes(pickle.dumps(dict(gt._asdict()), protocol=2))
    write_detections(tmp_path / "det.jsonl", detections)
    base = ["eval", "--data", str(tmp_path), "--detections", str(tmp_path / "det.jsonl")]
    for ties, expected in (("stable", 50.0), ("reference", 12.5)):   # class b has no ground truth: AP 0
        assert cli.main(base + ["--ties", ties, "--json", str(tmp_path / f"{ties}.json")]) == 0
        result = json.loads((tmp_path / f"{ties}.json").read_text())
        assert (result["ties"], result["frame_mAP"]) == (ties, expected)
    with pytest.raises(SystemExit):
        cli.main(base + ["--ties", "random"])
    with pytest.raises(ConfigError, match="ties must be one of"):
        evaluate(gt, detections, ties="unstable")
