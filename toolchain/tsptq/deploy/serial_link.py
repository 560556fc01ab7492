"""The host side of the tsptq serial protocol (docs/serial-protocol.md): COBS framing, CRC-32, and ``Link``, a
request/reply channel over any pyserial port with timeouts, bounded retries and resynchronization after garbage.

    link = Link.open("/dev/ttyUSB0")          # or socket://host:port, rfc2217://..., a pty
    data = link.request(CMD["HELLO"])         # the reply data after status OK

``Link`` never blocks forever: every read has a short timeout, every request an overall deadline of
``(retries + 1) * timeout`` (and at least ``retries + 1`` tries). Within it a lost frame is resent as soon as the
reply is overdue: after about the reply time measured so far (at least MIN_RTO; INITIAL_RTO before anything was
measured), later and later once the board has been silent for a while, at most ``timeout``. So a noisy line costs
tens of milliseconds per lost frame, however many in a row, a stall gets the whole deadline, and a dead board is
reported after it, or at once when ``check`` (e.g. "has the agent started here exited?") says so. The commands
themselves are in ``tsptq.deploy.board``.
"""
from __future__ import annotations

import contextlib
import socket
import time
from typing import Callable

from tsptq.errors import TsptqError
# the wire format, re-exported: tsptq.deploy.serial_link is the host side's one import
from tsptq.deploy.wire import (BOOT, CMD, CMD_NAMES, MAX_PACKET, PROTOCOL_VERSION, STATUS, STATUS_CODES,  # noqa: F401
                        BadCRC, FrameError, cobs_decode, cobs_encode, crc32, decode_frame, encode_frame)

POLL_S = 0.02          # the port's read timeout: how often a waiting request checks its deadline
MIN_RTO = 0.05         # the shortest wait for a reply before a resend (s)
INITIAL_RTO = 0.25     # the wait before a resend while no reply time was measured for the command yet (s)
SILENCE_S = 1.0        # after this long without a byte from the board the resends thin out (s)
CHECK_S = 0.1          # how often a waiting request asks ``check`` whether the board is still there
SLOW_COMMANDS = frozenset((CMD["INVOKE"], CMD["UPLOAD_COMMIT"]))  # run the model or the loader: no common pace


class LinkError(TsptqError):
    """The link failed: no reply after every retry, the port vanished or could not be opened (names the port)."""


class NoReply(LinkError):
    """Every try of a request timed out (the request may or may not have run on the device). ``tries``: how many
    there were; ``since``: when the first went out (time.monotonic())."""

    def __init__(self, message: str, tries: int = 0, since: float = 0.0):
        super().__init__(message)
        self.tries, self.since = tries, since


class ProtocolError(LinkError):
    """A reply that passed its CRC check but is not what the protocol says (too short, a length that does not match):
    the device program is not speaking this protocol version, or is broken. Not retried."""


