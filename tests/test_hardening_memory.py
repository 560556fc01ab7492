"""Issue 14, item 1: a crafted model must never make the device program write past its arena.

The model (tests/crafted_models.py, also runtime_c/fuzz/corpus/arena_wrap_reshape.tflite): an int8 input
[1, 1657009, 864, 1] -> RESHAPE. The runtime plans 1,431,655,776 B (within its 2 GB limit), and the device program
carves runtime + input + output + profile = 4,294,967,332 B from its arena: in 32-bit arithmetic that was 36 B, the
capacity check passed and commit() zeroed 1.43 GB past the arena (a SIGSEGV under ASan on the host, RAM overwritten on
a Cortex-M). Here:

(a) the host agent, built with ASan + UBSan, answers ARENA_TOO_SMALL with the real sizes and keeps serving: a valid
    model uploaded next runs bit-exact; the capacity check is exact to the byte;
(b) the mps2-an386 firmware under QEMU does the same (slow: QEMU's UART);
(c) the C loader through ctypes (CModel) plans it and refuses a small arena with a clear error; the Python planner
    gives the same plan; a model whose plan passes 2 GB is refused by both readers;
(d) the fuzz corpus (runtime_c/fuzz/corpus) holds these files, and the device fuzz target (runtime_c/fuzz/
    fuzz_device.c) runs them and a short fuzzing session clean under ASan/UBSan.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from crafted_models import BIG_BYTES, CORPUS, arena_over_limit_add, arena_wrap_reshape
from tsptq.errors import ModelFileError

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "runtime_c" / "fuzz"
CORE_SOURCES = sorted(str(p) for p in (ROOT / "runtime_c" / "src").rglob("*.c"))
# runtime + input + output (each 16-byte aligned) + 4 bytes of profile for the one op
CRAFTED_TOTAL = 3 * BIG_BYTES + 4
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


@pytest.fixture(scope="module")
def crafted() -> bytes:
    return arena_wrap_reshape()


@pytest.fixture(scope="module")
def tiny(tiny_vits):
    """A valid 1-block ViT file (8x8 input), 4 input images as codes and the Python integer model's outputs."""
    from tsptq.data import datasets
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize
    from tsptq.tflite.writer import to_tflite
    from tsptq.tflite.reader import parse_tflite

    cfg, graph, cal, imgs = tiny_vits(8)
    data = to_tflite(lower(quantize(graph, cal, "tsptq", progress=False)))
    fm = parse_tflite(data)
    x = fm.quantize_input(datasets.to_model_input(imgs.images[:4], cfg).numpy())
    return data, x, fm.run(x)


def test_corpus_files_are_the_crafted_models():
    """The fuzz corpus holds what tests/crafted_models.py writes (`python tests/crafted_models.py
    runtime_c/fuzz/corpus` rewrites them): the same graph, whatever exporter version wrote the bytes."""
    from tsptq.tflite.reader import parse_tflite

    for name, make in CORPUS.items():
        on_disk = (FUZZ / "corpus" / name).read_bytes()
        if name == "arena_wrap_reshape.tflite":
            a, b = parse_tflite(on_disk), parse_tflite(make())
            assert [(t.name, t.shape, t.dtype) for t in a.tensors] == [(t.name, t.shape, t.dtype) for t in b.tensors]
            assert a.input.nbytes == BIG_BYTES
        else:
            with pytest.raises(ModelFileError, match="arena"):
                parse_tflite(on_disk)


# ---- (c) the C loader via ctypes, and the Python planner ------------------------------------------------------------

@pytest.mark.cc
def test_c_loader_plans_the_crafted_model_and_refuses_a_small_arena(crafted):
    from tsptq.runtime.c_build import have_compiler

    if not have_compiler():
        pytest.skip("no C compiler")
    from tsptq.errors import RuntimeCError
    from tsptq.intmodel.planner import plan
    from tsptq.runtime.c_binding import CModel
    from tsptq.tflite.reader import parse_tflite

    with pytest.raises(RuntimeCError) as e:  # never allocates the 1.43 GB
        CModel(crafted, arena_size=4096)
    assert e.value.name == "TSPTQ_ERR_ARENA_TOO_SMALL" and f"{BIG_BYTES} bytes needed" in str(e.value)
    p = plan(parse_tflite(crafted))
    assert (p.arena_size, p.persistent_size, p.activation_size) == (BIG_BYTES, 0, BIG_BYTES)


