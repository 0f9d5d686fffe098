"""Motion distillation for MENet's 3D branch: a flow teacher, then an RGB student that mimics it.

The recipe of MARS (Crasto et al.), which MENet uses (Liu et al., section on motion learning): train a
3D-CNN video classifier on optical flow, freeze it, and train the RGB classifier with
``CE + alpha * MSE(pooled student feature, pooled teacher feature)``, alpha = 50. The
student then needs no flow, but has learnt to see motion; its backbone initialises
MENet's 3D branch (:func:`export_backbone_state`). With ``levels`` the mimicry term is
seed 003's instead (section 4.3): a multi-level L1 (MAE) over the chosen stage outputs
and the pooled feature, plus a Gram-matrix (style) L1 over the stage outputs,
``CE + alpha * (L_MAE + L_G)``. Where student and teacher widths differ, 1x1x1 conv
adapters (FitNets) map the student's channels to the teacher's; they are trained with
the student and discarded afterwards.

Video classification data comes from an ACT detection dataset: a video's class is the
label of its tubes and clips are sampled inside its annotated span, so classes are
learnt from the action, not from the idle frames around it.
"""
import dataclasses
import os
import time
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_stad.errors import CheckpointError, ConfigError, DataError
from edge_stad.models.checkpoint import load_state_dict_checked, read_checkpoint, save_checkpoint
from edge_stad.preprocess import normalize_clip, resize
from edge_stad.train.trainer import epoch_batches

ALPHA = 50.0  # MARS's weight of the mimicry loss, kept by seed 003
MODALITY_CHANNELS = {"rgb": 3, "flow": 2}


# -- data ---------------------------------------------------------------------------------------

def video_label(dataset, video):
    """The class of ``video``: the single label of its tubes."""
    labels = sorted(dataset.tubes(video))
    if len(labels) != 1:
        raise DataError(f"video {video!r}: video classification needs tubes of exactly one label, found "
                        f"{[dataset.labels[i] for i in labels] or 'no tubes'}")
    return labels[0]


def annotated_span(dataset, video):
    """``(first, last)`` frame covered by any of ``video``'s tubes."""
    tubes = [t for ts in dataset.tubes(video).values() for t in ts]
    if not tubes:
        raise DataError(f"video {video!r}: no tubes, so no annotated span to sample clips from")
    return int(min(t[0, 0] for t in tubes)), int(max(t[-1, 0] for t in tubes))


