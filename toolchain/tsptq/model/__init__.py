"""Float models: the timm-compatible ViT, checkpoints, the reference-model zoo and its training script."""
