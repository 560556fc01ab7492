"""Fixed-point primitives of the integer model, vectorized over numpy int64 arrays.

The first four are TFLite's own (``tensorflow/lite/kernels/internal/common.h`` and ``quantization_util.cc``,
without ``TFLITE_SINGLE_ROUNDING``): builtin ops in the exported file mean exactly what TFLite means by them.
The rest are the project's helpers for the two-scale ops. ``docs/integer-semantics.md`` states each in words.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = M * 2^(shift - 31), M in [2^30, 2^31) (0 for real == 0)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.copysign(math.floor(abs(q) * (1 << 31) + 0.5), q))  # TfLiteRound: half away from zero
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values (held in int64)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    s = ab + np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    high = (s + ((s >> 63) & ((1 << 31) - 1))) >> 31  # C's division by 2^31 truncates toward zero
    if np.any(b == INT32_MIN):
        high = np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)
    return high


def rounding_divide_by_pot(x: np.ndarray, exponent) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier (int32 in, int32 out); multiplier/shift may be per-channel arrays."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = np.asarray(x, dtype=np.int64) * (np.int64(1) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), right)


# --- the project's helpers ------------------------------------------------------------------------------------------

def rshift_round(x: np.ndarray, n) -> np.ndarray:
    """x / 2^n rounded half away from zero, for int64 x (the same rule as rounding_divide_by_pot)."""
    return rounding_divide_by_pot(x, n)


def div_round(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b rounded half away from zero, b > 0 (int64)."""
    a = np.asarray(a, dtype=np.int64)
    q = (np.abs(a) + (np.asarray(b, dtype=np.int64) >> 1)) // b
    return np.where(a < 0, -q, q)


def isqrt(n: np.ndarray) -> np.ndarray:
    """floor(sqrt(n)) for 0 <= n < 2^63 (float estimate, then exact integer correction)."""
    n = np.asarray(n, dtype=np.int64)
    r = np.floor(np.sqrt(n.astype(np.float64))).astype(np.int64)
    r = np.where(r * r > n, r - 1, r)
    r = np.where(r * r > n, r - 1, r)
    r = np.where((r < 3037000499) & ((r + 1) * (r + 1) <= n), r + 1, r)  # (r + 1)^2 stays in int64
    return r


def fixed_multiplier(real: float, frac_bits: int = 0) -> tuple[int, int]:
    """(M, S) with M / 2^S ~= real * 2^frac_bits and M in [2^30, 2^31): the form ``rshift_round(x * M, S)`` uses."""
    m, e = quantize_multiplier(real * (1 << frac_bits))
    if m <= 0 or not 0 <= 31 - e <= 62:
        raise OverflowError(f"multiplier {real} * 2^{frac_bits} has no fixed-point form M / 2^S with 0 <= S <= 62")
    return m, 31 - e
