"""benchmarks/npu_cpu.py's pure logic behind the NPU variant's whole-model estimate (issue 18): which measured kernel
each variant CPU op runs, the default file's op it is matched with, the steps program's file and lines, the sums and
the bar; and its rendering by benchmarks/report.py. Synthetic models and numbers; the steps program
(benchmarks/npu_cpu_steps.c) runs on QEMU's mps3-an547 on tiny hand-made steps where QEMU and the Arm compiler are
installed (the whole estimate is `python benchmarks/npu.py --whole-model`)."""
from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from tsptq.errors import TsptqError
from tsptq.intmodel import kernels as K
from tsptq.intmodel.graph import IntModel, Op, Tensor

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import report

    return report


def model(ops: list[tuple[str, list[str], str, str, tuple]]) -> IntModel:
    """A graph from (kind, input names, output name, output dtype, output shape); inputs not written by an op are
    activations of shape (1, 4, 8) int8, except names starting with 'const' (constants)."""
    tensors: list[Tensor] = []
    index: dict[str, int] = {}

    def tensor(name, shape=(1, 4, 8), dtype="int8"):
        if name not in index:
            data = np.zeros(shape, dtype) if name.startswith("const") else None
            index[name] = len(tensors)
            tensors.append(Tensor(name, shape, dtype, data=data))
        return index[name]

    graph_ops = []
    for kind, ins, out, dtype, shape in ops:
        graph_ops.append(Op(kind, [tensor(n) for n in ins], [tensor(out, shape, dtype)]))
    return IntModel(tensors, graph_ops, [0], [len(tensors) - 1])


DEFAULT = [("TSPTQ_LAYERNORM_2S", ["x", "const_g"], "norm1", "int8", (1, 4, 8)),
           ("TSPTQ_GELU_2S", ["norm1", "const_lut"], "gelu", "uint8", (1, 4, 16)),
           ("TSPTQ_FC_2S", ["gelu", "const_w2"], "fc2", "int8", (1, 4, 8)),
           ("TSPTQ_ADD_2S", ["x", "fc2"], "out", "int8", (1, 4, 8))]
VARIANT = [("TSPTQ_LAYERNORM_2S_I16", ["x", "const_g"], "norm1", "int16", (1, 4, 8)),
           ("FULLY_CONNECTED_16X8", ["norm1", "const_w"], "fc1", "int16", (1, 4, 16)),
           ("TSPTQ_GELU_2S", ["fc1", "const_lut"], "gelu", "int16", (1, 4, 16)),
           ("FULLY_CONNECTED_16X8", ["gelu", "const_w2"], "fc2", "int16", (1, 4, 8)),
           ("TSPTQ_ADD_2S_I16", ["x", "fc2"], "out", "int8", (1, 4, 8))]
CPU = [0, 2, 4]  # the variant's custom ops


def test_an_int16_gelu_table_is_a_step_of_its_own_and_an_unknown_op_is_refused(npu_cpu):
    assert npu_cpu.cost_key("TSPTQ_GELU_2S", "int16") == "TSPTQ_GELU_2S int16"
    assert npu_cpu.parts_of(npu_cpu.cost_key("TSPTQ_GELU_2S", "int16")) == (None, "gelu16")
    assert npu_cpu.parts_of(npu_cpu.cost_key("TSPTQ_GELU_2S", "uint8")) == ("TSPTQ_GELU_2S", None)
    assert npu_cpu.parts_of("TSPTQ_LAYERNORM_2S_I16") == ("TSPTQ_LAYERNORM_2S", "ln_tail")
    assert npu_cpu.parts_of("TSPTQ_PV_SUM_2S") == (None, "pv_sum")  # no C runtime kernel: measured as a step
    with pytest.raises(TsptqError, match="TSPTQ_NEW_OP: no measured CPU kernel"):
        npu_cpu.parts_of("TSPTQ_NEW_OP")


