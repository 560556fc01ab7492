"""The device programs (targets/common/) against the host side (toolchain/tsptq/deploy/serial_link.py, toolchain/tsptq/deploy/board.py), talking
over a pseudo-terminal pair (toolchain/tsptq/deploy/pty_pair.py), with a real exported fashion-vit: bit-exact inference, profile, every error status,
garbage, retries, resets and a dead link. Every test runs against both device programs: the C agent (built natively,
and for aarch64 under qemu-aarch64-static) and the LiteRT agent (targets/common/litert_agent.py: stock ai-edge-litert
with its reference kernels and libtsptq_delegate.so, `--runtime litert`)."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tsptq.deploy.board import Board, ModelTooBigError
from tsptq.deploy.serial_link import CMD, DeviceError, Link, LinkError, crc32, encode_frame

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ([str(p) for p in sorted((ROOT / "runtime_c" / "src").rglob("*.c"))]
           + [str(ROOT / "targets" / "common" / f) for f in ("device.c", "agent_posix.c")])
INCLUDES = [f"-I{ROOT / d}" for d in ("runtime_c/include", "runtime_c/src", "targets/common")]
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]

# Tiers (tests/conftest.py): the agents are compiled here (`cc`), each rig starts processes: the module is `slow`.
pytestmark = [pytest.mark.cc, pytest.mark.slow]


def compile_agent(cc: str, out: Path, flags: list[str]) -> Path:
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    r = subprocess.run([cc, *WARNINGS, *flags, *INCLUDES, *SOURCES, "-lm", "-o", str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return out


@dataclass(frozen=True)
class Agent:
    kind: str            # "c" (agent_posix.c) or "litert" (litert_agent.py)
    command: list[str]   # how to start it; --port / --stdio and options follow


@pytest.fixture(scope="module", params=["c", "litert"])
def agent(request, tmp_path_factory) -> Agent:
    if request.param == "c":
        return Agent("c", [str(compile_agent(os.environ.get("CC", "cc"), tmp_path_factory.mktemp("agent") / "agent",
                                              ["-O2"]))])
    pytest.importorskip("ai_edge_litert.interpreter")
    from tsptq.deploy.litert_board import build_bundle, local_command
    from tsptq.deploy.targets import load_target

    host = load_target("host")
    return Agent("litert", local_command(host, build_bundle(host), "reference"))


@pytest.fixture(scope="module")
def fashion():
    """fashion-vit exported with tsptq, 20 test images as input codes, and the Python integer model's outputs."""
    from tsptq.data import datasets
    from tsptq.model import zoo
    from tsptq.quant.observers import record
    from tsptq.errors import DataError
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize
    from tsptq.quant.qvit import Graph
    from tsptq.tflite.writer import to_tflite
    from tsptq.tflite.reader import parse_tflite

    model = zoo.load_reference("fashion-vit")
    graph = Graph.from_model(model)
    try:
        cal, test = datasets.load_fashion_mnist("train").balanced(32), datasets.load_fashion_mnist("test").take(20)
    except DataError:  # bit-exactness does not need real images
        rng = np.random.default_rng(0)
        cal = test = datasets.ImageSet(rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8),
                                       np.zeros(32, np.int64), "random")
    data = to_tflite(lower(quantize(graph, record(graph, cal, 16, False), "tsptq", progress=False)))
    fm = parse_tflite(data)
    x = fm.quantize_input(datasets.to_model_input(test.images[:20], model.cfg).numpy())
    return data, x, fm.run(x), fm


