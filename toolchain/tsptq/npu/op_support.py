"""Which ops, in which dtypes, Vela puts on the NPU: one single-op .tflite file per case (``tsptq.npu.single_op``),
compiled by ``tsptq.npu.vela``. The cases are the pieces an NPU variant of a tsptq file could use (docs/npu.md).

    python -m tsptq.npu.op_support [--accelerator ethos-u55-128] [--json FILE]

prints the Markdown table of docs/npu.md. Shapes are a ViT's (tokens x channels, here 16 x 64). int16 activations
have zero point 0 (TFLite's 16x8 convention); "16x8" is int16 activations with int8 weights and an int64 bias.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as S

from tsptq.npu.single_op import TensorSpec as T, single_op_tflite

N, C, H = 16, 64, 32  # tokens, channels, output features
ACT = {"int8": dict(dtype="int8", scale=0.05, zero_point=-3), "int16": dict(dtype="int16", scale=0.0005)}
PER_AXIS = dict(scale=tuple(0.01 + 0.001 * i for i in range(C)), zero_point=0, axis=2)


@dataclass(frozen=True)
class Case:
    op: str
    variant: str  # the dtypes, e.g. "int8", "16x8", "int16, per-axis input"
    inputs: tuple
    outputs: tuple
    options: dict | None = None
    version: int = 1

    def tflite(self) -> bytes:
        return single_op_tflite(self.op, self.inputs, self.outputs, self.options, self.version)


def _act(shape, kind: str, **over) -> T:
    return T(tuple(shape), **{**ACT[kind], **over})


def _const(values, dtype: str, scale=None, **kw) -> T:
    values = np.asarray(values)
    return T(tuple(values.shape), dtype, scale, data=values, **kw)


def _weights(out: int, inp: int, per_channel: bool) -> T:
    w = (np.arange(out * inp).reshape(out, inp) % 15 - 7).astype(np.int8)
    scale = tuple(0.01 + 0.0005 * i for i in range(out)) if per_channel else 0.01
    return _const(w, "int8", scale, zero_point=0, axis=0)


def _fc(x: str, out: str, per_channel: bool = False, per_axis_in: bool = False) -> Case:
    bias = "int64" if x == "int16" else "int32"
    xin = _act((1, N, C), x, **(PER_AXIS if per_axis_in else {}))
    variant = {("int8", "int8"): "int8", ("int16", "int16"): "16x8 (int64 bias)",
               ("int16", "int8"): "16x8, int8 out", ("int8", "int16"): "int8, int16 out"}[(x, out)]
    variant += ", per-channel weights" if per_channel else ""
    variant += ", per-axis input" if per_axis_in else ""
    return Case("FULLY_CONNECTED", variant,
                (xin, _weights(H, C, per_channel), _const(np.arange(H) - 5, bias, 1e-5)),
                (_act((1, N, H), out),), {"keepNumDims": True}, 11 if x == "int16" else 5)


def _conv(x: str) -> Case:
    """The patch embedding: a 4x4 stride-4 convolution of a 16x16x3 image into C channels."""
    w = (np.arange(C * 4 * 4 * 3).reshape(C, 4, 4, 3) % 15 - 7).astype(np.int8)
    bias = "int64" if x == "int16" else "int32"
    return Case("CONV_2D", "int8" if x == "int8" else "16x8 (int64 bias)",
                (_act((1, 16, 16, 3), x), _const(w, "int8", 0.01), _const(np.arange(C) - 5, bias, 1e-5)),
                (_act((1, 4, 4, C), x),), {"padding": S.Padding.VALID, "strideH": 4, "strideW": 4,
                                            "dilationHFactor": 1, "dilationWFactor": 1}, 3 if x == "int8" else 4)


def _bmm(a: str, b: str, out: str | None = None) -> Case:
    variant = (a if a == b else f"{a} x {b}") + (f" -> {out} out" if out else "")
    return Case("BATCH_MATMUL", variant, (_act((1, N, C), a), _act((1, C, N), b)),
                (_act((1, N, N), out or a),), {}, 4 if "int16" in (a, b, out) else 2)


def _binary(op: str, kind: str, per_axis: bool = False, out: str | None = None) -> Case:
    a = _act((1, N, C), kind, **(PER_AXIS if per_axis else {}))
    variant = kind + (", per-axis input" if per_axis else "") + (f" -> {out} out" if out else "")
    return Case(op, variant, (a, _act((1, N, C), kind)), (_act((1, N, C), out or kind),))


def _unary(op: str, kind: str, out_kind: str | None = None, options=None, out=None, note: str = "") -> Case:
    out_kind = out_kind or kind
    variant = (kind if out_kind == kind else f"{kind} -> {out_kind}") + note
    return Case(op, variant, (_act((1, N, C), kind),), (out or _act((1, N, C), out_kind),), options)


def _softmax(kind: str, out_kind: str | None = None) -> Case:
    out_kind = out_kind or kind
    out = T((1, N, N), "int8", 1 / 256, -128) if out_kind == "int8" else T((1, N, N), "int16", 1 / 32768, 0)
    return Case("SOFTMAX", kind if out_kind == kind else f"{kind} -> {out_kind}", (_act((1, N, N), kind),), (out,),
                {"beta": 1.0})


def _logistic(op: str, kind: str) -> Case:
    if op == "LOGISTIC":
        out = T((1, N, C), "int8", 1 / 256, -128) if kind == "int8" else T((1, N, C), "int16", 1 / 32768, 0)
    else:
        out = T((1, N, C), "int8", 1 / 128, 0) if kind == "int8" else T((1, N, C), "int16", 1 / 32768, 0)
    return _unary(op, kind, out=out)


def _mean(kind: str) -> Case:
    return Case("MEAN", f"{kind}, over channels", (_act((1, N, C), kind), _const([2], "int32")),
                (_act((1, N, 1), kind),), {"keepDims": True})


def _rsqrt(kind: str) -> Case:
    x = T((1, N, 1), kind, 0.05 if kind == "int8" else 0.001, -128 if kind == "int8" else 0)
    return Case("RSQRT", kind, (x,), (_act((1, N, 1), kind),))


def _movement(op: str, per_axis: bool) -> Case:
    q = PER_AXIS if per_axis else {}
    x = _act((1, N, C), "int8", **q)
    variant = "int8, per-axis" if per_axis else "int8"
    if op == "RESHAPE":
        return Case(op, variant, (x, _const([N, C], "int32")),
                    (_act((N, C), "int8", **{**q, "axis": 1} if q else {}),), {"newShape": [N, C]})
    if op == "TRANSPOSE":
        return Case(op, variant, (x, _const([0, 2, 1], "int32")),
                    (_act((1, C, N), "int8", **{**q, "axis": 1} if q else {}),), {}, 2)
    if op == "STRIDED_SLICE":
        return Case(op, variant, (x, _const([0, 0, 0], "int32"), _const([1, 1, C], "int32"),
                                  _const([1, 1, 1], "int32")), (_act((1, 1, C), "int8", **q),), {}, 2)
    if op == "CONCATENATION":
        return Case(op, variant, (_act((1, 1, C), "int8", **q), x), (_act((1, N + 1, C), "int8", **q),),
                    {"axis": 1}, 2)
    raise ValueError(op)


def cases() -> list[Case]:
    out = [_fc("int8", "int8"), _fc("int8", "int8", per_channel=True), _fc("int16", "int16"),
           _fc("int16", "int16", per_channel=True), _fc("int16", "int8"), _fc("int8", "int16"),
           _fc("int8", "int8", per_axis_in=True),
           _fc("int16", "int16", per_axis_in=True), _conv("int8"), _conv("int16"),
           _bmm("int8", "int8"), _bmm("int8", "int8", "int16"), _bmm("int16", "int16"), _bmm("int16", "int8"),
           _softmax("int8"), _softmax("int16"), _softmax("int8", "int16")]
    for op in ("ADD", "SUB", "MUL"):
        out += [_binary(op, "int8"), _binary(op, "int16"), _binary(op, "int8", out="int16"),
                _binary(op, "int8", per_axis=True)]
    out += [_binary("MAXIMUM", "int16"), _binary("MINIMUM", "int16")]
    out += [_binary("SQUARED_DIFFERENCE", "int8"), _binary("SQUARED_DIFFERENCE", "int16")]
    out += [_mean("int8"), _mean("int16"), _rsqrt("int8"), _rsqrt("int16")]
    erf = {"approximate": False}
    out += [_unary("GELU", "int8", options=erf), _unary("GELU", "int16", options=erf),
            _unary("GELU", "int8", options={"approximate": True}, note=", approximate (tanh)")]
    for op in ("TANH", "LOGISTIC"):
        out += [_logistic(op, "int8"), _logistic(op, "int16")]
    out += [_unary("EXP", "int8"), _unary("EXP", "int16")]
    out += [_unary("QUANTIZE", "int8", "int16"), _unary("QUANTIZE", "int16", "int8"),
            Case("QUANTIZE", "int8 -> int8 (rescale)", (_act((1, N, C), "int8"),),
                 (_act((1, N, C), "int8", scale=0.1),))]
    for op in ("RESHAPE", "TRANSPOSE", "STRIDED_SLICE", "CONCATENATION"):
        out += [_movement(op, False), _movement(op, True)]
    return out


def measure(accelerator: str = "ethos-u55-128") -> list[dict]:
    """Compile every case with Vela; one row per case: op, variant, where it ran, Vela's reason for the CPU."""
    from tsptq.npu.vela import compile_report, VelaError

    rows = []
    with tempfile.TemporaryDirectory(prefix="tsptq-ops-") as tmp:
        for i, case in enumerate(cases()):
            path = Path(tmp) / f"case{i}.tflite"
            path.write_bytes(case.tflite())
            row = {"op": case.op, "variant": case.variant}
            try:
                r = compile_report(path, accelerator)
            except VelaError as e:
                row.update(placed="error", reason=str(e).split(": ", 1)[-1])
            else:
                on_npu = r.ops_npu.get(case.op, 0) == 1 and r.npu_parts > 0
                row.update(placed="NPU" if on_npu else "CPU",
                           reason="; ".join(k.split(": ", 1)[-1] for k in r.cpu_reasons) if not on_npu else "")
            rows.append(row)
    return rows


def markdown(rows: list[dict], accelerator: str) -> str:
    lines = [f"| op | dtypes | {accelerator} | Vela's reason (CPU) |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['variant']} | {r['placed']} | {r['reason']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from tsptq.npu.vela import ACCELERATORS, DEFAULT_ACCELERATOR

    ap = argparse.ArgumentParser(prog="python -m tsptq.npu.op_support",
                                 description="Compile one single-op .tflite file per case with Vela and print "
                                             "where each op ran (the table of docs/npu.md).")
    ap.add_argument("--accelerator", choices=ACCELERATORS, default=DEFAULT_ACCELERATOR)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    rows = measure(args.accelerator)
    print(markdown(rows, args.accelerator))
    if args.json:
        from tsptq.atomic import write_json_atomic

        write_json_atomic(args.json, {"accelerator": args.accelerator, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