@pytest.mark.cc
def test_a_plan_past_2_gb_is_refused_by_both_readers(tmp_path, capsys):
    """Two 1.43 GB buffers live at once: C refuses the file; Python (reader, planner, `tsptq inspect`) too, where
    `inspect` used to report the arena."""
    from tsptq.runtime.c_build import have_compiler
    from tsptq.cli.main import main
    from tsptq.intmodel.planner import MAX_ARENA
    from tsptq.tflite.reader import parse_tflite

    data = arena_over_limit_add()
    with pytest.raises(ModelFileError, match=r"arena of 2,863,311,552 bytes .* limit of 2,147,483,632"):
        parse_tflite(data)
    assert MAX_ARENA == 0x7FFFFFF0
    path = tmp_path / "big.tflite"
    path.write_bytes(data)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tsptq: error:") and "2,863,311,552" in err and err.count("\n") == 1
    if have_compiler():
        from tsptq.errors import RuntimeCError
        from tsptq.runtime.c_binding import CModel

        with pytest.raises(RuntimeCError) as e:
            CModel(data, arena_size=16)
        assert e.value.name == "TSPTQ_ERR_INVALID_MODEL" and "more than 2 GB" in str(e.value)


def test_python_planner_refuses_past_the_limit():
    """plan() itself (what `inspect` and `emit-c` print) refuses a plan past MAX_ARENA, as tq_plan does."""
    from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
    from tsptq.intmodel.planner import arena_upper_bound, plan

    q = QuantParams(np.array([0.5], np.float32), np.array([0], np.int64))
    shape = (1, 1 << 14, 1 << 14, 4)  # 1 GiB each: input + output = 2 GiB > 0x7FFFFFF0
    m = IntModel([Tensor("x", shape, "int8", q), Tensor("y", shape, "int8", q)], [Op("ADD", [0, 0], [1])], [0], [1])
    assert arena_upper_bound(m) == 2 << 30
    with pytest.raises(ModelFileError, match="limit"):
        plan(m)