def test_the_cpu_ops_must_be_what_vela_left_on_the_cpu(npu_cpu):
    v = model(VARIANT)
    assert npu_cpu.cpu_ops(v, {"TSPTQ_LAYERNORM_2S_I16": 1, "TSPTQ_GELU_2S": 1, "TSPTQ_ADD_2S_I16": 1}) == CPU
    with pytest.raises(TsptqError, match="not the file's custom ops"):  # Vela also left the FC on the CPU
        npu_cpu.cpu_ops(v, {"TSPTQ_LAYERNORM_2S_I16": 1, "TSPTQ_GELU_2S": 1, "TSPTQ_ADD_2S_I16": 1,
                            "FULLY_CONNECTED": 1})


def test_each_variant_op_is_matched_with_the_default_op_writing_its_tensor(npu_cpu):
    d, v = model(DEFAULT), model(VARIANT)
    # LayerNorm and the add share the default kernels; the int16 GELU table has none (a step only)
    assert npu_cpu.shared_counterparts(d, v, CPU) == {0: 0, 4: 3}
    wrong = model([("TSPTQ_SOFTMAX_2S", ["x"], "norm1", "int8", (1, 4, 8))] + DEFAULT[1:])
    with pytest.raises(TsptqError, match="norm1: the default file writes it with TSPTQ_SOFTMAX_2S, not "
                                         "TSPTQ_LAYERNORM_2S"):
        npu_cpu.shared_counterparts(wrong, v, CPU)


def test_sums_by_kind_count_elements_of_the_largest_activation(npu_cpu):
    v = model(VARIANT)
    kinds = npu_cpu.by_key(v, CPU, shared={0: 1000.0, 4: 500.0}, step={0: 40.0, 2: 64.0, 4: 8.0})
    assert kinds["TSPTQ_LAYERNORM_2S_I16"] == {"ops": 1, "elements": 32, "shared_kernel": 1000.0,
                                               "variant_step": 40.0, "instructions": 1040.0}
    assert kinds["TSPTQ_GELU_2S int16"]["elements"] == 64  # (1, 4, 16), not the constant table
    assert list(kinds) == ["TSPTQ_LAYERNORM_2S_I16", "TSPTQ_ADD_2S_I16", "TSPTQ_GELU_2S int16"]  # largest first


def test_the_whole_model_is_vela_plus_the_cpu_at_the_clock_and_the_bar_says_by_how_much(npu_cpu):
    w = npu_cpu.whole_model(npu_s=0.020, cpu_instructions=65e6, clock_hz=500e6, stock_s=0.030)
    assert w["cpu_s"] == pytest.approx(0.130) and w["total_s"] == pytest.approx(0.150)
    assert w["met"] is False and w["ratio"] == pytest.approx(5.0) and w["over_s"] == pytest.approx(0.120)
    assert npu_cpu.whole_model(0.020, 2.5e6, 500e6, 0.030)["met"] is True  # 25 ms
    assert "met" not in npu_cpu.whole_model(0.020, 1e6, 500e6, None)


def test_steps_are_split_into_runs_that_fit_the_boards_buffer(npu_cpu):
    step = npu_cpu.Step(0, "plane", [5, 0, 8, 0], [np.zeros(5, np.uint8)], b"")
    assert step.file_bytes == 4 * (npu_cpu.STEP_ARGS + npu_cpu.STEP_DATA) + 8
    runs = npu_cpu.batches([step] * 5, capacity=4 + 2 * step.file_bytes, arena=0)
    assert [len(r) for r in runs] == [2, 2, 1]
    assert all(len(npu_cpu.steps_file(r)) <= 4 + 2 * step.file_bytes for r in runs)
    with pytest.raises(TsptqError, match="step plane of op 0 needs"):
        npu_cpu.batches([step], capacity=step.file_bytes, arena=0)


def test_a_step_whose_output_exceeds_the_boards_arena_is_refused(npu_cpu):
    step = npu_cpu.Step(3, "plane", [5, 0, 8, 0], [np.zeros(5, np.uint8)], bytes(5))
    assert npu_cpu.batches([step], capacity=1 << 20, arena=5) == [[step]]
    with pytest.raises(TsptqError, match=r"^step plane of op 3 writes 5 B, more than the 4 B arena of mps3-an547$"):
        npu_cpu.batches([step], capacity=1 << 20, arena=4)


