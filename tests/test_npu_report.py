"""`tsptq npu-report` (tsptq.npu.vela): Vela's real outputs read into a report, one-line errors, and the tsptq
cifar10-vit file's TSPTQ_* custom ops reported on the CPU.

The tests that run Vela skip when ethos-u-vela (the `npu` extra, part of the `test` extra) is not importable."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tsptq.cli.main import main
from tsptq.errors import ModelFileError
from tsptq.npu import vela
from tsptq.npu.graph_ops import ETHOS_U_OP, graph_ops, parse_model
from tsptq.npu.single_op import TensorSpec as T, single_op_tflite
from tsptq.npu.vela import VelaError, compile_report, cpu_reasons, format_report, last_error_line

needs_vela = pytest.mark.skipif(vela.vela_version() is None,
                                reason=f"ethos-u-vela is not importable (the 'npu' extra: {vela.INSTALL_HINT})")

N, C, H = 16, 64, 32


def fc_file() -> bytes:
    """A builtin-only model: one int8 FULLY_CONNECTED, 16 tokens x 64 -> 32 features."""
    w = (np.arange(H * C).reshape(H, C) % 15 - 7).astype(np.int8)
    return single_op_tflite("FULLY_CONNECTED",
                            [T((1, N, C), "int8", 0.05, -3), T((H, C), "int8", 0.01, data=w),
                             T((H,), "int32", 5e-4, data=np.arange(H))],
                            [T((1, N, H), "int8", 0.1, 2)], {"keepNumDims": True}, 5)


def gelu16_file() -> bytes:
    """One int16 GELU, which Vela leaves to the CPU on an Ethos-U55 (measured: docs/npu.md)."""
    return single_op_tflite("GELU", [T((1, N, C), "int16", 5e-4)], [T((1, N, C), "int16", 5e-4)])


@pytest.fixture
def fc_path(tmp_path):
    path = tmp_path / "fc.tflite"
    path.write_bytes(fc_file())
    return path


# ---- without Vela: the file's ops and MACs, the parsers, the errors ---------------------------------------------

def test_graph_ops_counts_macs_from_shapes():
    ops = graph_ops(parse_model(fc_file()))
    assert [(o.type, o.macs, o.output) for o in ops] == [("FULLY_CONNECTED", N * C * H, "out0")]


def test_vela_log_parsers():
    log = ("Warning (supported operators) operator: CUSTOM, ofm: 'blocks.0.fc1'\nReason: Unsupported opType\n\n"
           "Warning (supported operators) operator: RESHAPE, ofm: 'norm.class_vector'\n"
           "Reason: Operation does not support per-axis quantization\nPer-axis quantization is not supported.\n"
           "Warning (supported operators) operator: CUSTOM, ofm: 'blocks.1.fc1'\nReason: Unsupported opType\n")
    assert cpu_reasons(log, {"blocks.0.fc1": "TSPTQ_FC_2S", "blocks.1.fc1": "TSPTQ_FC_2S"}) == {
        "CUSTOM TSPTQ_FC_2S: Unsupported opType": ["blocks.0.fc1", "blocks.1.fc1"],
        "RESHAPE: Operation does not support per-axis quantization": ["norm.class_vector"]}
    tb = ('Traceback (most recent call last):\n  File "vela.py", line 1317, in main\n'
          '    compiled = regor.compile(...)\nRuntimeError: Compilation failed: Error: Out of bounds\n')
    assert last_error_line(tb) == "RuntimeError: Compilation failed: Error: Out of bounds"
    assert last_error_line("Error: something\nsome trailing note\n") == "Error: something"


@pytest.mark.parametrize("content,message", [
    (None, "cannot read (no such file or directory)"),
    (b"", "not a TFLite file (0 bytes"),
    (b"PK\x03\x04" + bytes(60), "not a TFLite file (file identifier"),
    (b"\xff\xff\xff\x7fTFL3" + bytes(8), "corrupted or truncated TFLite file"),
])
def test_files_that_are_no_tflite_model_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "m.tflite"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=re.escape(message)) as e:
        compile_report(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    assert main(["npu-report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tsptq: error: {path}: ") and err.count("\n") == 1


def _crafted(edit) -> bytes:
    """A valid single-op file with one field broken by ``edit(model)``, packed again."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S
    m = S.ModelT.InitFromPackedBuf(single_op_tflite("ADD", [T((1, 4, 8)), T((1, 4, 8))], [T((1, 4, 8))]), 0)
    edit(m)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_crafted_files_are_one_line_errors_or_read_safely(tmp_path, capsys):
    def bad_opcode(m):
        m.subgraphs[0].operators[0].opcodeIndex = 5

    def no_inputs(m):
        m.subgraphs[0].operators[0].inputs = None

    def bad_name(m):
        m.subgraphs[0].tensors[2].name = b"\xff\xfe"

    path = tmp_path / "x.tflite"
    path.write_bytes(_crafted(bad_opcode))
    assert main(["npu-report", str(path)]) == 2
    assert capsys.readouterr().err == f"tsptq: error: {path}: op 0 names operator code 5; the file has 1\n"
    # a missing inputs vector has no MACs to count; an undecodable name is replaced, not raised
    for edit in (no_inputs, bad_name):
        ops = graph_ops(parse_model(_crafted(edit)))
        assert [o.type for o in ops] == ["ADD"] and ops[0].macs == 0