# ---- (a) the host agent under ASan + UBSan ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def asan_agent(tmp_path_factory) -> Path:
    from test_board_host import compile_agent

    cc = os.environ.get("CC", "cc")
    probe = subprocess.run([cc, "-fsanitize=address,undefined", "-x", "c", "-", "-o", os.devnull],
                           input="int main(void){return 0;}", capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{cc} cannot build with -fsanitize=address,undefined")
    return compile_agent(cc, tmp_path_factory.mktemp("asan") / "agent", SANITIZE)


def _rigs(agent: Path, tmp_path, monkeypatch):
    """Yields make(*agent options) -> a Rig running the sanitized agent; closes them all afterwards."""
    from test_board_host import Rig

    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")
    monkeypatch.setenv("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    rigs = []

    def make(*args: str) -> "Rig":
        d = tmp_path / f"rig{len(rigs)}"
        d.mkdir()
        rigs.append(Rig(d, [str(agent), *args], timeout=2.0, retries=3))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


@pytest.fixture
def asan_rig(asan_agent, tmp_path, monkeypatch):
    yield from _rigs(asan_agent, tmp_path, monkeypatch)


@pytest.fixture
def vnni_asan_rig(asan_agent, tmp_path, monkeypatch):
    """The same agent built for AVX-512 VNNI (whose FC weights are prepacked at prepare)."""
    from test_board_host import compile_agent
    from tsptq.runtime import c_build

    if not c_build.have_avx512vnni():
        pytest.skip("no AVX-512 VNNI here: no build prepacks its weights")
    agent = compile_agent(os.environ.get("CC", "cc"), tmp_path / "agent", SANITIZE + c_build.AVX512VNNI_FLAGS)
    yield from _rigs(agent, tmp_path, monkeypatch)


def assert_clean(rig) -> None:
    log = rig.log.read_text(errors="replace")
    assert rig.agent.poll() is None, f"the agent exited ({rig.agent.returncode}):\n{log[-3000:]}"
    assert "AddressSanitizer" not in log and "runtime error" not in log, log[-3000:]


@pytest.mark.slow
@pytest.mark.cc
def test_host_agent_answers_arena_too_small_and_keeps_serving(asan_rig, crafted, tiny):
    from tsptq.deploy.serial_link import DeviceError

    data, x, y = tiny
    rig = asan_rig()  # the default 48 MiB arena
    with pytest.raises(DeviceError) as e:
        rig.board.upload(crafted)
    assert e.value.status_name == "ARENA_TOO_SMALL", e.value
    msg = e.value.message
    assert f"needs {CRAFTED_TOTAL} bytes" in msg and f"runtime {BIG_BYTES} + input {BIG_BYTES} + output " \
        f"{BIG_BYTES} + profile 4" in msg and f"arena_capacity is {48 << 20} bytes" in msg, msg
    assert_clean(rig)
    assert rig.board.hello().model_size == 0  # nothing committed
    # it keeps serving: the next model runs bit-exact
    commit = rig.board.upload(data)
    assert not commit.skipped and commit.input_bytes == x[0].nbytes
    for i in range(len(x)):
        assert rig.board.infer(x[i].tobytes()).output == y[i].tobytes()
    # and the crafted model again, after a model was committed: refused, the committed one dropped, no crash
    with pytest.raises(DeviceError) as e:
        rig.board.upload(crafted)
    assert e.value.status_name == "ARENA_TOO_SMALL"
    assert_clean(rig)


@pytest.mark.slow
@pytest.mark.cc
def test_host_agent_capacity_check_is_exact(asan_rig, tiny):
    """An arena of exactly the bytes UPLOAD_COMMIT reports is enough; one byte less is ARENA_TOO_SMALL, and says
    how much is needed."""
    from tsptq.deploy.serial_link import DeviceError

    data, x, y = tiny
    need = asan_rig().board.upload(data).arena_size
    exact = asan_rig("--arena-capacity", str(need))
    assert exact.board.upload(data).arena_size == need
    assert exact.board.infer(x[0].tobytes()).output == y[0].tobytes()
    short = asan_rig("--arena-capacity", str(need - 1))
    with pytest.raises(DeviceError) as e:
        short.board.upload(data)
    assert e.value.status_name == "ARENA_TOO_SMALL" and f"needs {need} bytes" in e.value.message
    for rig in (exact, short):
        assert_clean(rig)


@pytest.mark.slow
@pytest.mark.cc
def test_host_agent_runs_without_the_prepacked_weights_where_they_do_not_fit(vnni_asan_rig, tiny):
    """An AVX-512 VNNI agent with a capacity too small for the prepacked weights but enough for the rest: the upload
    succeeds with the smaller arena and the outputs stay the same; any smaller capacity is ARENA_TOO_SMALL, naming
    the smaller need. ASan + UBSan watch it."""
    from tsptq.deploy.serial_link import DeviceError
    from tsptq.runtime.c_binding import CModel

    data, x, y = tiny
    prepacked = CModel(data, variant="avx512vnni").prepacked_size
    assert prepacked > 0
    full = vnni_asan_rig().board.upload(data).arena_size
    lean = full - prepacked  # the device's own part drops by exactly the prepacked bytes
    fits = vnni_asan_rig("--arena-capacity", str(full - 1))
    assert fits.board.upload(data).arena_size == lean
    assert fits.board.infer(x[0].tobytes()).output == y[0].tobytes()
    short = vnni_asan_rig("--arena-capacity", str(lean - 1))
    with pytest.raises(DeviceError) as e:
        short.board.upload(data)
    assert e.value.status_name == "ARENA_TOO_SMALL" and f"needs {lean} bytes" in e.value.message
    for rig in (fits, short):
        assert_clean(rig)


# ---- (b) mps2-an386 under QEMU --------------------------------------------------------------------------------------

@pytest.mark.qemu
@pytest.mark.slow
def test_mps2_answers_arena_too_small_and_keeps_serving(crafted, tiny):
    from test_board_mps2 import MPS2, need_tools, open_board
    from tsptq.deploy.serial_link import DeviceError
    from tsptq.deploy.targets import build, load_target

    need_tools("arm-none-eabi-gcc", "qemu-system-arm")
    t = load_target(MPS2)
    data, x, y = tiny
    rb, _, board = open_board(t, build(t))
    with rb:
        with pytest.raises(DeviceError) as e:
            board.upload(crafted)
        assert e.value.status_name == "ARENA_TOO_SMALL", e.value
        assert f"needs {CRAFTED_TOTAL} bytes" in e.value.message
        assert f"arena_capacity is {t.arena_capacity} bytes" in e.value.message
        assert rb.alive(), "QEMU exited (a fault on the board)"
        assert board.hello().model_size == 0
        board.upload(data)
        for i in range(2):
            assert board.infer(x[i].tobytes()).output == y[i].tobytes()


# ---- (d) the fuzz corpus and the device fuzz target ---------------------------------------------------------------

FUZZ_SECONDS = int(os.environ.get("TSPTQ_FUZZ_SECONDS", "20"))


def _libfuzzer(tmp_path: Path, harness: str, extra: list[str]) -> Path:
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang is not installed (apt-get install clang): no libFuzzer target")
    exe = tmp_path / Path(harness).stem
    cmd = [clang, "-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
           "-fno-sanitize-recover=all", "-I", str(ROOT / "runtime_c" / "include"), "-I",
           str(ROOT / "runtime_c" / "src"), "-I", str(ROOT / "targets" / "common"), str(FUZZ / harness), *extra,
           *CORE_SOURCES, "-lm", "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"clang cannot build a libFuzzer target here: {proc.stderr[-300:]}")
    return exe


@pytest.mark.slow
@pytest.mark.cc
def test_fuzz_targets_run_the_corpus_clean(tmp_path, tiny):
    """Regression mode: each corpus file (and a valid model) once through the loader and the device targets."""
    valid = tmp_path / "tiny.tflite"
    valid.write_bytes(tiny[0])
    files = [str(p) for p in sorted((FUZZ / "corpus").iterdir())] + [str(valid)]
    assert {Path(f).name for f in files} >= set(CORPUS)
    for harness, extra in (("fuzz_device.c", [str(ROOT / "targets" / "common" / "device.c")]),
                           ("fuzz_loader.c", [])):
        exe = _libfuzzer(tmp_path, harness, extra)
        run = subprocess.run([str(exe), *files], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "ERROR: AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr
        assert run.stderr.count("Executed ") == len(files)


@pytest.mark.slow
@pytest.mark.cc
def test_fuzz_device_smoke(tmp_path, tiny):
    """A short libFuzzer session of the device program's commit + INVOKE/OUTPUT/PROFILE, seeded with a valid model
    and the corpus."""
    exe = _libfuzzer(tmp_path, "fuzz_device.c", [str(ROOT / "targets" / "common" / "device.c")])
    seeds, corpus = tmp_path / "seeds", tmp_path / "corpus"
    seeds.mkdir()
    corpus.mkdir()
    (seeds / "tiny.tflite").write_bytes(tiny[0])
    run = subprocess.run([str(exe), f"-max_total_time={FUZZ_SECONDS}", "-max_len=40000", "-seed=1",
                          f"-artifact_prefix={tmp_path}/", str(corpus), str(seeds), str(FUZZ / "corpus")],
                         capture_output=True, text=True, timeout=FUZZ_SECONDS + 120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ERROR: AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr
    assert "Done" in run.stderr
