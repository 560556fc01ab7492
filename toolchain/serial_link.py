"""The host side of the tsptq serial protocol (docs/serial-protocol.md): COBS framing, CRC-32, and ``Link``, a
request/reply channel over any pyserial port with timeouts, bounded retries and resynchronization after garbage.

    link = Link.open("/dev/ttyUSB0")          # or socket://host:port, rfc2217://..., a pty
    data = link.request(CMD["HELLO"])         # the reply data after status OK

``Link`` never blocks forever: every read has a short timeout, every request an overall deadline of
``(retries + 1) * timeout``. The commands themselves are in ``tsptq.board``.
"""
from __future__ import annotations

import time

from tsptq.errors import TsptqError
# the wire format, re-exported: tsptq.serial_link is the host side's one import
from tsptq.wire import (BOOT, CMD, CMD_NAMES, MAX_PACKET, PROTOCOL_VERSION, STATUS, STATUS_CODES,  # noqa: F401
                        BadCRC, FrameError, cobs_decode, cobs_encode, crc32, decode_frame, encode_frame)

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

