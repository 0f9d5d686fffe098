"""MENet: YOWO with learned motion (Liu, Tu, Lin, Xie, Qin: "Real-time spatio-temporal action localization
via learning motion representation").

A 3D branch (3D-ResNeXt-101 + non-local block) reads the whole clip; a 2D detector (YOLOv2)
reads the key frame concatenated with SRM short-range-motion maps of the last 4 frames;
CFAM fuses the two and a 1x1 conv gives the YOLOv2 region output. ``menet-lite`` swaps in a
3D ShuffleNetV2, YOLOv2-tiny and a 256-wide CFAM for edge devices.

Inputs follow the rest of the project: ``clips (B, 3T, H, W)``, BGR frames normalised as
:mod:`edge_stad.preprocess` does, stacked on channels oldest first, the last frame being
the key frame. Two ways to run the same weights, with the same results:

* ``model(clips)``: everything, every frame;
* stream mode: ``model.encode_3d(clips)`` every s frames (the expensive part, cached) and
  ``model.detect(frames, feat3d)`` on every frame with its last ``frames_2d`` frames.
"""
import torch
from torch import nn

from edge_stad.errors import ConfigError
from edge_stad.models.amma import input_hw
from edge_stad.models.backbones3d import NonLocalBlock3D, create_backbone_3d, resolve_width_3d
from edge_stad.models.darknet import COCO_CHANNELS, Darknet19YOLOv2, YOLOv2Tiny
from edge_stad.models.micro_motion import MicroMotion

# YOWO's k-means anchors for UCF101-24, (w, h) in output-grid cells.
YOWO_UCF24_ANCHORS = ((0.70458, 1.18803), (1.26654, 2.55121), (1.59382, 4.08321), (2.30548, 4.94180),
                      (3.52332, 5.91979))
DETECTORS_2D = {"darknet19": Darknet19YOLOv2, "tiny": YOLOv2Tiny}
VARIANTS = ("menet", "menet-lite")
# What ``menet-lite`` changes from the paper model (whose settings are MENet's defaults).
LITE_DEFAULTS = {"clip_len": 8, "backbone_3d": "shufflenetv2", "non_local": False, "backbone_2d": "tiny",
                 "cfam_channels": 256}


def conv_bn_relu(inp, oup, kernel_size):
    return nn.Sequential(nn.Conv2d(inp, oup, kernel_size, 1, kernel_size // 2, bias=False), nn.BatchNorm2d(oup),
                         nn.ReLU())


class ChannelAttention(nn.Module):
    """DANet's channel attention (CAM): ``x + gamma * softmax(rowmax(E) - E) F`` with ``E = F F^T`` over channels.

    ``gamma`` starts at 0, so the block starts as the identity. The energy, its softmax and
    the product run in float32 whatever the input type: the C x C Gram matrix of a 1024 x 49
    feature overflows fp16 (a TensorRT build pins these layers to FP32).
    """

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        feat = x.flatten(2).float()  # (B, C, N)
        energy = feat @ feat.transpose(1, 2)
        attention = torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1)
        return self.gamma * (attention @ feat).to(x.dtype).reshape(x.shape) + x


class CFAM(nn.Module):
    """YOWO's channel fusion and attention module on the concatenated 3D + 2D features (names as YOWO)."""

    def __init__(self, in_channels, inter_channels=1024):
        super().__init__()
        self.conv_bn_relu1 = conv_bn_relu(in_channels, inter_channels, 1)
        self.conv_bn_relu2 = conv_bn_relu(inter_channels, inter_channels, 3)
        self.sc = ChannelAttention()
        self.conv_bn_relu3 = conv_bn_relu(inter_channels, inter_channels, 3)
        self.conv_out = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(inter_channels, inter_channels, 1))
        self.out_channels = inter_channels

    def forward(self, x):
        x = self.sc(self.conv_bn_relu2(self.conv_bn_relu1(x)))
        return self.conv_out(self.conv_bn_relu3(x))


def _check_anchors(anchors, num_anchors):
    if anchors is None:
        if num_anchors != len(YOWO_UCF24_ANCHORS):
            raise ConfigError(f"give {num_anchors} anchors: the default (YOWO's UCF101-24) has "
                              f"{len(YOWO_UCF24_ANCHORS)}")
        anchors = YOWO_UCF24_ANCHORS
    anchors = [[float(v) for v in a] for a in anchors]
    if len(anchors) != num_anchors or any(len(a) != 2 or min(a) <= 0 for a in anchors):
        raise ConfigError(f"anchors must be {num_anchors} positive [w, h] pairs, got {anchors}")
    return anchors


