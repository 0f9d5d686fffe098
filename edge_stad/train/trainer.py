"""The trainer of every model family (AMMA, MENet, STMA; see :mod:`edge_stad.train.tasks`): presets,
progress, logs, validation, atomic checkpoints, exact resume, DDP.

Every random choice is a function of ``(seed, epoch, index)`` (the epoch's sample order,
each sample's augmentation), so a run resumed from a checkpoint, or split over DDP
processes, sees the same data as an uninterrupted one. A run budgeted in steps
(``max_steps``) is therefore a function of its configuration and its thread count: a busy
machine gives the same weights later (:func:`weights_sha256` fingerprints them), where a
``time_budget`` gives it fewer steps. ``last.pt`` is written at every
epoch end (and every ``checkpoint_every`` steps, and when the time budget runs out);
``best.pt`` whenever validation frame-mAP improves. Both hold the model config, the
training config, optimizer state and position, and are written atomically.

Distributed data-parallel: launch with ``torchrun --nproc_per_node N -m edge_stad.cli
train ...``; each process takes a disjoint slice of every epoch's order and gradients
are averaged by DDP (gloo on CPU, NCCL on GPU). On GPUs BatchNorm becomes SyncBatchNorm
(statistics over the global batch); on CPU, where PyTorch has no SyncBatchNorm, each
process normalises with its own batch. Only rank 0 logs, validates and saves.
"""
import contextlib
import csv
import dataclasses
import hashlib
import os
import time
from typing import Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from edge_stad.errors import ConfigError
from edge_stad.models import read_checkpoint, save_checkpoint
from edge_stad.models.checkpoint import load_state_dict_checked
from edge_stad.train.presets import default_backbone, lr_factor, preset
from edge_stad.train.tasks import task_for


