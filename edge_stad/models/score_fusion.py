"""Lu et al.'s attention-based score fusion of two frozen streams ("Learning and Distilling the Internal
Relationship of Motion Features in Action Recognition", section 3.4).

The class scores of a distilled RGB stream (the Dual-action Stream) and of a motion (optical-flow)
stream are concatenated and passed through two linear layers; a softmax over their 2 outputs gives
per-sample stream weights, and the fused score is the weighted sum of the two streams' scores. The
paper leaves the hidden width open: 64 with a ReLU between the layers is decided here, as is that the
scores are the streams' softmax probabilities. The motion stream needs optical flow at test time, so
this is not an edge-device module.
"""
import torch
from torch import nn

from edge_stad.errors import ConfigError


class AttentionScoreFusion(nn.Module):
    """``forward(rgb_scores, motion_scores)`` ``(N, C)`` each -> ``(fused (N, C), weights (N, 2))``."""

    def __init__(self, num_classes, hidden=64):
        super().__init__()
        if num_classes < 1 or hidden < 1:
            raise ConfigError(f"num_classes and hidden must be >= 1, got {num_classes} and {hidden}")
        self.attention = nn.Sequential(nn.Linear(2 * num_classes, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.config = {"name": "attention-fusion", "num_classes": num_classes, "hidden": hidden}

    def forward(self, rgb_scores, motion_scores):
        weights = torch.softmax(self.attention(torch.cat((rgb_scores, motion_scores), 1)), 1)
        return weights[:, :1] * rgb_scores + weights[:, 1:] * motion_scores, weights
