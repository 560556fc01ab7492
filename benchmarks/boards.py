"""On-board benchmark: cifar10-vit deployed with ``tsptq-deploy`` to every target that runs here.

    python benchmarks/boards.py                       # host, rpi (qemu-aarch64), mps2-an386 and mps3-an547
                                                      # (qemu-system-arm),
                                                      # rpi with --runtime litert (reference and optimized kernels)
    python benchmarks/boards.py --only mps2-an386 --eval-images 50

Each target's report is kept in benchmarks/results/board-<target>.json; the table goes into docs/benchmarks.md
(through benchmarks/report.py). Units differ by target and the table says which: wall-clock
milliseconds on host and emulated rpi (emulation: not a Pi's speed), instructions on mps2-an386 and mps3-an547 (QEMU -icount
counts instructions; it models no cycle timing).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

from tsptq.deploy.pipeline import BoardOptions, deploy
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
# What tsptq-deploy deploys by default: the bundled cifar10-vit, tsptq W8A8, 32 bundled calibration images.
SOURCE = Source(model="cifar10-vit", method="tsptq", bits="W8A8", data="bundled", calib_images=32)
MAC_OPS = ("TSPTQ_FC_2S", "FULLY_CONNECTED", "TSPTQ_BMM_2S", "BATCH_MATMUL", "CONV_2D")


def macs_by_op() -> dict[str, int]:
    """Multiply-accumulates per inference of the deployed model, by op kind (for instructions per MAC): output
    elements x the contracted length (FC: in features; batch matmul: K; conv: kh x kw x cin)."""
    from tsptq.intmodel.integer import build

    im, _ = build(SOURCE, progress=False)
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
        else:
            k = a.shape[-2] if (op.options or {}).get("adj_x") else a.shape[-1]
        n = 1
        for d in out:
            n *= d
        macs[op.kind] = macs.get(op.kind, 0) + n * k
    return macs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=list(CONFIGS))
    ap.add_argument("--eval-images", type=int, default=100)
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(),
             "machine": f"{os.cpu_count()} cores, {platform.machine()}"}
    macs = macs_by_op()
    for name in args.only or CONFIGS:
        print(f"[boards] {name}", file=sys.stderr)
        opts = BoardOptions(**CONFIGS[name], eval_images=args.eval_images, quiet=True)
        write_json_atomic(RESULTS / f"board-{name}.json", {**deploy(SOURCE, opts), **stamp, "macs_by_op": macs})
    return report.main([])


if __name__ == "__main__":
    sys.exit(main())
