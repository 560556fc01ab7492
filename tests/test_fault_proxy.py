"""The fault-injecting proxy itself: clean forwarding at zero rates, the configured rates at non-zero ones, a stall."""
from __future__ import annotations

import socket
import threading
import time

import serial

from tsptq.deploy.fault_proxy import FaultProxy, Faults


class EchoBoard:
    """A TCP 'board' that echoes every byte back (the proxy reaches it as socket://)."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.server.accept()
        while data := conn.recv(4096):
            conn.sendall(data)


def _roundtrip(proxy: FaultProxy, payload: bytes, wait: float = 1.0) -> bytes:
    port = serial.serial_for_url(proxy.url, timeout=0.05)
    port.write(payload)
    got, deadline = b"", time.monotonic() + wait
    while time.monotonic() < deadline:
        got += port.read(65536)
    port.close()
    return got


def test_forwards_unchanged_without_faults():
    payload = bytes(range(256)) * 40
    with FaultProxy(EchoBoard().url, Faults()) as proxy:
        assert _roundtrip(proxy, payload) == payload
        assert proxy.counters.forwarded == 2 * len(payload)


def test_injects_faults_at_the_configured_rates():
    payload = bytes(range(256)) * 80  # 20480 bytes each way
    with FaultProxy(EchoBoard().url, Faults(drop=0.01, flip=0.01, dup=0.01, seed=3)) as proxy:
        got = _roundtrip(proxy, payload, wait=1.5)
        c = proxy.counters
    assert got != payload
    n = 2 * len(payload)
    for count in (c.dropped, c.flipped, c.duplicated):  # 1% of ~41k bytes: ~410 each (binomial, 6 sigma ~120)
        assert 0.006 * n < count < 0.014 * n
    assert abs(len(got) - len(payload)) < 0.02 * len(payload)


def test_stall_delays_the_line_once():
    with FaultProxy(EchoBoard().url, Faults(stall_after=0, stall_seconds=0.8)) as proxy:
        port = serial.serial_for_url(proxy.url, timeout=0.05)
        t0 = time.monotonic()
        port.write(b"ab")  # the first chunk triggers the stall, then goes through
        got = b""
        while len(got) < 2 and time.monotonic() - t0 < 3:
            got += port.read(16)
        first = time.monotonic() - t0
        port.write(b"cd")  # no second stall
        t1 = time.monotonic()
        while len(got) < 4 and time.monotonic() - t1 < 3:
            got += port.read(16)
        second = time.monotonic() - t1
        port.close()
    assert got == b"abcd" and first >= 0.75 and second < 0.5
    assert proxy.counters.stalls == 1
