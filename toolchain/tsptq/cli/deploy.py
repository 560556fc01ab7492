"""``tsptq-deploy``: a PyTorch ViT all the way to a board, measured there.

    tsptq-deploy --target host                       # the bundled cifar10-vit on the bundled images, this machine
    tsptq-deploy --target rpi                        # the same on an emulated Raspberry Pi (qemu-aarch64-static)
    tsptq-deploy --target host --threads 2           # each inference on 2 threads (Linux targets)
    tsptq-deploy --target rpi --port /dev/ttyUSB0    # a real Pi running the agent on its serial port
    tsptq-deploy --target rpi --ssh pi@raspberrypi   # copy the agent over SSH, talk to it over its stdio
    tsptq-deploy --target mps2-an386                 # Cortex-M4F firmware under qemu-system-arm
    tsptq-deploy --target nucleo-h743zi --port /dev/ttyACM0 --flash-tool   # a real board: build, flash, measure
    tsptq-deploy --target corstone-300 --build-only --npu ethos-u          # build and check the fit, run nothing

Steps: calibrate and quantize (the method of --method), lower to the integer model and export the .tflite bytes,
check that model and arena fit the board (before anything is flashed), build the device program for the target,
flash it (model baked in) or upload the model over the serial link, stream the evaluation images to the board and
compare every output with the host integer reference byte for byte. Reports on-device top-1, the bit-exact fraction
(it must be 1.0), latency median and p90 in the board's unit, per-op time, arena and flash bytes: a table, and with
--json / --report a JSON file, report.md and ops.png.
"""
from __future__ import annotations

import argparse
import sys

from tsptq.cli.model_args import add_model_args, source_from_args
from tsptq.deploy.pipeline import (OPTIMIZED_MAX_DIFF_CODES, OPTIMIZED_MIN_AGREEMENT, BoardOptions, deploy,
                                   deployment_ok, interrupted_code, interrupted_text, signals_interrupt)
from tsptq.errors import TsptqError


