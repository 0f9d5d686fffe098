"""Training samples of the flow-fusion detectors (no torch): the frames a detection of an annotated key
frame reads, the key frame's boxes and, for the flow sub-network, pseudo ground-truth flow.

``FlowFusionSamples`` gives ``{"clips": float32 (3T, H, W), "boxes": float32 (MAX_BOXES, 5)}`` items
(:func:`~edge_stad.core.ssd_decode.frames_for_key` frames, the key frame's boxes as
:func:`~edge_stad.data.frame_samples.box_rows`), plus ``"flow": float32 (T - 1, 2, H, W)`` when given a
flow cache: the flow of each adjacent frame pair in pixels of the input size.

No optical-flow ground truth exists for action datasets, and PWC-Net's FlyingChairs / FlyingThings
weights are not available here, so the flow sub-network learns from OpenCV's DIS flow instead: the
:class:`~edge_stad.data.flow.FlowCache` of the motion distillation (flow of frame ``b`` = displacement
from ``b - 1``, clipped to +-20 px), computed on the frames resized to the input size. A pair that
repeats one frame (at a video's start or end) has zero flow. With augmentation the cached flow no
longer fits the frames, so DIS runs on the augmented, resized frames instead (same clipping).
"""
import numpy as np

from edge_stad.core.ssd_decode import frames_for_key
from edge_stad.data.frame_samples import annotated_frames, box_rows
from edge_stad.data.samples import Samples
from edge_stad.data.sampling import tube_boxes_at
from edge_stad.errors import ConfigError
from edge_stad.optical_flow import compute_flow, dequantize_flow, quantize_flow
from edge_stad.preprocess import normalize_clip, resize


class FlowFusionSamples(Samples):
    """Indexable key-frame samples of ``videos``: ``frames`` frames, ``lookahead`` of them after the key.

    ``flow``: a :class:`~edge_stad.data.flow.FlowCache` at ``input_size`` for the flow targets, or None.
    """

    def __init__(self, dataset, videos, frames, lookahead, input_size, flow=None, augment=False, seed=0):
        super().__init__(dataset, annotated_frames(dataset.gt, videos), frames, input_size, augment, seed)
        if flow is not None and flow.size != self.input_size:
            raise ConfigError(f"flow targets need a FlowCache at the input size {self.input_size}, got {flow.size}")
        self.lookahead, self.flow = int(lookahead), flow

    def numbers(self, index):
        """``(video, frame numbers read, key frame)`` of sample ``index``."""
        video, frame = self.samples[index]
        return video, frames_for_key(frame, self.clip_len, self.lookahead, self.dataset.nframes(video)), frame

    def prepare(self, progress=True):
        """Compute the cached flow every sample reads (so that loader workers only read files)."""
        if self.flow is not None and not self.augment:
            pairs = set()
            for index in range(len(self)):
                video, numbers, _ = self.numbers(index)
                pairs.update((video, b) for a, b in zip(numbers, numbers[1:]) if a != b)
            self.flow.precompute(sorted(pairs), progress=progress)

    def __getitem__(self, index):
        video, numbers, key = self.numbers(index)
        images = [self.dataset.read_frame(video, f) for f in numbers]
        images, tubes = self.augmented(index, images, tube_boxes_at(self.dataset.gt, video, [key]))
        resized = [resize(f, self.input_size) for f in images]
        item = {"clips": normalize_clip(resized), "boxes": box_rows(tubes, images[0].shape[:2])}
        if self.flow is not None:
            item["flow"] = np.stack([self._pair_flow(video, a, b, resized[i], resized[i + 1])
                                     for i, (a, b) in enumerate(zip(numbers, numbers[1:]))])
        return item

    def _pair_flow(self, video, a, b, first, second):
        """``(2, H, W)`` float32 pseudo ground truth of the pair (a, b), in input pixels."""
        h, w = self.input_size
        if a == b:
            return np.zeros((2, h, w), dtype=np.float32)
        if self.augment:
            grey = [np.clip(np.rint(x), 0, 255).astype(np.uint8) for x in (first, second)]
            q = quantize_flow(compute_flow(*grey, self.flow.method, self.flow.preset), self.flow.bound)
        else:
            q = self.flow.flow(video, b)
        return np.ascontiguousarray(dequantize_flow(q, self.flow.bound).transpose(2, 0, 1))
