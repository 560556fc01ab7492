"""The integer model: tensors and ops as the ``.tflite`` file holds them, and the interpreter that runs them.

``IntModel`` is the one representation shared by lowering (``tsptq.lower``: QuantizedViT -> IntModel), the exporter
(IntModel -> .tflite) and the reader (.tflite -> IntModel). ``run`` executes it with ``tsptq.intkernels`` in integer
arithmetic only, on a batch (the file's leading dimension 1 is the batch axis here).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tsptq import intkernels as K
from tsptq.errors import TsptqError

BUILTIN_OPS = ("CONV_2D", "RESHAPE", "CONCATENATION", "ADD", "FULLY_CONNECTED", "TRANSPOSE", "BATCH_MATMUL",
               "STRIDED_SLICE")
CUSTOM_OPS = ("TSPTQ_LAYERNORM_2S", "TSPTQ_SOFTMAX_2S", "TSPTQ_GELU_2S", "TSPTQ_FC_2S", "TSPTQ_BMM_2S",
              "TSPTQ_ADD_2S")


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
    dtype: str  # int8 | uint8 | int32 | int64
    quant: QuantParams | None = None
    data: np.ndarray | None = None  # constants only

    @property
    def zp(self) -> int:
        return int(self.quant.zero_point[0])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Op:
    kind: str  # a BUILTIN_OPS or CUSTOM_OPS name
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
            vals[op.outputs[0]] = KERNELS[op.kind](self, op, [self._value(i, vals) for i in op.inputs])
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


# --- kernels: the Prepare part (parameters from tensors and options) of each op --------------------------------------

def _t(model: IntModel, op: Op, i: int, out: bool = False) -> Tensor:
    return model.tensors[(op.outputs if out else op.inputs)[i]]


def _conv_fc_multipliers(model, op, w_index=1):
    x, w, y = _t(model, op, 0), _t(model, op, w_index), _t(model, op, 0, out=True)
    return K.builtin_multipliers(x.quant.scale[0], w.quant.scale, y.quant.scale[0])


def _conv2d(model, op, v):
    mult, shift = _conv_fc_multipliers(model, op)
    return K.conv2d_patches(v[0], _t(model, op, 0).zp, v[1], v[2] if len(v) > 2 else None, mult, shift,
                            _t(model, op, 0, out=True).zp, op.options["stride_h"])


def _fully_connected(model, op, v):
    mult, shift = _conv_fc_multipliers(model, op)
    return K.fully_connected(v[0], _t(model, op, 0).zp, v[1], v[2] if len(v) > 2 else None, mult, shift,
                             _t(model, op, 0, out=True).zp, per_channel=len(_t(model, op, 1).quant.scale) > 1)


def _batch_matmul(model, op, v):
    a, b, y = _t(model, op, 0), _t(model, op, 1), _t(model, op, 0, out=True)
    mult, shift = K.bmm_multiplier(a.quant.scale[0], b.quant.scale[0], y.quant.scale[0])
    return K.batch_matmul(v[0], a.zp, v[1], b.zp, mult, shift, y.zp, op.options.get("adj_y", False))


def _add(model, op, v):
    a, b, y = _t(model, op, 0), _t(model, op, 1), _t(model, op, 0, out=True)
    params = K.add_params(a.quant.scale[:1], b.quant.scale[:1], y.quant.scale[:1])
    return K.add(v[0], a.zp, v[1], b.zp, params, y.zp)


def _reshape(model, op, v):
    shape = _t(model, op, 0, out=True).shape
    return v[0].reshape((v[0].shape[0],) + tuple(shape[1:]))


def _transpose(model, op, v):
    return v[0].transpose(tuple(int(p) for p in v[1]))


def _concatenation(model, op, v):
    batch = max(a.shape[0] for a in v)
    return np.concatenate([np.broadcast_to(a, (batch,) + a.shape[1:]) for a in v], axis=op.options["axis"])


def _strided_slice(model, op, v):
    begin, end, strides = v[1], v[2], v[3]
    index = (slice(None),) + tuple(slice(int(b), int(e), int(s)) for b, e, s in zip(begin[1:], end[1:], strides[1:]))
    return v[0][index]  # the batch axis is kept whole


def _layernorm_2s(model, op, v):
    o = op.options
    return K.layernorm_2s(v[0], o["in_zp"], v[1], v[2], v[3], o["eps"], o["out_zp"], o["out_shift"])


def _softmax_2s(model, op, v):
    o = op.options
    return K.softmax_2s(v[0], v[1], o["out_kind"], o["mult"], o["shift"], o["out_zp"], o["bits"], o["ratio_log2"],
                        bool(o["signed_fine"]))


def _gelu_2s(model, op, v):
    return K.lookup(v[0], v[1])


def _fc_2s(model, op, v):
    o = op.options
    x, w, bias, mult, shift, in_shift = v
    return K.fc_2s(x, o["in_kind"], o["in_zp"], in_shift, o["bits"], o["ratio_log2"], bool(o["signed_fine"]),
                   o["neg_mult"], o["neg_shift"], w, bias, mult, shift, o["out_zp"])


def _bmm_2s(model, op, v):
    o = op.options
    return K.bmm_2s(v[0], o["a_kind"], o["bits"], o["ratio_log2"], bool(o["signed_fine"]), o["log2_frac"], v[1],
                    o["b_zp"], o["mult"], o["shift"], o["out_zp"])


def _add_2s(model, op, v):
    o = op.options
    return K.add(v[0], o["a_zp"], v[1], o["b_zp"], v[2].astype(np.int64), o["out_zp"])


KERNELS = {
    "CONV_2D": _conv2d, "FULLY_CONNECTED": _fully_connected, "BATCH_MATMUL": _batch_matmul, "ADD": _add,
    "RESHAPE": _reshape, "TRANSPOSE": _transpose, "CONCATENATION": _concatenation, "STRIDED_SLICE": _strided_slice,
    "TSPTQ_LAYERNORM_2S": _layernorm_2s, "TSPTQ_SOFTMAX_2S": _softmax_2s, "TSPTQ_GELU_2S": _gelu_2s,
    "TSPTQ_FC_2S": _fc_2s, "TSPTQ_BMM_2S": _bmm_2s, "TSPTQ_ADD_2S": _add_2s,
}

# Option keys each custom op needs (the reader checks them).
CUSTOM_OPTIONS = {
    "TSPTQ_LAYERNORM_2S": ("in_zp", "eps", "out_zp", "out_shift"),
    "TSPTQ_SOFTMAX_2S": ("out_kind", "mult", "shift", "out_zp", "bits", "ratio_log2", "signed_fine"),
    "TSPTQ_GELU_2S": (),
    "TSPTQ_FC_2S": ("in_kind", "in_zp", "bits", "ratio_log2", "signed_fine", "neg_mult", "neg_shift", "out_zp"),
    "TSPTQ_BMM_2S": ("a_kind", "bits", "ratio_log2", "signed_fine", "log2_frac", "b_zp", "mult", "shift", "out_zp"),
    "TSPTQ_ADD_2S": ("a_zp", "b_zp", "out_zp"),
}
CUSTOM_INPUTS = {"TSPTQ_LAYERNORM_2S": 4, "TSPTQ_SOFTMAX_2S": 2, "TSPTQ_GELU_2S": 2, "TSPTQ_FC_2S": 6,
                 "TSPTQ_BMM_2S": 2, "TSPTQ_ADD_2S": 3}
