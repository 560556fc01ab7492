"""The op table: one ``OpSpec`` per op kind, every per-op fact the Python side shares, in one place.

``OPS`` is in the order of the C runtime's op table (runtime_c/src/op_table.c, where an op's index is its kind):
builtins, then custom ops. The "unsupported op" messages of both loaders list the ops in this order. Who reads what:

- the interpreter (``tsptq.intmodel.graph.IntModel.run``): ``kernel``;
- the arena planner (``tsptq.intmodel.planner``) and its mirror in the C loader's checks: ``scratch``,
  ``persistent``, ``alias``;
- the writer (``tsptq.tflite.writer``): ``builtin`` (operator code and version) and ``options`` (which options table);
- the reader and the C loader's checks (``tsptq.tflite.reader``, ``tsptq.tflite.checks``): op code -> kind,
  ``inputs``, ``option_keys``, ``options``, the generic checks ``quantized_output`` / ``params_from`` /
  ``elementwise``, and ``check``, an op's own checks (the mirror of its C ``prepare``);
- ``tsptq.tflite.inspect_file``: ``builtin`` (builtin or custom).

What stays per op elsewhere: the fields of the builtin options tables tsptq sets and reads (writer / reader /
checks), the arithmetic of the model's kernels (``tsptq.intmodel.kernels``) and the checks of the older ops (branches
of reader / checks). An op with no options table (an int8 elementwise builtin such as RELU) needs only its entry here,
with its kernel and its ``check`` next to it, and its C file and line of the C table.

This module imports no other intmodel module except the kernels (graph.py imports it): the kernel wrappers below
take the model and op as they come and only read ``model.tensors``, ``op.inputs``/``outputs``/``options``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as S

from tsptq.errors import ModelFileError
from tsptq.intmodel import kernels as K

# (model, op, input values) -> output value: the Prepare part of TFLite's kernels (parameters from the tensors'
# quantization and the op's options), then the integer kernel.
Kernel = Callable[..., np.ndarray]
# The op's input tensors -> bytes. A tensor here is a graph.Tensor or the C loader mirror's tensor
# (tsptq.tflite.checks): both have ``shape`` and ``n_scales`` (the number of quantization scales).
ByteSize = Callable[[Sequence], int]
# (input tensors, output tensor, options) -> None, or the message of the first check that fails (the text after
# "op k (NAME): ", the C loader's own words). The tensors are the C loader mirror's (tsptq.tflite.checks): ``type``
# (a TensorType code), ``shape``, ``has_quant``, ``n_scales``, ``scale(i)``, ``zp``, ``data`` (constants).
Check = Callable[[Sequence, object, dict], "str | None"]


@dataclass(frozen=True)
class OpSpec:
    name: str
    inputs: int  # the number of inputs in the file (the reader refuses any other count)
    kernel: Kernel
    # (BuiltinOperator code, the op version that declares int8 support: what the TFLite converter writes);
    # None: a custom op
    builtin: tuple[int, int] | None = None
    options: str | None = None  # builtins: the BuiltinOptions table their options are (None: no table)
    option_keys: tuple[str, ...] = ()  # custom ops: the integer flexbuffer keys, in the C runtime's slot order
    quantized_output: bool = True  # the output must carry quantization parameters (False: ops that only move bytes)
    params_from: int | None = None  # inputs from this index on are parameter tensors, which must be constant
    alias: bool = False  # the output shares its input's bytes in the arena when the input is an activation
    scratch: ByteSize | None = None  # kernel scratch in the activation arena, live during the op only
    persistent: ByteSize | None = None  # (multiplier, shift) pairs the runtime derives once, in the persistent arena
    # (model, op) -> the (mult, shift) arrays of those pairs (the C op's `multiplier`); every op with `persistent`
    multipliers: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    elementwise: bool = False  # the output has the shape of input 0 (both loaders check it, before the op's checks)
    # the op's own checks (the C op's prepare), for an op that keeps them in its entry; the loader mirror runs them
    # after the generic ones (the checks of the older ops are branches of tsptq.tflite.checks)
    check: Check | None = None
    optional_inputs: int = 0  # how many of the last inputs a file may leave out (C: min_inputs < max_inputs)

    @property
    def input_counts(self) -> range:
        return range(self.inputs - self.optional_inputs, self.inputs + 1)

    def input_count_problem(self, n: int) -> str | None:
        """The loaders' words for a wrong input count (loader.c check_op), or None."""
        if n in self.input_counts:
            return None
        if self.optional_inputs == 0:
            return f"{n} inputs, expected {self.inputs}"
        return f"{n} inputs, expected {self.input_counts[0]} to {self.inputs}"

    @property
    def custom(self) -> bool:
        return self.builtin is None

    @property
    def options_type(self) -> int:
        """The BuiltinOptions union type of the op's options table (NONE when it has none)."""
        return getattr(S.BuiltinOptions, self.options) if self.options else S.BuiltinOptions.NONE


