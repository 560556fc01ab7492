"""Issue 14, item 7: the two readers of a .tflite file agree.

The Python reader (tsptq.tflite.reader.parse_tflite: `verify`, `inspect`, `eval`, `emit-c`) must refuse every file the
C loader (tsptq_load: the device program, `--engine c`) refuses, with the same limits: zero points in the range of
their dtype, the 2 GB tensor and arena limits, option ranges, accumulators that cannot overflow, the flatbuffer's
bounds. A seeded corpus of a few hundred mutants of small exported files (byte flips, interesting 32/64-bit values,
field edits through the schema's object API) goes through both; on every one:

- C refuses  -> Python refuses (no exception: TSPTQ_MAX_TENSORS/OPS, the capacity of a C build, not of the file);
- C accepts  -> Python accepts, or refuses for one of the documented reasons it is stricter
  (tsptq.tflite.checks, "the C loader's checks"): the object API unpacks tables the C loader never reads; custom
  options are decoded as a whole map (keys C never reads included); the metadata JSON (C reads only the
  'tsptq_format' entry) must be valid and agree with it; two-scale descriptions must be well formed and equal the
  tensors' own details, their scale vectors and the in_shift of the ops they feed.

Plus targeted tests: zero points out of range per dtype (an int8 weight zero point of 2147483648 used to pass
`tsptq verify`), and the arena past 2 GB (`tsptq inspect` used to report it: tests/test_hardening_memory.py).
"""
from __future__ import annotations

import re
import struct
from collections import Counter

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as S

from tflite_edit import repack
from tsptq.runtime.c_build import have_compiler
from tsptq.errors import ModelFileError, TsptqError
from tsptq.tflite.reader import parse_tflite, read_tflite

METHODS = ("tsptq", "minmax", "ptf-log2", "twin")
BYTE_MUTANTS, FIELD_MUTANTS = 100, 55  # per method file (and the per-head scores file): 775 mutants in all

# Why the Python reader may refuse a file the C loader accepts (each documented in tsptq.tflite.reader).
PYTHON_STRICTER = {
    "object API": r"corrupted or truncated flatbuffer \(",
    # the C loader reads only the 'tsptq_format' entry, never the JSON (tests/test_two_scale_source.py)
    "metadata JSON": r"the 'tsptq' metadata is not valid JSON|the 'tsptq' metadata has no format/version fields|no "
                     r"'tsptq' metadata entry: the JSON|the 'tsptq' metadata points to buffer|tsptq metadata is "
                     r"version|unknown tsptq metadata version|the 'tsptq' metadata is version .* 'tsptq_format' "
                     r"entry version|the 'tsptq' metadata's two_scale entry is not a map",
    "whole custom options map": r"unreadable custom options \(",
    "two-scale description": r"unreadable custom quantization details|bad two-scale code description|metadata and "
                             r"graph disagree on two-scale tensor|has a two-scale code that the metadata does not "
                             r"describe|metadata entry for two-scale tensor .* is not a map|metadata describes "
                             r"two-scale tensor|in_shift disagrees with the quantization details",
}
# C refuses for the capacity of its build, not for the file (Python has no such capacity).
C_CAPACITY = ("TSPTQ_ERR_TOO_MANY",)

pytestmark = [pytest.mark.cc, pytest.mark.skipif(not have_compiler(), reason="no C compiler (set CC or install gcc)")]


@pytest.fixture(scope="module")
def tiny_files():
    from tiny_vit import tiny_vit
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize
    from tsptq.tflite.writer import to_tflite

    from tiny_vit import force_per_head_scores

    _, graph, cal, _ = tiny_vit(16)
    files = {m: to_tflite(lower(quantize(graph, cal, m, progress=False))) for m in METHODS}
    # a per-head scores code: TSPTQ_BMM_HEADS, per-head scales and zero points, an exp table per head
    files["tsptq-heads"] = to_tflite(lower(force_per_head_scores(quantize(graph, cal, "tsptq-heads", progress=False))))
    return files


def py_load(data: bytes):
    try:
        parse_tflite(data)
    except TsptqError as e:
        return f"{type(e).__name__}: {e}"
    return None  # anything else raised fails the test: the reader raises only the project's errors


# ---- the mutant corpus ---------------------------------------------------------------------------------------------

INTERESTING32 = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 1 << 24, (1 << 24) + 1, 0x7FFFFFF0,
                 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE]
ZERO_POINTS = [-129, -128, 127, 128, 255, 256, -1, 1, 2**31, -2**31, 2**63 - 1, -2**63, 2**32 + 5]


