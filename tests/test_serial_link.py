"""The host side of the serial protocol (toolchain/tsptq/deploy/serial_link.py) on its own: COBS, CRC-32, frames, and Link's
retries, resynchronization and errors against a scripted in-memory port. The real device is in test_board_host.py."""
from __future__ import annotations

import math
import time
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from tsptq.errors import TsptqError
from tsptq.deploy.serial_link import (BOOT, CMD, BadCRC, BoardReset, DeviceError, FrameError, Link, LinkError, cobs_decode,
                               cobs_encode, crc32, decode_frame, encode_frame)

# Wikipedia's COBS examples (data -> encoding, the 0x00 delimiter left out)
R = bytes(range(256))
WIKIPEDIA = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (R[1:255], b"\xff" + R[1:255]),
    (R[0:255], b"\x01\xff" + R[1:255]),
    (R[1:256], b"\xff" + R[1:255] + b"\x02\xff"),
    (R[2:256] + b"\x00", b"\xff" + R[2:256] + b"\x01\x01"),
    (R[3:256] + b"\x00\x01", b"\xfe" + R[3:256] + b"\x02\x01"),
]


@pytest.mark.parametrize("data,encoded", WIKIPEDIA)
def test_cobs_known_vectors(data, encoded):
    assert cobs_encode(data) == encoded
    assert cobs_decode(encoded) == data


def test_cobs_empty_and_trailing_full_block_variant():
    assert cobs_encode(b"") == b"\x01" and cobs_decode(b"\x01") == b""
    # some encoders end a data set that fills a 254-byte block with an extra empty block: same data
    assert cobs_decode(b"\xff" + R[1:255] + b"\x01") == R[1:255]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_round_trip(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + math.ceil(len(data) / 254) + 1
    assert cobs_decode(enc) == data


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=600).filter(lambda b: 0 not in b))
def test_cobs_long_zero_free_runs(data):
    assert cobs_decode(cobs_encode(data * 3)) == data * 3


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x03\x11", b"\x05\x11\x00\x22\x33", b"\x02\x11\x04\x22"])
def test_cobs_decode_rejects(bad):
    with pytest.raises(ValueError):
        cobs_decode(bad)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 2**32 - 1))
def test_crc32_is_zlibs(data, start):
    assert crc32(data) == zlib.crc32(data)
    assert crc32(data, start) == zlib.crc32(data, start)


def test_crc32_check_value():
    assert crc32(b"123456789") == 0xCBF43926  # the CRC-32/IEEE check value


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=1024))
def test_frame_round_trip(seq, cmd, body):
    wire = encode_frame(seq, cmd, body)
    assert wire.endswith(b"\0") and 0 not in wire[:-1]
    assert decode_frame(wire) == (seq, cmd, body)


def test_frame_decode_rejects_bad_crc_short_and_long():
    packet = bytes([5, CMD["HELLO"]]) + b"body"
    good = packet + crc32(packet).to_bytes(4, "little")
    bad = bytearray(good)
    bad[3] ^= 0x40
    with pytest.raises(BadCRC):
        decode_frame(cobs_encode(bytes(bad)))
    with pytest.raises(FrameError):
        decode_frame(cobs_encode(good[:5]))  # shorter than seq + cmd + crc
    long = bytes([1, 1]) + bytes(2000)
    with pytest.raises(FrameError):
        decode_frame(cobs_encode(long + crc32(long).to_bytes(4, "little")))


# ---- Link against a scripted port ---------------------------------------------------------------------------------

class FakePort:
    """pyserial's surface: what the link writes goes to ``respond(seq, cmd, body, n)`` (n: how many frames so far),
    whose bytes come back on read."""

    def __init__(self, respond):
        self.respond = respond
        self.timeout = None
        self.rx = bytearray()
        self.frames = []

    @property
    def in_waiting(self):
        return len(self.rx)

    def write(self, data):
        for chunk in bytes(data).split(b"\0"):
            if chunk:
                self.frames.append(decode_frame(chunk))
                self.rx += self.respond(*self.frames[-1], len(self.frames))
        return len(data)

    def read(self, n=1):
        if not self.rx:
            time.sleep(self.timeout)
            return b""
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def reset_input_buffer(self):
        self.rx.clear()

    def close(self):
        pass


def reply(seq, cmd, status=0, data=b""):
    return encode_frame(seq, cmd | 0x80, bytes([status]) + data)


