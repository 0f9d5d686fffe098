"""AMMA's training loss: CornerNet focal loss on the heatmap, L1 on movement and size.

``loss = hm + mov + 0.1 * wh`` (paper eq. 7). The heatmap is already a sigmoid output;
it is clamped to [1e-4, 1 - 1e-4] before the logs. The focal loss is normalised by the
number of positive cells in the batch; each L1 term by the number of supervised values
(objects x 2K), as the reference does. Under data parallelism those counts must be the
global batch's (see :func:`normalizers`), or every process would weigh its objects
differently from one process training on the whole batch.
"""
import torch

HM_CLAMP = 1e-4
WEIGHTS = {"hm": 1.0, "mov": 1.0, "wh": 0.1}


def normalizers(batch):
    """``float tensor [positive heatmap cells, supervised values per L1 term]`` of a batch."""
    positives = batch["hm"].eq(1).sum()
    values = batch["mask"].sum() * batch["mov"].shape[2]
    return torch.stack([positives, values]).float()


def focal_loss(pred, target, num_pos=None, alpha=2, beta=4):
    pred = pred.clamp(HM_CLAMP, 1 - HM_CLAMP)
    pos = target.eq(1).float()
    neg = 1 - pos
    pos_loss = (torch.log(pred) * torch.pow(1 - pred, alpha) * pos).sum()
    neg_loss = (torch.log(1 - pred) * torch.pow(pred, alpha) * torch.pow(1 - target, beta) * neg).sum()
    num_pos = pos.sum() if num_pos is None else num_pos
    if num_pos == 0:
        return -neg_loss
    return -(pos_loss + neg_loss) / num_pos


def gather_map(output, index):
    """``output (B, C, h, w)`` read at flat cells ``index (B, M, C)`` (one cell per channel) -> ``(B, M, C)``."""
    b, c = output.shape[:2]
    flat = output.reshape(b, c, -1).permute(0, 2, 1)  # (B, hw, C)
    return flat.gather(1, index)


def l1_loss(output, target, mask, index, count=None):
    """Masked L1 between ``output`` read at ``index (B, M, C)`` and ``target (B, M, C)``."""
    pred = gather_map(output, index)
    m = mask.unsqueeze(2).expand_as(pred).float()
    count = m.sum() if count is None else count
    return (pred * m - target * m).abs().sum() / (count + 1e-4)


def amma_loss(output, batch, counts=None):
    """Total loss and its parts; ``counts`` from :func:`normalizers` (default: this batch's)."""
    positives, values = normalizers(batch) if counts is None else counts
    two_k = batch["mov"].shape[2]
    key_index = batch["index"].unsqueeze(2).expand(-1, -1, two_k)
    parts = {
        "hm": focal_loss(output["hm"], batch["hm"], positives),
        "mov": l1_loss(output["mov"], batch["mov"], batch["mask"], key_index, values),
        "wh": l1_loss(output["wh"], batch["wh"], batch["mask"], batch["index_all"], values),
    }
    total = sum(WEIGHTS[k] * v for k, v in parts.items())
    return total, parts
