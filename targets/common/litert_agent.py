#!/usr/bin/env python3
"""The tsptq device program for boards that run stock LiteRT: the board side of the tsptq serial protocol
(docs/serial-protocol.md), with the model run by LiteRT's interpreter and libtsptq_delegate.so for the TSPTQ_* ops.

    python3 litert_agent.py --delegate ./libtsptq_delegate.so --port /dev/ttyAMA0 [--board rpi]
    python3 litert_agent.py --delegate ./libtsptq_delegate.so --stdio          (over an SSH session)
        [--kernels reference|optimized] [--threads N] [--model-capacity BYTES] [--arena-capacity BYTES]

`tsptq-deploy --runtime litert` copies or runs this file with wire.py (the protocol's framing, standard library only)
and the delegate library beside it. On the board it needs Python 3.9+, numpy and ai-edge-litert (or tflite-runtime
2.14): `pip install ai-edge-litert`. It answers as targets/common/device.c does (same commands, checks, statuses,
retry cache and BOOT frame), so the host side and its report are the same. What differs (docs/serial-protocol.md):
- UPLOAD_COMMIT writes the model to a file and builds a LiteRT interpreter with the delegate attached; a missing
  LiteRT, a file the delegate's loader refuses or an unsupported LiteRT version answer MODEL_REJECTED with the reason;
- `--kernels reference` (default) runs LiteRT's reference kernels (BUILTIN_REF): the outputs are byte-identical to the
  tsptq integer reference; `optimized` runs LiteRT's default kernels and XNNPACK, which requantize differently
  (docs/integer-semantics.md, "Inside stock LiteRT");
- PROFILE lists each TSPTQ_* op as the delegate timed it, then one LITERT_BUILTINS entry: the rest of the invocation
  (LiteRT's Python API has no per-op timer);
- the arena reported is the delegate's (the tsptq runtime's plan) plus the input/output/profile buffers; LiteRT's own
  tensor arena comes on top of it.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# wire.py lies beside this file in the folder copied to a board; in the source tree it is toolchain/tsptq/deploy/wire.py
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "toolchain", "tsptq", "deploy")]
sys.dont_write_bytecode = True  # no __pycache__ in the folder copied to boards
import wire  # noqa: E402

MAX_BODY = 1024
S = wire.STATUS_CODES


class Reply(Exception):
    """An error reply: a status code and its message."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = S[status], message


def _u16(v: int) -> bytes:
    return int(v).to_bytes(2, "little")


def _u32(v: int) -> bytes:
    return int(v).to_bytes(4, "little")


def _str8(s: str) -> bytes:
    b = s.encode()[:255]
    return bytes([len(b)]) + b


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


def _load_litert():
    """(interpreter module, its distribution's name and version); ImportError when none is installed."""
    from importlib.metadata import version

    try:
        from ai_edge_litert import interpreter as tfl

        return tfl, "ai-edge-litert", version("ai-edge-litert")
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tfl

        return tfl, "tflite-runtime", version("tflite-runtime")
    except ImportError:
        raise ImportError(f"neither ai-edge-litert nor tflite-runtime is installed for {sys.executable}") from None


