"""A fault-injecting serial proxy: a bad cable on demand, for testing the link.

It listens on a local TCP port (the host connects with ``socket://127.0.0.1:PORT``) and forwards bytes both ways to
the board (any pyserial URL: a pty, QEMU's TCP serial port, a real ``/dev/ttyUSB0``), dropping, flipping and
duplicating bytes at the given rates and stalling the line once, all from a seeded random generator so a failing
run can be replayed:

    python -m tsptq.deploy.fault_proxy --board socket://127.0.0.1:4444 --listen 5555 --drop 0.01 --flip 0.01 --dup 0.01 \\
        --stall-after 20000 --stall-seconds 3
"""
from __future__ import annotations

import argparse
import random
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    drop: float = 0.0           # probability that a byte is lost
    flip: float = 0.0           # probability that one bit of a byte is inverted
    dup: float = 0.0            # probability that a byte is sent twice
    stall_after: int = 0        # after this many forwarded bytes (both ways), stop forwarding once...
    stall_seconds: float = 0.0  # ...for this long (0: never)
    seed: int = 0


@dataclass
class Counters:
    forwarded: int = 0
    dropped: int = 0
    flipped: int = 0
    duplicated: int = 0
    stalls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class FaultProxy:
    """``with FaultProxy(board_url, Faults(...)) as p: ... socket://127.0.0.1:{p.port} ...``"""

    def __init__(self, board, faults: Faults, listen_port: int = 0):
        """board: a pyserial URL, or an already open pyserial-like port (e.g. a started board's)."""
        self.board_url, self.faults = board if isinstance(board, str) else None, faults
        self._board = None if isinstance(board, str) else board
        self.counters = Counters()
        self._rng = random.Random(faults.seed)
        self._server = socket.create_server(("127.0.0.1", listen_port))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._stalled = False
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept(self) -> None:
        import serial

        self._server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                host, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self._board is None:
                self._board = serial.serial_for_url(self.board_url, timeout=0.02)
            host.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay: a cable has none
            host.settimeout(0.02)
            for pump in (self._host_to_board, self._board_to_host):
                t = threading.Thread(target=pump, args=(host,), daemon=True)
                t.start()
                self._threads.append(t)
            return  # one host connection

    def _mangle(self, data: bytes) -> bytes:
        f, c, out = self.faults, self.counters, bytearray()
        with c.lock:
            if f.stall_seconds and not self._stalled and c.forwarded >= f.stall_after:
                self._stalled = True
                c.stalls += 1
                stall = True
            else:
                stall = False
            for b in data:
                r = self._rng.random()
                if r < f.drop:
                    c.dropped += 1
                    continue
                if r < f.drop + f.flip:
                    b ^= 1 << self._rng.randrange(8)
                    c.flipped += 1
                out.append(b)
                if self._rng.random() < f.dup:
                    out.append(b)
                    c.duplicated += 1
            c.forwarded += len(data)
        if stall:
            time.sleep(f.stall_seconds)  # the line goes quiet; bytes sent meanwhile wait in the buffers
        return bytes(out)

    def _host_to_board(self, host: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = host.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            self._board.write(self._mangle(data))

    def _board_to_host(self, host: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = self._board.read(max(1, self._board.in_waiting))  # no waiting for a full block
            except Exception:  # the board went away: close the host side too
                host.close()
                return
            if data:
                try:
                    host.sendall(self._mangle(data))
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for t in self._threads:
            t.join(timeout=2)
        if self._board is not None and self.board_url is not None:  # a port handed in is closed by its owner
            self._board.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tsptq.deploy.fault_proxy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--board", required=True, help="pyserial URL of the board side")
    ap.add_argument("--listen", type=int, default=0, help="local TCP port for the host (default: a free one)")
    for name in ("drop", "flip", "dup"):
        ap.add_argument(f"--{name}", type=float, default=0.0, help=f"per-byte probability to {name}")
    ap.add_argument("--stall-after", type=int, default=0)
    ap.add_argument("--stall-seconds", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    with FaultProxy(a.board, Faults(a.drop, a.flip, a.dup, a.stall_after, a.stall_seconds, a.seed), a.listen) as p:
        print(f"listening on {p.url}; Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        print(p.counters)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