def test_the_steps_file_pads_each_array_and_the_lines_are_checked_and_less_the_timing(npu_cpu):
    x = np.arange(5, dtype=np.uint8)
    step = npu_cpu.Step(0, "plane", [5, 0, 8, 0], [x], b"\x01\x02")
    blob = npu_cpu.steps_file([step, step])
    words = npu_cpu.STEP_ARGS + npu_cpu.STEP_DATA
    assert len(blob) == 4 + 2 * (4 * words + 8)  # 5 bytes padded to 8
    head = struct.unpack(f"<i{words}i", blob[:4 + 4 * words])
    assert head[:6] == (2, npu_cpu.STEP_KINDS["plane"], 5, 0, 8, 0)
    assert head[1 + npu_cpu.STEP_ARGS:] == (5, 0, 0)
    crc = zlib.crc32(b"\x01\x02")
    text = f"empty 0 ticks 1 crc 0\nstep 0 ticks 101 crc {crc}\nstep 1 ticks 1 crc {crc}\n"
    assert npu_cpu.parse_steps_output(text, [step, step], 31.25) == [3125.0, 0.0]
    with pytest.raises(TsptqError, match=r"step 1 \(plane\) does not compute the integer model's bytes"):
        npu_cpu.parse_steps_output(text.replace(f"step 1 ticks 1 crc {crc}", "step 1 ticks 1 crc 7"), [step, step],
                                   31.25)
    with pytest.raises(TsptqError, match="expected 2 steps"):
        npu_cpu.parse_steps_output("empty 0 ticks 1 crc 0\n", [step, step], 31.25)


def whole_block(total_over: bool) -> dict:
    f = {"npu_s": 0.02022, "cpu_instructions": 66_915_281, "cpu_s": 0.13383, "total_s": 0.15405, "stock_s": 0.02667,
         "met": not total_over, "ratio": 5.776, "over_s": 0.12738, "clock_hz": 500e6, "npu_parts": 38,
         "switches": 74, "stock_cpu_ops": {"GATHER": 1},
         "by_kind": {"TSPTQ_PLANE_2S": {"ops": 12, "elements": 202_800, "shared_kernel": 0.0,
                                        "variant_step": 3_039_406.0, "instructions": 3_039_406.0}}}
    return {"board": "mps3-an547", "qemu": "QEMU 7.2", "icount": "-icount shift=0",
            "compiler": "arm-none-eabi-gcc 12.2.1", "cflags": "-O2", "instructions_per_tick": 31.25,
            "default_file": {"instructions_median": 77_601_344, "images": 5}, "files": {"NPU variant": f},
            "date": "2026-01-01", "machine": "2 cores"}


def test_the_report_renders_the_whole_model_bar_and_the_per_kind_counts(report):
    lines = report._npu_whole_model({"whole_model": whole_block(total_over=True)})
    assert "| NPU variant | 20.22 ms | 66,915,281 | 133.83 ms | 154.05 ms | 26.67 ms | **not met** (5.8x) |" in lines
    assert "| TSPTQ_PLANE_2S | 12 | 0 | 3,039,406 | 3,039,406 | 15.0 |" in lines
    assert any("CPU<->NPU switches (NPU variant: 74 switches, 38 NPU parts;" in line
               and "the stock file's CPU op (1 GATHER)." in line for line in lines)
    assert report._npu_bar(whole_block(total_over=True)["files"]["NPU variant"]).startswith(
        "**not met**: 154.0 ms against 26.67 ms, 5.8x (127.4 ms over)")
    assert report._npu_bar(whole_block(total_over=False)["files"]["NPU variant"]).startswith("met")
    skipped = report._npu_whole_model({"whole_model": {"skipped": "target mps3-an547: qemu-system-arm not found"}})
    assert skipped[-1] == "**Whole-model estimate:** not made: target mps3-an547: qemu-system-arm not found"


