"""A PyTorch ViT all the way to a board, measured there: the library behind ``tsptq-deploy`` and ``tsptq profile``
(their command lines, with examples, are in ``tsptq.cli.deploy`` and ``tsptq.cli.main``).

``deploy(source, options)``: quantize, lower and export, check that model and arena fit the board (before anything
is flashed), build the device program, flash it or upload the model over the serial link, stream the evaluation
images and compare every output with the host integer reference byte for byte. ``profile(file, options)``: the
board half for an existing file. Both return the report as a dict (``tsptq.deploy.report`` renders it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from tsptq.model.model_data import EvalData, resolve_data
from tsptq.errors import TsptqError
from tsptq.deploy.wire import crc32
from tsptq.runtime.c_binding import MAX_THREADS  # TSPTQ_MAX_THREADS of the agent builds too (the same header)

if TYPE_CHECKING:  # the parser of `tsptq` imports this module: no torch at import time (`tsptq inspect` needs none)
    from tsptq.intmodel.integer import Source


@dataclasses.dataclass(frozen=True)
class BoardOptions:
    """How to reach a board and what to run there (the board half of ``tsptq-deploy`` and ``tsptq profile``).

    ``runtime``: ``tsptq`` (the C runtime's device program) or ``litert`` (stock LiteRT with the tsptq delegate, Linux
    targets only; ``litert_kernels`` ``reference`` by default, or ``optimized``). ``port``: a pyserial URL of a board
    already running (default: start it here); ``ssh``: USER@HOST to copy the agent to. ``load``: ``flash`` (model baked
    into the program) or ``upload`` (over the link); None: upload on Linux targets, flash on microcontrollers.
    ``timeout``/``retries``: the link's (``tsptq.deploy.serial_link.Link``). ``threads``: how many threads the C
    runtime's agent runs each inference on (its static thread pool, Linux targets only: 1 to ``MAX_THREADS``)."""
    target: str
    runtime: str = "tsptq"
    litert_kernels: str | None = None
    port: str | None = None
    baudrate: int = 115200
    ssh: str | None = None
    ssh_dir: str | None = None
    load: str | None = None
    flash_tool: bool = False
    eval_images: int | None = 100
    timeout: float | None = None
    retries: int = 5
    quiet: bool = False
    threads: int = 1


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
    from tsptq.intmodel.planner import plan

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


def refuse_npu_board_run(target, opts: BoardOptions) -> None:
    """A board with an Ethos-U NPU (an ``[npu]`` table) started here: nothing on this machine simulates its NPU."""
    if target.extra.get("npu") and not opts.port:
        raise TsptqError(f"{target.name}: no simulator of its {target.extra['npu']['accelerator']} NPU exists here "
                         "(QEMU models the Cortex-M55 alone): run the CPU part with --target mps3-an547, or build "
                         "the firmware and check the fit with --build-only")


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


def device_program(target, embed_model: bytes | None, opts: BoardOptions):
    """Build what runs on the board: the tsptq agent or firmware, or with ``--runtime litert`` the LiteRT agent
    folder (agent, wire.py, delegate library)."""
    from tsptq.deploy.targets import build as build_program

    if opts.runtime == "litert":
        from tsptq.deploy.litert_board import build_bundle

        return build_bundle(target)
    return build_program(target, embed_model=embed_model)


def connect(target, program, opts: BoardOptions):
    """(an open serial-like port, its name, what to close afterwards) for the board: a board started here (QEMU or
    the agent behind a pty), the agent over SSH, or a port given by the user."""
    import serial

    from tsptq.deploy.litert_board import bundle_files, local_command, remote_command
    from tsptq.deploy.targets import ssh_agent, start_board

    if opts.port:
        try:
            port = serial.serial_for_url(opts.port, baudrate=opts.baudrate, timeout=0.05)
        except (serial.SerialException, ValueError) as e:
            raise TsptqError(f"cannot open the serial port {opts.port}: {e}") from None
        return port, opts.port, port
    litert = opts.runtime == "litert"
    if opts.ssh:
        litert_files = ({"files": bundle_files(program), "remote_command": remote_command(target, opts.litert_kernels)}
                        if litert else {})
        running = ssh_agent(target, program, opts.ssh, remote_dir=opts.ssh_dir, args=agent_args(opts), **litert_files)
        return running.serial, running.url, running
    command = local_command(target, program, opts.litert_kernels) if litert else None
    running = start_board(target, program, command=command, args=agent_args(opts))
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


