"""A board running the tsptq device program, driven over a ``Link`` (docs/serial-protocol.md): HELLO, model upload,
inference, per-op profile, reset.

    board = Board(Link.open("/dev/ttyUSB0"))
    board.upload(tflite_bytes)                   # skipped when the board already holds this model
    result = board.infer(input_codes)            # InferResult(output=bytes, ticks=int), CRC-checked end to end
    board.profile()                              # [("TSPTQ_FC_2S", ticks), ...] of the last inference
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Callable

from tsptq.errors import TsptqError
from tsptq.deploy.serial_link import (CMD, PROTOCOL_VERSION, STATUS_CODES, BoardReset, DeviceError, Link, LinkError,
                               NoReply, ProtocolError, crc32)

UPLOAD_RESTARTS = 3  # uploads started over after a board reset before giving up
OUTPUT_READS = 3     # reads of an output whose CRC does not match before giving up
MIN_PIECE = 64       # the smallest data piece per request on a noisy line
GROW_AFTER = 8       # clean requests in a row before the piece size doubles again
MIN_MAX_BODY = 32    # the smallest max_body a board may report (docs/serial-protocol.md)
PROFILE_ENTRY = 24   # bytes of a PROFILE entry assumed before one arrived (ticks, name length, an 18-character name)


@dataclass(frozen=True)
class BoardInfo:
    """Every field of the HELLO reply."""
    protocol_version: int
    max_body: int
    tick_hz: int          # rate of the tick counter; 0 when tick_unit is not a time base
    model_capacity: int
    arena_capacity: int
    model_size: int       # the model held now (0: none)
    model_crc: int
    runtime_version: str
    board: str
    tick_unit: str        # "ns", "cycles" or "systick"


@dataclass(frozen=True)
class CommitInfo:
    """What UPLOAD_COMMIT reported; the sizes are None when the upload was skipped (the board held the model)."""
    arena_size: int | None    # arena bytes in use: the runtime's plan + input + output + per-op ticks
    n_ops: int | None
    input_bytes: int | None
    output_bytes: int | None
    skipped: bool = False
    restarts: int = 0         # times the upload started over after the board reset


@dataclass(frozen=True)
class InferResult:
    output: bytes  # the int8 output codes
    ticks: int     # the whole invocation, in the board's tick_unit


class ModelTooBigError(DeviceError):
    """The model does not fit the board's model capacity (found from HELLO before sending, or TOO_BIG)."""

    def __init__(self, model_size: int, capacity: int, port: str, board: str = ""):
        self.model_size = model_size
        self.capacity = capacity
        where = f"board {board!r}" if board else "the board"
        super().__init__(STATUS_CODES["TOO_BIG"], f"the model ({model_size:,} bytes) does not fit {where}'s "
                         f"model capacity ({capacity:,} bytes)", "UPLOAD_BEGIN", port)


def _str8(data: bytes, pos: int) -> tuple[str, int]:
    n = data[pos]
    if pos + 1 + n > len(data):
        raise ValueError("string runs past the end")
    return data[pos + 1:pos + 1 + n].decode("utf-8", "replace"), pos + 1 + n


def _need(data: bytes, n: int, what: str, port: str) -> None:
    """A reply that passed its CRC check must still be as long as the protocol says."""
    if len(data) < n:
        raise ProtocolError(f"{port}: malformed {what} reply: {len(data)} data bytes, the protocol says at least {n} "
                            f"(is the board running this version of the tsptq device program?)")


def parse_hello(data: bytes) -> BoardInfo:
    fixed = struct.unpack_from("<HHIIIII", data)
    pos = struct.calcsize("<HHIIIII")
    texts = []
    for _ in range(3):
        text, pos = _str8(data, pos)
        texts.append(text)
    return BoardInfo(*fixed, *texts)