# --- kernel wrappers: the Prepare part (parameters from tensors and options) of each op ------------------------------

def _t(model, op, i: int, out: bool = False):
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
    if y.dtype == "int32":  # the NPU variant's P x V planes: raw int32 products, no zero points (LiteRT's reference)
        # LiteRT ignores the inputs' zero points here and Vela applies them: the integer model takes only zero ones
        if a.zp or b.zp or op.options.get("adj_y", False):
            raise ModelFileError(f"BATCH_MATMUL {y.name!r}: the integer model defines int32 BATCH_MATMUL with zero "
                                 "point 0 inputs and adj_y false only")
        try:
            return K.batch_matmul_i32(v[0], v[1])
        except ValueError as e:
            raise ModelFileError(f"BATCH_MATMUL {y.name!r}: {e}") from None
    mult, shift = K.bmm_multiplier(a.quant.scale[0], b.quant.scale[0], y.quant.scale[0])
    return K.batch_matmul(v[0], a.zp, v[1], b.zp, mult, shift, y.zp, op.options.get("adj_y", False))


def _add(model, op, v):
    a, b, y = _t(model, op, 0), _t(model, op, 1), _t(model, op, 0, out=True)
    if y.dtype == "int16":  # the NPU variant: zero points 0
        if a.dtype != "int16" or b.dtype != "int16" or a.zp or b.zp or y.zp:
            raise ModelFileError(f"ADD {y.name!r}: an int16 ADD takes int16 operands, every zero point 0")
        if not op.options.get("pot_scale_int16", True):  # TFLite's general int16 form, any scales
            if 2.0 * max(float(a.quant.scale[0]), float(b.quant.scale[0])) >= (1 << 15) * float(y.quant.scale[0]):
                raise ModelFileError(f"ADD {y.name!r}: the int16 ADD's output multiplier is not below 1")
            params = K.add_params(a.quant.scale[:1], b.quant.scale[:1], y.quant.scale[:1], left_shift=15)
            return K.add(v[0], 0, v[1], 0, params, 0, left_shift=15, dtype=np.int16)
        if not a.quant.scale[0] == b.quant.scale[0] == y.quant.scale[0]:
            # with pot_scale_int16 on, LiteRT takes another form for scales near powers of two: not defined here
            raise ModelFileError(f"ADD {y.name!r}: the integer model defines int16 ADD between equal scales, or "
                                 "with pot_scale_int16 off, only")
        return K.add_i16_equal_scales(v[0], v[1])
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
    return K.lookup(v[0], v[1], v[2] if len(v) > 2 else None)


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


# --- RELU: an int8 elementwise builtin whose kernel, Prepare and checks all live here (runtime_c/src/ops/relu.c) ---

RELU_MAX_SHIFT = 23  # |x - z_in| <= 255: x * 2^shift stays an int32, as in TFLite's MultiplyByQuantizedMultiplier


def relu_multiplier(in_scale, out_scale) -> tuple[int, int] | None:
    """TFLite's ReluPrepare: QuantizeMultiplier(input scale / output scale), the quotient of the two float32 scales
    taken in float32 and then widened to double; None when it is infinite or its shift exceeds RELU_MAX_SHIFT."""
    with np.errstate(over="ignore", under="ignore"):
        real = float(np.float32(in_scale) / np.float32(out_scale))
    if not math.isfinite(real):
        return None
    mult, shift = K.quantize_multiplier(real)
    return (mult, shift) if shift <= RELU_MAX_SHIFT else None


