"""The NPU variant's LayerNorm as builtins (``lower(qm, npu=True, residual16=True, layernorm_npu=...)``, ``tsptq
export --npu ethos-u --residual int16 --layernorm npu``; docs/integer-semantics.md "The LayerNorm on the NPU").

An Ethos-U55 runs elementwise int16 ADD and MUL and a 1x1 16x8 DEPTHWISE_CONV_2D cheaply, but no builtin gives the
exact variance of an int16 row whose outlier channels set its scale. So the row statistics stay on the CPU as two
custom ops (minus the mean; the reciprocal deviation, sized from the calibration's smallest token deviation) and the
elementwise work, gamma and beta go to the NPU (docs/npu.md has the measurements behind this split).
"""
from __future__ import annotations

import math

import numpy as np

from tsptq.errors import QuantizationError
from tsptq.intmodel import kernels as K
from tsptq.intmodel.graph import QuantParams

LN_RSTD_MARGIN = 4  # the NPU LayerNorm's reciprocal deviation: room below the calibration's smallest deviation
BIAS_LIMIT = 2**39  # Vela stores a bias in 40 signed bits (its encoder asserts -2^39 <= b < 2^39)
# what a refusal of the LayerNorm on the NPU tells the user (the --npu default form): the way around it
CPU_HINT = " (--layernorm cpu keeps the LayerNorm one CPU op)"


def norm_input_point(norm: str) -> str:
    """The residual point a LayerNorm reads: blocks.i.norm1 <- blocks.i.in, blocks.i.norm2 <- blocks.i.mid,
    norm <- norm.in."""
    if norm == "norm":
        return "norm.in"
    block, which = norm.rsplit(".", 1)
    return f"{block}.in" if which == "norm1" else f"{block}.mid"


def _gamma_beta(gamma: np.ndarray, beta: np.ndarray, s_n: float, unit: float, D: int):
    """The depthwise weights that carry gamma and beta: (float32 weight scales, int8 weights (1, 1, 1, D), int64
    bias). Channel c: w_c = +-127 on the step |gamma_c| / 127 and b_c = round(beta_c / (s_n s_w_c)), the bias in the
    accumulator's unit. A small |gamma_c| makes that bias large: w_c shrinks (down to +-1, the same gamma on the step
    |gamma_c| / |w_c|) to keep |b_c| below Vela's 40 bits. A gamma_c too small to move the output by half a step at
    |n| = sqrt(D) is 0 (w_c = 0 on the step 1, b_c = round(beta_c / s_n))."""
    gamma = np.where(np.abs(gamma) * math.sqrt(D) < unit / 2, 0.0, gamma)
    with np.errstate(divide="ignore"):  # half the limit: room for the float32 rounding of the weight scale
        room = np.floor(BIAS_LIMIT / 2 * s_n * np.abs(gamma) / np.maximum(np.abs(beta), 1e-300))
    mag = np.where(gamma != 0, np.clip(room, 1, 127), 0.0)
    w_scale = np.where(gamma != 0, np.abs(gamma) / np.maximum(mag, 1), 1.0).astype(np.float32)
    w = (mag * np.sign(gamma)).astype(np.int8)
    bias = np.round(beta / (np.float32(s_n) * w_scale).astype(np.float32).astype(np.float64))
    if np.abs(bias).max(initial=0) >= BIAS_LIMIT:  # beta alone (gamma_c 0, or even w_c = 1) past 40 bits
        raise QuantizationError("beta outside the 16x8 DEPTHWISE_CONV_2D's bias range (Vela's 40 bits) for the "
                                f"LayerNorm on the NPU{CPU_HINT}")
    return w_scale, w.reshape(1, 1, 1, D), bias.astype(np.int64)


