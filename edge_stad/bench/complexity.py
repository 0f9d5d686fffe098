"""Parameters and MACs of AMMA and MENet models, per component, in the conventions people quote.

MACs come from ``torch.utils.flop_counter`` (MACs = FLOPs / 2); nothing here counts
layers by hand. Three figures per model, all "per clip":

* ``paper`` - the convention behind AMMA's Table 3 (5.2 / 1.3 / 1.0 GMACs): the
  normal-mode cost of a K-clip tubelet divided by K, counted the way the authors'
  counter (a vendored ``ptflops``) counts: conv multiply-adds plus one add per output
  for a conv bias, 2 ops per element for an affine BN, 1 per element for ReLU/ReLU6
  and per *input* element for max-pooling. That counter cannot see the deformable
  conv's main convolution (a custom op: only its offset conv is counted), and it
  counts ConvTranspose2d on the *output* grid (4x the true cost, 0.34 G); Table 3
  only matches when the transposed conv is left out, so it is left out here.
* ``normal`` - every convolution and matmul the model really runs in normal mode
  (deformable conv included, transposed conv at its true cost), divided by K.
* ``stream`` - what one new clip really costs in streaming: the encoder on one clip
  plus the head on K cached features (the stacked branches rerun for every clip).

MENet (:func:`profile_menet`) has one convention, the true cost: ``frame`` is every
component on every output frame; ``stream`` refreshes the 3D branch every s frames.
"""
import copy
import math

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

aten = torch.ops.aten
COMPONENTS = ("micro_motion", "backbone", "motion_stream", "decoder", "head")


def _numel(shape):
    return math.prod(shape) if shape is not None else 0


def _paper_conv(x_shape, w_shape, bias, stride, padding, dilation, transposed, *args, out_shape=None, **kwargs):
    if transposed:
        return 0
    flops = conv_flop_count(x_shape, w_shape, out_shape, transposed=False)
    return flops + (2 * _numel(out_shape) if bias is not None else 0)


def _paper_bn(x_shape, weight, *args, **kwargs):
    return 2 * (2 if weight is not None else 1) * _numel(x_shape)


def _paper_elementwise(x_shape, *args, **kwargs):
    return 2 * _numel(x_shape)


# FLOP formulas (2 per MAC) reproducing the reference counter's rules, see module docstring.
PAPER_MAPPING = {
    aten.convolution: _paper_conv,
    aten.native_batch_norm: _paper_bn,
    aten._native_batch_norm_legit_no_training: _paper_bn,
    aten._native_batch_norm_legit: _paper_bn,
    aten.relu: _paper_elementwise,
    aten.relu_: _paper_elementwise,
    aten.hardtanh: _paper_elementwise,
    aten.hardtanh_: _paper_elementwise,
    aten.max_pool2d_with_indices: _paper_elementwise,
}


def count_params(module):
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def count_macs(fn, custom_mapping=None):
    """MACs of everything ``fn()`` runs, from ``torch.utils.flop_counter`` (FLOPs / 2)."""
    counter = FlopCounterMode(display=False, custom_mapping=custom_mapping or {})
    with torch.no_grad(), counter:
        fn()
    return counter.get_total_flops() / 2


def _component_macs(model, window, mapping):
    """MACs per part over a ``(B, K, 3n, H, W)`` window; each part is counted in its own pass."""
    b, k = window.shape[:2]
    clips = window.reshape(b * k, *window.shape[2:])
    rgb = clips[:, -3:]
    motion = model.mm(clips) if model.mm is not None else None
    features = model.backbone(rgb, motion)
    decoded = model.deconv_layer(features)
    feat, wh = model.branch.encode(decoded)
    feats, whs = feat.reshape(b, k, *feat.shape[1:]), wh.reshape(b, k, *wh.shape[1:])
    fused = motion is not None
    parts = {
        "micro_motion": count_macs(lambda: model.mm(clips), mapping) if fused else 0.0,
        "motion_stream": count_macs(lambda: model.backbone.forward_motion(motion), mapping) if fused else 0.0,
        "backbone": count_macs(lambda: model.backbone(rgb, motion), mapping),
        "decoder": count_macs(lambda: model.deconv_layer(features), mapping),
        "head_per_clip": count_macs(lambda: model.branch.encode(decoded), mapping),
        "head_stacked": count_macs(lambda: model.branch(feats, whs), mapping),
        "dcn_main": 0.0,
    }
    parts["backbone"] -= parts["motion_stream"]
    first = model.deconv_layer.deconv_layers[0]
    if hasattr(first, "conv_offset_mask"):
        parts["dcn_main"] = count_macs(lambda: first(features), mapping) - count_macs(
            lambda: first.conv_offset_mask(features), mapping)
    return parts