def test_each_files_switches_are_shown_and_the_stock_ops_plural_follows_the_count(report):
    block = whole_block(total_over=True)
    pv = {**block["files"]["NPU variant"], "switches": 50, "npu_parts": 26}
    block["files"]["NPU variant, --pv-on-cpu"] = pv
    (line,) = [x for x in report._npu_whole_notes(block) if x.startswith("- Not counted")]
    assert "(NPU variant: 74 switches, 38 NPU parts; NPU variant, --pv-on-cpu: 50 switches, 26 NPU parts;" in line
    block["files"]["NPU variant"]["stock_cpu_ops"] = {"TRANSPOSE": 12}
    (line,) = [x for x in report._npu_whole_notes(block) if x.startswith("- Not counted")]
    assert line.endswith("and the stock file's CPU ops (12 TRANSPOSE).")
    block["files"]["NPU variant"]["stock_cpu_ops"] = {"GATHER": 1, "TRANSPOSE": 12}
    (line,) = [x for x in report._npu_whole_notes(block) if x.startswith("- Not counted")]
    assert line.endswith("and the stock file's CPU ops (1 GATHER, 12 TRANSPOSE).")


# ---- the tools: a QEMU run past its time, a target without -icount, --whole-model --only without stored results ---

def test_a_qemu_run_past_its_timeout_is_a_one_line_error(npu_cpu, monkeypatch):
    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(npu_cpu.subprocess, "run", hang)
    with pytest.raises(TsptqError, match=r"^npu_cpu_steps on mps3-an547: qemu-system-arm did not finish within "
                                         r"1800 s$"):
        npu_cpu.run_program(["qemu-system-arm", "-M", "mps3-an547"], Path("steps.elf"), b"")


def test_the_counts_need_qemus_icount(npu_cpu, monkeypatch):
    assert npu_cpu.icount(["qemu-system-arm", "-icount", "shift=0", "-display", "none"]) == "-icount shift=0"
    for qemu in (["qemu-system-arm", "-display", "none"], ["qemu-system-arm", "-icount"]):
        with pytest.raises(TsptqError, match="no `-icount shift=0`"):
            npu_cpu.icount(qemu)
    # measure() refuses before it profiles anything
    import tsptq.deploy.targets as targets

    real = targets.load_target

    def no_icount(name):
        t = real(name)
        return dataclasses.replace(t, qemu=tuple(a for a in t.qemu if a not in ("-icount", "shift=0")))

    monkeypatch.setattr(targets, "load_target", no_icount)
    monkeypatch.setattr(npu_cpu, "profile_default", lambda *a: pytest.fail("profiled without -icount"))
    with pytest.raises(TsptqError, match="no `-icount shift=0`"):
        npu_cpu.measure(None, {}, np.zeros((1, 4), np.int8), {})


