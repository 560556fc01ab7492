"""The tsptq file inside stock LiteRT with libtsptq_delegate.so, on a whole test set (issue 6's proof).

    python benchmarks/litert_delegate.py                         # cifar10-vit, the 10,000 CIFAR-10 test images
    python benchmarks/litert_delegate.py --eval-images 500

Quantize cifar10-vit with tsptq (W8A8, 32 calibration images), export the .tflite, and run every test image through
(a) the Python integer reference (IntModel.run), and LiteRT with the delegate and (b) its reference kernels
(BUILTIN_REF), (c) its optimized kernels without XNNPACK, (d) its default resolver (XNNPACK). Reports (b)-(d) against (a):
the share of byte-identical outputs, top-1 agreement, the largest output difference in codes, top-1 of each.
Results go to benchmarks/results/litert-delegate-<model>.json and into docs/benchmarks.md (via benchmarks/report.py).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tsptq.evaluation.evaluate import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _litert_outputs(path: Path, codes: np.ndarray, resolver, desc: str) -> tuple[np.ndarray, float]:
    from tsptq.runtime.litert import make_interpreter

    it = make_interpreter(path, experimental_op_resolver_type=resolver, num_threads=1)
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    outs = np.empty((len(codes),) + tuple(it.get_output_details()[0]["shape"][1:]), np.int8)
    t0 = time.perf_counter()
    for k in tqdm(range(len(codes)), desc=desc, unit="img", leave=False):
        it.set_tensor(i, codes[k:k + 1])
        it.invoke()
        outs[k] = it.get_tensor(o)[0]
    return outs, time.perf_counter() - t0


def _compare(got: np.ndarray, ref: np.ndarray, im, labels: np.ndarray, seconds: float) -> dict:
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32)).reshape(len(ref), -1).max(axis=1)
    pred, ref_pred = im.dequantize_output(got).argmax(-1), im.dequantize_output(ref).argmax(-1)
    return {"bit_exact_fraction": float((diff == 0).mean()), "images_differing": int((diff > 0).sum()),
            "max_abs_diff_codes": int(diff.max()), "top1_agreement": float((pred == ref_pred).mean()),
            "top1": round(100.0 * float((pred == labels).mean()), 2), "ms_per_image": 1e3 * seconds / len(ref)}


def run(model_name: str, eval_n: int | None, calib_n: int) -> dict:
    import torch
    from ai_edge_litert.interpreter import OpResolverType

    from tsptq.data import datasets
    from tsptq.model.checkpoint import resolve_model
    from tsptq.model.model_data import resolve_data
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize
    from tsptq.tflite.writer import to_tflite
    from tsptq.runtime.litert import litert_version

    torch.set_num_threads(1)
    model = resolve_model(model_name)
    calib, test, _ = resolve_data(model_name, model.cfg, "auto", calib_n, eval_n, None)
    im = lower(quantize(model, calib, "tsptq", progress=False))
    codes = np.concatenate([im.quantize_input(datasets.to_model_input(test.images[k:k + 500], model.cfg).numpy())
                            for k in range(0, len(test), 500)])
    t0 = time.perf_counter()
    ref = np.concatenate([im.run(codes[k:k + 100]) for k in tqdm(range(0, len(codes), 100), desc="integer reference",
                                                                   unit="x100 img", leave=False)])
    ref_seconds = time.perf_counter() - t0
    labels = np.asarray(test.labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(to_tflite(im))
        rows = {}
        for name, resolver in (("BUILTIN_REF", OpResolverType.BUILTIN_REF),
                               ("BUILTIN_WITHOUT_DEFAULT_DELEGATES (optimized, ruy)",
                                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
                               ("default (XNNPACK)", None)):
            got, sec = _litert_outputs(path, codes, resolver, f"LiteRT {name}")
            rows[name] = _compare(got, ref, im, labels, sec)
    ref_pred = im.dequantize_output(ref).argmax(-1)
    return {"model": model_name, "data": test.name, "eval_images": len(test), "calib_images": calib_n,
            "litert": litert_version(), "reference_top1": round(100.0 * float((ref_pred == labels).mean()), 2),
            "reference_seconds": round(ref_seconds, 1), "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cifar10-vit")
    ap.add_argument("--eval-images", type=int, default=None, help="default: the whole test set")
    ap.add_argument("--calib-images", type=int, default=32)
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {platform.machine()}"}
    result = run(args.model, args.eval_images, args.calib_images)
    write_json_atomic(RESULTS / f"litert-delegate-{args.model}.json", {**result, **stamp})
    for name, row in result["rows"].items():
        print(f"{name}: {row}", file=sys.stderr)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report  # benchmarks/report.py: writes docs/benchmarks.md from every stored result

    return report.main([])


if __name__ == "__main__":
    sys.exit(main())
