"""YOWO's region loss for MENet's head (YOWO ``core/region_loss.py``, ``RegionLoss``).

The head output is ``(B, A*(5+C), h, w)``; per anchor ``tx, ty, tw, th, conf, cls_0..``
(see :mod:`edge_stad.core.region_decode`). Ground truth is ``boxes (B, M, 5)`` rows
``x1, y1, x2, y2, label`` in [0, 1] image coordinates; rows with ``label < 0`` are
padding. Each GT box is handled by the cell holding its centre and, there, by the anchor
whose shape overlaps it most (first anchor on ties). The terms, as YOWO sums them:

* box: ``coord_scale * sum SmoothL1 / 2`` over responsible anchors of
  ``sigmoid(tx, ty)`` against the centre's offset in its cell and ``tw, th`` against
  ``log(size / anchor)`` (grid cells);
* obj: ``sum w * (sigmoid(conf) - target)^2 / 2`` with target = IoU of the (detached)
  predicted box with its GT and ``w = object_scale`` for responsible anchors; target 0
  and ``w = noobject_scale`` for the others, unless the anchor's predicted box overlaps
  some GT of its image by more than ``ignore_threshold`` (then ``w = 0``);
* cls: ``class_scale * sum -(1 - p)^gamma * log p`` (focal loss, p the softmax
  probability of the GT class) over responsible anchors.

Differences from YOWO: every term is divided by the batch size B, so the value does not
grow with the batch (YOWO returns the plain sum and, with gradient accumulation, sums
over TOTAL_BATCH_SIZE images: multiply by B for YOWO's number and scale learning rates
tuned on it accordingly); log p comes from ``log_softmax`` (YOWO takes the log of the
softmax, which can reach -inf); a centre on the right or bottom edge (x = 1) goes to the
last cell (YOWO indexes past the grid). When two GT boxes of an image pick the same
anchor of the same cell, the later one wins, as in YOWO.
"""
from typing import Dict, NamedTuple, Tuple

import torch
import torch.nn.functional as F

from edge_stad.core.region_decode import check_anchors
from edge_stad.errors import ConfigError, DataError

OBJECT_SCALE, NOOBJECT_SCALE, CLASS_SCALE, COORD_SCALE = 5.0, 1.0, 1.0, 1.0  # YOWO cfg/ucf24.yaml, jhmdb.yaml
IGNORE_THRESHOLD = 0.6


class RegionTargets(NamedTuple):
    """Dense per-anchor targets, each ``(B, A, h, w)`` except ``box`` ``(B, A, h, w, 4)``."""

    responsible: torch.Tensor  # bool: this anchor predicts a GT box
    noobj: torch.Tensor  # bool: pushed towards objectness 0 (not responsible, not ignored)
    box: torch.Tensor  # tx offset, ty offset, log(w / anchor w), log(h / anchor h)
    conf: torch.Tensor  # IoU of the predicted box with its GT (responsible anchors)
    label: torch.Tensor  # int64 class (responsible anchors)


def _iou_cxcywh(a, b):
    """IoU of ``(..., 4)`` boxes ``cx, cy, w, h`` broadcast against each other (YOWO's ``bbox_ious``)."""
    w = (torch.min(a[..., 0] + a[..., 2] / 2, b[..., 0] + b[..., 2] / 2)
         - torch.max(a[..., 0] - a[..., 2] / 2, b[..., 0] - b[..., 2] / 2)).clamp(min=0)
    h = (torch.min(a[..., 1] + a[..., 3] / 2, b[..., 1] + b[..., 3] / 2)
         - torch.max(a[..., 1] - a[..., 3] / 2, b[..., 1] - b[..., 3] / 2)).clamp(min=0)
    inter = w * h
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def _check_boxes(boxes, batch, num_classes):
    if boxes.dim() != 3 or boxes.shape[0] != batch or boxes.shape[2] != 5:
        raise DataError(f"boxes must be (B={batch}, M, 5) rows x1, y1, x2, y2, label, got {tuple(boxes.shape)}")
    valid = boxes[..., 4] >= 0
    rows = boxes[valid]
    bad = (~torch.isfinite(rows).all(dim=1) | (rows[:, 2] <= rows[:, 0]) | (rows[:, 3] <= rows[:, 1])
           | (rows[:, 4] >= num_classes) | (rows[:, 4] != rows[:, 4].round()))
    if bad.any():
        raise DataError(f"GT rows must be finite x1 < x2, y1 < y2 (normalised) and an integer label in "
                        f"[0, {num_classes}) (label < 0: padding); bad row: {rows[bad][0].tolist()}")
    return valid


