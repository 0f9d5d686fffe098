"""Model registry: ``create_model(name, **config)`` builds any model family by name."""
from edge_stad.errors import ConfigError

_BUILDERS = {}


def register(name):
    """Decorator registering a builder ``f(**config) -> nn.Module`` under ``name``."""
    def wrap(builder):
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder
    return wrap


def available_models():
    return sorted(_BUILDERS)


def create_model(name="amma", **config):
    """Build a model: ``create_model("amma", backbone="shufflenetv2", K=3, num_classes=21)``.

    The returned module has a ``config`` dict (including ``name``) from which
    ``create_model(**model.config)`` rebuilds the same architecture.
    """
    if name not in _BUILDERS:
        raise ConfigError("unknown model {!r}; available: {}".format(name, ", ".join(available_models())))
    return _BUILDERS[name](**config)


@register("amma")
def _amma(**config):
    from edge_stad.models.amma import AMMA

    return AMMA(**config)


@register("menet")
def _menet(**config):
    from edge_stad.models.menet import MENet

    return MENet(name="menet", **config)


@register("menet-lite")
def _menet_lite(**config):
    from edge_stad.models.menet import LITE_DEFAULTS, MENet

    return MENet(name="menet-lite", **dict(LITE_DEFAULTS, **config))


@register("stma")
def _stma(**config):
    from edge_stad.models.stma import STMA

    return STMA(name="stma", **config)


@register("stma-lite")
def _stma_lite(**config):
    from edge_stad.models.stma import LITE_DEFAULTS, STMA

    return STMA(name="stma-lite", **dict(LITE_DEFAULTS, **config))


@register("flow-fusion")
def _flow_fusion(**config):
    from edge_stad.models.flow_fusion import FlowFusion

    return FlowFusion(name="flow-fusion", **config)


@register("flow-fusion-lite")
def _flow_fusion_lite(**config):
    from edge_stad.models.flow_fusion import LITE_DEFAULTS, FlowFusion

    return FlowFusion(name="flow-fusion-lite", **dict(LITE_DEFAULTS, **config))


@register("attention-fusion")
def _attention_fusion(**config):
    from edge_stad.models.score_fusion import AttentionScoreFusion

    return AttentionScoreFusion(**config)
