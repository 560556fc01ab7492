"""benchmarks/npu_cpu.py's pure logic behind the NPU variant's whole-model estimate (issue 18): which measured kernel
each variant CPU op runs, the default file's op it is matched with, the steps program's file and lines, the sums and
the bar; and its rendering by benchmarks/report.py. Synthetic models and numbers: nothing runs on
a board here (`python benchmarks/npu.py --whole-model` does)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tsptq.errors import TsptqError
from tsptq.intmodel.graph import IntModel, Op, Tensor

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def npu_cpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import npu_cpu

    return npu_cpu


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
    runs = npu_cpu.batches([step] * 5, capacity=4 + 2 * step.file_bytes)
    assert [len(r) for r in runs] == [2, 2, 1]
    assert all(len(npu_cpu.steps_file(r)) <= 4 + 2 * step.file_bytes for r in runs)
    with pytest.raises(TsptqError, match="step plane of op 0 needs"):
        npu_cpu.batches([step], capacity=step.file_bytes)


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
    assert any("the 74 CPU<->NPU switches" in line and "1 GATHER" in line for line in lines)
    assert report._npu_bar(whole_block(total_over=True)["files"]["NPU variant"]).startswith(
        "**not met**: 154.0 ms against 26.67 ms, 5.8x (127.4 ms over)")
    assert report._npu_bar(whole_block(total_over=False)["files"]["NPU variant"]).startswith("met")
    skipped = report._npu_whole_model({"whole_model": {"skipped": "target mps3-an547: qemu-system-arm not found"}})
    assert skipped[-1] == "**Whole-model estimate:** not made: target mps3-an547: qemu-system-arm not found"
