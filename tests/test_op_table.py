"""The op table (tsptq.intmodel.ops): one entry per op kind, consistent with itself and with the C runtime's table; and
a new elementwise builtin needs in Python only its kernel and its entry (writer, both readers, planner, interpreter)."""
from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as S

from tsptq.intmodel import ops
from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.intmodel.ops import OPS, OpSpec
from tsptq.runtime.c_build import have_compiler


@pytest.mark.skipif(not have_compiler(), reason="no C compiler (set CC or install gcc)")
def test_the_c_runtime_has_the_same_table():
    from tsptq.runtime.c_binding import op_table

    c = op_table()
    assert [row["name"] for row in c] == list(OPS)  # the same order: the "unsupported op" messages list it
    for row in c:
        spec = OPS[row["name"]]
        assert row["builtin_code"] == (None if spec.custom else spec.builtin[0])
        assert row["inputs"][0] <= spec.inputs <= row["inputs"][1]
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
        if s.custom:
            assert s.options is None and len(set(s.option_keys)) == len(s.option_keys)
        else:
            assert not s.option_keys and s.builtin[1] >= 1
            assert s.options is None or (s.options_type != S.BuiltinOptions.NONE and hasattr(S, f"{s.options}T"))


def _relu(model, op, v):
    """int8 RELU with the same quantization in and out: max(x, zero point)."""
    return np.maximum(v[0], model.tensors[op.outputs[0]].zp).astype(np.int8)


def test_a_new_elementwise_builtin_needs_only_its_kernel_and_its_entry(monkeypatch):
    from tsptq.intmodel.planner import plan
    from tsptq.tflite.reader import parse_tflite
    from tsptq.tflite.writer import to_tflite

    spec = OpSpec("RELU", 1, _relu, (S.BuiltinOperator.RELU, 2))
    monkeypatch.setitem(OPS, "RELU", spec)
    monkeypatch.setitem(ops.BUILTIN_KINDS, S.BuiltinOperator.RELU, "RELU")  # the views derived at import
    q = QuantParams(np.array([0.05], np.float32), np.array([-3], np.int64))
    tensors = [Tensor("x", (1, 2, 3, 4), "int8", q), Tensor("y", (1, 2, 3, 4), "int8", q)]
    model = IntModel(tensors, [Op("RELU", [0], [1])], [0], [1], {"method": "test"})
    data = to_tflite(model)
    back = parse_tflite(data)  # the C loader's mirrored checks, then the reader
    assert [op.kind for op in back.ops] == ["RELU"]
    assert plan(back).activation_size == 2 * 32  # 24 bytes each, 16-byte aligned
    x = np.random.default_rng(0).integers(-128, 128, (2, 2, 3, 4)).astype(np.int8)
    np.testing.assert_array_equal(back.run(x), np.maximum(x, -3))

    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x[:1])
    it.invoke()
    np.testing.assert_array_equal(it.get_tensor(it.get_output_details()[0]["index"]), back.run(x[:1]))
