"""Checkpoint I/O for this project's checkpoints and the authors' released AMMA checkpoints.

Everything is read with ``torch.load(weights_only=True)``: tensors and plain containers
only, never arbitrary pickled objects. A checkpoint must match the model exactly (no
missing, unexpected or reshaped keys, no non-finite weights); otherwise loading fails
with a :class:`~edge_stad.errors.CheckpointError` that lists what differs, because a
partially loaded detector still runs and silently gives wrong answers.
"""
import logging
import os
import pickle
import re

import torch

from edge_stad.atomic import atomic_write
from edge_stad.errors import CheckpointError, ConfigError
from edge_stad.model_config import CHECKPOINT_FAMILIES, check_labels, check_model_config, short_repr
from edge_stad.models.amma import canonical_backbone
from edge_stad.models.head import CLIP_CHANNELS
from edge_stad.models.registry import create_model
from edge_stad.version import __version__

log = logging.getLogger(__name__)

FORMAT = "edge_stad.checkpoint"
VERSION = 1
# Config entries that the weights themselves determine (an override must agree).
STRUCTURAL = ("name", "backbone", "K", "num_classes", "decoder", "fusion_stages", "head_conv")


def save_checkpoint(path, model, **extra):
    """Write ``model`` (its ``config`` and weights) plus ``extra`` entries atomically to ``path``.

    ``extra`` values must be tensors, numbers, strings or containers of those (what
    ``weights_only`` loading accepts), e.g. ``epoch=3, optimizer=opt.state_dict()``.
    """
    payload = {"format": FORMAT, "version": VERSION, "edge_stad_version": __version__,
               "model_config": dict(model.config), "state_dict": model.state_dict()}
    clash = set(extra) & set(payload)
    if clash:
        raise ValueError(f"extra checkpoint entries may not replace {sorted(clash)}")
    payload.update(extra)
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def read_checkpoint(path, map_location="cpu"):
    """Load a checkpoint file safely and normalise its layout.

    Returns a dict with ``layout`` (``"edge_stad"`` or ``"reference"``), ``model_config``
    (None for reference checkpoints), ``state_dict`` (native key names) and ``meta`` (the
    remaining entries: epoch, optimizer state, ...).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {path}: it contains objects other than tensors and plain containers, which could "
            f"run code when unpickled ({str(e).splitlines()[0]}). Only load checkpoints from a source you trust, "
            "re-saved as plain "
            "state dicts.") from None
    except Exception as e:  # a damaged or foreign file makes torch's reader raise anything (KeyError, ...)
        raise CheckpointError(f"{path} is not a readable torch checkpoint (corrupt or truncated, or not a "
                              f"checkpoint at all): {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict with a state_dict")
    if obj.get("format") == FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"{path}: field 'version' is {short_repr(version)}; expected an int in [1, "
                                  f"{VERSION}]")
        if version > VERSION:
            raise CheckpointError(f"{path} is checkpoint format version {version}, this edge_stad ({__version__}) "
                                  f"reads up to {VERSION}")
        config = check_model_config(obj.get("model_config"), CheckpointError, path, prefix="model_config.",
                                    families=CHECKPOINT_FAMILIES)
        meta = {k: v for k, v in obj.items() if k not in ("model_config", "state_dict")}
        if meta.get("labels") is not None:
            meta["labels"] = list(check_labels(meta["labels"], config["num_classes"], CheckpointError, path))
        return {"layout": "edge_stad", "model_config": dict(config),
                "state_dict": _tensor_dict(obj.get("state_dict"), path), "meta": meta}
    if "state_dict" in obj:
        sd, meta = obj["state_dict"], {k: v for k, v in obj.items() if k != "state_dict"}
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, meta = obj, {}
    else:
        raise CheckpointError(f"{path} has neither an edge_stad checkpoint header nor a 'state_dict' entry")
    return {"layout": "reference", "model_config": None,
            "state_dict": reference_to_native(_tensor_dict(sd, path)), "meta": meta}


def _tensor_dict(sd, path):
    if (not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd)
            or not all(isinstance(v, torch.Tensor) for v in sd.values())):
        raise CheckpointError(f"the state_dict in {path} is not a mapping of names to tensors")
    return sd


def reference_to_native(state_dict):
    """Map the authors' key names to this project's (see reference doc section 2).

    Strips a DataParallel ``module.`` prefix and applies their stream loader's legacy
    renames: ``pa.*`` -> ``mm.*`` and ``branch.mov.2.*`` -> ``branch.mov_cls.0.*``.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith("pa."):
            key = "mm." + key[len("pa."):]
        if key.startswith("branch.mov.2."):
            key = "branch.mov_cls.0." + key[len("branch.mov.2."):]
        out[key] = value
    return out