def test_missing_vela_names_the_extra(fc_path, monkeypatch, capsys):
    monkeypatch.setattr(vela, "vela_version", lambda: None)
    with pytest.raises(VelaError, match=r"Vela \(ethos-u-vela\) is not installed: pip install -e '\.\[npu\]'"):
        compile_report(fc_path)
    assert main(["npu-report", str(fc_path)]) == 2
    assert "ethos-u-vela==" in capsys.readouterr().err


def test_unknown_accelerator_is_refused(fc_path):
    with pytest.raises(VelaError, match="unknown accelerator 'ethos-u99'"):
        compile_report(fc_path, "ethos-u99")


def test_the_pin_is_the_extra(tmp_path):
    import tomllib

    from tsptq.paths import REPO_ROOT

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["npu"] == [f"{vela.VELA_PACKAGE}=={vela.VELA_VERSION}"]
    assert "tsptq[npu]" in extras["test"]  # the test install (make test / make check, CI) has Vela


# ---- with Vela ---------------------------------------------------------------------------------------------------

@needs_vela
def test_report_of_a_builtin_model_from_velas_real_output(fc_path, tmp_path):
    r = compile_report(fc_path)
    assert (r.accelerator, r.system_config, r.memory_mode) == ("ethos-u55-128", "Ethos_U55_High_End_Embedded",
                                                               "Shared_Sram")
    assert r.vela_version == vela.VELA_VERSION
    assert (r.ops_total, r.ops_npu, r.ops_cpu) == (1, {"FULLY_CONNECTED": 1}, {})
    assert r.macs_total == r.macs_npu == r.vela_macs == N * C * H and r.npu_mac_fraction == 1.0
    assert (r.npu_parts, r.switches) == (1, 0)
    assert r.core_clock_hz == 500e6 and 0 < r.inference_time_s < 1e-3
    assert r.sram_bytes > 0 and r.off_chip_flash_bytes > 0 and r.cpu_reasons == {}
    compiled = graph_ops(parse_model(r.compiled))
    assert [o.type for o in compiled] == [ETHOS_U_OP]
    text = format_report(r)
    assert "ops on the NPU   1 of 1 (FULLY_CONNECTED 1)" in text and "(100.0%)" in text
    # the compiled file and Vela's CSVs, written as a group; nothing else
    out = tmp_path / "out"
    written = vela.write_outputs(r, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    assert (out / "fc_vela.tflite").read_bytes() == r.compiled
    assert {p.name for p in written} >= {"fc_vela.tflite", "fc_per-layer.csv",
                                         "fc_summary_Ethos_U55_High_End_Embedded.csv"}


@needs_vela
def test_an_op_vela_leaves_on_the_cpu(tmp_path):
    path = tmp_path / "gelu16.tflite"
    path.write_bytes(gelu16_file())
    r = compile_report(path)
    assert (r.ops_npu, r.ops_cpu, r.npu_parts) == ({}, {"GELU": 1}, 0)
    assert list(r.cpu_reasons) == ["GELU: Unsupported IFM type: Int16"]
    # an Ethos-U85 takes a 16x8 BATCH_MATMUL that the U55 refuses (docs/npu.md): the accelerator reaches Vela
    bmm = tmp_path / "bmm16.tflite"
    bmm.write_bytes(single_op_tflite("BATCH_MATMUL", [T((1, N, C), "int16", 5e-4), T((1, C, N), "int16", 5e-4)],
                                     [T((1, N, N), "int16", 5e-4)], {}, 4))
    assert compile_report(bmm).ops_cpu == {"BATCH_MATMUL": 1}
    u85 = compile_report(bmm, "ethos-u85-256")
    assert u85.ops_npu == {"BATCH_MATMUL": 1} and u85.system_config == "Ethos_U85_SYS_DRAM_Mid"


@needs_vela
def test_vela_failure_is_its_last_error_line(tmp_path, capsys):
    from ai_edge_litert import schema_py_generated as S
    from flatbuffers import Builder

    m = S.ModelT.InitFromPackedBuf(single_op_tflite("ADD", [T((1, 4, 8)), T((1, 4, 8))], [T((1, 4, 8))]), 0)
    m.subgraphs[0].operators[0].inputs = [0, 7]  # a tensor that does not exist
    b = Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(b.Output()))
    with pytest.raises(VelaError, match=r": Vela failed: RuntimeError: .*Out of bounds") as e:
        compile_report(path)
    assert "\n" not in str(e.value)
    assert main(["npu-report", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written


@needs_vela
def test_cli_prints_the_table_and_writes_the_compiled_file(fc_path, tmp_path, capsys):
    out, js = tmp_path / "npu", tmp_path / "r.json"
    assert main(["npu-report", str(fc_path), "--out", str(out), "--json", str(js)]) == 0
    table = capsys.readouterr().out
    assert "MACs on the NPU  32,768 of 32,768 (100.0%)" in table and "estimated time" in table
    assert (out / "fc_vela.tflite").is_file()
    data = json.loads(js.read_text())
    assert data["ops_npu"] == {"FULLY_CONNECTED": 1} and data["npu_mac_fraction"] == 1.0
    assert "compiled" not in data


@needs_vela
@pytest.mark.slow
def test_tsptq_cifar10_vit_custom_ops_run_on_the_cpu(cifar_vit, tmp_path):
    path = tmp_path / "cifar10-vit-tsptq.tflite"
    path.write_bytes(cifar_vit.tflite("tsptq"))
    r = compile_report(path)
    custom = {k: v for k, v in r.ops_cpu.items() if k.startswith("TSPTQ_")}
    assert set(custom) == {"TSPTQ_FC_2S", "TSPTQ_BMM_2S", "TSPTQ_ADD_2S", "TSPTQ_LAYERNORM_2S", "TSPTQ_SOFTMAX_2S",
                           "TSPTQ_GELU_2S"}
    assert not any(k.startswith("TSPTQ_") for k in r.ops_npu)
    assert all(f"CUSTOM {k}: Unsupported opType" in r.cpu_reasons for k in custom)
    assert r.ops_total == 140 and r.macs_total == 58_002_176  # 6 blocks, 128 dims, 65 tokens at 32 px
    assert r.npu_mac_fraction < 0.1 and r.switches > 40  # issue 18: 6.3%, 49 switches


def test_the_op_support_cases_are_single_op_files():
    from tsptq.npu.op_support import cases

    for case in cases():
        ops = graph_ops(parse_model(case.tflite()))
        assert [o.type for o in ops] == [case.op], case.variant
