"""Training of the flow-fusion detectors: the paper's loss and schedule (Zhang, He, Tu et al. 2020).

``L = L_conf + L_reg + L(Theta)``: SSD's multibox loss (:mod:`edge_stad.train.multibox`) plus
PWC-Net's multi-scale flow loss, ``sum_l alpha_l sum_x |f_l(x) - f_gt_l(x)|_2`` with PWC-Net's
weights (0.32, 0.08, 0.02, 0.01, 0.005 at levels 6 .. 2; a smaller flow network uses the weights
of the levels it has), the ground truth resized to each level by area averaging and expressed, like
the predictions, in pixels of the flow network's input divided by 20, summed over pixels and
averaged over pairs. PWC-Net's weight regulariser ``gamma |Theta|_2`` is the optimiser's weight
decay. The ground truth is OpenCV DIS flow, not true flow (see :mod:`edge_stad.data.flow_samples`).

Schedule: the paper freezes the (FlyingChairs-pretrained) flow sub-network at first and unfreezes
it once the loss is stable (75k of 150k iterations in its ablations). With no pretrained flow
weights here, "frozen" means that the detection losses do not reach the flow sub-network before
``flow_unfreeze`` steps (the flow image is detached), while the flow loss trains it towards the DIS
flow - the stand-in for the pretraining; afterwards everything trains end to end.
"""
import math
import os

import torch
import torch.nn.functional as F

from edge_stad.models import create_model
from edge_stad.models.pwcnet import FLOW_SCALE
from edge_stad.train.multibox import multibox_loss
from edge_stad.train.tasks import Task

PWC_WEIGHTS = {6: 0.32, 5: 0.08, 4: 0.02, 3: 0.01, 2: 0.005}


def flow_loss(levels, target, flow_hw, weights=PWC_WEIGHTS):
    """PWC-Net's multi-scale loss of per-level predictions (coarsest first, ``(N, 2, h, w)``, pixels / 20 at
    ``flow_hw``) against ``target`` ``(N, 2, H, W)`` in pixels of an ``H x W`` image."""
    h, w = target.shape[2:]
    fh, fw = flow_hw
    scale = target.new_tensor([fw / w, fh / h])[None, :, None, None] / FLOW_SCALE
    gt = target * scale
    total = target.new_zeros(())
    for pred in levels:
        level = int(round(math.log2(fh / pred.shape[2])))
        at_level = F.adaptive_avg_pool2d(gt, pred.shape[2:])
        epe = torch.linalg.vector_norm(pred - at_level, dim=1).sum((1, 2)).mean()
        total = total + weights[level] * epe
    return total


class FlowFusionTask(Task):
    """The trainer's task for ``flow-fusion`` and ``flow-fusion-lite`` (see :mod:`edge_stad.train.tasks`)."""

    loss_parts = ("loc", "conf", "flow")

    def build_model(self, cfg, dataset):
        self.unfreeze = cfg.flow_unfreeze or 0
        options = {"backbone": cfg.backbone, "num_classes": len(dataset.gt.labels), "input_size": cfg.input_size}
        for key in ("fusion", "motion"):
            if getattr(cfg, key) is not None:
                options[key] = getattr(cfg, key)
        model = create_model(cfg.model, **options)
        self.model_config = model.config   # what the samples must give it
        return model

    def load_pretrained(self, model, path):
        """Weights of any part (``backbone.``, ``pwc.``, ...) from a state dict or an edge_stad checkpoint;
        every key given must exist with its shape (e.g. PWC-Net weights renamed to ``pwc.*``)."""
        from edge_stad.errors import CheckpointError
        from edge_stad.models.checkpoint import read_checkpoint

        state = read_checkpoint(path)["state_dict"]
        own = model.state_dict()
        bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if bad:
            raise CheckpointError(f"{path}: {len(bad)} keys do not fit the {model.config['name']} model, "
                                  f"e.g. {bad[:3]}")
        model.load_state_dict(state, strict=False)

    def samples(self, cfg, dataset):
        from edge_stad.data.flow import FlowCache
        from edge_stad.data.flow_samples import FlowFusionSamples

        model_cfg = self.model_config
        flow = None
        if model_cfg["motion"] in ("flow", "dis"):   # the flow network's targets, or the dis model's input
            flow = FlowCache(dataset, os.path.join(cfg.data, "flow-cache"), size=cfg.input_size)
        samples = FlowFusionSamples(dataset, dataset.train_videos, model_cfg["frames"], model_cfg["lookahead"],
                                    cfg.input_size, flow, augment=cfg.augment, seed=cfg.seed)
        samples.prepare(cfg.progress)
        return samples

    def forward(self, net, batch):
        """``motion="dis"`` models take the pairs' cached DIS flow as an input."""
        return net(batch["clips"], batch["flow"]) if self.model_config["motion"] == "dis" else net(batch["clips"])

    def prepare_step(self, model, step):
        """The paper's schedule: detection losses reach the flow sub-network from step ``flow_unfreeze`` on."""
        model.flow_detached = step < self.unfreeze

    def loss(self, model, output, batch, world):
        loss_l, loss_c = multibox_loss(output["loc"], output["conf"], model.priors, batch["boxes"])
        parts = {"loc": loss_l, "conf": loss_c}
        if "flows" in output:
            target = batch["flow"].flatten(0, 1)   # (B * pairs, 2, H, W), pairs of a sample adjacent
            parts["flow"] = flow_loss(output["flows"], target, model.flow_hw)
        else:
            parts["flow"] = loss_l.new_zeros(())
        total = sum(parts.values())
        return total / world, {k: v / world for k, v in parts.items()}

    def evaluate(self, model, dataset, split, progress=None):
        from edge_stad.eval.predict_ssd import evaluate_ssd_backend
        from edge_stad.torch_backends.ssd import TorchSSDBackend

        return evaluate_ssd_backend(TorchSSDBackend(model), dataset, split, progress=progress)
