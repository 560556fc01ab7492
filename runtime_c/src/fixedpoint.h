/* tsptq runtime: fixed-point primitives (docs/integer-semantics.md, "Primitives"), the C form of
 * toolchain/tsptq/intmodel/fixedpoint.py. C99, static inline, no libc.
 *
 * Portability notes:
 * - Right shifts of negative signed values are implementation-defined in C99; every compiler we target
 *   (gcc, clang, MSVC, armcc) shifts arithmetically, which is what the spec means by `>>`. The build checks it
 *   once (TQ_STATIC_ASSERT below).
 * - Left shifts of negative values are undefined in C99: every left shift here goes through uint64_t/uint32_t
 *   (tq_shl64 / tq_shl32), which also reproduces numpy's int64 wrap-around bit for bit.
 * - Conversions of out-of-range unsigned values to signed types are implementation-defined (modulo 2^n on every
 *   two's complement target); they only happen where numpy itself would wrap.
 * - Signed multiplications are done in int64 where the spec bounds the product below 2^63; the few places where the
 *   Python reference could wrap (SRDHM on a left-shifted operand) multiply in uint64 to wrap the same way.
 */
#ifndef TSPTQ_FIXEDPOINT_H
#define TSPTQ_FIXEDPOINT_H

#include <stdint.h>

#define TQ_INT32_MIN (-2147483647 - 1)
#define TQ_INT32_MAX 2147483647

/* Arithmetic right shift of negative numbers (see above). */
typedef char tq_arith_shift_check[((-8 >> 1) == -4 && ((int64_t)-8 >> 1) == -4) ? 1 : -1];

/* x << n with two's complement wrap-around (no UB for negative x), 0 <= n <= 63. */
static inline int64_t tq_shl64(int64_t x, int n) { return (int64_t)((uint64_t)x << n); }
static inline int32_t tq_shl32(int32_t x, int n) { return (int32_t)((uint32_t)x << n); }

/* The value d of a V-2SF code byte q of `bits` bits (docs/integer-semantics.md): the top bit is the flag, the rest the
 * field; coarse (flag 1): field << m; fine: field, a (bits - 1)-bit two's complement number when signed_fine. */
static inline int32_t tq_decode_two_scale(uint32_t q, int32_t bits, int32_t m, int32_t signed_fine) {
    const int32_t code = (int32_t)(q & ((1u << bits) - 1u));
    const int32_t flag = code >> (bits - 1), field = code & ((1 << (bits - 1)) - 1);
    if (flag) return tq_shl32(field, m);
    if (signed_fine && field >= (1 << (bits - 2))) return field - (1 << (bits - 1));
    return field;
}