class ClipDataset(torch.utils.data.Dataset):
    """Classification clips of ``videos``: ``{"rgb"?, "flow"?, "label"}`` items.

    ``rgb`` is ``(3, T, H, W)`` normalised as :func:`edge_stad.preprocess.normalize_clip`
    does; ``flow`` is ``(2, T, H, W)`` (dx, dy) scaled from +-bound pixels to [-1, 1] and
    needs ``flow``, a :class:`~edge_stad.data.flow.FlowCache` of the same ``size``. Each
    video gives ``clips_per_video`` items. Training clips start at a random frame of the
    annotated span (drawn from ``(seed, epoch, index)``, like the detector trainer's
    samples) and, with ``augment``, are mirrored (the flow's dx negated); evaluation clips
    are evenly spaced over the span. A span shorter than T repeats its last frame.
    """

    def __init__(self, dataset, videos, clip_len, size, modalities=("rgb",), flow=None, clips_per_video=1,
                 train=True, augment=False, seed=0):
        if clip_len < 1 or clips_per_video < 1:
            raise ConfigError(f"clip_len and clips_per_video must be >= 1, got {clip_len} and {clips_per_video}")
        unknown = set(modalities) - set(MODALITY_CHANNELS)
        if unknown or not modalities:
            raise ConfigError(f"modalities must be a non-empty subset of {sorted(MODALITY_CHANNELS)}, got "
                              f"{list(modalities)}")
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if "flow" in modalities and (flow is None or flow.size != self.size):
            raise ConfigError(f"flow clips need a FlowCache computed at the clip size {self.size}, got "
                              f"{None if flow is None else flow.size}")
        self.dataset, self.videos, self.flow = dataset, list(videos), flow
        self.clip_len, self.clips_per_video = clip_len, clips_per_video
        self.modalities, self.train, self.augment, self.seed = tuple(modalities), train, augment, seed
        self.labels = [video_label(dataset, v) for v in self.videos]
        self.spans = [annotated_span(dataset, v) for v in self.videos]
        self.epoch = 0

    def __len__(self):
        return len(self.videos) * self.clips_per_video

    def set_epoch(self, epoch):
        self.epoch = epoch

    def describe(self):
        """The settings a model trained on these clips expects (stored in its checkpoint)."""
        info = {"clip_len": self.clip_len, "input_size": list(self.size)}
        if self.flow is not None:
            info["flow"] = {"method": self.flow.method, "preset": self.flow.preset, "bound": self.flow.bound}
        return info

    def prepare(self, progress=True):
        """Compute the flow of every frame the clips can read (so that loader workers only read files)."""
        if "flow" in self.modalities:
            pairs = [(v, f) for v, (lo, hi) in zip(self.videos, self.spans) for f in range(lo, hi + 1)]
            self.flow.precompute(pairs, progress=progress)

    def clip(self, index):
        """``(video, frame numbers, mirrored)`` of item ``index``."""
        i, k = divmod(index, self.clips_per_video)
        lo, hi = self.spans[i]
        room = max(hi - self.clip_len + 1 - lo, 0)  # how far the start can move inside the span
        mirrored = False
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            start = lo + int(rng.integers(room + 1))
            mirrored = self.augment and bool(rng.random() < 0.5)
        elif self.clips_per_video == 1:
            start = lo + room // 2
        else:
            start = lo + round(k * room / (self.clips_per_video - 1))
        return self.videos[i], [min(start + t, hi) for t in range(self.clip_len)], mirrored

    def __getitem__(self, index):
        video, frames, mirrored = self.clip(index)
        item = {"label": np.int64(self.labels[index // self.clips_per_video])}
        if "rgb" in self.modalities:
            images = [resize(self.dataset.read_frame(video, f), self.size) for f in frames]
            t, (h, w) = len(frames), self.size
            rgb = normalize_clip(images).reshape(t, 3, h, w).transpose(1, 0, 2, 3)
            item["rgb"] = np.ascontiguousarray(rgb[..., ::-1] if mirrored else rgb)
        if "flow" in self.modalities:
            q = np.stack([self.flow.flow(video, f) for f in frames])  # (T, H, W, 2) uint8
            flow = q.transpose(3, 0, 1, 2).astype(np.float32) / 127.5 - 1.0
            if mirrored:
                flow = flow[..., ::-1] * np.array([-1, 1], np.float32)[:, None, None, None]
            item["flow"] = np.ascontiguousarray(flow)
        return item


# -- models -------------------------------------------------------------------------------------

class Classifier3D(nn.Module):
    """A 3D backbone, global average pooling and a linear layer: the video classifier of MARS.

    ``forward(x)`` returns ``(logits, pooled feature)``; with ``levels=True`` also the
    backbone's stage outputs (shallowest first), which the multi-level losses compare.
    """

    def __init__(self, backbone, num_classes):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, num_classes)
        self.config = {"name": "classifier3d", "backbone": type(backbone).__name__, "num_classes": num_classes}

    def forward(self, x, levels=False):
        maps = self.backbone.forward_levels(x) if levels else [self.backbone(x)]
        feature = maps[-1].mean(dim=(2, 3, 4))
        logits = self.fc(feature)
        return (logits, feature, maps) if levels else (logits, feature)


def build_classifier(backbone, num_classes, in_channels, width_mult=None):
    """A :class:`Classifier3D` on :mod:`edge_stad.models.backbones3d`'s ``backbone`` (e.g. ``shufflenetv2``).

    ``in_channels`` is 2 for a flow teacher, 3 for an RGB student.
    """
    from edge_stad.models.backbones3d import create_backbone_3d, resolve_width_3d

    width = resolve_width_3d(backbone, width_mult)
    model = Classifier3D(create_backbone_3d(backbone, width, in_channels), num_classes)
    model.config.update(backbone=backbone, in_channels=in_channels, width_mult=width)
    return model


def load_classifier(path, model=None):
    """Load a checkpoint of :func:`train_teacher` / :func:`distill_student` (``weights_only``).

    Into ``model`` when given, else into the model its config describes (built with
    :func:`build_classifier`). Returns ``(model, meta)``.
    """
    ckpt = read_checkpoint(path)
    config = ckpt["model_config"]
    if ckpt["layout"] != "edge_stad" or config.get("name") != "classifier3d":
        raise CheckpointError(f"{path} is not a 3D classifier checkpoint of edge-stad distill")
    if model is None:
        try:
            model = build_classifier(config["backbone"], config["num_classes"], config["in_channels"],
                                     config["width_mult"])
        except (ConfigError, KeyError) as e:
            raise CheckpointError(f"{path} describes a classifier build_classifier cannot build ({e}); pass the "
                                  "model to load it into") from None
    load_state_dict_checked(model, ckpt["state_dict"], source=path)
    return model, ckpt["meta"]


def export_backbone_state(student):
    """The student's backbone weights named as MENet's 3D branch expects them (``backbone_3d.`` prefix)."""
    return {"backbone_3d." + k: v for k, v in student.backbone.state_dict().items()}


# -- losses -------------------------------------------------------------------------------------

def gram(x):
    """Per-sample Gram matrices ``(B, C, C)`` of ``(B, C, ...)`` features, averaged over the ``T * H * W`` positions.

    Channel correlations: invariant to where things are, sensitive to which channels fire
    together (the "internal relationship" seed 003 distils).
    """
    f = x.flatten(2)
    return f @ f.transpose(1, 2) / f.shape[2]


class DistillLoss(nn.Module):
    """``CE + alpha * mimicry`` of a student's features against a frozen teacher's.

    ``levels`` empty: MARS, ``MSE`` of the pooled features. Otherwise seed 003: the mean of
    per-level L1 (mean over elements) over the listed stage indices (0 = shallowest) and
    the pooled feature, plus the Gram L1 averaged over the listed stages. The Gram L1 is a
    mean over the C x C entries of matrices averaged over positions: the reconstruction in
    the loss as we read Lu et al. (divide by C*T*H*W, sum over entries) is this times C, which made
    the 1024-channel last level of ShuffleNetV2-0.25x dominate (Gram term 45, x alpha
    = 2200, against a CE of 2.1, measured); the mean keeps every level on the MAE's
    scale. Channel lists are the backbones' ``stage_channels``; an adapter exists only
    for a level whose widths differ.
    """

    def __init__(self, student_channels, teacher_channels, student_features, teacher_features, alpha=ALPHA,
                 levels=()):
        super().__init__()
        self.alpha, self.levels = float(alpha), tuple(levels)
        depth = min(len(student_channels), len(teacher_channels))
        bad = [i for i in self.levels if not 0 <= i < depth]
        if bad:
            raise ConfigError(f"distillation levels {bad} do not exist: student and teacher have {depth} "
                              "comparable stages, numbered from 0")
        self.adapters = nn.ModuleDict({
            str(i): nn.Conv3d(student_channels[i], teacher_channels[i], 1)
            for i in self.levels if student_channels[i] != teacher_channels[i]})
        # a 1x1x1 conv on a pooled vector is a linear layer
        self.pooled_adapter = (nn.Linear(student_features, teacher_features)
                               if student_features != teacher_features else nn.Identity())

    def forward(self, logits, labels, student, teacher):
        """``student``/``teacher``: ``(pooled feature, stage maps)`` (the maps only with ``levels``).

        Returns ``(total, {part: tensor})``.
        """
        ce = F.cross_entropy(logits, labels)
        pooled = self.pooled_adapter(student[0])
        if not self.levels:
            mimic = F.mse_loss(pooled, teacher[0])
            return ce + self.alpha * mimic, {"ce": ce, "mse": mimic}
        maes, grams = [F.l1_loss(pooled, teacher[0])], []
        for i in self.levels:
            s, t = student[1][i], teacher[1][i]
            if s.shape[2:] != t.shape[2:]:
                raise ConfigError(f"stage {i}: student map {tuple(s.shape[2:])} and teacher map "
                                  f"{tuple(t.shape[2:])} (T, H, W) differ; distil only stages of equal size")
            if str(i) in self.adapters:
                s = self.adapters[str(i)](s)
            maes.append(F.l1_loss(s, t))
            grams.append(F.l1_loss(gram(s), gram(t)))
        mae, g = torch.stack(maes).mean(), torch.stack(grams).mean()
        return ce + self.alpha * (mae + g), {"ce": ce, "mae": mae, "gram": g}


# -- training -----------------------------------------------------------------------------------

@dataclasses.dataclass
class FitConfig:
    """Optimisation options shared by :func:`train_teacher` and :func:`distill_student`.

    Training stops at whichever of ``epochs``, ``max_steps`` and ``time_budget``
    (minutes) comes first. ``lr`` None: 0.1 for SGD (MARS, seed 003), 1e-3 for Adam.
    """

    out: str
    epochs: Optional[int] = 10
    max_steps: Optional[int] = None
    time_budget: Optional[float] = None
    batch_size: int = 8
    optimizer: str = "sgd"
    lr: Optional[float] = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    workers: int = 0
    device: Optional[str] = None
    progress: bool = True


def _optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr or 0.1, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr or 1e-3, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optimizer must be sgd or adam, got {cfg.optimizer!r}")


def _device(cfg):
    return torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))