class LiteRTDevice:
    """The protocol state of one board: upload buffer, the model's interpreter, input and output, the last reply."""

    def __init__(self, args):
        self.args = args
        self.delegate_lib = ctypes.CDLL(os.path.abspath(args.delegate))  # the same handle load_delegate gets
        self.delegate_lib.tsptq_delegate_profile.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64),
                                                             ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
        self.delegate_lib.tsptq_delegate_arena_bytes.argtypes = [ctypes.c_void_p]
        self.delegate_lib.tsptq_delegate_arena_bytes.restype = ctypes.c_size_t
        try:
            self.tfl, dist, ver = _load_litert()
            self.runtime = f"{dist} {ver} + tsptq delegate ({args.kernels} kernels)"
            self.version, self.import_error = f"{dist} {ver}", None  # the delegate refuses runtimes it is not pinned to
        except ImportError as e:
            self.tfl, self.runtime, self.version = None, "no LiteRT", ""
            self.import_error = f"{e}; install it on the board with `pip install ai-edge-litert`"
        self.reset()

    def reset(self) -> None:
        self.upload: bytearray | None = None
        self.upload_size = self.upload_crc = 0
        self.received = 0
        self.drop_model()
        self.last: tuple[int, int, int] | None = None
        self.last_reply = b""

    def drop_model(self) -> None:
        self.interpreter = self.delegate = None
        self.model_size = self.model_crc = 0
        self.output: bytes | None = None
        self.ticks = 0

    # ---- commands: each returns the reply data after status OK, or raises Reply ----------------------------------

    def hello(self, body: bytes) -> bytes:
        if body:
            raise Reply("BAD_REQUEST", "HELLO takes no body")
        return (_u16(wire.PROTOCOL_VERSION) + _u16(MAX_BODY) + _u32(1_000_000_000) + _u32(self.args.model_capacity)
                + _u32(self.args.arena_capacity) + _u32(self.model_size) + _u32(self.model_crc)
                + _str8(self.runtime) + _str8(self.args.board) + _str8("ns"))

    def upload_begin(self, body: bytes) -> bytes:
        if len(body) != 8:
            raise Reply("BAD_REQUEST", "UPLOAD_BEGIN takes size:u32 crc:u32")
        size, crc = int.from_bytes(body[:4], "little"), int.from_bytes(body[4:], "little")
        self.upload = None
        self.drop_model()
        if size == 0:
            raise Reply("BAD_REQUEST", "empty model")
        if size > self.args.model_capacity:
            raise Reply("TOO_BIG", f"model of {size} bytes does not fit model_capacity {self.args.model_capacity} bytes")
        self.upload, self.upload_size, self.upload_crc, self.received = bytearray(size), size, crc, 0
        return b""

    def upload_chunk(self, body: bytes) -> bytes:
        if len(body) < 4:
            raise Reply("BAD_REQUEST", "UPLOAD_CHUNK takes offset:u32 data")
        if self.upload is None:
            raise Reply("NO_UPLOAD", "no upload in progress (the board reset?): send UPLOAD_BEGIN")
        offset, data = int.from_bytes(body[:4], "little"), body[4:]
        if offset > self.received:
            raise Reply("OUT_OF_RANGE", f"chunk at offset {offset} leaves a gap: {self.received} bytes received")
        if len(data) > self.upload_size - offset:
            raise Reply("OUT_OF_RANGE", f"chunk ends past the announced size of {self.upload_size} bytes")
        self.upload[offset:offset + len(data)] = data
        self.received = max(self.received, offset + len(data))
        return _u32(self.received)

    def upload_commit(self, body: bytes) -> bytes:
        if body:
            raise Reply("BAD_REQUEST", "UPLOAD_COMMIT takes no body")
        if self.upload is None:
            raise Reply("NO_UPLOAD", "no upload in progress (the board reset?): send UPLOAD_BEGIN")
        if self.received != self.upload_size:
            raise Reply("OUT_OF_RANGE", f"only {self.received} of {self.upload_size} bytes received")
        model, self.upload = bytes(self.upload), None
        crc = wire.crc32(model)
        if crc != self.upload_crc:
            raise Reply("CRC_MISMATCH", f"the model's CRC-32 is 0x{crc:08x}, UPLOAD_BEGIN announced 0x{self.upload_crc:08x}")
        return self.commit(model, crc)

    def commit(self, model: bytes, crc: int) -> bytes:
        if self.tfl is None:
            raise Reply("MODEL_REJECTED", f"LiteRT is not available on this board ({self.import_error})")
        # The delegate reads the file when it is created and LiteRT maps it: it is removed as soon as both have it.
        path = None
        try:
            fd, path = tempfile.mkstemp(prefix="tsptq-litert-", suffix=".tflite")
            with os.fdopen(fd, "wb") as f:
                f.write(model)
            delegate = self.tfl.load_delegate(os.path.abspath(self.args.delegate),
                                              options={"model": path, "runtime_version": self.version})
            kw = {"num_threads": self.args.threads, "experimental_delegates": [delegate]}
            if self.args.kernels == "reference":
                kw["experimental_op_resolver_type"] = self.tfl.OpResolverType.BUILTIN_REF
            it = self.tfl.Interpreter(model_path=path, **kw)
            it.allocate_tensors()
            details = it.get_input_details(), it.get_output_details()
            if len(details[0]) != 1 or len(details[1]) != 1:
                raise ValueError(f"the model has {len(details[0])} inputs and {len(details[1])} outputs, not one each")
        except (ValueError, RuntimeError) as e:  # the delegate's and LiteRT's errors
            msg = str(e).strip()
            at = msg.find("tsptq delegate: ")  # past load_delegate's "Failed to load delegate from <path>"
            raise Reply("MODEL_REJECTED", msg[at if at >= 0 else 0:][:900]) from None
        except OSError as e:  # a full or read-only temp folder
            raise Reply("MODEL_REJECTED", f"cannot write the model for LiteRT: {e}") from None
        finally:
            if path is not None:
                os.unlink(path)
        inp, out = details[0][0], details[1][0]
        n_ops = self.delegate_lib.tsptq_delegate_profile(delegate._get_native_delegate_pointer(), None, None, 0)
        in_bytes = int(inp["dtype"](0).itemsize * _prod(inp["shape"]))
        out_bytes = int(out["dtype"](0).itemsize * _prod(out["shape"]))
        runtime_arena = self.delegate_lib.tsptq_delegate_arena_bytes(delegate._get_native_delegate_pointer())
        arena = _align16(_align16(_align16(runtime_arena) + in_bytes) + out_bytes) + 4 * n_ops
        if arena > self.args.arena_capacity:
            raise Reply("ARENA_TOO_SMALL", f"the model needs {arena} bytes of arena, arena_capacity is "
                                           f"{self.args.arena_capacity} bytes")
        self.interpreter, self.delegate, self.inp, self.out = it, delegate, inp, out
        self.input = bytearray(in_bytes)
        self.in_bytes, self.out_bytes, self.n_ops = in_bytes, out_bytes, n_ops
        self.model_size, self.model_crc = len(model), crc
        return _u32(arena) + _u32(n_ops) + _u32(in_bytes) + _u32(out_bytes)

    def _need_model(self) -> None:
        if self.interpreter is None:
            raise Reply("NO_MODEL", "no model: upload one first")

    def input_chunk(self, body: bytes) -> bytes:
        if len(body) < 4:
            raise Reply("BAD_REQUEST", "INPUT takes offset:u32 data")
        self._need_model()
        offset, data = int.from_bytes(body[:4], "little"), body[4:]
        if offset > self.in_bytes or len(data) > self.in_bytes - offset:
            raise Reply("OUT_OF_RANGE", f"input chunk ends past the model's {self.in_bytes} input bytes")
        self.input[offset:offset + len(data)] = data
        return b""

    def invoke(self, body: bytes) -> bytes:
        import numpy as np

        if len(body) != 4:
            raise Reply("BAD_REQUEST", "INVOKE takes input_crc:u32")
        self._need_model()
        crc, want = wire.crc32(bytes(self.input)), int.from_bytes(body, "little")
        if crc != want:
            raise Reply("INPUT_CRC", f"the input's CRC-32 is 0x{crc:08x}, INVOKE announced 0x{want:08x}")
        self.output = None
        x = np.frombuffer(bytes(self.input), dtype=self.inp["dtype"]).reshape(self.inp["shape"])
        try:
            self.interpreter.set_tensor(self.inp["index"], x)
            t0 = time.monotonic_ns()
            self.interpreter.invoke()
            t1 = time.monotonic_ns()
        except (ValueError, RuntimeError) as e:
            raise Reply("INVOKE_FAILED", str(e).strip()[:900]) from None
        self.output = self.interpreter.get_tensor(self.out["index"]).tobytes()
        self.ticks = t1 - t0
        head = (t1 - t0).to_bytes(8, "little") + _u32(len(self.output)) + _u32(wire.crc32(self.output))
        return head + self.output[:MAX_BODY - 1 - len(head)]

    def read_output(self, body: bytes) -> bytes:
        if len(body) != 6:
            raise Reply("BAD_REQUEST", "OUTPUT takes offset:u32 length:u16")
        self._need_model()
        if self.output is None:
            raise Reply("OUT_OF_RANGE", "no output: INVOKE first")
        offset, n = int.from_bytes(body[:4], "little"), int.from_bytes(body[4:], "little")
        if n > MAX_BODY - 1 or offset > len(self.output) or n > len(self.output) - offset:
            raise Reply("OUT_OF_RANGE", f"OUTPUT range outside the {len(self.output)} output bytes, or longer than "
                                        "max_body - 1")
        return self.output[offset:offset + n]

    def profile_entries(self) -> list[tuple[str, int]]:
        """The delegate's TSPTQ_* ops in run order, then the rest of the last invocation as LITERT_BUILTINS."""
        ns = (ctypes.c_uint64 * self.n_ops)()
        names = (ctypes.c_char_p * self.n_ops)()
        self.delegate_lib.tsptq_delegate_profile(self.delegate._get_native_delegate_pointer(), ns, names, self.n_ops)
        ops = [(names[k].decode(), int(ns[k])) for k in range(self.n_ops) if names[k].startswith(b"TSPTQ_")]
        total = self.ticks if self.output is not None else 0
        return ops + [("LITERT_BUILTINS", max(0, total - sum(t for _, t in ops)))]

    def profile(self, body: bytes) -> bytes:
        if len(body) != 4:
            raise Reply("BAD_REQUEST", "PROFILE takes first:u16 count:u16")
        self._need_model()
        entries = self.profile_entries()
        first, count = int.from_bytes(body[:2], "little"), int.from_bytes(body[2:], "little")
        if first > len(entries):
            raise Reply("OUT_OF_RANGE", "PROFILE: first is past the last op")
        out = bytearray(_u16(len(entries)))
        for name, ticks in entries[first:first + count]:
            item = _u32(ticks & 0xFFFFFFFF) + _str8(name)
            if 1 + len(out) + len(item) > MAX_BODY:
                break  # the host pages on
            out += item
        return bytes(out)

    # ---- frames ----------------------------------------------------------------------------------------------------

    def handle(self, seq: int, cmd: int, body: bytes, crc: int) -> tuple[bytes, bool]:
        """The reply frame for one request (the remembered one for a retry), and whether to soft-reset after it."""
        if self.last == (seq, cmd, crc):
            return self.last_reply, False
        handlers = {"HELLO": self.hello, "UPLOAD_BEGIN": self.upload_begin, "UPLOAD_CHUNK": self.upload_chunk,
                    "UPLOAD_COMMIT": self.upload_commit, "INPUT": self.input_chunk, "INVOKE": self.invoke,
                    "OUTPUT": self.read_output, "PROFILE": self.profile}
        name = wire.CMD_NAMES.get(cmd)
        reset = False
        try:
            if name == "RESET":
                if body:
                    raise Reply("BAD_REQUEST", "RESET takes no body")
                data, reset = b"", True
            elif name in handlers:
                data = handlers[name](body)
            else:
                raise Reply("BAD_REQUEST", "unknown command")
            reply = bytes([S["OK"]]) + data
        except Reply as e:
            reply = bytes([e.status]) + e.message.encode()[:MAX_BODY - 1]
        except Exception as e:  # noqa: BLE001 - a device answers, it does not die (device.c cannot fail this way)
            status = {"INVOKE": "INVOKE_FAILED", "UPLOAD_COMMIT": "MODEL_REJECTED"}.get(name, "BAD_REQUEST")
            reply = bytes([S[status]]) + f"{name}: {type(e).__name__}: {e}".encode()[:MAX_BODY - 1]
        frame = wire.encode_frame(seq, cmd | 0x80, reply)
        self.last, self.last_reply = (seq, cmd, crc), frame
        return frame, reset


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def boot_frame() -> bytes:
    return b"\0" + wire.encode_frame(0, wire.BOOT, _u16(wire.PROTOCOL_VERSION))


