"""``make demo`` (``python -m tsptq.cli.demo --out out``): the whole chain on the bundled model, as a user runs it.

Each step is a ``tsptq`` / ``tsptq-deploy`` command, printed before it runs, so every step can be rerun by hand:

1. the accuracy table of every method on the bundled cifar10-vit and its 500 bundled test images (C engine: each
   method's exported .tflite file in the C runtime), with drop, agreement with FP32, their 95% paired intervals and
   class-token cosine;
2. the same on the real pretrained ViT (dinov2-s14, its CIFAR-10 probe), where the choice of method matters;
3. export, inspect and verify tsptq's .tflite;
4. ``tsptq-deploy --target rpi`` (an emulated Raspberry Pi) and ``--target mps2-an386`` (a Cortex-M4F under QEMU).

It ends with one summary (printed, and ``summary.md``): accuracy, the file, top-1 on each board, bit-exactness and
latency, and where every file is; ``demo.png`` is the accuracy at a glance. A failing step stops the demo with its
command and exit status.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

CIFAR_METHODS = "fp32,minmax,percentile,ptf-log2,twin,tsptq"
DINOV2_METHODS = "fp32,minmax,ptf-log2,twin,tsptq"  # percentile loses ~32 points on it (docs/benchmarks.md)
BOARDS = ("rpi", "mps2-an386")


@dataclass(frozen=True)
class Step:
    title: str
    program: str        # tsptq | tsptq-deploy
    args: tuple[str, ...]

    def argv(self) -> list[str]:
        module = {"tsptq": "tsptq.cli.main", "tsptq-deploy": "tsptq.cli.deploy"}[self.program]
        return [sys.executable, "-m", module, *self.args]

    def shown(self) -> str:
        return shlex.join([self.program, *self.args])


def steps(out: Path, cifar_images: int, dinov2_images: int, board_images: dict[str, int]) -> list[Step]:
    o = lambda name: str(out / name)  # noqa: E731
    calib = ("--data", "bundled", "--calib-images", "32")
    s = [Step("accuracy of every method on cifar10-vit (the bundled model)", "tsptq",
              ("eval", "--model", "cifar10-vit", *calib, "--eval-images", str(cifar_images), "--methods", CIFAR_METHODS,
               "--compare", "tsptq,minmax", "--json", o("accuracy-cifar10-vit.json")))]
    if dinov2_images:
        s.append(Step("the real pretrained ViT (dinov2-s14), where the method matters", "tsptq",
                      ("eval", "--model", "dinov2-s14", *calib, "--eval-images", str(dinov2_images),
                       "--methods", DINOV2_METHODS, "--compare", "tsptq,minmax", "--json", o("accuracy-dinov2-s14.json"))))
    s += [Step("export tsptq's .tflite", "tsptq",
               ("export", "--model", "cifar10-vit", "--method", "tsptq", *calib, "--out", o("cifar10-vit-tsptq.tflite"))),
          Step("inspect it", "tsptq", ("inspect", o("cifar10-vit-tsptq.tflite"), "--brief", "--json", o("inspect.json"))),
          Step("verify it against the simulators", "tsptq",
               ("verify", o("cifar10-vit-tsptq.tflite"), "--eval-images", str(cifar_images), "--json", o("verify.json")))]
    for board in BOARDS:
        s.append(Step(f"deploy to {board}", "tsptq-deploy",
                      ("--target", board, "--model", "cifar10-vit", "--method", "tsptq", *calib, "--eval-images",
                       str(board_images[board]), "--json", o(f"deploy-{board}.json"), "--report", o(f"deploy-{board}"))))
    return s


def run_steps(plan: list[Step]) -> list[float]:
    """Run each step, its output going straight to the terminal; stop at the first failure."""
    seconds, start = [], time.monotonic()
    for k, step in enumerate(plan, 1):
        print(f"\n=== [{k}/{len(plan)}] {step.title}  ({time.monotonic() - start:.0f} s so far)\n$ {step.shown()}",
              flush=True)
        t0 = time.monotonic()
        code = subprocess.run(step.argv()).returncode
        seconds.append(time.monotonic() - t0)
        if code != 0:
            raise SystemExit(f"demo: step {k} ({step.title}) failed with exit status {code}; rerun it with:\n"
                             f"  {step.shown()}")
    return seconds


# ---- the summary -------------------------------------------------------------------------------------------------

def _load(out: Path, name: str) -> dict | None:
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None


def _ci(ci) -> str:
    return f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""


def _pct(v, width: int = 0) -> str:
    """A percentage, or '-' where the images had no labels."""
    return f"{v:{width}.2f}" if v is not None else f"{'-':>{width}}"


def accuracy_lines(name: str, data: dict) -> list[str]:
    rows = data["results"]
    lines = [f"{name} ({data['eval_images']} images of {data['data']}, W8A8, calibrated on {data['calib_images']}):",
             f"  {'method':<11}{'engine':<8}{'top-1 %':>8}  {'drop [95% interval]':<22}{'agreement % [95% interval]':<28}"
             f"cosine mean / min"]
    for r in rows:
        drop = "" if r.get("drop") is None else f"{r['drop']:+.2f} {_ci(r.get('drop_ci'))}"
        lines.append(f"  {r['method']:<11}{r.get('engine', '-'):<8}{_pct(r.get('top1'), 8)}  {drop:<22}"
                     f"{r['agreement']:6.2f} {_ci(r.get('agreement_ci')):<21}{r['cosine_mean']:.4f} / {r['cosine_min']:.3f}")
    for c in data.get("comparisons", []):
        measure = {"top1": "top-1"}.get(c["measure"], c["measure"])
        lines.append(f"  {c['a']} - {c['b']}, paired over the images: {measure} {c['difference']:+.2f} points "
                     f"{_ci(c['interval'])} (right only with {c['a']}: {c['only_a']}, only with {c['b']}: "
                     f"{c['only_b']}; McNemar p = {c['mcnemar_p']:.3g})")
    return lines


def board_lines(out: Path, exported_crc: int | None) -> list[str]:
    from tsptq.deploy.targets import load_target

    lines = [f"  {'target':<12}{'images':>7}{'top-1 on board':>16}{'host ref':>10}{'bit-exact':>11}{'same file':>11}"
             "  latency"]
    for board in BOARDS:
        d = _load(out, f"deploy-{board}.json")
        if d is None:
            lines.append(f"  {board:<12}(not run)")
            continue
        r, lat = d["result"], d["result"]["latency"]
        target = load_target(board)
        if lat["kind"] == "instructions":
            latency = f"{lat['median'] / 1e6:.1f} M instructions median (QEMU -icount count, not time)"
        else:
            latency = f"{lat['median']:.1f} {lat['unit']} median" + \
                      (f" (under {target.runner[0]} emulation on this machine: not a Pi's speed)" if target.runner else "")
        same = "-" if exported_crc is None or "model_crc32" not in d else \
            ("yes" if d["model_crc32"] == exported_crc else "NO")
        lines.append(f"  {board:<12}{r['images']:>7}{_pct(r.get('top1_board'), 15)}%{_pct(r.get('top1_reference'), 9)}%"
                     f"{r['bit_exact_fraction']:>11.4f}{same:>11}  {latency}")
    return lines


def summary(out: Path, seconds: float | None = None) -> str:
    lines = ["", "=" * 100, "tsptq demo: summary" + (f" ({seconds / 60:.1f} min)" if seconds else ""), "=" * 100, ""]
    for model in ("cifar10-vit", "dinov2-s14"):
        data = _load(out, f"accuracy-{model}.json")
        if data:
            lines += accuracy_lines(model, data) + [""]
    tfl = out / "cifar10-vit-tsptq.tflite"
    inspect, verify = _load(out, "inspect.json"), _load(out, "verify.json")
    crc = zlib.crc32(tfl.read_bytes()) if tfl.is_file() else None
    if inspect and tfl.is_file():
        arena = inspect.get("c_runtime", {}).get("arena_bytes")
        lines.append(f"file: {tfl} ({tfl.stat().st_size:,} B, {inspect['ops']} ops of which {inspect['custom_ops']} "
                     f"TSPTQ custom, {inspect['two_scale_tensors']} two-scale tensors"
                     + (f", C runtime arena {arena:,} B" if arena else "") + ")")
    if verify:
        lines.append(f"verify: the file's integer model {_pct(verify.get('top1_file'))}% top-1 on {verify['eval_images']} "
                     f"images; output bytes equal to the in-memory integer model: "
                     f"{'yes' if verify['bytes_equal_to_in_memory'] else 'NO'}")
    lines += ["", "boards (tsptq-deploy: quantize, export, build, run the images on the board, compare every output "
              "byte with the host's integer model; same file: the bytes deployed are the exported file's):"] + board_lines(out, crc) + [""]
    files = sorted(p for p in out.iterdir() if p.name not in ("summary.md", "demo.png"))
    lines += ["files in " + str(out) + ":"] + [f"  {p.name}{'/' if p.is_dir() else ''}" for p in files]
    lines += ["  summary.md (this summary), demo.png (accuracy at a glance)"]
    return "\n".join(lines)


def plot(out: Path) -> Path | None:
    from tsptq.evaluation.glance_plot import plot_agreement_panels

    panels = []
    for model, label in (("cifar10-vit", "cifar10-vit (bundled, trained here)"),
                         ("dinov2-s14", "dinov2-s14 (pretrained ViT-S/14, CIFAR-10 probe)")):
        data = _load(out, f"accuracy-{model}.json")
        if data:
            panels.append((f"{label}, {data['eval_images']} images", data["results"]))
    if not panels:
        return None
    path = out / "demo.png"
    plot_agreement_panels(panels, "W8A8, every op in integers (the exported .tflite in the C runtime): how often the "
                                  "quantized model picks FP32's class; whiskers: 95% paired bootstrap intervals", path)
    return path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tsptq.cli.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out", help="folder for every file the demo writes (default out/)")
    ap.add_argument("--images", type=int, default=500, help="bundled test images for cifar10-vit (default 500, all)")
    ap.add_argument("--dinov2-images", type=int, default=300,
                    help="test images for dinov2-s14 (default 300, about 2 minutes on 2 cores; 0 leaves it out)")
    ap.add_argument("--rpi-images", type=int, default=100, help="images run on the emulated Pi (default 100)")
    ap.add_argument("--mcu-images", type=int, default=40,
                    help="images run on the Cortex-M4F under QEMU (default 40, about 0.5 s each)")
    ap.add_argument("--summary-only", action="store_true", help="print the summary of an earlier run in --out")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    for name in ("images", "rpi_images", "mcu_images"):
        if getattr(args, name) < 1:
            ap_name = "--" + name.replace("_", "-")
            print(f"error: {ap_name} must be at least 1", file=sys.stderr)
            return 2
    if args.dinov2_images < 0:
        print("error: --dinov2-images must be 0 or more", file=sys.stderr)
        return 2
    start = time.monotonic()
    if not args.summary_only:
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("accuracy-cifar10-vit.json", "accuracy-dinov2-s14.json", "inspect.json", "verify.json",
                      *(f"deploy-{b}.json" for b in BOARDS)):  # the summary reads only this run's files
            (out / stale).unlink(missing_ok=True)
        run_steps(steps(out, args.images, args.dinov2_images, {"rpi": args.rpi_images, "mps2-an386": args.mcu_images}))
    elif not out.is_dir():
        print(f"error: {out} does not exist: run the demo first", file=sys.stderr)
        return 2
    text = summary(out, None if args.summary_only else time.monotonic() - start)
    png = plot(out)
    from tsptq.atomic import atomic_write

    atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text.strip() + "\n"))
    print(text)
    if png:
        print(f"\nwrote {out / 'summary.md'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
