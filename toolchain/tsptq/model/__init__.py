"""Float models: the timm-compatible ViT, checkpoints, the reference-model zoo and its training script, which
images a model runs on (model_data)."""