def _component_params(model):
    motion = sum(count_params(getattr(model.backbone, n)) for n in model.backbone.motion_modules)
    fusion = sum(p.numel() for n, p in model.backbone.named_parameters(recurse=False) if n.startswith("rgb_weight"))
    return {
        "micro_motion": count_params(model.mm),
        "backbone": count_params(model.backbone) - motion - fusion,
        "motion_stream": motion + fusion,
        "decoder": count_params(model.deconv_layer),
        "head": count_params(model.branch),
    }


def profile_amma(model, batch=1):
    """Params and MACs (per clip) of an AMMA model at its configured input size.

    Counting runs on a ``meta``-device copy (shapes only), so it is instant and needs no
    memory. Returns ``params`` and ``macs`` (``paper``, ``normal``, ``stream``), each a
    ``total`` plus a per-component split (see :data:`COMPONENTS`).
    """
    cfg = model.config
    k, n = cfg["K"], cfg["clip_len"]
    h, w = cfg["input_size"]
    meta = copy.deepcopy(model).to("meta").eval().requires_grad_(False)
    window = torch.zeros(batch, k, 3 * n, h, w, device="meta")
    true = _component_macs(meta, window, None)
    paper = _component_macs(meta, window, PAPER_MAPPING)
    paper["decoder"] -= paper["dcn_main"]  # invisible to the reference counter

    def per_clip(parts, stacked_runs):
        comps = {c: parts[c] / (batch * k) for c in COMPONENTS[:-1]}
        comps["head"] = (parts["head_per_clip"] + parts["head_stacked"] * stacked_runs) / (batch * k)
        return {"total": sum(comps.values()), "components": comps}

    first = model.deconv_layer.deconv_layers[0]
    return {
        "config": dict(cfg),
        "params": {"total": count_params(model), "components": _component_params(model),
                   "dcn_offset": count_params(getattr(first, "conv_offset_mask", None))},
        "macs": {
            "paper": per_clip(paper, 1),
            "normal": per_clip(true, 1),
            "stream": per_clip(true, k),  # the stacked branches run once per new clip, K times per K clips
        },
        "dcn_main_macs_per_clip": true["dcn_main"] / (batch * k),
    }


MENET_COMPONENTS = ("backbone_3d", "non_local", "srm", "backbone_2d", "cfam", "head")
MENET_BRANCH_3D = ("backbone_3d", "non_local")  # what ``encode_3d`` runs, cached in stream mode


def _menet_component_macs(model, clips):
    """MACs of each MENet part on ``clips``; each part is counted in its own pass on its real input."""
    frames = clips[:, -3 * model.frames_2d:]
    video = model.clip_to_video(clips)
    feat = model.backbone_3d(video)
    image = model.image_2d(frames)
    fused = torch.cat((model.encode_3d(clips), model.backbone_2d(image)), 1)
    attended = model.cfam(fused)
    return {
        "backbone_3d": count_macs(lambda: model.backbone_3d(video)),
        "non_local": count_macs(lambda: model.non_local(feat)) if model.non_local is not None else 0.0,
        "srm": count_macs(lambda: model.srm(frames)) if model.srm is not None else 0.0,
        "backbone_2d": count_macs(lambda: model.backbone_2d(image)),
        "cfam": count_macs(lambda: model.cfam(fused)),
        "head": count_macs(lambda: model.conv_final(attended)),
    }


def profile_menet(model, batch=1, refresh_every=(2, 3, 4)):
    """Params and true MACs per output frame of a MENet model at its configured input size.

    Counting runs on a ``meta``-device copy. Returns ``params`` and ``macs`` (``frame``: the
    full model on every frame; ``stream``: keyed by ``str(s)``, the 3D branch - backbone and
    non-local block - run once every s frames, the rest every frame), each a ``total`` plus a
    per-component split (see :data:`MENET_COMPONENTS`).
    """
    cfg = model.config
    h, w = cfg["input_size"]
    meta = copy.deepcopy(model).to("meta").eval().requires_grad_(False)
    clips = torch.zeros(batch, 3 * cfg["clip_len"], h, w, device="meta")
    frame = {c: m / batch for c, m in _menet_component_macs(meta, clips).items()}

    def split(components):
        return {"total": sum(components.values()), "components": components}

    stream = {str(s): split({c: m / s if c in MENET_BRANCH_3D else m for c, m in frame.items()})
              for s in refresh_every}
    modules = {"backbone_3d": model.backbone_3d, "non_local": model.non_local, "srm": model.srm,
               "backbone_2d": model.backbone_2d, "cfam": model.cfam, "head": model.conv_final}
    params = {c: count_params(modules[c]) for c in MENET_COMPONENTS}
    return {"config": dict(cfg), "params": {"total": count_params(model), "components": params},
            "macs": {"frame": split(frame), "stream": stream}}