@dataclasses.dataclass
class TrainConfig:
    """Options of ``edge-stad train``; ``None`` means "take it from the preset"."""

    data: str
    out: str = "runs/amma"
    preset: str = "synthetic"
    model: str = "amma"                  # amma, menet, menet-lite, stma, stma-lite, flow-fusion, flow-fusion-lite
    backbone: Optional[str] = None       # AMMA's and STMA's 2D / MENet's 3D backbone; None: the family's default
    split: int = 1
    K: Optional[int] = None
    clip_len: Optional[int] = None
    input_size: Optional[int] = None
    decoder: str = "conv"
    fusion_stages: int = 3
    srm_frames: Optional[int] = None     # MENet: frames of the short-range motion maps (0: RGB only)
    width_3d: Optional[float] = None     # MENet, STMA: width multiplier of the 3D branch (None: the backbone's default)
    backbone_3d: Optional[str] = None    # STMA: 3D branch ("none": without; None: the variant's)
    blocks: Optional[str] = None         # STMA: Table 2's blocks, of cal,me,sta,gr (None: all; "": the baseline)
    motion: Optional[str] = None         # AMMA: conv | diff; flow-fusion: flow | micro-motion | dis (None: flow)
    fusion: Optional[str] = None         # flow-fusion: m-concat | m-sum | m-average | stfp (None: m-concat)
    flow_unfreeze: Optional[int] = None  # flow-fusion: step from which detection losses train the flow network
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    optimizer: Optional[str] = None
    schedule: Optional[str] = None
    milestones: Optional[Tuple[int, ...]] = None
    gamma: Optional[float] = None
    warmup: Optional[int] = None         # steps of linear learning-rate warm-up (0: none)
    augment: Optional[bool] = None       # the reference's augmentation (False: frames as they are)
    seed: int = 317
    workers: int = 1
    max_steps: Optional[int] = None      # stop after this many optimisation steps in total
    time_budget: Optional[float] = None  # minutes of training (validation excluded)
    val_every: int = 1                   # epochs; 0 = never
    checkpoint_every: int = 0            # steps; 0 = epoch ends only
    log_every: int = 10
    pretrained: Optional[str] = None
    resume: Optional[str] = None
    device: Optional[str] = None
    progress: bool = True

    def resolved(self):
        """A copy with every ``None`` filled from the preset."""
        filled = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        filled["backbone"] = self.backbone or default_backbone(self.model)
        values = preset(self.preset, filled["backbone"], self.model)
        for key, value in values.items():
            if filled.get(key) is None:
                filled[key] = value
        filled["milestones"] = tuple(filled["milestones"])
        if filled["device"] is None:
            filled["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        return TrainConfig(**filled)


def _collate(items):
    return {key: torch.from_numpy(np.stack([item[key] for item in items])) for key in items[0]}


def weights_sha256(model):
    """sha256 over a model's state (names and raw bytes, in order): equal exactly for bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def epoch_batches(num_samples, batch_size, seed, epoch, rank=0, world=1):
    """This process's batches of sample indices for ``epoch`` (drop-last, equal count on every rank)."""
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    per_rank = num_samples // world
    mine = order[rank * per_rank:(rank + 1) * per_rank] if world > 1 else order
    count = len(mine) // batch_size
    return [mine[i * batch_size:(i + 1) * batch_size].tolist() for i in range(count)]


def _make_optimizer(cfg, model):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optimizer must be sgd, adam or adamw, got {cfg.optimizer!r}")


class Trainer:
    def __init__(self, cfg, dataset=None):
        from edge_stad.data.act import ActDataset

        self.cfg = cfg = cfg.resolved()
        self.task = task_for(cfg.model)
        torch.set_flush_denormal(True)  # random-init nets produce denormals that slow CPUs ~20x
        self.rank, self.world = _init_distributed(cfg.device)
        self.device = torch.device(cfg.device if cfg.device != "cuda" else f"cuda:{_local_rank()}")
        self.dataset = dataset if dataset is not None else ActDataset(cfg.data, split=cfg.split)
        torch.manual_seed(cfg.seed)
        self.model = self.task.build_model(cfg, self.dataset)
        if cfg.pretrained and not cfg.resume:
            self.task.load_pretrained(self.model, cfg.pretrained)
        self.model.to(self.device)
        self.samples = self.task.samples(cfg, self.dataset)
        if len(self.samples) < cfg.batch_size * self.world:
            raise ConfigError(f"{cfg.data} has {len(self.samples)} training samples, fewer than one batch of "
                              f"{cfg.batch_size} per process")
        self.optimizer = _make_optimizer(cfg, self.model)
        self.epoch, self.batch_in_epoch, self.step, self.best = 0, 0, 0, -1.0
        self.trained_seconds = 0.0
        self.clock = _TrainingClock()
        self.history = []
        if cfg.resume:
            self._restore(cfg.resume)
        self.net = self.model
        if self.world > 1:
            if self.device.type == "cuda":  # batch statistics over all GPUs, as one large batch would have
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # -- checkpoints --------------------------------------------------------------------------
    def _save(self, name):
        if self.rank != 0:
            return None
        path = os.path.join(self.cfg.out, name)
        save_checkpoint(path, self.model, train_config=_plain(dataclasses.asdict(self.cfg)), epoch=self.epoch,
                        batch_in_epoch=self.batch_in_epoch, step=self.step, best_frame_map=self.best,
                        trained_seconds=self.clock.elapsed(),
                        optimizer=self.optimizer.state_dict(), labels=list(self.dataset.gt.labels),
                        history=self.history)
        return path

    def _restore(self, path):
        ckpt = read_checkpoint(path)
        if ckpt["layout"] != "edge_stad" or "optimizer" not in ckpt["meta"]:
            raise ConfigError(f"{path} is not an edge_stad training checkpoint (no optimizer state to resume)")
        if ckpt["model_config"] != self.model.config:
            raise ConfigError(f"{path} holds a different model ({ckpt['model_config']}) than this run builds "
                              f"({self.model.config}); resume with the options it was trained with")
        load_state_dict_checked(self.model, ckpt["state_dict"], source=path)
        meta = ckpt["meta"]
        self.optimizer.load_state_dict(meta["optimizer"])
        self.epoch, self.batch_in_epoch, self.step = meta["epoch"], meta["batch_in_epoch"], meta["step"]
        self.best, self.history = meta["best_frame_map"], list(meta["history"])
        self.trained_seconds = float(meta.get("trained_seconds", 0.0))

    # -- training -----------------------------------------------------------------------------
    def _set_lr(self, progress):
        """Set the learning rate for ``progress`` epochs.

        A cosine schedule ends where training will: at ``max_steps`` if set, else at the end
        of the ``time_budget`` (so that a budgeted run anneals within its budget), else at
        the last epoch.
        """
        cfg = self.cfg
        if cfg.schedule == "cosine" and (cfg.max_steps or cfg.time_budget):
            done = self.step / cfg.max_steps if cfg.max_steps else self.clock.elapsed() / (60 * cfg.time_budget)
            progress = cfg.epochs * min(done, 1.0)
        lr = cfg.lr * lr_factor(cfg.schedule, progress, cfg.epochs, cfg.milestones, cfg.gamma, self.step,
                                cfg.warmup or 0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, batch):
        """One optimisation step on a collated batch; returns the loss parts as floats."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        # dropout masks (MENet's CFAM) from (seed, step, rank) too, so a resumed run draws the same ones
        torch.manual_seed(int(np.random.SeedSequence([self.cfg.seed, self.step, self.rank]).generate_state(1)[0]))
        self.task.prepare_step(self.model, self.step)
        output = self.task.forward(self.net, batch)
        total, parts = self.task.loss(self.model, output, batch, self.world)
        self.optimizer.zero_grad(set_to_none=True)
        (total * self.world).backward()
        self.optimizer.step()
        self.step += 1
        values = torch.stack([total.detach()] + [v.detach() for v in parts.values()])
        if self.world > 1:  # each process holds its share of the global loss
            dist.all_reduce(values)
        return dict(zip(["loss", *parts], values.tolist()))

    def fit(self):
        """Train to the configured epochs or time budget; returns ``{"last", "best", "history"}``."""
        cfg = self.cfg
        os.makedirs(cfg.out, exist_ok=True)
        log = _Log(cfg.out) if self.rank == 0 else None
        self.clock = clock = _TrainingClock(self.trained_seconds)
        stopped = False
        self.model.train()
        per_epoch = len(self.samples) // self.world // cfg.batch_size
        planned = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * per_epoch)
        bar = _bar(cfg.progress and self.rank == 0, planned, self.step)
        while self.epoch < cfg.epochs and not stopped:
            batches = epoch_batches(len(self.samples), cfg.batch_size, cfg.seed, self.epoch, self.rank, self.world)
            batches = batches[self.batch_in_epoch:]
            self.samples.set_epoch(self.epoch)
            loader = torch.utils.data.DataLoader(self.samples, batch_sampler=batches, num_workers=cfg.workers,
                                                 collate_fn=_collate)
            steps_per_epoch = self.batch_in_epoch + len(batches)
            for batch in loader:
                lr = self._set_lr(self.epoch + self.batch_in_epoch / steps_per_epoch)
                stats = self.train_step(batch)
                self.batch_in_epoch += 1
                if bar is not None:
                    bar.set_postfix(epoch=f"{self.epoch + 1}/{cfg.epochs}", lr=f"{lr:.2e}",
                                    **{k: f"{v:.3f}" for k, v in stats.items()})
                    bar.update(1)
                if log is not None and self.step % cfg.log_every == 0:
                    log.write("train", self.epoch + 1, self.step, clock.elapsed(), lr=lr, **stats)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self._save("last.pt")
                if (cfg.time_budget is not None and clock.elapsed() > 60 * cfg.time_budget) or \
                        (cfg.max_steps is not None and self.step >= cfg.max_steps):
                    stopped = True
                    break
            if not stopped:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            last_epoch = stopped or self.epoch == cfg.epochs
            if cfg.val_every and (last_epoch or self.epoch % cfg.val_every == 0):
                with clock.paused():
                    self._validate(log, clock.elapsed())
            self._save("last.pt")
            if self.world > 1:
                dist.barrier()
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        best = os.path.join(cfg.out, "best.pt")
        return {"last": os.path.join(cfg.out, "last.pt"), "best": best if os.path.exists(best) else None,
                "history": self.history, "stopped_early": stopped}

    def _validate(self, log, elapsed):
        if self.rank != 0:
            return
        from edge_stad.train.inference import evaluate_model

        bar = _bar(self.cfg.progress, len(self.dataset.test_videos), desc="validate", unit="video")
        result = evaluate_model(self.model, self.dataset, self.cfg.split, progress=bar)
        if bar is not None:
            bar.close()
        summary = result.to_json()
        record = {"epoch": self.epoch, "step": self.step, "frame_mAP": summary["frame_mAP"],
                  "video_mAP@0.5": summary["video_mAP"]["0.5"]}
        self.history.append(record)
        if log is not None:
            log.write("val", self.epoch, self.step, elapsed, frame_map=record["frame_mAP"],
                      video_map=record["video_mAP@0.5"])
            where = (f"epoch {self.epoch + 1} (stopped after {self.batch_in_epoch} batches)" if self.batch_in_epoch
                     else f"epoch {self.epoch}")
            log.echo(f"{where}, step {self.step}: frame-mAP@0.5 {record['frame_mAP']:.2f}  "
                     f"video-mAP@0.5 {record['video_mAP@0.5']:.2f}")
        if record["frame_mAP"] > self.best:
            self.best = record["frame_mAP"]
            self._save("best.pt")


class _TrainingClock:
    """Seconds spent training, validation excluded (what ``time_budget`` limits)."""

    def __init__(self, already=0.0):
        self._start, self._paused = time.monotonic() - already, 0.0

    def elapsed(self):
        return time.monotonic() - self._start - self._paused

    @contextlib.contextmanager
    def paused(self):
        began = time.monotonic()
        try:
            yield
        finally:
            self._paused += time.monotonic() - began


def _plain(values):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _bar(enabled, total, initial=0, desc="train", unit="step"):
    """A progress bar (with tqdm's ETA) or None; the training one spans the whole run, resumed at ``initial``."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False)


class _Log:
    """``metrics.csv`` (and TensorBoard scalars when ``tensorboard`` is installed)."""

    FIELDS = ("kind", "epoch", "step", "elapsed_s", "loss", "hm", "mov", "wh", "box", "obj", "cls", "lr",
              "frame_map", "video_map", "loc", "conf", "flow")

    def __init__(self, out):
        path = os.path.join(out, "metrics.csv")
        new = not os.path.exists(path)
        self.file = open(path, "a", newline="", encoding="utf-8")
        self.csv = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(out, "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, kind, epoch, step, elapsed, **values):
        self.csv.writerow(dict(kind=kind, epoch=epoch, step=step, elapsed_s=round(elapsed, 2), **values))
        self.file.flush()
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"{kind}/{key}", value, step)

    @staticmethod
    def echo(text):
        from tqdm import tqdm

        tqdm.write(text)

    def close(self):
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _local_rank():
    return int(os.environ.get("LOCAL_RANK", 0))


def _init_distributed(device):
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(_local_rank())
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()
