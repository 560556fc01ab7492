"""The op table (tsptq.intmodel.ops): one entry per op kind, consistent with itself and with the C runtime's table; and
RELU, the int8 elementwise builtin added through the tables alone (its C op file, one line of the C table, its Python
entry): written, read back by both Python readers, planned and run by the Python integer model and the C runtime,
byte-equal to LiteRT's reference kernels; both loaders refuse a bad RELU with the same message."""
from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as S

from tsptq.intmodel import ops
from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.intmodel.ops import OPS
from tsptq.runtime.c_build import have_compiler


@pytest.mark.cc
@pytest.mark.skipif(not have_compiler(), reason="no C compiler (set CC or install gcc)")
def test_the_c_runtime_has_the_same_table():
    from tsptq.runtime.c_binding import op_table

    c = op_table()
    assert [row["name"] for row in c] == list(OPS)  # the same order: the "unsupported op" messages list it
    for row in c:
        spec = OPS[row["name"]]
        assert row["builtin_code"] == (None if spec.custom else spec.builtin[0])
        assert row["inputs"][0] <= spec.inputs <= row["inputs"][1]
        assert row["elementwise"] == spec.elementwise
        if spec.custom:
            assert row["option_keys"] == spec.option_keys


def test_every_entry_is_consistent():
    codes = [s.builtin[0] for s in OPS.values() if not s.custom]
    assert len(set(codes)) == len(codes)
    assert ops.BUILTIN_KINDS == {s.builtin[0]: n for n, s in OPS.items() if not s.custom}
    assert ops.BUILTIN_OPS == tuple(ops.BUILTIN_KINDS.values())
    assert ops.CUSTOM_OPS == tuple(n for n in OPS if n.startswith("TSPTQ_"))
    for name, s in OPS.items():
        assert s.name == name and callable(s.kernel) and 1 <= s.inputs <= 6
        assert s.params_from is None or 1 <= s.params_from < s.inputs
        assert isinstance(s.elementwise, bool) and (s.check is None or callable(s.check))
        if s.custom:
            assert s.options is None and len(set(s.option_keys)) == len(s.option_keys)
        else:
            assert not s.option_keys and s.builtin[1] >= 1
            assert s.options is None or (s.options_type != S.BuiltinOptions.NONE and hasattr(S, f"{s.options}T"))


# --- RELU: the int8 elementwise builtin added through the table (runtime_c/src/ops/relu.c, one line of
# runtime_c/src/op_table.c, its entry in tsptq.intmodel.ops) -------------------------------------------------------

def qp(scale, zp):
    return QuantParams(np.array([scale], np.float32), np.array([zp], np.int64))


def relu_model(rank: int, x_q, y_q, y_shape=None) -> IntModel:
    """A RELU of a (1, 2, 3, 4) int8 image, or (rank 2) of that image reshaped to (1, 24): the graph input must be
    an NHWC image. y_shape: the RELU's output shape when it is not the input's (a bad file)."""
    tensors = [Tensor("x", (1, 2, 3, 4), "int8", x_q)]
    ops_ = []
    if rank == 2:
        tensors += [Tensor("shape", (2,), "int32", None, np.array([1, 24], np.int32)),
                    Tensor("h", (1, 24), "int8", x_q)]
        ops_.append(Op("RESHAPE", [0, 1], [2], {"new_shape": [1, 24]}))
    shape = tensors[-1].shape
    tensors.append(Tensor("y", tuple(y_shape or shape), "int8", y_q))
    ops_.append(Op("RELU", [len(tensors) - 2], [len(tensors) - 1]))
    return IntModel(tensors, ops_, [0], [len(tensors) - 1], {"method": "test"})


def relu_inputs(n: int = 16) -> np.ndarray:
    """Every int8 code (the extremes -128 and 127 included), then random ones: (n, 2, 3, 4)."""
    x = np.random.default_rng(n).integers(-128, 128, n * 24)
    x[:256] = np.arange(-128, 128)
    return x.astype(np.int8).reshape(n, 2, 3, 4)


def litert_run(data: bytes, x: np.ndarray) -> np.ndarray:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    out = []
    for image in x:
        it.set_tensor(it.get_input_details()[0]["index"], image[None])
        it.invoke()
        out.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
    return np.stack(out)


RELU_CASES = {  # (rank, input scale, input zero point, output scale, output zero point)
    "4d_down": (4, 0.05, -3, 0.11, 5),  # multiplier < 1
    "4d_up": (4, 0.02, 10, 0.013, -20),  # multiplier > 1 (shift > 0), saturation at 127
    "2d_same_scale": (2, 0.04, 7, 0.04, 7),
    "2d_out_zp_-128": (2, 0.03, 127, 0.07, -128),  # the clamp's lower bound is -128 itself
    # a scale pair whose float32 quotient gives another multiplier than the double one (TFLite divides in float32)
    "4d_float_quotient": (4, 0.008230269886553288, -128, 0.030824195593595505, -128),
}