def relu_int8(x, in_zp: int, mult: int, shift: int, out_zp: int) -> np.ndarray:
    """TFLite's int8 RELU (QuantizedReluX, act_min = 0, act_max = inf):
    clamp(z_out + MBQM(x - z_in, M, shift), max(-128, z_out), 127)."""
    v = out_zp + K.multiply_by_quantized_multiplier(np.asarray(x, np.int64) - in_zp, mult, shift)
    return np.clip(v, max(-128, out_zp), 127).astype(np.int8)


def _relu(model, op, v):
    x, y = _t(model, op, 0), _t(model, op, 0, out=True)
    m = relu_multiplier(x.quant.scale[0], y.quant.scale[0])
    if m is None:
        raise ModelFileError(f"RELU {y.name!r}: input scale / output scale out of range")  # a model no reader checked
    return relu_int8(v[0], x.zp, m[0], m[1], y.zp)


def _relu_check(ins, out, options):
    x = ins[0]
    if x.type != S.TensorType.INT8 or out.type != S.TensorType.INT8 or x.n_scales != 1 or out.n_scales != 1:
        return "input and output must be int8 tensors quantized per tensor"
    if relu_multiplier(x.scale(0), out.scale(0)) is None:
        return f"input scale / output scale out of range (its multiplier's shift must be at most {RELU_MAX_SHIFT})"
    return None


# --- TSPTQ_TOKEN_MEAN: the mean of the patch tokens in the code of its input (runtime_c/src/ops/token_mean.c) -------

TOKEN_MEAN_MAX_TOKENS = 1 << 20  # |x - zp| <= 255: the int32 sum of at most 2^20 tokens cannot overflow


def _token_mean(model, op, v):
    return K.token_mean(v[0], op.options["first"], _t(model, op, 0).zp)


def _token_mean_check(ins, out, options):
    x = ins[0]
    if x.type != S.TensorType.INT8 or out.type != S.TensorType.INT8 or x.rank != 3 or out.rank != 3:
        return "input and output must be 3-D int8 tensors (batch, tokens, channels)"
    if out.shape != (x.shape[0], 1, x.shape[2]):
        return f"output shape {list(out.shape)} is not [{x.shape[0]}, 1, {x.shape[2]}]"
    if not 0 <= options["first"] < x.shape[1] or x.shape[1] > TOKEN_MEAN_MAX_TOKENS:
        return f"first token {options['first']} out of range for {x.shape[1]} tokens (at most {TOKEN_MEAN_MAX_TOKENS})"
    if (not x.has_quant or x.n_scales != out.n_scales or x.zp != out.zp or x.quant_axis != out.quant_axis
            or any(x.scale(i) != out.scale(i) for i in range(x.n_scales))):
        return "output must have the quantization of the input (the mean keeps the input's code)"
    return None


# --- Swin's ops (tsptq.intmodel.lower_swin; docs/integer-semantics.md "Swin"): their kernels, checks and C files ----

ACC_LIMIT = 2**31 - 1  # int32 accumulators

def _bmm_bias(model, op, v):
    o = op.options
    return K.bmm_bias(v[0], o["a_zp"], v[1], o["b_zp"], v[2], o["bias_shift"], o["mult"], o["shift"], o["out_zp"])