def region_targets(pred_boxes, boxes, anchors, num_classes, ignore_threshold=IGNORE_THRESHOLD):
    """:class:`RegionTargets` of predicted ``pred_boxes (B, A, h, w, 4)`` (cx, cy, w, h in cells) and GT ``boxes``.

    ``boxes (B, M, 5)`` as in the module docstring; ``anchors``: A ``[w, h]`` pairs in cells.
    """
    pred_boxes = pred_boxes.detach()
    B, A, h, w, _ = pred_boxes.shape
    device = pred_boxes.device
    anchors = check_anchors(anchors)
    if len(anchors) != A:
        raise ConfigError(f"pred_boxes has {A} anchors per cell, anchors gives {len(anchors)}")
    valid = _check_boxes(boxes, B, num_classes)
    scale = torch.tensor([w, h, w, h], dtype=pred_boxes.dtype, device=device)
    corners = boxes[..., :4].to(pred_boxes.dtype)
    gt = torch.cat([(corners[..., :2] + corners[..., 2:]) / 2, corners[..., 2:] - corners[..., :2]], dim=-1) * scale

    # Ignore: anchors whose predicted box already overlaps a GT of their image well enough.
    overlap = _iou_cxcywh(pred_boxes.reshape(B, -1, 1, 4), gt[:, None])  # (B, A*h*w, M)
    best = F.pad(overlap.masked_fill(~valid[:, None], 0), (0, 1)).amax(dim=2)  # the pad: images without GT
    noobj = (best <= ignore_threshold).reshape(B, A, h, w)

    b, m = torch.nonzero(valid, as_tuple=True)
    g = gt[b, m]
    i = g[:, 0].floor().to(torch.int64).clamp(0, w - 1)
    j = g[:, 1].floor().to(torch.int64).clamp(0, h - 1)
    anchors = torch.as_tensor(anchors, dtype=pred_boxes.dtype, device=device)
    shapes = torch.cat([torch.zeros_like(anchors), anchors], dim=1)
    a = _iou_cxcywh(torch.cat([torch.zeros_like(g[:, 2:]), g[:, 2:]], dim=1)[:, None], shapes[None]).argmax(dim=1)
    flat = ((b * A + a) * h + j) * w + i
    order = b * boxes.shape[1] + m  # the GT visited last (YOWO: image, then row) owns a shared anchor
    owner = torch.full((B * A * h * w,), -1, dtype=order.dtype, device=device).scatter_reduce(0, flat, order, "amax")
    win = owner[flat] == order
    b, a, j, i, g, m = b[win], a[win], j[win], i[win], g[win], m[win]

    responsible = torch.zeros(B, A, h, w, dtype=torch.bool, device=device)
    responsible[b, a, j, i] = True
    box = pred_boxes.new_zeros(B, A, h, w, 4)
    box[b, a, j, i] = torch.stack([g[:, 0] - i, g[:, 1] - j, torch.log(g[:, 2] / anchors[a, 0]),
                                   torch.log(g[:, 3] / anchors[a, 1])], dim=1)
    conf = pred_boxes.new_zeros(B, A, h, w)
    conf[b, a, j, i] = _iou_cxcywh(pred_boxes[b, a, j, i], g)
    label = torch.zeros(B, A, h, w, dtype=torch.int64, device=device)
    label[b, a, j, i] = boxes[b, m, 4].to(torch.int64)
    return RegionTargets(responsible, noobj & ~responsible, box, conf, label)


def region_loss(output, boxes, num_classes, anchors, object_scale=OBJECT_SCALE, noobject_scale=NOOBJECT_SCALE,
                class_scale=CLASS_SCALE, coord_scale=COORD_SCALE, ignore_threshold=IGNORE_THRESHOLD,
                gamma=2.0) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``(total, {"box", "obj", "cls"})`` per image of a batch, all differentiable; defaults are YOWO's."""
    anchors = check_anchors(anchors)
    A, C = len(anchors), int(num_classes)
    if output.dim() != 4 or output.shape[1] != A * (5 + C):
        raise ConfigError(f"region output must be (B, A*(5+C), h, w) = (B, {A * (5 + C)}, h, w) for A={A} anchors "
                          f"and C={C} classes, got shape {tuple(output.shape)}")
    if not torch.isfinite(output).all():
        raise ConfigError("region output holds NaN or inf; expected finite logits")
    B, _, h, w = output.shape
    out = output.reshape(B, A, 5 + C, h, w)
    xy = torch.sigmoid(out[:, :, :2]).permute(0, 1, 3, 4, 2)  # (B, A, h, w, 2)
    twh = out[:, :, 2:4].permute(0, 1, 3, 4, 2)
    conf = torch.sigmoid(out[:, :, 4])
    logits = out[:, :, 5:].permute(0, 1, 3, 4, 2)  # (B, A, h, w, C)

    anchor_wh = torch.as_tensor(anchors, dtype=output.dtype, device=output.device).view(1, A, 1, 1, 2)
    gy, gx = torch.meshgrid(torch.arange(h, device=output.device), torch.arange(w, device=output.device),
                            indexing="ij")
    cells = torch.stack([gx, gy], dim=-1).to(output.dtype)
    pred = torch.cat([xy.detach() + cells, twh.detach().exp() * anchor_wh], dim=-1)
    t = region_targets(pred, boxes.to(output.device), anchors, C, ignore_threshold)

    r = t.responsible
    box = coord_scale * F.smooth_l1_loss(torch.cat([xy, twh], dim=-1)[r], t.box[r], reduction="sum") / 2
    obj = (object_scale * ((conf[r] - t.conf[r]) ** 2).sum() + noobject_scale * (conf[t.noobj] ** 2).sum()) / 2
    log_p = F.log_softmax(logits[r], dim=-1).gather(1, t.label[r][:, None]).squeeze(1)
    cls = class_scale * (-(1 - log_p.exp()) ** gamma * log_p).sum()
    parts = {"box": box / B, "obj": obj / B, "cls": cls / B}
    return parts["box"] + parts["obj"] + parts["cls"], parts
