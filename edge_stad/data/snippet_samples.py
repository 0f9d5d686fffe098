"""Training samples of STMA (no torch): the clip around a K-frame snippet and its targets.

``SnippetSamples`` turns an ACT dataset into ``{"clips": float32 (3 * clip_len, H, W), hm, mov,
mov_weight, box, wh_weight, cls, num}`` items (:mod:`edge_stad.data.stma_targets`). A sample is named
by its snippet's last frame; the snippets are MOC's: every K consecutive frames that lie entirely
inside or outside each ground-truth tube, and inside at least one
(:func:`~edge_stad.data.sampling.training_samples` with clips of one frame). The clip around the
snippet is :func:`~edge_stad.core.snippets.layout_of`'s. Augmentation is the tubelet samples' (one
draw per sample for all its frames), seeded by ``(seed, epoch, index)``.
"""
import numpy as np

from edge_stad.core.snippets import head_grid, head_stride, layout_of
from edge_stad.data.samples import Samples
from edge_stad.data.sampling import training_samples, tube_boxes_at
from edge_stad.data.stma_targets import build_stma_targets
from edge_stad.preprocess import normalize_clip, resize


class SnippetSamples(Samples):
    """Indexable samples of ``videos`` of an :class:`~edge_stad.data.act.ActDataset` for an STMA model ``config``."""

    def __init__(self, dataset, videos, config, augment=False, seed=0):
        self.layout = layout_of(config)
        super().__init__(dataset, training_samples(dataset.gt, videos, config["K"], 1), self.layout.clip_len,
                         tuple(config["input_size"]), augment, seed)
        self.config = config

    def read(self, index):
        """The sample's clip frames (float32 BGR, oldest first) and ``{label: [(K, 4) boxes]}`` in pixels."""
        video, end = self.samples[index]
        numbers = self.layout.clip_frames(end, self.dataset.gt.nframes[video])
        cache = {}
        for f in numbers:
            if f not in cache:
                cache[f] = self.dataset.read_frame(video, f)
        snippet = numbers[self.layout.snippet[0]:self.layout.snippet[1] + 1]
        return [cache[f] for f in numbers], tube_boxes_at(self.dataset.gt, video, snippet)

    def __getitem__(self, index):
        frames, tubes = self.augmented(index, *self.read(index))
        cfg = self.config
        gh, gw = head_grid(cfg)
        oh, ow = frames[0].shape[:2]
        scale = np.array([gw / ow, gh / oh, gw / ow, gh / oh], dtype=np.float32)
        grid_tubes = {label: [b * scale for b in boxes] for label, boxes in tubes.items()}
        item = build_stma_targets(grid_tubes, cfg["num_classes"], (gh, gw), cfg["K"], self.layout.key,
                                  head_stride(cfg["backbone"]), cfg["class_agnostic"], cfg["gaussian_regression"])
        item["clips"] = normalize_clip([resize(f, self.input_size) for f in frames])
        return item
