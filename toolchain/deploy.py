"""``tsptq-deploy``: a PyTorch ViT all the way to a board, measured there.

    tsptq-deploy --target host                       # the bundled cifar10-vit on the bundled images, this machine
    tsptq-deploy --target rpi                        # the same on an emulated Raspberry Pi (qemu-aarch64-static)
    tsptq-deploy --target rpi --port /dev/ttyUSB0    # a real Pi running the agent on its serial port
    tsptq-deploy --target rpi --ssh pi@raspberrypi   # copy the agent over SSH, talk to it over its stdio
    tsptq-deploy --target mps2-an386                 # Cortex-M4F firmware under qemu-system-arm
    tsptq-deploy --target nucleo-h743zi --port /dev/ttyACM0 --flash-tool   # a real board: build, flash, measure

Steps: calibrate and quantize (the method of --method), lower to the integer model and export the .tflite bytes,
check that model and arena fit the board (before anything is flashed), build the device program for the target,
flash it (model baked in) or upload the model over the serial link, stream the evaluation images to the board and
compare every output with the host integer reference byte for byte. Reports on-device top-1, the bit-exact fraction
(it must be 1.0), latency median and p90 in the board's unit, per-op time, arena and flash bytes: a table, and with
--json / --report a JSON file, report.md and ops.png.
"""
from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import subprocess
import sys
import threading
import time

from tsptq.errors import TsptqError


