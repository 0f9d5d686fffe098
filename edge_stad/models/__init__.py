"""Models (need torch): backbones, micro-motion, AMMA, the registry and checkpoint I/O."""
from edge_stad.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edge_stad.models.registry import available_models, create_model, register

__all__ = ["available_models", "create_model", "register", "load_checkpoint", "read_checkpoint", "save_checkpoint"]
