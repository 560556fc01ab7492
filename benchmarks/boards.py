"""On-board benchmark: cifar10-vit deployed with ``tsptq-deploy`` to every target that runs here.

    python benchmarks/boards.py                       # host, rpi (qemu-aarch64), mps2-an386 (qemu-system-arm),
                                                      # rpi with --runtime litert (reference and optimized kernels)
    python benchmarks/boards.py --only mps2-an386 --eval-images 50

Each target's report is kept in benchmarks/results/board-<target>.json; the table goes into docs/benchmarks.md
(through benchmarks/accuracy.py's renderer). Units differ by target and the table says which: wall-clock
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

from tsptq.deploy import build_parser, deploy
from tsptq.evaluate import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# result name -> tsptq-deploy arguments
CONFIGS = {
    "host": ["--target", "host"],
    "rpi": ["--target", "rpi"],
    "mps2-an386": ["--target", "mps2-an386"],
    "rpi-litert": ["--target", "rpi", "--runtime", "litert"],
    "rpi-litert-optimized": ["--target", "rpi", "--runtime", "litert", "--litert-kernels", "optimized"],
}
# TFLM's person_detect on Corstone-300 (M4 config, CMSIS-NN), published figures, for scale.
PERSON_DETECT = {"model_bytes": 300_568, "arena_bytes": 84_436}


def render(results: dict) -> list[str]:
    rows = [(t, results[f"board-{t}"]) for t in CONFIGS if results.get(f"board-{t}")]
    if not rows:
        return []
    out = ["## On the boards: cifar10-vit through `tsptq-deploy`", "",
           "`python benchmarks/boards.py`: quantize (tsptq W8A8, 32 calibration images), export, build the device "
           "program for the target, flash or upload, stream bundled CIFAR-10 test images over the serial protocol "
           "(docs/serial-protocol.md) and compare every output with the host integer reference. Latency is per "
           "inference as the board measures it: wall-clock ms on `host` and on the emulated `rpi` (qemu-aarch64 user "
           "mode: emulation speed, not a Pi's), **instructions** on `mps2-an386` (QEMU `-icount shift=0`: SysTick "
           "ticks x 40; QEMU models no cycle timing, so this is not a cycle count). *runtime* `litert`: the board runs "
           "stock ai-edge-litert with `libtsptq_delegate.so` (`--runtime litert`; on the emulated Pi an aarch64 "
           "Debian Python with the aarch64 LiteRT wheel, under `qemu-aarch64 -cpu cortex-a72`), with LiteRT's "
           "reference or optimized (XNNPACK/ruy) kernels for the builtins; its arena column is the delegate's, "
           "LiteRT's own tensor arena comes on top.", "",
           "| target | runtime | images | top-1 board | top-1 host ref | bit-exact | largest diff (codes) | "
           "latency median | p90 | model B | arena B | firmware text+data B | measured |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for _, r in rows:
        res, mem, lat = r["result"], r["memory"], r["result"]["latency"]
        fw = mem.get("firmware") or {}
        fw_txt = f"{fw['text'] + fw['data']:,}" if fw else "-"
        diff = res.get("max_abs_diff_codes", "-")
        out.append(f"| {r['target']} | {r.get('runtime', 'tsptq')} | {res['images']} | {res['top1_board']:.2f} | "
                   f"{res['top1_reference']:.2f} | {res['bit_exact_fraction']:.4f} | {diff} | "
                   f"{lat['median']:,.3g} {lat['unit']} | {lat['p90']:,.3g} | "
                   f"{mem['model_bytes']:,} | {mem['arena_bytes'] + mem['io_bytes']:,} | {fw_txt} | {r['date']} |")
    mps2 = results.get("board-mps2-an386")
    if mps2:
        mem = mps2["memory"]
        arena = mem["arena_bytes"] + mem["io_bytes"]
        out += ["", f"For scale: TFLM's `person_detect` (a 250 KB-class CNN) on Corstone-300 needs a "
                    f"{PERSON_DETECT['arena_bytes']:,} B arena and a {PERSON_DETECT['model_bytes']:,} B model; "
                    f"cifar10-vit needs {arena:,} B ({arena / PERSON_DETECT['arena_bytes']:.2f}x) and "
                    f"{mem['model_bytes']:,} B ({mem['model_bytes'] / PERSON_DETECT['model_bytes']:.2f}x)."]
        ops = mps2["result"]["ops"]
        if ops:
            out += ["", "Where the instructions go on mps2-an386 (per op type, one inference): " + ", ".join(
                f"{o['op']} {100 * o['share']:.0f}%" for o in ops if o["share"] >= 0.005) + "."]
    out.append("")
    return out


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
        dargs = build_parser().parse_args([*CONFIGS[name], "--eval-images", str(args.eval_images), "--quiet"])
        write_json_atomic(RESULTS / f"board-{name}.json", {**deploy(dargs), **stamp})
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import accuracy

    return accuracy.main(["--render-only"])


if __name__ == "__main__":
    sys.exit(main())
