"""The one registry: model families and the backbones they are built on, by kind and name.

``create_model(name, **config)`` builds any model family; ``create_backbone(kind, name, ...)`` a
backbone of kind ``"2d"`` (the plain ImageNet-layout ResNet-18 / MobileNetV2 / ShuffleNetV2),
``"fused"`` (AMMA's RGB + micro-motion two-stream versions of those, which STMA-Lite reuses without
motion) or ``"3d"`` (MENet's and the distillation teachers' and students' 3D CNNs). Builders import
their module on first use, so listing what exists imports no model code. A new family or backbone is
one ``@register`` here.
"""
import importlib

from edge_stad.errors import ConfigError

KINDS = ("model", "2d", "fused", "3d")
_BUILDERS = {kind: {} for kind in KINDS}


def register(name, kind="model"):
    """Decorator registering a builder ``f(*args, **config) -> nn.Module`` under ``(kind, name)``."""
    def wrap(builder):
        if name in _BUILDERS[kind]:
            raise ValueError(f"{kind} {name!r} is already registered")
        _BUILDERS[kind][name] = builder
        return builder
    return wrap


def available(kind="model"):
    """The registered names of ``kind`` (``model``, ``2d``, ``fused`` or ``3d``)."""
    return sorted(_BUILDERS[kind])


def available_models():
    return available("model")


def create_model(name="amma", **config):
    """Build a model: ``create_model("amma", backbone="shufflenetv2", K=3, num_classes=21)``.

    The returned module has a ``config`` dict (including ``name``) from which
    ``create_model(**model.config)`` rebuilds the same architecture.
    """
    if name not in _BUILDERS["model"]:
        raise ConfigError("unknown model {!r}; available: {}".format(name, ", ".join(available_models())))
    return _BUILDERS["model"][name](**config)


def create_backbone(kind, name, *args, **kwargs):
    """Build the ``kind`` backbone ``name`` (see the module doc) with its constructor's arguments."""
    if name not in _BUILDERS.get(kind, ()):
        what = {"2d": "backbone", "fused": "backbone", "3d": "3D backbone"}.get(kind, kind)
        raise ConfigError("unknown {} {!r}; choose one of {}".format(what, name, ", ".join(available(kind))))
    return _BUILDERS[kind][name](*args, **kwargs)


def _lazy(kind, name, module, attr, *bound):
    """Register ``module.attr(*bound, ...)`` under ``(kind, name)``, importing ``module`` on first use."""
    @register(name, kind)
    def build(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*bound, *args, **kwargs)


for _name, _cls in (("resnet18", "ResNet18"), ("mobilenetv2", "MobileNetV2"), ("shufflenetv2", "ShuffleNetV2")):
    _lazy("2d", _name, "edge_stad.models.backbones", _cls)
    _lazy("fused", _name, "edge_stad.models.fused_backbones", "AMMA" + _cls)
for _depth in (50, 101, 152):
    _lazy("3d", f"resnext{_depth}", "edge_stad.models.backbones3d", "ResNeXt3D", _depth)
_lazy("3d", "shufflenetv2", "edge_stad.models.backbones3d", "ShuffleNetV2_3D")
_lazy("3d", "mobilenetv2", "edge_stad.models.backbones3d", "MobileNetV2_3D")


def _family(name, module, cls, lite=False, named=True):
    """Register the model family ``name``: ``module.cls(**config)`` (with ``name=`` where the class serves
    several families; a lite variant's ``LITE_DEFAULTS`` under the given config)."""
    @register(name)
    def build(**config):
        found = importlib.import_module(module)
        if lite:
            config = dict(found.LITE_DEFAULTS, **config)
        return getattr(found, cls)(**(dict(config, name=name) if named else config))


_family("amma", "edge_stad.models.amma", "AMMA", named=False)
_family("menet", "edge_stad.models.menet", "MENet")
_family("menet-lite", "edge_stad.models.menet", "MENet", lite=True)
_family("stma", "edge_stad.models.stma", "STMA")
_family("stma-lite", "edge_stad.models.stma", "STMA", lite=True)
_family("flow-fusion", "edge_stad.models.flow_fusion", "FlowFusion")
_family("flow-fusion-lite", "edge_stad.models.flow_fusion", "FlowFusion", lite=True)
_family("attention-fusion", "edge_stad.models.score_fusion", "AttentionScoreFusion", named=False)
