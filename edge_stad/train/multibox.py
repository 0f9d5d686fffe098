"""SSD's multibox loss (Liu et al. 2016), as RFBNet and ROAD train with it.

* matching: every prior takes the ground-truth box it overlaps most (continuous IoU against
  the prior's corners); each ground-truth box also claims the prior that overlaps it most,
  whatever the overlap (a later box wins a prior two boxes claim, as ``ssd.pytorch``'s loop);
  priors below ``threshold`` (0.5) are background;
* localisation: smooth L1 on the matched box encoded against its prior with the variances
  (0.1, 0.2), positives only;
* confidence: softmax cross-entropy (background = class 0) on the positives and the
  ``neg_pos`` (3) times as many negatives with the highest loss (hard-negative mining), per image;
* both sums are divided by the number of positives in the batch.

Ground truth comes as the frame samples give it: ``(B, M, 5)`` rows ``x1, y1, x2, y2, label``
in [0, 1] with label 0-based and padding rows labelled -1.
"""
import torch
import torch.nn.functional as F

from edge_stad.core.ssd_decode import VARIANCE

MATCH_THRESHOLD = 0.5
NEG_POS = 3


def point_form(priors):
    """``(P, 4)`` ``cx, cy, w, h`` -> ``x1, y1, x2, y2``."""
    return torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), 1)


def box_iou(a, b):
    """Continuous IoU ``(A, B)`` of corner boxes ``(A, 4)`` and ``(B, 4)``."""
    lo = torch.max(a[:, None, :2], b[None, :, :2])
    hi = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def encode(matched, priors, variance=VARIANCE):
    """Corner boxes ``(P, 4)`` matched to ``priors`` ``(P, 4)`` -> the offsets the network regresses."""
    centre = ((matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]) / (variance[0] * priors[:, 2:])
    size = torch.log((matched[:, 2:] - matched[:, :2]) / priors[:, 2:]) / variance[1]
    return torch.cat((centre, size), 1)


def match(truths, labels, priors, threshold=MATCH_THRESHOLD, variance=VARIANCE):
    """One image: ground-truth corner boxes ``(G, 4)`` and 0-based labels ``(G,)`` -> encoded
    targets ``(P, 4)`` and class targets ``(P,)`` (0 = background, else label + 1)."""
    if not len(truths):
        return torch.zeros_like(priors), torch.zeros(len(priors), dtype=torch.long, device=priors.device)
    overlaps = box_iou(truths, point_form(priors))                      # (G, P)
    best_prior = overlaps.argmax(1)                                     # (G,)
    best_truth_overlap, best_truth = overlaps.max(0)                    # (P,)
    best_truth_overlap = best_truth_overlap.index_fill(0, best_prior, 2.0)
    for j, p in enumerate(best_prior.tolist()):                         # later boxes win, as ssd.pytorch
        best_truth[p] = j
    conf = labels[best_truth].long() + 1
    conf[best_truth_overlap < threshold] = 0
    return encode(truths[best_truth], priors, variance), conf


def hard_negatives(loss_c, positive, neg_pos=NEG_POS):
    """Per image, the ``neg_pos`` x (its positives) non-positive priors with the highest ``loss_c`` ``(B, P)``."""
    loss_c = loss_c.masked_fill(positive, 0.0)
    rank = loss_c.argsort(1, descending=True).argsort(1)
    count = (neg_pos * positive.sum(1, keepdim=True)).clamp(max=positive.shape[1] - 1)
    return rank < count


def multibox_loss(loc, conf, priors, targets, threshold=MATCH_THRESHOLD, neg_pos=NEG_POS):
    """``loc (B, P, 4)``, ``conf (B, P, C+1)``, ``priors (P, 4)`` and ground truth ``(B, M, 5)`` ->
    ``(loss_l, loss_c)``, each summed over the batch and divided by its positives (at least 1)."""
    priors = priors.to(loc.dtype)
    loc_t, conf_t = [], []
    for rows in targets:
        rows = rows[rows[:, 4] >= 0]
        lt, ct = match(rows[:, :4].to(loc.dtype), rows[:, 4], priors, threshold)
        loc_t.append(lt)
        conf_t.append(ct)
    loc_t, conf_t = torch.stack(loc_t), torch.stack(conf_t)
    positive = conf_t > 0
    n = positive.sum().clamp(min=1).to(loc.dtype)
    loss_l = F.smooth_l1_loss(loc[positive], loc_t[positive], reduction="sum")
    with torch.no_grad():
        per_prior = torch.logsumexp(conf, 2) - conf.gather(2, conf_t[..., None])[..., 0]
        negative = hard_negatives(per_prior, positive, neg_pos)
    chosen = positive | negative
    loss_c = F.cross_entropy(conf[chosen], conf_t[chosen], reduction="sum")
    return loss_l / n, loss_c / n