static inline int8_t tq_sat8(int64_t v) { return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v)); }
static inline int64_t tq_clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* gemmlowp SaturatingRoundingDoublingHighMul on an int64-held a (intmath.saturating_rounding_doubling_high_mul:
 * a is int32 for every in-spec use; a wider a behaves like numpy's int64). ab + nudge, divided by 2^31 with
 * truncation toward zero; INT32_MAX when a == b == INT32_MIN. */
static inline int64_t tq_srdhm64(int64_t a, int32_t b) {
    int64_t ab, s;
    if (a == TQ_INT32_MIN && b == TQ_INT32_MIN) return TQ_INT32_MAX;
    ab = (int64_t)((uint64_t)a * (uint64_t)(int64_t)b);
    s = (int64_t)((uint64_t)ab + (uint64_t)(ab >= 0 ? (int64_t)1 << 30 : 1 - ((int64_t)1 << 30)));
    /* truncating division by 2^31: add 2^31 - 1 to negative values before the arithmetic shift */
    return (int64_t)((uint64_t)s + (uint64_t)((s >> 63) & (int64_t)0x7FFFFFFF)) >> 31;
}

/* int32 form (the gemmlowp original). */
static inline int32_t tq_srdhm(int32_t a, int32_t b) { return (int32_t)tq_srdhm64(a, b); }

/* RoundingDivideByPOT: x / 2^e rounded half away from zero; 0 <= e <= 62 (int64), 0 <= e <= 31 (int32). */
static inline int64_t tq_rdbpot64(int64_t x, int e) {
    int64_t mask = (int64_t)(((uint64_t)1 << e) - 1u);
    int64_t rem = x & mask;
    int64_t thr = (mask >> 1) + (x < 0);
    return (x >> e) + (rem > thr);
}
static inline int32_t tq_rdbpot(int32_t x, int e) {
    int32_t mask = (int32_t)(((uint32_t)1 << e) - 1u);
    int32_t rem = x & mask;
    int32_t thr = (mask >> 1) + (x < 0);
    return (x >> e) + (rem > thr);
}

/* TFLite MultiplyByQuantizedMultiplier (two roundings): RDBPOT(SRDHM(x * 2^max(shift,0), M), max(-shift,0)).
 * Computed on int64 like intmath.multiply_by_quantized_multiplier (identical to TFLite's int32 arithmetic whenever
 * x * 2^max(shift,0) fits an int32). */
static inline int64_t tq_mbqm(int64_t x, int32_t mult, int32_t shift) {
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    return tq_rdbpot64(tq_srdhm64(tq_shl64(x, left), mult), right);
}

/* TFLite's single-rounding form: (x * M + 2^(30 - shift)) >> (31 - shift) in 64 bits (half up); shift <= 30. */
static inline int64_t tq_mbqm1(int64_t x, int32_t mult, int32_t shift) {
    int total = 31 - shift;
    uint64_t p = (uint64_t)x * (uint64_t)(int64_t)mult + ((uint64_t)1 << (total - 1));
    return (int64_t)p >> total;
}

/* x / 2^n rounded half away from zero (int64), 0 <= n <= 62. */
static inline int64_t tq_rshift_round(int64_t x, int n) { return tq_rdbpot64(x, n); }

/* rshift_round(acc * M, 31 - shift): one rounding; |acc| < 2^31, M < 2^31 keep the product below 2^62. */
static inline int64_t tq_requant1(int64_t acc, int32_t mult, int32_t shift) {
    return tq_rdbpot64((int64_t)((uint64_t)acc * (uint64_t)(int64_t)mult), 31 - shift);
}

/* a / b rounded half away from zero, b > 0. */
static inline int64_t tq_div_round(int64_t a, int64_t b) {
    int64_t q = ((a < 0 ? -a : a) + (b >> 1)) / b;
    return a < 0 ? -q : q;
}

/* Number of significant bits of v >= 0 (0 for 0). */
static inline int tq_bit_length64(uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
    return v ? 64 - __builtin_clzll(v) : 0;
#else
    int n = 0;
    while (v) { v >>= 1; n++; }
    return n;
#endif
}

/* floor(sqrt(n)) for n < 2^63, exact. tq_isqrt64_ref: bit by bit, no floating point (the reference, and the only form
 * under TSPTQ_REFERENCE_ONLY or without a hardware square root). */
static inline int64_t tq_isqrt64_ref(uint64_t n) {
    uint64_t res = 0, bit = (uint64_t)1 << 62;
    while (bit > n) bit >>= 2;
    while (bit) {
        if (n >= res + bit) {
            n -= res + bit;
            res = (res >> 1) + bit;
        } else {
            res >>= 1;
        }
        bit >>= 2;
    }
    return (int64_t)res;
}

/* tq_isqrt64: from a hardware square root's estimate r0, corrected to the r with r^2 <= n < (r + 1)^2, which defines
 * the result whatever the estimate was (tq_isqrt64_ref's value; ~40 instructions on a Cortex-M instead of its 31-step
 * loop). r stays at most rmax = floor(sqrt(2^63 - 1)) = 3037000499, so every square fits a uint64. One instruction of
 * inline assembly (GCC and clang; TSPTQ_NO_INLINE_ASM or TSPTQ_REFERENCE_ONLY keep the loop), no libc:
 * - x86-64 (SSE2's SQRTSD): the double square root of n, within 1 of sqrt(n).
 * - 32-bit Arm with a single-precision FPU (Cortex-M4F/M7/M55; VSQRT.F32): the top 32 bits of n (an even shift 2k)
 *   give r0 = sqrt(m) 2^k, within about 3 2^-24 r of sqrt(n) (|r0 - sqrt(n)| < 300 for r < 2^31.5); one step
 *   r0 + (n - r0^2) / (2 r0), also in float, lands within 2 of it. TSPTQ_TEST_HOST_SQRTF runs this form on a host's
 *   sqrtf (tests/test_ln_stats_kernels.py). */
#if !defined(TSPTQ_REFERENCE_ONLY) && defined(TSPTQ_TEST_HOST_SQRTF)
static inline float tq_sqrtf_hw(float x) { return __builtin_sqrtf(x); }
#define TQ_ISQRT_FLOAT 1
#elif !defined(TSPTQ_REFERENCE_ONLY) && !defined(TSPTQ_NO_INLINE_ASM) && defined(__GNUC__) && defined(__arm__) &&      \
    defined(__ARM_FP) && (__ARM_FP & 4)
static inline float tq_sqrtf_hw(float x) { /* not AArch64, whose register constraints differ */
    float r;
    __asm__("vsqrt.f32 %0, %1" : "=t"(r) : "t"(x));
    return r;
}
#define TQ_ISQRT_FLOAT 1
#elif !defined(TSPTQ_REFERENCE_ONLY) && !defined(TSPTQ_NO_INLINE_ASM) && defined(__GNUC__) && defined(__x86_64__) &&   \
    defined(__SSE2__)
static inline double tq_sqrt_hw(double x) {
    double r;
    __asm__("sqrtsd %1, %0" : "=x"(r) : "x"(x));
    return r;
}
#define TQ_ISQRT_DOUBLE 1
#endif

#define TQ_ISQRT_RMAX 3037000499u /* floor(sqrt(2^63 - 1)) */

static inline int64_t tq_isqrt64_fix(uint64_t n, uint64_t r) {
    if (r > TQ_ISQRT_RMAX) r = TQ_ISQRT_RMAX;
    while (r * r > n) r--;
    while (r < TQ_ISQRT_RMAX && (r + 1) * (r + 1) <= n) r++;
    return (int64_t)r;
}

#if defined(TQ_ISQRT_FLOAT)
static inline int64_t tq_isqrt64(uint64_t n) {
    const int bits = tq_bit_length64(n), k = bits > 32 ? (bits - 31) / 2 : 0;
    float f = tq_sqrtf_hw((float)(uint32_t)(n >> (2 * k))) * (float)((uint32_t)1 << k);
    uint64_t r;
    if (f > (float)TQ_ISQRT_RMAX) f = (float)TQ_ISQRT_RMAX;
    r = (uint64_t)(uint32_t)f;
    if (r > 0) {
        const int64_t err = (int64_t)(n - r * r); /* |err| < 2^42: a float with room */
        const int64_t t = (int64_t)r + (int32_t)((float)err / (2.0f * (float)(uint32_t)r)); /* |step| < 2^9 */
        r = t < 0 ? 0 : (uint64_t)t;
    }
    return tq_isqrt64_fix(n, r);
}
#elif defined(TQ_ISQRT_DOUBLE)
static inline int64_t tq_isqrt64(uint64_t n) {
    return tq_isqrt64_fix(n, (uint64_t)tq_sqrt_hw((double)n)); /* < 2^31.5: the conversion is defined */
}
#else
#define tq_isqrt64 tq_isqrt64_ref
#endif

/* TFLite's QuantizeMultiplier(real) -> (M, shift); in quantize_multiplier.c (the runtime's only libm use). */
void tq_quantize_multiplier(double real, int32_t *multiplier, int32_t *shift);

#endif