def add_board_args(ap) -> None:
    ap.add_argument("--runtime", choices=("tsptq", "litert"), default="tsptq",
                    help="what runs the model on a Linux board: tsptq (the C runtime's agent, default) or litert "
                         "(stock LiteRT with the tsptq delegate; the board needs Python with ai-edge-litert; the "
                         "emulated rpi gets an emulated Pi userland, see tsptq.deploy.pi_userland)")
    ap.add_argument("--litert-kernels", choices=("reference", "optimized"), default=None,
                    help="--runtime litert: LiteRT's reference kernels (bit-exact with tsptq, default) or its "
                         f"optimized kernels with XNNPACK (faster; a few output codes differ: the run passes within "
                         f"{OPTIMIZED_MAX_DIFF_CODES} codes and {100 * OPTIMIZED_MIN_AGREEMENT:.0f}%% top-1 agreement)")
    ap.add_argument("--port", help="pyserial URL of a board already running the tsptq device program "
                                   "(/dev/ttyUSB0, socket://host:port, rfc2217://...); default: start the board here")
    ap.add_argument("--baudrate", type=int, default=115200)
    ap.add_argument("--eval-images", type=int, default=100, help="images to run on the board (default 100)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="the longest wait for one reply before resending, in seconds (default 2; a lost frame is "
                         "resent sooner, as soon as its reply is overdue by the reply times measured so far)")
    ap.add_argument("--retries", type=int, default=5,
                    help="a request gives up after retries+1 tries and (retries+1) x timeout seconds without its "
                         "reply (default 5: 12 s); a board started here is reported at once when its program exits")
    ap.add_argument("--threads", type=int, default=1,
                    help="Linux targets (host, rpi), --runtime tsptq: run each inference on N threads (the C "
                         "runtime's static thread pool, 1 to 8; the output bytes do not change; default 1)")
    ap.add_argument("--json", help="write the whole report as JSON here")
    ap.add_argument("--report", help="directory for report.md and ops.png (per-op time plot)")
    ap.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    from tsptq.deploy.targets import list_targets

    ap = argparse.ArgumentParser(prog="tsptq-deploy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, choices=list_targets(), help="board to deploy to (targets/<name>/)")
    add_model_args(ap)
    ap.set_defaults(data="bundled")
    ap.add_argument("--method", default="tsptq", help="quantization method (see `tsptq models`)")
    ap.add_argument("--load", choices=("flash", "upload"), default=None,
                    help="flash: bake the model into the device program; upload: send it over the serial link "
                         "(default: upload on Linux targets, flash on microcontrollers)")
    ap.add_argument("--ssh", metavar="USER@HOST", help="rpi: copy the agent over SSH and talk to it over its stdio")
    ap.add_argument("--ssh-dir", metavar="DIR", default=None,
                    help="--ssh: where the device program is copied on the board (default: the target's remote_dir, "
                         "else a new private directory from `mktemp -d` there, removed when the agent ends)")
    ap.add_argument("--flash-tool", action="store_true", help="real boards: run the target's flash command first")
    ap.add_argument("--build-only", action="store_true",
                    help="quantize, check that model and arena fit the board (a table), build the device program, "
                         "and stop: nothing is started (the way to check a board that cannot run here, corstone-300)")
    ap.add_argument("--npu", choices=("ethos-u",), default=None,
                    help="--build-only on a board with an NPU ([npu] in its target.toml): also lower the NPU variant, "
                         "compile it with Vela (the board's settings) and check Vela's SRAM and flash figures")
    ap.add_argument("--residual", choices=("code", "int16"), default=None,
                    help="with --npu: the NPU variant's residual stream, as tsptq export --npu --residual (int16, "
                         "the default: the residual adds builtin int16 ADDs on the NPU; code: the default file's)")
    ap.add_argument("--layernorm", choices=("cpu", "npu"), default=None,
                    help="with --npu and the int16 residual stream: the LayerNorms as tsptq export --npu --layernorm "
                         "(npu, the default: NPU builtins around two row statistics on the CPU; cpu: one CPU op)")
    add_board_args(ap)
    return ap


def board_options(args) -> BoardOptions:
    """The board options of a ``tsptq-deploy`` or ``tsptq profile`` command line (checked by the library, in the
    order the board needs)."""
    return BoardOptions(target=args.target, runtime=args.runtime, litert_kernels=args.litert_kernels, port=args.port,
                        baudrate=args.baudrate, ssh=getattr(args, "ssh", None), ssh_dir=getattr(args, "ssh_dir", None),
                        load=getattr(args, "load", None), flash_tool=getattr(args, "flash_tool", False),
                        eval_images=args.eval_images, timeout=args.timeout, retries=args.retries, quiet=args.quiet,
                        threads=getattr(args, "threads", 1))


def main(argv=None) -> int:
    from tsptq.deploy.report import format_table, write_reports

    args = build_parser().parse_args(argv)
    try:
        with signals_interrupt():
            try:
                opts = board_options(args)
                if args.npu and not args.build_only:
                    raise TsptqError("--npu checks the NPU variant's fit with --build-only (tsptq export --npu "
                                     "ethos-u writes it)")
                if (args.residual is not None or args.layernorm is not None) and not args.npu:
                    raise TsptqError("--residual and --layernorm apply to --npu only")
                if args.build_only:
                    return _build_only(args, opts)
                report = deploy(source_from_args(args), opts)
            except TsptqError as e:
                print(f"tsptq-deploy: error: {e}", file=sys.stderr)
                return 2
            print(format_table(report))
            for path in write_reports(report, args.json, args.report):
                print(f"wrote {path}", file=sys.stderr)
            return 0 if deployment_ok(report["result"], opts) else 1
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the finally blocks have stopped the board
        print(f"tsptq-deploy: {interrupted_text(e)}", file=sys.stderr)
        return interrupted_code(e)


def _build_only(args, opts) -> int:
    from tsptq.deploy.pipeline import build_only, format_fit_table
    from tsptq.npu.export import npu_form

    residual16, layernorm_npu = npu_form(args.residual, args.layernorm) if args.npu else (False, False)
    report = build_only(source_from_args(args), opts, npu=args.npu, residual16=residual16,
                        layernorm_npu=layernorm_npu)
    print(f"{report['target']}: {report['model']} {report['method']} {report['bits']}, model by {report['delivery']}")
    print(format_fit_table(report["fit"]))
    fw = report["firmware"]
    if fw:
        print(f"firmware: text {fw['text']:,} B, data {fw['data']:,} B, bss {fw['bss']:,} B")
    if report["npu"]:
        r = report["npu"]
        print(f"NPU variant: {r['macs_npu']:,} of {r['macs_total']:,} MACs on the NPU "
              f"({100 * r['npu_mac_fraction']:.1f}%), Vela's estimate {1000 * r['inference_time_s']:.2f} ms for the NPU "
              f"part ({r['accelerator']}, {r['system_config']}, {r['memory_mode']})")
    print(f"built {report['program']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
