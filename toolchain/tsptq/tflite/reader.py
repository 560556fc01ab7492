"""``.tflite`` bytes -> IntModel, from the file alone, with every problem reported as a ``ModelFileError``.

First every check of the C loader (runtime_c/src/loader.c) runs on the raw bytes, mirrored below
(``tsptq.tflite.checks``): a file the C runtime refuses is refused here too, with the same limits (bounds, dtypes, ranks,
dimensions, 2 GB per tensor and per arena, zero points in the range of their dtype, option ranges, accumulators
that cannot overflow). Then the flatbuffer is parsed with the registry's schema bindings and checked again: every
tensor/buffer/opcode index, every buffer length against its tensor's shape, the dtypes and quantization parameters,
the ops and their options, and the ``tsptq`` metadata JSON (its version, equal to the ``tsptq_format`` entry's, and that
its two-scale entries agree with the tensors' own quantization details). One source of truth per O-2SF tensor: its
scale vector; its details (``_pow2_scale_problem``), the metadata entry (``_check_metadata``) and the ``in_shift`` of
the op it feeds (``checks._in_shift_problem``, ``_check_op``) must all agree with it.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as S
from flatbuffers import flexbuffers

from tsptq.errors import ModelFileError, UnsupportedOpError
from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.intmodel.ops import BUILTIN_KINDS, BUILTIN_OPS, CUSTOM_OPS, OPS
from tsptq.tflite.writer import FILE_IDENTIFIER, METADATA_NAME, METADATA_VERSION, two_scale_entries
from tsptq.tflite.checks import ALL_BUILTIN_NAMES, MAX_DIM, TYPE_NAMES, c_loader_checks, check_arena

DTYPES = {S.TensorType.INT8: "int8", S.TensorType.UINT8: "uint8", S.TensorType.INT32: "int32",
          S.TensorType.INT64: "int64"}


def read_tflite(path: str | Path) -> IntModel:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return parse_tflite(data)
    except ModelFileError as e:
        raise type(e)(f"{path}: {e}") from None


def parse_tflite(data: bytes) -> IntModel:
    if len(data) < 8:
        raise ModelFileError(f"truncated file ({len(data)} bytes): not a TFLite flatbuffer")
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelFileError(f"file identifier is {bytes(data[4:8])!r}, expected {FILE_IDENTIFIER!r} (not a .tflite file)")
    root = struct.unpack_from("<I", data, 0)[0]
    if root + 4 > len(data):
        raise ModelFileError("corrupted or truncated file: the root table lies past the end")
    checks = c_loader_checks(data)  # everything the C loader refuses, refused first
    try:
        m = S.ModelT.InitFromPackedBuf(data, 0)
    except ModelFileError:
        raise
    except Exception as e:  # the bindings raise whatever the bad offset causes
        raise ModelFileError(f"corrupted or truncated flatbuffer ({type(e).__name__}: {e})") from None
    model = _to_int_model(m, checks.format_version)
    check_arena(model)
    return model


def _to_int_model(m, format_version: int) -> IntModel:
    meta = _metadata(m, format_version)
    if not m.subgraphs or len(m.subgraphs) != 1:
        raise ModelFileError(f"expected one subgraph, found {len(m.subgraphs or [])}")
    g = m.subgraphs[0]
    buffers = m.buffers or []
    tensors = [_tensor(i, t, buffers) for i, t in enumerate(g.tensors or [])]
    n = len(tensors)
    codes = m.operatorCodes or []
    ops = []
    for k, o in enumerate(g.operators or []):
        if not 0 <= o.opcodeIndex < len(codes):
            raise ModelFileError(f"op {k}: opcode index {o.opcodeIndex} out of range (0..{len(codes) - 1})")
        ins, outs = _indices(o.inputs, n, f"op {k} input"), _indices(o.outputs, n, f"op {k} output")
        if len(outs) != 1:
            raise UnsupportedOpError(f"op {k}: {len(outs)} outputs, tsptq ops have one")
        kind = _op_name(codes[o.opcodeIndex], k)
        ops.append(Op(kind, ins, outs, _options(kind, o, k)))
        _check_op(ops[-1], tensors, k)
    inputs, outputs = _indices(g.inputs, n, "graph input"), _indices(g.outputs, n, "graph output")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelFileError(f"expected one input and one output, found {len(inputs)} and {len(outputs)}")
    model = IntModel(tensors, ops, inputs, outputs, {k: v for k, v in meta.items()
                                                       if k not in ("format", "version", "two_scale")})
    _check_schedule(model)
    _check_metadata(model, meta)
    return model


def _metadata(m, format_version: int) -> dict:
    """The 'tsptq' JSON entry (the C runtime does not read it; c_loader_checks checked the 'tsptq_format' entry)."""
    entries = [e for e in (m.metadata or []) if e.name in (METADATA_NAME, METADATA_NAME.encode())]
    if not entries:
        raise ModelFileError("no 'tsptq' metadata entry: the JSON the Python tools read (method, config, two-scale "
                             "descriptions) is missing; the C runtime does not need it")
    b = entries[0].buffer
    if not 0 <= b < len(m.buffers or []) or m.buffers[b].data is None:
        raise ModelFileError(f"the 'tsptq' metadata points to buffer {b}, which does not exist or is empty")
    try:
        meta = json.loads(_raw(m.buffers[b].data).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"the 'tsptq' metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != "tsptq" or not isinstance(meta.get("version"), int):
        raise ModelFileError("the 'tsptq' metadata has no format/version fields")
    if meta["version"] > METADATA_VERSION:
        raise ModelFileError(f"the file's tsptq metadata is version {meta['version']}; this tsptq reads up to "
                             f"version {METADATA_VERSION}: upgrade tsptq")
    if meta["version"] < 1:
        raise ModelFileError(f"unknown tsptq metadata version {meta['version']}")
    if meta["version"] != format_version:
        raise ModelFileError(f"the 'tsptq' metadata is version {meta['version']}, its 'tsptq_format' entry version "
                             f"{format_version}: they must agree")
    if not isinstance(meta.get("two_scale", {}), dict):
        raise ModelFileError("the 'tsptq' metadata's two_scale entry is not a map")
    return meta


def _raw(v) -> bytes:
    """A [ubyte] vector of the object API (None, list or numpy array) as bytes."""
    if v is None:
        return b""
    return v.tobytes() if isinstance(v, np.ndarray) else bytes(v)


def _indices(values, n: int, what: str) -> list[int]:
    out = [int(v) for v in (values if values is not None else [])]
    for v in out:
        if not 0 <= v < n:
            raise ModelFileError(f"{what} refers to tensor {v}, but the graph has {n} tensors")
    return out


def _tensor(i: int, t, buffers) -> Tensor:
    name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name or f"tensor{i}")
    if t.type not in DTYPES:
        hint = ("; an NPU variant (tsptq export --npu) has int16 tensors and is read by tsptq npu-report only"
                if TYPE_NAMES.get(t.type) == "INT16" else "")
        raise UnsupportedOpError(f"tensor {i} ({name}): dtype {TYPE_NAMES.get(t.type, t.type)} is not used by tsptq "
                                 f"models{hint}")
    shape = tuple(int(s) for s in (t.shape if t.shape is not None else []))
    if any(not 0 < s <= MAX_DIM for s in shape) or len(shape) > 6:
        raise ModelFileError(f"tensor {i} ({name}): invalid shape {shape}")
    dtype = DTYPES[t.type]
    data = None
    if not 0 <= t.buffer < max(len(buffers), 1):
        raise ModelFileError(f"tensor {i} ({name}): buffer index {t.buffer} out of range ({len(buffers)} buffers)")
    if t.buffer and buffers[t.buffer].data is not None and len(buffers[t.buffer].data):
        raw = buffers[t.buffer].data
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise ModelFileError(f"tensor {i} ({name}): buffer holds {len(raw)} bytes, shape {shape} {dtype} needs {expected}")
        data = np.frombuffer(_raw(raw), dtype=dtype).reshape(shape)
    return Tensor(name, shape, dtype, _quant(i, name, t.quantization, shape), data)


def _quant(i: int, name: str, q, shape) -> QuantParams | None:
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scale = np.asarray(q.scale, np.float32)
    zp = np.asarray(q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0] * len(scale), np.int64)
    if len(zp) != len(scale) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ModelFileError(f"tensor {i} ({name}): bad quantization (scales {len(scale)} must be finite and > 0, "
                             f"zero points {len(zp)})")
    axis = int(q.quantizedDimension)
    if len(scale) > 1 and (not 0 <= axis < len(shape) or shape[axis] != len(scale)):
        raise ModelFileError(f"tensor {i} ({name}): {len(scale)} per-channel scales do not match axis {axis} of {shape}")
    details = None
    if q.detailsType == S.QuantizationDetails.CustomQuantization and q.details is not None:
        try:
            details = flexbuffers.Loads(_raw(q.details.custom))
        except Exception as e:
            raise ModelFileError(f"tensor {i} ({name}): unreadable custom quantization details ({e})") from None
        problem = _details_problem(details, shape) or _pow2_scale_problem(details, scale, axis, shape)
        if problem:
            raise ModelFileError(f"tensor {i} ({name}): bad two-scale code description: {problem}")
    elif q.detailsType not in (S.QuantizationDetails.NONE, S.QuantizationDetails.CustomQuantization, None):
        raise UnsupportedOpError(f"tensor {i} ({name}): quantization details type {q.detailsType} is not supported")
    return QuantParams(scale, zp, axis, details)


def _is_int(v, lo, hi) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0


def _details_problem(d, shape) -> str | None:
    """What is wrong with a CustomQuantization description (None when it is well formed)."""
    if not isinstance(d, dict) or d.get("kind") not in ("channel_pow2", "two_scale", "sign_split", "log2"):
        return "no known 'kind'"
    if not _is_int(d.get("bits"), 2, 8):
        return "bits must be an integer in 2..8"
    kind = d["kind"]
    if kind == "channel_pow2":
        shifts = d.get("shifts")
        if not _is_positive(d.get("base_scale")):
            return "base_scale must be > 0"
        if not isinstance(shifts, list) or not shape or len(shifts) != shape[-1] or not all(_is_int(v, 0, 7) for v in shifts):
            return "shifts must list one integer in 0..7 per channel"
    elif kind == "two_scale":
        if not _is_positive(d.get("fine_scale")) or not _is_int(d.get("ratio_log2"), 0, 8) \
                or not isinstance(d.get("signed_fine"), bool):
            return "needs fine_scale > 0, ratio_log2 in 0..8 and a boolean signed_fine"
    elif kind == "sign_split" and not _is_positive(d.get("step_neg")):
        return "step_neg must be > 0"
    return None


def _pow2_scale_problem(d: dict, scale: np.ndarray, axis: int, shape) -> str | None:
    """An O-2SF tensor's scale vector and its details are two copies of one code: scale[c] = base_scale * 2^shifts[c]
    (exactly: the exporter multiplies float32 by powers of two), one scale per channel of the last axis."""
    if d["kind"] != "channel_pow2":
        return None
    shifts = d["shifts"]
    if len(scale) != len(shifts) or (len(scale) > 1 and axis != len(shape) - 1):
        return f"{len(scale)} scales, not one per channel of the last axis ({len(shifts)} shifts)"
    for c, (s, k) in enumerate(zip(scale, shifts)):
        if float(s) != float(d["base_scale"]) * 2.0 ** k:
            return f"scale {c} is not base_scale * 2^shifts[{c}]"
    return None


def _op_name(code, k: int) -> str:
    builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
    if builtin == S.BuiltinOperator.CUSTOM:
        name = code.customCode.decode(errors="replace") if isinstance(code.customCode, bytes) else str(code.customCode)
        if name not in CUSTOM_OPS:
            raise UnsupportedOpError(f"op {k}: custom op {name!r} is not a tsptq op (known: {', '.join(CUSTOM_OPS)})")
        return name
    if builtin not in BUILTIN_KINDS:
        raise UnsupportedOpError(f"op {k}: builtin {ALL_BUILTIN_NAMES.get(builtin, builtin)} is not supported by the "
                                 f"tsptq integer model (supported: {', '.join(BUILTIN_OPS)})")
    return BUILTIN_KINDS[builtin]


def _options(kind: str, o, k: int) -> dict:
    spec = OPS[kind]
    if spec.custom:
        try:
            opts = flexbuffers.Loads(_raw(o.customOptions))
        except Exception as e:
            raise ModelFileError(f"op {k} ({kind}): unreadable custom options ({e})") from None
        if not isinstance(opts, dict):
            raise ModelFileError(f"op {k} ({kind}): custom options are not a map")
        missing = [key for key in spec.option_keys if not isinstance(opts.get(key), int)]
        if missing:
            raise ModelFileError(f"op {k} ({kind}): custom options miss integer fields {', '.join(missing)}")
        return opts
    b = o.builtinOptions
    if b is not None and o.builtinOptionsType != spec.options_type:
        raise ModelFileError(f"op {k} ({kind}): builtin options of type {o.builtinOptionsType}")
    if kind == "CONV_2D":
        if b is None or b.padding != S.Padding.VALID or b.strideH != b.strideW or b.strideH < 1:
            raise UnsupportedOpError(f"op {k} (CONV_2D): only VALID padding with equal strides (the patch embedding)")
        return {"stride_h": int(b.strideH), "stride_w": int(b.strideW), "padding": "VALID"}
    if kind == "FULLY_CONNECTED":
        return {"keep_num_dims": bool(b.keepNumDims) if b is not None else False}
    if kind == "BATCH_MATMUL":
        if b is not None and b.adjX:
            raise UnsupportedOpError(f"op {k} (BATCH_MATMUL): adj_x is not supported")
        return {"adj_x": False, "adj_y": bool(b.adjY) if b is not None else False}
    if kind == "CONCATENATION":
        return {"axis": int(b.axis) if b is not None else 0}
    if kind == "RESHAPE":
        return {"new_shape": list(b.newShape) if b is not None and b.newShape is not None else []}
    return {}


def _heads(shape) -> int:
    """The heads of a softmax input (..., heads, rows, N): its third axis from the end (1 below rank 3)."""
    return shape[-3] if len(shape) >= 3 else 1


def _check_op(op: Op, tensors: list[Tensor], k: int) -> None:
    """Shapes, dtypes and quantization each kernel relies on."""
    ins = [tensors[i] for i in op.inputs]
    out = tensors[op.outputs[0]]
    where = f"op {k} ({op.kind})"
    spec = OPS[op.kind]
    if problem := spec.input_count_problem(len(ins)):
        raise ModelFileError(f"{where}: {problem}")
    if out.data is not None:
        raise ModelFileError(f"{where}: writes into constant tensor {out.name!r}")
    if out.quant is None and spec.quantized_output:
        raise ModelFileError(f"{where}: output {out.name!r} has no quantization parameters")
    if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
        x, w, b = ins
        if w.data is None or w.dtype != "int8" or w.quant is None or (b.data is None or b.dtype != "int32"):
            raise ModelFileError(f"{where}: needs constant int8 weights and int32 bias")
        if x.quant is None or x.dtype != "int8":
            raise ModelFileError(f"{where}: input must be a quantized int8 tensor")
        fan_in = int(np.prod(w.shape[1:]))
        if op.kind == "FULLY_CONNECTED" and x.shape[-1] != fan_in or w.shape[0] != out.shape[-1] or b.shape != (w.shape[0],):
            raise ModelFileError(f"{where}: shapes {x.shape} x {w.shape} + {b.shape} -> {out.shape} do not fit")
        if len(w.quant.scale) not in (1, w.shape[0]):
            raise ModelFileError(f"{where}: weights need 1 or {w.shape[0]} scales")
    if spec.params_from is not None:
        for t in ins[spec.params_from:]:
            if t.data is None:
                raise ModelFileError(f"{where}: parameter tensor {t.name!r} must be constant")
    if spec.elementwise and out.shape != ins[0].shape:
        raise ModelFileError(f"{where}: the output's shape differs from the input's (an elementwise op)")
    if op.kind == "TRANSPOSE" and sorted(int(p) for p in ins[1].data) != list(range(len(ins[0].shape))):
        raise ModelFileError(f"{where}: permutation {ins[1].data.tolist()} does not fit rank {len(ins[0].shape)}")
    if op.kind == "RESHAPE" and int(np.prod(ins[0].shape)) != int(np.prod(out.shape)):
        raise ModelFileError(f"{where}: cannot reshape {ins[0].shape} into {out.shape}")
    if op.kind == "TSPTQ_SOFTMAX_2S" and ins[1].shape not in ((256,), (256 * _heads(ins[0].shape),)):
        raise ModelFileError(f"{where}: the lookup table must have 256 entries, or 256 per head, has shape "
                             f"{ins[1].shape}")
    if op.kind == "TSPTQ_LAYERNORM_2S" and any(t.shape != (ins[0].shape[-1],) for t in ins[1:]):
        raise ModelFileError(f"{where}: per-channel parameters must have {ins[0].shape[-1]} entries")
    in_shift_at = {"TSPTQ_FC_2S": 5, "TSPTQ_LAYERNORM_2S": 1, "TSPTQ_GELU_2S": 2}.get(op.kind)
    if in_shift_at is not None and in_shift_at < len(ins):  # in_shift: a copy of the input's O-2SF shifts
        x, in_shift = ins[0], ins[in_shift_at]
        d = x.quant.details if x.quant is not None else None
        if d and d["kind"] == "channel_pow2":
            differ = [c for c, (a, b) in enumerate(zip(in_shift.data.tolist(), d["shifts"])) if a != b]
            if differ:
                raise ModelFileError(f"{where}: in_shift disagrees with the quantization details of input "
                                     f"{x.name!r} at channel {differ[0]}")


def _check_schedule(model: IntModel) -> None:
    """Every op reads tensors that exist by then (the graph input, constants or earlier outputs)."""
    ready = set(model.inputs) | {i for i, t in enumerate(model.tensors) if t.data is not None}
    for k, op in enumerate(model.ops):
        for i in op.inputs:
            if i not in ready:
                raise ModelFileError(f"op {k} ({op.kind}) reads tensor {i} ({model.tensors[i].name!r}) before any "
                                     "op writes it")
        ready.add(op.outputs[0])
    if model.outputs[0] not in ready:
        raise ModelFileError("no op writes the graph output")
    if model.input.dtype != "int8" or model.input.quant is None or len(model.input.shape) != 4:
        raise ModelFileError("the graph input must be a quantized int8 NHWC image")


def _check_metadata(model: IntModel, meta: dict) -> None:
    """The metadata's two-scale entries and the tensors' own quantization details must describe the same codes."""
    declared = meta.get("two_scale", {})
    actual = two_scale_entries(model)
    for name in sorted(set(declared) | set(actual)):
        if name not in actual:
            raise ModelFileError(f"metadata describes two-scale tensor {name!r}, which the graph does not have "
                                 "(or has as a plain affine tensor)")
        if name not in declared:
            raise ModelFileError(f"tensor {name!r} has a two-scale code that the metadata does not describe")
        if not isinstance(declared[name], dict):
            raise ModelFileError(f"metadata entry for two-scale tensor {name!r} is not a map")
        if declared[name] != actual[name]:
            diff = sorted(k for k in set(declared[name]) | set(actual[name]) if declared[name].get(k) != actual[name].get(k))
            raise ModelFileError(f"metadata and graph disagree on two-scale tensor {name!r} ({', '.join(diff)})")