def test_whole_model_only_a_model_without_stored_results_is_an_error(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import npu

    monkeypatch.setattr(npu, "RESULTS", tmp_path)
    monkeypatch.setattr(npu.report, "main", lambda argv: pytest.fail("the page was written"))
    assert npu.main(["--whole-model", "--only", "cifar10-vit"]) == 1
    err = capsys.readouterr().err
    assert "cifar10-vit: no stored results (npu-cifar10-vit.json)" in err
    assert not (tmp_path / "npu-cifar10-vit.json").exists()


# ---- npu_cpu_steps.c against npu_cpu.py ---------------------------------------------------------------------------

def test_the_steps_programs_constants_and_kinds_are_npu_cpus(npu_cpu):
    c = (BENCHMARKS / "npu_cpu_steps.c").read_text()

    def define(name):
        (m,) = re.findall(rf"^#define {name} (.+)$", c, re.M)
        return m.strip()

    assert int(define("STEP_ARGS")) == npu_cpu.STEP_ARGS
    assert int(define("STEP_DATA")) == npu_cpu.STEP_DATA
    assert define("STEPS_FILE") == f'"{npu_cpu.STEPS_FILE}"'
    for fn in ("run_step", "step_output_bytes"):  # both switches know every kind, and nothing else
        body = re.search(rf"^static \w+ {fn}\(.*?^}}$", c, re.M | re.S)
        assert body, fn
        assert sorted(int(k) for k in re.findall(r"^\s*case (\d+):", body.group(0), re.M)) == \
            sorted(npu_cpu.STEP_KINDS.values()), fn
    # the header's list of kinds names the same numbers
    listed = dict(re.findall(r"^ \*\s+(\d) ([A-Z_0-9]+)\s", c, re.M))
    assert {name.lower(): int(k) for k, name in listed.items()} == npu_cpu.STEP_KINDS


# ---- the steps program on QEMU ------------------------------------------------------------------------------------

@pytest.fixture
def board(npu_cpu):
    why = npu_cpu.missing_tools()
    if why:
        pytest.skip(why)
    return npu_cpu.steps_program()


def tiny_steps(npu_cpu) -> list:
    """One step of each kind on small hand-made tensors (odd sizes: the file's padding), its expected bytes from the
    Python integer kernels or docs/integer-semantics.md "The NPU variant"."""
    rng = np.random.default_rng(18)
    Step = npu_cpu.Step
    out = []
    # ln_tail: (y_c - out_zp) << k_c as int16 (the doc's TSPTQ_LAYERNORM_2S_I16)
    y = rng.integers(-128, 128, (3, 5)).astype(np.int8)
    k = np.array([0, 1, 3, 7, 2], np.int8)
    out.append(Step(0, "ln_tail", [3, 5, -4], [y, k],
                    ((y.astype(np.int64) + 4) << k.astype(np.int64)).astype(np.int16).tobytes()))
    # add_sat: sat8(b + b_zp), saturating both ways
    b = np.array([[-32768, -300, -129, 0, 5], [100, 122, 123, 200, 32767]], np.int16)
    out.append(Step(1, "add_sat", [2, 5, 5], [b], K.saturate(b.astype(np.int64) + 5, np.int8).tobytes()))
    # gelu16: table[q + 128] for int8 codes, table[q] for uint8 ones
    table = rng.integers(-32768, 32768, 256).astype(np.int16)
    x8 = np.array([-128, -1, 0, 1, 127, 42, -77], np.int8)
    xu = np.array([0, 1, 127, 128, 255, 42, 200], np.uint8)
    out.append(Step(2, "gelu16", [7, 1], [x8, table], K.lookup(x8, table).astype(np.int16).tobytes()))
    out.append(Step(3, "gelu16", [7, 0], [xu, table], K.lookup(xu, table).astype(np.int16).tobytes()))
    # plane: both planes, signed and unsigned fine fields
    code = rng.integers(0, 256, 11).astype(np.uint8)
    for n, (plane, signed) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        out.append(Step(4 + n, "plane", [11, plane, 8, signed], [code],
                        K.plane_2s(code, plane, 8, bool(signed)).astype(np.int8).tobytes()))
    # pv_sum: rows 3, N 5, M 7; bits 8, m 3, signed fine, b_zp -2
    fine = rng.integers(-4000, 4000, (3, 7)).astype(np.int32)
    coarse = rng.integers(-500, 500, (3, 7)).astype(np.int32)
    p = rng.integers(0, 256, (3, 5)).astype(np.uint8)
    mult, shift = 1518500250, -3
    out.append(Step(8, "pv_sum", [3, 5, 7, 8, 3, 1, -2, mult, shift, 9], [fine, coarse, p],
                    K.pv_sum_2s(fine, coarse, p, 8, 3, True, -2, mult, shift, 9).astype(np.int8).tobytes()))
    # ln16: TSPTQ_LAYERNORM_2S_I16 on an int16 x (rows 3, D 5), eps with both words set; gamma then beta in one array
    x16 = rng.integers(-32768, 32768, (3, 5)).astype(np.int16)
    g = rng.integers(2**20, 2**22, 5).astype(np.int32)
    bb = rng.integers(-(2**44), 2**44, 5).astype(np.int64)
    ksh = np.array([0, 1, 3, 7, 2], np.int8)
    eps = 3 * 2**33 + 5
    want = K.layernorm_2s_i16(x16, 0, np.zeros(5, np.int8), g, bb, eps, -2, 46, ksh)
    lo, hi = (int(w) for w in np.array([eps], "<i8").view("<i4"))
    out.append(Step(9, "ln16", [3, 5, lo, hi, -2, 46], [x16, np.concatenate([g.view(np.uint8), bb.view(np.uint8)]),
                                                        ksh], want.astype(np.int16).tobytes()))
    # ln_neg_mean and ln_rstd: the NPU LayerNorm's row statistics of an int16 x (rows 3, D 5); eps with both words set
    out.append(Step(11, "ln_neg_mean", [3, 5], [x16], K.ln_neg_mean(x16).astype(np.int16).tobytes()))
    out.append(Step(12, "ln_rstd", [3, 5, lo, hi, 30], [x16], K.ln_rstd(x16, eps, 30).astype(np.int16).tobytes()))
    # token_mean16: (B, T, D) = (2, 5, 3), first 1, per-channel shifts
    x = (rng.integers(-255, 256, (2, 5, 3)) << np.array([0, 2, 7])).astype(np.int16)
    sh = np.array([0, 2, 7], np.int8)
    out.append(Step(10, "token_mean16", [2, 5, 3, 1], [x, sh], K.token_mean_i16(x, sh, 1).astype(np.int16).tobytes()))
    return out


def test_every_step_kind_computes_the_integer_models_bytes_on_the_board(npu_cpu, board):
    steps = tiny_steps(npu_cpu)
    assert {st.name for st in steps} == set(npu_cpu.STEP_KINDS)
    assert all(len(set(st.expected)) > 1 for st in steps)  # no all-zero (or constant) outputs to agree on trivially
    counts = npu_cpu.run_steps(steps)  # every output's CRC checked against the expected bytes
    # a count is in SysTick ticks (31.25 instructions) less the timing's own: a Helium step on a few values may be 0
    assert len(counts) == len(steps) and all(c >= 0 for c in counts) and sum(counts) > 0, counts
    wrong = steps[-1]
    wrong.expected = bytes([wrong.expected[0] ^ 1]) + wrong.expected[1:]
    with pytest.raises(TsptqError, match=r"step 0 \(token_mean16\) does not compute the integer model's bytes"):
        npu_cpu.run_steps([wrong])


def raw_step(npu_cpu, kind: int, args: list[int], lengths: list[int]) -> bytes:
    a = [kind, *args] + [0] * (npu_cpu.STEP_ARGS - 1 - len(args))
    return struct.pack(f"<{npu_cpu.STEP_ARGS}i{npu_cpu.STEP_DATA}i", *a, *lengths)


def test_the_steps_program_checks_its_file_and_the_arena_and_says_which_step(npu_cpu, board):
    target, program = board
    ok = raw_step(npu_cpu, 4, [4, 0, 8, 0], [4, 0, 0]) + bytes(4)
    cases = {
        "ends inside the step's header": raw_step(npu_cpu, 4, [4, 0, 8, 0], [4, 0, 0])[:20],
        "ends inside the step's arrays": raw_step(npu_cpu, 4, [4, 0, 8, 0], [64, 0, 0]) + bytes(4),
        "a negative array length": raw_step(npu_cpu, 4, [4, 0, 8, 0], [-8, 0, 0]),
        "an unknown step kind": raw_step(npu_cpu, max(npu_cpu.STEP_KINDS.values()) + 1, [4], [0, 0, 0]),
        "its output does not fit the arena": raw_step(npu_cpu, 4, [target.arena_capacity + 1, 0, 8, 0], [0, 0, 0]),
        "does not fit the arena ": raw_step(npu_cpu, 4, [-1, 0, 8, 0], [0, 0, 0]),  # a negative size
    }
    for why, blob in cases.items():
        with pytest.raises(TsptqError, match=rf"failed \(exit 1\): npu_cpu_steps: step 1: .*{re.escape(why.strip())}"):
            npu_cpu.run_program(target.qemu, program, struct.pack("<i", 2) + ok + blob)
