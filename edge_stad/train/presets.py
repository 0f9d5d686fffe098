"""Training presets per model family: the papers' and the authors' settings, and a CPU preset for the
synthetic set.

A preset fills every option the user does not give on the command line. Learning-rate
schedules are per epoch (``step``: multiply by ``gamma`` at each milestone epoch;
``halve``: halve every epoch after ``milestones[0]``; ``cosine``: cosine decay to 0) or, as
MENet's paper states them, per optimisation step (``iter-step``: multiply by ``gamma`` at each
milestone step; ``iter-every``: multiply by ``gamma`` every ``milestones[0]`` steps).
"""
import math

from edge_stad.errors import ConfigError

_PAPER_LR = {"resnet18": 5e-4, "mobilenetv2": 2.5e-4, "shufflenetv2": 2.5e-4}

PRESETS = {
    # AMMA paper section 4.1: Adam, batch 16, 10 epochs; JHMDB: x0.1 at epochs 6 and 8.
    "paper-jhmdb": dict(optimizer="adam", lr=_PAPER_LR, weight_decay=0.0, epochs=10, batch_size=16, K=5,
                        clip_len=5, input_size=288, schedule="step", milestones=(6, 8), gamma=0.1, augment=True),
    # UCF101-24: 10 epochs, the learning rate halved every epoch after the second.
    "paper-ucf24": dict(optimizer="adam", lr=_PAPER_LR, weight_decay=0.0, epochs=10, batch_size=16, K=5,
                        clip_len=5, input_size=288, schedule="halve", milestones=(2,), gamma=0.5, augment=True),
    # The authors' README command: AdamW (wd 0.03), lr 2.5e-4, 16 epochs, x0.1 at epoch 8.
    "reference-code": dict(optimizer="adamw", lr=2.5e-4, weight_decay=0.03, epochs=16, batch_size=16, K=5,
                           clip_len=5, input_size=288, schedule="step", milestones=(8,), gamma=0.1, augment=True),
    # From scratch on the synthetic benchmark on a 2-core CPU (see benchmarks/README.md). No augmentation:
    # the generator already randomises appearance, placement, camera and lighting, and in a short budget
    # the reference's augmentation costs more accuracy than it gives (measured there).
    "synthetic": dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, epochs=20, batch_size=8, K=3, clip_len=5,
                      input_size=128, schedule="cosine", milestones=(), gamma=0.1, augment=False),
}
# `edge-stad demo`: the synthetic preset tuned to learn in a few hundred steps (--max-steps; the cosine
# schedule ends there): batch 16 learned more per sample seen than batch 8 or 32, and at 400 steps lr 6e-3
# more than 4e-3 or 8e-3 (whose loss stayed higher throughout), measured in benchmarks/results/demo_recipe.md.
PRESETS["demo"] = dict(PRESETS["synthetic"], batch_size=16, lr=6e-3, warmup=30)


# MENet (Liu et al., training section): momentum SGD 0.9, weight decay 5e-4. UCF101-24: lr 1e-3, batch 32, halved
# at 20k/30k/40k/50k steps; JHMDB-21: lr 1e-4, batch 16, halved every 10k steps. 16 frames at 224 (YOWO).
# The paper states no epoch count: the 5 here is a cap; --max-steps ends a run where its schedule does.
_MENET_PAPER = dict(optimizer="sgd", weight_decay=5e-4, epochs=5, clip_len=16, input_size=224, srm_frames=4,
                    gamma=0.5, augment=True, K=1)
MENET_PRESETS = {
    "paper-ucf24": dict(_MENET_PAPER, lr=1e-3, batch_size=32, schedule="iter-step",
                        milestones=(20000, 30000, 40000, 50000)),
    "paper-jhmdb": dict(_MENET_PAPER, lr=1e-4, batch_size=16, schedule="iter-every", milestones=(10000,)),
    # From scratch on the synthetic benchmark on a 2-core CPU, matched to AMMA's synthetic preset. The 3D
    # ShuffleNetV2 at width 1.0: at 2.0 (the lite model's default) one training step of batch 8 at 128x128
    # took 10x longer on the 2-core CPU (3D branch forward + backward 8.2 s against 0.8 s; PyTorch's CPU
    # depthwise Conv3d), which would leave a time-budgeted run a few hundred steps.
    "synthetic": dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, epochs=20, batch_size=8, K=1, clip_len=8,
                      input_size=128, srm_frames=4, width_3d=1.0, schedule="cosine", milestones=(), gamma=0.1,
                      augment=False),
}
# STMA (Zhang and Zhao, section 3.1): Adam, cosine annealing from 1e-4, batch 24, 16 epochs on UCF-24 and 12
# on JHMDB, K=5 at 288x288; the clip length is the variant's (16, lite 8). From scratch on the synthetic set
# as AMMA's synthetic preset, with K=5 and, for the lite 3D ShuffleNetV2, width 1.0 (MENet's reason).
_STMA_PAPER = dict(optimizer="adam", lr=1e-4, weight_decay=0.0, batch_size=24, K=5, input_size=288, schedule="cosine",
                   milestones=(), gamma=0.1, augment=True)
