"""The tsptq serial protocol's wire format (docs/serial-protocol.md): command and status codes, CRC-32, COBS, frames.

Standard library only and free of tsptq imports, so that a device program written in Python (the LiteRT board agent,
targets/common/litert_agent.py) can carry this file to a board and use it as is. The host side (``tsptq.deploy.serial_link``)
uses the same functions.
"""
from __future__ import annotations

import zlib

PROTOCOL_VERSION = 1
CMD = {"HELLO": 0x01, "RESET": 0x02, "UPLOAD_BEGIN": 0x10, "UPLOAD_CHUNK": 0x11, "UPLOAD_COMMIT": 0x12,
       "INPUT": 0x20, "INVOKE": 0x21, "OUTPUT": 0x22, "PROFILE": 0x30}
CMD_NAMES = {v: k for k, v in CMD.items()}
BOOT = 0xFE  # the device's unsolicited frame, seq 0
STATUS = {0: "OK", 1: "BAD_REQUEST", 2: "TOO_BIG", 3: "NO_UPLOAD", 4: "OUT_OF_RANGE", 5: "CRC_MISMATCH",
          6: "MODEL_REJECTED", 7: "NO_MODEL", 8: "ARENA_TOO_SMALL", 9: "INVOKE_FAILED", 10: "INPUT_CRC"}
STATUS_CODES = {v: k for k, v in STATUS.items()}
MAX_PACKET = 1024 + 6  # the largest max_body any shipped device reports, plus seq, cmd and crc


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
