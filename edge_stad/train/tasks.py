"""What the trainer does differently per model family: the model, its samples, its loss, its validation.

* :class:`TubeletTask` (AMMA): K-clip tubelet samples, heatmap / movement / size loss, validation on
  tubelet windows.
* :class:`FrameTask` (MENet, MENet-Lite): one T-frame clip per annotated key frame, YOWO's region
  loss with anchors from k-means on the training boxes, validation frame by frame.
* :class:`~edge_stad.train.snippet_task.SnippetTask` (STMA, STMA-Lite): a clip around a K-frame
  snippet, the STMA loss, validation on one window per frame.
* :class:`~edge_stad.train.flow_fusion.FlowFusionTask` (flow-fusion, flow-fusion-lite): the frames around
  an annotated key frame with DIS flow targets, multibox + flow loss, the flow sub-network's schedule.

``loss`` returns this process's share of the global batch's loss (summed over processes it is the
loss of the whole batch), so one ``(total * world).backward()`` under DDP's gradient mean is right
for both.
"""
import torch.distributed as dist

from edge_stad.models import create_model

FAMILIES = {"amma": "tubelet", "menet": "frame", "menet-lite": "frame", "stma": "snippet", "stma-lite": "snippet",
            "flow-fusion": "ssd", "flow-fusion-lite": "ssd"}


def global_counts(counts, world):
    """A loss's normalising ``counts`` summed over the processes: normalised by the global batch, DDP's
    gradient mean then equals one process on the whole batch."""
    if world > 1:
        dist.all_reduce(counts)
    return counts


class Task:
    def prepare_step(self, model, step):
        """Called before every optimisation step (a family's schedule of what trains)."""

    def forward(self, net, batch):
        """The model's outputs for a training batch (its clips; a family with more inputs overrides this)."""
        return net(batch["clips"])


class TubeletTask(Task):
    loss_parts = ("hm", "mov", "wh")

    def build_model(self, cfg, dataset):
        motion = {} if cfg.motion is None else {"motion": cfg.motion}
        return create_model("amma", backbone=cfg.backbone, K=cfg.K, num_classes=len(dataset.gt.labels),
                            clip_len=cfg.clip_len, decoder=cfg.decoder, fusion_stages=cfg.fusion_stages,
                            input_size=cfg.input_size, **motion)

    def load_pretrained(self, model, path):
        from edge_stad.train.pretrained import load_pretrained

        return load_pretrained(model, path)

    def samples(self, cfg, dataset):
        from edge_stad.data.samples import TubeletSamples

        return TubeletSamples(dataset, dataset.train_videos, cfg.K, cfg.clip_len, cfg.input_size,
                              augment=cfg.augment, seed=cfg.seed)

    def loss(self, model, output, batch, world):
        from edge_stad.train.losses import amma_loss, normalizers

        return amma_loss(output, batch, global_counts(normalizers(batch), world))

    def evaluate(self, model, dataset, split, progress=None):
        from edge_stad.eval.predict import evaluate_backend
        from edge_stad.torch_backends.streaming import TorchBackend

        return evaluate_backend(TorchBackend(model), dataset, split, progress=progress)


class FrameTask(Task):
    loss_parts = ("box", "obj", "cls")

    def build_model(self, cfg, dataset):
        from edge_stad.data.anchors import dataset_anchors

        grid = (cfg.input_size // 32, cfg.input_size // 32)   # the region head's stride
        anchors, _ = dataset_anchors(dataset.gt, dataset.train_videos, grid)
        return create_model(cfg.model, backbone_3d=cfg.backbone, width_3d=cfg.width_3d, clip_len=cfg.clip_len,
                            num_classes=len(dataset.gt.labels), input_size=cfg.input_size,
                            srm_frames=cfg.srm_frames, anchors=[[float(a), float(b)] for a, b in anchors])

    def load_pretrained(self, model, path):
        """The 3D branch from ``edge-stad distill student``'s ``backbone_3d.pt`` (every key must fit)."""
        from edge_stad.errors import CheckpointError
        from edge_stad.models.checkpoint import load_state_dict_checked, read_checkpoint

        prefix = "backbone_3d."
        state = read_checkpoint(path)["state_dict"]
        other = [k for k in state if not k.startswith(prefix)]
        if other:
            raise CheckpointError(f"{path} is not a 3D-branch state dict (keys '{prefix}*', as `edge-stad distill "
                                  f"student` writes): it also holds {other[:3]}")
        load_state_dict_checked(model.backbone_3d, {k[len(prefix):]: v for k, v in state.items()}, source=path)

    def samples(self, cfg, dataset):
        from edge_stad.data.frame_samples import FrameSamples

        return FrameSamples(dataset, dataset.train_videos, cfg.clip_len, cfg.input_size, augment=cfg.augment,
                            seed=cfg.seed)

    def loss(self, model, output, batch, world):
        from edge_stad.train.region_loss import region_loss

        total, parts = region_loss(output, batch["boxes"], model.config["num_classes"], model.config["anchors"])
        return total / world, {k: v / world for k, v in parts.items()}

    def evaluate(self, model, dataset, split, progress=None):
        from edge_stad.eval.predict_frames import evaluate_frame_backend
        from edge_stad.torch_backends.streaming import TorchFrameBackend

        return evaluate_frame_backend(TorchFrameBackend(model), dataset, split, progress=progress)


def task_for(model_name):
    """The task (:class:`TubeletTask`, :class:`FrameTask`, ``SnippetTask``, ``FlowFusionTask``) of a registered
    model name."""
    from edge_stad.errors import ConfigError
    from edge_stad.train.flow_fusion import FlowFusionTask
    from edge_stad.train.snippet_task import SnippetTask

    if model_name not in FAMILIES:
        raise ConfigError(f"the trainer knows models {', '.join(FAMILIES)}, not {model_name!r}")
    return {"tubelet": TubeletTask, "frame": FrameTask, "snippet": SnippetTask,
            "ssd": FlowFusionTask}[FAMILIES[model_name]]()

