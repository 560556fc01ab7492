"""NPU benchmark (issue 18): what Arm's Vela compiler makes of each tsptq file for an Ethos-U55, and whether the NPU
variant computes the default file's bytes (in Python, and in TensorFlow Lite Micro).

    python benchmarks/npu.py                               # cifar10-vit and deit_tiny_patch16_224
    python benchmarks/npu.py --only cifar10-vit            # one model; the others keep their last results
    python benchmarks/npu.py --only deit_tiny_patch16_224 --images 50
    python benchmarks/npu.py --only dinov2-s14             # 100 images; its TFLM block is off (see MODELS)
    python benchmarks/npu.py --whole-model                 # only the whole-model estimate, on the stored results

Per model, one calibration (what ``tsptq export`` does: ``tsptq.intmodel.integer.build`` of the model's Source, below)
lowered three ways, the NPU variant of a second quantization of the same images with a uniform Softmax output code
(``--method tsptq-no-v2sf-softmax``: attention x V one int8 BATCH_MATMUL instead of two planes), both NPU variants
again with an int16 residual stream (``--residual int16 --layernorm cpu``: the residual adds builtin int16 ADDs) and
with their LayerNorms on the NPU too (``--residual int16 --layernorm npu``, what ``--npu ethos-u`` writes by default),
and the stock converter's file of the same model and calibration images:

- the default tsptq file (``tsptq export``), the NPU variant (``--npu ethos-u --residual code``), the variant
  ``--pv-on-cpu``, and the stock int8 file (``--method tflite-converter``, the ``converter`` extra; without it the row says why), each
  compiled by Vela (``tsptq.npu.vela.compile_report``, the ``npu-report`` defaults: ethos-u-vela 5.2.0, ethos-u55-128,
  Ethos_U55_High_End_Embedded, Shared_Sram): ops and MACs on the NPU, NPU parts and switches, Vela's estimated time
  of the NPU part (Vela does not time the CPU ops), SRAM and off-chip flash;
- the integer models (Python, ``IntModel.run``) of the three tsptq files on N evaluation images (the images ``tsptq
  verify`` takes for the file: the model's data, class-balanced and seeded): byte-identical outputs, top-1 agreement;
- cifar10-vit: the ``--pv-on-cpu`` file in TFLM (``tsptq.npu.tflm``, the pinned ``tflite-micro`` wheel) against its
  integer model and against ``run_tflm_arithmetic`` (TFLM's 16x8 FC rounding), TFLM's arena next to tsptq's planner,
  and TFLM's one-line refusal of the split file. Without the wheel the block is one line saying why.

- the whole-model estimate (``whole_model_block``; ``--whole-model`` redoes only it, on the stored Vela rows): Vela's
  NPU estimate plus the variant's CPU ops on a Cortex-M55, counted in instructions on QEMU's mps3-an547
  (benchmarks/npu_cpu.py), at Vela's clock and one instruction per cycle, against the stock file's estimate. Without
  QEMU or the Arm compiler the block says why.

A model the variant refuses (``--npu``'s one-line error) gets that line as its
result. Results go to benchmarks/results/npu-<model>.json and into docs/benchmarks.md (via benchmarks/report.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from tsptq.atomic import write_json_atomic
from tsptq.errors import TsptqError

import npu_cpu  # benchmarks/npu_cpu.py: the variant's CPU part on the Cortex-M55 (QEMU)
import report  # benchmarks/report.py (this folder is sys.path[0] when a benchmark runs): writes docs/benchmarks.md

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# model -> its Source fields (what `tsptq export --model M [...]` builds), evaluation images, whether the TFLM block
# runs. deit_tiny has no checkpoint here: random weights of the timm config, calibrated on 8 images of the bundled
# ImageNet sample (`tsptq export --model deit_tiny_patch16_224 --calib-images 8 --data imagenet --npu ethos-u`).
# Keep the names in step with report.NPU_MODELS (the page's order).
MODELS = {
    "cifar10-vit": {"source": {"model": "cifar10-vit"}, "images": 1000, "tflm": True},
    "deit_tiny_patch16_224": {"source": {"model": "deit_tiny_patch16_224", "data": "imagenet", "calib_images": 8},
                              "images": 200, "tflm": False},
    "dinov2-s14": {"source": {"model": "dinov2-s14"}, "images": 100, "tflm": False},
}
report.check_page_order("npu", MODELS, report.NPU_MODELS)
TARGET = "ethos-u"
BATCH = 25
# the bars: MACs on the NPU, and the variant's integer model against the default file's
MAC_BAR = 0.95
# the whole-model estimate: the images the default file is profiled on (per-op counts vary by 0.05% between images
# on cifar10-vit), and the variant files it covers
PROFILE_IMAGES = 3
VARIANTS = ("NPU variant", "NPU variant, --pv-on-cpu")
STOCK = "stock int8 (onnx2tf)"
# the variant whose Softmax output is a uniform 8-bit code: P x V is then one plain int8 BATCH_MATMUL on the NPU (no
# planes, no CPU sum); its own quantization, so its CPU kernels are profiled in its own default file
UNIFORM_P, UNIFORM_P_METHOD = report.UNIFORM_P, report.UNIFORM_P_METHOD  # the page's label and method
UNIFORM_P_DEFAULT = f"default {UNIFORM_P_METHOD}"
# both variants again with an int16 residual stream (`--residual int16 --layernorm cpu`); their CPU kernels are
# profiled in the default file of their own quantization too (the LayerNorm on an int16 input is a variant-only step)
R16, UNIFORM_P_R16 = report.R16, report.UNIFORM_P_R16
# and both with their LayerNorms as NPU builtins (`--layernorm npu`: two row statistics per LayerNorm on the CPU)
R16_LN, UNIFORM_P_R16_LN = report.R16_LN, report.UNIFORM_P_R16_LN


def vela_row(name: str, path: Path, accelerator: str) -> dict:
    """One table row: Vela's report of ``path`` (its numbers, not its compiled bytes)."""
    from tsptq.npu.vela import compile_report

    r = compile_report(path, accelerator)
    d = r.to_json()
    keep = ("ops_total", "ops_on_npu", "ops_on_cpu", "ops_npu", "ops_cpu", "macs_total", "macs_npu",
            "npu_mac_fraction", "npu_parts", "switches", "inference_time_s", "core_clock_hz", "sram_bytes",
            "off_chip_flash_bytes", "dram_bytes", "vela_macs")
    return {"file": name, "file_bytes": path.stat().st_size, **{k: d[k] for k in keep},
            "cpu_reasons": {k: len(v) for k, v in d["cpu_reasons"].items()}}


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def stock_row(model, calib, path: Path, accelerator: str) -> dict:
    """The stock converter's file (``tsptq export --method tflite-converter``) of the same calibration images, or a
    row saying why there is none."""
    from tsptq.evaluation.stock_converter import convert, missing_packages

    name = "stock int8 (onnx2tf)"
    missing = missing_packages()
    if missing:
        return {"file": name, "skipped": f"the stock converter needs {', '.join(missing)} (the 'converter' extra)"}
    try:
        print("[npu] stock converter (PyTorch -> ONNX -> onnx2tf int8)", file=sys.stderr)
        convert(model, calib, path)
    except (TsptqError, RuntimeError, ValueError, OSError) as e:
        return {"file": name, "skipped": f"the stock converter failed: {one_line(e)}"}
    return vela_row(name, path, accelerator)


