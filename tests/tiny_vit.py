"""A 1-block random ViT (8x8 input) and its calibration: small .tflite files for many-mutation tests and fuzzing."""
from __future__ import annotations

import numpy as np
import torch

from tsptq.data import datasets
from tsptq.quant.observers import record
from tsptq.quant.qvit import Graph
from tsptq.model.vit import ViTConfig, VisionTransformer


def tiny_vit(n_images: int, global_pool: str = "token"):
    """(config, graph, calibration record, the random images it was calibrated on), seeded. ``global_pool``: what
    the head reads (``token+avg``: the class token and the patch-token mean, TSPTQ_TOKEN_MEAN in the file)."""
    torch.manual_seed(0)
    cfg = ViTConfig(img_size=8, patch_size=4, in_chans=3, num_classes=3, embed_dim=16, depth=1, num_heads=2,
                    mlp_hidden=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0,
                    global_pool=global_pool)
    graph = Graph.from_model(VisionTransformer(cfg).eval())
    rng = np.random.default_rng(0)
    imgs = datasets.ImageSet(rng.integers(0, 256, (n_images, 8, 8, 3), dtype=np.uint8), np.zeros(n_images, np.int64),
                             "random")
    return cfg, graph, record(graph, imgs, 8, False), imgs


def force_per_head_scores(qm, ratio: float = 3.0):
    """Every block's scores code made a per-head one (tsptq-heads' form, whatever the selection kept): head h's step
    is head 0's times ratio^h, the zero points kept. Returns qm (changed in place)."""
    from tsptq.quant.quantizers import Uniform

    heads = qm.graph.cfg.num_heads
    for point in [p for p in qm.acts if p.endswith(".scores")]:
        q = qm.acts[point]
        step, zps = float(q.scale.reshape(-1)[0]), q.zero_point.reshape(-1).expand(heads).clone()
        qm.acts[point] = Uniform(step * ratio ** torch.arange(heads, dtype=torch.float32), zps, q.bits, axis=1)
    return qm