def byte_mutants(data: bytes, rng, n: int):
    for k in range(n):
        buf = bytearray(data)
        kind = k % 4
        if kind == 0:  # a bit flip
            p = int(rng.integers(0, len(buf)))
            buf[p] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # a few random bytes
            for _ in range(int(rng.integers(1, 5))):
                p = int(rng.integers(0, len(buf)))
                buf[p] = int(rng.integers(0, 256))
        elif kind == 2:  # an interesting 32-bit value (offsets, lengths, dims, indices) at an aligned position
            p = int(rng.integers(0, len(buf) // 4)) * 4
            buf[p:p + 4] = struct.pack("<I", INTERESTING32[int(rng.integers(0, len(INTERESTING32)))])
        else:  # an interesting 64-bit value (zero points are int64) at an aligned position
            p = int(rng.integers(0, len(buf) // 8)) * 8
            buf[p:p + 8] = struct.pack("<Q", ZERO_POINTS[int(rng.integers(0, len(ZERO_POINTS)))] % 2**64)
        yield f"byte{kind}@{p}", bytes(buf)


FIELD_KINDS = ("zero_point", "shape", "dtype", "scale", "axis", "buffer", "op_input", "opcode", "graph_io",
               "schema_version", "big_dim")


def field_mutants(data: bytes, rng, n: int):
    """Valid flatbuffers with one bad field (tests/tflite_edit.py repacks them)."""
    m0 = S.ModelT.InitFromPackedBuf(data, 0)
    n_tensors, n_ops = len(m0.subgraphs[0].tensors), len(m0.subgraphs[0].operators)
    for k in range(n):
        kind = FIELD_KINDS[k % len(FIELD_KINDS)]
        ti, oi, r = int(rng.integers(0, n_tensors)), int(rng.integers(0, n_ops)), int(rng.integers(0, 1 << 30))

        def edit(m):
            g = m.subgraphs[0]
            t = g.tensors[ti]
            if kind == "zero_point":
                q = t.quantization
                if q is None or q.scale is None or not len(q.scale):
                    q = t.quantization = S.QuantizationParametersT()
                    q.scale = [0.5]
                q.zeroPoint = [ZERO_POINTS[r % len(ZERO_POINTS)]] * len(q.scale)
            elif kind == "shape" and t.shape is not None and len(t.shape):
                s = list(t.shape)
                s[r % len(s)] += (1, -1, 7)[r % 3]
                t.shape = s
            elif kind == "dtype":
                t.type = (S.TensorType.INT8, S.TensorType.UINT8, S.TensorType.INT32, S.TensorType.INT64,
                          S.TensorType.FLOAT32, S.TensorType.INT16)[r % 6]
            elif kind == "scale" and t.quantization is not None and t.quantization.scale is not None:
                t.quantization.scale = [(-1.0, 0.0, 1e-45, 1e38, float("inf"), 3.0)[r % 6]] * len(t.quantization.scale)
            elif kind == "axis" and t.quantization is not None:
                t.quantization.quantizedDimension = (-1, 0, 1, 2, 5, 100)[r % 6]
            elif kind == "buffer":
                t.buffer = (0, len(m.buffers) - 1, len(m.buffers), 1, r % len(m.buffers))[r % 5]
            elif kind == "op_input":
                op = g.operators[oi]
                ins = list(op.inputs)
                ins[r % len(ins)] = (0, n_tensors - 1, n_tensors, -1, r % n_tensors)[r % 5]
                op.inputs = ins
            elif kind == "opcode":
                g.operators[oi].opcodeIndex = r % (len(m.operatorCodes) + 1)
            elif kind == "graph_io":
                if r % 2:
                    g.inputs = [r % n_tensors]
                else:
                    g.outputs = [r % n_tensors]
            elif kind == "schema_version":
                m.version = (0, 3, 4)[r % 3]
            elif kind == "big_dim" and t.shape is not None and len(t.shape):
                s = list(t.shape)
                s[r % len(s)] = (1 << 24, (1 << 24) + 1, 1 << 20, 65536)[r % 4]
                t.shape = s

        try:
            yield f"field:{kind}@tensor{ti}/op{oi}", repack(data, edit)
        except (struct.error, TypeError, ValueError, OverflowError):  # not representable in the schema's types
            continue


def corpus(files: dict[str, bytes]):
    rng = np.random.default_rng(14)
    for method, data in files.items():
        for name, d in byte_mutants(data, rng, BYTE_MUTANTS):
            yield f"{method}:{name}", d
        for name, d in field_mutants(data, rng, FIELD_MUTANTS):
            yield f"{method}:{name}", d


@pytest.mark.slow
def test_both_readers_give_the_same_verdict_on_the_mutant_corpus(tiny_files, c_load):
    seen = Counter()
    disagree, reasons = [], Counter()
    for name, data in corpus(tiny_files):
        c, py = c_load(data), py_load(data)
        verdict = lambda v: "accepts" if v is None else "refuses"  # noqa: E731
        seen[f"C {verdict(c)}, Python {verdict(py)}"] += 1
        if c is not None and py is None:
            if c[0] not in C_CAPACITY:
                disagree.append(f"{name}: C refuses ({c[0]}: {c[1]}), Python accepts")
        elif c is None and py is not None:
            why = [k for k, pattern in PYTHON_STRICTER.items() if re.search(pattern, py)]
            if why:
                reasons[why[0]] += 1
            else:
                disagree.append(f"{name}: C accepts, Python refuses for no documented reason: {py}")
    print(f"\n{sum(seen.values())} mutants: {dict(seen)}; Python stricter: {dict(reasons)}")
    assert not disagree, "\n".join(disagree[:40])
    assert sum(seen.values()) >= 500
    # a corpus that exercises both verdicts, and mostly agrees outright
    assert seen["C refuses, Python refuses"] >= 200 and seen["C accepts, Python accepts"] >= 100
    assert sum(reasons.values()) <= 0.1 * sum(seen.values())


# ---- targeted: zero points --------------------------------------------------------------------------------------

def _set_zero_point(data: bytes, pick, zp: int) -> tuple[bytes, str]:
    """The file with the zero point of the first tensor `pick(tensor)` selects set to zp; and that tensor's name."""
    m = S.ModelT.InitFromPackedBuf(data, 0)
    t = next(t for t in m.subgraphs[0].tensors if pick(t, m))
    name = t.name.decode()

    def edit(mm):
        tt = next(x for x in mm.subgraphs[0].tensors if x.name == t.name)
        if tt.quantization is None or tt.quantization.scale is None or not len(tt.quantization.scale):
            tt.quantization = S.QuantizationParametersT()
            tt.quantization.scale = [0.25]
        tt.quantization.zeroPoint = [zp] * len(tt.quantization.scale)
    return repack(data, edit), name


def _const(t, m):
    return t.buffer and m.buffers[t.buffer].data is not None and len(m.buffers[t.buffer].data) > 0


INT8_WEIGHT = lambda t, m: t.type == S.TensorType.INT8 and _const(t, m) and t.quantization is not None  # noqa: E731
INT8_ACT = lambda t, m: t.type == S.TensorType.INT8 and not _const(t, m) and t.quantization is not None  # noqa: E731
UINT8_ACT = lambda t, m: t.type == S.TensorType.UINT8 and not _const(t, m)  # noqa: E731
INT32_CONST = lambda t, m: t.type == S.TensorType.INT32 and _const(t, m)  # noqa: E731
INT64_CONST = lambda t, m: t.type == S.TensorType.INT64 and _const(t, m)  # noqa: E731


@pytest.mark.parametrize("pick, zp, dtype", [
    (INT8_WEIGHT, 2**31, "INT8"), (INT8_WEIGHT, -2**31, "INT8"), (INT8_ACT, 128, "INT8"), (INT8_ACT, -129, "INT8"),
    (UINT8_ACT, 256, "UINT8"), (UINT8_ACT, -1, "UINT8"), (INT32_CONST, 1, "INT32"), (INT64_CONST, -1, "INT64"),
], ids=["int8-weight-2^31", "int8-weight--2^31", "int8-128", "int8--129", "uint8-256", "uint8--1", "int32-1",
        "int64--1"])
def test_zero_point_out_of_range_is_refused_by_both(tiny_files, c_load, pick, zp, dtype):
    data, name = _set_zero_point(tiny_files["twin"], pick, zp)
    c = c_load(data)
    assert c is not None and c[0] == "TSPTQ_ERR_BAD_QUANTIZATION" and f"zero point {zp} out of range" in c[1]
    with pytest.raises(ModelFileError, match=rf"\({re.escape(name[:64])}\): bad quantization: zero point {zp} out of "
                                             rf"range for {dtype}"):
        parse_tflite(data)


@pytest.mark.parametrize("pick, zp", [(INT8_ACT, -128), (INT8_ACT, 127), (UINT8_ACT, 0), (UINT8_ACT, 255)],
                         ids=["int8--128", "int8-127", "uint8-0", "uint8-255"])
def test_zero_points_at_the_ends_of_the_range_load_in_both(tiny_files, c_load, pick, zp):
    data, _ = _set_zero_point(tiny_files["twin"], pick, zp)
    assert c_load(data) is None
    assert py_load(data) is None


def test_verify_refuses_the_int8_weight_zero_point_of_2_pow_31(tiny_files, tmp_path, capsys):
    """The issue's file: `tsptq verify` passed it; now it stops at reading it, in one line naming the tensor."""
    from tsptq.cli.main import main

    data, name = _set_zero_point(tiny_files["tsptq"], INT8_WEIGHT, 2**31)
    path = tmp_path / "zp.tflite"
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match="zero point 2147483648 out of range for INT8"):
        read_tflite(path)
    assert main(["verify", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tsptq: error:") and name in err and "2147483648" in err and err.count("\n") == 1


def test_empty_zero_point_vector_means_zero_in_both(tiny_files, c_load):
    """A quantization with scales and an empty zero point vector: both readers take the zero points as 0 (Python used
    to refuse it)."""
    m = S.ModelT.InitFromPackedBuf(tiny_files["minmax"], 0)
    target = next(t.name for t in m.subgraphs[0].tensors
                  if t.quantization is not None and t.quantization.zeroPoint is not None
                  and len(t.quantization.zeroPoint) == 1 and t.quantization.zeroPoint[0] == 0)

    def edit(mm):
        next(t for t in mm.subgraphs[0].tensors if t.name == target).quantization.zeroPoint = []
    data = repack(tiny_files["minmax"], edit)
    assert c_load(data) is None and py_load(data) is None


def test_tensor_over_2_gb_is_refused_by_both(c_load):
    """Each dimension within 2^24, the product past the loader's 2 GB tensor limit."""
    from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
    from tsptq.tflite.writer import to_tflite

    q = QuantParams(np.array([0.5], np.float32), np.array([0], np.int64))
    shape = (1, 1 << 15, 1 << 15, 2)  # 2 GiB of int8
    ts = [Tensor("x", shape, "int8", q), Tensor("y", shape, "int8", q)]
    data = to_tflite(IntModel(ts, [Op("ADD", [0, 0], [1])], [0], [1]))
    c = c_load(data)
    assert c is not None and c[0] == "TSPTQ_ERR_INVALID_MODEL" and "more than 2 GB" in c[1]
    with pytest.raises(ModelFileError, match="2,147,483,648 bytes, more than the runtime's 2 GB tensor limit"):
        parse_tflite(data)


def test_options_of_another_type_are_refused_not_a_crash(tiny_files, c_load):
    """An op whose builtin options table is of another op's type (the reader used to raise AttributeError)."""
    def edit(m):
        codes = m.operatorCodes
        bmm = next(i for i, c in enumerate(codes) if c.builtinCode == S.BuiltinOperator.BATCH_MATMUL)
        op = next(o for o in m.subgraphs[0].operators
                  if codes[o.opcodeIndex].builtinCode == S.BuiltinOperator.TRANSPOSE)
        op.opcodeIndex = bmm
    data = repack(tiny_files["minmax"], edit)
    assert c_load(data) is not None
    with pytest.raises(ModelFileError, match="builtin options of type"):
        parse_tflite(data)


def test_int64_extremes_in_layernorm_beta(tiny_files, c_load):
    """A LayerNorm beta of -2^63 (out of the kernel's +-2^62): both refuse (|x| of int64 min would wrap)."""
    def edit(m):
        codes, g = m.operatorCodes, m.subgraphs[0]
        op = next(o for o in g.operators if codes[o.opcodeIndex].customCode == b"TSPTQ_LAYERNORM_2S")
        buf = m.buffers[g.tensors[op.inputs[3]].buffer]
        beta = np.frombuffer(bytes(buf.data), "<i8").copy()
        beta[0] = -2**63
        buf.data = np.frombuffer(beta.tobytes(), np.uint8)
    data = repack(tiny_files["tsptq"], edit)
    c = c_load(data)
    assert c is not None and c[0] == "TSPTQ_ERR_BAD_QUANTIZATION" and "beta" in c[1]
    with pytest.raises(ModelFileError, match="channel shift or beta out of range"):
        parse_tflite(data)


def test_misaligned_constant_buffers_are_refused_by_both(tiny_files, c_load):
    """The runtime reads weights in place: a file whose int32/int64 buffers are not aligned (the object API packs them
    1-byte aligned) is refused by C (TSPTQ_ERR_ALIGNMENT), and now by Python too."""
    import flatbuffers

    m = S.ModelT.InitFromPackedBuf(tiny_files["tsptq"], 0)
    b = flatbuffers.Builder(1 << 20)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    data = bytes(b.Output())
    c = c_load(data)
    assert c is not None and c[0] == "TSPTQ_ERR_ALIGNMENT"
    with pytest.raises(ModelFileError, match="aligned in the file"):
        parse_tflite(data)