def run_codes(fn, x: np.ndarray, desc: str) -> np.ndarray:
    """``fn`` over ``x`` in batches, with a progress bar (and ETA)."""
    from tqdm import tqdm

    outs = []
    with tqdm(total=len(x), desc=desc, unit="img", leave=False) as bar:
        for i in range(0, len(x), BATCH):
            outs.append(fn(x[i:i + BATCH]))
            bar.update(len(outs[-1]))
    return np.concatenate(outs)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Output codes ``a`` against ``b`` (images x classes): byte-identical images, differing values, the largest
    difference in codes, top-1 agreement."""
    d = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return {"images": len(a), "identical_images": int((d.reshape(len(d), -1).max(axis=1) == 0).sum()),
            "differing_values": int((d > 0).sum()), "values": int(d.size), "max_abs_diff_codes": int(d.max(initial=0)),
            "top1_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1)))}


def top1(codes: np.ndarray, labels) -> float | None:
    return None if labels is None else float(np.mean(codes.argmax(-1) == labels) * 100)


def tflm_block(variant_cpu, variant_split, default, x: np.ndarray, want: np.ndarray, labels) -> dict:
    """The ``--pv-on-cpu`` file in TFLM on ``x`` against its integer model's codes ``want`` and against
    ``run_tflm_arithmetic``; the arenas; the split file's refusal. ``{"skipped": why}`` without the pinned wheel."""
    from tsptq.intmodel import planner
    from tsptq.npu import tflm
    from tsptq.tflite.writer import to_tflite

    try:
        tflm.check_wheel()
    except tflm.TflmError as e:
        return {"skipped": str(e)}
    data = to_tflite(variant_cpu)
    t = tflm.TflmModel(data)
    got = run_codes(t.run, x, "TFLM (--pv-on-cpu)")
    arith = run_codes(lambda b: tflm.run_tflm_arithmetic(variant_cpu, b), x, "integer model, TFLM's rounding")
    a = t.allocations()
    try:
        tflm.TflmModel(to_tflite(variant_split))
        split = None
    except tflm.TflmError as e:
        split = str(e)
    plans = {k: planner.plan(m).to_dict() for k, m in
             (("pv_on_cpu", variant_cpu), ("npu", variant_split), ("default", default))}
    return {"wheel": tflm.wheel_version(), "images": len(x),
            "vs_integer": {**agreement(got, want), "top1_tflm": top1(got, labels), "top1_integer": top1(want, labels)},
            "vs_tflm_arithmetic": agreement(got, arith),
            "arena": {"total": a.total, "head": a.head, "tail": a.tail, "parts": a.parts,
                      "min_arena": tflm.min_arena_size(data, hi=max(2 * a.total, 1 << 16))},
            "planner": plans, "split_refused": split}


