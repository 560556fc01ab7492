"""The host side of the tsptq serial protocol (docs/serial-protocol.md): COBS framing, CRC-32, and ``Link``, a
request/reply channel over any pyserial port with timeouts, bounded retries and resynchronization after garbage.

    link = Link.open("/dev/ttyUSB0")          # or socket://host:port, rfc2217://..., a pty
    data = link.request(CMD["HELLO"])         # the reply data after status OK

``Link`` never blocks forever: every read has a short timeout, every request an overall deadline of
``(retries + 1) * timeout``. The commands themselves are in ``tsptq.board``.
"""
from __future__ import annotations

import time
import zlib

from tsptq.errors import TsptqError

PROTOCOL_VERSION = 1
CMD = {"HELLO": 0x01, "RESET": 0x02, "UPLOAD_BEGIN": 0x10, "UPLOAD_CHUNK": 0x11, "UPLOAD_COMMIT": 0x12,
       "INPUT": 0x20, "INVOKE": 0x21, "OUTPUT": 0x22, "PROFILE": 0x30}
CMD_NAMES = {v: k for k, v in CMD.items()}
BOOT = 0xFE  # the device's unsolicited frame, seq 0
STATUS = {0: "OK", 1: "BAD_REQUEST", 2: "TOO_BIG", 3: "NO_UPLOAD", 4: "OUT_OF_RANGE", 5: "CRC_MISMATCH",
          6: "MODEL_REJECTED", 7: "NO_MODEL", 8: "ARENA_TOO_SMALL", 9: "INVOKE_FAILED", 10: "INPUT_CRC"}
STATUS_CODES = {v: k for k, v in STATUS.items()}
MAX_PACKET = 1024 + 6  # the largest max_body any shipped device reports, plus seq, cmd and crc
POLL_S = 0.05          # the port's read timeout: how often a waiting request checks its deadline


class LinkError(TsptqError):
    """The link failed: no reply after every retry, the port vanished or could not be opened (names the port)."""


class NoReply(LinkError):
    """Every try of a request timed out (the request may or may not have run on the device)."""


class BoardReset(LinkError):
    """A BOOT frame arrived while waiting for a reply: the board restarted (an upload must start over)."""


class DeviceError(TsptqError):
    """The device answered with an error status; ``status`` (code), ``status_name`` and ``message`` (its text)."""

    def __init__(self, status: int, message: str, command: str = "", port: str = ""):
        self.status = status
        self.status_name = STATUS.get(status, f"STATUS_{status}")
        self.message = message
        self.command = command
        self.port = port
        super().__init__(f"{port}: {command} failed with {self.status_name}: {message}")


class FrameError(ValueError):
    """A frame that does not decode (bad COBS, too short or too long)."""


class BadCRC(FrameError):
    """A frame whose CRC-32 does not match its content."""


# ---- encoding ---------------------------------------------------------------------------------------------------

def crc32(data: bytes, crc: int = 0) -> int:
    """CRC-32 (IEEE 802.3, zlib's); chains as crc32(more, crc32(first))."""
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no zero byte in the result; the 0x00 delimiter is not added)."""
    out = bytearray()
    segments = bytes(data).split(b"\0")
    for i, seg in enumerate(segments):
        full = 0
        while len(seg) - full >= 254:  # a full block (code 0xFF) implies no zero after it
            out += b"\xff" + seg[full:full + 254]
            full += 254
        rest = seg[full:]
        if rest or i < len(segments) - 1 or full == 0:  # a segment that ends exactly on a full block needs no more
            out += bytes([len(rest) + 1]) + rest
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block sequence (without its delimiter); ValueError (FrameError) if it is not valid COBS."""
    data = bytes(data)
    if not data:
        raise FrameError("empty COBS frame")
    if 0 in data:
        raise FrameError("zero byte inside a COBS frame")
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        end = i + code
        if end > len(data):
            raise FrameError(f"COBS block at {i} runs past the end ({code - 1} bytes announced, {len(data) - i - 1} left)")
        out += data[i + 1:end]
        i = end
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def encode_frame(seq: int, cmd: int, body: bytes = b"") -> bytes:
    """The wire bytes of one frame: COBS(seq cmd body crc32) 0x00."""
    packet = bytes([seq, cmd]) + bytes(body)
    return cobs_encode(packet + crc32(packet).to_bytes(4, "little")) + b"\0"


def decode_frame(frame: bytes, max_packet: int = MAX_PACKET) -> tuple[int, int, bytes]:
    """(seq, cmd, body) of a frame's wire bytes (with or without the trailing 0x00); FrameError/BadCRC otherwise."""
    frame = bytes(frame)
    if frame.endswith(b"\0"):
        frame = frame[:-1]
    packet = cobs_decode(frame)
    if len(packet) < 6:
        raise FrameError(f"frame of {len(packet)} bytes is shorter than 6")
    if len(packet) > max_packet:
        raise FrameError(f"frame of {len(packet)} bytes is longer than {max_packet}")
    if crc32(packet[:-4]) != int.from_bytes(packet[-4:], "little"):
        raise BadCRC("frame CRC mismatch")
    return packet[0], packet[1], packet[2:-4]


# ---- the link ---------------------------------------------------------------------------------------------------