class DoesNotFitError(TsptqError):
    """The model or its arena is larger than the board's memory (found before flashing)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, ``kill`` and CI cancels send) or SIGHUP, raised like Ctrl-C's KeyboardInterrupt: a
    BaseException, so no ``except Exception`` on the way swallows it and every ``finally`` (stop the board, remove its
    pseudo-terminal directory) runs."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_interrupt():
    """Within the block SIGTERM and SIGHUP raise Interrupted (SIGINT already raises KeyboardInterrupt). A signal the
    caller ignores (nohup) stays ignored. Only in the main thread (signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def interrupted_text(e: KeyboardInterrupt) -> str:
    """One line for an interrupted run (the ``finally`` blocks have stopped what it started by then)."""
    what = f"terminated ({signal.Signals(e.signum).name})" if isinstance(e, Interrupted) else "interrupted (Ctrl-C)"
    return f"{what}; a board started for the run was stopped and its temporary files removed"


def interrupted_code(e: KeyboardInterrupt) -> int:
    return 128 + (e.signum if isinstance(e, Interrupted) else signal.SIGINT)


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


def memory_needs(im, model_bytes: bytes) -> dict:
    """What the board must hold: the model, and the arena (runtime plan + input/output/per-op tick buffers)."""
    from tsptq.planner import plan

    p = plan(im)
    io = _align16(im.input.nbytes) + _align16(im.output.nbytes) + _align16(4 * len(im.ops))
    return {"model_bytes": len(model_bytes), "arena_bytes": p.arena_size, "io_bytes": io,
            "activation_lower_bound": p.lower_bound}


def check_fits(target, needs: dict, delivery: str) -> None:
    """Model and arena against the target's memory. delivery: "upload" (the upload buffer), "flash" (the flash, or
    the upload buffer when the target has no flash size), "any" (the board may hold it in either: `tsptq profile`
    on a board already flashed)."""
    problems = []
    flash = target.flash_capacity or target.model_capacity
    room = {"upload": target.model_capacity, "flash": flash, "any": max(target.model_capacity, flash)}[delivery]
    where = {"upload": "model upload buffer", "flash": "flash", "any": "flash or model upload buffer"}[delivery]
    if needs["model_bytes"] > room:
        problems.append(f"the model is {needs['model_bytes']:,} B but the {where} holds {room:,} B")
    arena = needs["arena_bytes"] + needs["io_bytes"]
    if arena > target.arena_capacity:
        problems.append(f"the arena needs {arena:,} B ({needs['arena_bytes']:,} B planned + {needs['io_bytes']:,} B "
                        f"input/output/profile) but the board has {target.arena_capacity:,} B")
    if problems:
        raise DoesNotFitError(f"{target.name}: does not fit: " + "; ".join(problems))


def _step(msg: str, quiet: bool) -> float:
    if not quiet:
        print(f"[tsptq-deploy] {msg}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _flash(target, program, quiet: bool) -> None:
    if not target.flash:
        raise TsptqError(f"target {target.name} has no flash command in its target.toml")
    cmd = [a.format(elf=program) for a in target.flash]
    _step(f"flashing: {shlex.join(cmd)}", quiet)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TsptqError(f"flashing {target.name} failed ({shlex.join(cmd)}):\n{proc.stdout}{proc.stderr}")


def device_program(target, embed_model: bytes | None, args):
    """Build what runs on the board: the tsptq agent or firmware, or with ``--runtime litert`` the LiteRT agent
    folder (agent, wire.py, delegate library)."""
    from tsptq.targets import build as build_program

    if args.runtime == "litert":
        from tsptq.litert_board import build_bundle

        return build_bundle(target)
    return build_program(target, embed_model=embed_model)


def connect(target, program, args):
    """(an open serial-like port, its name, what to close afterwards) for the board: a board started here (QEMU or
    the agent behind a pty), the agent over SSH, or a port given by the user."""
    import serial

    from tsptq.litert_board import bundle_files, local_command, remote_command
    from tsptq.targets import ssh_agent, start_board

    if args.port:
        try:
            port = serial.serial_for_url(args.port, baudrate=args.baudrate, timeout=0.05)
        except (serial.SerialException, ValueError) as e:
            raise TsptqError(f"cannot open the serial port {args.port}: {e}") from None
        return port, args.port, port
    litert = args.runtime == "litert"
    if getattr(args, "ssh", None):
        litert_files = ({"files": bundle_files(program), "remote_command": remote_command(target, args.litert_kernels)}
                        if litert else {})
        running = ssh_agent(target, program, args.ssh, remote_dir=args.ssh_dir, **litert_files)
        return running.serial, running.url, running
    command = local_command(target, program, args.litert_kernels) if litert else None
    running = start_board(target, program, command=command)
    return running.serial, running.url, running


def exit_note(running) -> str:
    """When the link failed because the device program started here died: its exit code and the end of what it
    printed on stderr (a missing library, a wrong architecture...), to append to the link error."""
    notes = []
    for p in getattr(running, "processes", []):
        if p.poll() is not None and p.stderr is not None:
            err = running.stderr_of(p)
            notes.append(f"\n{p.args[0]} exited with code {p.returncode}" + (f":\n{err[-1500:]}" if err else ""))
    return "".join(notes)


def open_link(port, port_name: str, closer, args):
    """The link to the board with the command line's --timeout/--retries; for a board started here it also watches
    the processes behind it, so a device program that exits is reported at once, not after every retry."""
    from tsptq.serial_link import Link

    return Link(port, port_name, timeout=args.timeout, retries=args.retries, check=getattr(closer, "gone", None))


def check_board_fits(info, needs: dict, port_name: str) -> None:
    """The arena against what the board itself reports (HELLO), before anything is uploaded or run."""
    arena = needs["arena_bytes"] + needs["io_bytes"]
    if arena > info.arena_capacity:
        raise DoesNotFitError(f"{port_name}: does not fit: the arena needs {arena:,} B ({needs['arena_bytes']:,} B "
                              f"planned + {needs['io_bytes']:,} B input/output/profile) but board {info.board!r} "
                              f"has {info.arena_capacity:,} B")


def check_runtime_choice(target, args) -> None:
    if args.litert_kernels is not None and args.runtime != "litert":
        raise TsptqError("--litert-kernels applies to --runtime litert only")
    if args.runtime == "litert" and args.litert_kernels is None:
        args.litert_kernels = "reference"
    if args.runtime == "litert":
        if target.kind != "posix":
            raise TsptqError(f"--runtime litert runs on the Linux targets (host, rpi), not on {target.name}")
        if getattr(args, "load", None) == "flash":
            raise TsptqError("--runtime litert loads the model over the link: --load flash does not apply")


def deploy(args) -> dict:
    from tsptq.board import Board
    from tsptq.board_run import TickUnit, evaluate_on_board
    from tsptq.cli import _source, resolve_data
    from tsptq.integer import build
    from tsptq.serial_link import LinkError
    from tsptq.targets import load_target, program_sizes
    from tsptq.tflite_export import to_tflite

    quiet = args.quiet
    target = load_target(args.target)
    check_runtime_choice(target, args)
    delivery = args.load or ("upload" if target.kind == "posix" else "flash")
    if target.kind == "board" and not args.port:
        raise TsptqError(f"{target.name} is a real board: give its serial port with --port (and --flash-tool to "
                         f"flash it with `{' '.join(target.flash)}`)")
    if not args.port and not args.ssh:
        target.check_tools()  # before the slow part
    if args.eval_images is not None and args.eval_images < 1:
        raise TsptqError("--eval-images must be at least 1")

    src = _source(args)
    t = _step(f"quantizing {src.model or src.checkpoint} with {src.method} {src.bits} "
              f"({src.calib_images} calibration images)", quiet)
    im, qm = build(src, progress=not quiet)
    model_bytes = to_tflite(im)
    needs = memory_needs(im, model_bytes)
    check_fits(target, needs, delivery)
    _step(f"exported {len(model_bytes):,} B, {len(im.ops)} ops, arena {needs['arena_bytes']:,} B "
          f"({time.perf_counter() - t:.1f} s); building for {target.name}", quiet)
    program = device_program(target, model_bytes if delivery == "flash" else None, args)
    if args.runtime == "litert":
        _step(f"LiteRT device program (copy this folder to a board): {program}", quiet)
    sizes = program_sizes(target, program) if target.kind != "posix" else {}
    if target.kind == "board" and args.flash_tool:
        _flash(target, program, quiet)

    cfg = qm.graph.cfg
    _, images, labelled = resolve_data(src.model, cfg, args.data, src.calib_images, args.eval_images, args.folder,
                                       labels=src.labels, calib_folder=src.calib_folder, eval_only=True)
    closer = None
    try:
        port, port_name, closer = connect(target, program, args)
        link = open_link(port, port_name, closer, args)
        board = Board(link)
        info = board.hello()
        if delivery == "upload":
            t = _step(f"uploading {len(model_bytes):,} B to {info.board} over {port_name}", quiet)
            board.upload(model_bytes, progress=not quiet)
        elif info.model_size != len(model_bytes):
            raise TsptqError(f"{port_name}: the board holds a {info.model_size:,} B model, not the {len(model_bytes):,} B "
                             "one just built: flash it first (--flash-tool) or use --load upload")
        _step(f"running {len(images)} images ({images.name}) on {info.board}", quiet)
        unit = TickUnit.of(info.tick_unit, info.tick_hz, target.instructions_per_tick)
        result = evaluate_on_board(board, im, images, cfg, labelled, unit, progress=not quiet)
        counters = dict(link.counters)
    except LinkError as e:
        raise TsptqError(f"{e}{exit_note(closer)}") from None
    finally:
        if closer is not None:
            closer.close()
    return {
        "target": target.name, "runtime": runtime_name(args), "model": src.model or src.checkpoint,
        "method": src.method, "bits": src.bits,
        "calib_images": src.calib_images, "port": port_name, "delivery": delivery,
        "board": {k: v for k, v in vars(info).items()},
        "memory": {**needs, "model_capacity": target.model_capacity if delivery == "upload" else
                   (target.flash_capacity or target.model_capacity),
                   "arena_capacity": target.arena_capacity, "firmware": sizes},
        "result": result, "link": counters,
    }


def profile(args) -> dict:
    """``tsptq profile``: the board part of a deployment, for a .tflite file and a board (already flashed, or
    started here when no --port is given; the model is uploaded unless the board already holds it). The model and
    its arena are checked against the target before anything is started or sent, and the arena again against what
    the board reports. SIGTERM and Ctrl-C stop the board and end in one line (a TsptqError)."""
    try:
        with signals_interrupt():
            return _profile(args)
    except KeyboardInterrupt as e:
        raise TsptqError(interrupted_text(e)) from None


def _profile(args) -> dict:
    from tsptq.board import Board
    from tsptq.board_run import TickUnit, evaluate_on_board
    from tsptq.serial_link import LinkError
    from tsptq.targets import load_target
    from tsptq.tflite_import import read_tflite
    from tsptq.verify import file_eval_set

    target = load_target(args.target)
    check_runtime_choice(target, args)
    model_bytes = open(args.file, "rb").read()
    im = read_tflite(args.file)
    _, cfg, images, labelled = file_eval_set(im, args)
    needs = memory_needs(im, model_bytes)
    program = None
    if args.port:  # a board already running: it may hold the model in flash or get it uploaded
        check_fits(target, needs, "any")
    else:
        if target.kind == "board":
            raise TsptqError(f"{target.name} is a real board: give its serial port with --port")
        check_fits(target, needs, "upload")
        program = device_program(target, None, args)
    closer = None
    try:
        port, port_name, closer = connect(target, program, args)
        link = open_link(port, port_name, closer, args)
        board = Board(link)
        info = board.hello()
        check_board_fits(info, needs, port_name)
        board.upload(model_bytes, progress=not args.quiet)  # skipped when the board already holds this model
        unit = TickUnit.of(info.tick_unit, info.tick_hz, target.instructions_per_tick)
        result = evaluate_on_board(board, im, images, cfg, labelled, unit, progress=not args.quiet)
        counters = dict(link.counters)
    except LinkError as e:
        raise TsptqError(f"{e}{exit_note(closer)}") from None
    finally:
        if closer is not None:
            closer.close()
    meta = im.metadata
    return {"target": target.name, "runtime": runtime_name(args), "model": str(args.file),
            "method": meta.get("method"), "bits": meta.get("bits"), "port": port_name, "delivery": "already on the board or uploaded", "board": dict(vars(info)),
            "memory": {**needs, "model_capacity": info.model_capacity, "arena_capacity": info.arena_capacity,
                       "firmware": {}},
            "result": result, "link": counters}


def runtime_name(args) -> str:
    return f"litert ({args.litert_kernels} kernels)" if args.runtime == "litert" else "tsptq"


# LiteRT's optimized kernels requantize the builtins their own way (docs/integer-semantics.md): their outputs are not
# required to be bit-exact, only this close (measured on the 10,000 cifar10-vit test images: at most 14 codes apart,
# 98.5% top-1 agreement). Anything worse is a broken deployment, not rounding.
OPTIMIZED_MAX_DIFF_CODES = 32
OPTIMIZED_MIN_AGREEMENT = 0.95


def deployment_ok(result: dict, args) -> bool:
    """The exit-code check: bit-exact with the host reference, or for LiteRT's optimized kernels within the bounds
    above."""
    if result["bit_exact_fraction"] == 1.0:
        return True
    if args.runtime == "litert" and args.litert_kernels == "optimized":
        return (result["max_abs_diff_codes"] <= OPTIMIZED_MAX_DIFF_CODES
                and result["top1_agreement"] >= OPTIMIZED_MIN_AGREEMENT)
    return False


def add_board_args(ap) -> None:
    ap.add_argument("--runtime", choices=("tsptq", "litert"), default="tsptq",
                    help="what runs the model on a Linux board: tsptq (the C runtime's agent, default) or litert "
                         "(stock LiteRT with the tsptq delegate; the board needs Python with ai-edge-litert; the "
                         "emulated rpi gets an emulated Pi userland, see tsptq.pi_userland)")
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
    ap.add_argument("--json", help="write the whole report as JSON here")
    ap.add_argument("--report", help="directory for report.md and ops.png (per-op time plot)")
    ap.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    from tsptq.cli import _add_model_args
    from tsptq.targets import list_targets

    ap = argparse.ArgumentParser(prog="tsptq-deploy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, choices=list_targets(), help="board to deploy to (targets/<name>/)")
    _add_model_args(ap)
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
    add_board_args(ap)
    return ap


def main(argv=None) -> int:
    from tsptq.deploy_report import format_table, write_reports

    args = build_parser().parse_args(argv)
    try:
        with signals_interrupt():
            try:
                report = deploy(args)
            except TsptqError as e:
                print(f"tsptq-deploy: error: {e}", file=sys.stderr)
                return 2
            print(format_table(report))
            for path in write_reports(report, args.json, args.report):
                print(f"wrote {path}", file=sys.stderr)
            return 0 if deployment_ok(report["result"], args) else 1
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the finally blocks have stopped the board
        print(f"tsptq-deploy: {interrupted_text(e)}", file=sys.stderr)
        return interrupted_code(e)


if __name__ == "__main__":
    sys.exit(main())
