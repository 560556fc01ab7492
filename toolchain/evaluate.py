"""The accuracy harness: quantize a model with several methods and measure each on the same images.

Per method: top-1, drop vs FP32 (points, positive = worse), top-1 agreement with FP32, class-token cosine to
FP32 (mean and min, after the final LayerNorm) and calibration time.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tsptq.atomic import atomic_write
from tsptq.calib import datasets
from tsptq.calib.observers import record
from tsptq.errors import DataError
from tsptq.faithful import FaithfulHook, faithful_logits
from tsptq.faithful import applies as faithful_applies
from tsptq.quantize import quantize
from tsptq.qvit import Graph, QuantizedViT, SimHook
from tsptq.vit import VisionTransformer


@dataclass
class Outputs:
    logits: torch.Tensor  # (N, classes)
    cls: torch.Tensor  # (N, D) class token after the final norm


SIMULATORS = ("faithful", "float32")


class _ClsTap:
    """A simulator hook mix-in that also keeps the final-norm class token."""

    def act(self, name, kind, x):
        x = super().act(name, kind, x)
        if name == "norm":
            self.cls.append(x[:, 0].float().clone())
        return x


class _Tap(_ClsTap, SimHook):
    pass


class _FaithfulTap(_ClsTap, FaithfulHook):
    pass


def simulator_used(qm: QuantizedViT, simulator: str) -> str:
    """faithful (float64, TFLite's rounding at the builtins: the integer model's arithmetic) where the quantization
    has an integer model; the float32 simulator otherwise (FP32, A<8)."""
    if qm.method == "fp32":
        return "-"
    return "faithful" if simulator == "faithful" and faithful_applies(qm) else "float32"


@torch.no_grad()
def predict(qm: QuantizedViT, images: np.ndarray, batch_size: int, desc: str = "", progress: bool = True,
            simulator: str = "faithful") -> Outputs:
    faithful = simulator_used(qm, simulator) == "faithful"
    hook = _FaithfulTap(qm) if faithful else _Tap(qm.acts)
    hook.cls = []
    logits = []
    batches = datasets.iterate_batches(images, qm.graph.cfg, batch_size)
    total = -(-len(images) // batch_size)
    for x in tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress, leave=False):
        logits.append(faithful_logits(qm, x, hook).float() if faithful else qm(x, hook))
    return Outputs(torch.cat(logits), torch.cat(hook.cls))


def compare(out: Outputs, ref: Outputs, labels: np.ndarray | None, ref_top1: float | None) -> dict:
    pred, ref_pred = out.logits.argmax(-1).numpy(), ref.logits.argmax(-1).numpy()
    cos = torch.nn.functional.cosine_similarity(out.cls, ref.cls, dim=-1)
    row = {"top1": None, "drop": None, "agreement": round(100.0 * float((pred == ref_pred).mean()), 2),
           "cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5)}
    if labels is not None:
        top1 = 100.0 * float((pred == labels).mean())
        row["top1"] = round(top1, 2)
        row["drop"] = round(ref_top1 - top1, 2) if ref_top1 is not None else 0.0
    return row


def evaluate(model: VisionTransformer, calib: datasets.ImageSet, eval_set: datasets.ImageSet, methods: list[str],
             bits: str = "W8A8", batch_size: int | None = None, progress: bool = True,
             labels_valid: bool = True, simulator: str = "faithful") -> list[dict]:
    """One row per method; 'fp32' is always measured first as the reference. ``simulator``: 'faithful' runs each
    method's integer arithmetic exactly where it has an integer model (see ``simulator_used``), 'float32' the
    fast fake-quantized simulator; each row says which one measured it."""
    if len(eval_set) == 0:
        raise DataError("the evaluation set is empty")
    graph = Graph.from_model(model)
    bs = batch_size or (200 if graph.cfg.img_size <= 64 else 32)
    labels = eval_set.labels if labels_valid else None
    ref = predict(quantize(graph, calib, "fp32"), eval_set.images, bs, "fp32", progress)
    ref_top1 = 100.0 * float((ref.logits.argmax(-1).numpy() == labels).mean()) if labels is not None else None
    rows = []
    recorded = record(graph, calib, progress=progress) if any(m != "fp32" for m in methods) else None
    for method in ["fp32"] + [m for m in methods if m != "fp32"]:
        t0 = time.perf_counter()
        qm = quantize(graph, recorded if method != "fp32" else calib, method, bits, progress=progress)
        out = ref if method == "fp32" else predict(qm, eval_set.images, bs, method, progress, simulator)
        row = {"method": method, "bits": "FP32" if method == "fp32" else bits.upper(),
               "simulator": simulator_used(qm, simulator),
               **compare(out, ref, labels, ref_top1),
               "calib_seconds": qm.info.get("calib_seconds", 0.0), "seconds": round(time.perf_counter() - t0, 1)}
        if method in methods:
            rows.append(row)
        tqdm.write(format_row(row), file=sys.stderr)
    return rows


HEADER = f"{'method':<24}{'bits':<6}{'top-1 %':>9}{'drop pt':>9}{'agree %':>9}{'cos mean':>10}{'cos min':>9}{'calib s':>9}  simulator"


def format_row(r: dict) -> str:
    fmt = lambda v, spec: "-".rjust(int(spec.split(".")[0])) if v is None else format(v, spec)  # noqa: E731
    return (f"{r['method']:<24}{r['bits']:<6}{fmt(r['top1'], '9.2f')}{fmt(r['drop'], '9.2f')}"
            f"{r['agreement']:9.2f}{r['cosine_mean']:10.4f}{r['cosine_min']:9.4f}{r['calib_seconds']:9.2f}"
            f"  {r.get('simulator', 'float32')}")


def format_table(rows: list[dict]) -> str:
    return "\n".join([HEADER, "-" * len(HEADER)] + [format_row(r) for r in rows])


def write_json_atomic(path: str | Path, obj) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def plot_drops(rows: list[dict], title: str, path: str | Path) -> None:
    """A bar chart of the top-1 drop per method (or 1 - cosine when there are no labels), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["method"] != "fp32"]
    use_top1 = all(r["drop"] is not None for r in rows)
    vals = [r["drop"] if use_top1 else 1 - r["cosine_mean"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 3.6))
    bars = ax.bar([r["method"] for r in rows], vals, color=["#c44e52" if "tsptq" in r["method"] else "#4c72b0" for r in rows])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylabel("top-1 drop vs FP32 (points)" if use_top1 else "1 - class-token cosine")
    ax.set_title(title, fontsize=10)
    ax.axhline(0, color="black", linewidth=0.6)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