class MENet(nn.Module):
    """MENet (``name="menet"``, the signature's defaults) or MENet-Lite (:data:`LITE_DEFAULTS`).

    ``clip_len`` frames feed the 3D branch, the last ``srm_frames`` of them the SRM (adjacent
    pairs: 4 frames give 3 maps, 2 give 1; 0 = RGB key frame only, a plain 3-channel 2D stem).
    ``width_3d=None`` takes the 3D backbone's default width (ShuffleNetV2 2.0x, MobileNetV2
    1.0x). ``anchors`` are ``num_anchors`` (w, h) pairs in output-grid cells; they do not change
    the weights and are kept for decoding. Per anchor the region output holds
    ``[tx, ty, tw, th, conf, cls_0 .. cls_{C-1}]``.
    """

    def __init__(self, name="menet", num_classes=24, input_size=224, clip_len=16, backbone_3d="resnext101",
                 width_3d=None, non_local=True, backbone_2d="darknet19", srm_frames=4, srm_kernel=7,
                 cfam_channels=1024, num_anchors=5, anchors=None, channels_2d=COCO_CHANNELS):
        super().__init__()
        h, w = input_hw(input_size)
        if name not in VARIANTS:
            raise ConfigError(f"MENet variant must be one of {VARIANTS}, got {name!r}")
        if backbone_2d not in DETECTORS_2D:
            raise ConfigError("unknown 2D detector {!r}; choose one of {}".format(backbone_2d, ", ".join(DETECTORS_2D)))
        for key, value in (("num_classes", num_classes), ("clip_len", clip_len), ("cfam_channels", cfam_channels),
                           ("num_anchors", num_anchors), ("channels_2d", channels_2d)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if srm_frames == 1 or srm_frames < 0:
            raise ConfigError(f"srm_frames must be 0 (RGB only) or >= 2 (one SRM map per adjacent pair), "
                              f"got {srm_frames}")
        if clip_len < srm_frames:
            raise ConfigError(f"clip_len ({clip_len}) must cover the srm_frames ({srm_frames})")
        if srm_kernel < 1 or srm_kernel % 2 == 0:
            raise ConfigError(f"srm_kernel must be odd (same-size maps), got {srm_kernel}")
        width_3d = resolve_width_3d(backbone_3d, width_3d)
        anchors = _check_anchors(anchors, num_anchors)
        self.num_classes, self.clip_len, self.num_anchors = num_classes, clip_len, num_anchors
        self.frames_2d = max(srm_frames, 1)
        self.anchors = anchors

        self.srm = None
        if srm_frames:
            pairs = tuple((i, i + 1) for i in range(srm_frames - 1))
            self.srm = MicroMotion(srm_frames, pairs, kernel_size=srm_kernel, pool=False)
        in_2d = 3 + (self.srm.out_channels if self.srm is not None else 0)
        self.backbone_2d = DETECTORS_2D[backbone_2d](in_2d, channels_2d)
        self.backbone_3d = create_backbone_3d(backbone_3d, width_3d)
        self.non_local = NonLocalBlock3D(self.backbone_3d.out_channels) if non_local else None
        self.cfam = CFAM(self.backbone_3d.out_channels + channels_2d, cfam_channels)
        self.conv_final = nn.Conv2d(cfam_channels, num_anchors * (5 + num_classes), 1, bias=False)
        self.config = {
            "name": name, "num_classes": num_classes, "input_size": [h, w], "clip_len": clip_len,
            "backbone_3d": backbone_3d, "width_3d": width_3d, "non_local": bool(non_local),
            "backbone_2d": backbone_2d, "srm_frames": srm_frames, "srm_kernel": srm_kernel,
            "cfam_channels": cfam_channels, "num_anchors": num_anchors, "anchors": anchors,
            "channels_2d": channels_2d,
        }

    @staticmethod
    def _check_frames(x, frames, what):
        if x.dim() != 4 or x.shape[1] != 3 * frames or x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"{what} must be (B, {3 * frames}, H, W) ({frames} frames x 3) with H and W multiples "
                             f"of 32, got {tuple(x.shape)}")

    def clip_to_video(self, clips):
        """``(B, 3T, H, W)`` -> the 3D branch's ``(B, 3, T, H, W)``."""
        b, _, h, w = clips.shape
        return clips.reshape(b, self.clip_len, 3, h, w).transpose(1, 2)

    def image_2d(self, frames):
        """Last ``frames_2d`` frames -> the 2D detector's input: key frame, then the SRM maps oldest pair first."""
        key = frames[:, -3:]
        return key if self.srm is None else torch.cat((key, self.srm(frames)), 1)

    def encode_3d(self, clips):
        """Clips ``(B, 3T, H, W)`` -> 3D feature ``(B, C3, H/32, W/32)``, what stream mode caches.

        As YOWO, the temporal axis is squeezed when the backbone reduced it to 1 (up to 16
        frames: its temporal stride) and averaged over when longer clips leave more.
        """
        self._check_frames(clips, self.clip_len, "clips")
        feat = self.backbone_3d(self.clip_to_video(clips))
        if self.non_local is not None:
            feat = self.non_local(feat)
        return feat.squeeze(2) if feat.shape[2] == 1 else feat.mean(2)

    def detect(self, frames, feat3d):
        """Last ``frames_2d`` frames ``(B, 3 * frames_2d, H, W)`` + cached 3D feature -> region output."""
        self._check_frames(frames, self.frames_2d, "frames")
        b, _, h, w = frames.shape
        expected = (b, self.backbone_3d.out_channels, h // 32, w // 32)
        if tuple(feat3d.shape) != expected:
            raise ValueError(f"feat3d must be {expected} (encode_3d of the same-size clip), got {tuple(feat3d.shape)}")
        x = torch.cat((feat3d, self.backbone_2d(self.image_2d(frames))), 1)
        return self.conv_final(self.cfam(x))

    def forward(self, clips):
        """Clips ``(B, 3T, H, W)`` -> region output ``(B, A * (5 + C), H/32, W/32)`` for each key frame."""
        feat3d = self.encode_3d(clips)  # checks the clips first
        return self.detect(clips[:, -3 * self.frames_2d:], feat3d)