def quantized_files(name: str, accelerator: str | None = None, uniform_p: bool = True, residual16: bool = True,
                    layernorm_npu: bool = True):
    """(head of the result, or a refusal; Source; the model; its calibration; the tsptq files) of one model: one
    calibration, what ``tsptq export`` does, lowered the three ways, and with ``uniform_p`` the NPU variant of the
    same images quantized with ``UNIFORM_P_METHOD`` (and that quantization's default file, which the whole-model
    estimate profiles); with ``residual16`` the NPU variant (and the uniform-P one) with an int16 residual stream
    too, and with ``layernorm_npu`` both again with their LayerNorms on the NPU. The files are None when the variant
    refuses."""
    from tsptq.intmodel.integer import Source, layernorm_sigmas
    from tsptq.intmodel.lower import lower, require_npu_config
    from tsptq.model.checkpoint import resolve_model
    from tsptq.model.model_data import resolve_data
    from tsptq.npu.export import check_npu_request
    from tsptq.npu.vela import DEFAULT_ACCELERATOR, VELA_VERSION, require_vela, system_config_for
    from tsptq.quant.quantize import quantize

    spec = MODELS[name]
    accelerator = accelerator or DEFAULT_ACCELERATOR
    src = Source(**spec["source"])
    src.validate()
    vela = require_vela()
    system_config, memory_mode = system_config_for(accelerator)
    head = {"model": name, "source": src.to_dict(), "target": TARGET,
            "vela": {"version": vela, "pinned": VELA_VERSION, "accelerator": accelerator,
                     "system_config": system_config, "memory_mode": memory_mode}}
    model = resolve_model(src.model, src.checkpoint, src.heads, src.img_size, preprocess=src.preprocess)
    try:  # the variant's refusals that need no calibration (what `tsptq export --npu` checks first)
        check_npu_request(TARGET, src.method, src.bits, accelerator)
        require_npu_config(model.cfg)
    except TsptqError as e:
        return {**head, "refused": str(e)}, src, model, None, None
    # the calibration `build(src)` makes (the same call, so the same images and bytes), once for all three files
    calib, _, _ = resolve_data(src.model, model.cfg, src.data, src.calib_images, 1, src.folder, labels=src.labels,
                               calib_folder=src.calib_folder)
    qm = quantize(model, calib, src.method, src.bits, progress=True)
    files = {"default tsptq": lower(qm), "NPU variant": lower(qm, npu=True),
             "NPU variant, --pv-on-cpu": lower(qm, npu=True, split_pv=False)}
    if residual16:
        files[R16] = lower(qm, npu=True, residual16=True)
        if layernorm_npu:
            files[R16_LN] = lower(qm, npu=True, residual16=True, layernorm_npu=layernorm_sigmas(qm, calib))
    if uniform_p:
        qu = quantize(model, calib, UNIFORM_P_METHOD, src.bits, progress=True)
        files[UNIFORM_P] = lower(qu, npu=True)
        files[UNIFORM_P_DEFAULT] = lower(qu)
        if residual16:
            files[UNIFORM_P_R16] = lower(qu, npu=True, residual16=True)
            if layernorm_npu:
                files[UNIFORM_P_R16_LN] = lower(qu, npu=True, residual16=True,
                                                layernorm_npu=layernorm_sigmas(qu, calib))
    for im in files.values():
        im.metadata["source"] = src.to_dict()  # as build() records it
    return head, src, model, calib, files