@torch.no_grad()
def clip_accuracy(model, clips, key, batch_size=8, device="cpu"):
    """Top-1 accuracy (%) of ``model`` on the ``key`` input ("rgb" or "flow") of every item of ``clips``."""
    was_training = model.training
    model.eval()
    correct = 0
    for batch in torch.utils.data.DataLoader(clips, batch_size=batch_size):
        logits = model(batch[key].to(device))[0]
        correct += int((logits.argmax(1).cpu() == batch["label"]).sum())
    model.train(was_training)
    return 100.0 * correct / max(len(clips), 1)


def _fit(model, trainable, step_loss, train_set, val_set, key, cfg, name, kind):
    """The loop of both stages: budget, progress, checkpoints, measured numbers."""
    if not (cfg.epochs or cfg.max_steps or cfg.time_budget):
        raise ConfigError("set epochs, max_steps or time_budget: training needs an end")
    if len(train_set) < cfg.batch_size:
        raise ConfigError(f"{len(train_set)} training clips are fewer than one batch of {cfg.batch_size}")
    from tqdm import tqdm

    torch.set_flush_denormal(True)  # random-init nets produce denormals that slow CPUs ~20x
    device = _device(cfg)
    model.to(device).train()
    for clips in (train_set, val_set):
        clips.prepare(cfg.progress)
    optimizer = _optimizer(cfg, trainable)
    path = os.path.join(cfg.out, name)
    history, parts_seen, step, epoch, began = [], {}, 0, 0, time.monotonic()
    bar = tqdm(total=cfg.max_steps, desc=kind, unit="step", dynamic_ncols=True, disable=not cfg.progress)

    def save():
        save_checkpoint(path, model, kind=kind, labels=list(train_set.dataset.labels), step=step, epoch=epoch,
                        data=train_set.describe())

    done = False
    while not done:
        train_set.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(train_set, num_workers=cfg.workers,
                                             batch_sampler=epoch_batches(len(train_set), cfg.batch_size, cfg.seed,
                                                                         epoch))
        for batch in loader:
            total, parts = step_loss({k: v.to(device) for k, v in batch.items()})
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            step += 1
            history.append(total.item())
            for part, value in parts.items():
                parts_seen.setdefault(part, []).append(value.item())
            bar.set_postfix(loss=f"{history[-1]:.3f}", **{k: f"{v[-1]:.3f}" for k, v in parts_seen.items()})
            bar.update(1)
            if (cfg.max_steps and step >= cfg.max_steps) or \
                    (cfg.time_budget and time.monotonic() - began > 60 * cfg.time_budget):
                done = True
                break
        epoch += 1
        done = done or bool(cfg.epochs and epoch >= cfg.epochs)
        save()
    bar.close()
    seconds = time.monotonic() - began
    tail = min(10, len(history))
    result = {"checkpoint": path, "steps": step, "epochs": epoch, "seconds": round(seconds, 2),
              "first_loss": float(np.mean(history[:tail])), "final_loss": float(np.mean(history[-tail:])),
              "val_accuracy": clip_accuracy(model, val_set, key, cfg.batch_size, device)}
    result.update({f"final_{k}": float(np.mean(v[-tail:])) for k, v in parts_seen.items()})
    return result