def open_port(path: str, baud: int) -> tuple[int, int]:
    """A serial port in raw mode, 8N1, at `baud` (termios: standard library, no pyserial needed on the board)."""
    import termios
    import tty

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd, termios.TCSANOW)  # TCSANOW: keep what the host already sent
    attrs = termios.tcgetattr(fd)
    speed = getattr(termios, f"B{baud}", None)
    if speed is None:
        sys.exit(f"litert_agent: unsupported --baud {baud}")
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd, fd


def serve(dev: LiteRTDevice, fd_in: int, fd_out: int) -> None:
    """Read bytes, cut frames at 0x00, answer each well-formed request; garbage and damaged frames are dropped."""
    max_wire = wire.MAX_PACKET + wire.MAX_PACKET // 254 + 2

    def send(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd_out, view):]  # OSError (the host hung up) ends serve() below

    send(boot_frame())
    pending = bytearray()
    while True:
        try:
            data = os.read(fd_in, 65536)
        except OSError:  # EIO: the other end of a pseudo-terminal went away
            return
        if not data:
            return  # the host closed the line (SSH session ended)
        pending += data
        while True:
            end = pending.find(b"\0")
            if end < 0:
                if len(pending) > max_wire:  # too long to be a frame: drop it up to its end
                    pending.clear()
                break
            raw, pending = bytes(pending[:end]), pending[end + 1:]
            if not raw or len(raw) > max_wire:
                continue
            try:
                seq, cmd, body = wire.decode_frame(raw)
            except wire.FrameError:
                continue
            if cmd & 0x80:
                continue  # a reply or a BOOT (an echoing line): not for us
            frame, reset = dev.handle(seq, cmd, body, wire.crc32(bytes([seq, cmd]) + body))
            send(frame)
            if reset:
                dev.reset()
                send(boot_frame())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port to serve (raw mode), e.g. /dev/ttyAMA0")
    where.add_argument("--stdio", action="store_true", help="serve on stdin/stdout (an SSH session)")
    ap.add_argument("--delegate", required=True, help="path of libtsptq_delegate.so built for this board")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--board", default="host")
    ap.add_argument("--kernels", choices=("reference", "optimized"), default="reference",
                    help="LiteRT's builtin kernels: reference (BUILTIN_REF, bit-exact with tsptq) or optimized "
                         "(the default resolver with XNNPACK)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model-capacity", type=int, default=64 << 20)
    ap.add_argument("--arena-capacity", type=int, default=48 << 20)
    args = ap.parse_args(argv)
    import termios

    if args.baud <= 0 or getattr(termios, f"B{args.baud}", None) is None:  # refused, not silently ignored
        ap.error(f"unsupported --baud {args.baud}")
    for name in ("model_capacity", "arena_capacity"):
        if not 0 < getattr(args, name) < 1 << 32:
            ap.error(f"--{name.replace('_', '-')} must be between 1 and 4294967295 bytes (HELLO sends it as u32)")
    if not os.path.isfile(args.delegate):
        sys.exit(f"litert_agent: --delegate {args.delegate}: no such file")
    # the port first: what the host sends while LiteRT is imported (seconds under emulation) waits in its buffer
    fd_in, fd_out = open_port(args.port, args.baud) if args.port else (sys.stdin.fileno(), sys.stdout.fileno())
    try:
        dev = LiteRTDevice(args)
    except (OSError, AttributeError) as e:  # not a library for this machine, or not the tsptq delegate
        sys.exit(f"litert_agent: cannot use --delegate {args.delegate}: {e}")
    print(f"litert_agent: serving on {args.port or 'stdio'} ({dev.runtime}); model_capacity "
          f"{args.model_capacity} B, arena_capacity {args.arena_capacity} B", file=sys.stderr, flush=True)
    try:
        serve(dev, fd_in, fd_out)
    except (KeyboardInterrupt, BrokenPipeError, ConnectionError):
        pass  # stopped, or the host hung up (SSH session closed mid-reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
