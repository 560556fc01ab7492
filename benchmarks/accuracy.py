"""Accuracy benchmark: regenerates docs/benchmarks.md.

    python benchmarks/accuracy.py                      # every section (about an hour on 2 cores)
    python benchmarks/accuracy.py --only dinov2-s14    # one section; the others keep their last results

Sections: the robustness table (every method on five small ViTs, three calibration draws), W8A8 and W6A6 tables for cifar10-vit, fashion-vit and dinov2-s14 (probe top-1 on CIFAR-10 at 224 and
class-token cosine, plus cosine on the ImageNet sample), the TSPTQ ablation, and calibration wall time of
deit_small_patch16_224 (random weights, 32 images at 224) for tsptq next to minmax. Each section's numbers are
kept in benchmarks/results/<section>.json; the Markdown is rebuilt from all of them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from tsptq.atomic import atomic_write
from tsptq.calib import datasets
from tsptq.checkpoint import resolve_model
from tsptq.cli import resolve_data
from tsptq.evaluate import evaluate, plot_drops, write_json_atomic
from tsptq.methods import ABLATIONS, MAIN_METHODS
from tsptq.quantize import quantize
from tsptq.shards import default_workers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
METHODS = [m for m in MAIN_METHODS if m != "fp32"]

# (section, model, data, eval images, bit widths, methods)
ACCURACY_SECTIONS = [
    ("cifar10-vit", "cifar10-vit", "cifar10", None, ("W8A8", "W6A6"), METHODS),
    ("fashion-vit", "fashion-vit", "fashion", None, ("W8A8", "W6A6"), METHODS),
    # DINOv2 W8A8 runs in the C engine (~15 images/s per core): 2000 images for the headline. W6A6 and W4A8 have
    # no integer model (activations under 8 bits; W4A8 is not exported) and run in the float32 simulator: 500 images.
    ("dinov2-s14", "dinov2-s14", "cifar10", 2000, ("W8A8",), METHODS),
    ("dinov2-s14-low-bits", "dinov2-s14", "cifar10", 500, ("W6A6", "W4A8"), METHODS),
    ("dinov2-s14-imagenet", "dinov2-s14", "imagenet", 200, ("W8A8",), METHODS),
    ("ablation-dinov2-s14", "dinov2-s14", "cifar10", 500, ("W8A8",), list(ABLATIONS)),
    ("ablation-cifar10-vit", "cifar10-vit", "cifar10", None, ("W6A6",), list(ABLATIONS)),
]


def run_accuracy(section, model_name, data, eval_n, bit_widths, methods, calib_n):
    model = resolve_model(model_name)
    calib, test, labelled = resolve_data(model_name, model.cfg, data, calib_n, eval_n, None)
    tables = {}
    for bits in bit_widths:
        print(f"[{section}] {bits}: {len(calib)} calibration / {len(test)} evaluation images", file=sys.stderr)
        rows = evaluate(model, calib, test, ["fp32"] + methods, bits, labels_valid=labelled,
                        workers=default_workers()).rows
        tables[bits] = rows
        plot_drops(rows, f"{section} {bits}, {len(test)} images ({test.name})", ROOT / "docs" / f"accuracy-{section}-{bits}.png")
    return {"section": section, "model": model_name, "data": test.name, "eval_images": len(test),
            "calib_images": len(calib), "labelled": labelled, "tables": tables}


# (section, model, data, eval images, methods): the integer model (what the .tflite file computes) against the
# simulator, on the same images and calibration as the accuracy tables.
INTEGER_SECTIONS = [
    ("integer-cifar10-vit", "cifar10-vit", "cifar10", None, ["tsptq"]),
    ("integer-cifar10-vit-methods", "cifar10-vit", "cifar10", 2000, ["minmax", "percentile", "ptf-log2", "twin"]),
]


def run_integer(section, model_name, data, eval_n, methods, calib_n):
    from tsptq.integer import compare, run_batches, run_faithful, run_simulator
    from tsptq.lower import lower

    model = resolve_model(model_name)
    calib, test, labelled = resolve_data(model_name, model.cfg, data, calib_n, eval_n, None)
    rows = []
    for method in methods:
        print(f"[{section}] {method}: {len(calib)} calibration / {len(test)} evaluation images", file=sys.stderr)
        qm = quantize(model, calib, method)
        im = lower(qm)
        t0 = time.perf_counter()
        logits = im.dequantize_output(run_batches(im, test, model.cfg, desc=f"integer {method}"))
        int_seconds = time.perf_counter() - t0
        sim = run_simulator(qm, test)
        faithful = run_faithful(qm, test)
        labels = test.labels if labelled else None
        rows.append({"method": method, "vs_simulator": compare(logits, sim, labels),
                     "vs_faithful": compare(logits, faithful, labels), "integer_seconds": round(int_seconds, 1),
                     "logit_step": float(im.output.quant.scale[0])})
    stock = None
    if section == "integer-cifar10-vit":
        stock = run_stock(model, calib, test, labelled)
    return {"section": section, "model": model_name, "data": test.name, "eval_images": len(test),
            "calib_images": len(calib), "rows": rows, "stock": stock}


# The stock path alone on the real pretrained ViT (its conversion takes about 13 minutes here).
STOCK_SECTIONS = [("stock-dinov2-s14", "dinov2-s14", "cifar10", 1000)]


def run_stock_section(section, model_name, data, eval_n, calib_n):
    model = resolve_model(model_name)
    calib, test, labelled = resolve_data(model_name, model.cfg, data, calib_n, eval_n, None)
    return {"section": section, "model": model_name, "data": test.name, "eval_images": len(test),
            "calib_images": len(calib), "stock": run_stock(model, calib, test, labelled)}


def run_stock(model, calib, test, labelled):
    """The stock path (PyTorch -> ONNX -> onnx2tf full-int8 -> LiteRT) on the same images, when installed."""
    import tempfile

    import numpy as np

    from tsptq.errors import TsptqError

    try:
        from tsptq.stock_converter import convert, run_tflite
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            info = convert(model, calib, Path(tmp) / "stock.tflite")
        except TsptqError as e:
            return {"error": str(e)[:300]}
        logits = run_tflite(Path(tmp) / "stock.tflite", test.images, model.cfg)
    top1 = float(np.mean(logits.argmax(-1) == test.labels)) * 100 if labelled else None
    with torch.no_grad():
        fp32 = np.concatenate([model(x).numpy() for x in datasets.iterate_batches(test.images, model.cfg, 50)])
    return {"top1": None if top1 is None else round(top1, 3), "info": info,
            "fp32_top1": round(float(np.mean(fp32.argmax(-1) == test.labels)) * 100, 3) if labelled else None,
            "agreement_fp32": round(float(np.mean(fp32.argmax(-1) == logits.argmax(-1))) * 100, 3)}


# tsptq eval's engines on the same job: dinov2-s14 W8A8, fp32 + minmax + tsptq on 2000 CIFAR-10 test images at 224.
ENGINE_SECTIONS = [("engines-dinov2-s14", "dinov2-s14", "cifar10", 2000, ["minmax", "tsptq"], ("c", "faithful"))]


def run_engines(section, model_name, data, eval_n, methods, engines, calib_n):
    """Wall time of the same evaluation (calibration included) with each engine, and the rows each measured."""
    model = resolve_model(model_name)
    calib, test, labelled = resolve_data(model_name, model.cfg, data, calib_n, eval_n, None)
    runs = []
    for engine in engines:
        print(f"[{section}] engine {engine}: {len(test)} images, {default_workers()} workers", file=sys.stderr)
        t0 = time.perf_counter()
        rows = evaluate(model, calib, test, ["fp32"] + methods, "W8A8", labels_valid=labelled, engine=engine,
                        workers=default_workers()).rows
        runs.append({"engine": engine, "seconds": round(time.perf_counter() - t0, 1), "rows": rows})
    return {"section": section, "model": model_name, "data": test.name, "eval_images": len(test),
            "calib_images": len(calib), "workers": default_workers(), "runs": runs}


def run_calibration_time(calib_n: int = 32, repeats: int = 2):
    """Calibration wall time (record + search) of deit_small_patch16_224, random weights, 32 images at 224."""
    model = resolve_model("deit_small_patch16_224")
    if datasets.IMAGENET_SAMPLE.exists():
        images = datasets.load_image_folder(datasets.IMAGENET_SAMPLE, model.cfg, limit=calib_n)
    else:
        import numpy as np

        rng = np.random.default_rng(0)
        images = datasets.ImageSet(rng.integers(0, 256, (calib_n, 224, 224, 3), dtype=np.uint8),
                                   np.zeros(calib_n, dtype=np.int64), "random")
    rows = []
    for method in ("minmax", "tsptq"):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            quantize(model, images, method, progress=False)
            times.append(time.perf_counter() - t0)
        rows.append({"method": method, "seconds": round(min(times), 2)})
    return {"section": "calibration-time", "model": "deit_small_patch16_224", "calib_images": calib_n,
            "threads": torch.get_num_threads(), "rows": rows}


def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def render(results: dict) -> str:
    out = ["# Benchmarks", "",
           "Regenerated by `python benchmarks/accuracy.py` (sections: `--only NAME`). Every number below was measured by "
           "that script; each section says when and on what. Top-1 and drop are in percent / points (drop = FP32 "
           "top-1 minus the method's, positive = worse); agreement = share of images whose top-1 class equals "
           "FP32's; cosine = class-token cosine to FP32 after the final LayerNorm. All methods are fully quantized "
           "(every op's input and output, LayerNorm/Softmax/GELU included). Intervals are 95% paired bootstrap "
           "intervals over the images (`tsptq.stats`: the drop pairs each image's FP32 and quantized top-1; "
           "10,000 resamples, seeded). The *engine* column says what measured each row: *c* = the method's exported "
           "`.tflite` file run by the C runtime (the integer model itself, bit-exact with `tsptq verify`; the "
           "default of `tsptq eval`), *faithful* = the float64 simulator with TFLite's rounding at the builtin ops, "
           "*float32* = the fake-quantized simulator (A<8 has no integer model, so W6A6 rows use it).", "",
           "Reading them: the small ViTs trained from scratch (cifar10-vit, fashion-vit) have no outlier channels and "
           "short sequences, so at W8A8 every method is within noise of FP32 and of each other; they separate at "
           "W6A6. The real pretrained DINOv2-S/14 is where the problem exists and where the methods part ways. Its "
           "probe top-1 moves by about +-2 points on a few hundred images from noise alone: read agreement and "
           "cosine beside it.", "",
           "tsptq changed in issue 13 (block-output selection, per-channel O-2SF levels, docs/method.md). Sections "
           "measured before that show the previous form as `tsptq-local`, with a note; the latency, board and "
           "delegate sections time files of the previous form (the same op kinds).", ""]
    for section, *_ in ACCURACY_SECTIONS:
        r = results.get(section)
        if not r:
            continue
        out += [f"## {section}", "",
                f"{r['model']} on {r['eval_images']} images of `{r['data']}`, calibrated on {r['calib_images']} "
                f"images; measured {r['date']} ({r['machine']})." + (f" *{r['note']}*" if r.get("note") else ""), ""]
        for bits, rows in r["tables"].items():
            out += [f"**{bits}**", ""] + accuracy_table(rows)
            out += ["", f"![{section} {bits}](accuracy-{section}-{bits}.png)", ""]
    import robustness  # benchmarks/robustness.py (this folder is on sys.path when a benchmark script runs)

    out += robustness.render(results)
    out += render_engines(results)
    out += render_integer(results)
    import latency  # benchmarks/latency.py (this folder is on sys.path when a benchmark script runs)

    out += latency.render(results)
    import boards  # benchmarks/boards.py

    out += boards.render(results)
    import litert_delegate  # benchmarks/litert_delegate.py

    out += litert_delegate.render(results)
    r = results.get("calibration-time")
    if r:
        out += ["## Calibration time", "",
                f"{r['model']} (random weights), {r['calib_images']} images at 224x224, {r['threads']} threads, best of 2; "
                f"measured {r['date']} ({r['machine']})." + (f" *{r['note']}*" if r.get("note") else ""), "",
                "| method | seconds | ratio to minmax |", "|---|---:|---:|"]
        base = next(x["seconds"] for x in r["rows"] if x["method"] == "minmax")
        out += [f"| {x['method']} | {x['seconds']:.1f} | {x['seconds'] / base:.2f}x |" for x in r["rows"]]
        out.append("")
    return "\n".join(out)


def _ci(ci) -> str:
    return "" if not ci else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def accuracy_table(rows: list[dict]) -> list[str]:
    """Markdown rows: drop and agreement with their 95% paired bootstrap intervals, and the engine that measured
    each row (c = the C runtime running the exported file)."""
    out = ["| method | top-1 | drop [95% interval] | agreement [95% interval] | cosine mean | cosine min | calib s "
           "| engine |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        engine = row.get("engine", row.get("simulator", "float32" if row["method"] != "fp32" else "-"))
        out.append(f"| {row['method']} | {_fmt(row['top1'])} | {_fmt(row['drop'])}{_ci(row.get('drop_ci'))} | "
                   f"{row['agreement']:.2f}{_ci(row.get('agreement_ci'))} | {row['cosine_mean']:.4f} | "
                   f"{row['cosine_min']:.4f} | {row.get('calib_seconds', 0.0):.1f} | {engine} |")
    return out


def render_engines(results: dict) -> list[str]:
    out = []
    for section, *_ in ENGINE_SECTIONS:
        r = results.get(section)
        if not r:
            continue
        base = next(x["seconds"] for x in r["runs"] if x["engine"] == "c")
        tsptq = next(row["method"] for row in r["runs"][0]["rows"] if row["method"].startswith("tsptq"))
        out += [f"## {section}: the same evaluation with each engine", "",
                f"`tsptq eval --model {r['model']} --methods fp32,minmax,tsptq --eval-images {r['eval_images']}` "
                f"(W8A8, {r['calib_images']} calibration images, {r['workers']} workers), wall time including "
                f"calibration and the FP32 reference; measured {r['date']} ({r['machine']})."
                + (f" {r['note']}" if r.get("note") else ""), "",
                f"| engine | wall time | ratio to c | {tsptq} drop | {tsptq} agreement | minmax drop | minmax agreement |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for run in r["runs"]:
            by = {row["method"]: row for row in run["rows"]}
            out.append(f"| {run['engine']} | {run['seconds'] / 60:.1f} min | {run['seconds'] / base:.2f}x | "
                       + " | ".join(f"{_fmt(by[m]['drop'])}{_ci(by[m].get('drop_ci'))} | "
                                    f"{by[m]['agreement']:.2f}{_ci(by[m].get('agreement_ci'))}" for m in (tsptq, "minmax"))
                       + " |")
        out.append("")
    return out


def render_integer(results: dict) -> list[str]:
    out = []
    for section, *_ in INTEGER_SECTIONS:
        r = results.get(section)
        if not r:
            continue
        out += [f"## {section}: the integer model against the simulator", "",
                f"{r['model']} on {r['eval_images']} images of `{r['data']}`, calibrated on {r['calib_images']} images; "
                f"measured {r['date']} ({r['machine']}). *integer* = the `.tflite` file's integer model (tsptq's Python "
                "reference, bit-exact with the file); *simulator* = the float32 fake-quantized simulator "
                "(`--engine float32`); *faithful* = the simulator in float64 with TFLite's two-rounding "
                "requantization at the builtin CONV_2D/BATCH_MATMUL outputs (`--engine faithful`; `tsptq eval`'s "
                "default engine is now the C runtime, which runs the integer model itself). Logit error is in logit units against the faithful simulator "
                "(one output code = the logit step)." + (f" *{r['note']}*" if r.get("note") else ""), "",
                "| method | top-1 integer | top-1 simulator | top-1 faithful | agreement int/sim | agreement int/faithful "
                "| logit err mean | logit err max | logit step | integer s |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in r["rows"]:
            a, b = row["vs_simulator"], row["vs_faithful"]
            out.append(f"| {row['method']} | {_fmt(a.get('top1_integer'))} | {_fmt(a.get('top1_simulator'))} | "
                       f"{_fmt(b.get('top1_simulator'))} | {a['agreement']:.2f} | {b['agreement']:.2f} | "
                       f"{b['logit_abs_err_mean']:.4f} | {b['logit_abs_err_max']:.4f} | {row['logit_step']:.4f} | "
                       f"{row['integer_seconds']:.0f} |")
        stock = r.get("stock")
        if stock and "top1" in stock:
            ops = stock["info"].get("op_histogram", {})
            out += ["", f"Stock path on the same images (PyTorch -> ONNX -> onnx2tf full-integer int8, run in LiteRT): "
                        f"top-1 **{_fmt(stock['top1'])}**. Ops: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
                    + ". Left in float: " + (", ".join(o["op"] for o in stock["info"]["float_ops"]) or "none") + ". "
                    "LayerNorm is split into MEAN / SQUARED_DIFFERENCE / MEAN / ADD / RSQRT / MUL / MUL / MUL / SUB / ADD "
                    "and tanh-GELU into 8 ops (exact-erf GELU has no int8 TFLite kernel), softmax output fixed at 1/256."]
        elif stock:
            out += ["", f"Stock path failed: {stock.get('error')}"]
        out.append("")
    for section, *_ in STOCK_SECTIONS:
        r = results.get(section)
        if not r or not r.get("stock") or "top1" not in r["stock"]:
            continue
        st = r["stock"]
        out += [f"## {section}: the stock converter on the real ViT", "",
                f"{r['model']} on {r['eval_images']} images of `{r['data']}`, calibrated on {r['calib_images']} images; "
                f"measured {r['date']} ({r['machine']}). PyTorch -> ONNX -> onnx2tf full-integer int8 -> LiteRT: top-1 "
                f"**{_fmt(st['top1'])}** against FP32 {_fmt(st.get('fp32_top1'))} (agreement with FP32 "
                f"{_fmt(st.get('agreement_fp32'))}%), {st['info']['num_ops']} ops, none left in float. Compare the "
                "W8A8 table of the dinov2-s14 section above (the same images and calibration).", ""]
    return out


def main(argv=None) -> int:
    names = ([s[0] for s in ACCURACY_SECTIONS] + [s[0] for s in INTEGER_SECTIONS] + [s[0] for s in STOCK_SECTIONS]
             + [s[0] for s in ENGINE_SECTIONS] + ["robustness", "calibration-time"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=names, help="run only these sections (repeatable)")
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--render-only", action="store_true", help="rebuild the Markdown from stored results")
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(),
             "machine": f"{os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"}
    if not args.render_only:
        for section in args.only or names:
            if section == "calibration-time":
                res = run_calibration_time(args.calib_images)
            elif section == "robustness":
                import robustness  # benchmarks/robustness.py

                res = robustness.run_robustness(args.calib_images)
            elif section.startswith("engines-"):
                spec = next(s for s in ENGINE_SECTIONS if s[0] == section)
                res = run_engines(*spec, calib_n=args.calib_images)
            elif section.startswith("stock-"):
                spec = next(s for s in STOCK_SECTIONS if s[0] == section)
                res = run_stock_section(*spec, calib_n=args.calib_images)
            elif section.startswith("integer-"):
                spec = next(s for s in INTEGER_SECTIONS if s[0] == section)
                res = run_integer(*spec, calib_n=args.calib_images)
            else:
                spec = next(s for s in ACCURACY_SECTIONS if s[0] == section)
                res = run_accuracy(*spec, calib_n=args.calib_images)
            write_json_atomic(RESULTS / f"{section}.json", {**res, **stamp})
    results = {p.stem: json.loads(p.read_text()) for p in RESULTS.glob("*.json")}
    atomic_write(DOC, lambda tmp: tmp.write_text(render(results)))
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
