"""STMA: Spatio-Temporal Motion Aggregation network (Zhang and Zhao, "Spatio-Temporal Motion Aggregation
Network for Video Action Detection"), and STMA-Lite, its edge variant.

A tubelet detector on MOC's anchor-free layout (MOC-Detector, "Actions as Moving Points") that
decouples classification from localisation. A 2D backbone encodes each frame of a K-frame snippet;
the Spatial Detection branch finds class-agnostic centres on the key frame (CAL), the centre of every
snippet frame relative to it (movement, 2K) and a box around each (l, t, r, b per frame). The Action
Recognition branch classifies the clip: the snippet's features, down-sampled, go through Motion
Excitation (ME) and are aggregated with a 3D CNN's feature of a longer clip by channel self-attention
(STA). Movement and size are trained on every cell of a Gaussian area (GR, after TTFNet); see
:mod:`edge_stad.data.stma_targets` and :mod:`edge_stad.train.stma_loss`.

``create_model("stma")`` is the paper's model: DLA-34 at stride 4 (MOC's layout, deformable up path;
``decoder="conv"`` for plain convs), K=5, a 16-frame 3D-ResNeXt-101, 288x288, centred key frame.
``create_model("stma-lite")`` (:data:`LITE_DEFAULTS`) is the edge variant: a ResNet-18 / MobileNetV2 /
ShuffleNetV2 backbone with AMMA's decoder at stride 8, slimmer heads, a 3D ShuffleNetV2 (2.0x, as
MENet-Lite's) over 8 frames
(``backbone_3d=None``: none, motion excitation runs over the ``clip_len`` cached frames instead) and
the snippet's last frame as the key frame, so it never waits for future frames.

Inputs follow the rest of the project: ``clips (B, 3 * clip_len, H, W)``, BGR frames normalised as
:mod:`edge_stad.preprocess` does, stacked on channels oldest first; where the snippet sits in the clip
is :func:`edge_stad.core.snippets.layout_of` (``model.layout``). Outputs: ``hm (B, 1, h, w)`` after the
sigmoid (``B, C`` channels with ``class_agnostic=False``), ``mov (B, 2K, h, w)`` (``dx, dy`` per frame,
oldest first, in cells), ``wh (B, 4K, h, w)`` (``l, t, r, b`` per frame, cells, non-negative) and
``cls (B, C)`` class logits.

Streaming contract (the graphs a streaming runtime exports; ``forward`` is exactly these calls):

* ``encode(frames (N, 3, H, W))`` once per new frame -> ``feat (N, 64, h, w)``, ``wh (N, 4, h, w)``
  and ``act (N, action_channels, H/32, W/32)`` (None without the recognition branch); all three are
  cached per frame;
* ``encode_3d(clips (N, 3T, H, W))`` -> ``(N, C3, H/32, W/32)``, cached; STMA runs it on every
  window's clip, STMA-Lite may refresh it every s frames;
* ``head(feats (B, K, ...), whs (B, K, ...), acts (B, L, ...), feat3d)`` per window, on the K snippet
  frames' cached ``feat``/``wh`` and the L motion frames' cached ``act`` (``layout.motion``).

Choices the paper leaves open (each made once, here and in :mod:`edge_stad.data.stma_targets`,
:mod:`edge_stad.train.stma_loss`, :mod:`edge_stad.core.snippet_decode`):

* down-sampling: ``log2(32 / stride)`` 3x3 stride-2 Conv-BN-ReLU layers (72 -> 9 cells at 288 for
  DLA-34), to ``action_channels`` (256); the paper writes one stride-2 conv, which cannot match the
  3D feature's stride;
* ME's conv on ``f(t+1)`` is TEA's depthwise 3x3, the conv after pooling a 1x1 (``c1 -> c1``);
* STA is YOWO's CFAM (1x1, 3x3, DANet channel attention, 3x3, 1x1) of ``fused_channels`` (512) over
  the K excited features flattened on channels and the 3D feature; the classifier is global average
  pooling and a 1x1 conv: one clip-level label (the paper's cross-entropy);
* the 3D feature's time axis (1 for 16 frames) is averaged away; the 3D branch reads the same frames
  at the same resolution as the 2D backbone;
* the snippet sits in the middle of the clip (:mod:`edge_stad.core.snippets`);
* the centre and movement heads read the K snippet features concatenated on channels (as MOC);
* size: ``relu(conv)`` cells, TTFNet's output form without its scale of 4 cells (measured:
  :mod:`edge_stad.models.stma_branches`).
"""
import math

