"""One-op .tflite files, written with the registry's schema bindings (``ai_edge_litert.schema_py_generated``, as
``tsptq.tflite.writer``), to measure which op in which dtypes a compiler such as Vela maps (``tsptq.npu.op_support``).

A file holds one builtin op: its activation inputs are the graph's inputs, its constant inputs (``TensorSpec.data``)
are buffers, and its outputs the graph's outputs. Quantization is per tensor, or per axis when ``scale`` is a
sequence (``axis`` is then the quantized dimension).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as S
from flatbuffers import Builder

TYPES = {"int8": S.TensorType.INT8, "int16": S.TensorType.INT16, "int32": S.TensorType.INT32,
         "int64": S.TensorType.INT64, "float32": S.TensorType.FLOAT32, "uint8": S.TensorType.UINT8}
# builtin -> its options table (ops not listed have none)
OPTIONS = {"FULLY_CONNECTED": "FullyConnectedOptions", "BATCH_MATMUL": "BatchMatMulOptions",
           "SOFTMAX": "SoftmaxOptions", "ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions",
           "MEAN": "ReducerOptions", "SUM": "ReducerOptions", "GELU": "GeluOptions", "RESHAPE": "ReshapeOptions",
           "TRANSPOSE": "TransposeOptions", "STRIDED_SLICE": "StridedSliceOptions",
           "CONCATENATION": "ConcatenationOptions", "CONV_2D": "Conv2DOptions",
           "SQUARED_DIFFERENCE": "SquaredDifferenceOptions", "EXP": "ExpOptions",
           "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions", "MAXIMUM": "MaximumMinimumOptions",
           "MINIMUM": "MaximumMinimumOptions"}


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str = "int8"
    scale: float | Sequence[float] | None = 0.05  # None: no quantization parameters (shape tensors, float)
    zero_point: int | Sequence[int] = 0
    axis: int = 0  # the quantized dimension when scale is a sequence
    data: np.ndarray | None = None  # a constant tensor's values


def _quantization(t: TensorSpec) -> S.QuantizationParametersT | None:
    if t.scale is None:
        return None
    scales = [float(s) for s in np.atleast_1d(t.scale)]
    zps = [int(z) for z in np.atleast_1d(t.zero_point)]
    if len(zps) == 1 and len(scales) > 1:
        zps = zps * len(scales)
    q = S.QuantizationParametersT()
    q.scale, q.zeroPoint = scales, zps
    q.quantizedDimension = t.axis % len(t.shape) if len(scales) > 1 else 0
    return q


def _options(op: str, options: dict):
    table = OPTIONS.get(op)
    if table is None:
        return S.BuiltinOptions.NONE, None
    opt = getattr(S, f"{table}T")()
    for key, value in options.items():  # the schema's field names, e.g. keepNumDims, adjY, beta, axis
        if not hasattr(opt, key):
            raise ValueError(f"{table} has no field {key!r}")
        setattr(opt, key, value)
    return getattr(S.BuiltinOptions, table), opt


def single_op_tflite(op: str, inputs: Sequence[TensorSpec | None], outputs: Sequence[TensorSpec],
                     options: dict | None = None, version: int = 1) -> bytes:
    """The bytes of a .tflite file with one builtin ``op`` (a ``BuiltinOperator`` name). ``None`` in ``inputs`` is
    an omitted optional input (index -1, e.g. no bias)."""
    code = getattr(S.BuiltinOperator, op)
    buffers = [S.BufferT()]
    tensors, graph_inputs, op_inputs = [], [], []

    def add(name: str, t: TensorSpec) -> int:
        tt = S.TensorT()
        tt.name, tt.shape, tt.type = name, list(t.shape), TYPES[t.dtype]
        tt.quantization, tt.buffer = _quantization(t), 0
        if t.data is not None:
            buf = S.BufferT()
            buf.data = list(np.ascontiguousarray(np.asarray(t.data).astype(t.dtype)).tobytes())
            buffers.append(buf)
            tt.buffer = len(buffers) - 1
        tensors.append(tt)
        return len(tensors) - 1

    for i, t in enumerate(inputs):
        if t is None:
            op_inputs.append(-1)
            continue
        k = add(f"in{i}" if t.data is None else f"const{i}", t)
        op_inputs.append(k)
        if t.data is None:
            graph_inputs.append(k)
    op_outputs = [add(f"out{i}", t) for i, t in enumerate(outputs)]

    oc = S.OperatorCodeT()
    oc.builtinCode, oc.version = code, version
    oc.deprecatedBuiltinCode = min(code, S.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    o = S.OperatorT()
    o.opcodeIndex, o.inputs, o.outputs = 0, op_inputs, op_outputs
    o.builtinOptionsType, o.builtinOptions = _options(op, options or {})
    sg = S.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = tensors, graph_inputs, op_outputs, [o], "main"
    m = S.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [oc], [sg], buffers
    m.description = f"tsptq single-op probe: {op}"
    builder = Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
