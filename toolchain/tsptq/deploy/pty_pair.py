"""Two linked pseudo-terminals, made in Python (what ``socat pty,raw,echo=0 pty,raw,echo=0`` did).

``PtyPair().host`` and ``.board`` are two tty paths (``/dev/pts/N``): what is written on one is read on the other,
like the two ends of a serial cable. The host opens ``host`` with pyserial (or any program does, by path: the fault
proxy, ``tsptq profile --port``), the device program opens ``board`` with ``--port``. Each end is its own
``os.openpty()`` pair, set raw (no echo, no line editing, no CR/LF mapping); a daemon thread copies master to master,
each direction with its own buffer, so that a full direction (nobody reading) never stalls the other.

Why two pairs, not one: the host end must be a path that other programs can open (the link, then a fault proxy,
then ``tsptq profile --port``), so it cannot be a master fd held here. Why the slave fds stay open here: on Linux
a master whose slave nobody has open reads EIO, so the board end would break before the program opens it and again
when it exits (and could not be reopened by a restarted program); held open, it survives both, and a program that
dies is seen by its process ending (``RunningBoard.gone``), not by the pty. Nothing is read from them here.

Opening the host end with pyserial flushes its pending input (``Serial.open`` resets the input buffer), so the host
end is opened before the device program starts, or its BOOT frame is lost. ``close()`` stops the thread and closes
every fd; a program still holding an end then reads EIO (the line went away).
"""
from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import tty

CHUNK = 1 << 16


class PtyPair:
    """Two raw pseudo-terminals joined by a relay thread; ``host``/``board``: their paths. A context manager."""

    def __init__(self):
        self._fds: list[int] = []
        try:
            self._a, a_slave = self._open()
            self._b, b_slave = self._open()
            self.host, self.board = os.ttyname(a_slave), os.ttyname(b_slave)
            self._wake_r, self._wake_w = os.pipe()
            self._fds += [self._wake_r, self._wake_w]
        except BaseException:
            self._close_fds()
            raise
        self._stop = False
        self.error: OSError | None = None  # what ended the relay early (None while it runs, or after close())
        self._thread = threading.Thread(target=self._relay, name=f"pty relay {self.host} <-> {self.board}",
                                        daemon=True)
        self._thread.start()

    def _open(self) -> tuple[int, int]:
        master, slave = os.openpty()
        self._fds += [master, slave]
        tty.setraw(slave)  # the line discipline is the slave's: raw, no echo
        os.set_blocking(master, False)
        return master, slave

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _relay(self) -> None:
        a, b = self._a, self._b
        pending = {a: bytearray(), b: bytearray()}  # bytes read from the other master, not yet written to this one
        other = {a: b, b: a}
        try:
            while not self._stop:
                # read from a master only while what it sent before has gone out (back-pressure per direction)
                readers = [m for m in (a, b) if not pending[other[m]]] + [self._wake_r]
                writers = [m for m in (a, b) if pending[m]]
                readable, writable, _ = select.select(readers, writers, [])
                if self._stop:
                    break
                for m in writable:
                    with contextlib.suppress(BlockingIOError):
                        del pending[m][:os.write(m, pending[m])]
                for m in readable:
                    if m == self._wake_r:
                        continue
                    try:
                        data = os.read(m, CHUNK)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise OSError(errno.EIO, "end of file on a pty master")
                    pending[other[m]] += data
        except OSError as e:
            self.error = e

    def close(self) -> None:
        """Stop the relay and close every fd (idempotent)."""
        self._stop = True
        if self._fds:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
        self._close_fds()

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> "PtyPair":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
