"""Latency benchmark: batch-1, single-thread median latency of the same network in four runtimes, in one run.

    python benchmarks/latency.py                          # cifar10-vit, cifar10-swin, deit_tiny_patch16_224,
                                                          # dinov2-s14
    python benchmarks/latency.py --only cifar10-swin      # one model; the others keep their last results
    python benchmarks/latency.py --only cifar10-vit --repeats 50
    python benchmarks/latency.py --only cifar10-vit --c-variant avx512vnni  # + that C build, same run
    python benchmarks/latency.py --only cifar10-vit --threads 4      # + the C runtime on 4 threads, same run
    python benchmarks/latency.py --no-peers                # without the peer toolchains (benchmarks/peers.py)

For each model: the tsptq C runtime on the tsptq W8A8 file (the runtime is built for the host, -O2, its fastest
SIMD path: c_binding.default_variant, e.g. amx; --c-variant adds rows for other builds of it, timed in turn with the
host build, run by run), LiteRT 2.3.0 with XNNPACK on the stock full-integer int8 conversion (PyTorch -> ONNX ->
onnx2tf), ONNX Runtime on a static int8 quantization (QDQ, per-channel weights) of the same ONNX export, and torch
FP32. With the `peers` extra (pip install -e '.[peers]'; benchmarks/peers.py), the peer toolchains in the same run:
litert-torch PT2E int8, litert-torch FP32 and litert-torch + ai-edge-quantizer full int8 (in LiteRT), ExecuTorch
XNNPACK int8 (the model as is, and with its attention written out); without it one line says which rows are skipped
(--no-peers skips them). Every runtime gets one thread and the same image; the first runs are warm-up. --threads N
(N > 1) adds a row "tsptq C runtime, N threads" (the host build with tsptq_set_threads(N), bit-exact with the
one-thread run, timed in its own block after the one-thread rows: its pool's workers poll between invokes and would
take a core from them). Ratios are to LiteRT int8, measured in the same run. Results go to
benchmarks/results/latency-<model>.json and into
docs/benchmarks.md (via benchmarks/report.py).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tsptq.data import datasets
from tsptq.model.checkpoint import resolve_model
from tsptq.model.model_data import resolve_data
from tsptq.evaluation.evaluate import write_json_atomic
from tsptq.runtime.c_binding import MAX_THREADS

import report  # benchmarks/report.py (this folder is sys.path[0] when a benchmark runs): writes docs/benchmarks.md

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# keep the names in step with report.LATENCY_MODELS (the page's order)
MODELS = {"cifar10-vit": "cifar10", "cifar10-swin": "cifar10", "deit_tiny_patch16_224": "imagenet",
          "dinov2-s14": "cifar10"}
report.check_page_order("latency", MODELS, report.LATENCY_MODELS)
RUN_PEERS = True  # main() clears it for --no-peers


def median_ms(fn, repeats: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), float(np.percentile(times, 90))


def calibration(name: str, model, n: int = 32):
    data = MODELS[name]
    if data == "imagenet" and not datasets.IMAGENET_SAMPLE.exists():
        rng = np.random.default_rng(0)
        imgs = rng.integers(0, 256, (n + 1, model.cfg.img_size, model.cfg.img_size, 3), dtype=np.uint8)
        return datasets.ImageSet(imgs[:n], np.zeros(n, np.int64), "random"), imgs[n:]
    calib, test, _ = resolve_data(name if name in ("cifar10-vit", "cifar10-swin", "dinov2-s14") else None, model.cfg,
                                  data, n, 1, None)
    return calib, test.images[:1]


def median_ms_interleaved(fns: dict, repeats: int, warmup: int = 3) -> dict:
    """median_ms of several functions, run in turn (one run of each per round): the same load for all of them."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: (statistics.median(t), float(np.percentile(t, 90))) for k, t in times.items()}


