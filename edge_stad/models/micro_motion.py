"""Accumulated micro-motion (AMMA paper section 3.2; reference ``MM_PA``, mode ``mm1``).

Each frame of a clip is max-pooled (3x3/2), passed through one shared shallow conv
(3 -> 8 channels, 5x5), and for every frame pair ``(a, b)`` the per-pixel L2 norm over
the 8 channels of ``f_a - f_b`` is taken, written out as
``sqrt(sum_c (f_a - f_b + eps)^2)`` with the reference eps added to the difference
(what ``nn.PairwiseDistance`` did on the torch versions the authors used; its
meaning changed later, so it is not used here). The maps are stacked and upsampled
back (nearest, an exact 2x repeat) into a non-negative, un-normalised motion image.

The same operator family also gives MENet's SRM (pairs of adjacent frames, other
kernel sizes, no pooling): ``pairs``, ``kernel_size`` and ``pool`` parameterise it.
``learned=False`` gives AMMA's MM_Diff (Table 1): the norm of the raw RGB difference
instead of the conv features', written as a fixed identity 1x1 conv so that the
folding, export and CUDA kernel of the learned version run it unchanged.
"""
import torch
import torch.nn.functional as F
from torch import nn

from edge_stad.errors import ConfigError
from edge_stad.kernels.reference import EPS


def reference_pairs(clip_len):
    """Frame pairs ``(other, key)`` (0-based, key = last frame) that produce the motion channels.

    For ``clip_len >= 5`` these are the reference's pairs ``(n-5+i, n-1)``, i = 0, 1, 2, so
    for n = 5: (0,4), (1,4), (2,4) - frame 3 is never used. The reference crashes for
    n < 5; here n = 2..4 follow the paper's definition (every earlier frame against the key
    frame: n - 1 channels), which gives the paper's 3 channels at its t = 4.
    """
    if clip_len < 2:
        raise ConfigError(f"micro-motion needs clip_len >= 2 frames, got {clip_len}")
    if clip_len >= 5:
        return tuple((clip_len - 5 + i, clip_len - 1) for i in range(3))
    return tuple((i, clip_len - 1) for i in range(clip_len - 1))


class MicroMotion(nn.Module):
    """Clip ``(N, 3n, H, W)`` (frames stacked on channels, oldest first) -> motion ``(N, P, H, W)``."""

    def __init__(self, clip_len=5, pairs=None, channels=8, kernel_size=5, pool=True, eps=EPS, learned=True):
        super().__init__()
        pairs = reference_pairs(clip_len) if pairs is None else tuple(tuple(int(v) for v in p) for p in pairs)
        for a, b in pairs:
            if not (0 <= a < clip_len and 0 <= b < clip_len and a != b):
                raise ConfigError(f"micro-motion pair {(a, b)} is not two distinct frames of a {clip_len}-frame clip")
        if not pairs:
            raise ConfigError("micro-motion needs at least one frame pair")
        self.clip_len = clip_len
        self.pairs = pairs
        self.pool = pool
        self.eps = eps
        self.maxpool = nn.MaxPool2d(3, 2, 1) if pool else None
        if learned:
            self.shallow_conv = nn.Conv2d(3, channels, kernel_size, 1, (kernel_size - 1) // 2)
            nn.init.kaiming_normal_(self.shallow_conv.weight, mode="fan_out", nonlinearity="relu")
        else:
            self.shallow_conv = nn.Conv2d(3, 3, 1)
            with torch.no_grad():
                self.shallow_conv.weight.copy_(torch.eye(3)[:, :, None, None])
                self.shallow_conv.bias.zero_()
            self.shallow_conv.requires_grad_(False)
        #: convolve every frame, as the reference does (and its MAC count assumes), even one no
        #: pair uses (frame 3 for n=5); exported graphs set it False: same result, less work
        self.convolve_unused = True

    @property
    def out_channels(self):
        return len(self.pairs)

    def forward(self, clip):
        n_clips, channels, h, w = clip.shape
        if channels != 3 * self.clip_len:
            raise ValueError(f"micro-motion expects {3 * self.clip_len} channels ({self.clip_len} frames x 3), "
                             f"got {channels}")
        if self.pool and (h % 2 or w % 2):
            raise ValueError(f"micro-motion pools by 2: height and width must be even, got {h}x{w}")
        used = list(range(self.clip_len))
        if not self.convolve_unused:
            used = sorted({f for pair in self.pairs for f in pair})
        slot = {f: i for i, f in enumerate(used)}
        x = clip.reshape(n_clips, self.clip_len, 3, h, w)
        if len(used) < self.clip_len:
            x = x[:, used]
        x = x.reshape(n_clips * len(used), 3, h, w)
        if self.pool:
            x = self.maxpool(x)
        feats = self.shallow_conv(x)
        feats = feats.reshape(n_clips, len(used), feats.shape[1], feats.shape[2], feats.shape[3])
        maps = []
        for a, b in self.pairs:
            diff = feats[:, slot[a]] - feats[:, slot[b]] + self.eps
            maps.append(torch.sqrt(torch.sum(diff * diff, dim=1)))
        motion = torch.stack(maps, dim=1)
        if self.pool:
            motion = F.interpolate(motion, scale_factor=2.0, mode="nearest")
        return motion