def _bmm_bias_check(ins, out, o):
    """runtime_c/src/ops/bmm_bias.c's prepare."""
    a, b, bias = ins
    R, RB = a.rank, bias.rank
    if (a.type != S.TensorType.INT8 or b.type != S.TensorType.INT8 or out.type != S.TensorType.INT8 or R < 2
            or b.rank != R or out.rank != R):
        return "operands must be int8 tensors of one rank"
    if any(b.shape[d] != a.shape[d] or out.shape[d] != a.shape[d] for d in range(R - 2)):
        return "batch dimensions differ"
    K_ = a.shape[R - 1]
    if b.shape[R - 1] != K_ or out.shape[R - 2] != a.shape[R - 2] or out.shape[R - 1] != b.shape[R - 2]:
        return "shapes do not fit (a (..., N, K), b (..., M, K), output (..., N, M))"
    if bias.type != S.TensorType.INT32 or not 2 <= RB <= R - 1 or tuple(bias.shape) != tuple(out.shape[R - RB:]):
        return "the bias must be int32 with the output's trailing dimensions"
    if (not all(-128 <= o[k] <= 127 for k in ("a_zp", "b_zp", "out_zp")) or not 0 <= o["bias_shift"] <= 30
            or not 0 <= o["mult"] <= ACC_LIMIT or not -31 <= o["shift"] <= 31
            or not 1 <= 31 - o["shift"] + o["bias_shift"] <= 62):
        return "options out of range"
    maxb = int(np.abs(bias.data.astype(np.int64)).max(initial=0))
    if (K_ * 255 * 255) << o["bias_shift"] > ACC_LIMIT or ((K_ * 255 * 255) << o["bias_shift"]) + maxb > ACC_LIMIT:
        return "the int32 accumulator could overflow"
    return None


# --- TSPTQ_BMM_HEADS: q.k^T with one output code per head (a per-head scores code; runtime_c/src/ops/bmm_heads.c) ---

def _bmm_heads_multipliers(model, op) -> tuple[np.ndarray, np.ndarray]:
    """BATCH_MATMUL's (M, shift) for each head's output scale (the output's scales lie along its heads axis)."""
    a, b, y = _t(model, op, 0), _t(model, op, 1), _t(model, op, 0, out=True)
    return K.bmm_heads_multipliers(a.quant.scale[0], b.quant.scale[0],
                                   np.broadcast_to(y.quant.scale, (a.shape[-3],)))


def _bmm_heads(model, op, v):
    a, b, y = _t(model, op, 0), _t(model, op, 1), _t(model, op, 0, out=True)
    mult, shift = _bmm_heads_multipliers(model, op)
    return K.bmm_heads(v[0], a.zp, v[1], b.zp, mult, shift, np.broadcast_to(y.quant.zero_point, mult.shape))


def _bmm_heads_check(ins, out, o):
    """runtime_c/src/ops/bmm_heads.c's prepare."""
    a, b = ins
    R = a.rank
    if (not a.has_quant or not b.has_quant or not out.has_quant or a.type != S.TensorType.INT8
            or b.type != S.TensorType.INT8 or out.type != S.TensorType.INT8):
        return "operands must be quantized int8 tensors"
    if R < 3 or b.rank != R or out.rank != R:
        return "operand ranks do not fit (a (..., H, N, K): at least 3 dimensions)"
    if any(b.shape[d] != a.shape[d] or out.shape[d] != a.shape[d] for d in range(R - 2)):
        return "batch dimensions differ (broadcasting is not supported)"
    H, N, K_ = a.shape[R - 3], a.shape[R - 2], a.shape[R - 1]
    if b.shape[R - 1] != K_ or out.shape[R - 2] != N or out.shape[R - 1] != b.shape[R - 2]:
        return "shapes do not fit (a (..., H, N, K), b (..., H, M, K), output (..., H, N, M))"
    if a.n_scales != 1 or b.n_scales != 1:
        return "bad quantization: the inputs must be quantized per tensor"
    if out.n_scales != H or (H > 1 and out.quant_axis != R - 3):
        return f"bad quantization: the output needs {H} scales along its heads axis ({R - 3})"
    if K_ * 255 * 255 > ACC_LIMIT:
        return "the int32 accumulator could overflow"
    for h in range(H):
        mult, shift = K.bmm_multiplier(a.scale(0), b.scale(0), out.scale(h))
        if mult < 0 or not -31 <= shift <= 31:
            return f"bad quantization: requantization multiplier of head {h} out of range"
    return None


