"""Parameters and MACs of STMA and STMA-Lite models, per component (true cost, ``torch.utils.flop_counter``).

Components: per frame ``backbone_2d`` (with STMA-Lite's decoder and shrink), ``size_head`` (the
per-frame ``wh`` branch) and ``downsample`` (the recognition branch's stride-2 convs); per clip
``backbone_3d``; per window ``centre_movement`` (heatmap and movement heads over the K stacked
frames), ``motion_excitation``, ``aggregation`` (STA) and ``classifier``. Two figures:

* ``clip``: one tubelet window computed from scratch, what ``model(clips)`` runs (every encoded
  frame of the window through the per-frame parts, the 3D branch on the clip, the window parts):
  the unit of the paper's model, and of the seed estimate of about 115 GMACs for STMA at 288x288;
* ``stream``: what one new frame costs when per-frame outputs are cached: the per-frame parts once,
  the 3D branch once every s frames (keyed by ``str(s)``; every frame for a model without refresh),
  the window parts once.
"""
import copy

import torch

from edge_stad.bench.complexity import count_macs, count_params

PER_FRAME = ("backbone_2d", "size_head", "downsample")
WINDOW = ("centre_movement", "motion_excitation", "aggregation", "classifier")
COMPONENTS = PER_FRAME + ("backbone_3d",) + WINDOW


def component_params(model):
    """Parameters of each of :data:`COMPONENTS` (they add up to the model's)."""
    action = model.action
    modules = {
        "backbone_2d": [model.backbone, model.deconv_layer, model.shrink],
        "size_head": [model.detection.wh],
        "downsample": [action.down] if action is not None else [],
        "backbone_3d": [model.backbone_3d],
        "centre_movement": [model.detection.hm, model.detection.mov],
        "motion_excitation": [action.me] if action is not None else [],
        "aggregation": [action.sta] if action is not None else [],
        "classifier": [action.classifier] if action is not None else [],
    }
    return {c: sum(count_params(m) for m in mods) for c, mods in modules.items()}


def _counted(fn):
    """``(MACs, result)`` of one call of ``fn``."""
    out = []
    return count_macs(lambda: out.append(fn())), out[0]


def _component_macs(model, frame, clips, layout):
    """MACs of each part on its real input: per-frame parts on one frame, the rest on one window."""
    encode, (feat, _, act) = _counted(lambda: model.encode(frame))
    k, motion = layout.K, layout.motion[1] - layout.motion[0] + 1
    action = model.action
    macs = dict.fromkeys(COMPONENTS, 0.0)
    macs["size_head"] = count_macs(lambda: model.detection.size(feat))
    macs["downsample"] = count_macs(lambda: action.downsample(feat)) if action is not None else 0.0
    macs["backbone_2d"] = encode - macs["size_head"] - macs["downsample"]
    macs["centre_movement"] = count_macs(lambda: model.detection(feat.unsqueeze(1).expand(-1, k, -1, -1, -1)))
    feat3d = None
    if model.backbone_3d is not None:
        macs["backbone_3d"], feat3d = _counted(lambda: model.encode_3d(clips))
    if action is not None:
        acts = act.unsqueeze(1).expand(-1, motion, -1, -1, -1)
        if action.me is not None:
            macs["motion_excitation"], acts = _counted(lambda: action.me(acts))
        fused_in = acts.flatten(1, 2) if feat3d is None else torch.cat((acts.flatten(1, 2), feat3d), 1)
        macs["aggregation"], fused = _counted(lambda: action.sta(fused_in))
        macs["classifier"] = count_macs(lambda: action.classifier(fused.mean((2, 3), keepdim=True)))
    return macs


def profile_stma(model, refresh_every=(1,)):
    """Params and MACs per component of an STMA model at its configured input size.

    Counting runs on a ``meta``-device copy (shapes only). Returns ``params`` and ``macs`` (``clip``:
    one window from scratch; ``stream``: per new frame, keyed by the 3D refresh interval), each a
    ``total`` plus a per-component split (:data:`COMPONENTS`), and ``encoded_frames`` per window.
    """
    cfg = model.config
    h, w = cfg["input_size"]
    layout = model.layout
    meta = copy.deepcopy(model).to("meta").eval().requires_grad_(False)
    frame = torch.zeros(1, 3, h, w, device="meta")
    clips = torch.zeros(1, 3 * cfg["clip_len"], h, w, device="meta")
    per = _component_macs(meta, frame, clips, layout)
    encoded = layout.encoded[1] - layout.encoded[0] + 1

    def split(components):
        return {"total": sum(components.values()), "components": components}

    clip = split({c: per[c] * (encoded if c in PER_FRAME else 1) for c in COMPONENTS})
    refresh = refresh_every if model.backbone_3d is not None else (1,)
    stream = {str(s): split({c: per[c] / s if c == "backbone_3d" else per[c] for c in COMPONENTS}) for s in refresh}
    return {"config": dict(cfg), "encoded_frames": encoded,
            "params": {"total": count_params(model), "components": component_params(model)},
            "macs": {"clip": clip, "stream": stream}}