class Rig:
    """A PtyPair joins two pseudo-terminals: the link opens A (before the agent starts, to catch its BOOT), the
    agent B."""

    def __init__(self, workdir: Path, command: list[str], timeout: float, retries: int):
        from tsptq.deploy.pty_pair import PtyPair

        self.pty = PtyPair()
        self.a, self.b = self.pty.host, self.pty.board
        self.command = command
        self.log = workdir / "agent.log"
        self.agent = None
        self.link = Link.open(self.a, timeout=timeout, retries=retries)
        self.board = Board(self.link, invoke_timeout=max(timeout, 5.0))
        self.start_agent()

    def start_agent(self) -> None:
        with open(self.log, "ab") as log:
            self.agent = subprocess.Popen([*self.command, "--port", str(self.b)], stderr=log)
        assert self.link.wait_boot(20), f"no BOOT from the agent: {self.log.read_text()}"

    def kill_agent(self) -> None:
        self.agent.kill()
        self.agent.wait()

    def close(self) -> None:
        self.link.close()
        if self.agent is not None and self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait()
        self.pty.close()


@pytest.fixture
def make_rig(agent, tmp_path):
    rigs = []

    def make(*args: str, prefix: list[str] = (), binary: Path | None = None, timeout: float = 1.0,
             retries: int = 3) -> Rig:
        d = tmp_path / f"rig{len(rigs)}"
        d.mkdir()
        command = [*prefix, str(binary)] if binary else agent.command
        rigs.append(Rig(d, [*command, *args], timeout, retries))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def device_error(fn, *args) -> DeviceError:
    with pytest.raises(DeviceError) as e:
        fn(*args)
    return e.value


def raw_replies(link: Link, wire: bytes, n: int, timeout: float = 2.0) -> list[tuple[int, int, bytes]]:
    """Write raw bytes and collect the next n frames."""
    link.ser.write(wire)
    deadline = time.monotonic() + timeout
    frames = []
    while len(frames) < n and (f := link._next_frame(deadline)) is not None:
        frames.append(f)
    return frames


# ---- HELLO, upload, inference, profile -------------------------------------------------------------------------

def test_hello_reports_every_field(make_rig, agent):
    rig = make_rig("--board", "test-board", "--model-capacity", "1000000", "--arena-capacity", "200000")
    info = rig.board.hello()
    assert (info.protocol_version, info.max_body, info.tick_hz, info.tick_unit) == (1, 1024, 10**9, "ns")
    assert (info.model_capacity, info.arena_capacity, info.model_size, info.model_crc) == (1000000, 200000, 0, 0)
    assert info.board == "test-board"
    header = (ROOT / "runtime_c" / "include" / "tsptq.h").read_text()
    version = re.search(r'#define TSPTQ_VERSION_STRING "([^"]+)"', header).group(1)
    assert info.runtime_version == (version if agent.kind == "c" else
                                    "ai-edge-litert 2.3.0 + tsptq delegate (reference kernels)")
    assert rig.link.counters["boots"] == 1