def _heads_scratch(ins) -> int:
    """TSPTQ_BMM_HEADS: the heads' output zero points as int32 (read from the output's quantization per part)."""
    return 4 * ins[0].shape[-3]


def _per_head(ins) -> int:
    """TSPTQ_BMM_HEADS: an int32 multiplier and shift per head."""
    return 8 * ins[0].shape[-3]


def _softmax_mask_2s(model, op, v):
    o = op.options
    return K.softmax_mask_2s(v[0], v[2], v[1], o["out_kind"], o["mult"], o["shift"], o["out_zp"], o["bits"],
                             o["ratio_log2"], bool(o["signed_fine"]))


def _softmax_mask_check(ins, out, o):
    """runtime_c/src/ops/softmax_mask_2s.c's prepare."""
    x, lut, mask = ins
    if x.type != S.TensorType.INT8 or x.rank != 5 or tuple(x.shape) != tuple(out.shape) or x.shape[3] != x.shape[4]:
        return "input must be int8 (batch, windows, heads, N, N), output of its shape"
    N = x.shape[4]
    if not 1 <= N <= 2047:
        return f"{N} tokens, 1 to 2047"
    if lut.rank != 1 or lut.shape[0] != 256 or lut.type != S.TensorType.INT32:
        return "the lookup table must have 256 int32 entries"
    kind = o["out_kind"]
    if kind not in (K.UNIFORM, K.TWO_SCALE, K.LOG2):
        return f"output code kind {kind}"
    if out.type != (S.TensorType.INT8 if kind == K.UNIFORM else S.TensorType.UINT8):
        return "output dtype does not fit the code kind"
    if int(lut.data[0]) != 1 << 20:
        return "exp table must start at 2^20"
    bad = (lut.data < 0) | (lut.data > (1 << 20))
    if bad.any():
        return f"exp table entry {int(np.argmax(bad))} out of range"
    if (not 0 <= o["mult"] <= ACC_LIMIT or not 0 <= o["shift"] <= 62 or not -128 <= o["out_zp"] <= 127
            or not 2 <= o["bits"] <= 8 or not 0 <= o["ratio_log2"] <= 8 or not 0 <= o["signed_fine"] <= 1):
        return "options out of range"
    if mask.type != S.TensorType.INT8 or tuple(mask.shape) != (x.shape[1], N, N):
        return "the mask must be int8 (windows, N, N)"
    m = mask.data.reshape(-1, N)
    if ((m != 0) & (m != 1)).any():
        return "mask entries must be 0 or 1"
    if not m.any(-1).all():
        return "a mask row keeps no pair"
    return None


def _mask_scratch(ins) -> int:
    """TSPTQ_SOFTMAX_MASK_2S: TSPTQ_SOFTMAX_2S's int32 row, then the gathered row and its codes (2 N bytes)."""
    return 6 * ins[0].shape[-1]


# --- arena sizes (the C planner's, runtime_c/src/planner.c) ---------------------------------------------------------

def _row_scratch(ins) -> int:
    """One int32 per element of the input's last axis (softmax / FC_2S / BMM_2S)."""
    return 4 * ins[0].shape[-1]


def _per_output_channel(ins) -> int:
    """CONV_2D: an int32 multiplier and shift for every output channel."""
    return 8 * ins[1].shape[0]


def _per_weight_scale(ins) -> int:
    """FULLY_CONNECTED: an int32 multiplier and shift per weight scale."""
    return 8 * ins[1].n_scales


