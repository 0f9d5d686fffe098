"""Two-path SSD with an integrated flow sub-network and multi-scale fusion (Zhang, He, Tu et al.,
"Learning motion representation for real-time spatio-temporal action localization", Pattern
Recognition 2020), and an edge variant.

``flow-fusion`` (the paper): PWC-Net (Sun et al. 2018) estimates the flow of the frame pairs
(k-1, k) and (k, k+1) at 320x320; both flows are resized to the detector's input, stacked
(4 channels) and turned into an RGB-shaped "flow image" by a 1x1 convolution. The key frame k
and the flow image run through one shared backbone - RFBNet300's VGG16 with RFB modules
(Liu et al. 2018) - as one batch; their six feature maps are fused per scale by one of the
paper's Table 2 blocks (``fusion``):

* ``m-concat`` (the paper's default): concatenate, 1x1 conv back to C channels;
* ``m-sum`` / ``m-average``: add / average, 1x1 conv;
* ``stfp`` (spatio-temporal feature pyramid, FPN-like, Eq. 7): from the coarsest scale down,
  ``m_i = U(m_{i+1}) + m_i^rgb + m_i^flow`` where U is a 1x1 conv to the finer map's channels
  and a bilinear resize to its size (the conv runs first, on the smaller map: the same result,
  since both are linear and the resize weights sum to 1).

RFBNet's multibox head (3x3 convs, 6, 6, 6, 6, 4, 4 priors per location; background is class 0)
predicts from the fused maps. The detection for frame k needs frame k+1 (one frame of latency).

``flow-fusion-lite`` (the edge variant the paper's cost suggests): causal pairs (k-2, k-1) and
(k-1, k), a small PWC-Net (4 levels, 16..96 channels, search range 3, no dense connections, no
context network) on the input resolution, and MobileNetV2 / ShuffleNetV2 with SSDLite's neck
and depthwise-separable heads (Sandler et al. 2018). With ``motion="micro-motion"`` AMMA's
micro-motion image of the last 4 frames (Liu, Yang and Ginhac 2023) takes the flow image's place:
no correlation, no warping. With ``motion="dis"`` the flow of each pair is OpenCV's DIS flow computed
on the host (:func:`edge_stad.optical_flow.pair_flow`, the flow the learned flow network is supervised
with) and given to ``forward`` as ``flows``: the precomputed-flow row of the motion-cue comparison.

Inputs follow the project: ``clips (B, 3T, H, W)``, T = ``frames`` BGR frames normalised as
:mod:`edge_stad.preprocess` does, stacked on channels oldest first; the key frame is
``frames - 1 - lookahead``. Output: ``{"loc": (B, P, 4), "conf": (B, P, C + 1)}`` over the P
priors (:attr:`FlowFusion.priors`), plus ``"flows"`` in training with the flow sub-network: its
per-level predictions (coarsest first, ``(B * pairs, 2, h, w)``, pixels / 20) for the flow loss.

Streaming split (what runs per new frame, what is cached), with the same results as ``forward``:

* ``flow``: ``pyramid = model.frame_features(frame)`` on the new frame only (cached: the previous
  frame's pyramid); ``flow = model.pair_flow(previous_pyramid, pyramid)`` for the newest pair only
  (cached: the previous pair's flow, which was the newest one a frame ago);
  ``loc, conf = model.detect(key_frame, model.flow_image(torch.cat(pair_flows, 1)))``.
* ``dis``: ``flow = pair_flow(previous_frame, frame)`` on the host for the newest pair only, then as ``flow``.
* ``micro-motion``: ``model.detect(key_frame, model.flow_image(model.mm(last_frames)))``, the
  micro-motion of the last ``frames`` frames (cached: those frames).

With the look-ahead of ``flow-fusion`` the key frame is the one before the newest.
"""
import torch
import torch.nn.functional as F
from torch import nn

from edge_stad.core.ssd_decode import boxes_per_location, check_prior_spec, prior_boxes
from edge_stad.errors import ConfigError
from edge_stad.model_config import SSD, SSD_MOTIONS
from edge_stad.models.micro_motion import MicroMotion
from edge_stad.models.pwcnet import FLOW_SCALE, PWCNet
from edge_stad.models.ssd_backbones import VGGRFB, SSDLite

VARIANTS = SSD
FUSIONS = ("m-concat", "m-sum", "m-average", "stfp")
MOTIONS = SSD_MOTIONS
BACKBONES = ("vgg16", "mobilenetv2", "shufflenetv2")
FLOW_NETS = {
    "pwc": {},                                                            # PWC-Net as published
    "pwc-small": {"pyramid": (16, 32, 64, 96), "estimator": (64, 48, 32, 16), "max_displacement": 3,
                  "dense": False, "context": False},
}
# What ``flow-fusion-lite`` changes from the paper model (whose settings are the defaults).
LITE_DEFAULTS = {"backbone": "mobilenetv2", "input_size": 320, "flow_net": "pwc-small", "flow_size": None,
                 "lookahead": 0}
