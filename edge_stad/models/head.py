"""AMMA detector head (reference ``MOC_Branch``): center, trajectory and box branches.

Per clip: ``shrink`` (1x1 256->64 + BN, no activation) and the box branch ``wh``
(3x3 64->64, ReLU, 1x1 ->2). Over the K clips stacked on channels (oldest first):
the center branch ``hm``/``hm_cls`` (3x3 64K->256, ReLU, 1x1 ->C, sigmoid in the
network, bias -2.19) and the trajectory branch ``mov``/``mov_cls`` (-> 2K offsets
``[dx_0, dy_0, ...]``). Splitting the per-clip part out is what makes streaming exact:
a cached clip feature is the same whichever window it sits in.
"""
import torch
from torch import nn

HM_BIAS_INIT = -2.19  # sigmoid(-2.19) ~ 0.1, CenterNet's prior
CLIP_CHANNELS = 64


class TubeletHead(nn.Module):
    def __init__(self, K, num_classes, in_channels=256, head_conv=256, wh_head_conv=64):
        super().__init__()
        self.K = K
        c = CLIP_CHANNELS
        self.shrink = nn.Sequential(nn.Conv2d(in_channels, c, 1, bias=False), nn.BatchNorm2d(c))
        nn.init.kaiming_normal_(self.shrink[0].weight, mode="fan_out", nonlinearity="relu")
        self.hm = nn.Sequential(nn.Conv2d(K * c, head_conv, 3, padding=1), nn.ReLU(inplace=True))
        self.hm_cls = nn.Sequential(nn.Conv2d(head_conv, num_classes, 1))
        nn.init.constant_(self.hm_cls[0].bias, HM_BIAS_INIT)
        self.mov = nn.Sequential(nn.Conv2d(K * c, head_conv, 3, padding=1), nn.ReLU(inplace=True))
        self.mov_cls = nn.Sequential(nn.Conv2d(head_conv, 2 * K, 1))
        self.wh = nn.Sequential(nn.Conv2d(c, wh_head_conv, 3, padding=1), nn.ReLU(inplace=True),
                                nn.Conv2d(wh_head_conv, 2, 1))
        for branch in (self.mov, self.mov_cls, self.wh):
            for m in branch.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.zeros_(m.bias)

    def encode(self, x):
        """Per-clip part: decoder output ``(N, 256, h, w)`` -> feature ``(N, 64, h, w)``, size map ``(N, 2, h, w)``."""
        feat = self.shrink(x)
        return feat, self.wh(feat)

    def forward(self, feats, whs):
        """``feats (B, K, 64, h, w)`` and ``whs (B, K, 2, h, w)``, oldest clip first -> hm, mov, wh."""
        stacked = self.stack(feats)
        return {
            "hm": self.heatmap(stacked),
            "mov": self.mov_cls(self.mov(stacked)),
            "wh": whs.reshape(whs.shape[0], -1, *whs.shape[-2:]),
        }

    def stack(self, feats):
        """``feats (B, K, 64, h, w)`` -> ``(B, 64K, h, w)``, the input of the center and trajectory branches."""
        b, k, c, h, w = feats.shape
        if k != self.K:
            raise ValueError(f"head was built for K={self.K} clips, got {k}")
        return feats.reshape(b, k * c, h, w)

    def heatmap(self, stacked):
        return torch.sigmoid(self.hm_cls(self.hm(stacked)))
