"""Training samples: K clips of frames plus their targets, ready for a batch (no torch).

``TubeletSamples`` turns an ACT dataset into ``{"clips": float32 (K, 3n, H, W), hm, mov,
wh, index, index_all, mask}`` items. Augmentation randomness comes from a generator
seeded by ``(seed, epoch, index)``, so a sample is the same whichever worker, process
or resumed run draws it.
"""
import numpy as np

from edge_stad.data.augment import augment
from edge_stad.data.sampling import clip_frames, training_samples, tube_boxes_at
from edge_stad.data.targets import build_targets
from edge_stad.preprocess import grid_size, normalize_clip, resize


class Samples:
    """What every sample set shares: ``samples`` (``(video, frame)`` pairs), the epoch, and augmentation
    drawn from ``(seed, epoch, index)``."""

    def __init__(self, dataset, samples, clip_len, input_size, augment=False, seed=0):
        self.dataset = dataset
        self.clip_len = clip_len
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def augmented(self, index, frames, tubes):
        """``frames, tubes`` with sample ``index``'s augmentation of this epoch applied (unchanged without it)."""
        if not self.augment:
            return frames, tubes
        return augment(frames, tubes, np.random.default_rng([self.seed, self.epoch, index]))


class TubeletSamples(Samples):
    """Indexable samples of ``videos`` of an :class:`~edge_stad.data.act.ActDataset`."""

    def __init__(self, dataset, videos, K, clip_len, input_size, augment=False, seed=0):
        super().__init__(dataset, training_samples(dataset.gt, videos, K, clip_len), clip_len, input_size, augment,
                         seed)
        self.K = K

    def read(self, index):
        """The sample's frames (float32 BGR, clips in order) and ``{label: [(K, 4) boxes]}`` in pixels."""
        video, frame = self.samples[index]
        clips = clip_frames(frame, self.K, self.clip_len)
        cache = {}
        frames = []
        for clip in clips:
            for f in clip:
                if f not in cache:
                    cache[f] = self.dataset.read_frame(video, f)
                frames.append(cache[f])
        return frames, tube_boxes_at(self.dataset.gt, video, [clip[-1] for clip in clips])

    def __getitem__(self, index):
        frames, tubes = self.augmented(index, *self.read(index))
        h, w = self.input_size
        gh, gw = grid_size((h, w))
        oh, ow = frames[0].shape[:2]
        scale = np.array([gw / ow, gh / oh, gw / ow, gh / oh], dtype=np.float32)
        grid_tubes = {label: [b * scale for b in boxes] for label, boxes in tubes.items()}
        resized = [resize(f, (h, w)) for f in frames]
        n = self.clip_len
        clips = np.stack([normalize_clip(resized[k * n:(k + 1) * n]) for k in range(self.K)])
        item = build_targets(grid_tubes, len(self.dataset.gt.labels), (gh, gw), self.K)
        item["clips"] = clips
        return item
