"""Robustness section of docs/benchmarks.md: every method on every small model, over three calibration draws.
Measured through accuracy.py (below); rendered by benchmarks/report.py.

    python benchmarks/accuracy.py --only robustness      # about 20 minutes on 2 cores

The models: the two reference ViTs and the three robustness models (toolchain/tsptq/model/zoo.py), trained with recipes unlike each
other's. Each draw calibrates on 32 other class-balanced training images (seeds 0, 1, 2); the evaluation images are
the same 2000 class-balanced test images for every draw. Rows run in the C runtime (the exported file) where the
model has an integer model; robust-p8-distilled (a distillation token, not exported yet) in the float32 simulator.
The bar (issue 13): on every model tsptq's agreement with FP32 is at least minmax's, and tsptq's top-1 is not
below minmax's beyond the 95% interval of the paired difference.
"""
from __future__ import annotations

import sys

import numpy as np

from tsptq.evaluation import stats
from tsptq.model import zoo
from tsptq.evaluation.evaluate import evaluate
from tsptq.evaluation.shards import default_workers

MODELS = ("cifar10-vit", "fashion-vit", "robust-ls-mlp2", "robust-p8-distilled", "robust-fashion-deep")
METHODS = ("minmax", "percentile", "ptf-log2", "twin", "tsptq-local", "tsptq")
SEEDS = (0, 1, 2)
EVAL_IMAGES = 2000


def run_robustness(calib_n: int = 32) -> dict:
    models = []
    for name in MODELS:
        spec = zoo.REFERENCE_MODELS[name]
        model = zoo.load_reference(name)
        train, test = spec.load_data("train"), spec.load_data("test").balanced(EVAL_IMAGES, 0)
        draws, correct = [], {m: [] for m in ("fp32",) + METHODS}
        for seed in SEEDS:
            print(f"[robustness] {name}, calibration draw {seed}", file=sys.stderr)
            ev = evaluate(model, train.balanced(calib_n, seed), test, ["fp32", *METHODS], "W8A8",
                          workers=default_workers())
            for m in correct:
                correct[m].append(ev.predictions[m] == ev.labels)
            draws.append({"seed": seed, "rows": ev.rows, "tsptq_minus_minmax": ev.compare("tsptq", "minmax")})
        # All draws pooled: the paired difference over (draw, image) pairs.
        pooled = stats.paired_difference(np.concatenate(correct["tsptq"]), np.concatenate(correct["minmax"]))
        models.append({"model": name, "description": spec.description, "fp32_top1": draws[0]["rows"][0]["top1"],
                       "draws": draws, "pooled_tsptq_minus_minmax": pooled})
    return {"section": "robustness", "eval_images": EVAL_IMAGES, "calib_images": calib_n, "seeds": list(SEEDS),
            "models": models}