# RFBNet's VOC_300 priors, in pixels of the 300x300 input.
RFB300 = {"feature_maps": [[38, 38], [19, 19], [10, 10], [5, 5], [3, 3], [1, 1]],
          "steps": (8, 16, 32, 64, 100, 300), "min_sizes": (30, 60, 111, 162, 213, 264),
          "max_sizes": (60, 111, 162, 213, 264, 315), "aspect_ratios": [[2, 3]] * 4 + [[2]] * 2}
SSDLITE_SCALES = (0.2, 0.95)   # torchvision's SSDLite: min and max scale, [2, 3] aspect ratios everywhere


def square_size(input_size):
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if h < 1 or w < 1:
        raise ConfigError(f"input_size must be positive, got {h}x{w}")
    return int(h), int(w)


def default_priors(backbone, feature_maps):
    """The prior spec a backbone's detector uses: RFBNet300's for VGG16 (its steps at 300x300, centres at
    ``(j + 0.5) / f`` at other sizes), SSDLite's otherwise."""
    maps = [list(m) for m in feature_maps]
    centres = [[1.0 / h, 1.0 / w] for h, w in maps]
    if backbone == "vgg16":
        steps = [[s / 300, s / 300] for s in RFB300["steps"]] if maps == RFB300["feature_maps"] else centres
        return {"feature_maps": maps, "steps": steps, "min_sizes": [s / 300 for s in RFB300["min_sizes"]],
                "max_sizes": [s / 300 for s in RFB300["max_sizes"]],
                "aspect_ratios": [list(r) for r in RFB300["aspect_ratios"]], "clip": True}
    lo, hi = SSDLITE_SCALES
    n = len(maps)
    scales = [lo + (hi - lo) * k / (n - 1) for k in range(n)] + [1.0]
    return {"feature_maps": maps, "steps": centres, "min_sizes": scales[:n], "max_sizes": scales[1:],
            "aspect_ratios": [[2, 3] for _ in range(n)], "clip": True}


class ElementwiseFusion(nn.Module):
    """M-Concat / M-Sum / M-Average: combine the two paths' maps per scale, then a 1x1 conv."""

    def __init__(self, channels, combine):
        super().__init__()
        self.combine = combine
        widen = 2 if combine == "concat" else 1
        self.mix = nn.ModuleList(nn.Conv2d(widen * c, c, 1) for c in channels)

    def forward(self, rgb, flow):
        out = []
        for mix, a, f in zip(self.mix, rgb, flow):
            if self.combine == "concat":
                x = torch.cat((a, f), 1)
            else:
                x = a + f if self.combine == "sum" else (a + f) * 0.5
            out.append(mix(x))
        return out


class PyramidFusion(nn.Module):
    """STFP: ``m_i = U(m_{i+1}) + rgb_i + flow_i`` from the coarsest map (``m = rgb + flow``) to the finest."""

    def __init__(self, channels):
        super().__init__()
        self.adapt = nn.ModuleList(nn.Conv2d(channels[i + 1], channels[i], 1) for i in range(len(channels) - 1))

    def forward(self, rgb, flow):
        fused = [rgb[-1] + flow[-1]]
        for i in range(len(rgb) - 2, -1, -1):
            up = F.interpolate(self.adapt[i](fused[0]), size=rgb[i].shape[2:], mode="bilinear", align_corners=False)
            fused.insert(0, up + rgb[i] + flow[i])
        return fused


def build_fusion(name, channels):
    if name == "stfp":
        return PyramidFusion(channels)
    return ElementwiseFusion(channels, {"m-concat": "concat", "m-sum": "sum", "m-average": "average"}[name])


def _separable(inp, out):
    """SSDLite's prediction block: depthwise 3x3 + BN + ReLU6, then a 1x1 conv."""
    return nn.Sequential(nn.Conv2d(inp, inp, 3, 1, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                         nn.ReLU6(inplace=True), nn.Conv2d(inp, out, 1))


class MultiboxHead(nn.Module):
    """Per map, ``b`` priors per location: ``loc`` (4 offsets) and ``conf`` (C + 1 logits) convolutions,
    3x3 as SSD / RFBNet or depthwise-separable as SSDLite (``separable``)."""

    def __init__(self, channels, boxes, num_classes, separable=False):
        super().__init__()
        layer = _separable if separable else (lambda inp, out: nn.Conv2d(inp, out, 3, 1, 1))
        self.num_classes = num_classes
        self.loc = nn.ModuleList(layer(c, b * 4) for c, b in zip(channels, boxes))
        self.conf = nn.ModuleList(layer(c, b * (num_classes + 1)) for c, b in zip(channels, boxes))

    def forward(self, maps):
        b = maps[0].shape[0]
        loc = torch.cat([l(x).permute(0, 2, 3, 1).reshape(b, -1, 4) for x, l in zip(maps, self.loc)], 1)
        conf = torch.cat([c(x).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes + 1)
                          for x, c in zip(maps, self.conf)], 1)
        return loc, conf