def layernorm_builtins(b, norm: str, x: int, shape, sigma_min: dict[str, float]) -> int:
    """One LayerNorm of the int16 residual stream as NPU builtins around two row statistics on the CPU, written by
    the NPU variant's builder ``b`` (``lower._NpuBuilder``); ``sigma_min``: the smallest token deviation per residual
    point over the calibration images (``QuantizedViT.residual_sigma_min``):
      TSPTQ_LN_NEG_MEAN  m = -round(S / D)                              (1, T, 1) int16, x's step
      TSPTQ_LN_RSTD      r = round(2^c / (D sigma_x)), at most 32767     (1, T, 1) int16, step D / (s_x 2^c)
      ADD (int16)        d = x + m                                       x's step
      MUL (int16)        n = d r, requantized                            step 2^-k: n = (x - mean) / sigma
      DEPTHWISE_CONV_2D  y_c = gamma_c n_c + beta_c, 1x1 16x8: weights +-127 on |gamma_c| / 127 (``_gamma_beta``),
                         int64 bias
    The output is int16 on the LayerNorm output code's unit (its base step), zero point 0: the input the 16x8
    FCs read, on that grid rather than on the code's per-channel steps. ``c`` is sized so that the smallest token
    deviation the calibration images showed gives r in (32767 / (2 LN_RSTD_MARGIN), 32767 / LN_RSTD_MARGIN]."""
    qm, cfg = b.qm, b.qm.graph.cfg
    gamma, beta = (t.double().numpy() for t in qm.graph.norms[norm])
    xt = b.t(x)
    T, D = shape[-2], shape[-1]
    if xt.dtype != "int16" or xt.zp or xt.n_scales != 1:
        raise QuantizationError(f"{norm}: the LayerNorm on the NPU reads the int16 residual stream "
                                "(--residual int16)")
    point = norm_input_point(norm)
    if point not in sigma_min:
        raise QuantizationError(f"{norm}: no calibration deviation for {point} (qm.residual_sigma_min)")
    s_x = float(xt.quant.scale[0])
    unit = b.code_unit(norm, D)  # the output code's base step
    c = math.floor(math.log2(32767 / LN_RSTD_MARGIN * D * sigma_min[point] / s_x))
    if not 0 <= c <= 62 - K.SIGMA_EXTRA_BITS:
        raise QuantizationError(f"{norm}: the token deviations ({sigma_min[point]:.3g}) leave no int16 "
                                f"reciprocal for the LayerNorm on the NPU{CPU_HINT}")
    k = math.floor(math.log2(32767 / (1.01 * math.sqrt(D))))  # |n| <= sqrt(D - 1)
    s_r = float(np.float32(D / (s_x * 2.0**c)))
    if K.quantize_multiplier(float(np.float32(np.float32(s_x) * np.float32(s_r)) / np.float32(2.0**-k)))[1] > 0:
        # the MUL's multiplier s_x s_r / s_n (float32, as ops._mul) must stay below 1 (integer model: ops._mul)
        raise QuantizationError(f"{norm}: the token deviations ({sigma_min[point]:.3g}) are too small against the "
                                f"residual step for the LayerNorm on the NPU{CPU_HINT}")
    w_scale, w, bias = _gamma_beta(gamma, beta, 2.0**-k, unit, D)
    mult, shift = K.builtin_multipliers(2.0**-k, w_scale, unit)
    if np.any(shift > 7) or np.any(mult[w.reshape(-1) != 0] == 0):
        raise QuantizationError(f"{norm}: gamma outside the 16x8 DEPTHWISE_CONV_2D's range for the LayerNorm on "
                                f"the NPU{CPU_HINT}")
    eps = min(round(D * D * cfg.ln_eps / s_x ** 2), 2**62)
    y = b.act_i16(norm, shape)  # the LayerNorm's point: int16 on its output code's unit
    neg_mean = b.op("TSPTQ_LN_NEG_MEAN", [x], b.add_i16(f"{norm}.neg_mean", (1, T, 1), s_x))
    rstd = b.op("TSPTQ_LN_RSTD", [x], b.add_i16(f"{norm}.rstd", (1, T, 1), s_r), eps=eps, c=c)
    d = b.op("ADD", [x, neg_mean], b.add_i16(f"{norm}.centered", (1, T, D), s_x),
             pot_scale_int16=False)
    n = b.op("MUL", [d, rstd], b.add_i16(f"{norm}.normalized", (1, T, D), 2.0**-k))
    n4 = b.reshape(f"{norm}.normalized_nhwc", n, (1, T, 1, D))
    b_scale = (np.float32(2.0**-k) * w_scale).astype(np.float32)
    wi = b.add(f"{norm}.gamma", w.shape, "int8", QuantParams(w_scale, np.zeros(D, np.int64), axis=3), w)
    bi = b.add(f"{norm}.beta", (D,), "int64", QuantParams(b_scale, np.zeros(D, np.int64)), bias)
    y4 = b.op("DEPTHWISE_CONV_2D_16X8", [n4, wi, bi],
              b.add_i16(f"{norm}.affine", (1, T, 1, D), unit))
    return b.op("RESHAPE", [y4, b.const_i32(f"{norm}.shape", shape)], y, new_shape=list(shape))