STMA_PRESETS = {
    "paper-ucf24": dict(_STMA_PAPER, epochs=16),
    "paper-jhmdb": dict(_STMA_PAPER, epochs=12),
    "synthetic": dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, epochs=20, batch_size=8, K=5, input_size=128,
                      schedule="cosine", milestones=(), gamma=0.1, augment=False),
}
STMA_LITE_PRESETS = dict(STMA_PRESETS, synthetic=dict(STMA_PRESETS["synthetic"], width_3d=1.0))
# flow-fusion (Zhang, He, Tu et al. 2020, section 4.3): SGD 0.9, weight decay 5e-4, lr 1e-3 x0.1 at 30k, 60k and
# 100k iterations, 150k in all, 40 sequences per batch, the flow sub-network unfrozen at 75k (section 4.5),
# photometric distortion, crop and mirror; RFBNet300 at 300x300. The paper states one recipe for its datasets.
_FLOW_PAPER = dict(optimizer="sgd", lr=1e-3, weight_decay=5e-4, epochs=1000, max_steps=150000, batch_size=40,
                   input_size=300, schedule="iter-step", milestones=(30000, 60000, 100000), gamma=0.1, augment=True,
                   flow_unfreeze=75000, K=1)
FLOW_FUSION_PRESETS = {
    "paper-ucf24": _FLOW_PAPER,
    "paper-jhmdb": _FLOW_PAPER,
    # From scratch on the synthetic benchmark on a 2-core CPU, matched to AMMA's synthetic preset; VGG16 + RFB
    # needs about 260x260 or more (its last maps shrink to nothing below), so it stays at 300.
    "synthetic": dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, epochs=20, batch_size=4, input_size=300,
                      schedule="cosine", milestones=(), gamma=0.1, augment=False, flow_unfreeze=100, K=1),
}
FLOW_FUSION_LITE_PRESETS = {
    "paper-ucf24": dict(_FLOW_PAPER, input_size=320),
    "paper-jhmdb": dict(_FLOW_PAPER, input_size=320),
    "synthetic": dict(FLOW_FUSION_PRESETS["synthetic"], batch_size=8, input_size=128),
}
FAMILY_PRESETS = {"amma": PRESETS, "menet": MENET_PRESETS, "menet-lite": MENET_PRESETS, "stma": STMA_PRESETS,
                  "stma-lite": STMA_LITE_PRESETS, "flow-fusion": FLOW_FUSION_PRESETS,
                  "flow-fusion-lite": FLOW_FUSION_LITE_PRESETS}
DEFAULT_BACKBONES = {"amma": "shufflenetv2", "menet": "resnext101", "menet-lite": "shufflenetv2", "stma": "dla34",
                     "stma-lite": "shufflenetv2", "flow-fusion": "vgg16", "flow-fusion-lite": "mobilenetv2"}


def default_backbone(model):
    """The backbone a family trains with when none is given (MENet's is its 3D branch)."""
    if model not in DEFAULT_BACKBONES:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(DEFAULT_BACKBONES)}")
    return DEFAULT_BACKBONES[model]


def preset(name, backbone, model="amma"):
    """The options of preset ``name`` of ``model``'s family for ``backbone`` (per-backbone values resolved)."""
    presets = FAMILY_PRESETS[model] if model in FAMILY_PRESETS else {}
    if name not in presets:
        raise ConfigError(f"unknown training preset {name!r} for {model}; choose one of {', '.join(presets)}")
    values = dict(presets[name])
    if isinstance(values["lr"], dict):
        values["lr"] = values["lr"][backbone]
    return values


def lr_factor(schedule, progress, epochs, milestones=(), gamma=0.1, step=0, warmup=0):
    """Learning-rate multiplier at ``progress`` epochs (a float, 0-based) and ``step`` steps into training.

    ``step`` and ``halve`` change at epoch boundaries; ``cosine`` decays every step; ``iter-*`` count steps.
    ``warmup`` > 0 scales the first ``warmup`` steps linearly up from ``1 / warmup``.
    """
    if step < warmup:
        return (step + 1) / warmup * lr_factor(schedule, progress, epochs, milestones, gamma, step)
    if schedule == "iter-step":
        return gamma ** sum(step >= m for m in milestones)
    if schedule == "iter-every":
        return gamma ** (step // milestones[0])
    epoch = int(progress)
    if schedule == "step":
        return gamma ** sum(epoch + 1 >= m for m in milestones)
    if schedule == "halve":
        return gamma ** max(0, epoch + 1 - milestones[0])
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, epochs) / max(1, epochs)))
    if schedule == "constant":
        return 1.0
    raise ConfigError(f"unknown learning-rate schedule {schedule!r}; choose step, halve, cosine, constant, "
                      "iter-step or iter-every")
