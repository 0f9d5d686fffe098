"""Training samples of frame-level detectors (MENet): one clip ending at an annotated key frame (no torch).

``FrameSamples`` turns an ACT dataset into ``{"clips": float32 (3T, H, W), "boxes": float32
(MAX_BOXES, 5)}`` items: the T frames ending at the key frame (frame 1 repeated before a video's
start, as the tubelet samples do), and the key frame's ground-truth boxes as rows ``x1, y1, x2, y2,
label`` in [0, 1] image coordinates, padded with label -1 (what
:func:`edge_stad.train.region_loss.region_loss` takes). Every frame covered by a tube is a key
frame (YOWO trains on the annotated frames). Augmentation is the tubelet samples' (one draw per
sample, the same for all its frames), seeded by ``(seed, epoch, index)``.
"""
import numpy as np

from edge_stad.core.windows import clip_ending_at
from edge_stad.data.samples import Samples
from edge_stad.data.sampling import tube_boxes_at
from edge_stad.preprocess import normalize_clip, resize

MAX_BOXES = 32


def annotated_frames(gt, videos):
    """``(video, frame)`` of every frame that at least one ground-truth tube covers, in order."""
    samples = []
    for video in videos:
        covered = set()
        for tubes in gt.gttubes[video].values():
            for tube in tubes:
                covered.update(range(int(tube[0, 0]), int(tube[-1, 0]) + 1))
        samples += [(video, f) for f in sorted(covered)]
    return samples


def box_rows(tubes, image_hw, max_boxes=MAX_BOXES):
    """``{label: [(1, 4) pixel boxes]}`` -> float32 ``(max_boxes, 5)`` rows ``x1, y1, x2, y2, label`` in [0, 1]."""
    h, w = image_hw
    rows = np.full((max_boxes, 5), -1.0, dtype=np.float32)
    boxes = [(label, b[-1]) for label in sorted(tubes) for b in tubes[label]][:max_boxes]
    for i, (label, box) in enumerate(boxes):
        rows[i, 4] = label
        rows[i, :4] = np.clip(box / np.array([w, h, w, h], dtype=np.float32), 0.0, 1.0)
    return rows


class FrameSamples(Samples):
    """Indexable key-frame samples of ``videos`` of an :class:`~edge_stad.data.act.ActDataset`."""

    def __init__(self, dataset, videos, clip_len, input_size, augment=False, seed=0):
        super().__init__(dataset, annotated_frames(dataset.gt, videos), clip_len, input_size, augment, seed)

    def __getitem__(self, index):
        video, frame = self.samples[index]
        frames = [self.dataset.read_frame(video, f) for f in clip_ending_at(frame, self.clip_len)]
        frames, tubes = self.augmented(index, frames, tube_boxes_at(self.dataset.gt, video, [frame]))
        boxes = box_rows(tubes, frames[0].shape[:2])
        clip = normalize_clip([resize(f, self.input_size) for f in frames])
        return {"clips": clip, "boxes": boxes}