def test_upload_infer_bit_exact_and_profile(make_rig, fashion, agent):
    data, x, y, fm = fashion
    rig = make_rig()
    b = rig.board
    progress = []
    commit = b.upload(data, progress=lambda done, total: progress.append((done, total)))
    assert not commit.skipped and commit.restarts == 0
    assert (commit.n_ops, commit.input_bytes, commit.output_bytes) == (len(fm.ops), x[0].size, y[0].size)
    assert progress[-1] == (len(data), len(data)) and len(progress) == -(-len(data) // 1020)
    info = b.hello()
    assert (info.model_size, info.model_crc) == (len(data), crc32(data))

    results = [b.infer(x[i].tobytes()) for i in range(len(x))]
    got = np.stack([np.frombuffer(r.output, np.int8) for r in results])
    assert np.array_equal(got, y), f"{np.mean(got != y):.2%} of output bytes differ"
    assert all(r.ticks > 0 for r in results)

    rows = b.profile()
    if agent.kind == "c":
        assert [name for name, _ in rows] == [op.kind for op in fm.ops]
    else:  # the delegate times its TSPTQ_* ops; LiteRT's builtins are one entry
        assert [name for name, _ in rows] == [op.kind for op in fm.ops if op.kind.startswith("TSPTQ_")] + [
            "LITERT_BUILTINS"]
    assert 0 < sum(t for _, t in rows) <= results[-1].ticks
    if agent.kind == "litert":  # every delegate op was timed; the builtins' entry is the rest of the invocation
        assert all(t > 0 for _, t in rows) and sum(t for _, t in rows[:-1]) < results[-1].ticks
    # OUTPUT reads any range of the last output
    assert rig.link.request(CMD["OUTPUT"], struct.pack("<IH", 3, 5)) == y[-1].tobytes()[3:8]
    assert device_error(rig.link.request, CMD["OUTPUT"], struct.pack("<IH", 8, 5)).status_name == "OUT_OF_RANGE"
    # the same model again: HELLO shows it, nothing is sent
    sent = rig.link.counters["sent"]
    assert b.upload(data).skipped and rig.link.counters["sent"] == sent + 1  # just the HELLO
    assert rig.link.counters["resent"] == 0 and rig.link.counters["bad_crc"] == 0


def test_agent_over_stdio(agent, fashion):
    """--stdio, the mode `--ssh` uses, through tsptq.deploy.targets.PipePort (a port over a child's pipes)."""
    from tsptq.deploy.targets import PipePort

    data, x, y, _ = fashion
    proc = subprocess.Popen([*agent.command, "--stdio", "--board", "piped"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    link = Link(PipePort(proc, "agent --stdio"), "agent --stdio", timeout=2.0)
    try:
        assert link.wait_boot(10)
        b = Board(link)
        assert b.hello().board == "piped"
        b.upload(data)
        assert b.infer(x[0].tobytes()).output == y[0].tobytes()
    finally:
        link.close()
        try:
            assert proc.wait(timeout=10) == 0  # EOF on stdin ends it cleanly
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("agent", ["c"], indirect=True)  # the LiteRT agent has no start-up model (--model)
def test_boot_model_is_committed_at_start_and_survives_a_reset(make_rig, fashion, tmp_path, agent):
    data, x, y, _ = fashion
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    rig = make_rig("--model", str(path))
    b = rig.board
    info = b.hello()
    assert (info.model_size, info.model_crc) == (len(data), crc32(data))
    assert b.upload(data).skipped
    assert b.infer(x[1].tobytes()).output == y[1].tobytes()
    assert b.reset() and b.hello().model_size == len(data)
    # an upload overwrites it (it lives in the upload buffer): after a reset it is gone
    device_error(b.upload, data[: len(data) // 2])
    assert b.reset() and b.hello().model_size == 0


# ---- errors -----------------------------------------------------------------------------------------------------

def test_bad_models_are_rejected_with_the_runtimes_message(make_rig, fashion, agent):
    """The C agent answers with the runtime's error; the LiteRT agent with the delegate's, which carries it."""
    data, x, _, _ = fashion
    rig = make_rig()
    b = rig.board
    e = device_error(b.upload, data[: len(data) // 2])
    assert e.status_name == "MODEL_REJECTED" and "TSPTQ_ERR_" in e.message
    bad_id = bytearray(data)
    bad_id[4:8] = b"XXXX"  # the flatbuffer identifier "TFL3"
    e = device_error(b.upload, bytes(bad_id))
    assert e.status_name == "MODEL_REJECTED"
    assert (e.message.startswith("TSPTQ_ERR_BAD_IDENTIFIER: ") if agent.kind == "c" else
            e.message.startswith("tsptq delegate: ") and "TSPTQ_ERR_BAD_IDENTIFIER" in e.message), e.message
    assert b.hello().model_size == 0
    assert device_error(b.infer, x[0].tobytes()).status_name == "NO_MODEL"

    # a CRC announced wrong: the bytes arrive but do not match it
    req = rig.link.request
    req(CMD["UPLOAD_BEGIN"], struct.pack("<II", 1000, crc32(data[:1000]) ^ 1))
    req(CMD["UPLOAD_CHUNK"], struct.pack("<I", 0) + data[:1000])
    e = device_error(req, CMD["UPLOAD_COMMIT"])
    assert e.status_name == "CRC_MISMATCH" and "0x" in e.message
    assert device_error(req, CMD["UPLOAD_COMMIT"]).status_name == "NO_UPLOAD"  # a failed commit ends the upload
    req(CMD["UPLOAD_BEGIN"], struct.pack("<II", 1000, 0))
    e = device_error(req, CMD["UPLOAD_CHUNK"], struct.pack("<I", 10) + b"gap")
    assert e.status_name == "OUT_OF_RANGE" and "gap" in e.message
    assert device_error(req, CMD["UPLOAD_COMMIT"]).status_name == "OUT_OF_RANGE"  # only 0 of 1000 bytes
    assert device_error(req, 0x7F).status_name == "BAD_REQUEST"

    b.upload(data)
    req(CMD["INPUT"], struct.pack("<I", 0) + x[0].tobytes())
    e = device_error(req, CMD["INVOKE"], struct.pack("<I", crc32(x[0].tobytes()) ^ 1))
    assert e.status_name == "INPUT_CRC"


def test_too_big_and_arena_too_small(make_rig, fashion):
    data = fashion[0]
    small = make_rig("--model-capacity", "100000")
    with pytest.raises(ModelTooBigError) as e:  # found from HELLO, before anything is sent
        small.board.upload(data)
    assert e.value.model_size == len(data) and e.value.capacity == 100000 and f"{len(data):,}" in str(e.value)
    e = device_error(small.link.request, CMD["UPLOAD_BEGIN"], struct.pack("<II", len(data), crc32(data)))
    assert e.status_name == "TOO_BIG" and str(len(data)) in e.message and "100000" in e.message

    tight = make_rig("--arena-capacity", "4096")
    e = device_error(tight.board.upload, data)
    assert e.status_name == "ARENA_TOO_SMALL" and "4096" in e.message and "needs" in e.message
    assert tight.board.hello().model_size == 0


# ---- the link: garbage, duplicates, resets, a dead agent ----------------------------------------------------------

def test_garbage_and_a_corrupted_frame_before_a_request(make_rig):
    rig = make_rig()
    hello = bytearray(encode_frame(9, CMD["HELLO"]))
    hello[2] ^= 0x10  # a damaged frame: dropped by the device without a reply
    rig.link.ser.write(b"\x13\x37 garbage \xff\xfe" * 50 + b"\0\0\x05\x01\0" + bytes(hello))
    assert rig.board.hello().board == "host"
    assert rig.link.counters["resent"] == 0 and rig.link.counters["dropped_frames"] == 0


def test_device_cobs_edges_and_frame_size_limit(make_rig):
    """HELLO with a body is answered BAD_REQUEST: proof that such a frame decoded, CRC included, on the device."""
    link = make_rig(timeout=0.3, retries=1).link
    for body in (b"\x01" * 250, b"\x01" * 252, b"\x01" * 253, b"\x01" * 254, b"\x01" * 508, b"\x00" * 300,
                 (b"\x07" * 254 + b"\x00") * 4, b"\x05" * 1024):
        assert device_error(link.request, CMD["HELLO"], body).status_name == "BAD_REQUEST", len(body)
    with pytest.raises(LinkError, match="no reply"):  # one byte over max_body: dropped
        link.request(CMD["HELLO"], b"\x05" * 1025)


def test_a_duplicated_request_is_answered_from_the_cache(make_rig, fashion):
    data, x, _, _ = fashion
    rig = make_rig()
    rig.board.upload(data)
    rig.link.request(CMD["INPUT"], struct.pack("<I", 0) + x[0].tobytes())
    invoke = encode_frame(77, CMD["INVOKE"], struct.pack("<I", crc32(x[0].tobytes())))
    first, again = raw_replies(rig.link, invoke + invoke, 2)
    assert first == again and first[:2] == (77, CMD["INVOKE"] | 0x80)  # same ticks: not run twice
    (fresh,) = raw_replies(rig.link, encode_frame(78, CMD["INVOKE"], struct.pack("<I", crc32(x[0].tobytes()))), 1)
    assert fresh[2][9:] == first[2][9:] and fresh[2][1:9] != first[2][1:9]  # same output, a new measurement


def test_reset_sends_boot_and_forgets_the_model(make_rig, fashion):
    rig = make_rig()
    assert rig.board.upload(fashion[0], progress=True).n_ops  # progress=True: a bar on stderr
    boots = rig.link.counters["boots"]
    assert rig.board.reset() is True and rig.link.counters["boots"] == boots + 1
    assert rig.board.hello().model_size == 0


def test_agent_restarted_mid_upload_restarts_the_upload(make_rig, fashion):
    data, x, y, _ = fashion
    rig = make_rig()
    restarted = []

    def progress(done, total):
        if done > total // 2 and not restarted:
            restarted.append(done)
            rig.kill_agent()
            rig.agent = subprocess.Popen([*rig.command, "--port", str(rig.b)], stderr=subprocess.DEVNULL)

    commit = rig.board.upload(data, progress=progress)
    assert restarted and commit.restarts == 1 and rig.link.counters["boots"] == 2
    assert rig.board.infer(x[2].tobytes()).output == y[2].tobytes()


def test_dead_link_ends_in_a_link_error_naming_the_port(make_rig):
    rig = make_rig(timeout=0.2, retries=2)
    rig.kill_agent()
    t = time.monotonic()
    with pytest.raises(LinkError) as e:
        rig.board.hello()
    assert time.monotonic() - t < 3 and str(rig.a) in str(e.value) and "3 tries" in str(e.value)
    rig.pty.close()  # the pty pair itself goes away
    with pytest.raises(LinkError) as e:
        rig.board.hello()
    assert str(rig.a) in str(e.value)


# ---- aarch64 (the rpi target) under qemu-aarch64-static ------------------------------------------------------------

@pytest.mark.qemu
@pytest.mark.parametrize("agent", ["c"], indirect=True)  # the LiteRT agent on the emulated Pi: test_deploy_litert.py
def test_aarch64_agent_under_qemu(make_rig, fashion, tmp_path, agent):
    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is not installed (apt-get install qemu-user-static)")
    binary = compile_agent("aarch64-linux-gnu-gcc", tmp_path / "agent-aarch64", ["-O2", "-mcpu=cortex-a72", "-static"])
    data, x, y, _ = fashion
    rig = make_rig("--board", "rpi", prefix=["qemu-aarch64-static"], binary=binary, timeout=3.0)
    info = rig.board.hello()
    assert info.board == "rpi" and info.tick_unit == "ns"
    rig.board.upload(data)
    for i in range(4):
        assert rig.board.infer(x[i].tobytes()).output == y[i].tobytes()


def test_noisy_line_shrinks_the_pieces_and_stays_bit_exact(make_rig, fashion):
    """About 0.6% of the bytes damaged each way (dropped, flipped or duplicated): a 788-byte INPUT frame almost never
    crosses intact, 64-byte pieces mostly do; every inference that completes is bit-exact."""
    from tsptq.deploy.board import MIN_PIECE
    from tsptq.deploy.fault_proxy import FaultProxy, Faults

    data, x, y, _ = fashion
    rig = make_rig()
    rig.board.upload(data)  # over the clean line
    rig.link.close()
    with FaultProxy(str(rig.a), Faults(drop=0.002, flip=0.002, dup=0.002, seed=1)) as proxy:
        link = Link.open(proxy.url, timeout=0.2, retries=12)
        try:
            board = Board(link, invoke_timeout=2.0)
            for i in range(3):
                assert board.infer(x[i].tobytes()).output == y[i].tobytes()
        finally:
            link.close()
    assert link.counters["resent"] > 0 and board._piece < 1020 and board._piece >= MIN_PIECE