def train_teacher(model, train_set, val_set, cfg):
    """Train the flow classifier ``model`` with cross-entropy; writes ``cfg.out/teacher.pt``.

    ``train_set``/``val_set``: :class:`ClipDataset` with the ``flow`` modality. Returns the
    measured numbers (losses averaged over the first/last 10 steps, held-out clip accuracy %).
    """

    def step_loss(batch):
        ce = F.cross_entropy(model(batch["flow"])[0], batch["label"])
        return ce, {}

    return _fit(model, list(model.parameters()), step_loss, train_set, val_set, "flow", cfg, "teacher.pt",
                "teacher")


def distill_student(student, teacher, train_set, val_set, cfg, alpha=ALPHA, levels: Sequence[int] = ()):
    """Train the RGB classifier ``student`` to classify and to mimic the flow ``teacher`` (frozen in place).

    ``train_set`` carries both modalities (the same clip as RGB and as flow); ``val_set``
    needs only RGB. ``levels`` selects seed 003's multi-level losses (see
    :class:`DistillLoss`). Writes ``cfg.out/student.pt``; returns the measured numbers
    with the final loss parts.
    """
    device = _device(cfg)
    teacher.to(device).eval().requires_grad_(False)
    loss = DistillLoss(student.backbone.stage_channels, teacher.backbone.stage_channels,
                       student.backbone.out_channels, teacher.backbone.out_channels, alpha, levels).to(device)
    multi = bool(loss.levels)

    def step_loss(batch):
        with torch.no_grad():
            t = teacher(batch["flow"], levels=multi)
        s = student(batch["rgb"], levels=multi)
        return loss(s[0], batch["label"], s[1:], t[1:])

    return _fit(student, list(student.parameters()) + list(loss.parameters()), step_loss, train_set, val_set,
                "rgb", cfg, "student.pt", "student")
