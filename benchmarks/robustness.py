"""Robustness section of docs/benchmarks.md: every method on every small model, over three calibration draws.

    python benchmarks/accuracy.py --only robustness      # about 20 minutes on 2 cores

The models: the two reference ViTs and the three robustness models (calib/zoo.py), trained with recipes unlike each
other's. Each draw calibrates on 32 other class-balanced training images (seeds 0, 1, 2); the evaluation images are
the same 2000 class-balanced test images for every draw. Rows run in the C runtime (the exported file) where the
model has an integer model; robust-p8-distilled (a distillation token, not exported yet) in the float32 simulator.
The bar (issue 13): on every model tsptq's agreement with FP32 is at least minmax's, and tsptq's top-1 is not
below minmax's beyond the 95% interval of the paired difference.
"""
from __future__ import annotations

import sys

import numpy as np

from tsptq import stats
from tsptq.calib import zoo
from tsptq.evaluate import evaluate
from tsptq.shards import default_workers

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


def _spread(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ({v.min():.2f} to {v.max():.2f})"


def _spread5(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4f} ({v.min():.4f} to {v.max():.4f})"


def render(results: dict) -> list[str]:
    r = results.get("robustness")
    if not r:
        return []
    out = ["## Robustness: every method on models it was not developed on", "",
           f"W8A8, {r['eval_images']} class-balanced test images per model, {r['calib_images']} calibration images "
           f"drawn {len(r['seeds'])} times (seeds {', '.join(map(str, r['seeds']))}); each cell is the mean over the "
           "draws with the smallest and largest in brackets. Below each model's table: the paired top-1 difference "
           "tsptq minus minmax per draw with its 95% interval, and all draws pooled (approximate: the draws share "
           "their evaluation images, so the pooled interval is narrower than an image-level one). "
           "`tsptq-local` is tsptq without block-output selection and with two-level O-2SF (tsptq before issue 13). "
           f"Measured {r['date']} ({r['machine']})." + (f" *{r['note']}*" if r.get("note") else ""), ""]
    for m in r["models"]:
        out += [f"**{m['model']}**: {m['description']}; FP32 top-1 {m['fp32_top1']:.2f}%.", "",
                "| method | engine | drop (points) | agreement (%) | cosine mean | cosine min |", "|---|---|---:|---:|---:|---:|"]
        methods = [row["method"] for row in m["draws"][0]["rows"] if row["method"] != "fp32"]
        for method in methods:
            rows = [next(x for x in d["rows"] if x["method"] == method) for d in m["draws"]]
            bold = "**" if method == "tsptq" else ""
            out.append(f"| {bold}{method}{bold} | {rows[0]['engine']} | {_spread([x['drop'] for x in rows])} | "
                       f"{_spread([x['agreement'] for x in rows])} | {_spread5([x['cosine_mean'] for x in rows])} | "
                       f"{_spread5([x['cosine_min'] for x in rows])} |")
        diffs = "; ".join(f"draw {d['seed']}: {d['tsptq_minus_minmax']['difference']:+.2f} "
                          f"[{d['tsptq_minus_minmax']['interval'][0]:.2f}, {d['tsptq_minus_minmax']['interval'][1]:.2f}]"
                          for d in m["draws"])
        p = m["pooled_tsptq_minus_minmax"]
        agree = [(next(x for x in d["rows"] if x["method"] == "tsptq")["agreement"],
                  next(x for x in d["rows"] if x["method"] == "minmax")["agreement"]) for d in m["draws"]]
        bar_agree = np.mean([a for a, _ in agree]) >= np.mean([b for _, b in agree])
        bar_top1 = p["interval"][1] >= 0
        out += ["", f"tsptq - minmax top-1: {diffs}; pooled {p['difference']:+.2f} "
                    f"[{p['interval'][0]:.2f}, {p['interval'][1]:.2f}]. Bar: agreement >= minmax's "
                    f"{'met' if bar_agree else '**not met**'}; top-1 not below minmax's beyond the interval "
                    f"{'met' if bar_top1 else '**not met**'}.", ""]
    return out