from torch import nn

from edge_stad.core.snippets import head_stride, snippet_layout
from edge_stad.errors import ConfigError
from edge_stad.models.amma import canonical_backbone, input_hw
from edge_stad.models.backbones3d import create_backbone_3d, resolve_width_3d
from edge_stad.models.decoder import DECODERS, Decoder
from edge_stad.models.dla import DLASeg
from edge_stad.models.head import CLIP_CHANNELS
from edge_stad.models.registry import create_backbone
from edge_stad.models.stma_branches import ActionRecognition, SpatialDetection

VARIANTS = ("stma", "stma-lite")
STRIDE_3D = 32
# What ``stma-lite`` changes from the paper model (whose settings are STMA's defaults).
LITE_DEFAULTS = {"backbone": "shufflenetv2", "decoder": "conv", "clip_len": 8, "key_frame": "last",
                 "backbone_3d": "shufflenetv2", "head_conv": 128, "wh_head_conv": 64,
                 "action_channels": 128, "fused_channels": 256}


def _check_backbone(backbone):
    return backbone if backbone == "dla34" else canonical_backbone(backbone)


class STMA(nn.Module):
    """STMA (``name="stma"``, the signature's defaults) or STMA-Lite (:data:`LITE_DEFAULTS`).

    ``class_agnostic=False`` builds MOC's class heatmap and no recognition branch (the paper's
    baseline); ``motion_excitation`` / ``attention`` switch ME and STA's self-attention;
    ``gaussian_regression=False`` trains movement and size on the centre cell only (it changes the
    training targets, not the weights). The last four exist for the paper's Table 2 ablation.
    """

    def __init__(self, name="stma", num_classes=24, input_size=288, K=5, clip_len=16, key_frame="center",
                 backbone="dla34", decoder="dcn", backbone_3d="resnext101", width_3d=None, head_conv=256,
                 wh_head_conv=256, action_channels=256, fused_channels=512, class_agnostic=True,
                 motion_excitation=True, attention=True, gaussian_regression=True):
        super().__init__()
        if name not in VARIANTS:
            raise ConfigError(f"STMA variant must be one of {VARIANTS}, got {name!r}")
        h, w = input_hw(input_size)
        backbone = _check_backbone(backbone)
        if decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        for key, value in (("num_classes", num_classes), ("head_conv", head_conv), ("wh_head_conv", wh_head_conv),
                           ("action_channels", action_channels), ("fused_channels", fused_channels)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if backbone_3d is None:
            if width_3d is not None:
                raise ConfigError(f"width_3d={width_3d} needs a 3D branch (backbone_3d is None)")
        else:
            width_3d = resolve_width_3d(backbone_3d, width_3d)
            if not class_agnostic:
                raise ConfigError("class_agnostic=False builds no recognition branch: set backbone_3d=None")
        self.layout = snippet_layout(K, clip_len, key_frame, backbone_3d is not None)
        self.K, self.clip_len, self.num_classes = K, clip_len, num_classes
        stride = head_stride(backbone)

        if backbone == "dla34":
            self.backbone, self.deconv_layer, self.shrink = DLASeg(deformable=decoder == "dcn"), None, None
        else:   # AMMA's RGB-only backbone and decoder, then AMMA's 1x1 shrink to 64 channels
            self.backbone = create_backbone("fused", backbone, 0)
            self.deconv_layer = Decoder(decoder)
            self.shrink = nn.Sequential(nn.Conv2d(256, CLIP_CHANNELS, 1, bias=False), nn.BatchNorm2d(CLIP_CHANNELS))
        self.backbone_3d = create_backbone_3d(backbone_3d, width_3d) if backbone_3d is not None else None
        self.detection = SpatialDetection(K, CLIP_CHANNELS, head_conv, wh_head_conv,
                                          1 if class_agnostic else num_classes)
        self.action = None
        if class_agnostic:
            motion = self.layout.motion
            self.action = ActionRecognition(
                CLIP_CHANNELS, int(math.log2(STRIDE_3D // stride)), motion[1] - motion[0] + 1, num_classes,
                action_channels, fused_channels, self.backbone_3d.out_channels if self.backbone_3d else 0,
                motion_excitation, attention)
        self.config = {
            "name": name, "num_classes": num_classes, "input_size": [h, w], "K": K, "clip_len": clip_len,
            "key_frame": key_frame, "backbone": backbone, "decoder": decoder, "backbone_3d": backbone_3d,
            "width_3d": width_3d, "head_conv": head_conv, "wh_head_conv": wh_head_conv,
            "action_channels": action_channels, "fused_channels": fused_channels,
            "class_agnostic": bool(class_agnostic), "motion_excitation": bool(motion_excitation),
            "attention": bool(attention), "gaussian_regression": bool(gaussian_regression),
        }

    @staticmethod
    def _check(x, channels, what):
        if x.dim() != 4 or x.shape[1] != channels or x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"{what} must be (N, {channels}, H, W) with H and W multiples of 32, "
                             f"got {tuple(x.shape)}")

    def encode(self, frames):
        """Frames ``(N, 3, H, W)`` -> per-frame ``feat``, ``wh`` and ``act`` (None without recognition)."""
        self._check(frames, 3, "frames")
        x = self.backbone(frames)
        if self.shrink is not None:
            x = self.shrink(self.deconv_layer(x))
        act = self.action.downsample(x) if self.action is not None else None
        return x, self.detection.size(x), act

    def encode_3d(self, clips):
        """Clips ``(N, 3T, H, W)`` -> the 3D branch's feature ``(N, C3, H/32, W/32)``, time averaged away."""
        self._check(clips, 3 * self.clip_len, "clips")
        n, _, h, w = clips.shape
        video = clips.reshape(n, self.clip_len, 3, h, w).transpose(1, 2)
        return self.backbone_3d(video).mean(2)

    def head(self, feats, whs, acts=None, feat3d=None):
        """Cached per-frame outputs of one window (see the module docstring) -> hm, mov, wh (and cls)."""
        hm, mov = self.detection(feats)
        out = {"hm": hm, "mov": mov, "wh": whs.flatten(1, 2)}
        if self.action is not None:
            if acts is None or acts.shape[1] != self.action.frames:
                raise ValueError(f"the recognition branch reads the cached features of {self.action.frames} frames, "
                                 f"got {None if acts is None else acts.shape[1]}")
            if (feat3d is None) != (self.backbone_3d is None):
                raise ValueError("pass feat3d (encode_3d's output) exactly when the model has a 3D branch")
            out["cls"] = self.action(acts, feat3d)
        return out

    def forward(self, clips):
        """Clips ``(B, 3 * clip_len, H, W)`` -> hm, mov, wh (and cls) of each clip's snippet."""
        self._check(clips, 3 * self.clip_len, "clips")
        b, _, h, w = clips.shape
        first, last = self.layout.encoded
        frames = clips.reshape(b, self.clip_len, 3, h, w)[:, first:last + 1]
        encoded = self.encode(frames.reshape(-1, 3, h, w))

        def frames_of(x, span):
            return None if x is None else x.reshape(b, last - first + 1, *x.shape[1:])[:, span[0] - first:
                                                                                       span[1] - first + 1]

        feat, wh, act = encoded
        snippet = self.layout.snippet
        feat3d = self.encode_3d(clips) if self.backbone_3d is not None else None
        return self.head(frames_of(feat, snippet), frames_of(wh, snippet), frames_of(act, self.layout.motion), feat3d)
