"""Train Lu et al.'s attention score fusion over two frozen video classifiers (``edge-stad distill fuse``).

Both streams are frozen (the paper's setting), so their class scores are computed once per clip and the
fusion module trains on those: cross-entropy on the log of the fused probabilities. Evaluation compares,
on held-out clips, the top-1 accuracy of each stream alone, of their plain average (the paper's
"+Flow" column) and of the attention fusion.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from edge_stad.errors import ConfigError
from edge_stad.models.checkpoint import save_checkpoint
from edge_stad.models.score_fusion import AttentionScoreFusion
from edge_stad.train.distill import _device, _optimizer
from edge_stad.train.trainer import epoch_batches


@torch.no_grad()
def stream_scores(model, clips, key, batch_size=8, device="cpu"):
    """Softmax scores ``(N, C)`` of a frozen classifier on the ``key`` input of every item, and the labels."""
    model.to(device).eval()
    scores, labels = [], []
    for batch in torch.utils.data.DataLoader(clips, batch_size=batch_size):
        scores.append(torch.softmax(model(batch[key].to(device))[0], 1).cpu())
        labels.append(batch["label"])
    return torch.cat(scores), torch.cat(labels)


def accuracies(fusion, rgb, motion, labels):
    """Top-1 accuracy (%) of the RGB stream, the motion stream, their average and the attention fusion."""
    with torch.no_grad():
        fused = fusion.eval()(rgb, motion)[0]
    return {name: 100.0 * float((s.argmax(1) == labels).float().mean())
            for name, s in (("rgb", rgb), ("motion", motion), ("average", (rgb + motion) / 2), ("attention", fused))}


def fit_fusion(rgb, motion, labels, cfg, hidden=64):
    """Fit an :class:`AttentionScoreFusion` to frozen scores ``(N, C)`` of both streams and their labels:
    cross-entropy on the log of the fused probabilities. Returns ``(fusion, losses per step, epochs)``."""
    if not (cfg.epochs or cfg.max_steps):
        raise ConfigError("set epochs or max_steps: training needs an end")
    if len(labels) < cfg.batch_size:
        raise ConfigError(f"{len(labels)} training clips are fewer than one batch of {cfg.batch_size}")
    torch.manual_seed(cfg.seed)
    fusion = AttentionScoreFusion(rgb.shape[1], hidden)
    optimizer = _optimizer(cfg, fusion.parameters())
    history, epoch = [], 0
    fusion.train()
    while not ((cfg.epochs and epoch >= cfg.epochs) or (cfg.max_steps and len(history) >= cfg.max_steps)):
        for index in epoch_batches(len(labels), cfg.batch_size, cfg.seed, epoch):
            fused = fusion(rgb[index], motion[index])[0]
            loss = F.nll_loss(torch.log(fused.clamp(min=1e-12)), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(loss.item())
            if cfg.max_steps and len(history) >= cfg.max_steps:
                break
        epoch += 1
    return fusion.eval(), history, epoch


def train_fusion(rgb_model, motion_model, train_set, val_set, cfg, hidden=64):
    """:func:`fit_fusion` on the frozen streams' scores of ``train_set`` (items with both ``rgb`` and
    ``flow``); writes ``cfg.out/fusion.pt`` and returns the held-out accuracies and the losses."""
    device = _device(cfg)
    for clips in (train_set, val_set):
        clips.prepare(cfg.progress)
    scores = {}
    for name, clips in (("train", train_set), ("val", val_set)):
        (rgb, labels), (motion, _) = (stream_scores(rgb_model, clips, "rgb", cfg.batch_size, device),
                                      stream_scores(motion_model, clips, "flow", cfg.batch_size, device))
        scores[name] = rgb, motion, labels
    fusion, history, epochs = fit_fusion(*scores["train"], cfg, hidden)
    path = os.path.join(cfg.out, "fusion.pt")
    save_checkpoint(path, fusion, kind="fusion", step=len(history), epoch=epochs,
                    labels=list(train_set.dataset.labels))
    tail = min(10, len(history))
    return {"checkpoint": path, "steps": len(history), "epochs": epochs,
            "first_loss": float(np.mean(history[:tail])), "final_loss": float(np.mean(history[-tail:])),
            "val_accuracy": accuracies(fusion, *scores["val"])}