def eval_images(src, model, n: int):
    """(the evaluation images `tsptq verify FILE --eval-images N` takes for this file, whether they are labelled)"""
    from tsptq.model.model_data import resolve_data

    _, test, labelled = resolve_data(src.model, model.cfg, src.data, src.calib_images, n, src.folder,
                                     labels=src.labels, eval_only=True)
    return test, labelled


def bench_model(name: str, images: int | None = None, tflm_images: int | None = None,
                accelerator: str | None = None) -> dict:
    from tsptq.data import datasets
    from tsptq.tflite.writer import to_tflite

    spec = MODELS[name]
    head, src, model, calib, files = quantized_files(name, accelerator)
    if files is None:
        return head
    accelerator = head["vela"]["accelerator"]
    n = images or spec["images"]
    test, labelled = eval_images(src, model, n)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tsptq-npu-bench-") as tmp:
        # the stock row fourth, the uniform-P variant after it (the page's order)
        for k, label in enumerate(["default tsptq", *VARIANTS, STOCK,
                                   *(x for x in (UNIFORM_P, *report.WIDE) if x in files)]):
            if label == STOCK:
                rows.append(stock_row(model, calib, Path(tmp) / "stock.tflite", accelerator))
                continue
            path = Path(tmp) / f"file{k}.tflite"
            path.write_bytes(to_tflite(files[label]))
            print(f"[npu] {name}: Vela on the {label} file", file=sys.stderr)
            rows.append(vela_row(label, path, accelerator))

    default, variant, cpu = (files[k] for k in ("default tsptq", *VARIANTS))
    x = default.quantize_input(datasets.to_model_input(test.images, model.cfg).numpy())
    labels = test.labels if labelled else None
    out = {label: run_codes(im.run, x, f"integer model, {label}") for label, im in files.items()
           if label != UNIFORM_P_DEFAULT}
    base = out["default tsptq"]
    integer = {"images": len(x), "data": test.name, "labelled": bool(labelled),
               "top1": {label: top1(codes, labels) for label, codes in out.items()},
               "vs_default": {label: agreement(codes, base) for label, codes in out.items() if label != "default tsptq"}}
    result = {**head, "calib_images": src.calib_images, "eval_images": len(x), "data": test.name, "rows": rows,
              "integer": integer, "mac_bar": MAC_BAR}
    if spec["tflm"]:
        m = tflm_images or len(x)
        print(f"[npu] {name}: TFLM on {m} images", file=sys.stderr)
        result["tflm"] = tflm_block(cpu, variant, default, x[:m], out["NPU variant, --pv-on-cpu"][:m],
                                    None if labels is None else labels[:m])
    result["whole_model"] = whole_model_block(name, files, rows, x[:PROFILE_IMAGES])
    return result


# ---- the whole-model estimate: Vela's NPU part + the CPU ops on the Cortex-M55 -------------------------------------

def estimate(row: dict, stock: dict | None, cpu_instructions: float) -> dict:
    """One file's whole-model estimate: its Vela row's NPU time plus ``cpu_instructions`` at Vela's clock (one
    instruction per cycle), against the stock file's Vela estimate (None when there is no stock row)."""
    stock_s = stock["inference_time_s"] if stock and "skipped" not in stock else None
    return {**npu_cpu.whole_model(row["inference_time_s"], cpu_instructions, row["core_clock_hz"], stock_s),
            "clock_hz": row["core_clock_hz"], "npu_parts": row["npu_parts"], "switches": row["switches"],
            "stock_cpu_ops": stock.get("ops_cpu", {}) if stock_s else {}}