def open_link(port, port_name: str, closer, opts: BoardOptions):
    """The link to the board with the command line's --timeout/--retries; for a board started here it also watches
    the processes behind it, so a device program that exits is reported at once, not after every retry."""
    from tsptq.deploy.serial_link import Link

    return Link(port, port_name, timeout=opts.timeout, retries=opts.retries, check=getattr(closer, "gone", None))


@contextlib.contextmanager
def board_session(target, program, opts: BoardOptions):
    """The board reached: (board, link, HELLO info, port name). A link failure inside becomes one TsptqError (with why
    a device program started here died, if it did); whatever was started for the run is stopped on the way out."""
    from tsptq.deploy.board import Board
    from tsptq.deploy.serial_link import LinkError

    closer = None
    try:
        port, port_name, closer = connect(target, program, opts)
        link = open_link(port, port_name, closer, opts)
        board = Board(link)
        yield board, link, board.hello(), port_name
    except LinkError as e:
        raise TsptqError(f"{e}{exit_note(closer)}") from None
    finally:
        if closer is not None:
            closer.close()


def check_board_fits(info, needs: dict, port_name: str) -> None:
    """The arena against what the board itself reports (HELLO), before anything is uploaded or run."""
    arena = needs["arena_bytes"] + needs["io_bytes"]
    if arena > info.arena_capacity:
        raise DoesNotFitError(f"{port_name}: does not fit: the arena needs {arena:,} B ({needs['arena_bytes']:,} B "
                              f"planned + {needs['io_bytes']:,} B input/output/profile) but board {info.board!r} "
                              f"has {info.arena_capacity:,} B")


def agent_args(opts: BoardOptions) -> tuple[str, ...]:
    """What the tsptq agent started here (or over SSH) is given besides its port: ``--threads N`` when N > 1."""
    return ("--threads", str(opts.threads)) if opts.threads != 1 else ()


def check_threads(target, opts: BoardOptions) -> None:
    """--threads: a count the agent runs (1..MAX_THREADS), on a Linux target whose agent this run starts."""
    n = opts.threads
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise TsptqError(f"--threads must be 1 to {MAX_THREADS}, got {n!r}")
    if n == 1:
        return
    if target.kind != "posix":
        raise TsptqError(f"--threads runs the C runtime's thread pool on the Linux targets (host, rpi); {target.name} "
                         "is bare metal: one thread")
    if opts.runtime != "tsptq":
        raise TsptqError("--threads applies to --runtime tsptq (the C runtime's agent)")
    if opts.port:
        raise TsptqError("--threads with --port: the agent already runs on the board; start it there with "
                         f"`--threads {n}`")


def check_runtime_choice(target, opts: BoardOptions) -> BoardOptions:
    """The options with the runtime's defaults filled in, or an error for a choice the target cannot take."""
    check_threads(target, opts)
    if opts.litert_kernels is not None and opts.runtime != "litert":
        raise TsptqError("--litert-kernels applies to --runtime litert only")
    if opts.runtime != "litert":
        return opts
    if target.kind != "posix":
        raise TsptqError(f"--runtime litert runs on the Linux targets (host, rpi), not on {target.name}")
    if opts.load == "flash":
        raise TsptqError("--runtime litert loads the model over the link: --load flash does not apply")
    return dataclasses.replace(opts, litert_kernels=opts.litert_kernels or "reference")