@pytest.mark.parametrize("case", list(RELU_CASES))
def test_relu_end_to_end(case):
    from tsptq.intmodel.planner import plan
    from tsptq.tflite.checks import c_loader_checks
    from tsptq.tflite.reader import parse_tflite
    from tsptq.tflite.writer import to_tflite

    rank, s_in, z_in, s_out, z_out = RELU_CASES[case]
    model = relu_model(rank, qp(s_in, z_in), qp(s_out, z_out))
    data = to_tflite(model)
    assert [k for k, *_ in c_loader_checks(data).ops][-1] == "RELU"  # the C loader's checks, mirrored
    back = parse_tflite(data)  # those checks again, then the reader
    assert [op.kind for op in back.ops][-1] == "RELU" and back.ops[-1].options == {}
    assert back.tensors[-1].shape == model.tensors[-1].shape and back.tensors[-1].zp == z_out
    assert plan(back).activation_size == 2 * 32  # input and output, 24 bytes each, 16-byte aligned (RESHAPE aliases)

    x = relu_inputs()
    want = litert_run(data, x)  # LiteRT's reference kernels
    mult, shift = ops.relu_multiplier(s_in, s_out)
    if case == "4d_float_quotient":
        from tsptq.intmodel.fixedpoint import quantize_multiplier
        assert (mult, shift) != quantize_multiplier(float(np.float32(s_in)) / float(np.float32(s_out)))
    expected = np.clip(z_out + np.round((x.astype(np.float64) - z_in) * s_in / s_out), max(z_out, -128), 127)
    assert np.abs(want.reshape(x.shape).astype(np.int64) - expected).max() <= 1  # a sanity check of the case
    got = back.run(x)
    assert got.dtype == np.int8 and got.shape == (16,) + model.tensors[-1].shape[1:]
    np.testing.assert_array_equal(got, want.reshape(got.shape))
    np.testing.assert_array_equal(model.run(x), got)

    if not have_compiler():
        pytest.skip("no C compiler (set CC or install gcc)")
    from tsptq.runtime.c_binding import CModel

    cm = CModel(data)
    assert cm.activation_size == plan(back).activation_size
    np.testing.assert_array_equal(cm.run(x), got)


def _refusals(data: bytes) -> tuple[str, str | None]:
    """The Python reader's message, and the C loader's (None without a compiler)."""
    from tsptq.errors import ModelFileError, RuntimeCError
    from tsptq.tflite.reader import parse_tflite

    with pytest.raises(ModelFileError) as py:
        parse_tflite(data)
    if not have_compiler():
        return str(py.value), None
    from tsptq.runtime.c_binding import CModel

    with pytest.raises(RuntimeCError) as c:
        CModel(data, name="f")
    assert str(c.value).startswith("f: ") and str(c.value).endswith("]")
    return str(py.value), str(c.value)[3:].rsplit(" [", 1)[0]


@pytest.mark.parametrize("rank,y_shape", [(4, (1, 2, 3, 5)), (4, (1, 4, 3, 2)), (2, (1, 2, 12)), (2, (1, 25))])
def test_the_elementwise_check_refuses_another_output_shape(rank, y_shape):
    """Same element count or not, both loaders refuse with the same message; so does the reader's own check."""
    from tsptq.tflite.reader import _check_op
    from tsptq.tflite.writer import to_tflite

    model = relu_model(rank, qp(0.05, -3), qp(0.05, -3), y_shape)
    k = len(model.ops) - 1
    message = f"op {k} (RELU): the output's shape differs from the input's (an elementwise op)"
    py, c = _refusals(to_tflite(model))
    assert py == message and c in (None, message)
    with pytest.raises(Exception, match=r"the output's shape differs") as e:
        _check_op(model.ops[k], model.tensors, k)
    assert str(e.value) == message


def test_relu_own_checks_refuse_in_both_loaders():
    """The op's own checks (ops.py's check, relu.c's prepare): a quotient of scales past 2^23, an int32 output."""
    from tsptq.tflite.writer import to_tflite

    py, c = _refusals(to_tflite(relu_model(4, qp(1.0, 0), qp(1e-7, 0))))
    assert py == ("op 0 (RELU): input scale / output scale out of range (its multiplier's shift must be at most 23)")
    assert c in (None, py)
    model = relu_model(4, qp(0.05, 0), qp(0.05, 0))
    model.tensors[1] = Tensor("y", (1, 2, 3, 4), "uint8", qp(0.05, 0))
    py, c = _refusals(to_tflite(model))
    assert py == "op 0 (RELU): input and output must be int8 tensors quantized per tensor" and c in (None, py)
