"""What the trainer does for STMA and STMA-Lite (:mod:`edge_stad.train.tasks`): snippet samples, the
STMA loss, validation window by window through :mod:`edge_stad.eval.predict_snippets`."""
from edge_stad.errors import ConfigError
from edge_stad.models import create_model
from edge_stad.train.tasks import FrameTask, Task, global_counts

NO_3D = "none"  # --backbone-3d value for STMA-Lite without a 3D branch


#: The paper's Table 2 blocks (``--blocks``): class-agnostic localisation (the recognition branch), motion
#: excitation and spatio-temporal aggregation in it, Gaussian-area regression.
BLOCKS = ("cal", "me", "sta", "gr")


def ablation_blocks(blocks):
    """``"cal,me"`` -> the model options of a run with only those blocks (the baseline, ``""``: MOC's class
    heatmap, no recognition branch and so no 3D branch, centre-cell regression)."""
    chosen = [b for b in blocks.split(",") if b]
    unknown = [b for b in chosen if b not in BLOCKS]
    if unknown:
        raise ConfigError(f"blocks must be a comma-separated subset of {','.join(BLOCKS)}, got {blocks!r}")
    if ("me" in chosen or "sta" in chosen) and "cal" not in chosen:
        raise ConfigError(f"blocks {blocks!r}: me and sta belong to the recognition branch, which cal builds")
    options = {"class_agnostic": "cal" in chosen, "motion_excitation": "me" in chosen, "attention": "sta" in chosen,
               "gaussian_regression": "gr" in chosen}
    if "cal" not in chosen:
        options["backbone_3d"] = NO_3D
    return options


class SnippetTask(Task):
    loss_parts = ("hm", "mov", "wh", "cls")

    def __init__(self):
        self.model_config = None  # set by build_model: the samples follow the model's layout

    def build_model(self, cfg, dataset):
        """The variant's model with what the command line or preset sets (the variant's defaults elsewhere)."""
        given = dict(backbone=cfg.backbone, K=cfg.K, clip_len=cfg.clip_len, input_size=cfg.input_size,
                     decoder=cfg.decoder, backbone_3d=cfg.backbone_3d, width_3d=cfg.width_3d)
        options = {k: v for k, v in given.items() if v is not None}
        if cfg.blocks is not None:
            options.update(ablation_blocks(cfg.blocks))
        if options.get("backbone_3d") == NO_3D:
            options["backbone_3d"] = None
            options.pop("width_3d", None)   # a preset's width of a 3D branch that is not built
        model = create_model(cfg.model, num_classes=len(dataset.gt.labels), **options)
        self.model_config = model.config
        return model

    def load_pretrained(self, model, path):
        """A 3D branch from ``edge-stad distill student`` (``backbone_3d.*`` keys), else 2D weights by name
        (:func:`edge_stad.train.pretrained.load_pretrained`: torchvision, CenterNet, an edge_stad checkpoint)."""
        from edge_stad.models.checkpoint import read_checkpoint
        from edge_stad.train.pretrained import load_pretrained

        keys = list(read_checkpoint(path)["state_dict"])
        if keys and all(k.startswith("backbone_3d.") for k in keys):
            if model.backbone_3d is None:
                raise ConfigError(f"{path} holds a 3D branch, but this model has none (backbone_3d=None)")
            return FrameTask().load_pretrained(model, path)
        return load_pretrained(model, path)

    def samples(self, cfg, dataset):
        from edge_stad.data.snippet_samples import SnippetSamples

        return SnippetSamples(dataset, dataset.train_videos, self.model_config, augment=cfg.augment, seed=cfg.seed)

    def loss(self, model, output, batch, world):
        from edge_stad.train.stma_loss import normalizers, stma_loss

        return stma_loss(output, batch, global_counts(normalizers(batch), world))

    def evaluate(self, model, dataset, split, progress=None):
        from edge_stad.eval.predict_snippets import evaluate_snippet_backend
        from edge_stad.torch_backends.snippet import TorchSnippetBackend

        return evaluate_snippet_backend(TorchSnippetBackend(model), dataset, split, progress=progress)