def deploy(src: Source, opts: BoardOptions) -> dict:
    """Quantize ``src``, export, check the fit, build and start (or reach) the board, run ``opts.eval_images`` images
    of ``src``'s data there and compare every output with the host integer reference: the report as a dict."""
    from tsptq.deploy.board_run import TickUnit, evaluate_on_board
    from tsptq.intmodel.integer import build
    from tsptq.deploy.targets import load_target, program_sizes
    from tsptq.tflite.writer import to_tflite

    quiet = opts.quiet
    target = load_target(opts.target)
    opts = check_runtime_choice(target, opts)
    refuse_npu_board_run(target, opts)
    delivery = opts.load or ("upload" if target.kind == "posix" else "flash")
    if target.kind == "board" and not opts.port:
        raise TsptqError(f"{target.name} is a real board: give its serial port with --port (and --flash-tool to "
                         f"flash it with `{' '.join(target.flash)}`)")
    if not opts.port and not opts.ssh:
        target.check_tools()  # before the slow part
    if opts.eval_images is not None and opts.eval_images < 1:
        raise TsptqError("--eval-images must be at least 1")
    src.validate()

    t = _step(f"quantizing {src.model or src.checkpoint} with {src.method} {src.bits} "
              f"({src.calib_images} calibration images)", quiet)
    im, qm = build(src, progress=not quiet)
    model_bytes = to_tflite(im)
    needs = memory_needs(im, model_bytes)
    check_fits(target, needs, delivery)
    _step(f"exported {len(model_bytes):,} B, {len(im.ops)} ops, arena {needs['arena_bytes']:,} B "
          f"({time.perf_counter() - t:.1f} s); building for {target.name}", quiet)
    program = device_program(target, model_bytes if delivery == "flash" else None, opts)
    if opts.runtime == "litert":
        _step(f"LiteRT device program (copy this folder to a board): {program}", quiet)
    sizes = program_sizes(target, program) if target.kind != "posix" else {}
    if target.kind == "board" and opts.flash_tool:
        _flash(target, program, quiet)

    cfg = qm.graph.cfg
    _, images, labelled = resolve_data(src.model, cfg, src.data, src.calib_images, opts.eval_images, src.folder,
                                       labels=src.labels, calib_folder=src.calib_folder, eval_only=True)
    with board_session(target, program, opts) as (board, link, info, port_name):
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
    return {
        "target": target.name, "runtime": runtime_name(opts), "threads": opts.threads,
        "model": src.model or src.checkpoint,
        "method": src.method, "bits": src.bits,
        "calib_images": src.calib_images, "port": port_name, "delivery": delivery,
        "model_crc32": crc32(model_bytes),  # equals a `tsptq export` of the same model, method and images
        "board": {k: v for k, v in vars(info).items()},
        "memory": {**needs, "model_capacity": target.model_capacity if delivery == "upload" else
                   (target.flash_capacity or target.model_capacity),
                   "arena_capacity": target.arena_capacity, "firmware": sizes},
        "result": result, "link": counters,
    }


def profile(file: str, opts: BoardOptions, data: EvalData = EvalData()) -> dict:
    """``tsptq profile``: the board part of a deployment, for a .tflite file and a board (already flashed, or
    started here when no --port is given; the model is uploaded unless the board already holds it). The model and
    its arena are checked against the target before anything is started or sent, and the arena again against what
    the board reports. SIGTERM and Ctrl-C stop the board and end in one line (a TsptqError)."""
    try:
        with signals_interrupt():
            return _profile(file, opts, data)
    except KeyboardInterrupt as e:
        raise TsptqError(interrupted_text(e)) from None


def _profile(file: str, opts: BoardOptions, data: EvalData) -> dict:
    from tsptq.deploy.board_run import TickUnit, evaluate_on_board
    from tsptq.deploy.targets import load_target
    from tsptq.tflite.reader import read_tflite
    from tsptq.evaluation.verify import file_eval_set

    target = load_target(opts.target)
    opts = check_runtime_choice(target, opts)
    refuse_npu_board_run(target, opts)
    model_bytes = open(file, "rb").read()
    im = read_tflite(file)
    # the number of images: the data's when it says, else the board options' (the command line sets both)
    want = data if data.images is not None else dataclasses.replace(data, images=opts.eval_images)
    _, cfg, images, labelled = file_eval_set(im, file, want)
    needs = memory_needs(im, model_bytes)
    program = None
    if opts.port:  # a board already running: it may hold the model in flash or get it uploaded
        check_fits(target, needs, "any")
    else:
        if target.kind == "board":
            raise TsptqError(f"{target.name} is a real board: give its serial port with --port")
        check_fits(target, needs, "upload")
        program = device_program(target, None, opts)
    with board_session(target, program, opts) as (board, link, info, port_name):
        check_board_fits(info, needs, port_name)
        board.upload(model_bytes, progress=not opts.quiet)  # skipped when the board already holds this model
        unit = TickUnit.of(info.tick_unit, info.tick_hz, target.instructions_per_tick)
        result = evaluate_on_board(board, im, images, cfg, labelled, unit, progress=not opts.quiet)
        counters = dict(link.counters)
    meta = im.metadata
    return {"target": target.name, "runtime": runtime_name(opts), "model": str(file),
            "method": meta.get("method"), "bits": meta.get("bits"), "port": port_name,
            "delivery": "already on the board or uploaded", "model_crc32": crc32(model_bytes), "board": dict(vars(info)),
            "memory": {**needs, "model_capacity": info.model_capacity, "arena_capacity": info.arena_capacity,
                       "firmware": {}},
            "result": result, "link": counters}


