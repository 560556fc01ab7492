"""The integer model: tensors and ops as the ``.tflite`` file holds them, and the interpreter that runs them.

``IntModel`` is the one representation shared by lowering (``tsptq.intmodel.lower``: QuantizedViT -> IntModel), the exporter
(IntModel -> .tflite) and the reader (.tflite -> IntModel). ``run`` executes it with ``tsptq.intmodel.kernels`` in integer
arithmetic only, on a batch (the file's leading dimension 1 is the batch axis here); what each op kind is (its kernel,
inputs, options, arena needs) is its entry in the op table, ``tsptq.intmodel.ops.OPS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tsptq.intmodel import kernels as K
from tsptq.intmodel.ops import ALL_OPS
from tsptq.errors import TsptqError


@dataclass
class QuantParams:
    """TFLite's QuantizationParameters: real = scale * (q - zero_point), per channel along ``axis`` when the arrays
    are longer than 1. ``details`` describes a code that is not affine (TFLite's CustomQuantization)."""

    scale: np.ndarray  # float32
    zero_point: np.ndarray  # int64
    axis: int = 0
    details: dict | None = None

    @property
    def kind(self) -> str:
        return self.details["kind"] if self.details else "uniform"


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # int8 | uint8 | int32 | int64 (| int16: the NPU variant)
    quant: QuantParams | None = None
    data: np.ndarray | None = None  # constants only

    @property
    def zp(self) -> int:
        return int(self.quant.zero_point[0])

    @property
    def n_scales(self) -> int:
        return len(self.quant.scale) if self.quant is not None else 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Op:
    kind: str  # a key of tsptq.intmodel.ops.OPS (or NPU_OPS: the NPU variant)
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class IntModel:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    metadata: dict = field(default_factory=dict)  # the versioned 'tsptq' entry

    def tensor(self, name: str) -> Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def input(self) -> Tensor:
        return self.tensors[self.inputs[0]]

    @property
    def output(self) -> Tensor:
        return self.tensors[self.outputs[0]]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Normalized float images (B, C, H, W) -> the int8 NHWC input (round half away from zero, saturate)."""
        q = self.input.quant
        v = np.asarray(x, np.float32).transpose(0, 2, 3, 1) / np.float32(q.scale[0])
        return K.saturate(np.sign(v) * np.floor(np.abs(v) + 0.5) + q.zero_point[0], np.int8)

    def run(self, x: np.ndarray, keep: bool = False):
        """Run on int8 input (B, H, W, C). Returns the output codes (and every tensor's value when ``keep``)."""
        inp = self.input
        if x.dtype != np.int8 or x.shape[1:] != tuple(inp.shape[1:]):
            raise TsptqError(f"input must be int8 of shape (batch, {', '.join(map(str, inp.shape[1:]))}), "
                             f"got {x.dtype} {tuple(x.shape)}")
        vals: dict[int, np.ndarray] = {self.inputs[0]: x}
        for op in self.ops:
            vals[op.outputs[0]] = ALL_OPS[op.kind].kernel(self, op, [self._value(i, vals) for i in op.inputs])
        out = vals[self.outputs[0]]
        return (out, vals) if keep else out

    def _value(self, index: int, vals: dict) -> np.ndarray:
        if index in vals:
            return vals[index]
        t = self.tensors[index]
        if t.data is None:
            raise TsptqError(f"tensor {t.name!r} is read before any op writes it")
        return t.data

    def dequantize_output(self, out: np.ndarray) -> np.ndarray:
        q = self.output.quant
        return (out.astype(np.float32) - q.zero_point[0]) * q.scale[0]