_B = S.BuiltinOperator
_SPECS = (
    OpSpec("CONV_2D", 3, _conv2d, (_B.CONV_2D, 3), "Conv2DOptions", persistent=_per_output_channel,
           multipliers=_conv_fc_multipliers),
    OpSpec("FULLY_CONNECTED", 3, _fully_connected, (_B.FULLY_CONNECTED, 5), "FullyConnectedOptions",
           persistent=_per_weight_scale, multipliers=_conv_fc_multipliers),
    OpSpec("BATCH_MATMUL", 2, _batch_matmul, (_B.BATCH_MATMUL, 2), "BatchMatMulOptions"),
    OpSpec("ADD", 2, _add, (_B.ADD, 2), "AddOptions"),
    OpSpec("RESHAPE", 2, _reshape, (_B.RESHAPE, 1), "ReshapeOptions", quantized_output=False, params_from=1,
           alias=True),
    OpSpec("TRANSPOSE", 2, _transpose, (_B.TRANSPOSE, 2), "TransposeOptions", quantized_output=False, params_from=1),
    OpSpec("CONCATENATION", 2, _concatenation, (_B.CONCATENATION, 2), "ConcatenationOptions"),
    OpSpec("STRIDED_SLICE", 4, _strided_slice, (_B.STRIDED_SLICE, 2), "StridedSliceOptions", quantized_output=False,
           params_from=1),
    OpSpec("RELU", 1, _relu, (_B.RELU, 2), elementwise=True, check=_relu_check),
    OpSpec("TSPTQ_LAYERNORM_2S", 4, _layernorm_2s, option_keys=("in_zp", "eps", "out_zp", "out_shift"),
           params_from=1),
    OpSpec("TSPTQ_SOFTMAX_2S", 2, _softmax_2s,
           option_keys=("out_kind", "mult", "shift", "out_zp", "bits", "ratio_log2", "signed_fine"), params_from=1,
           scratch=_row_scratch),
    OpSpec("TSPTQ_GELU_2S", 3, _gelu_2s, params_from=1, optional_inputs=1),  # in_shift: a per-channel input code
    OpSpec("TSPTQ_FC_2S", 6, _fc_2s,
           option_keys=("in_kind", "in_zp", "bits", "ratio_log2", "signed_fine", "neg_mult", "neg_shift", "out_zp"),
           params_from=1, scratch=_row_scratch),
    OpSpec("TSPTQ_BMM_2S", 2, _bmm_2s,
           option_keys=("a_kind", "bits", "ratio_log2", "signed_fine", "log2_frac", "b_zp", "mult", "shift", "out_zp"),
           scratch=_row_scratch),  # both inputs are activations
    OpSpec("TSPTQ_ADD_2S", 3, _add_2s, option_keys=("a_zp", "b_zp", "out_zp"), params_from=2),
    OpSpec("TSPTQ_TOKEN_MEAN", 1, _token_mean, option_keys=("first",), check=_token_mean_check),
    # Swin's scores: q.k^T plus the relative position bias (int32, in 2^-bias_shift of the accumulator's unit)
    OpSpec("TSPTQ_BMM_BIAS", 3, _bmm_bias, option_keys=("a_zp", "b_zp", "bias_shift", "mult", "shift", "out_zp"),
           params_from=2, check=_bmm_bias_check),
    # TSPTQ_SOFTMAX_2S over the pairs a constant 0/1 mask keeps (Swin's shifted windows); the mask is the last input
    OpSpec("TSPTQ_SOFTMAX_MASK_2S", 3, _softmax_mask_2s,
           option_keys=("out_kind", "mult", "shift", "out_zp", "bits", "ratio_log2", "signed_fine"), params_from=1,
           scratch=_mask_scratch, check=_softmax_mask_check),
    # q.k^T with one output code per head (a per-head scores code): BATCH_MATMUL's arithmetic, head h's multiplier
    OpSpec("TSPTQ_BMM_HEADS", 2, _bmm_heads, scratch=_heads_scratch, persistent=_per_head,
           multipliers=_bmm_heads_multipliers, check=_bmm_heads_check),  # both inputs are activations
)
OPS: dict[str, OpSpec] = {s.name: s for s in _SPECS}

# Views of the table. The loaders' "unsupported op" messages list the known ops in table order, as the C loader does.
BUILTIN_OPS = tuple(n for n, s in OPS.items() if not s.custom)
CUSTOM_OPS = tuple(n for n, s in OPS.items() if s.custom)
BUILTIN_KINDS = {OPS[n].builtin[0]: n for n in BUILTIN_OPS}  # BuiltinOperator code -> kind


