"""The builtin ops of the exported file mean exactly what TFLite means: each one, as a one-op .tflite file, gives the
same bytes in LiteRT's reference kernels as in tsptq's integer reference, over random shapes and quantization."""
from __future__ import annotations

import numpy as np
import pytest

from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.tflite.writer import to_tflite

litert = pytest.importorskip("ai_edge_litert.interpreter")


def qp(scale, zp=0, axis=0):
    return QuantParams(np.atleast_1d(np.asarray(scale, np.float32)), np.atleast_1d(np.asarray(zp, np.int64)), axis)


def act(name, shape, rng, dtype="int8"):
    return Tensor(name, tuple(shape), dtype, qp(rng.uniform(0.005, 0.2), int(rng.integers(-60, 60))))


def const(name, data, quant=None):
    data = np.asarray(data)
    return Tensor(name, data.shape, str(data.dtype), quant, data)


def run_both(tensors, op, rng, n_inputs=1):
    model = IntModel(tensors, [op], list(range(n_inputs)), [op.outputs[0]])
    feeds = [rng.integers(-128, 128, size=tensors[i].shape).astype(np.int8) for i in range(n_inputs)]
    ours = model.run(feeds[0]) if n_inputs == 1 else _run_multi(model, feeds)
    it = litert.Interpreter(model_content=to_tflite(model),
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for i, f in enumerate(feeds):
        it.set_tensor(it.get_input_details()[i]["index"], f)
    it.invoke()
    theirs = it.get_tensor(it.get_output_details()[0]["index"])
    return ours, theirs


def _run_multi(model, feeds):
    from tsptq.intmodel.ops import OPS
    op = model.ops[0]
    vals = [feeds[i] if i < len(feeds) else model.tensors[i].data for i in op.inputs]
    return OPS[op.kind].kernel(model, op, vals)


@pytest.mark.parametrize("seed", range(12))
def test_fully_connected(seed):
    rng = np.random.default_rng(seed)
    n, i, o = int(rng.integers(1, 20)), int(rng.integers(1, 100)), 1 if seed < 2 else int(rng.integers(2, 40))
    x = act("x", (1, n, i), rng)
    w = const("w", rng.integers(-127, 128, size=(o, i)).astype(np.int8), qp(rng.uniform(1e-3, 0.05, o), np.zeros(o)))
    b = const("b", rng.integers(-5000, 5000, size=o).astype(np.int32),
              qp(x.quant.scale[0] * w.quant.scale, np.zeros(o)))
    y = act("y", (1, n, o), rng)
    ours, theirs = run_both([x, w, b, y], Op("FULLY_CONNECTED", [0, 1, 2], [3], {"keep_num_dims": True}), rng)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("seed", range(3))
def test_conv2d_patch_embedding(seed):
    rng = np.random.default_rng(seed)
    p, c, d, g = int(rng.integers(2, 5)), int(rng.integers(1, 4)), int(rng.integers(2, 24)), int(rng.integers(1, 5))
    x = act("x", (1, p * g, p * g, c), rng)
    w = const("w", rng.integers(-127, 128, size=(d, p, p, c)).astype(np.int8), qp(rng.uniform(1e-3, 0.05, d), np.zeros(d)))
    b = const("b", rng.integers(-5000, 5000, size=d).astype(np.int32), qp(x.quant.scale[0] * w.quant.scale, np.zeros(d)))
    y = act("y", (1, g, g, d), rng)
    op = Op("CONV_2D", [0, 1, 2], [3], {"stride_h": p, "stride_w": p, "padding": "VALID"})
    ours, theirs = run_both([x, w, b, y], op, rng)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("seed", range(4))
def test_add(seed):
    rng = np.random.default_rng(seed)
    shape = (1, int(rng.integers(1, 30)), int(rng.integers(1, 30)))
    a, b, y = act("a", shape, rng), act("b", shape, rng), act("y", shape, rng)
    ours, theirs = run_both([a, b, y], Op("ADD", [0, 1], [2]), rng, n_inputs=2)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("adj_y", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_batch_matmul(seed, adj_y):
    rng = np.random.default_rng(seed)
    h, n, k, m = (int(v) for v in rng.integers(1, 20, size=4))
    a = act("a", (1, h, n, k), rng)
    b = act("b", (1, h, m, k) if adj_y else (1, h, k, m), rng)
    y = act("y", (1, h, n, m), rng)
    ours, theirs = run_both([a, b, y], Op("BATCH_MATMUL", [0, 1], [2], {"adj_x": False, "adj_y": adj_y}), rng,
                            n_inputs=2)
    np.testing.assert_array_equal(ours, theirs)


def test_data_movement_ops():
    rng = np.random.default_rng(0)
    x = act("x", (1, 5, 2, 3), rng)
    perm = const("perm", np.array([0, 2, 1, 3], np.int32))
    y = Tensor("y", (1, 2, 5, 3), "int8", x.quant)
    ours, theirs = run_both([x, perm, y], Op("TRANSPOSE", [0, 1], [2]), rng)
    np.testing.assert_array_equal(ours, theirs)
    shape = const("shape", np.array([1, 10, 3], np.int32))
    y = Tensor("y", (1, 10, 3), "int8", x.quant)
    ours, theirs = run_both([x, shape, y], Op("RESHAPE", [0, 1], [2], {"new_shape": [1, 10, 3]}), rng)
    np.testing.assert_array_equal(ours, theirs)
    x3 = act("x", (1, 6, 4), rng)
    ends = [const("b", np.array([0, 0, 0], np.int32)), const("e", np.array([1, 2, 4], np.int32)),
            const("s", np.array([1, 1, 1], np.int32))]
    y = Tensor("y", (1, 2, 4), "int8", x3.quant)
    ours, theirs = run_both([x3, *ends, y], Op("STRIDED_SLICE", [0, 1, 2, 3], [4]), rng)
    np.testing.assert_array_equal(ours, theirs)
    prefix = Tensor("cls", (1, 1, 4), "int8", x3.quant, rng.integers(-128, 128, (1, 1, 4)).astype(np.int8))
    y = Tensor("y", (1, 7, 4), "int8", x3.quant)
    ours, theirs = run_both([x3, prefix, y], Op("CONCATENATION", [1, 0], [2], {"axis": 1}), rng)
    np.testing.assert_array_equal(ours, theirs)
