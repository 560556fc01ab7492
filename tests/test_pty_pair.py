"""The pseudo-terminal pair the posix boards run behind (toolchain/tsptq/deploy/pty_pair.py, in place of socat), and
``start_board``/``RunningBoard.close`` around it: raw bytes both ways, no stall when both directions are full, the
board end surviving its program, and nothing left behind (threads, fds, processes)."""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time

import pytest
import serial

from tsptq.deploy.pty_pair import PtyPair

EVERY_BYTE = bytes(range(256)) + b"\r\n\r\x03\x04\x11\x13\x1a\x7f\0"  # ^C, ^D, XON/XOFF, ^Z, DEL: no line discipline


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _read(read, n: int, timeout: float = 10.0) -> bytes:
    got, deadline = bytearray(), time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += read()
    return bytes(got)


def _open_board(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    return fd


def _read_fd(fd: int):
    def read() -> bytes:
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.001)
            return b""
    return read


def test_bytes_cross_raw_both_ways_with_no_echo():
    fds, threads = _fds(), threading.active_count()
    with PtyPair() as pair:
        assert pair.host.startswith("/dev/pts/") and pair.board.startswith("/dev/pts/") and pair.alive()
        host = serial.Serial(pair.host, baudrate=115200, timeout=0.05)  # first, as start_board does
        board = _open_board(pair.board)
        os.write(board, EVERY_BYTE)  # what the program says at once (its BOOT) waits for the host
        time.sleep(0.2)
        assert _read(lambda: host.read(4096), len(EVERY_BYTE)) == EVERY_BYTE
        host.write(EVERY_BYTE)
        assert _read(_read_fd(board), len(EVERY_BYTE)) == EVERY_BYTE
        time.sleep(0.1)
        assert host.in_waiting == 0  # no echo
        os.close(board)
        host.close()
    assert not pair.alive() and pair.error is None
    assert _fds() == fds and threading.active_count() == threads


def test_a_direction_nobody_reads_does_not_stall_the_other():
    """The host writes 2 MB that the board does not read yet (that direction fills up and waits) while the board
    sends 2 MB that the host reads: it all arrives; then the board reads, and the first 2 MB arrive intact too."""
    blob_up, blob_down = os.urandom(2 << 20), os.urandom(2 << 20)
    with PtyPair() as pair:
        host = os.open(pair.host, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        board = _open_board(pair.board)
        sent_up = sent_down = 0
        down = bytearray()

        def write(fd: int, data: bytes, at: int) -> int:
            try:
                return at + os.write(fd, data[at:at + 65536])
            except BlockingIOError:
                return at

        deadline = time.monotonic() + 60
        while len(down) < len(blob_down) and time.monotonic() < deadline:
            sent_up = write(host, blob_up, sent_up)  # blocks (EAGAIN) once the upward buffers are full
            sent_down = write(board, blob_down, sent_down)
            down += _read_fd(host)()
        assert bytes(down) == blob_down and sent_up < len(blob_up)  # the upward direction did fill up
        up = bytearray()
        while len(up) < len(blob_up) and time.monotonic() < deadline:
            sent_up = write(host, blob_up, sent_up)
            up += _read_fd(board)()
        assert bytes(up) == blob_up
        os.close(host)
        os.close(board)


def test_the_board_end_outlives_its_program_and_closing_ends_the_line():
    """A program that exits and another that opens the board end again (a board reset) find the line as it was;
    after close() the host end reports an error instead of hanging."""
    with PtyPair() as pair:
        host = serial.Serial(pair.host, timeout=0.05)
        for word in (b"first", b"second"):
            board = _open_board(pair.board)
            os.write(board, word)
            assert _read(lambda: host.read(64), len(word)) == word
            host.write(word[::-1])
            assert _read(_read_fd(board), len(word)) == word[::-1]
            os.close(board)
        assert pair.alive()
    with pytest.raises(serial.SerialException):
        for _ in range(20):
            host.write(b"x")
            host.read(1)
    host.close()
    pair.close()  # twice: no error


AGENT = r"""
import os, sys
fd = os.open(sys.argv[sys.argv.index("--port") + 1], os.O_RDWR | os.O_NOCTTY)
os.write(fd, b"BOOT\0")  # at once, before the host could read: it must not be lost
while True:
    data = os.read(fd, 4096)
    if not data or data == b"exit":
        sys.exit(3)
    os.write(fd, data.upper())
"""


def _host_target():
    from tsptq.deploy.targets import load_target

    target = load_target("host")
    if shutil.which(target.cc) is None:
        pytest.skip(f"{target.cc} is not installed")
    return target


def test_start_board_keeps_the_boot_frame_reports_a_dead_program_and_leaves_nothing(tmp_path):
    from tsptq.deploy.targets import start_board

    target = _host_target()
    fds, threads = _fds(), threading.active_count()
    running = start_board(target, tmp_path / "unused", command=[sys.executable, "-c", AGENT])
    try:
        (agent,) = running.processes
        assert running.url == running.pty.host and running.alive() and running.gone() is None
        assert _read(lambda: running.serial.read(64), 5) == b"BOOT\0"
        running.serial.write(b"hello")
        assert _read(lambda: running.serial.read(64), 5) == b"HELLO"
        running.serial.write(b"exit")
        agent.wait(timeout=10)
        assert "exited" in running.gone() and not running.alive()
        assert running.pty.alive()  # the line stays: the dead program is what gone() reports
    finally:
        running.close()
    assert agent.returncode == 3 and not running.pty.alive()
    assert _fds() == fds and threading.active_count() == threads


def test_start_board_cleans_up_when_the_program_cannot_start(tmp_path):
    from tsptq.deploy.targets import start_board

    target = _host_target()
    fds, threads = _fds(), threading.active_count()
    with pytest.raises(OSError):
        start_board(target, tmp_path / "missing", command=[str(tmp_path / "missing")])
    assert _fds() == fds and threading.active_count() == threads
