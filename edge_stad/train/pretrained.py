"""Initialise an AMMA model from pretrained weights in a local file (nothing is downloaded).

Recognised layouts, by their key names:

* torchvision ``resnet18`` / ``mobilenet_v2`` / ``shufflenet_v2_x1_0`` ImageNet weights;
* CenterNet ``ctdet_coco_resdcn18`` (backbone, first deconv stage, ``wh`` head), as the
  authors initialise AMMA-ResNet-18;
* SSDLite MobileNetV2 (``backbone.features.*``) and the ImageNet ShuffleNetV2 in the
  authors' layout (``features.*.banch*``), as they initialise the lite models;
* an edge_stad / AMMA checkpoint (e.g. trained on another dataset): everything whose
  shape fits, so a new class count or K only re-initialises the affected head layers.

Backbone weights are also copied into the motion stream's duplicated stages (the
authors copy only ``bn1.weight`` into ``bn1_5``; all of ``bn1`` is copied here).
"""
import logging
import re

import torch

from edge_stad.errors import CheckpointError
from edge_stad.models.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

# torchvision ShuffleNetV2 stage -> first index in the authors' flat ``features``
_SHUFFLE_STAGES = {"stage2": 0, "stage3": 4, "stage4": 12}
# motion-stream module <- the RGB module it duplicates
_MOTION_COPIES = {
    "resnet18": [("conv1.", "conv1_5."), ("bn1.", "bn1_5."), ("layer1.", "resnext_layer1."),
                 ("layer2.", "resnext_layer2."), ("layer3.", "resnext_layer3."), ("layer4.", "resnext_layer4.")],
    "mobilenetv2": [("features.", "features_pa.")],
    "shufflenetv2": [("conv1.", "conv1_mm."), ("features.", "features_mm.")],
}


def _backbone_names(state_dict):
    """Source keys -> this project's names (``backbone.*``, ``deconv_layer.*``, ``branch.*``)."""
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(("backbone.", "deconv_layer.", "branch.", "mm.")):
            out[key] = value  # an AMMA / edge_stad state dict, or SSDLite's backbone.features
            continue
        m = re.match(r"(stage[234])\.(\d+)\.branch([12])\.(.*)", key)
        if m:
            key = f"features.{_SHUFFLE_STAGES[m.group(1)] + int(m.group(2))}.banch{m.group(3)}.{m.group(4)}"
        elif key.startswith("conv5."):
            key = "conv_last." + key[len("conv5."):]
        if key.startswith("deconv_layers."):  # CenterNet: keep the first stage (layers 0-5)
            index = int(key.split(".")[1])
            if index < 6:
                out["deconv_layer." + key] = value
            continue
        if key.startswith("wh."):  # CenterNet's size head has AMMA's per-clip wh branch shape
            out["branch." + key] = value
            continue
        if key.startswith(("fc.", "classifier.", "hm.", "reg.")):
            continue
        out["backbone." + key] = value
    return out


def _with_motion_copies(names, backbone):
    out = dict(names)
    for key, value in names.items():
        for rgb, motion in _MOTION_COPIES.get(backbone, ()):  # STMA's DLA-34 has no motion stream
            if key.startswith("backbone." + rgb):
                out.setdefault("backbone." + motion + key[len("backbone." + rgb):], value)
    return out


def load_pretrained(model, path):
    """Copy every weight of ``path`` that has a place of the same shape in ``model``; returns a report."""
    ckpt = read_checkpoint(path)
    source = _with_motion_copies(_backbone_names(ckpt["state_dict"]), model.config["backbone"])
    target = model.state_dict()
    loaded, skipped = {}, []
    for key, value in source.items():
        if key in target and target[key].shape == value.shape:
            loaded[key] = value
        elif key in target:
            skipped.append(f"{key} {tuple(value.shape)} (model {tuple(target[key].shape)})")
    if not loaded:
        raise CheckpointError(f"no weight of {path} fits this {model.config['backbone']} model: is it the "
                              f"right backbone? (first keys: {list(ckpt['state_dict'])[:3]})")
    with torch.no_grad():
        for key, value in loaded.items():
            target[key].copy_(value)
    untouched = [k for k in target if k not in loaded and not k.endswith("num_batches_tracked")]
    report = {"loaded": len(loaded), "shape_mismatch": skipped, "not_in_file": untouched}
    log.info("%s: loaded %d tensors, %d shape mismatches, %d model tensors keep their init",
             path, len(loaded), len(skipped), len(untouched))
    return report
