"""Models (need torch): backbones, micro-motion, AMMA and the other families, the one registry and checkpoint I/O."""
from edge_stad.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edge_stad.models.registry import available, available_models, create_backbone, create_model, register

__all__ = ["available", "available_models", "create_backbone", "create_model", "register", "load_checkpoint",
           "read_checkpoint", "save_checkpoint"]
