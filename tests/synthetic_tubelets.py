"""Synthetic tubelet streams and matching ground truth for linking and metric tests.

Actors of random classes move on straight lines, disappear for a few windows now and
then, and are detected as noisy tubelets with near-duplicates; clutter tubelets of
random classes fill the rest. Boxes are in pixels of a 320x240 frame.
"""
import numpy as np

from edge_stad.core.windows import Window, window_schedule
from edge_stad.data.annotations import GroundTruth


class Actor:
    def __init__(self, rng, label, nframes, K, n):
        self.label = int(label)
        self.start = int(rng.integers(1, max(2, nframes // 2)))
        self.end = int(min(nframes, self.start + rng.integers(min(K * n, nframes), nframes + 1)))
        self.origin = rng.uniform([20, 20], [200, 140])
        self.size = rng.uniform([30, 40], [90, 100])
        self.speed = rng.uniform(-1.5, 1.5, 2)
        self.hidden = set()

    def box(self, frame):
        x, y = self.origin + self.speed * (frame - self.start)
        return np.array([x, y, x + self.size[0], y + self.size[1]])

    def tube(self):
        frames = np.arange(self.start, self.end + 1)
        return np.column_stack([frames, np.array([self.box(f) for f in frames])])


def make_video(rng, K, n, nframes, num_labels, mode, actors=3, clutter=12, duplicates=2):
    """(windows, actors) of one video."""
    cast = [Actor(rng, rng.integers(num_labels), nframes, K, n) for _ in range(actors)]
    schedule = window_schedule(K, n, nframes, mode)
    for actor in cast:  # a few windows where the actor is missed
        actor.hidden = {i for i in range(len(schedule)) if rng.random() < 0.15}
    windows = []
    for i, frames in enumerate(schedule):
        rows = {}
        for actor in cast:
            if not actor.start <= frames[-1] <= actor.end or i in actor.hidden:
                continue
            truth = np.concatenate([actor.box(f) for f in frames])
            score = rng.uniform(0.3, 1.0)
            rows.setdefault(actor.label, []).append(np.append(truth + rng.normal(0, 2, truth.shape), score))
            for _ in range(duplicates):
                rows[actor.label].append(np.append(truth + rng.normal(0, 6, truth.shape),
                                                   score * rng.uniform(0.5, 0.95)))
        for _ in range(clutter):
            x, y = rng.uniform([0, 0], [260, 180])
            w, h = rng.uniform([20, 20], [80, 80])
            boxes = np.tile([x, y, x + w, y + h], K) + rng.normal(0, 4, 4 * K)
            rows.setdefault(int(rng.integers(num_labels)), []).append(np.append(boxes, rng.uniform(0.0, 0.4)))
        windows.append(Window(frames, {c: _ordered(np.array(r, dtype=np.float32)) for c, r in rows.items()}))
    return windows, cast


def _ordered(tubelets):
    """Noisy tubelets with each box's corners in order (``x1 <= x2``, ``y1 <= y2``), as a detector gives them."""
    boxes = tubelets[:, :-1].reshape(len(tubelets), -1, 2, 2)
    tubelets[:, :-1] = np.stack([boxes.min(axis=2), boxes.max(axis=2)], axis=2).reshape(len(tubelets), -1)
    return tubelets


def make_dataset(seed, K, n, num_videos, num_labels, mode, nframes=(40, 90), **kw):
    """(GroundTruth with one test split, {video: windows})."""
    rng = np.random.default_rng(seed)
    gttubes, lengths, windows = {}, {}, {}
    for i in range(num_videos):
        name = f"v{i:02d}"
        lengths[name] = int(rng.integers(*nframes))
        windows[name], cast = make_video(rng, K, n, lengths[name], num_labels, mode, **kw)
        gttubes[name] = {}
        for actor in cast:
            gttubes[name].setdefault(actor.label, []).append(actor.tube())
    names = sorted(lengths)
    gt = GroundTruth([f"class{c}" for c in range(num_labels)], gttubes, lengths, [[]], [names],
                     {v: (240, 320) for v in names})
    return gt, windows
