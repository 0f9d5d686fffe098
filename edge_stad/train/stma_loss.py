"""STMA's training loss: the paper's eq. (3), (5) and (7)-(9).

``loss = 0.01 * cls + 1 * hm + 0.5 * (mov + 0.1 * wh)`` with

* ``hm``: CenterNet's focal loss (alpha 2, beta 4, as MOC) over the heatmap, normalised by the
  number of positive cells;
* ``mov``: L1 between the movement map and its target at every cell of each instance's Gaussian
  area, averaged over the 2K values of a cell, weighted (:mod:`edge_stad.data.stma_targets`);
* ``wh``: ``1 - GIoU`` between the box a cell predicts (``x - l, y - t, x + r, y + b``) and its
  target box, weighted, averaged over the K frames;
* ``cls``: cross-entropy of the clip's class logits against the share of its instances per class.

The weights of each instance's cells sum to ``log(area)`` (TTFNet's weights); the paper divides each
instance's weighted sum by its ``N_i`` samples and the total by the ``n`` instances, and its ``w`` is
``N_i`` times TTFNet's: so ``mov`` and ``wh`` are the weighted sums over all cells divided by ``n``.
Under data parallelism, positives, instances and clips are the global batch's (:func:`normalizers`).
"""
import torch
import torch.nn.functional as F

from edge_stad.train.losses import focal_loss

WEIGHTS = {"hm": 1.0, "mov": 0.5, "wh": 0.5 * 0.1, "cls": 0.01}


def normalizers(batch):
    """``float tensor [positive heatmap cells, instances, clips]`` of a batch."""
    return torch.stack([batch["hm"].eq(1).sum().float(), batch["num"].sum().float(),
                        torch.tensor(float(len(batch["num"])), device=batch["num"].device)])


def giou(a, b, eps=1e-7):
    """Generalised IoU of boxes ``(..., 4)`` ``x1, y1, x2, y2`` (Rezatofighi et al.), elementwise."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    return inter / (union + eps) - (hull - union) / (hull + eps)


def cell_boxes(ltrb):
    """``l, t, r, b`` maps ``(B, K, 4, h, w)`` -> the boxes each cell predicts, ``(B, K, 4, h, w)``, in cells."""
    h, w = ltrb.shape[-2:]
    y = torch.arange(h, device=ltrb.device, dtype=ltrb.dtype).view(h, 1)
    x = torch.arange(w, device=ltrb.device, dtype=ltrb.dtype).view(1, w)
    return torch.stack([x - ltrb[:, :, 0], y - ltrb[:, :, 1], x + ltrb[:, :, 2], y + ltrb[:, :, 3]], 2)


def size_loss(wh, box, weight):
    """Weighted ``sum(1 - GIoU)`` over the cells with a weight, divided by K (the caller divides by ``n``)."""
    b, k4, h, w = wh.shape
    k = k4 // 4
    cells = weight > 0
    pred = cell_boxes(wh.reshape(b, k, 4, h, w)).permute(0, 1, 3, 4, 2)[cells]
    target = box.permute(0, 1, 3, 4, 2)[cells]
    return (weight[cells] * (1 - giou(pred, target))).sum() / k


def stma_loss(output, batch, counts=None):
    """Total loss and its parts (unweighted); ``counts`` from :func:`normalizers` (default: this batch's)."""
    positives, instances, clips = normalizers(batch) if counts is None else counts
    n = instances.clamp(min=1)
    parts = {"hm": focal_loss(output["hm"], batch["hm"], positives)}
    l1 = (output["mov"] - batch["mov"]).abs().mean(1)
    parts["mov"] = (batch["mov_weight"] * l1).sum() / n
    parts["wh"] = size_loss(output["wh"], batch["box"], batch["wh_weight"]) / n
    if "cls" in output:
        parts["cls"] = -(batch["cls"] * F.log_softmax(output["cls"], 1)).sum() / clips.clamp(min=1)
    total = sum(WEIGHTS[k] * v for k, v in parts.items())
    return total, parts
