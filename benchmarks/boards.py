"""On-board benchmark: cifar10-vit deployed with ``tsptq-deploy`` to every target that runs here.

    python benchmarks/boards.py                       # host, rpi (qemu-aarch64), mps2-an386 (qemu-system-arm),
                                                      # rpi with --runtime litert (reference and optimized kernels)
    python benchmarks/boards.py --only mps2-an386 --eval-images 50

Each target's report is kept in benchmarks/results/board-<target>.json; the table goes into docs/benchmarks.md
(through benchmarks/report.py). Units differ by target and the table says which: wall-clock
milliseconds on host and emulated rpi (emulation: not a Pi's speed), instructions on mps2-an386 (QEMU -icount
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
    "rpi-litert": {"target": "rpi", "runtime": "litert"},
    "rpi-litert-optimized": {"target": "rpi", "runtime": "litert", "litert_kernels": "optimized"},
}
report.check_page_order("boards", CONFIGS, report.BOARD_CONFIGS)
# What tsptq-deploy deploys by default: the bundled cifar10-vit, tsptq W8A8, 32 bundled calibration images.
SOURCE = Source(model="cifar10-vit", method="tsptq", bits="W8A8", data="bundled", calib_images=32)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=list(CONFIGS))
    ap.add_argument("--eval-images", type=int, default=100)
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.date.today().isoformat(),
             "machine": f"{os.cpu_count()} cores, {platform.machine()}"}
    for name in args.only or CONFIGS:
        print(f"[boards] {name}", file=sys.stderr)
        opts = BoardOptions(**CONFIGS[name], eval_images=args.eval_images, quiet=True)
        write_json_atomic(RESULTS / f"board-{name}.json", {**deploy(SOURCE, opts), **stamp})
    return report.main([])


if __name__ == "__main__":
    sys.exit(main())
