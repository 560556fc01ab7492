"""The accuracy harness: quantize a model with several methods and measure each on the same images.

Per method: top-1, drop vs FP32 (points, positive = worse) and top-1 agreement with FP32, each with its 95% paired
bootstrap interval over images (``tsptq.evaluation.stats``), class-token cosine to FP32 (mean and min, after the final
LayerNorm), and the engine that measured it (``tsptq.evaluation.engines``: the C runtime running the exported file by
default). Images are sharded over worker processes (``tsptq.evaluation.shards``) and, under torchrun, over ranks
(``tsptq.evaluation.distributed``); the results do not depend on either count.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tsptq.evaluation import stats
from tsptq.atomic import atomic_write, write_json_atomic  # noqa: F401 (write_json_atomic: re-exported)
from tsptq.quant.observers import record
from tsptq.evaluation.distributed import Cluster
from tsptq.evaluation.engines import ENGINES, c_available, resolve
from tsptq.errors import DataError, TsptqError
from tsptq.quant.quantize import graph_of, quantize
from tsptq.evaluation.shards import ShardPool, batch_grid
from tsptq.model.swin import SwinTransformer
from tsptq.model.vit import VisionTransformer


@dataclass
class Outputs:
    logits: np.ndarray  # (N, classes) float32
    cls: np.ndarray  # (N, D) float32: class token after the final norm


@dataclass
class Evaluation:
    """The rows of one evaluation and the per-image top-1 predictions they were computed from."""

    rows: list[dict]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (N,) predicted class
    labels: np.ndarray | None = None

    def compare(self, a: str, b: str) -> dict:
        """Paired top-1 difference of methods a and b (a minus b, points) with its interval and McNemar p-value;
        without labels, the difference of their agreement with FP32."""
        for m in (a, b):
            if m not in self.predictions:
                raise TsptqError(f"--compare: {m!r} was not evaluated (methods: {', '.join(self.predictions)})")
        truth = self.labels if self.labels is not None else self.predictions["fp32"]
        r = stats.paired_difference(self.predictions[a] == truth, self.predictions[b] == truth)
        return {"a": a, "b": b, "measure": "top1" if self.labels is not None else "agreement", **r}


def compare(out: Outputs, ref: Outputs, labels: np.ndarray | None, ref_top1: float | None) -> dict:
    pred, ref_pred = out.logits.argmax(-1), ref.logits.argmax(-1)
    cos = stats.cosine(out.cls, ref.cls)
    agree = pred == ref_pred
    lo, hi = stats.proportion_interval(agree)
    row = {"top1": None, "drop": None, "drop_ci": None, "agreement": round(100.0 * float(agree.mean()), 2),
           "agreement_ci": [round(lo, 2), round(hi, 2)],
           "cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5)}
    if labels is not None:
        top1 = 100.0 * float((pred == labels).mean())
        row["top1"] = round(top1, 2)
        d = stats.paired_difference(ref_pred == labels, pred == labels)
        row["drop"] = round(d["difference"], 2)
        row["drop_ci"] = [round(d["interval"][0], 2), round(d["interval"][1], 2)]
    return row


def default_batch_size(cfg) -> int:
    return 200 if cfg.img_size <= 64 else 32


def require_engine(model, methods: list[str], engine: str) -> None:
    """Refuse, before any work, the faithful engine for a quantized method of a model it does not cover (a Swin)."""
    if engine == "faithful" and any(m != "fp32" for m in methods) and (why := graph_of(model).no_faithful):
        raise TsptqError(f"--engine faithful: {why}")


def evaluate(model: VisionTransformer | SwinTransformer, calib, eval_set, methods: list[str], bits: str = "W8A8",
             batch_size: int | None = None, progress: bool = True, labels_valid: bool = True, engine: str = "auto",
             workers: int = 1, cluster: Cluster | None = None, device: str = "cpu",
             timings: bool = True) -> Evaluation | None:
    """One row per method; 'fp32' is always measured first as the reference. ``engine``: see ``tsptq.evaluation.engines``
    (each row says which one measured it). ``workers``: processes on this machine; ``cluster``: this rank's place
    under torchrun (rank 0 calibrates and returns the Evaluation, the other ranks return None). ``timings``: put
    wall-clock seconds in the rows (False for output that must be identical from run to run). A Swin runs in the C
    runtime and the float32 simulator, not the faithful one (issue 19: ``faithful`` is refused, and ``auto`` without
    a C runtime measures with float32); its "class token" is the pooled final-norm feature its head reads."""
    if len(eval_set) == 0:
        raise DataError("the evaluation set is empty")
    if engine not in ENGINES:
        raise TsptqError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    require_engine(model, methods, engine)
    graph = graph_of(model)
    quantized = any(m != "fp32" for m in methods)
    cluster = cluster or Cluster(device=device)
    main = cluster.is_main
    bs = batch_size or default_batch_size(model.cfg)
    if engine in ("auto", "c") and quantized:  # FP32 runs no engine
        why = c_available()
        if why and engine == "c":
            raise TsptqError(f"--engine c: the C runtime cannot be built here: {why}")
        if why:
            fallback = "float32" if graph.no_faithful else "faithful"  # (a Swin: not the faithful one)
            tqdm.write(f"note: no C runtime here ({why}); measuring with the {fallback} simulator", file=sys.stderr)
            engine = fallback
    labels = eval_set.labels if labels_valid else None
    n_batches = len(batch_grid(len(eval_set), bs))
    first, last = cluster.share(n_batches)
    start, stop = first * bs, min(last * bs, len(eval_set))
    rows, predictions = [], {}
    recorded, fitted = [], {}  # rank 0 only: the calibration tensors (recorded once), each method's quantization

    def make_runner(method):
        """Rank 0: calibrate, quantize and build the runner; (runner, note) go to every rank."""
        if method == "fp32":
            return resolve(quantize(graph, calib, "fp32"), engine, device)[0], None
        if not recorded:
            recorded.append(record(graph, calib, progress=progress))
        fitted[method] = quantize(graph, recorded[0], method, bits, progress=progress)
        return resolve(fitted[method], engine, device)

    with ShardPool(eval_set, model.cfg, bs, workers, progress=progress and main) as pool:

        def measure(method):
            t0 = time.perf_counter()
            runner, note = cluster.share_result(lambda: make_runner(method))
            if note and main:
                tqdm.write(f"note: {note}; measured with the {runner.engine} engine", file=sys.stderr)
            local = pool.run(runner, start, stop, method) if stop > start else _empty()
            out = cluster.gather(local)
            return None if out is None else Outputs(*out), runner, fitted.get(method), time.perf_counter() - t0

        ref, _, _, ref_seconds = measure("fp32")
        ref_top1 = None
        if main:
            predictions["fp32"] = ref.logits.argmax(-1)
            ref_top1 = 100.0 * float((predictions["fp32"] == labels).mean()) if labels is not None else None
        for method in ["fp32"] + [m for m in methods if m != "fp32"]:
            out, runner, qm, seconds = (ref, None, None, ref_seconds) if method == "fp32" else measure(method)
            if not main:
                continue
            predictions[method] = out.logits.argmax(-1)
            row = {"method": method, "bits": "FP32" if method == "fp32" else bits.upper(),
                   "engine": "-" if method == "fp32" else runner.engine, **compare(out, ref, labels, ref_top1)}
            if timings:
                row["calib_seconds"] = qm.info.get("calib_seconds", 0.0) if qm is not None else 0.0
                row["seconds"] = round(seconds, 1)
            if method in methods:
                rows.append(row)
            tqdm.write(format_row(row), file=sys.stderr)
    if not main:
        return None
    return Evaluation(rows, predictions, labels)


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)


HEADER = (f"{'method':<22}{'bits':<6}{'top-1 %':>8}{'drop pt':>8} {'[95% interval]':<16}{'agree %':>8} "
          f"{'[95% interval]':<16}{'cos mean':>9}{'cos min':>8}{'calib s':>8}  engine")


def _interval(ci) -> str:
    return "" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def format_row(r: dict) -> str:
    fmt = lambda v, spec: "-".rjust(int(spec.split(".")[0])) if v is None else format(v, spec)  # noqa: E731
    return (f"{r['method']:<22}{r['bits']:<6}{fmt(r['top1'], '8.2f')}{fmt(r['drop'], '8.2f')} "
            f"{_interval(r.get('drop_ci')):<16}{r['agreement']:8.2f} {_interval(r.get('agreement_ci')):<16}"
            f"{r['cosine_mean']:9.4f}{r['cosine_min']:8.4f}{fmt(r.get('calib_seconds'), '8.1f')}"
            f"  {r.get('engine', r.get('simulator', '-'))}")


def format_table(rows: list[dict]) -> str:
    return "\n".join([HEADER, "-" * len(HEADER)] + [format_row(r) for r in rows])


def format_comparison(c: dict) -> str:
    lo, hi = c["interval"]
    what = "top-1" if c["measure"] == "top1" else "agreement with FP32"
    return (f"{c['a']} - {c['b']} ({what}, paired over {c['images']} images): {c['difference']:+.2f} points, 95% "
            f"interval [{lo:+.2f}, {hi:+.2f}]; right only by {c['a']}: {c['only_a']}, only by {c['b']}: "
            f"{c['only_b']}; McNemar p = {c['mcnemar_p']:.3g}")


def plot_drops(rows: list[dict], title: str, path: str | Path) -> None:
    """Per method: the top-1 drop (or 1 - cosine without labels) and the agreement with FP32, each with its 95%
    interval, and the class-token cosine written over the bars; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["method"] != "fp32"]
    names = [r["method"] for r in rows]
    colors = ["#c44e52" if "tsptq" in m else "#4c72b0" for m in names]
    use_top1 = all(r["drop"] is not None for r in rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(2.4 * len(rows) + 3, 3.8))

    def bars(ax, vals, cis, label, fmt):
        err = None
        if all(cis):
            err = np.array([[v - c[0] for v, c in zip(vals, cis)], [c[1] - v for v, c in zip(vals, cis)]])
            err = np.clip(err, 0, None)
        b = ax.bar(names, vals, color=colors, yerr=err, capsize=3, ecolor="#333333")
        ax.bar_label(b, fmt=fmt, fontsize=7, padding=2)
        ax.set_ylabel(label, fontsize=9)
        ax.axhline(0, color="black", linewidth=0.6)
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)

    if use_top1:
        bars(ax1, [r["drop"] for r in rows], [r.get("drop_ci") for r in rows], "top-1 drop vs FP32 (points)", "%.2f")
    else:
        bars(ax1, [1 - r["cosine_mean"] for r in rows], [None], "1 - class-token cosine", "%.4f")
    bars(ax2, [r["agreement"] for r in rows], [r.get("agreement_ci") for r in rows], "top-1 agreement with FP32 (%)",
         "%.2f")
    low = min(min(r["agreement"] for r in rows), *(r["agreement_ci"][0] for r in rows if r.get("agreement_ci")))
    ax2.set_ylim(max(0.0, low - 2.0), 100.5)
    for k, r in enumerate(rows):
        ax2.annotate(f"cos {r['cosine_mean']:.4f}", (k, ax2.get_ylim()[0]), xytext=(0, 4), textcoords="offset points",
                     ha="center", fontsize=7, color="white" if r["agreement"] > ax2.get_ylim()[0] + 1 else "black")
    fig.suptitle(title + "  (bars: 95% paired bootstrap intervals)", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