def bench_model(name: str, repeats: int, c_variants: list[str] | None = None, threads: int = 1) -> dict:
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize
    from tsptq.runtime.c_binding import CModel, default_variant, profile
    from tsptq.tflite.writer import to_tflite

    torch.set_num_threads(1)
    model = resolve_model(name)
    calib, image = calibration(name, model)
    x_float = datasets.to_model_input(image, model.cfg)
    rows, info = [], {}

    im = lower(quantize(model, calib, "tsptq", progress=False))
    cm = CModel(to_tflite(im), name=f"{name} tsptq")
    xq = im.quantize_input(x_float.numpy())
    others = {v: CModel(to_tflite(im), name=f"{name} tsptq {v}", variant=v) for v in c_variants or []}
    for v, other in others.items():
        if not np.array_equal(other.run(xq), cm.run(xq)):
            raise SystemExit(f"the {v} build of the C runtime gives other bytes than the host build on {name}")
    fns = {"": lambda: cm.run(xq), **{v: (lambda m=m: m.run(xq)) for v, m in others.items()}}
    timed = median_ms_interleaved(fns, repeats)
    med, p90 = timed[""]
    rows.append({"runtime": "tsptq C runtime (tsptq W8A8)", "median_ms": med, "p90_ms": p90})
    for v in others:
        med, p90 = timed[v]
        rows.append({"runtime": f"tsptq C runtime (tsptq W8A8), {v} build", "median_ms": med, "p90_ms": p90})
    if threads > 1:
        cmt = CModel(to_tflite(im), name=f"{name} tsptq, {threads} threads", threads=threads)
        if not np.array_equal(cmt.run(xq), cm.run(xq)):
            raise SystemExit(f"the C runtime on {threads} threads gives other bytes than on one thread on {name}")
        med, p90 = median_ms(lambda: cmt.run(xq), repeats)
        del cmt  # the pool is the process's and stays; its workers sleep 50 us after their last job
        rows.append({"runtime": f"tsptq C runtime, {threads} threads", "median_ms": med, "p90_ms": p90})
        info["c_threads"] = threads
    info["c_variant"] = os.environ.get("TSPTQ_C_VARIANT") or default_variant()
    info["c_profile"] = profile(cm, xq, repeats)
    info["c_arena_bytes"] = cm.arena_size
    info["c_weight_bytes"] = int(sum(t.nbytes for t in im.tensors if t.data is not None))
    try:
        rows.append(_litert_with_delegate(to_tflite(im), xq, repeats))
    except Exception as e:  # the delegate or LiteRT refuses the file (or is not installed): say why in the row
        rows.append({"runtime": "LiteRT + tsptq delegate (tsptq W8A8)", "median_ms": None, "p90_ms": None,
                     "note": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"})

    with tempfile.TemporaryDirectory() as tmp:
        try:
            from ai_edge_litert.interpreter import Interpreter

            from tsptq.evaluation.stock_converter import convert

            stock = Path(tmp) / "stock.tflite"
            conv = convert(model, calib, stock)
            it = Interpreter(model_path=str(stock), num_threads=1)
            it.allocate_tensors()
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
            s, z = inp["quantization"]
            xs = np.clip(np.round(x_float.numpy().transpose(0, 2, 3, 1) / s) + z, -128, 127).astype(inp["dtype"])

            def litert():
                it.set_tensor(inp["index"], xs)
                it.invoke()
                return it.get_tensor(out["index"])
            med, p90 = median_ms(litert, repeats)
            rows.append({"runtime": "LiteRT + XNNPACK (stock int8)", "median_ms": med, "p90_ms": p90})
            info["stock_weight_bytes"] = conv["bytes"]
        except Exception as e:  # the converter extra is optional: report what failed instead of a number
            info["stock_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        try:  # (its own attempt: the ONNX export may take a model the stock converter refuses, a Swin)
            from tsptq.evaluation.stock_converter import export_onnx

            rows.append(_ort_int8(model, calib, x_float, Path(tmp), export_onnx, repeats))
        except Exception as e:
            rows.append({"runtime": "ONNX Runtime (static int8 QDQ)", "median_ms": None, "p90_ms": None,
                         "note": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"})

    rows += _peer_rows(model, calib, x_float, repeats, info)
    _file_bytes(rows, len(to_tflite(im)), info.get("stock_weight_bytes"))

    with torch.no_grad():
        med, p90 = median_ms(lambda: model(x_float), repeats)
    rows.append({"runtime": "torch FP32", "median_ms": med, "p90_ms": p90})
    base = next((r["median_ms"] for r in rows if r["runtime"].startswith("LiteRT + XNNPACK")), None)
    for r in rows:
        r["ratio_to_litert_int8"] = None if base is None or r["median_ms"] is None else r["median_ms"] / base
    return {"model": name, "rows": rows, **info, "repeats": repeats}


def _peer_rows(model, calib, x_float, repeats: int, info: dict) -> list[dict]:
    """The peer toolchains (benchmarks/peers.py) on the same calibration images and image, one thread each."""
    import peers

    if not RUN_PEERS:
        return []
    absent = peers.missing()
    if absent:
        info["peers_skipped"] = peers.skip_message(absent).removeprefix("[latency] ")
    info["peers"] = peers.versions()
    out = peers.rows(model, datasets.to_model_input(calib.images, model.cfg), x_float, repeats, median_ms,
                     log=lambda line: print(line, file=sys.stderr))
    torch.set_num_threads(1)  # whatever a peer's import did to torch's thread count
    return out


def _file_bytes(rows: list[dict], tsptq_bytes: int, stock_bytes: int | None) -> None:
    """The size of the file each row runs (the peers set their own)."""
    for r in rows:
        if r.get("median_ms") is None:  # a failed row ran no file
            continue
        if "tsptq W8A8" in r["runtime"] or r["runtime"].startswith("tsptq C runtime"):
            r.setdefault("file_bytes", tsptq_bytes)
        elif r["runtime"].startswith("LiteRT + XNNPACK (stock") and stock_bytes:
            r.setdefault("file_bytes", stock_bytes)


def _litert_with_delegate(model_bytes: bytes, xq: np.ndarray, repeats: int) -> dict:
    """The same tsptq file in stock LiteRT (XNNPACK for the builtins) with the tsptq delegate for the TSPTQ_* ops."""
    from tsptq.runtime.litert import make_interpreter

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(model_bytes)
        it = make_interpreter(path, num_threads=1)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]

        def run():
            it.set_tensor(inp["index"], xq)
            it.invoke()
            return it.get_tensor(out["index"])
        med, p90 = median_ms(run, repeats)
    return {"runtime": "LiteRT + tsptq delegate (tsptq W8A8)", "median_ms": med, "p90_ms": p90}


def _ort_int8(model, calib, x_float, tmp: Path, export_onnx, repeats: int) -> dict:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    fp = tmp / "model.onnx"
    export_onnx(model, fp)
    xs = datasets.to_model_input(calib.images, model.cfg).numpy()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": xs[i: i + 1]} for i in range(len(xs))])

        def get_next(self):
            return next(self.it, None)

    q = tmp / "model.int8.onnx"
    quantize_static(str(fp), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x_float.numpy()}
    med, p90 = median_ms(lambda: sess.run(None, feed), repeats)
    return {"runtime": "ONNX Runtime (static int8 QDQ)", "median_ms": med, "p90_ms": p90}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=list(MODELS))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--c-variant", action="append", default=[],
                    help="also time this build of the C runtime (tsptq.runtime.c_build.VARIANTS), in the same run")
    ap.add_argument("--threads", type=int, default=1,
                    help=f"N > 1: also time the C runtime on N threads (its static thread pool, at most "
                         f"{MAX_THREADS}), in the same run; the one-thread rows stay")
    ap.add_argument("--no-peers", action="store_true", help="skip the peer toolchains (benchmarks/peers.py)")
    args = ap.parse_args(argv)
    if not 1 <= args.threads <= MAX_THREADS:
        ap.error(f"--threads must be 1 to {MAX_THREADS}, got {args.threads}")
    global RUN_PEERS
    RUN_PEERS = not args.no_peers
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(),
             "machine": report.machine()}
    for name in args.only or MODELS:
        print(f"[latency] {name}", file=sys.stderr)
        result = bench_model(name, args.repeats, args.c_variant, args.threads)
        write_json_atomic(RESULTS / f"latency-{name}.json", {**result, **stamp})
    return report.main([])


if __name__ == "__main__":
    sys.exit(main())
