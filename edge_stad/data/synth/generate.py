"""Synthetic videos written in the ACT layout, with presets sized for tests, demos and benchmarks.

Each video shows one action class performed by one or several actors (all annotated,
sharing the action interval, as in UCF101-24), sometimes with an idle distractor actor
(standing with small sway, never annotated). Videos alternate, per class, between the
four kinds {trimmed, untrimmed} x {one actor, several}: a trimmed video is the action
from the first to the last frame (JHMDB-21-like); in an untrimmed one the actors stand
idle, unannotated, before and after the action (UCF101-24-like).

Every video has its own random generator seeded by (seed, class, index), so a dataset is
a pure function of (preset, seed) whatever the number of worker processes.
"""
import contextlib
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from edge_stad.atomic import write_json
from edge_stad.data.act import FRAMES_DIR, frame_name, write_gt
from edge_stad.data.staging import staged_dir
from edge_stad.data.synth import actors, scene
from edge_stad.data.synth.motions import CLASSES, sway
from edge_stad.data.synth.presets import PRESETS
from edge_stad.errors import ConfigError
from edge_stad.version import __version__

GENERATOR_VERSION = 2
DATASET_NAME = "Synth"          # -> Synth-GT.pkl
METADATA_FILE = "synth.json"
JPEG_QUALITY = 90

# (trimmed, several actors), cycled per class so that every preset has every kind.
KINDS = ((True, False), (False, True), (False, False), (True, True))


class VideoPlan(NamedTuple):
    name: str           # "<label>/<label>_<index>"
    label: int
    index: int          # within the class, 0-based
    test: bool
    trimmed: bool
    multi: bool


def plan_videos(preset):
    """The videos of a preset, in a fixed order (class by class)."""
    plans = []
    for label, motion in enumerate(CLASSES):
        for j in range(preset.train_per_class + preset.test_per_class):
            trimmed, multi = KINDS[(label + j) % len(KINDS)]
            plans.append(VideoPlan(f"{motion.name}/{motion.name}_{j + 1:03d}", label, j,
                                   j >= preset.train_per_class, trimmed, multi))
    return plans


def _luma(image):
    return float((image.reshape(-1, 3) @ np.array([0.114, 0.587, 0.299])).mean())


def _place(rng, points_at_origin, appearance, slot, slots, width, height):
    """Ground point (x, y) keeping the actor's whole trajectory in the frame, near its slot."""
    box = actors.extent(points_at_origin, appearance)
    x1, y1, x2, y2 = box[:, 0].min(), box[:, 1].min(), box[:, 2].max(), box[:, 3].max()
    lo_x, hi_x = 1 - x1, width - 2 - x2
    lo_y, hi_y = 1 - y1, height - 2 - y2
    target = (slot + 0.5 + rng.uniform(-0.25, 0.25)) * width / slots
    x = float(np.clip(target, lo_x, hi_x)) if lo_x <= hi_x else (lo_x + hi_x) / 2
    y = float(rng.uniform(lo_y, hi_y)) if lo_y <= hi_y else (lo_y + hi_y) / 2
    return np.array([x, y])


def _actor_poses(rng, plan, n, start, length, room):
    """Pose and footprint sequences (n, POSE_SIZE): idle before ``start``, the action, idle after it."""
    motion = CLASSES[plan.label]
    params = motion.sample(rng, length, room)
    t = np.arange(n)
    distance = np.maximum(start - t, t - (start + length - 1))         # frames away from the action
    idle = sway(rng, n) * np.clip(distance / 4, 0, 1)[:, None]
    out = []
    for core in (motion.poses(params, length), motion.footprint(params, length)):
        before, after = np.repeat(core[:1], start, 0), np.repeat(core[-1:], n - start - length, 0)
        out.append(np.concatenate([before, core, after]) + idle)
    return out


