"""Training (needs torch): losses, presets, pretrained-weight import, the trainer."""