# --- the NPU variant's ops (``tsptq.intmodel.lower.lower(qm, npu=True)``) -------------------------------------------
# Not in the C runtime's op table (OPS mirrors it): the C runtime does not load the variant. The interpreter, the
# writer and the planner look ops up in ALL_OPS.

def _fully_connected_16x8(model, op, v):
    mult, shift = _conv_fc_multipliers(model, op)
    return K.fully_connected_16x8(v[0], v[1], v[2], mult, shift)


def _quantize(model, op, v):
    x, y = _t(model, op, 0), _t(model, op, 0, out=True)
    if x.quant.scale[0] != y.quant.scale[0]:
        raise ModelFileError(f"QUANTIZE {y.name!r}: the integer model defines QUANTIZE between equal scales only")
    return K.requantize_same_scale(v[0], x.zp, y.zp, np.dtype(y.dtype))


def _layernorm_2s_i16(model, op, v):
    o = op.options
    if _t(model, op, 0).dtype == "int16" and (o["in_zp"] or np.any(v[1])):  # the int16 residual stream: x_c itself
        raise ModelFileError(f"TSPTQ_LAYERNORM_2S_I16 {_t(model, op, 0, out=True).name!r}: an int16 input takes "
                             "in_zp 0 and every in_shift 0")
    return K.layernorm_2s_i16(v[0], o["in_zp"], v[1], v[2], v[3], o["eps"], o["out_zp"], o["out_shift"], v[4])


def _add_2s_i16(model, op, v):
    o = op.options
    return K.add_i16(v[0], o["a_zp"], v[1], o["b_zp"], v[2].astype(np.int64), o["out_zp"])


def _plane_2s(model, op, v):
    o = op.options
    return K.plane_2s(v[0], o["plane"], o["bits"], bool(o["signed_fine"]))


def _pv_sum_2s(model, op, v):
    o = op.options
    return K.pv_sum_2s(v[0], v[1], v[2], o["bits"], o["ratio_log2"], bool(o["signed_fine"]), o["b_zp"], o["mult"],
                       o["shift"], o["out_zp"])


def _mul(model, op, v):
    a, b, y = _t(model, op, 0), _t(model, op, 1), _t(model, op, 0, out=True)
    if any(t.dtype != "int16" or t.zp or t.n_scales != 1 for t in (a, b, y)):
        raise ModelFileError(f"MUL {y.name!r}: the integer model defines int16 MUL (per-tensor, zero points 0) only")
    # LiteRT's Prepare multiplies and divides the float32 scales in float32, then widens (measured: a multiplier
    # just off a power of two rounds a tie the other way when computed in double)
    sa, sb, sy = (t.quant.scale[0].astype(np.float32) for t in (a, b, y))
    real = sa * sb / sy
    mult, shift = K.quantize_multiplier(float(real))
    if shift > 0:  # TFLite's kernels shift a * b left in int32 first: a multiplier of 1 or more is not defined here
        raise ModelFileError(f"MUL {y.name!r}: the integer model defines int16 MUL with a multiplier below 1")
    return K.mul_int16(v[0], v[1], mult, shift)


def _depthwise_multipliers(model, op):
    x, w, y = _t(model, op, 0), _t(model, op, 1), _t(model, op, 0, out=True)
    return K.builtin_multipliers(x.quant.scale[0], w.quant.scale, y.quant.scale[0])


def _depthwise_16x8(model, op, v):
    x, w, y = _t(model, op, 0), _t(model, op, 1), _t(model, op, 0, out=True)
    if x.shape[-3:-1] != y.shape[-3:-1] or w.shape[:3] != (1, 1, 1) or w.shape[3] != x.shape[-1] or x.zp or y.zp:
        raise ModelFileError(f"DEPTHWISE_CONV_2D {y.name!r}: the integer model defines the 1x1 16x8 form (one weight "
                             "per channel, zero points 0) only")
    mult, shift = _depthwise_multipliers(model, op)
    if np.any(shift > 7):  # TFLite's 64-bit MultiplyByQuantizedMultiplier takes shifts up to 7
        raise ModelFileError(f"DEPTHWISE_CONV_2D {y.name!r}: a multiplier outside TFLite's 64-bit range")
    return K.depthwise_16x8(v[0], v[1].reshape(-1), v[2], mult, shift)