def infer_amma_config(state_dict):
    """Recover the structural AMMA config from native-named weights (reference checkpoints carry none)."""
    keys = set(state_dict)
    if "backbone.layer4.0.conv1.weight" in keys:
        backbone = "resnet18"
    elif "backbone.features.18.0.weight" in keys:
        backbone = "mobilenetv2"
    elif "backbone.conv_last.0.weight" in keys:
        backbone = "shufflenetv2"
    else:
        raise CheckpointError("cannot tell the backbone of this checkpoint: none of the ResNet-18, MobileNetV2 or "
                              "ShuffleNetV2 marker keys is present")
    try:
        hm = state_dict["branch.hm.0.weight"]
        classes = state_dict["branch.hm_cls.0.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"checkpoint has no AMMA head: key {e} is missing") from None
    fusion = len([k for k in keys if re.fullmatch(r"backbone\.rgb_weight\d+", k)])
    config = {"name": "amma", "backbone": backbone, "K": hm.shape[1] // CLIP_CHANNELS, "num_classes": classes,
              "decoder": "dcn" if "deconv_layer.deconv_layers.0.conv_offset_mask.weight" in keys else "conv",
              "fusion_stages": fusion, "head_conv": hm.shape[0]}
    return config


def load_checkpoint(path, map_location="cpu", **overrides):
    """Build the model a checkpoint describes and load its weights; returns the model in eval mode.

    Accepts this project's checkpoints and the authors' AMMA checkpoints (whose
    architecture is inferred from the weights; their clip length is not stored, pass
    ``clip_len`` if it is not the reference's 5). ``overrides`` may set non-structural
    config (``clip_len``, ``input_size``, ``mm_pool``); a structural one that disagrees with
    the weights (``K=3`` for a K=5 checkpoint) is an error.
    """
    ckpt = read_checkpoint(path, map_location)
    sd = ckpt["state_dict"]
    config = ckpt["model_config"] if ckpt["layout"] == "edge_stad" else infer_amma_config(sd)
    if "backbone" in overrides:
        overrides["backbone"] = canonical_backbone(overrides["backbone"])
    for key, value in overrides.items():
        if key in STRUCTURAL and key in config and config[key] != value:
            raise CheckpointError(f"{path} was trained with {key}={config[key]!r}, not {value!r}")
    config.update(overrides)
    try:
        model = create_model(**config)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path} describes a model this version cannot build: {e}") from None
    ignored = _reference_dead_keys(model, sd) if ckpt["layout"] == "reference" else ()
    if ignored:
        log.info("%s: ignoring %d reference parameters that never run (%s ...)", path, len(ignored), ignored[0])
    load_state_dict_checked(model, {k: v for k, v in sd.items() if k not in set(ignored)}, source=path)
    return model.eval()


def _reference_dead_keys(model, state_dict):
    """The authors' MobileNetV2 builds ``features_pa[7:11]`` but never runs them; those keys are dropped."""
    features_pa = getattr(model.backbone, "features_pa", None)
    if features_pa is None:
        return []
    dead = []
    for key in state_dict:
        m = re.match(r"backbone\.features_pa\.(\d+)\.", key)
        if m and int(m.group(1)) >= len(features_pa):
            dead.append(key)
    return sorted(dead)


def load_state_dict_checked(model, state_dict, source="state dict"):
    """``model.load_state_dict(strict=True)`` with a precise error listing every mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [f"{k} {tuple(v.shape)} (model {tuple(own[k].shape)})"
                for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    nonfinite = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if missing or unexpected or reshaped or nonfinite:
        lines = [f"{source} does not match the {_describe(model)} model it should load into:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", reshaped),
                             ("non-finite values", nonfinite)):
            if items:
                shown = ", ".join(items[:8]) + (f" ... ({len(items) - 8} more)" if len(items) > 8 else "")
                lines.append(f"  {title} ({len(items)}): {shown}")
        hint = _hint(missing, unexpected)
        if hint:
            lines.append("  hint: " + hint)
        raise CheckpointError("\n".join(lines))
    full = dict(own)
    full.update(state_dict)
    model.load_state_dict(full, strict=True)


def _describe(model):
    cfg = getattr(model, "config", {})
    return " ".join(f"{k}={cfg[k]}" for k in ("name", "backbone", "K", "num_classes", "decoder") if k in cfg)


def _hint(missing, unexpected):
    if any("conv_offset_mask" in k for k in unexpected):
        return "the checkpoint has a deformable decoder: build the model with decoder='dcn'"
    if any("conv_offset_mask" in k for k in missing):
        return "the checkpoint has a plain-conv decoder: build the model with decoder='conv'"
    motion_keys = r"rgb_weight|resnext_layer|features_pa|features_mm|conv1_5|conv1_mm"
    if any(re.search(motion_keys, k) for k in missing + unexpected):
        return "the number of fusion stages differs (fusion_stages)"
    return ""