class Board:
    """The protocol's commands. ``invoke_timeout`` bounds each try of UPLOAD_COMMIT and of the first INVOKE (the slow
    ones); later INVOKEs wait the link's timeout plus twice the longest INVOKE seen so far, so that a lost frame on a
    noisy line costs about a link timeout, not the worst case.

    Data (INPUT, UPLOAD_CHUNK, OUTPUT, and PROFILE's replies) goes in pieces of up to ``max_body - 4`` bytes. A
    piece that needed a resend halves the size, down to MIN_PIECE (an unanswered one is sent again, smaller, at
    once); GROW_AFTER clean ones double it again. A 1 KiB frame rarely crosses a line that damages one byte in 300,
    a 64-byte one mostly does. Each piece, whatever sizes it went in, gets what one request gets from the link: at
    least ``retries + 1`` tries, resent as soon as the reply is overdue, for up to ``(retries + 1) * timeout``
    seconds. Replies are checked against the protocol (ProtocolError, a LinkError, when one is malformed)."""

    def __init__(self, link: Link, invoke_timeout: float = 30.0):
        self.link = link
        self.invoke_timeout = invoke_timeout
        self.info: BoardInfo | None = None
        self.commit: CommitInfo | None = None
        self._invoke_s: float | None = None  # longest INVOKE answered without a resend (wall time)
        self._piece: int | None = None        # data bytes per INPUT/UPLOAD_CHUNK/OUTPUT request now
        self._clean = 0

    @property
    def port(self) -> str:
        return self.link.port

    def _request(self, name: str, body: bytes = b"", timeout: float | None = None) -> bytes:
        return self.link.request(CMD[name], body, timeout=timeout)

    def hello(self) -> BoardInfo:
        try:
            data = self._request("HELLO")
        except BoardReset:  # a board that just booted: nothing was lost yet
            data = self._request("HELLO")
        try:
            info = parse_hello(data)
        except (struct.error, ValueError, IndexError) as e:
            raise ProtocolError(f"{self.port}: malformed HELLO reply ({len(data)} bytes): {e}") from e
        if info.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(f"{self.port}: the board speaks protocol version {info.protocol_version}, "
                                f"this host speaks {PROTOCOL_VERSION}")
        if info.max_body < MIN_MAX_BODY:
            raise ProtocolError(f"{self.port}: the board reports max_body {info.max_body}: a request or reply body "
                                f"must hold at least {MIN_MAX_BODY} bytes (docs/serial-protocol.md)")
        if self.info is None or self.info.max_body != info.max_body:
            self._piece = None  # another board, or the same one with another limit: start from its largest piece
        self.info = info
        return info

    def _info(self) -> BoardInfo:
        return self.info or self.hello()

    def upload(self, model: bytes, progress: bool | Callable[[int, int], None] | None = None) -> CommitInfo:
        """Send ``model`` (.tflite bytes) and commit it. Skipped (``skipped=True``) when HELLO shows the board holds
        the same size and CRC; restarted from zero when the board resets on the way (up to UPLOAD_RESTARTS times).
        ``progress``: True for a progress bar on stderr, or ``progress(bytes_sent, total)`` called after every chunk."""
        if progress is True:
            from tqdm import tqdm

            with tqdm(total=len(model), unit="B", unit_scale=True, desc="upload", leave=False) as bar:
                def advance(done: int, total: int) -> None:
                    bar.update(done - bar.n)  # relative to where it is: a restarted upload goes back to zero

                return self.upload(model, advance)
        model = bytes(model)
        size, crc = len(model), crc32(model)
        info = self.hello()
        if info.model_size == size and info.model_crc == crc:
            self.commit = CommitInfo(None, None, None, None, skipped=True)
            return self.commit
        if size > info.model_capacity:
            raise ModelTooBigError(size, info.model_capacity, self.port, info.board)
        restarts = 0
        while True:
            try:
                self._request("UPLOAD_BEGIN", struct.pack("<II", size, crc))
                self._send_pieces("UPLOAD_CHUNK", model, progress)
                reply = self._request("UPLOAD_COMMIT", timeout=max(self.link.timeout, self.invoke_timeout))
                _need(reply, 16, "UPLOAD_COMMIT", self.port)
                self.commit = CommitInfo(*struct.unpack("<IIII", reply[:16]), restarts=restarts)
                return self.commit
            except DeviceError as e:
                if e.status == STATUS_CODES["TOO_BIG"]:
                    raise ModelTooBigError(size, info.model_capacity, self.port, info.board) from e
                if e.status != STATUS_CODES["NO_UPLOAD"]:
                    raise
                reason = e
            except BoardReset as e:
                reason = e
            restarts += 1
            if restarts > UPLOAD_RESTARTS:
                raise LinkError(f"{self.port}: the upload started over {UPLOAD_RESTARTS} times and the board "
                                f"reset again (is it rebooting in a loop?): {reason}")

    def infer(self, input_codes: bytes) -> InferResult:
        """Run one input (the int8 NHWC codes, e.g. ``x.tobytes()``) and return its output and tick count."""
        x = bytes(input_codes)
        if self.commit and self.commit.input_bytes is not None and len(x) != self.commit.input_bytes:
            raise TsptqError(f"the model takes {self.commit.input_bytes} input bytes, got {len(x)}")
        crc = crc32(x)
        for attempt in range(2):
            self._send_pieces("INPUT", x)
            try:
                reply = self._invoke(crc)
                break
            except DeviceError as e:  # INPUT_CRC: an input chunk went missing; write them all again, once
                if e.status != STATUS_CODES["INPUT_CRC"] or attempt:
                    raise
        _need(reply, 16, "INVOKE", self.port)
        ticks, n, out_crc = struct.unpack_from("<QII", reply)
        if self.commit and self.commit.output_bytes is not None and n != self.commit.output_bytes:
            raise ProtocolError(f"{self.port}: INVOKE reports {n} output bytes, UPLOAD_COMMIT said "
                                f"{self.commit.output_bytes}")
        output = reply[16:16 + n]
        for _ in range(OUTPUT_READS):
            output = self._read_output(output, n)
            if crc32(output) == out_crc:
                return InferResult(output, ticks)
            output = b""  # never return corrupted bytes: read it all again
        raise LinkError(f"{self.port}: the output's CRC-32 did not match in {OUTPUT_READS} reads")

    def _invoke(self, input_crc: int) -> bytes:
        if self._invoke_s is None:
            timeout = max(self.link.timeout, self.invoke_timeout)
        else:
            timeout = min(self.link.timeout + 2 * self._invoke_s, max(self.link.timeout, self.invoke_timeout))
        resent, t = self.link.counters["resent"], time.monotonic()
        reply = self._request("INVOKE", struct.pack("<I", input_crc), timeout=timeout)
        if self.link.counters["resent"] == resent:
            self._invoke_s = max(self._invoke_s or 0.0, time.monotonic() - t)
        return reply

    def _read_output(self, have: bytes, n: int) -> bytes:
        while len(have) < n:
            at = len(have)

            def want(piece: int, at: int = at) -> int:  # OUTPUT's reply is all data: max_body - 1 = piece + 3
                return min(piece + 3, n - at)

            data, piece = self._data_request("OUTPUT", lambda piece: struct.pack("<IH", at, want(piece)),
                                             reply_bytes=lambda piece: want(piece))
            if not data or len(data) > want(piece):
                raise ProtocolError(f"{self.port}: OUTPUT at offset {at} of {n} asked for {want(piece)} bytes and "
                                    f"got {len(data)}")
            have += data
        return have

    # -- piece size: adapts to the line ----------------------------------------------------------------------

    def _largest_piece(self) -> int:
        return self._info().max_body - 4  # >= MIN_MAX_BODY - 4 (hello() checks)

    def _piece_size(self) -> int:
        if self._piece is None:
            self._piece = self._largest_piece()
        return self._piece

    def _shrink(self, piece: int) -> None:
        self._piece, self._clean = min(self._largest_piece(), max(MIN_PIECE, piece // 2)), 0

    def _data_request(self, name: str, body_for: Callable[[int], bytes],
                      reply_bytes: Callable[[int], int] | None = None) -> tuple[bytes, int]:
        """One data request whose body ``body_for(piece_size)`` builds (and whose reply is about ``reply_bytes(piece)``
        long); adapts the piece size to the line. Returns the reply data and the piece size that went through.

        An unanswered piece larger than MIN_PIECE goes again at once, halved (a new request); from MIN_PIECE on,
        the link resends it until its deadline. Tries and deadline run on across the smaller pieces: the whole
        piece gets what one request gets, ``retries + 1`` tries and ``(retries + 1) * timeout`` seconds."""
        since, tried = None, 0
        while True:
            piece = self._piece_size()
            single = piece > min(MIN_PIECE, self._largest_piece())
            try:
                reply = self.link.request(CMD[name], body_for(piece), since=since, tried=tried,
                                          max_tries=1 if single else None,
                                          reply_bytes=reply_bytes(piece) + 8 if reply_bytes else 16)
            except NoReply as e:
                if not single:
                    raise NoReply(f"{e} (pieces down to {piece} bytes)", e.tries, e.since) from None
                since, tried = e.since, e.tries
                self._shrink(piece)
                continue
            if tried or self.link.last_tries > 1:
                self._shrink(piece)
            else:
                self._clean += 1
                if self._clean >= GROW_AFTER:
                    self._piece, self._clean = min(self._largest_piece(), piece * 2), 0
            return reply, piece

    def _send_pieces(self, name: str, data: bytes, progress: Callable[[int, int], None] | None = None) -> None:
        """``data`` with INPUT or UPLOAD_CHUNK requests (offset:u32 then the piece)."""
        offset = 0
        while offset < len(data):
            reply, piece = self._data_request(name, lambda n, at=offset: struct.pack("<I", at) + data[at:at + n])
            offset = min(offset + piece, len(data))
            if name == "UPLOAD_CHUNK":
                _need(reply, 4, name, self.port)
                held, = struct.unpack_from("<I", reply)
                if held < offset:
                    raise LinkError(f"{self.port}: the board holds {held} bytes after a chunk ending at {offset}")
            if progress:
                progress(offset, len(data))

    def profile(self) -> list[tuple[str, int]]:
        """(op name, ticks) per op of the last inference, in run order. Asks for as many ops as fit the piece size
        of the line (a long reply rarely crosses a noisy one), judged by the longest entry seen so far."""
        rows: list[tuple[str, int]] = []
        n_ops = None
        entry = PROFILE_ENTRY
        while n_ops is None or len(rows) < n_ops:
            first = len(rows)
            data, _ = self._data_request("PROFILE", lambda piece: struct.pack("<HH", first, max(1, piece // entry)),
                                         reply_bytes=lambda piece: max(1, piece // entry) * entry + 2)
            try:
                _need(data, 2, "PROFILE", self.port)
                n_ops, = struct.unpack_from("<H", data)
                pos = 2
                while pos < len(data):
                    ticks, = struct.unpack_from("<I", data, pos)
                    name, end = _str8(data, pos + 4)
                    entry, pos = max(entry, end - pos), end
                    rows.append((name, ticks))
            except (struct.error, ValueError, IndexError) as e:
                raise ProtocolError(f"{self.port}: malformed PROFILE reply at op {first}: {e}") from None
            if len(rows) == first and len(rows) < n_ops:
                raise ProtocolError(f"{self.port}: PROFILE returned no op at {len(rows)} of {n_ops}")
            if len(rows) > n_ops:
                raise ProtocolError(f"{self.port}: PROFILE returned {len(rows)} ops of {n_ops}")
        return rows

    def reset(self, boot_timeout: float = 5.0) -> bool:
        """Reset the board; True when its BOOT frame was seen. The board forgets a model it held in RAM."""
        self.info = self.commit = None
        try:
            self._request("RESET")
        except BoardReset:  # the reply was lost but the board did reset
            return True
        return self.link.wait_boot(boot_timeout)