def _ln_stats_check(model, op):
    """tflm_ops.c's ln_stats_prepare: int16 rows of 1..4096 values (the int64 bounds), one value out per row."""
    x, y = _t(model, op, 0), _t(model, op, 0, out=True)
    if x.dtype != "int16" or y.dtype != "int16" or not 1 <= x.shape[-1] <= K.LN_MAX_CHANNELS or \
            tuple(y.shape) != tuple(x.shape[:-1]) + (1,):
        raise ModelFileError(f"{op.kind} {y.name!r}: int16 rows of 1..{K.LN_MAX_CHANNELS} values in, one int16 per "
                             "row out")


def _ln_neg_mean(model, op, v):
    _ln_stats_check(model, op)
    return K.ln_neg_mean(v[0])


def _ln_rstd(model, op, v):
    _ln_stats_check(model, op)
    o = op.options
    if not 0 <= o["c"] <= 62 - K.SIGMA_EXTRA_BITS or not 0 <= o["eps"] <= 2**62:
        raise ModelFileError(f"TSPTQ_LN_RSTD {_t(model, op, 0, out=True).name!r}: options out of range")
    return K.ln_rstd(v[0], o["eps"], o["c"])


def _token_mean_i16(model, op, v):
    return K.token_mean_i16(v[0], v[1], op.options["first"])


_NPU_SPECS = (
    # int16 activations x int8 weights, int64 bias, int16 output: FULLY_CONNECTED's 16x8 form (op version 7)
    OpSpec("FULLY_CONNECTED_16X8", 3, _fully_connected_16x8, (_B.FULLY_CONNECTED, 7), "FullyConnectedOptions",
           persistent=_per_weight_scale, multipliers=_conv_fc_multipliers),
    OpSpec("QUANTIZE", 1, _quantize, (_B.QUANTIZE, 2), elementwise=True),
    OpSpec("TSPTQ_LAYERNORM_2S_I16", 5, _layernorm_2s_i16, option_keys=("in_zp", "eps", "out_zp", "out_shift"),
           params_from=1),
    OpSpec("TSPTQ_ADD_2S_I16", 3, _add_2s_i16, option_keys=("a_zp", "b_zp", "out_zp"), params_from=2),
    OpSpec("TSPTQ_PLANE_2S", 1, _plane_2s, option_keys=("plane", "bits", "signed_fine"), elementwise=True),
    # the two planes' int32 products (BATCH_MATMUL int8 -> int32) and the V-2SF code of P -> the context code
    OpSpec("TSPTQ_PV_SUM_2S", 3, _pv_sum_2s,
           option_keys=("bits", "ratio_log2", "signed_fine", "b_zp", "mult", "shift", "out_zp")),
    # The LayerNorm on the NPU (``layernorm_npu``): the row statistics on the CPU, the rest builtins
    OpSpec("TSPTQ_LN_NEG_MEAN", 1, _ln_neg_mean),
    OpSpec("TSPTQ_LN_RSTD", 1, _ln_rstd, option_keys=("eps", "c")),
    OpSpec("MUL", 2, _mul, (_B.MUL, 4), "MulOptions"),
    # 1x1, int16 activations x int8 per-channel weights, int64 bias: the LayerNorm's gamma and beta
    OpSpec("DEPTHWISE_CONV_2D_16X8", 3, _depthwise_16x8, (_B.DEPTHWISE_CONV_2D, 5), "DepthwiseConv2DOptions",
           persistent=_per_weight_scale, multipliers=_depthwise_multipliers),
    # the patch-token mean of TSPTQ_LAYERNORM_2S_I16's output, on each channel's step (token+avg heads)
    OpSpec("TSPTQ_TOKEN_MEAN_I16", 2, _token_mean_i16, option_keys=("first",), params_from=1),
)
NPU_OPS: dict[str, OpSpec] = {s.name: s for s in _NPU_SPECS}

ALL_OPS: dict[str, OpSpec] = {**OPS, **NPU_OPS}
