"""Parameters and MACs of the flow-fusion detectors per component, per output frame.

Components: ``flow`` (PWC-Net: the pyramid of each frame and the estimation of each pair) or
``micro_motion``, ``flow_image`` (the 1x1 conv to 3 channels), ``backbone`` (both paths, one batch
of 2), ``fusion`` (the per-scale blocks) and ``head``. Two figures, true cost from
``torch.utils.flop_counter`` on a ``meta`` copy (shapes only):

* ``frame``: everything for one detection, as ``forward`` runs it (every frame's pyramid, every pair);
* ``stream``: one new frame with the caches of the streaming split - one pyramid and one pair (the
  other pair's flow is the one estimated a frame earlier); micro-motion and the rest as ``frame``.

A ``motion="dis"`` model's flow is OpenCV's, on the host: it counts no MACs here (its time shows in
the benchmark's frames/s).

The paper reports no parameter or MAC counts, only times; :data:`PAPER_REPORTED` holds what it and
PWC-Net report, printed beside the counts for reference.
"""
import copy

import torch

from edge_stad.bench.complexity import count_macs, count_params

COMPONENTS = ("flow", "micro_motion", "flow_image", "backbone", "fusion", "head")
PAPER_REPORTED = {
    "pwc_net_params_M": 8.75,              # PWC-Net (Sun et al. 2018), Table of model sizes
    "flow_ms_at_320": 6.0,                 # flow-fusion paper Table 1, GTX 1080Ti
    "network_ms_both_paths": 24.1,         # flow-fusion paper section 4.7, GTX 1080Ti
    "fps_end_to_end": 37.8,                # with tube generation (2.5 ms per frame)
}


def _parts(model, clips):
    """MACs of each component for one detection on ``clips`` (batch 1), and of one pyramid / one pair."""
    b, _, h, w = clips.shape
    k = 3 * model.key_index
    key = clips[:, k:k + 3]
    flows = clips.new_zeros(b, len(model.pairs), 2, h, w) if model.config["motion"] == "dis" else None
    image, _ = model.motion(clips, flows)
    maps = model.backbone(torch.cat((key, image), 0))
    rgb, flow = [m[:b] for m in maps], [m[b:] for m in maps]
    fused = model.fusion(rgb, flow)
    parts = {c: 0.0 for c in COMPONENTS}
    one = {}
    if model.pwc is not None:
        frame = clips[:, :3]
        pyramid = model.frame_features(frame)
        one["pyramid"] = count_macs(lambda: model.frame_features(frame))
        one["pair"] = count_macs(lambda: model.pair_flow(pyramid, pyramid))
        parts["flow"] = model.frames * one["pyramid"] + len(model.pairs) * one["pair"]
        motion = clips.new_zeros(b, 2 * len(model.pairs), h, w)
    elif model.mm is not None:
        parts["micro_motion"] = count_macs(lambda: model.mm(clips))
        motion = model.mm(clips)
    else:   # DIS flow, computed by OpenCV on the host: not network MACs
        motion = flows.reshape(b, -1, h, w)
    parts["flow_image"] = count_macs(lambda: model.flow_image(motion))
    parts["backbone"] = count_macs(lambda: model.backbone(torch.cat((key, image), 0)))
    parts["fusion"] = count_macs(lambda: model.fusion(rgb, flow))
    parts["head"] = count_macs(lambda: model.head(fused))
    return parts, one


def profile_flow_fusion(model):
    """Params and true MACs per output frame of a flow-fusion model at its configured input size.

    Returns ``params`` and ``macs`` (``frame`` and ``stream``), each a ``total`` plus a per-component
    split (:data:`COMPONENTS`), and ``paper_reported``.
    """
    cfg = model.config
    h, w = cfg["input_size"]
    meta = copy.deepcopy(model).to("meta").eval().requires_grad_(False)
    clips = torch.zeros(1, 3 * cfg["frames"], h, w, device="meta")
    frame, one = _parts(meta, clips)
    stream = dict(frame)
    if one:
        stream["flow"] = one["pyramid"] + one["pair"]

    def split(components):
        return {"total": sum(components.values()), "components": components}

    modules = {"flow": model.pwc, "micro_motion": model.mm, "flow_image": model.to_image,
               "backbone": model.backbone, "fusion": model.fusion, "head": model.head}
    params = {c: count_params(modules[c]) for c in COMPONENTS}
    return {"config": dict(cfg), "params": {"total": count_params(model), "components": params},
            "macs": {"frame": split(frame), "stream": split(stream)}, "paper_reported": dict(PAPER_REPORTED)}
