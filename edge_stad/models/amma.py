"""AMMA: accumulated micro-motion tubelet detector (Liu, Yang, Ginhac 2023).

Two ways to run the same weights, with the same results:

* normal mode, ``model(clips)`` with ``clips (B, K, 3n, H, W)`` (or a list of K
  ``(B, 3n, H, W)`` tensors, as the reference takes): all K clips are encoded;
* stream mode, ``model.encode(clip)`` once per new clip, a FIFO of the last K
  ``(feature, size map)`` pairs, and ``model.head(feats, whs)`` per window.

Inputs are BGR frames resized to ``input_size`` and normalised as
:mod:`edge_stad.preprocess` does; frames are stacked on channels, oldest first,
the last frame of a clip being its key frame.
"""
import torch
from torch import nn

from edge_stad.errors import ConfigError
from edge_stad.models.backbones import ALIASES
from edge_stad.models.decoder import Decoder
from edge_stad.models.fused_backbones import LateralFusion
from edge_stad.models.head import TubeletHead
from edge_stad.models.micro_motion import MicroMotion
from edge_stad.models.registry import available, create_backbone
from edge_stad.preprocess import grid_size

MOTIONS = ("conv", "diff")   # micro-motion (MM_Conv_Diff) or the raw RGB difference (MM_Diff)


def canonical_backbone(name):
    name = ALIASES.get(name, name)
    if name not in available("fused"):
        raise ConfigError("unknown backbone {!r}; choose one of {}".format(name, ", ".join(available("fused"))))
    return name


def input_hw(input_size):
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ConfigError(f"input_size must be positive multiples of 32 (the backbone stride), got {h}x{w}")
    return int(h), int(w)


class AMMA(nn.Module):
    """AMMA on a ResNet-18 / MobileNetV2 / ShuffleNetV2 backbone.

    ``fusion_stages`` is the number of backbone stages followed by lateral fusion (the
    reference uses 3; paper Table 2 varies it); 0 builds the RGB-only model, with no
    micro-motion module. ``mm_pool=False`` runs the micro-motion conv at full resolution.
    ``motion="diff"`` replaces the micro-motion conv by the raw RGB difference (the paper's
    MM_Diff row of Table 1; pooling, pairs and the norm unchanged); the config records it only
    then, so configs of the default ``"conv"`` stay as they were.
    """

    def __init__(self, backbone="resnet18", K=5, num_classes=21, clip_len=5, decoder="conv",
                 fusion_stages=LateralFusion.DEFAULT_FUSION_STAGES, pairs=None, mm_pool=True, input_size=288,
                 head_conv=256, motion="conv"):
        super().__init__()
        backbone = canonical_backbone(backbone)
        if K < 1 or num_classes < 1 or clip_len < 1:
            raise ConfigError(f"K, num_classes and clip_len must be >= 1, got K={K}, num_classes={num_classes}, "
                              f"clip_len={clip_len}")
        if motion not in MOTIONS:
            raise ConfigError(f"motion must be one of {MOTIONS}, got {motion!r}")
        h, w = input_hw(input_size)
        self.K, self.num_classes, self.clip_len = K, num_classes, clip_len
        self.mm = MicroMotion(clip_len, pairs, pool=mm_pool, learned=motion == "conv") if fusion_stages else None
        motion_channels = self.mm.out_channels if self.mm is not None else 3
        self.backbone = create_backbone("fused", backbone, fusion_stages, motion_channels)
        self.deconv_layer = Decoder(decoder)
        self.branch = TubeletHead(K, num_classes, head_conv=head_conv)
        self.config = {
            "name": "amma", "backbone": backbone, "K": K, "num_classes": num_classes, "clip_len": clip_len,
            "decoder": decoder, "fusion_stages": fusion_stages,
            "pairs": [list(p) for p in self.mm.pairs] if self.mm is not None else None,
            "mm_pool": mm_pool, "input_size": [h, w], "head_conv": head_conv,
        }
        if motion != "conv":
            self.config["motion"] = motion

    @property
    def grid_size(self):
        return grid_size(self.config["input_size"])

    def encode(self, clips, body_dtype=None, motion=None):
        """Clips ``(N, 3n, H, W)`` -> per-clip feature ``(N, 64, H/8, W/8)`` and size map ``(N, 2, H/8, W/8)``.

        ``body_dtype`` (e.g. ``torch.float16``, with the backbone, decoder and head converted
        to it) runs everything after the micro-motion module in that type; the micro-motion
        norm stays in the input's type. ``motion``: the micro-motion image when something
        else computed it (the CUDA kernel of :mod:`edge_stad.kernels`).
        """
        if clips.dim() != 4 or clips.shape[1] != 3 * self.clip_len:
            raise ValueError(f"encode expects clips of shape (N, {3 * self.clip_len}, H, W), got {tuple(clips.shape)}")
        if clips.shape[2] % 32 or clips.shape[3] % 32:
            raise ValueError("clip height and width must be multiples of 32, got {}x{}".format(*clips.shape[2:]))
        if motion is None and self.mm is not None:
            motion = self.mm(clips)
        rgb = clips[:, -3:]
        if body_dtype is not None:
            rgb, motion = rgb.to(body_dtype), None if motion is None else motion.to(body_dtype)
        x = self.backbone(rgb, motion)
        return self.branch.encode(self.deconv_layer(x))

    def head(self, feats, whs):
        """K cached clip features ``(B, K, 64, h, w)`` and size maps ``(B, K, 2, h, w)`` -> hm, mov, wh."""
        return self.branch(feats, whs)

    def forward(self, clips):
        if isinstance(clips, (list, tuple)):
            clips = torch.stack(list(clips), dim=1)
        if clips.dim() != 5 or clips.shape[1] != self.K:
            raise ValueError(f"expected clips of shape (B, K={self.K}, 3n, H, W) or a list of K (B, 3n, H, W), "
                             f"got {tuple(clips.shape)}")
        b, k = clips.shape[:2]
        feat, wh = self.encode(clips.reshape(b * k, *clips.shape[2:]))
        return self.head(feat.reshape(b, k, *feat.shape[1:]), wh.reshape(b, k, *wh.shape[1:]))
