"""IntModel -> ``.tflite`` bytes, written with the registry's schema bindings (``ai_edge_litert.schema_py_generated``).

Builtins carry TFLite's own options and quantization parameters (their operator code, version and options table are
their entry in the op table, ``tsptq.intmodel.ops``); ``TSPTQ_*`` ops are CUSTOM ops with their integer parameters in a
flexbuffer map (``custom_options``) and their tables in constant tensors. Two-scale tensors
also describe their code in ``QuantizationParameters.details`` (CustomQuantization, a flexbuffer map), and the
whole model's two-scale layout, method and calibration are in the ``tsptq`` metadata entry (JSON, versioned, for the
Python tools); the C runtime reads only the ``tsptq_format`` entry next to it (``format_entry``: 8 bytes, the magic and
the same version), never the JSON.
Constant buffers are 16-byte aligned, as the TFLite converter's ``force_align: 16`` makes them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as S
from flatbuffers import Builder, flexbuffers

from tsptq.atomic import atomic_write
from tsptq.intmodel.graph import IntModel
from tsptq.intmodel.ops import ALL_OPS

METADATA_NAME = "tsptq"
METADATA_VERSION = 1
FORMAT_NAME = "tsptq_format"  # the binary entry the C runtime reads: FORMAT_MAGIC + u32 little-endian version
FORMAT_MAGIC = b"TQFM"
SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
SIGNATURE_KEY = "serving_default"

TENSOR_TYPES = {"int8": S.TensorType.INT8, "uint8": S.TensorType.UINT8, "int32": S.TensorType.INT32,
                "int64": S.TensorType.INT64, "int16": S.TensorType.INT16}  # int16: the NPU variant


def _builtin_options(kind: str, o: dict):
    """(BuiltinOptions union type, options object) of a builtin op: the table its op spec names, with the fields tsptq
    sets (ops without fields get the empty table; ops without a table, none)."""
    spec = ALL_OPS[kind]
    if spec.options is None:
        return spec.options_type, None
    opt = getattr(S, f"{spec.options}T")()
    if kind == "CONV_2D":
        opt.padding, opt.strideH, opt.strideW = S.Padding.VALID, o["stride_h"], o["stride_w"]
        opt.dilationHFactor = opt.dilationWFactor = 1
    elif spec.options == "FullyConnectedOptions":  # FULLY_CONNECTED and the NPU variant's 16x8 form
        opt.keepNumDims = bool(o.get("keep_num_dims", True))
    elif kind == "BATCH_MATMUL":
        opt.adjX, opt.adjY = bool(o.get("adj_x", False)), bool(o.get("adj_y", False))
    elif kind == "RESHAPE":
        opt.newShape = list(o["new_shape"])
    elif kind == "CONCATENATION":
        opt.axis = o["axis"]
    elif spec.options == "DepthwiseConv2DOptions":  # the NPU LayerNorm's 1x1 gamma and beta
        opt.padding, opt.strideH, opt.strideW, opt.depthMultiplier = S.Padding.VALID, 1, 1, 1
        opt.dilationHFactor = opt.dilationWFactor = 1
    elif kind == "ADD":  # the schema's default is on; off: LiteRT's general int16 ADD whatever the scales
        opt.potScaleInt16 = bool(o.get("pot_scale_int16", True))
    return spec.options_type, opt


def _op_version(op, spec) -> int:
    """The builtin's operator-code version: the op spec's, except TFLite's general int16 ADD (``pot_scale_int16``
    off), which TFLite versions 3."""
    if op.kind == "ADD" and op.options.get("pot_scale_int16", True) is False:
        return 3
    return spec.builtin[1]


class _AlignedBuffer(S.BufferT):
    """A Buffer whose data vector starts on a 16-byte boundary (the object API's own Pack aligns to 1)."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            raw = bytes(self.data)
            builder.StartVector(1, len(raw), 16)
            builder.head -= len(raw)
            builder.Bytes[builder.head: builder.head + len(raw)] = raw
            data = builder.EndVector()
        S.BufferStart(builder)
        if data is not None:
            S.BufferAddData(builder, data)
        return S.BufferEnd(builder)


def _quantization(t) -> S.QuantizationParametersT | None:
    if t.quant is None:
        return None
    q = S.QuantizationParametersT()
    q.scale = [float(s) for s in t.quant.scale]
    q.zeroPoint = [int(z) for z in t.quant.zero_point]
    q.quantizedDimension = t.quant.axis % len(t.shape) if len(q.scale) > 1 else 0
    if t.quant.details:
        q.detailsType = S.QuantizationDetails.CustomQuantization
        q.details = S.CustomQuantizationT()
        q.details.custom = list(flexbuffers.Dumps(t.quant.details))
    return q


def two_scale_entries(model: IntModel) -> dict:
    """The metadata's description of every tensor that is not a plain affine code, by tensor name."""
    out = {}
    for i, t in enumerate(model.tensors):
        if t.quant is not None and t.quant.details:
            entry = dict(t.quant.details, tensor=i)
            if entry["kind"] == "channel_pow2":
                entry["outlier_mask"] = [int(s > 0) for s in entry["shifts"]]
            out[t.name] = entry
    return out


def metadata(model: IntModel) -> dict:
    return {"format": "tsptq", "version": METADATA_VERSION, **model.metadata,
            "two_scale": two_scale_entries(model)}


def format_entry(version: int = METADATA_VERSION) -> bytes:
    """The ``tsptq_format`` metadata entry: 8 bytes, ``TQFM`` then the format version (u32, little endian)."""
    return FORMAT_MAGIC + int(version).to_bytes(4, "little")


def to_tflite(model: IntModel) -> bytes:
    buffers = [_AlignedBuffer()]  # buffer 0 is the empty buffer, by convention
    tensors = []
    for t in model.tensors:
        tt = S.TensorT()
        tt.name, tt.shape, tt.type = t.name, list(t.shape), TENSOR_TYPES[t.dtype]
        tt.quantization = _quantization(t)
        tt.buffer = 0
        if t.data is not None:
            buf = _AlignedBuffer()
            buf.data = np.ascontiguousarray(t.data.astype(t.dtype)).tobytes()
            buffers.append(buf)
            tt.buffer = len(buffers) - 1
        tensors.append(tt)

    codes, code_index, operators = [], {}, []
    for op in model.ops:
        spec = ALL_OPS.get(op.kind)
        builtin = spec is not None and not spec.custom  # any other kind is written as a custom op of that name
        key = (op.kind, _op_version(op, spec) if builtin else 1)
        if key not in code_index:
            oc = S.OperatorCodeT()
            if builtin:
                oc.builtinCode, oc.version = spec.builtin[0], key[1]
            else:
                oc.builtinCode, oc.version, oc.customCode = S.BuiltinOperator.CUSTOM, 1, op.kind
            oc.deprecatedBuiltinCode = min(oc.builtinCode, S.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            code_index[key] = len(codes)
            codes.append(oc)
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code_index[key], list(op.inputs), list(op.outputs)
        if builtin:
            o.builtinOptionsType, o.builtinOptions = _builtin_options(op.kind, op.options)
        else:
            o.customOptions = list(flexbuffers.Dumps(op.options))
            o.customOptionsFormat = S.CustomOptionsFormat.FLEXBUFFERS
        operators.append(o)

    sub = S.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = tensors, list(model.inputs), list(model.outputs), operators, "main"

    format_buf = _AlignedBuffer()
    format_buf.data = format_entry()
    buffers.append(format_buf)
    fmt = S.MetadataT()
    fmt.name, fmt.buffer = FORMAT_NAME, len(buffers) - 1
    meta_buf = _AlignedBuffer()  # the JSON stays the last buffer and the first metadata entry
    meta_buf.data = json.dumps(metadata(model), sort_keys=True).encode()
    buffers.append(meta_buf)
    meta = S.MetadataT()
    meta.name, meta.buffer = METADATA_NAME, len(buffers) - 1

    sig = S.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = SIGNATURE_KEY, 0
    sig.inputs = [_tensor_map("image", model.inputs[0])]
    sig.outputs = [_tensor_map("logits" if model.metadata.get("config", {}).get("num_classes") else "features",
                               model.outputs[0])]

    m = S.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = SCHEMA_VERSION, codes, [sub], buffers
    m.description = f"tsptq {model.metadata.get('method', '')} {model.metadata.get('bits', '')}".strip()
    m.metadata, m.signatureDefs = [meta, fmt], [sig]
    builder = Builder(1 << 20)
    builder.Finish(m.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _tensor_map(name: str, index: int) -> S.TensorMapT:
    tm = S.TensorMapT()
    tm.name, tm.tensorIndex = name, index
    return tm


def export(model: IntModel, path: str | Path) -> int:
    """Write the file atomically; returns its size in bytes."""
    data = to_tflite(model)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return len(data)