def test_request_returns_the_reply_data_and_sets_a_read_timeout():
    port = FakePort(lambda seq, cmd, body, n: reply(seq, cmd, 0, b"echo:" + body))
    link = Link(port, "fake0")
    assert port.timeout is not None and port.timeout <= 0.1  # reads never block forever
    assert link.request(CMD["HELLO"], b"abc") == b"echo:abc"
    assert link.counters["sent"] == 1 and link.counters["resent"] == 0


def test_sequence_numbers_run_1_to_255_and_skip_0():
    port = FakePort(lambda seq, cmd, body, n: reply(seq, cmd))
    link = Link(port, "fake0")
    for _ in range(300):
        link.request(CMD["HELLO"])
    seqs = [f[0] for f in port.frames]
    assert seqs[:255] == list(range(1, 256)) and seqs[255] == 1 and 0 not in seqs


def test_garbage_bad_crc_and_stale_replies_are_dropped_and_counted():
    def respond(seq, cmd, body, n):
        bad = bytearray(reply(seq, cmd, 0, b"corrupt"))
        bad[4] ^= 0x01 if bad[4] != 0x01 else 0x02
        return (b"\x13\x37noise\xff\xfe" + b"\0" + bytes(bad) + reply(seq - 1, cmd, 0, b"late")
                + reply(seq, CMD["RESET"], 0, b"other cmd") + reply(seq, cmd, 0, b"right"))

    link = Link(FakePort(respond), "fake0")
    link.request(CMD["HELLO"])  # seq 1: its "late" reply carries seq 0 and cmd HELLO|0x80, which is not a BOOT
    assert link.request(CMD["HELLO"]) == b"right"
    c = link.counters
    assert c["bad_crc"] == 2 and c["dropped_frames"] == 4 and c["stray_bytes"] == 2 * 9 and c["resent"] == 0


def test_lost_reply_is_recovered_by_resending_the_same_frame():
    port = FakePort(lambda seq, cmd, body, n: b"" if n == 1 else reply(seq, cmd, 0, b"ok"))
    link = Link(port, "fake0", timeout=0.1)
    assert link.request(CMD["HELLO"]) == b"ok"
    assert port.frames[0] == port.frames[1] and link.counters["resent"] == 1


def test_dead_link_raises_link_error_naming_the_port_in_bounded_time():
    link = Link(FakePort(lambda *a: b""), "/dev/ttyFAKE7", timeout=0.1, retries=3)
    t = time.monotonic()
    with pytest.raises(LinkError) as e:
        link.request(CMD["INVOKE"], b"\0\0\0\0")
    assert time.monotonic() - t < 1.5
    msg = str(e.value)
    assert "/dev/ttyFAKE7" in msg and "INVOKE" in msg and "4 tries" in msg and "0.1 s" in msg
    assert isinstance(e.value, TsptqError)


def test_device_error_carries_status_and_message():
    link = Link(FakePort(lambda seq, cmd, body, n: reply(seq, cmd, 6, b"TSPTQ_ERR_CORRUPTED: offset past the end")),
                "fake0")
    with pytest.raises(DeviceError) as e:
        link.request(CMD["UPLOAD_COMMIT"])
    assert e.value.status == 6 and e.value.status_name == "MODEL_REJECTED"
    assert e.value.message == "TSPTQ_ERR_CORRUPTED: offset past the end"
    assert "UPLOAD_COMMIT" in str(e.value) and "fake0" in str(e.value)


def test_boot_while_waiting_raises_board_reset():
    boot = encode_frame(0, BOOT, (1).to_bytes(2, "little"))
    link = Link(FakePort(lambda *a: boot), "fake0")
    with pytest.raises(BoardReset) as e:
        link.request(CMD["UPLOAD_CHUNK"], bytes(8))
    assert isinstance(e.value, LinkError) and "fake0" in str(e.value)
    assert link.counters["boots"] == 1 and link.boot_version == 1


def test_wait_boot():
    port = FakePort(lambda *a: b"")
    link = Link(port, "fake0")
    assert link.wait_boot(0.1) is False
    port.rx += reply(3, CMD["HELLO"]) + encode_frame(0, BOOT, b"\x01\x00")
    assert link.wait_boot(1.0) is True and link.counters["dropped_frames"] == 1


def test_port_failure_becomes_link_error():
    class Broken(FakePort):
        def read(self, n=1):
            raise OSError("device reports readiness to read but returned no data")

    with pytest.raises(LinkError, match="ttyGONE"):
        Link(Broken(lambda *a: b""), "/dev/ttyGONE").request(CMD["HELLO"])
    with pytest.raises(LinkError, match="cannot open"):
        Link.open("/nonexistent/tty")