class BoardGone(LinkError):
    """The board is not there any more: the program started for it exited (``Link``'s ``check`` said so)."""


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
    ``timeout``). ``counters`` counts what was sent and what was dropped on the way.

    ``timeout``: the longest one try waits for its reply (also the first try of a command whose reply time was not
    measured yet); ``retries``: a request gives up after ``retries + 1`` tries and ``(retries + 1) * timeout``
    seconds. ``check``: called while waiting (every CHECK_S); a string it returns ends the request at once with
    ``BoardGone`` (e.g. "the agent exited")."""

    DEFAULT_TIMEOUT = 2.0
    DEFAULT_RETRIES = 5

    def __init__(self, ser, port_name: str, timeout: float | None = DEFAULT_TIMEOUT,
                 retries: int | None = DEFAULT_RETRIES, check: Callable[[], str | None] | None = None):
        self.ser = ser
        self.port = port_name
        self.timeout = self.DEFAULT_TIMEOUT if timeout is None else float(timeout)  # None: the default
        self.retries = self.DEFAULT_RETRIES if retries is None else int(retries)
        if self.timeout <= 0 or self.retries < 0:
            raise LinkError(f"{port_name}: the link needs a positive timeout and retries >= 0 "
                            f"(got {self.timeout:g} s, {self.retries})")
        self.check = check
        self.counters = dict(sent=0, resent=0, dropped_frames=0, bad_crc=0, stray_bytes=0, boots=0)
        self.boot_version: int | None = None  # protocol version of the last BOOT seen
        self.last_tries = 0                   # tries the last request took (1: answered at once)
        self._seq = 0
        self._rx = bytearray()  # received bytes not yet ended by a delimiter
        self._rtt: dict[object, tuple[float, float]] = {}  # "fast" or a slow command -> (smoothed, variation) in s
        self._next_check = 0.0
        self._heard = time.monotonic()  # when a byte last arrived from the board
        baud = getattr(ser, "baudrate", None)
        self._byte_s = 10.0 / baud if isinstance(baud, (int, float)) and baud > 0 else 0.0  # 8N1: 10 bits a byte
        sock = getattr(ser, "_socket", None)  # socket:// (QEMU's serial port, a proxy): no Nagle delay on requests
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # every read must return within POLL_S so that deadlines hold (pyserial's default timeout blocks forever)
        if getattr(ser, "timeout", None) is None or ser.timeout > POLL_S:
            ser.timeout = POLL_S

    @classmethod
    def open(cls, url: str, baudrate: int = 115200, timeout: float | None = DEFAULT_TIMEOUT,
             retries: int | None = DEFAULT_RETRIES, check: Callable[[], str | None] | None = None,
             **serial_kw) -> "Link":
        """Open any pyserial URL (a device path, ``socket://host:port``, ``rfc2217://...``)."""
        import serial

        write_timeout = cls.DEFAULT_TIMEOUT if timeout is None else timeout
        try:
            ser = serial.serial_for_url(url, baudrate=baudrate, timeout=POLL_S, write_timeout=write_timeout,
                                        **serial_kw)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open {url}: {e}") from e
        return cls(ser, url, timeout, retries, check)

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
            data = self.ser.read(max(1, self.ser.in_waiting))
        except OSError as e:
            raise LinkError(f"cannot read from {self.port} (did the board or its link go away?): {e}") from e
        if data:
            self._heard = time.monotonic()
        return data

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
            now = time.monotonic()
            if self.check is not None and now >= self._next_check:
                self._next_check = now + CHECK_S
                gone = self.check()
                if gone:
                    raise BoardGone(f"{self.port}: {gone}")
            if now >= deadline:
                return None
            if len(self._rx) > 2 * MAX_PACKET:  # a long run without a delimiter: garbage, keep only its tail
                self.counters["stray_bytes"] += len(self._rx) - MAX_PACKET
                del self._rx[:-MAX_PACKET]
            self._rx += self._read_some()

    def _saw_boot(self, body: bytes) -> None:
        self.counters["boots"] += 1
        self.boot_version = int.from_bytes(body[:2], "little") if len(body) >= 2 else None

    # -- requests ---------------------------------------------------------------------------------------------

    def _wait(self, cmd: int, wire_bytes: int, cap: float, start: float) -> float:
        """How long a try waits for its reply before the resend: the reply time measured so far for this kind of
        command (RFC 6298's smoothed time + 4 x its variation, at least MIN_RTO; INITIAL_RTO before any), plus the
        bytes' time on the line; once the board has been silent for SILENCE_S (a stall, a reset, a slow command),
        half that silence, so the resends thin out; at most ``cap``. No backoff while the board is heard: on a noisy
        line a lost frame is resent at the same quick pace however often it was lost before."""
        key = cmd if cmd in SLOW_COMMANDS else "fast"
        if key in self._rtt:
            srtt, var = self._rtt[key]
            wait = max(MIN_RTO, srtt + 4 * var)
        else:
            wait = INITIAL_RTO
        silence = time.monotonic() - max(self._heard, start)  # while this request waits
        if silence > SILENCE_S:
            wait = max(wait, silence / 2)
        return min(cap, wait + wire_bytes * self._byte_s)

    def _measured(self, cmd: int, seconds: float, wire_bytes: int) -> None:
        """A reply time (of a reply to a request sent once: unambiguous), less the bytes' time on the line."""
        key = cmd if cmd in SLOW_COMMANDS else "fast"
        sample = max(0.0, seconds - wire_bytes * self._byte_s)
        if key not in self._rtt:
            self._rtt[key] = (sample, sample / 2)
        else:  # RFC 6298's smoothing
            srtt, var = self._rtt[key]
            self._rtt[key] = (0.875 * srtt + 0.125 * sample, 0.75 * var + 0.25 * abs(srtt - sample))

    def request(self, cmd: int, body: bytes = b"", timeout: float | None = None, retries: int | None = None, *,
                reply_bytes: int = 16, max_tries: int | None = None, since: float | None = None,
                tried: int = 0) -> bytes:
        """Send one request and return its reply data (after status OK). Resends the same frame (same seq) when the
        reply is overdue; raises DeviceError on an error status, BoardReset on a BOOT, NoReply (a LinkError) when
        ``retries + 1`` tries and ``(retries + 1) * timeout`` seconds passed, BoardGone when ``check`` says the
        board is gone, LinkError when the port fails.

        ``timeout`` caps each try's wait (default: the link's). ``reply_bytes``: about how long the reply is (the
        resend waits for its bytes too). For a caller that sends the same data again as other requests (smaller
        pieces): ``max_tries`` stops after that many tries with NoReply, ``since`` and ``tried`` are when the first
        of those requests went out and how many tries they had, so that deadline and count go on from there."""
        cap = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        name = CMD_NAMES.get(cmd, f"command 0x{cmd:02x}")
        self._seq = self._seq % 255 + 1
        seq = self._seq
        # the leading 0x00 ends whatever partial garbage the device holds, so this frame is not glued to it
        frame = b"\0" + encode_frame(seq, cmd, body)
        wire_bytes = len(frame) + reply_bytes + 8
        start = time.monotonic() if since is None else since
        deadline = start + (retries + 1) * cap
        tries = 0
        while True:
            wait = self._wait(cmd, wire_bytes, cap, start)
            self._write(frame)
            self.counters["resent" if tries else "sent"] += 1
            tries += 1
            sent = time.monotonic()
            try_deadline = sent + wait
            if tried + tries >= retries + 1:  # the last try the count allows: wait no longer than the deadline
                try_deadline = min(try_deadline, max(deadline, sent + min(wait, MIN_RTO)))
            while (got := self._next_frame(try_deadline)) is not None:
                rseq, rcmd, rbody = got
                if rseq == 0 and rcmd == BOOT:
                    self._saw_boot(rbody)
                    raise BoardReset(f"{self.port}: the board restarted (BOOT frame) while {name} waited for its reply")
                if rseq != seq or rcmd != cmd | 0x80 or not rbody:
                    self.counters["dropped_frames"] += 1  # a late or duplicated reply to an earlier request
                    continue
                self.last_tries = tries
                if tries == 1:
                    self._measured(cmd, time.monotonic() - sent, wire_bytes)
                if rbody[0] != 0:
                    raise DeviceError(rbody[0], rbody[1:].decode("utf-8", "replace"), name, self.port)
                return rbody[1:]
            now = time.monotonic()
            all_tries = tried + tries
            if (max_tries is not None and tries >= max_tries) or (all_tries >= retries + 1 and now >= deadline):
                self.last_tries = tries
                raise NoReply(f"no reply from {self.port} to {name} after {all_tries} tries in {now - start:.1f} s "
                              f"(timeout {cap:g} s each at most); link counters: {self.counters_text()}. Is the "
                              f"board running the tsptq device program, at this baud rate?", all_tries, start)

    def wait_boot(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a BOOT frame; True if one arrived (other frames are dropped)."""
        deadline = time.monotonic() + timeout
        while (got := self._next_frame(deadline)) is not None:
            if got[0] == 0 and got[1] == BOOT:
                self._saw_boot(got[2])
                return True
            self.counters["dropped_frames"] += 1
        return False