def whole_model_block(name: str, files: dict, rows: list[dict], codes: np.ndarray) -> dict:
    """Each variant file's whole-model estimate, its CPU part measured on QEMU's mps3-an547 (npu_cpu.measure: each
    variant's shared kernels profiled in the default file of its own quantization); ``{"skipped": why}`` without
    QEMU or the Arm compiler."""
    why = npu_cpu.missing_tools()
    if why:
        return {"skipped": why}
    print(f"[npu] {name}: the whole-model estimate (QEMU)", file=sys.stderr)
    by = {row["file"]: row for row in rows}
    same = [*VARIANTS, *(k for k in (R16, R16_LN) if k in files and k in by)]  # the default file's quantization
    m = npu_cpu.measure(files["default tsptq"], {k: files[k] for k in same}, codes, {k: by[k]["ops_cpu"] for k in same})
    out = {**npu_cpu.tool_versions(), "default_file": m["default_file"], "files": {}}
    for k in same:
        out["files"][k] = {**estimate(by[k], by.get(STOCK), m[k]["cpu_instructions"]), "by_kind": m[k]["by_kind"]}
    uniform = [k for k in (UNIFORM_P, UNIFORM_P_R16, UNIFORM_P_R16_LN) if k in files and k in by]
    if uniform:  # profiled in the default file of their own quantization
        u = npu_cpu.measure(files[UNIFORM_P_DEFAULT], {k: files[k] for k in uniform}, codes,
                            {k: by[k]["ops_cpu"] for k in uniform})
        for k in uniform:
            out["files"][k] = {**estimate(by[k], by.get(STOCK), u[k]["cpu_instructions"]),
                               "by_kind": u[k]["by_kind"], "default_file": u["default_file"]}
    return {**out, "date": datetime.date.today().isoformat(), "machine": report.machine()}


def check_stored_files(name: str, files: dict, rows: list[dict]) -> None:
    """The files just lowered must be the ones the stored Vela rows describe (their sizes)."""
    from tsptq.tflite.writer import to_tflite

    for row in rows:
        if row["file"] in files and len(to_tflite(files[row["file"]])) != row["file_bytes"]:
            raise TsptqError(f"{name}: the {row['file']} file is not the stored one ({row['file_bytes']:,} B): run "
                             f"`python benchmarks/npu.py --only {name}` first")


def redo_whole_model(name: str) -> dict:
    """``--whole-model``: the stored results of ``name`` with a new whole-model estimate (the same calibration, so
    the same files; nothing else is measured again)."""
    from tsptq.data import datasets

    path = RESULTS / f"npu-{name}.json"
    if not path.is_file():
        raise TsptqError(f"{name}: no stored results ({path.name}): run `python benchmarks/npu.py --only {name}`")
    stored = json.loads(path.read_text())
    if "refused" in stored:
        return stored
    stored_uniform_p = any(row["file"] == UNIFORM_P for row in stored["rows"])
    stored_r16 = any(row["file"] == R16 for row in stored["rows"])
    stored_ln = any(row["file"] == R16_LN for row in stored["rows"])
    head, src, model, _, files = quantized_files(name, stored["vela"]["accelerator"], uniform_p=stored_uniform_p,
                                                 residual16=stored_r16, layernorm_npu=stored_ln)
    if files is None:
        raise TsptqError(f"{name}: the NPU variant refuses it now: {head['refused']}")
    check_stored_files(name, files, stored["rows"])
    test, _ = eval_images(src, model, PROFILE_IMAGES)
    codes = files["default tsptq"].quantize_input(datasets.to_model_input(test.images, model.cfg).numpy())
    return {**stored, "whole_model": whole_model_block(name, files, stored["rows"], codes)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=list(MODELS))
    ap.add_argument("--images", type=int, default=None,
                    help="evaluation images of the integer-model comparison (default per model: "
                         + ", ".join(f"{k} {v['images']}" for k, v in MODELS.items()) + ")")
    ap.add_argument("--tflm-images", type=int, default=None, help="images of the TFLM block (default: --images)")
    ap.add_argument("--whole-model", action="store_true",
                    help="only the whole-model estimate, on the stored results (default: every stored model)")
    args = ap.parse_args(argv)
    for opt in ("images", "tflm_images"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            ap.error(f"--{opt.replace('_', '-')} must be at least 1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(),
             "machine": report.machine()}
    if args.whole_model:
        # every stored model; a model named with --only must have stored results (redo_whole_model says so)
        names = args.only or [m for m in MODELS if (RESULTS / f"npu-{m}.json").is_file()]
    else:
        names = args.only or [m for m in MODELS if m != "dinov2-s14"]
    for name in names:
        print(f"[npu] {name}", file=sys.stderr)
        try:
            if args.whole_model:
                result = redo_whole_model(name)  # keeps the stored date and machine of everything else
            else:
                result = {**bench_model(name, args.images, args.tflm_images), **stamp}
        except TsptqError as e:
            print(f"[npu] {name} failed (its last results stay): {e}", file=sys.stderr)
            return 1
        write_json_atomic(RESULTS / f"npu-{name}.json", result)
    return report.main([])


if __name__ == "__main__":
    sys.exit(main())
