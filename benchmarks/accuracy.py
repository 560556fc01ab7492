"""Accuracy benchmark: measures its sections, then regenerates docs/benchmarks.md (through benchmarks/report.py).

    python benchmarks/accuracy.py                      # every section (about an hour on 2 cores)
    python benchmarks/accuracy.py --only dinov2-s14    # one section; the others keep their last results
    python benchmarks/accuracy.py --render-only        # measure nothing: the same as python benchmarks/report.py
    python benchmarks/accuracy.py --only cifar10-swin --eval-images 200  # a quick check: printed, nothing stored

Sections: the robustness table (every method on six small ViTs, three calibration draws), W8A8 and W6A6 tables for
cifar10-vit, fashion-vit, cifar10-swin and dinov2-s14 (probe top-1 on CIFAR-10 at 224 and class-token cosine, plus
cosine on the ImageNet sample), the integer model against the simulators, the C runtime against the Python integer
model byte for byte (bitexact-cifar10-swin), the TSPTQ ablation, and calibration wall time of deit_small_patch16_224
(random weights, 32 images at 224) for tsptq next to minmax. Each section's numbers are kept in
benchmarks/results/<section>.json; the Markdown is rebuilt from all of them (benchmarks/report.py).
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

from tsptq.data import datasets
from tsptq.model.checkpoint import resolve_model
from tsptq.model.model_data import resolve_data
from tsptq.evaluation.evaluate import evaluate, plot_drops, write_json_atomic
from tsptq.quant.methods import ABLATIONS, MAIN_METHODS
from tsptq.quant.quantize import quantize
from tsptq.evaluation.shards import default_workers

import report  # benchmarks/report.py (this folder is sys.path[0] when a benchmark runs): writes docs/benchmarks.md

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METHODS = [m for m in MAIN_METHODS if m != "fp32"]
EVAL_IMAGES = None  # main() sets it for --eval-images: every section's evaluation count

# (section, model, data, eval images, bit widths, methods). The names (here and in the lists below) fix the page's
# order: keep them in step with report.ACCURACY_SECTIONS, INTEGER_SECTIONS, BITEXACT_SECTIONS, STOCK_SECTIONS,
# ENGINE_SECTIONS.
ACCURACY_SECTIONS = [
    ("cifar10-vit", "cifar10-vit", "cifar10", None, ("W8A8", "W6A6"), METHODS),
    ("fashion-vit", "fashion-vit", "fashion", None, ("W8A8", "W6A6"), METHODS),
    # The Swin (windowed attention, patch merging): W8A8 in the C engine (the faithful simulator does not cover a
    # Swin); W6A6 has no integer model and runs in the float32 simulator.
    ("cifar10-swin", "cifar10-swin", "cifar10", 2000, ("W8A8", "W6A6"), METHODS),
    # DINOv2 W8A8 runs in the C engine (~15 images/s per core): 2000 images for the headline. W6A6 and W4A8 have
    # no integer model (activations under 8 bits; W4A8 is not exported) and run in the float32 simulator: 500 images.
    ("dinov2-s14", "dinov2-s14", "cifar10", 2000, ("W8A8",), METHODS),
    ("dinov2-s14-low-bits", "dinov2-s14", "cifar10", 500, ("W6A6", "W4A8"), METHODS),
    ("dinov2-s14-imagenet", "dinov2-s14", "imagenet", 200, ("W8A8",), METHODS),
    ("ablation-dinov2-s14", "dinov2-s14", "cifar10", 500, ("W8A8",), list(ABLATIONS)),
    ("ablation-cifar10-vit", "cifar10-vit", "cifar10", None, ("W6A6",), list(ABLATIONS)),
]


def run_accuracy(section, model_name, data, eval_n, bit_widths, methods, calib_n):
    eval_n = EVAL_IMAGES or eval_n
    model = resolve_model(model_name)
    calib, test, labelled = resolve_data(model_name, model.cfg, data, calib_n, eval_n, None)
    tables = {}
    for bits in bit_widths:
        print(f"[{section}] {bits}: {len(calib)} calibration / {len(test)} evaluation images", file=sys.stderr)
        rows = evaluate(model, calib, test, ["fp32"] + methods, bits, labels_valid=labelled,
                        workers=default_workers()).rows
        tables[bits] = rows
        if EVAL_IMAGES is None:  # a quick check (--eval-images) leaves the published plots alone
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
    from tsptq.intmodel.integer import compare, run_batches, run_faithful, run_simulator
    from tsptq.intmodel.lower import lower

    eval_n = EVAL_IMAGES or eval_n
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


# (section, model, data, eval images, methods): the C runtime against the Python integer model, byte for byte, for a
# model the faithful simulator does not cover (a Swin). What `tsptq verify --runtime c` and `tsptq verify` report on
# the method's exported file: the C runtime vs the file's integer model (tsptq.runtime.c_binding.verify_c), and the
# file's integer model vs the in-memory one rebuilt from the file's recorded source (byte for byte) and vs the float32
# simulator (tsptq.evaluation.verify.verify).
BITEXACT_SECTIONS = [("bitexact-cifar10-swin", "cifar10-swin", "cifar10", 1000, ["tsptq"])]


def run_bitexact(section, model_name, data, eval_n, methods, calib_n):
    import tempfile

    from tsptq.evaluation.verify import verify, verify_c
    from tsptq.intmodel.integer import Source, build
    from tsptq.model.model_data import EvalData
    from tsptq.tflite.writer import to_tflite

    eval_n = EVAL_IMAGES or eval_n
    rows = []
    for method in methods:
        src = Source(model=model_name, method=method, bits="W8A8", data=data, calib_images=calib_n)
        print(f"[{section}] {method}: {calib_n} calibration / {eval_n} evaluation images", file=sys.stderr)
        im, _ = build(src, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{model_name}-{method}.tflite"
            path.write_bytes(to_tflite(im))
            want = EvalData(data=data, images=eval_n)
            t0 = time.perf_counter()
            c = verify_c(path, want, quiet=True)  # tsptq verify --runtime c
            c_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            py = verify(path, want, quiet=True)  # tsptq verify (rebuilds the in-memory model from the recorded source)
            py_seconds = time.perf_counter() - t0
        c.pop("file", None)
        py.pop("file", None)
        n = c["images"]
        rows.append({"method": method, "bits": "W8A8", "images": n,
                     "images_differing": n - int(round(c["bit_exact_fraction"] * n)), "c_runtime": c,
                     "verify": py, "verify_c_seconds": round(c_seconds, 1), "verify_seconds": round(py_seconds, 1)})
        print(f"[{section}] {method}: C runtime vs the Python integer model: {rows[-1]['images_differing']} of {n} "
              f"images differ; file = in-memory: {py.get('bytes_equal_to_in_memory')}", file=sys.stderr)
    return {"section": section, "model": model_name, "data": c["data"], "eval_images": n, "calib_images": calib_n,
            "rows": rows}


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
        from tsptq.evaluation.stock_converter import convert, run_tflite
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
report.check_page_order("accuracy", [s[0] for s in ACCURACY_SECTIONS], report.ACCURACY_SECTIONS)
report.check_page_order("accuracy", [s[0] for s in INTEGER_SECTIONS], report.INTEGER_SECTIONS)
report.check_page_order("accuracy", [s[0] for s in BITEXACT_SECTIONS], report.BITEXACT_SECTIONS)
report.check_page_order("accuracy", [s[0] for s in STOCK_SECTIONS], report.STOCK_SECTIONS)
report.check_page_order("accuracy", [s[0] for s in ENGINE_SECTIONS], report.ENGINE_SECTIONS)


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


def main(argv=None) -> int:
    names = ([s[0] for s in ACCURACY_SECTIONS] + [s[0] for s in INTEGER_SECTIONS] + [s[0] for s in BITEXACT_SECTIONS]
             + [s[0] for s in STOCK_SECTIONS] + [s[0] for s in ENGINE_SECTIONS] + ["robustness", "calibration-time"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=names, help="run only these sections (repeatable)")
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--eval-images", type=int, default=None,
                    help="evaluate this many images instead of each section's own count (a quick check of the "
                         "accuracy, integer and bitexact sections: the results are printed, and neither "
                         "benchmarks/results nor docs/ is written)")
    ap.add_argument("--render-only", action="store_true",
                    help="rebuild the Markdown from stored results (the same as python benchmarks/report.py)")
    args = ap.parse_args(argv)
    if args.eval_images is not None and args.eval_images < 1:
        ap.error("--eval-images must be at least 1")
    global EVAL_IMAGES
    EVAL_IMAGES = args.eval_images
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
            elif section.startswith("bitexact-"):
                spec = next(s for s in BITEXACT_SECTIONS if s[0] == section)
                res = run_bitexact(*spec, calib_n=args.calib_images)
            elif section.startswith("integer-"):
                spec = next(s for s in INTEGER_SECTIONS if s[0] == section)
                res = run_integer(*spec, calib_n=args.calib_images)
            else:
                spec = next(s for s in ACCURACY_SECTIONS if s[0] == section)
                res = run_accuracy(*spec, calib_n=args.calib_images)
            if EVAL_IMAGES is not None:
                print(json.dumps(res, indent=1, default=str))
                continue
            write_json_atomic(RESULTS / f"{section}.json", {**res, **stamp})
    if EVAL_IMAGES is not None:
        return 0
    return report.main([])


if __name__ == "__main__":
    sys.exit(main())