# ---- build only: the firmware and the fit table, for a board that cannot run here ---------------------------------

@dataclasses.dataclass(frozen=True)
class FitRow:
    """One thing the board must hold, against the memory it goes to."""
    what: str
    needs: int
    memory: str
    capacity: int

    @property
    def fits(self) -> bool:
        return self.needs <= self.capacity


def board_fit_rows(target, needs: dict, delivery: str) -> list[FitRow]:
    """The model and the arena against the target's memories (``check_fits``'s checks, as rows)."""
    room = target.model_capacity if delivery == "upload" else (target.flash_capacity or target.model_capacity)
    where = "model upload buffer" if delivery == "upload" else "flash"
    return [FitRow("model (.tflite)", needs["model_bytes"], where, room),
            FitRow("arena (planned + input/output/profile)", needs["arena_bytes"] + needs["io_bytes"], "arena",
                   target.arena_capacity)]


def npu_fit_rows(npu: dict, report) -> list[FitRow]:
    """The NPU variant compiled by Vela against the board's ``[npu]`` memories: Vela's SRAM and off-chip flash figures
    (what it compiled for the NPU) and the compiled file, which also holds the CPU ops' constants."""
    return [FitRow("NPU variant: Vela's SRAM", report.sram_bytes, "NPU SRAM", npu["sram_capacity"]),
            FitRow("NPU variant: Vela's off-chip flash", report.off_chip_flash_bytes, "NPU flash", npu["flash_capacity"]),
            FitRow("NPU variant: Vela's compiled file", len(report.compiled), "NPU flash", npu["flash_capacity"])]


def require_fit(target, rows: list[FitRow]) -> None:
    bad = [r for r in rows if not r.fits]
    if bad:
        raise DoesNotFitError(f"{target.name}: does not fit: " + "; ".join(
            f"{r.what} needs {r.needs:,} B but the {r.memory} holds {r.capacity:,} B" for r in bad))


def format_fit_table(fit: list[dict]) -> str:
    """``build_only``'s ``fit`` rows as a terminal table."""
    rows = [FitRow(r["what"], r["needs"], r["memory"], r["capacity"]) for r in fit]
    width, mem = max(len(r.what) for r in rows), max(len(r.memory) for r in rows)
    lines = [f"{'':{width}}  {'needs':>13}  {'board':>13}  memory"]
    lines += [f"{r.what:{width}}  {r.needs:>11,} B  {r.capacity:>11,} B  {r.memory:{mem}}  "
              f"{'fits' if r.fits else 'TOO BIG'}" for r in rows]
    return "\n".join(lines)


