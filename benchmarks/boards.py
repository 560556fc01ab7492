"""On-board benchmark: cifar10-vit (or cifar10-swin) deployed with ``tsptq-deploy`` to every target that runs here.

    python benchmarks/boards.py                       # host, rpi (qemu-aarch64), mps2-an386 and mps3-an547
                                                      # (qemu-system-arm),
                                                      # rpi with --runtime litert (reference and optimized kernels)
    python benchmarks/boards.py --only mps2-an386 --eval-images 50
    python benchmarks/boards.py --model cifar10-swin  # the same table for the Swin, a section of its own

Each target's report is kept in benchmarks/results/board-<target>.json (cifar10-vit) or
board-<target>-<model>.json (--model); the tables go into docs/benchmarks.md (through benchmarks/report.py). Units
differ by target and the table says which: wall-clock milliseconds on host and emulated rpi (emulation: not a Pi's
speed), instructions on mps2-an386 and mps3-an547 (QEMU -icount counts instructions; it models no cycle timing). A
model that does not fit a board (tsptq-deploy's check, before anything is built) gets a row saying so, with its
model and arena sizes against the board's. A deployment that fails otherwise is reported on stderr and leaves that
target's last results as they were; the others still run, and the exit code is 1.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

from tsptq.deploy.pipeline import BoardOptions, DoesNotFitError, deploy, memory_needs, runtime_name
from tsptq.errors import TsptqError
from tsptq.evaluation.evaluate import write_json_atomic
from tsptq.intmodel.integer import Source

import report  # benchmarks/report.py (this folder is sys.path[0] when a benchmark runs): writes docs/benchmarks.md

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# result name -> the board options of the deployment (tsptq-deploy --target T [--runtime litert ...]); keep the
# names in step with report.BOARD_CONFIGS (the page's order)
CONFIGS = {
    "host": {"target": "host"},
    "rpi": {"target": "rpi"},
    "mps2-an386": {"target": "mps2-an386"},
    "mps3-an547": {"target": "mps3-an547"},
    "rpi-litert": {"target": "rpi", "runtime": "litert"},
    "rpi-litert-optimized": {"target": "rpi", "runtime": "litert", "litert_kernels": "optimized"},
}
report.check_page_order("boards", CONFIGS, report.BOARD_CONFIGS)
# The models --model deploys (the first is the default, whose results keep the names board-<config>.json); keep them
# in step with report.BOARD_MODELS.
MODELS = ("cifar10-vit", "cifar10-swin")
report.check_page_order("boards", MODELS, report.BOARD_MODELS)
MAC_OPS = report.MAC_KINDS  # the op kinds with MACs (TSPTQ_BMM_BIAS: a Swin's scores, q.k^T + the position bias)


def source(model: str = MODELS[0]) -> Source:
    """What tsptq-deploy deploys by default (tsptq W8A8, 32 bundled calibration images), for ``model``."""
    return Source(model=model, method="tsptq", bits="W8A8", data="bundled", calib_images=32)


SOURCE = source()  # the bundled cifar10-vit


def macs_by_op(im) -> dict[str, int]:
    """Multiply-accumulates per inference of the deployed model ``im``, by op kind (for instructions per MAC): output
    elements x the contracted length (FC: in features; batch matmul: K; conv: kh x kw x cin)."""
    macs: dict[str, int] = {}
    for op in im.ops:
        if op.kind not in MAC_OPS:
            continue
        a, w = (im.tensors[i] for i in op.inputs[:2])
        out = im.tensors[op.outputs[0]].shape
        if op.kind in ("TSPTQ_FC_2S", "FULLY_CONNECTED"):
            k = w.shape[1]
        elif op.kind == "CONV_2D":
            k = w.shape[1] * w.shape[2] * w.shape[3]
        else:  # batch matmuls (TSPTQ_BMM_BIAS: a . b^T, over a's last axis)
            k = a.shape[-2] if (op.options or {}).get("adj_x") else a.shape[-1]
        n = 1
        for d in out:
            n *= d
        macs[op.kind] = macs.get(op.kind, 0) + n * k
    return macs


def result_name(config: str, model: str) -> str:
    return report.board_key(config, model)


def does_not_fit(src: Source, opts: BoardOptions, needs: dict, error: DoesNotFitError) -> dict:
    """The report of a deployment stopped by the fit check: why, and the model and arena sizes against the target's
    (the ``memory`` fields of a full report)."""
    from tsptq.deploy.targets import load_target

    target = load_target(opts.target)
    delivery = opts.load or ("upload" if target.kind == "posix" else "flash")
    capacity = target.model_capacity if delivery == "upload" else (target.flash_capacity or target.model_capacity)
    return {"target": target.name, "runtime": runtime_name(opts), "model": src.model, "method": src.method,
            "bits": src.bits, "calib_images": src.calib_images, "delivery": delivery, "does_not_fit": str(error),
            "memory": {**needs, "model_capacity": capacity, "arena_capacity": target.arena_capacity}}


def main(argv=None) -> int:
    from tsptq.intmodel.integer import build
    from tsptq.tflite.writer import to_tflite

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=list(CONFIGS))
    ap.add_argument("--model", choices=MODELS, default=MODELS[0],
                    help=f"the model to deploy (default {MODELS[0]}); its own results files and section")
    ap.add_argument("--eval-images", type=int, default=100)
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(),
             "machine": f"{os.cpu_count()} cores, {platform.machine()}"}
    src = source(args.model)
    im, _ = build(src, progress=False)  # the model deploy() builds (the same source: the same bytes)
    macs, needs = macs_by_op(im), memory_needs(im, to_tflite(im))
    failed = []
    for name in args.only or CONFIGS:
        print(f"[boards] {args.model} {name}", file=sys.stderr)
        opts = BoardOptions(**CONFIGS[name], eval_images=args.eval_images, quiet=True)
        try:
            res = deploy(src, opts)
        except DoesNotFitError as e:
            print(f"[boards] {args.model} {name}: {e}", file=sys.stderr)
            res = does_not_fit(src, opts, needs, e)
        except TsptqError as e:
            print(f"[boards] {args.model} {name} failed (its last results stay): {e}", file=sys.stderr)
            failed.append(name)
            continue
        write_json_atomic(RESULTS / f"{result_name(name, args.model)}.json", {**res, **stamp, "macs_by_op": macs})
    rc = report.main([])
    if failed:
        print(f"[boards] {args.model}: failed on {', '.join(failed)} (above)", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