class FlowFusion(nn.Module):
    """``flow-fusion`` (the signature's defaults, the paper's model) or ``flow-fusion-lite`` (:data:`LITE_DEFAULTS`).

    ``frames``: frames read per detection (3 for flow; micro-motion reads 4), ``lookahead``: how
    many of them follow the key frame. ``flow_size``: the square size PWC-Net runs at (the paper
    resizes to 320 because PWC-Net needs multiples of 64); None runs it on the input size.
    ``priors``: a prior spec (:func:`~edge_stad.core.ssd_decode.check_prior_spec`), by default
    :func:`default_priors`; stored in ``config`` so that a runtime without torch decodes the output.
    """

    def __init__(self, name="flow-fusion", num_classes=24, input_size=300, backbone="vgg16", fusion="m-concat",
                 motion="flow", flow_net="pwc", flow_size=320, frames=None, lookahead=1, priors=None):
        super().__init__()
        h, w = square_size(input_size)
        for key, value, choices in (("name", name, VARIANTS), ("backbone", backbone, BACKBONES),
                                    ("fusion", fusion, FUSIONS), ("motion", motion, MOTIONS),
                                    ("flow_net", flow_net, tuple(FLOW_NETS))):
            if value not in choices:
                raise ConfigError(f"{key} must be one of {choices}, got {value!r}")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        frames = (4 if motion == "micro-motion" else 3) if frames is None else int(frames)
        if frames < 2 or not 0 <= lookahead < frames:
            raise ConfigError(f"need frames >= 2 and 0 <= lookahead < frames, got frames={frames}, "
                              f"lookahead={lookahead}")
        self.num_classes, self.frames, self.lookahead = num_classes, frames, int(lookahead)
        self.key_index = frames - 1 - self.lookahead
        self.input_hw = (h, w)
        self.backbone = VGGRFB() if backbone == "vgg16" else SSDLite(backbone)
        maps = self.backbone.feature_sizes(h, w)
        if min(min(m) for m in maps) < 1:
            raise ConfigError(f"{h}x{w} is too small for the {backbone} backbone: its feature maps would be {maps}")
        priors = check_prior_spec(default_priors(backbone, maps) if priors is None else priors)
        if [list(m) for m in priors["feature_maps"]] != [list(m) for m in maps]:
            raise ConfigError(f"the priors' feature maps {priors['feature_maps']} are not the {backbone} backbone's "
                              f"{[list(m) for m in maps]} at {h}x{w}")

        self.pairs = tuple((i, i + 1) for i in range(frames - 1))
        self.pwc = self.mm = None
        if motion == "flow":
            self.pwc = PWCNet(**FLOW_NETS[flow_net])
            fh, fw = (h, w) if flow_size is None else square_size(flow_size)
            if fh % self.pwc.divisor or fw % self.pwc.divisor:
                raise ConfigError(f"{flow_net} runs on multiples of {self.pwc.divisor}; its input {fh}x{fw} is not "
                                  "(set flow_size)")
            self.flow_hw = (fh, fw)
            motion_channels = 2 * len(self.pairs)
        elif motion == "micro-motion":
            self.mm = MicroMotion(frames)
            self.flow_hw = None
            motion_channels = self.mm.out_channels
        else:   # dis: the flows come with the input
            self.flow_hw = None
            motion_channels = 2 * len(self.pairs)
        #: the paper's fusion layer: the motion channels -> an RGB-shaped image for the shared backbone
        self.to_image = nn.Conv2d(motion_channels, 3, 1)
        channels = self.backbone.out_channels
        self.fusion = build_fusion(fusion, channels)
        self.head = MultiboxHead(channels, boxes_per_location(priors["aspect_ratios"]), num_classes,
                                 separable=backbone != "vgg16")
        self.register_buffer("priors", torch.from_numpy(prior_boxes(priors)), persistent=False)
        #: detach the flow before the detector: detection losses then do not reach the flow sub-network
        #: (the paper freezes it at first; the trainer's schedule sets this)
        self.flow_detached = False
        self.config = {
            "name": name, "num_classes": num_classes, "input_size": [h, w], "backbone": backbone, "fusion": fusion,
            "motion": motion, "flow_net": flow_net, "flow_size": None if flow_size is None else int(flow_size),
            "frames": frames, "lookahead": self.lookahead, "priors": priors,
        }

    # -- streaming pieces ---------------------------------------------------------------------
    def frame_features(self, frame):
        """One frame ``(N, 3, H, W)`` -> its PWC-Net pyramid (resized to ``flow_size`` first)."""
        if tuple(frame.shape[2:]) != self.flow_hw:
            frame = F.interpolate(frame, size=self.flow_hw, mode="bilinear", align_corners=False)
        return self.pwc.features(frame)

    def _full_flow(self, finest):
        """PWC-Net's finest flow (pixels / 20 at ``flow_size``) -> pixels at the input size ``(N, 2, H, W)``."""
        h, w = self.input_hw
        fh, fw = self.flow_hw
        up = F.interpolate(finest, size=(h, w), mode="bilinear", align_corners=False)
        return up * up.new_tensor([FLOW_SCALE * w / fw, FLOW_SCALE * h / fh])[None, :, None, None]

    def pair_flow(self, features_a, features_b):
        """Pyramids of frames a then b -> the flow a -> b in input pixels ``(N, 2, H, W)``."""
        return self._full_flow(self.pwc.flows(features_a, features_b)[-1])

    def flow_between(self, a, b):
        """Normalised frames ``a`` then ``b`` ``(N, 3, H, W)`` -> the flow a -> b in input pixels ``(N, 2, H, W)``
        (both pyramids as one batch): what an engine's ``flow`` graph computes per new frame pair."""
        n = a.shape[0]
        levels = self.frame_features(torch.cat((a, b), 0))
        return self.pair_flow([lvl[:n] for lvl in levels], [lvl[n:] for lvl in levels])

    def detect_flows(self, key, flows):
        """Key frame ``(N, 3, H, W)`` and its pairs' flows ``(N, pairs, 2, H, W)`` in input pixels -> ``loc, conf``."""
        return self.detect(key, self.flow_image(flows.reshape(key.shape[0], -1, *key.shape[2:])))

    def flow_image(self, motion):
        """Flows in input pixels ``(N, 2 * pairs, H, W)`` (or the micro-motion image) -> the 3-channel flow image."""
        if self.mm is None:
            motion = motion / FLOW_SCALE
        return self.to_image(motion)

    def detect(self, key, image):
        """Key frame and flow image ``(N, 3, H, W)`` -> ``loc (N, P, 4)``, ``conf (N, P, C + 1)``."""
        n = key.shape[0]
        maps = self.backbone(torch.cat((key, image), 0))      # both paths as one batch
        fused = self.fusion([m[:n] for m in maps], [m[n:] for m in maps])
        return self.head(fused)

    # -- whole model --------------------------------------------------------------------------
    def motion(self, clips, flows=None):
        """Clips (and, with ``motion="dis"``, their pairs' ``flows (B, pairs, 2, H, W)``) -> (flow image,
        per-level flows of every pair or None)."""
        if self.mm is not None:
            return self.flow_image(self.mm(clips)), None
        b, _, h, w = clips.shape
        if self.pwc is None:
            return self.flow_image(flows.reshape(b, -1, h, w)), None
        t, pairs = self.frames, len(self.pairs)
        pyramid = self.frame_features(clips.reshape(b * t, 3, h, w))

        def frames_at(index):
            return [lvl.reshape(b, t, *lvl.shape[1:])[:, index].reshape(b * pairs, *lvl.shape[1:]) for lvl in pyramid]

        levels = self.pwc.flows(frames_at([a for a, _ in self.pairs]), frames_at([c for _, c in self.pairs]))
        flows = self._full_flow(levels[-1]).reshape(b, 2 * pairs, h, w)
        if self.flow_detached:
            flows = flows.detach()
        return self.flow_image(flows), levels

    def forward(self, clips, flows=None):
        if clips.dim() != 4 or clips.shape[1] != 3 * self.frames or tuple(clips.shape[2:]) != self.input_hw:
            raise ValueError(f"expected clips (B, {3 * self.frames}, {self.input_hw[0]}, {self.input_hw[1]}) "
                             f"({self.frames} frames x 3), got {tuple(clips.shape)}")
        if (flows is None) != (self.config["motion"] != "dis"):
            raise ValueError("a motion='dis' model takes its pairs' DIS flows (B, pairs, 2, H, W) with the clips; "
                             "the others compute their motion themselves" if flows is None else
                             f"a motion={self.config['motion']!r} model takes no flows")
        if flows is not None and tuple(flows.shape) != (clips.shape[0], len(self.pairs), 2, *self.input_hw):
            raise ValueError(f"expected flows (B, {len(self.pairs)}, 2, {self.input_hw[0]}, {self.input_hw[1]}), "
                             f"got {tuple(flows.shape)}")
        image, levels = self.motion(clips, flows)
        k = 3 * self.key_index
        loc, conf = self.detect(clips[:, k:k + 3], image)
        out = {"loc": loc, "conf": conf}
        if self.training and levels is not None:
            out["flows"] = levels
        return out