def build_only(src: Source, opts: BoardOptions, npu: str | None = None, residual16: bool = False,
               layernorm_npu: bool = False) -> dict:
    """``tsptq-deploy --build-only``: quantize ``src``, check that the model and its arena fit the board (and with
    ``npu``, that the NPU variant lowered from the same quantization, compiled by Vela with the target's ``[npu]``
    settings, fits its NPU memories; ``residual16``: the variant with an int16 residual stream; ``layernorm_npu``:
    and its LayerNorms as NPU builtins), then build the
    firmware (the model baked in for a microcontroller). Nothing is started. A model that does not fit is refused in
    one line before anything is built."""
    from tsptq.deploy.targets import load_target, program_sizes
    from tsptq.intmodel.integer import layernorm_sigmas, quantize_source
    from tsptq.intmodel.lower import lower
    from tsptq.tflite.writer import to_tflite

    target = load_target(opts.target)
    if opts.runtime != "tsptq":
        raise TsptqError("--build-only builds the tsptq device program (--runtime tsptq)")
    board_npu = target.extra.get("npu")
    if residual16 and npu is None:
        raise TsptqError("an int16 residual stream is a form of the NPU variant (--npu ethos-u) only")
    if layernorm_npu and not residual16:
        raise TsptqError("--layernorm npu reads the int16 residual stream: add --npu ethos-u --residual int16")
    if npu is not None and (not board_npu or board_npu.get("target") != npu):
        raise TsptqError(f"--npu {npu}: target {target.name} has no {npu} NPU (its target.toml has no matching "
                         "[npu] table)")
    target.check_tools()
    delivery = opts.load or ("upload" if target.kind == "posix" else "flash")
    src.validate()
    if npu is not None:
        from tsptq.npu.export import check_npu_request
        from tsptq.npu.vela import require_vela

        check_npu_request(npu, src.method, src.bits, board_npu["accelerator"])
        require_vela()
    t = _step(f"quantizing {src.model or src.checkpoint} with {src.method} {src.bits} "
              f"({src.calib_images} calibration images)", opts.quiet)
    qm, calib = quantize_source(src, progress=not opts.quiet, npu=npu is not None)
    im = lower(qm)
    im.metadata["source"] = src.to_dict()
    model_bytes = to_tflite(im)
    needs = memory_needs(im, model_bytes)
    rows = board_fit_rows(target, needs, delivery)
    require_fit(target, rows)  # the firmware is built either way: refuse before Vela's compile when it cannot fit
    report = None
    if npu is not None:
        import tempfile
        from pathlib import Path

        from tsptq.npu.vela import compile_report

        _step(f"lowering the NPU variant and compiling it with Vela ({board_npu['accelerator']}, "
              f"{board_npu['system_config']}, {board_npu['memory_mode']})", opts.quiet)
        with tempfile.TemporaryDirectory(prefix="tsptq-fit-") as tmp:
            staged = Path(tmp) / f"{target.name}-npu.tflite"
            sigma = layernorm_sigmas(qm, calib) if layernorm_npu else None
            staged.write_bytes(to_tflite(lower(qm, npu=True, residual16=residual16, layernorm_npu=sigma)))
            report = compile_report(staged, board_npu["accelerator"], board_npu["system_config"],
                                    board_npu["memory_mode"])
        rows += npu_fit_rows(board_npu, report)
        require_fit(target, rows)
    _step(f"exported {len(model_bytes):,} B ({time.perf_counter() - t:.1f} s); building for {target.name}", opts.quiet)
    program = device_program(target, model_bytes if delivery == "flash" else None, opts)
    return {"target": target.name, "model": src.model or src.checkpoint, "method": src.method, "bits": src.bits,
            "delivery": delivery, "program": str(program),
            "firmware": program_sizes(target, program) if target.kind != "posix" else {},
            "fit": [dataclasses.asdict(r) | {"fits": r.fits} for r in rows],
            "npu": report.to_json() if report is not None else None}


def runtime_name(opts: BoardOptions) -> str:
    return f"litert ({opts.litert_kernels} kernels)" if opts.runtime == "litert" else "tsptq"


# LiteRT's optimized kernels requantize the builtins their own way (docs/integer-semantics.md): their outputs are not
# required to be bit-exact, only this close (measured on the 10,000 cifar10-vit test images: at most 14 codes apart,
# 98.5% top-1 agreement). Anything worse is a broken deployment, not rounding.
OPTIMIZED_MAX_DIFF_CODES = 32
OPTIMIZED_MIN_AGREEMENT = 0.95


def deployment_ok(result: dict, opts: BoardOptions) -> bool:
    """The exit-code check: bit-exact with the host reference, or for LiteRT's optimized kernels within the bounds
    above."""
    if result["bit_exact_fraction"] == 1.0:
        return True
    if opts.runtime == "litert" and opts.litert_kernels == "optimized":
        return (result["max_abs_diff_codes"] <= OPTIMIZED_MAX_DIFF_CODES
                and result["top1_agreement"] >= OPTIMIZED_MIN_AGREEMENT)
    return False
