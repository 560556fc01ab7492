"""The ops of any .tflite file and their multiply-accumulates, read with the registry's schema bindings.

``tsptq.tflite.reader`` reads only what the tsptq integer model runs; this reads any file (the stock converter's, the
``*_vela.tflite`` file Vela writes, with its ``ethos-u`` custom ops) for the NPU report. Vela's own MAC count covers
only the ops it places on the NPU, so the report counts every file's MACs here, the same way for all of them:

- CONV_2D: output elements x kernel height x width x input channels; DEPTHWISE_CONV_2D: output elements x kernel
  height x width; TRANSPOSE_CONV: input elements x kernel height x width x output channels;
- FULLY_CONNECTED and tsptq's TSPTQ_FC_2S: output elements x the weights' input dimension;
- BATCH_MATMUL and TSPTQ_BMM_2S: output elements x the contracted dimension;
- every other op: 0 (elementwise ops, softmax, normalisations and data movement are not counted as MACs).
"""
from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ai_edge_litert import schema_py_generated as S

from tsptq.errors import ModelFileError

FILE_IDENTIFIER = b"TFL3"
ETHOS_U_OP = "ethos-u"  # the custom op Vela writes for each part of the graph it compiled for the NPU

_BUILTIN_NAMES = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}


@dataclass(frozen=True)
class GraphOp:
    """One op of the first subgraph: its type (the builtin's name, or a custom op's code) and its MACs."""
    type: str
    macs: int
    output: str  # the name of its first output tensor


def read_model(path: str | Path) -> tuple[bytes, S.ModelT]:
    """The file's bytes and its flatbuffer as the schema's object tree; ``ModelFileError`` when it cannot be read or
    is no .tflite file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({(e.strerror or str(e)).lower()})") from None
    return data, parse_model(data, str(path))


def parse_model(data: bytes, name: str = "file") -> S.ModelT:
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        what = f"{len(data)} bytes" if len(data) < 8 else f"file identifier {bytes(data[4:8])!r}"
        raise ModelFileError(f"{name}: not a TFLite file ({what}, expected {FILE_IDENTIFIER!r})")
    root = struct.unpack_from("<I", data, 0)[0]
    if root + 4 > len(data):
        raise ModelFileError(f"{name}: corrupted or truncated TFLite file (the root table lies past the end)")
    try:
        m = S.ModelT.InitFromPackedBuf(data, 0)
    except Exception as e:  # the bindings raise whatever the bad offset causes
        raise ModelFileError(f"{name}: corrupted or truncated TFLite file ({type(e).__name__}: {e})") from None
    if not m.subgraphs:
        raise ModelFileError(f"{name}: the TFLite file has no subgraph")
    return m


def _text(b) -> str:
    """A name from the file (untrusted bytes): undecodable bytes are replaced, not raised."""
    return b.decode("utf-8", errors="replace") if isinstance(b, bytes) else str(b)


def op_type(m: S.ModelT, op: S.OperatorT) -> str:
    code = m.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == S.BuiltinOperator.CUSTOM:
        return _text(code.customCode)
    return _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _shape(sg: S.SubGraphT, i: int) -> list[int]:
    return [int(d) for d in sg.tensors[i].shape] if i >= 0 and sg.tensors[i].shape is not None else []


def _adj(op: S.OperatorT, field: str) -> bool:
    return bool(getattr(op.builtinOptions, field, False)) if op.builtinOptions is not None else False


def op_macs(kind: str, sg: S.SubGraphT, op: S.OperatorT) -> int:
    """Multiply-accumulates of one op, from its tensors' shapes (the module docstring's rules)."""
    try:
        ins, outs = list(op.inputs), list(op.outputs)
        out = math.prod(_shape(sg, outs[0]))
        if kind == "CONV_2D":
            w = _shape(sg, ins[1])  # [out_ch, kh, kw, in_ch]
            return out * w[1] * w[2] * w[3]
        if kind == "DEPTHWISE_CONV_2D":
            w = _shape(sg, ins[1])  # [1, kh, kw, out_ch]
            return out * w[1] * w[2]
        if kind == "TRANSPOSE_CONV":
            w = _shape(sg, ins[1])  # [out_ch, kh, kw, in_ch]
            return math.prod(_shape(sg, ins[2])) * w[0] * w[1] * w[2]
        if kind in ("FULLY_CONNECTED", "TSPTQ_FC_2S"):
            return out * _shape(sg, ins[1])[-1]  # weights [out_features, in_features]
        if kind in ("BATCH_MATMUL", "TSPTQ_BMM_2S"):
            a = _shape(sg, ins[0])
            return out * (a[-2] if kind == "BATCH_MATMUL" and _adj(op, "adjX") else a[-1])
    except (IndexError, TypeError):
        return 0  # a malformed op: the compiler will say so; it has no MACs to count here
    return 0


def graph_ops(m: S.ModelT, name: str = "file") -> list[GraphOp]:
    """The first subgraph's ops in execution order (Vela's NPU parts are ``ethos-u`` ops with 0 MACs here)."""
    sg = m.subgraphs[0]
    out = []
    for k, op in enumerate(sg.operators or []):
        n_codes = len(m.operatorCodes or [])
        if not 0 <= op.opcodeIndex < n_codes:
            raise ModelFileError(f"{name}: op {k} names operator code {op.opcodeIndex}; the file has {n_codes}")
        kind = op_type(m, op)
        outs = [] if op.outputs is None else list(op.outputs)
        tensor = sg.tensors[outs[0]].name if outs and 0 <= outs[0] < len(sg.tensors or []) else b""
        out.append(GraphOp(kind, op_macs(kind, sg, op), _text(tensor)))
    return out


def count_types(ops: list[GraphOp]) -> dict[str, int]:
    return dict(sorted(Counter(o.type for o in ops).items()))