def render_frames(plan, preset, seed):
    """Draw one video in memory: ``(frames, tubes, info)``, BGR uint8 frames before JPEG encoding."""
    rng = np.random.default_rng([seed, plan.label, plan.index])
    w, h = preset.width, preset.height
    n = int(rng.integers(preset.frames[0], preset.frames[1] + 1))
    camera = scene.camera_path(rng, n, preset.pan_speed, preset.shake)
    margin = int(math.ceil(np.abs(camera).max())) + 2
    texture = scene.background(rng, h + 2 * margin, w + 2 * margin)
    luma = _luma(texture)

    if plan.trimmed:
        start, length = 0, n
    else:
        length = int(rng.integers(min(preset.min_action, n - 2), n - 2 + 1))
        start = int(rng.integers(0, n - length + 1))
    annotated = int(rng.integers(2, preset.max_actors + 1)) if plan.multi else 1
    distractors = int(rng.random() < preset.distractor_probability)
    count = annotated + distractors
    sizes = (0.4, 0.7) if count == 1 else (0.3, 0.5)
    slots = rng.permutation(count)

    people = []
    for i in range(count):
        appearance = actors.sample_appearance(rng, rng.uniform(*sizes) * h, luma)
        if i < annotated:
            room = (0.95 * w - 0.5 * appearance.height) / appearance.height
            poses, footprint = _actor_poses(rng, plan, n, start, length, room)
        else:
            poses = footprint = actors.STAND + sway(rng, n)
        ground = _place(rng, actors.joints(footprint, appearance, -camera), appearance, slots[i], count, w, h)
        points = actors.joints(poses, appearance, ground - camera)
        people.append((ground[1], i, appearance, points))
    occluders = [scene.sample_occluder(rng, n, h, w) for _ in range(int(rng.random() < preset.occluder_probability))]
    sensor = scene.sample_sensor(rng, n, preset.blur_probability)

    order = sorted(people, key=lambda p: (p[0], p[1]))     # farther (higher ground line) first
    images = []
    for t in range(n):
        image = scene.view(texture, camera[t], h, w)
        for _, _, appearance, points in order:
            actors.draw(image, points[t], appearance)
        for occ in occluders:
            scene.paste(image, occ, t)
        images.append(scene.expose(image, sensor, t, rng))

    tubes = []
    for _, _, appearance, points in people[:annotated]:
        box = actors.extent(points[start:start + length], appearance)
        box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
        frames = np.arange(start + 1, start + length + 1, dtype=np.float32)[:, None]
        tubes.append(np.concatenate([frames, box.astype(np.float32)], axis=1))
    info = {"split": "test" if plan.test else "train", "trimmed": plan.trimmed, "actors": annotated,
            "distractors": distractors, "occluders": len(occluders), "nframes": n}
    return images, tubes, info


def render_video(folder, plan, preset, seed):
    """Draw one video into ``folder`` (frames only); returns (tubes, nframes, info)."""
    frames, tubes, info = render_frames(plan, preset, seed)
    os.makedirs(folder)
    for t, frame in enumerate(frames):
        with open(os.path.join(folder, frame_name(t + 1)), "wb") as f:
            f.write(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes())
    return tubes, len(frames), info


def synthetic_stream(count, split="test", preset="bench", seed=0):
    """``count`` BGR frames: the ``split`` videos of ``preset`` rendered in memory and played back to back.

    A fixed, dataset-free video for speed measurements (``edge-stad bench``) and calibration windows;
    the same frames for the same arguments on every machine.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset {preset!r}; expected one of {sorted(PRESETS)}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if count < 1:
        raise ConfigError(f"a synthetic stream needs at least one frame, got {count}")
    config = PRESETS[preset]
    # one video of every class in turn, so that a short stream still shows all the motions
    plans = sorted((p for p in plan_videos(config) if p.test == (split == "test")), key=lambda p: (p.index, p.label))
    frames = []
    while len(frames) < count:  # a long stream replays the split
        for plan in plans:
            frames += render_frames(plan, config, seed)[0]
            if len(frames) >= count:
                break
    return frames[:count]


def _render_job(job):
    # Tubes travel as lists and become arrays in the parent, so the GT pickle is byte-identical
    # whatever ``workers``: unpickled arrays carry their own dtype objects, which pickle writes out again.
    tubes, n, info = render_video(*job)
    return [t.tolist() for t in tubes], n, info


def generate_dataset(out, preset="bench", seed=0, force=False, workers=1, progress=False):
    """Write the synthetic dataset ``preset`` for ``seed`` to folder ``out`` (created atomically).

    ``out`` must not exist or be empty unless ``force``. ``workers`` > 1 renders videos in
    that many processes; the result is identical. Returns ``out``.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset {preset!r}; expected one of {sorted(PRESETS)}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    config = PRESETS[preset]
    plans = plan_videos(config)
    with staged_dir(out, force) as tmp, contextlib.ExitStack() as stack:
        jobs = [(os.path.join(tmp, FRAMES_DIR, *p.name.split("/")), p, config, seed) for p in plans]
        mapper = map if workers == 1 else stack.enter_context(ProcessPoolExecutor(workers)).map
        results = list(tqdm(mapper(_render_job, jobs), total=len(jobs), desc=f"synth {preset}", unit="video",
                            file=sys.stderr, disable=not progress))
        gt = {"labels": [m.name for m in CLASSES], "gttubes": {}, "nframes": {}, "resolution": {},
              "train_videos": [[p.name for p in plans if not p.test]],
              "test_videos": [[p.name for p in plans if p.test]]}
        videos = {}
        for plan, (tubes, n, info) in zip(plans, results):
            gt["gttubes"][plan.name] = {plan.label: [np.array(t, dtype=np.float32) for t in tubes]}
            gt["nframes"][plan.name] = n
            gt["resolution"][plan.name] = (config.height, config.width)
            videos[plan.name] = info
        gt_file, json_file = write_gt(tmp, DATASET_NAME, gt)
        write_json(os.path.join(tmp, METADATA_FILE), {
            "generator": "edge_stad.data.synth", "generator_version": GENERATOR_VERSION, "edge_stad": __version__,
            "preset": preset, "seed": seed, "preset_config": config._asdict(),
            "classes": [{"name": m.name, "description": m.description} for m in CLASSES],
            "ground_truth": os.path.basename(gt_file), "ground_truth_json": os.path.basename(json_file),
            "videos": videos,
        })
    return os.path.abspath(os.fspath(out))