class Link:
    """Requests and replies over a pyserial-like port (``read``, ``write``, ``in_waiting``, ``reset_input_buffer``,
    ``timeout``). ``counters`` counts what was sent and what was dropped on the way."""

    DEFAULT_TIMEOUT = 2.0
    DEFAULT_RETRIES = 5

    def __init__(self, ser, port_name: str, timeout: float | None = DEFAULT_TIMEOUT,
                 retries: int | None = DEFAULT_RETRIES):
        self.ser = ser
        self.port = port_name
        self.timeout = self.DEFAULT_TIMEOUT if timeout is None else float(timeout)  # None: the default
        self.retries = self.DEFAULT_RETRIES if retries is None else int(retries)
        self.counters = dict(sent=0, resent=0, dropped_frames=0, bad_crc=0, stray_bytes=0, boots=0)
        self.boot_version: int | None = None  # protocol version of the last BOOT seen
        self._seq = 0
        self._rx = bytearray()  # received bytes not yet ended by a delimiter
        # every read must return within POLL_S so that deadlines hold (pyserial's default timeout blocks forever)
        if getattr(ser, "timeout", None) is None or ser.timeout > POLL_S:
            ser.timeout = POLL_S

    @classmethod
    def open(cls, url: str, baudrate: int = 115200, timeout: float | None = DEFAULT_TIMEOUT,
             retries: int | None = DEFAULT_RETRIES, **serial_kw) -> "Link":
        """Open any pyserial URL (a device path, ``socket://host:port``, ``rfc2217://...``)."""
        import serial

        write_timeout = cls.DEFAULT_TIMEOUT if timeout is None else timeout
        try:
            ser = serial.serial_for_url(url, baudrate=baudrate, timeout=POLL_S, write_timeout=write_timeout,
                                        **serial_kw)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open {url}: {e}") from e
        return cls(ser, url, timeout, retries)

    def close(self) -> None:
        try:
            self.ser.close()
        except OSError:
            pass

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def counters_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.counters.items())

    # -- bytes ------------------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.ser.write(data)
        except OSError as e:  # pyserial's SerialException and SerialTimeoutException are OSErrors
            raise LinkError(f"cannot write to {self.port}: {e}") from e

    def _read_some(self) -> bytes:
        try:
            return self.ser.read(max(1, self.ser.in_waiting))
        except OSError as e:
            raise LinkError(f"cannot read from {self.port} (did the board or its link go away?): {e}") from e

    def _next_frame(self, deadline: float) -> tuple[int, int, bytes] | None:
        """The next well-formed frame received, or None at the deadline; bad frames are counted and dropped."""
        while True:
            end = self._rx.find(b"\0")
            if end >= 0:
                chunk = bytes(self._rx[:end])
                del self._rx[:end + 1]
                if not chunk:
                    continue  # an empty frame: back-to-back delimiters
                try:
                    return decode_frame(chunk)
                except BadCRC:
                    self.counters["bad_crc"] += 1
                except FrameError:
                    self.counters["stray_bytes"] += len(chunk)
                continue
            if time.monotonic() >= deadline:
                return None
            if len(self._rx) > 2 * MAX_PACKET:  # a long run without a delimiter: garbage, keep only its tail
                self.counters["stray_bytes"] += len(self._rx) - MAX_PACKET
                del self._rx[:-MAX_PACKET]
            self._rx += self._read_some()

    def _saw_boot(self, body: bytes) -> None:
        self.counters["boots"] += 1
        self.boot_version = int.from_bytes(body[:2], "little") if len(body) >= 2 else None

    # -- requests ---------------------------------------------------------------------------------------------

    def request(self, cmd: int, body: bytes = b"", timeout: float | None = None, retries: int | None = None) -> bytes:
        """Send one request and return its reply data (after status OK). Resends the same frame (same seq) on a
        timeout; raises DeviceError on an error status, BoardReset on a BOOT, NoReply (a LinkError) when the retries
        run out, LinkError when the port fails."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        name = CMD_NAMES.get(cmd, f"command 0x{cmd:02x}")
        self._seq = self._seq % 255 + 1
        seq = self._seq
        # the leading 0x00 ends whatever partial garbage the device holds, so this frame is not glued to it
        frame = b"\0" + encode_frame(seq, cmd, body)
        for attempt in range(retries + 1):
            self._write(frame)
            self.counters["resent" if attempt else "sent"] += 1
            deadline = time.monotonic() + timeout
            while (got := self._next_frame(deadline)) is not None:
                rseq, rcmd, rbody = got
                if rseq == 0 and rcmd == BOOT:
                    self._saw_boot(rbody)
                    raise BoardReset(f"{self.port}: the board restarted (BOOT frame) while {name} waited for its reply")
                if rseq != seq or rcmd != cmd | 0x80 or not rbody:
                    self.counters["dropped_frames"] += 1  # a late or duplicated reply to an earlier request
                    continue
                if rbody[0] != 0:
                    raise DeviceError(rbody[0], rbody[1:].decode("utf-8", "replace"), name, self.port)
                return rbody[1:]
        raise NoReply(f"no reply from {self.port} to {name} after {retries + 1} tries (timeout {timeout:g} s each); "
                        f"link counters: {self.counters_text()}. Is the board running the tsptq device program, "
                        f"at this baud rate?")

    def wait_boot(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a BOOT frame; True if one arrived (other frames are dropped)."""
        deadline = time.monotonic() + timeout
        while (got := self._next_frame(deadline)) is not None:
            if got[0] == 0 and got[1] == BOOT:
                self._saw_boot(got[2])
                return True
            self.counters["dropped_frames"] += 1
        return False

