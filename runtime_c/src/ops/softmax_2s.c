/* TSPTQ_SOFTMAX_2S (docs/integer-semantics.md; tsptq.intmodel.kernels.softmax_2s / encode_probability / encode_two_scale).
 * scratch: N int32 (the row's exp values). On x86 (avx2: 8 lanes; avx512vnni, amx: 16) the maximum, the exp values
 * and the uniform or two-scale codes are vectorized (the conditions and why they are exact: above softmax_simd_lut_ok);
 * on Helium (Cortex-M55, TQ_SIMD_MVE: 4 lanes) the same parts, in uint32 lanes (above softmax_mve_max).
 * A per-head scores code comes with one exp table per head (256 * heads entries): the op runs each head's rows with
 * its own table (tq_softmax_2s_heads). */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

#define TQ_EXP_FRAC_BITS 20
#define TQ_PROB_FRAC_BITS 30
#define TQ_TWO_SCALE_FRAC_BITS 16

/* V-2SF encoding of v (Q16 units of the fine step): the nearest representable value. */
static inline uint8_t encode_two_scale(int64_t v, int32_t bits, int32_t m, int32_t signed_fine) {
    const int64_t field_max = ((int64_t)1 << (bits - 1)) - 1;
    const int64_t lo = signed_fine ? -((int64_t)1 << (bits - 2)) : 0;
    const int64_t hi = signed_fine ? ((int64_t)1 << (bits - 2)) - 1 : field_max;
    const int64_t c0 = (hi >> m) + 1;
    int64_t fine = tq_clamp64(tq_rshift_round(v, TQ_TWO_SCALE_FRAC_BITS), lo, hi);
    int64_t coarse = tq_clamp64(tq_rshift_round(v, TQ_TWO_SCALE_FRAC_BITS + m), c0, field_max);
    if (tq_shl64(v, 1) >= tq_shl64(hi + tq_shl64(c0, m), TQ_TWO_SCALE_FRAC_BITS))
        return (uint8_t)(coarse | ((int64_t)1 << (bits - 1)));
    return (uint8_t)(fine & field_max);
}

/* round(-log2(p / 2^30)) for a Q30 probability, clamped; the zero code 2^bits - 1 for p == 0. */
static inline uint8_t encode_log2(int64_t p, int32_t bits) {
    const int64_t zero = ((int64_t)1 << bits) - 1;
    int k;
    int64_t q;
    if (p <= 0) return (uint8_t)zero;
    k = tq_bit_length64((uint64_t)p) - 1;
    q = TQ_PROB_FRAC_BITS - k - ((uint64_t)p * (uint64_t)p >= ((uint64_t)1 << (2 * k + 1)) ? 1 : 0);
    return (uint8_t)tq_clamp64(q, 0, zero);
}

#if defined(TQ_SIMD_AVX2) || defined(TQ_SIMD_DSP)
/* x86 (AVX2, AVX-512; Helium and the Cortex-M4's DSP path, below, share the checks and constants): the maximum, the
 * exp values and the uniform or two-scale codes vectorized, exactly:
 * - every exp table entry in [0, 2^20] (checked once per call; the op's prepare makes sure of it) and N <= 2047 keep
 *   e_i >= 0 and E = sum e_i < 2^31 (int32 sums), so recip = 2^50 // E >= 0 (0 for E = 0);
 * - where recip < 2^32 (E >= 2^18, e.g. any table starting at 2^20), e_i recip is an exact 32 x 32 -> 64-bit
 *   unsigned product (vpmuludq), at most E recip <= 2^50, and p = rshift_round(e recip, 20) = (e recip + 2^19) >> 20
 *   (rounding half away from zero is half up for x >= 0), p <= 2^30 + 1 < 2^32; a row with a larger recip takes the
 *   scalar loop;
 * - 0 <= mult < 2^31 (checked), so p mult is exact unsigned too, < 2^62, and v = rshift_round(p mult, shift) =
 *   (p mult + half) >> shift (half = 2^(shift - 1), 0 for shift = 0), 0 <= v < 2^62;
 * - the codes of a v >= 0: uniform: sat8(v + zp) = sat8(min(v, 255) + zp) for -128 <= zp <= 127; two-scale: fine =
 *   min((v + 2^15) >> 16, hi) (>= 0 >= lo, <= hi <= field_max, so & field_max changes nothing), coarse as the
 *   scalar code, 2v >= split iff v >= ceil(split / 2) = thr (split >= 0, no wrap: m <= 8 keeps it below 2^32);
 *   with AVX-512 the codes of v clamped to vmax (below 2^31, see softmax_codes_init) in int32 lanes.
 * Other options (log2 codes, m > 8) vectorize the maximum and exp values only. */
static int softmax_simd_lut_ok(const int32_t *exp_lut, int32_t N) {
    int32_t i;
#if defined(TQ_SIMD_MVE)
    int32_t lo = 0, hi = 0; /* the table's extremes, 4 lanes at a time (checked once per head) */
    if (N < 1 || N > 2047) return 0;
    for (i = 0; i < 256; i += 4) {
        const int32x4_t v = vldrwq_s32(exp_lut + i);
        lo = vminvq_s32(lo, v), hi = vmaxvq_s32(hi, v);
    }
    return lo >= 0 && hi <= (1 << TQ_EXP_FRAC_BITS);
#else
    if (N < 1 || N > 2047) return 0;
    for (i = 0; i < 256; i++)
        if (exp_lut[i] < 0 || exp_lut[i] > (1 << TQ_EXP_FRAC_BITS)) return 0;
    return 1;
#endif
}

static int softmax_simd_codes_ok(int32_t out_kind, int32_t mult, int32_t shift, int32_t out_zp, int32_t bits,
                                 int32_t m) {
    if (mult < 0 || shift < 0 || shift > 62) return 0;
    if (out_kind == TQ_UNIFORM) return out_zp >= -128 && out_zp <= 127;
    return out_kind == TQ_TWO_SCALE && bits >= 2 && bits <= 8 && m >= 0 && m <= 8;
}

/* The per-call constants of the codes. */
typedef struct {
    int64_t half, hi, c0, field_max, top, thr, half_m, vmax;
    int32_t shift, coarse_shift, two_scale, zp;
} softmax_codes;

static void softmax_codes_init(softmax_codes *k, int32_t out_kind, int32_t shift, int32_t out_zp, int32_t bits,
                               int32_t m, int32_t signed_fine) {
    k->two_scale = out_kind == TQ_TWO_SCALE;
    k->shift = shift;
    k->half = shift ? (int64_t)1 << (shift - 1) : 0;
    k->zp = out_zp;
    k->vmax = 255; /* uniform: min(v, 255) has the code of v */
    if (!k->two_scale) return; /* bits and m mean nothing to a uniform code (softmax_simd_codes_ok checks them for
                                * two-scale codes only): no shifts by them */
    k->field_max = ((int64_t)1 << (bits - 1)) - 1;
    k->hi = signed_fine ? ((int64_t)1 << (bits - 2)) - 1 : k->field_max;
    k->c0 = (k->hi >> m) + 1;
    k->top = (int64_t)1 << (bits - 1);
    k->thr = (((k->hi + (k->c0 << m)) << TQ_TWO_SCALE_FRAC_BITS) + 1) >> 1;
    k->coarse_shift = TQ_TWO_SCALE_FRAC_BITS + m;
    k->half_m = (int64_t)1 << (k->coarse_shift - 1);
    /* two-scale: for v >= vmax the fine value is hi, the coarse one
     * field_max and 2v >= split (each nondecreasing in v), so v and vmax have the same code. bits <= 8, m <= 8 keep
     * vmax + 2^(15 + m) below 2^31: 127 << 24 + 2^23, thr <= ((127 + (128 << 8)) << 16) / 2 + 1. */
    k->vmax = k->hi << TQ_TWO_SCALE_FRAC_BITS;
    if ((k->field_max << k->coarse_shift) > k->vmax) k->vmax = k->field_max << k->coarse_shift;
    if (k->thr > k->vmax) k->vmax = k->thr;
}
#endif

#if defined(TQ_SIMD_MVE)
/* Helium (Cortex-M55): the maximum, the exp values (VLDRW gathers from the table) and their sum, and the uniform or
 * two-scale codes, 4 uint32 lanes (whole vectors, then one tail-predicated one); exact under the conditions above
 * (softmax_simd_lut_ok, softmax_simd_codes_ok) with recip < 2^31 and shift >= 2, without 64-bit lanes:
 * - p = (e recip + 2^19) >> 20 is VRMULH(e << 11, recip << 1) = (e recip 2^12 + 2^31) >> 32: e <= 2^20 and
 *   recip < 2^31 keep both operands in 32 bits, VRMULH rounds at full width; p <= 2^30 + 1;
 * - v = (P + 2^(s-1)) >> s for P = p mult < 2^61 (hi = VMULH = floor(P / 2^32), lo = VMUL, its low word): for
 *   s >= 33 the low word cannot carry into (P + 2^(s-1)) >> s, so v = VRSHL(hi, 32 - s) (hi rounded by s - 32);
 *   for 2 <= s <= 32, with t = s - 1 (1..31), F = P >> t fits 32 bits iff hi < 2^t and is then
 *   (hi << (32 - t)) | (lo >> t) (disjoint bits); VQSHL saturates hi << (32 - t) to all ones otherwise, so F is
 *   exact or all ones (its true value then >= 2^32 - 1), and v = (F + 1) >> 1 (VRSHR #1), exact or 2^31 where the
 *   true v >= 2^31 > vmax (softmax_codes_init), which has the same code;
 * - the codes of v < 2^32 in uint32 lanes (no overflow: VRSHR / VRSHL round at full width): two-scale fine =
 *   min(round(v / 2^16), hi), coarse = min(max(round(v / 2^(16 + m)), c0), field_max) + top (top is above
 *   field_max: + is |), coarse where v >= thr (unsigned, see above); uniform min(min(v, 255) + zp, 127) (>= -128:
 *   zp >= -128).
 * shift 0 or 1 (v ~ p mult, of no use), log2 codes, recip >= 2^31 (E <= 2^19) and tables outside [0, 2^20] take the
 * scalar codes. */
static inline int32_t softmax_mve_max(const int8_t *xr, int32_t n) {
    int8_t mx = -128;
    int32_t i;
    for (i = 0; i + 16 <= n; i += 16) mx = vmaxvq_s8(mx, vldrbq_s8(xr + i));
    if (i < n) { /* the tail: a predicated load reads no byte past the row */
        const mve_pred16_t t = vctp8q((uint32_t)(n - i));
        mx = vmaxvq_p_s8(mx, vldrbq_z_s8(xr + i, t), t);
    }
    return mx;
}

/* e[i] = exp_lut[mx - x_i] (0 <= mx - x_i <= 255) and their sum (< 2^31: the entries are <= 2^20, n <= 2047) */
static inline int32_t softmax_mve_exp(const int8_t *xr, int32_t n, int32_t mx, const int32_t *exp_lut, int32_t *e) {
    const int32x4_t vmx = vdupq_n_s32(mx);
    int32_t E = 0, i;
    for (i = 0; i + 4 <= n; i += 4) {
        const int32x4_t ev =
            vldrwq_gather_shifted_offset_s32(exp_lut, vreinterpretq_u32_s32(vsubq_s32(vmx, vldrbq_s32(xr + i))));
        vstrwq_s32(e + i, ev);
        E = vaddvaq_s32(E, ev);
    }
    if (i < n) {
        const mve_pred16_t t = vctp32q((uint32_t)(n - i));
        const uint32x4_t idx = vreinterpretq_u32_s32(vsubq_s32(vmx, vldrbq_z_s32(xr + i, t)));
        const int32x4_t ev = vldrwq_gather_shifted_offset_z_s32(exp_lut, idx, t); /* inactive lanes 0 */
        vstrwq_p_s32(e + i, ev, t);
        E = vaddvaq_s32(E, ev);
    }
    return E;
}

/* The row's constants (softmax_mve_code). */
typedef struct {
    uint32x4_t rc2, mu, hi, c0, fm;
    uint32_t thr, top;
    int32_t s, neg_cs, zp;
} softmax_mve_k;

/* The codes of 4 exp values (see above); two_scale and wide (2 <= s <= 32) are constants of each caller's loop. */
__attribute__((always_inline)) static inline uint32x4_t softmax_mve_code(uint32x4_t ev, const softmax_mve_k *k,
                                                                         const int two_scale, const int wide) {
    const uint32x4_t p = vrmulhq_u32(vshlq_n_u32(ev, 11), k->rc2);
    uint32x4_t v = vmulhq_u32(p, k->mu);
    if (wide)
        v = vrshrq_n_u32(vorrq_u32(vqshlq_r_u32(v, 33 - k->s), vshlq_r_u32(vmulq_u32(p, k->mu), 1 - k->s)), 1);
    else
        v = vrshlq_n_u32(v, 32 - k->s);
    if (two_scale) {
        const uint32x4_t fine = vminq_u32(vrshrq_n_u32(v, TQ_TWO_SCALE_FRAC_BITS), k->hi);
        const uint32x4_t coarse = vaddq_n_u32(vminq_u32(vmaxq_u32(vrshlq_n_u32(v, k->neg_cs), k->c0), k->fm), k->top);
        return vpselq_u32(coarse, fine, vcmpcsq_n_u32(v, k->thr));
    }
    return vreinterpretq_u32_s32(vminq_s32(vaddq_n_s32(vreinterpretq_s32_u32(vminq_u32(v, vdupq_n_u32(255))), k->zp),
                                           vdupq_n_s32(127)));
}

__attribute__((always_inline)) static inline void softmax_mve_loop(const int32_t *e, int32_t n, const softmax_mve_k *k,
                                                                   uint8_t *yr, const int two_scale, const int wide) {
    const uint32_t *eu = (const uint32_t *)(const void *)e;
    int32_t i;
    for (i = 0; i + 4 <= n; i += 4) vstrbq_u32(yr + i, softmax_mve_code(vldrwq_u32(eu + i), k, two_scale, wide));
    if (i < n) {
        const mve_pred16_t t = vctp32q((uint32_t)(n - i));
        vstrbq_p_u32(yr + i, softmax_mve_code(vldrwq_z_u32(eu + i, t), k, two_scale, wide), t);
    }
}

/* The codes of one row from its exp values e and recip = 2^50 // E < 2^31 (see above; k->s >= 2). */
static void softmax_mve_row(const int32_t *e, int32_t n, uint32_t recip, softmax_mve_k *k, int two_scale,
                            uint8_t *yr) {
    k->rc2 = vdupq_n_u32(recip << 1);
    if (two_scale) {
        if (k->s <= 32) softmax_mve_loop(e, n, k, yr, 1, 1);
        else softmax_mve_loop(e, n, k, yr, 1, 0);
    } else {
        if (k->s <= 32) softmax_mve_loop(e, n, k, yr, 0, 1);
        else softmax_mve_loop(e, n, k, yr, 0, 0);
    }
}

/* 2^50 // E for 0 < E < 2^31. For E > 2^19 (the quotient below 2^31: the vector codes' case) a double-precision
 * estimate where the FPU has one (2^50 and E are exact doubles, the division is rounded once: within 1 of the
 * quotient, below 2^31 + 1), corrected with the remainder (loops: exact whatever the estimate); else the C
 * division (a library call). */
static inline int64_t softmax_mve_recip(int32_t E) {
    const int64_t one = (int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS);
#if defined(__ARM_FP) && (__ARM_FP & 8)
    if (E > (1 << 19)) {
        int64_t q = (int64_t)(uint32_t)((double)one / (double)E), r = one - (int64_t)((uint64_t)q * (uint32_t)E);
        while (r < 0) q--, r += E;
        while (r >= E) q++, r -= E;
        return q;
    }
#endif
    return one / E;
}
#endif

#if defined(TQ_SIMD_DSP) && !defined(TQ_SIMD_MVE)
/* Cortex-M4 class (DSP extension, no Helium): the maximum 4 bytes at a time (SSUB8 sets a lane's GE flag where
 * x >= max, signed; SEL keeps x there), the exp values and their sum (< 2^31, see above), one division per row
 * without the 64-bit library call, and the uniform or two-scale codes from two 32 x 32 -> 64-bit products per
 * element, in 32-bit words. Exact under the conditions above (softmax_simd_lut_ok, softmax_simd_codes_ok) with
 * E > 2^19 (so recip = 2^50 // E < 2^31) and shift >= 1:
 * - p = (e recip + 2^19) >> 20 = (e 2^11 . recip 2^1 + 2^31) >> 32 (UMULL / UMLAL): e <= 2^20 and recip < 2^31 keep
 *   both factors in 32 bits; p <= 2^30 + 1;
 * - P = p mult + 2^(s-1) < 2^62 (UMLAL), v = P >> s: for s >= 32 v = hi(P) >> (s - 32) < 2^30; for 1 <= s <= 31,
 *   v >= 2^32 iff hi(P) >> s != 0 (then v > vmax, taken as vmax: the same code, see softmax_codes_init), else
 *   v = (hi(P) << (32 - s)) | (lo(P) >> s) (disjoint bits), clamped to vmax < 2^31;
 * - the codes of 0 <= v < 2^31 as above (softmax_simd_lut_ok's comment), in uint32 without overflow (v + 2^(15+m)
 *   < 2^31 + 2^23); uniform: min(min(v, 255) + zp, 127) = min(v, 127 - zp) + zp (0 <= 127 - zp <= 255), so there
 *   vmax is 127 - zp.
 * Rows with E <= 2^19, shift 0, log2 codes and tables outside [0, 2^20] take the scalar codes. */
static inline int32_t softmax_dsp_max(const int8_t *xr, int32_t n) {
    uint32_t mx4 = 0x80808080u, w;
    int32_t i, mx = -128, k;
    for (i = 0; i + 4 <= n; i += 4) {
        memcpy(&w, xr + i, 4);
        (void)__ssub8((int8x4_t)w, (int8x4_t)mx4); /* GE[k] = (w_k - mx_k >= 0) */
        mx4 = __sel(w, mx4);
    }
    for (k = 0; k < 4; k++, mx4 >>= 8)
        if ((int8_t)(mx4 & 0xFF) > mx) mx = (int8_t)(mx4 & 0xFF);
    for (; i < n; i++)
        if (xr[i] > mx) mx = xr[i];
    return mx;
}

/* 2^50 // E for 2^19 < E < 2^31 (the quotient in (2^19, 2^31 - 2^12]): a single-precision estimate (within 258 of
 * it: relative error below 2^-23, then truncation), a second estimate from its remainder (|r| < 2^40, r / 512 fits
 * 32 bits), then the remainder's exact corrections (loops: exact whatever the estimates; here 2 steps at most). */
static inline uint32_t softmax_dsp_recip(int32_t E) {
    const int64_t one = (int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS);
    const float ef = (float)E;
    int32_t q = (int32_t)((float)one / ef);
    int64_t r = one - (int64_t)q * E;
    q += (int32_t)((float)(int32_t)(r / 512) * 512.0f / ef);
    r = one - (int64_t)q * E;
    while (r < 0) q--, r += E;
    while (r >= E) q++, r -= E;
    return (uint32_t)q;
}

typedef struct {
    uint32_t rc2, mult, vmax, hi, c0, fm, top, thr, half_m;
    uint64_t half;
    int32_t s, cs, zp;
} softmax_dsp_k;

__attribute__((always_inline)) static inline void softmax_dsp_loop(const int32_t *e, int32_t n,
                                                                   const softmax_dsp_k *k, uint8_t *yr,
                                                                   const int two_scale, const int wide) {
    int32_t i;
    for (i = 0; i < n; i++) {
        const uint32_t p = (uint32_t)(((uint64_t)((uint32_t)e[i] << 11) * k->rc2 + 0x80000000u) >> 32);
        const uint64_t P = (uint64_t)p * k->mult + k->half;
        const uint32_t hi = (uint32_t)(P >> 32);
        uint32_t v;
        if (wide) {
            v = (hi << (32 - k->s)) | ((uint32_t)P >> k->s);
            if ((hi >> k->s) || v > k->vmax) v = k->vmax;
        } else {
            v = hi >> (k->s - 32);
            if (!two_scale && v > k->vmax) v = k->vmax;
        }
        if (!two_scale) {
            yr[i] = (uint8_t)((int32_t)v + k->zp);
        } else if (v >= k->thr) {
            const uint32_t c = (v + k->half_m) >> k->cs;
            yr[i] = (uint8_t)((c < k->c0 ? k->c0 : c > k->fm ? k->fm : c) | k->top);
        } else {
            const uint32_t f = (v + 0x8000u) >> TQ_TWO_SCALE_FRAC_BITS;
            yr[i] = (uint8_t)(f > k->hi ? k->hi : f);
        }
    }
}

static void softmax_dsp_row(const int32_t *e, int32_t n, const softmax_dsp_k *k, int two_scale, uint8_t *yr) {
    if (two_scale) {
        if (k->s <= 31) softmax_dsp_loop(e, n, k, yr, 1, 1);
        else softmax_dsp_loop(e, n, k, yr, 1, 0);
    } else {
        if (k->s <= 31) softmax_dsp_loop(e, n, k, yr, 0, 1);
        else softmax_dsp_loop(e, n, k, yr, 0, 0);
    }
}
#endif

#if defined(TQ_SIMD_VNNI)
/* 16 bytes to p, lanes m (a plain store when all 16: the masked narrowing stores are slow) */
static inline void softmax_store16(void *p, __mmask16 m, __m128i v) {
    if (m == 0xFFFF)
        _mm_storeu_si128((__m128i *)p, v);
    else
        _mm_mask_storeu_epi8(p, m, v);
}

/* The row's largest code. */
static inline int32_t softmax_max_simd(const int8_t *xr, int32_t n) {
    __m512i mx = _mm512_set1_epi8(-128);
    __m256i m32;
    int32_t i;
    for (i = 0; i < n; i += 64) { /* lanes past n keep their maximum so far */
        const __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n - i)) - 1;
        mx = _mm512_max_epi8(mx, _mm512_mask_loadu_epi8(mx, m, xr + i));
    }
    m32 = _mm256_max_epi8(_mm512_castsi512_si256(mx), _mm512_extracti64x4_epi64(mx, 1));
    return _mm512_reduce_max_epi32(
        _mm512_cvtepi8_epi32(_mm_max_epi8(_mm256_castsi256_si128(m32), _mm256_extracti128_si256(m32, 1))));
}

/* The 256-entry exp table in 16 registers, looked up by permutes (a gather of 16 lanes costs more on some cores):
 * vpermi2d picks entry idx & 31 of each 32-entry pair of registers, then bits 5, 6 and 7 of idx (0 <= idx <= 255)
 * choose among the eight pairs. */
typedef struct {
    __m512i t[16];
} softmax_lut;

static inline __m512i softmax_lut16(const softmax_lut *L, __m512i idx) {
    const __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)),
                    b6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64)),
                    b7 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(128));
    const __m512i r0 = _mm512_mask_blend_epi32(b5, _mm512_permutex2var_epi32(L->t[0], idx, L->t[1]),
                                               _mm512_permutex2var_epi32(L->t[2], idx, L->t[3]));
    const __m512i r1 = _mm512_mask_blend_epi32(b5, _mm512_permutex2var_epi32(L->t[4], idx, L->t[5]),
                                               _mm512_permutex2var_epi32(L->t[6], idx, L->t[7]));
    const __m512i r2 = _mm512_mask_blend_epi32(b5, _mm512_permutex2var_epi32(L->t[8], idx, L->t[9]),
                                               _mm512_permutex2var_epi32(L->t[10], idx, L->t[11]));
    const __m512i r3 = _mm512_mask_blend_epi32(b5, _mm512_permutex2var_epi32(L->t[12], idx, L->t[13]),
                                               _mm512_permutex2var_epi32(L->t[14], idx, L->t[15]));
    return _mm512_mask_blend_epi32(b7, _mm512_mask_blend_epi32(b6, r0, r1), _mm512_mask_blend_epi32(b6, r2, r3));
}

/* e[i] = exp_lut[mx - x_i] and their sum E (int32 sums: see above): whole vectors by permutes, the tail by loads. */
static inline int64_t softmax_exp_simd(const int8_t *xr, int32_t n, int32_t mx, const int32_t *exp_lut,
                                       const softmax_lut *L, int32_t *e) {
    const __m512i vmx = _mm512_set1_epi32(mx);
    __m512i E = _mm512_setzero_si512();
    int32_t i, tail = 0;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512i idx = _mm512_sub_epi32(vmx, _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(xr + i))));
        const __m512i ev = softmax_lut16(L, idx);
        _mm512_storeu_si512((void *)(e + i), ev);
        E = _mm512_add_epi32(E, ev);
    }
    for (; i < n; i++) {
        e[i] = exp_lut[mx - xr[i]];
        tail += e[i];
    }
    return _mm512_reduce_add_epi32(E) + tail;
}

/* min(v, vmax) of 8 exp values (each in the low dword of an int64 lane): v < 2^62, vmax < 2^31 */
static inline __m512i softmax_v8(__m512i e, __m512i rc, __m512i mu, __m512i half, __m128i sh, __m512i vmax) {
    const __m512i p = _mm512_srli_epi64(_mm512_add_epi64(_mm512_mul_epu32(e, rc), _mm512_set1_epi64(1 << 19)),
                                        TQ_EXP_FRAC_BITS);
    return _mm512_min_epu64(_mm512_srl_epi64(_mm512_add_epi64(_mm512_mul_epu32(p, mu), half), sh), vmax);
}

/* The codes of one row from its exp values e (n of them) and recip = 2^50 // E < 2^32. The codes of 16 lanes in int32
 * lanes, from v clamped to vmax (softmax_codes_init: a v >= vmax has the code of vmax). */
static void softmax_row_simd(const int32_t *e, int32_t n, int64_t recip, int32_t mult, const softmax_codes *k,
                             uint8_t *yr) {
    const __m512i rc = _mm512_set1_epi64(recip), mu = _mm512_set1_epi64(mult), half = _mm512_set1_epi64(k->half),
                  vmax = _mm512_set1_epi64(k->vmax);
    const __m128i sh = _mm_cvtsi32_si128(k->shift), csh = _mm_cvtsi32_si128(k->coarse_shift);
    const __m512i r15 = _mm512_set1_epi32(1 << 15), hi = _mm512_set1_epi32((int32_t)k->hi),
                  half_m = _mm512_set1_epi32((int32_t)k->half_m), c0 = _mm512_set1_epi32((int32_t)k->c0),
                  fm = _mm512_set1_epi32((int32_t)k->field_max), top = _mm512_set1_epi32((int32_t)k->top),
                  thr = _mm512_set1_epi32((int32_t)k->thr), zp = _mm512_set1_epi32(k->zp);
    int32_t i;
    for (i = 0; i < n; i += 16) {
        const __mmask16 m = tqv_lanes(n - i);
        const __m512i ev = _mm512_maskz_loadu_epi32(m, e + i);
        const __m512i ve = softmax_v8(ev, rc, mu, half, sh, vmax);
        const __m512i vo = softmax_v8(_mm512_srli_epi64(ev, 32), rc, mu, half, sh, vmax);
        const __m512i v = _mm512_mask_shuffle_epi32(ve, 0xAAAA, vo, _MM_PERM_CCAA); /* 16 int32 lanes */
        if (k->two_scale) {
            const __m512i fine = _mm512_min_epi32(_mm512_srli_epi32(_mm512_add_epi32(v, r15), TQ_TWO_SCALE_FRAC_BITS), hi);
            const __m512i coarse =
                _mm512_min_epi32(_mm512_max_epi32(_mm512_srl_epi32(_mm512_add_epi32(v, half_m), csh), c0), fm);
            softmax_store16(yr + i, m, _mm512_cvtepi32_epi8(_mm512_mask_or_epi32(fine, _mm512_cmpge_epi32_mask(v, thr), coarse, top)));
        } else {
            softmax_store16(yr + i, m, _mm512_cvtsepi32_epi8(_mm512_add_epi32(v, zp)));
        }
    }
}
#elif defined(TQ_SIMD_AVX2)
static inline int32_t softmax_max_simd(const int8_t *xr, int32_t n) {
    __m256i mx = _mm256_set1_epi8(-128);
    __m128i m16;
    int32_t i, best;
    int8_t lanes[16];
    for (i = 0; i + 32 <= n; i += 32) mx = _mm256_max_epi8(mx, _mm256_loadu_si256((const __m256i *)(const void *)(xr + i)));
    m16 = _mm_max_epi8(_mm256_castsi256_si128(mx), _mm256_extracti128_si256(mx, 1));
    _mm_storeu_si128((__m128i *)(void *)lanes, m16);
    best = -128;
    for (; i < n; i++)
        if (xr[i] > best) best = xr[i];
    for (i = 0; i < 16; i++)
        if (lanes[i] > best) best = lanes[i];
    return best;
}

static inline int64_t softmax_exp_simd(const int8_t *xr, int32_t n, int32_t mx, const int32_t *exp_lut, int32_t *e) {
    const __m256i vmx = _mm256_set1_epi32(mx);
    __m256i E = _mm256_setzero_si256();
    __m128i s;
    int32_t i, total;
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256i idx =
            _mm256_sub_epi32(vmx, _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(xr + i))));
        const __m256i ev = _mm256_i32gather_epi32(exp_lut, idx, 4);
        _mm256_storeu_si256((__m256i *)(void *)(e + i), ev);
        E = _mm256_add_epi32(E, ev);
    }
    s = _mm_add_epi32(_mm256_castsi256_si128(E), _mm256_extracti128_si256(E, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    total = _mm_cvtsi128_si32(s);
    for (; i < n; i++) {
        e[i] = exp_lut[mx - xr[i]];
        total += e[i];
    }
    return total;
}

static inline __m256i softmax_v4(__m256i e, __m256i rc, __m256i mu, __m256i half, __m128i sh) {
    const __m256i p = _mm256_srli_epi64(
        _mm256_add_epi64(_mm256_mul_epu32(e, rc), _mm256_set1_epi64x(1 << 19)), TQ_EXP_FRAC_BITS);
    return _mm256_srl_epi64(_mm256_add_epi64(_mm256_mul_epu32(p, mu), half), sh);
}

/* min / max of int64 lanes (AVX2 has no vpminsq) */
static inline __m256i softmax_min4(__m256i a, __m256i b) { return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b)); }
static inline __m256i softmax_max4(__m256i a, __m256i b) { return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(b, a)); }

/* codes of 4 lanes, each in [0, 255] (two-scale) or in [-128, 382] (uniform: min(v, 255) + zp, saturated when
 * narrowed) */
static inline __m256i softmax_code4(__m256i v, const softmax_codes *k) {
    if (k->two_scale) {
        const __m256i fine = softmax_min4(
            _mm256_srli_epi64(_mm256_add_epi64(v, _mm256_set1_epi64x(1 << 15)), TQ_TWO_SCALE_FRAC_BITS),
            _mm256_set1_epi64x(k->hi));
        const __m256i coarse = _mm256_or_si256(
            softmax_min4(softmax_max4(_mm256_srl_epi64(_mm256_add_epi64(v, _mm256_set1_epi64x(k->half_m)),
                                                       _mm_cvtsi32_si128(k->coarse_shift)),
                                      _mm256_set1_epi64x(k->c0)),
                         _mm256_set1_epi64x(k->field_max)),
            _mm256_set1_epi64x(k->top));
        return _mm256_blendv_epi8(fine, coarse, _mm256_cmpgt_epi64(v, _mm256_set1_epi64x(k->thr - 1)));
    }
    return _mm256_add_epi64(softmax_min4(v, _mm256_set1_epi64x(255)), _mm256_set1_epi64x(k->zp));
}

static void softmax_row_simd(const int32_t *e, int32_t n, int64_t recip, int32_t mult, const softmax_codes *k,
                             uint8_t *yr) {
    const __m256i rc = _mm256_set1_epi64x(recip), mu = _mm256_set1_epi64x(mult), half = _mm256_set1_epi64x(k->half);
    const __m128i sh = _mm_cvtsi32_si128(k->shift);
    int32_t te[8] = {0}, i;
    uint8_t ty[8];
    for (i = 0; i < n; i += 8) {
        const int full = n - i >= 8;
        __m256i ev, c, w;
        __m128i b;
        if (!full) memcpy(te, e + i, sizeof(int32_t) * (size_t)(n - i)); /* the tail: lanes past n are 0 */
        ev = _mm256_loadu_si256((const __m256i *)(const void *)(full ? e + i : te));
        c = _mm256_blend_epi32(softmax_code4(softmax_v4(ev, rc, mu, half, sh), k),
                               _mm256_slli_epi64(softmax_code4(softmax_v4(_mm256_srli_epi64(ev, 32), rc, mu, half, sh), k), 32),
                               0xAA);
        w = _mm256_packs_epi32(c, c);
        w = k->two_scale ? _mm256_packus_epi16(w, w) : _mm256_packs_epi16(w, w);
        b = _mm_unpacklo_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        if (full) {
            _mm_storel_epi64((__m128i *)(void *)(yr + i), b);
        } else {
            _mm_storel_epi64((__m128i *)(void *)ty, b);
            memcpy(yr + i, ty, (size_t)(n - i));
        }
    }
}
#endif

/* The codes of one row from its exp values e and recip (the scalar form). */
static void softmax_codes_ref(const int32_t *e, int32_t N, int64_t recip, int32_t out_kind, int32_t mult,
                              int32_t shift, int32_t out_zp, int32_t bits, int32_t m, int32_t signed_fine,
                              uint8_t *yr) {
    int32_t i;
    for (i = 0; i < N; i++) {
        const int64_t p = tq_rshift_round((int64_t)e[i] * recip, TQ_EXP_FRAC_BITS); /* Q30 */
        if (out_kind == TQ_TWO_SCALE)
            yr[i] = encode_two_scale(tq_rshift_round(p * mult, shift), bits, m, signed_fine);
        else if (out_kind == TQ_LOG2)
            yr[i] = encode_log2(p, bits);
        else
            yr[i] = (uint8_t)tq_sat8(tq_rshift_round(p * mult, shift) + out_zp);
    }
}

void tq_softmax_2s(const int8_t *x, int32_t rows, int32_t N, const int32_t *exp_lut, int32_t out_kind,
                   int32_t mult, int32_t shift, int32_t out_zp, int32_t bits, int32_t m, int32_t signed_fine,
                   uint8_t *y, int32_t *scratch) {
    int32_t r = 0, i;
#if defined(TQ_SIMD_AVX2)
    const int simd = softmax_simd_lut_ok(exp_lut, N);
    const int simd_codes = simd && softmax_simd_codes_ok(out_kind, mult, shift, out_zp, bits, m);
    softmax_codes codes;
#if defined(TQ_SIMD_VNNI)
    softmax_lut L;
    for (i = 0; i < 16; i++) L.t[i] = _mm512_loadu_si512((const void *)(exp_lut + 16 * i));
#endif
    memset(&codes, 0, sizeof codes);
    if (simd_codes) softmax_codes_init(&codes, out_kind, shift, out_zp, bits, m, signed_fine);
#endif
#if defined(TQ_SIMD_MVE)
    if (softmax_simd_lut_ok(exp_lut, N)) {
        softmax_codes codes;
        softmax_mve_k k;
        const int simd_codes = softmax_simd_codes_ok(out_kind, mult, shift, out_zp, bits, m) && shift >= 2;
        memset(&codes, 0, sizeof codes);
        memset(&k, 0, sizeof k);
        if (simd_codes) {
            softmax_codes_init(&codes, out_kind, shift, out_zp, bits, m, signed_fine);
            k.mu = vdupq_n_u32((uint32_t)mult), k.hi = vdupq_n_u32((uint32_t)codes.hi);
            k.c0 = vdupq_n_u32((uint32_t)codes.c0), k.fm = vdupq_n_u32((uint32_t)codes.field_max);
            k.thr = (uint32_t)codes.thr, k.top = (uint32_t)codes.top;
            k.s = shift, k.neg_cs = -codes.coarse_shift, k.zp = out_zp;
        }
        for (; r < rows; r++) {
            const int8_t *xr = x + (ptrdiff_t)r * N;
            uint8_t *yr = y + (ptrdiff_t)r * N;
            const int32_t E = softmax_mve_exp(xr, N, softmax_mve_max(xr, N), exp_lut, scratch); /* >= 0 */
            const int64_t recip = E > 0 ? softmax_mve_recip(E) : 0;
            if (simd_codes && recip <= (int64_t)0x7FFFFFFF)
                softmax_mve_row(scratch, N, (uint32_t)recip, &k, codes.two_scale, yr);
            else
                softmax_codes_ref(scratch, N, recip, out_kind, mult, shift, out_zp, bits, m, signed_fine, yr);
        }
        return;
    }
#endif
#if defined(TQ_SIMD_DSP) && !defined(TQ_SIMD_MVE)
    if (softmax_simd_lut_ok(exp_lut, N)) {
        softmax_codes codes;
        softmax_dsp_k k;
        const int simd_codes = softmax_simd_codes_ok(out_kind, mult, shift, out_zp, bits, m) && shift >= 1;
        const int64_t one = (int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS);
        memset(&codes, 0, sizeof codes);
        memset(&k, 0, sizeof k);
        if (simd_codes) {
            softmax_codes_init(&codes, out_kind, shift, out_zp, bits, m, signed_fine);
            k.mult = (uint32_t)mult, k.half = (uint64_t)codes.half, k.s = shift, k.zp = out_zp;
            k.vmax = codes.two_scale ? (uint32_t)codes.vmax : (uint32_t)(127 - out_zp); /* see above */
            k.hi = (uint32_t)codes.hi, k.c0 = (uint32_t)codes.c0;
            k.fm = (uint32_t)codes.field_max, k.top = (uint32_t)codes.top, k.thr = (uint32_t)codes.thr;
            k.cs = codes.coarse_shift, k.half_m = (uint32_t)codes.half_m;
        }
        for (; r < rows; r++) {
            const int8_t *xr = x + (ptrdiff_t)r * N;
            uint8_t *yr = y + (ptrdiff_t)r * N;
            const int32_t mx = softmax_dsp_max(xr, N);
            int32_t E = 0; /* >= 0, < 2^31 (the entries are in [0, 2^20], N <= 2047) */
            for (i = 0; i < N; i++) {
                scratch[i] = exp_lut[mx - xr[i]];
                E += scratch[i];
            }
            if (simd_codes && E > (1 << 19)) {
                k.rc2 = softmax_dsp_recip(E) << 1;
                softmax_dsp_row(scratch, N, &k, codes.two_scale, yr);
            } else {
                softmax_codes_ref(scratch, N, E > 0 ? one / E : 0, out_kind, mult, shift, out_zp, bits, m,
                                  signed_fine, yr);
            }
        }
        return;
    }
#endif
#if defined(TQ_SIMD_VNNI)
    if (simd && simd_codes) { /* two rows at a time: each row's chain (maximum, sum, division, codes) is serial */
        int32_t e1[2048]; /* the second row's exp values (N <= 2047, softmax_simd_lut_ok) */
        const int64_t one = (int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS);
        for (; r + 2 <= rows; r += 2) {
            const int8_t *x0 = x + (ptrdiff_t)r * N, *x1 = x0 + N;
            uint8_t *y0 = y + (ptrdiff_t)r * N, *y1 = y0 + N;
            const int32_t m0 = softmax_max_simd(x0, N), m1 = softmax_max_simd(x1, N);
            const int64_t E0 = softmax_exp_simd(x0, N, m0, exp_lut, &L, scratch),
                          E1 = softmax_exp_simd(x1, N, m1, exp_lut, &L, e1);
            const int64_t rc0 = E0 > 0 ? one / E0 : 0, rc1 = E1 > 0 ? one / E1 : 0; /* E >= 0 here */
            if (rc0 <= (int64_t)0xFFFFFFFF)
                softmax_row_simd(scratch, N, rc0, mult, &codes, y0);
            else
                softmax_codes_ref(scratch, N, rc0, out_kind, mult, shift, out_zp, bits, m, signed_fine, y0);
            if (rc1 <= (int64_t)0xFFFFFFFF)
                softmax_row_simd(e1, N, rc1, mult, &codes, y1);
            else
                softmax_codes_ref(e1, N, rc1, out_kind, mult, shift, out_zp, bits, m, signed_fine, y1);
        }
    }
#endif
    for (; r < rows; r++) {
        const int8_t *xr = x + (ptrdiff_t)r * N;
        uint8_t *yr = y + (ptrdiff_t)r * N;
        int32_t mx = -128;
        int64_t E = 0, recip;
#if defined(TQ_SIMD_AVX2)
        if (simd) {
            mx = softmax_max_simd(xr, N);
#if defined(TQ_SIMD_VNNI)
            E = softmax_exp_simd(xr, N, mx, exp_lut, &L, scratch);
#else
            E = softmax_exp_simd(xr, N, mx, exp_lut, scratch);
#endif
        } else
#endif
        {
            for (i = 0; i < N; i++)
                if (xr[i] > mx) mx = xr[i];
            for (i = 0; i < N; i++) {
                scratch[i] = exp_lut[mx - xr[i]];
                E += scratch[i];
            }
        }
        /* 2^50 / E, floor (numpy's // gives 0 for a zero divisor) */
        if (E > 0)
            recip = ((int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS)) / E;
        else if (E < 0)
            recip = -((((int64_t)1 << (TQ_PROB_FRAC_BITS + TQ_EXP_FRAC_BITS)) - E - 1) / -E);
        else
            recip = 0;
#if defined(TQ_SIMD_AVX2)
        if (simd_codes && recip <= (int64_t)0xFFFFFFFF) {
            softmax_row_simd(scratch, N, recip, mult, &codes, yr);
            continue;
        }
#endif
        softmax_codes_ref(scratch, N, recip, out_kind, mult, shift, out_zp, bits, m, signed_fine, yr);
    }
}

void tq_softmax_2s_heads(const int8_t *x, int64_t r0, int64_t r1, int32_t N, int64_t R, int32_t L,
                         const int32_t *exp_lut, int32_t out_kind, int32_t mult, int32_t shift, int32_t out_zp,
                         int32_t bits, int32_t m, int32_t signed_fine, uint8_t *y, int32_t *scratch) {
    while (r0 < r1) { /* one head's rows at a time: the SIMD path checks the table it reads (softmax_simd_lut_ok) */
        const int64_t end = L > 1 && (r0 / R + 1) * R < r1 ? (r0 / R + 1) * R : r1;
        const int64_t h = L > 1 ? (r0 / R) % L : 0;
        tq_softmax_2s(x + r0 * N, (int32_t)(end - r0), N, exp_lut + 256 * h, out_kind, mult, shift, out_zp, bits, m,
                      signed_fine, y + r0 * N, scratch);
        r0 = end;
    }
}

/* ---- the op: TSPTQ_SOFTMAX_2S (op_table.h) ----------------------------------------------------------------------- */

enum { TQ_SM_OUT_KIND = 0, TQ_SM_MULT, TQ_SM_SHIFT, TQ_SM_OUT_ZP, TQ_SM_BITS, TQ_SM_M, TQ_SM_SIGNED_FINE };
static const char *const softmax_keys[] = {"out_kind", "mult", "shift", "out_zp", "bits", "ratio_log2",
                                           "signed_fine"};

static int softmax_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    int64_t i;
    tsptq_tensor *x = in[0], *lut = in[1];
    int64_t N = x->rank ? x->shape[x->rank - 1] : 0, kind = o[TQ_SM_OUT_KIND];
    /* one exp table, or one per head (a per-head scores code): x (..., L, R, N), 256 * L entries */
    const int64_t L = x->rank >= 3 ? x->shape[x->rank - 3] : 1;
    const int32_t *e = (const int32_t *)(const void *)lut->data;
    int64_t tables, h;
    if (x->type != TSPTQ_INT8 || !tq_same_shape(x, out) || N < 1)
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_2S): input must be int8, output of the same shape", k);
    if (N > 2047) TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_2S): %L tokens, at most 2047", k, N);
    if (lut->rank != 1 || lut->type != TSPTQ_INT32 || (lut->shape[0] != 256 && lut->shape[0] != 256 * L)) {
        if (L == 1) TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_2S): the lookup table must have 256 int32 entries", k);
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_2S): the lookup table must have 256 or %L int32 entries (one table, or one "
                    "per head)", k, 256 * L);
    }
    if (kind != TQ_UNIFORM && kind != TQ_TWO_SCALE && kind != TQ_LOG2)
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (TSPTQ_SOFTMAX_2S): output code kind %L", k, kind);
    if (out->type != (kind == TQ_UNIFORM ? TSPTQ_INT8 : TSPTQ_UINT8))
        TQ_BAD(ctx, "op %u (TSPTQ_SOFTMAX_2S): output dtype does not fit the code kind", k);
    tables = lut->shape[0] / 256;
    for (h = 0; h < tables; h++)
        if (e[256 * h] != (1 << 20)) {
            if (tables == 1) TQ_BADQ(ctx, "op %u (TSPTQ_SOFTMAX_2S): exp table must start at 2^20", k);
            TQ_BADQ(ctx, "op %u (TSPTQ_SOFTMAX_2S): the exp table of head %L must start at 2^20", k, h);
        }
    for (i = 0; i < 256 * tables; i++)
        if (!tq_in_range(e[i], 0, 1 << 20))
            TQ_BADQ(ctx, "op %u (TSPTQ_SOFTMAX_2S): exp table entry %L out of range", k, i);
    if (!tq_in_range(o[TQ_SM_MULT], 0, TQ_ACC_LIMIT) || !tq_in_range(o[TQ_SM_SHIFT], 0, 62) ||
        !tq_in_range(o[TQ_SM_OUT_ZP], -128, 127) || !tq_in_range(o[TQ_SM_BITS], 2, 8) ||
        !tq_in_range(o[TQ_SM_M], 0, 8) ||
        !tq_in_range(o[TQ_SM_SIGNED_FINE], 0, 1))
        TQ_BADQ(ctx, "op %u (TSPTQ_SOFTMAX_2S): options out of range", k);
    return 1;
}

/* Rows [r0, r1) with `scratch` (a row's exp values): the thread pool's part (op_table.h, each part its own
 * scratch) and, over every row with the op's arena scratch, the op. */
static void softmax_eval_part(tsptq_model *m, const tsptq_op *op, int64_t r0, int64_t r1, int32_t *scratch) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    const int64_t *o = op->opt, N = tq_last_dim(x), L = m->tensors[op->inputs[1]].shape[0] / 256;
    tq_softmax_2s_heads((const int8_t *)tq_ptr(m, op->inputs[0]), r0, r1, (int32_t)N,
                        L > 1 ? x->shape[x->rank - 2] : 1, (int32_t)L, tq_in32(m, op, 1), TQ_O32(o[TQ_SM_OUT_KIND]),
                        TQ_O32(o[TQ_SM_MULT]), TQ_O32(o[TQ_SM_SHIFT]), TQ_O32(o[TQ_SM_OUT_ZP]), TQ_O32(o[TQ_SM_BITS]),
                        TQ_O32(o[TQ_SM_M]), TQ_O32(o[TQ_SM_SIGNED_FINE]), tq_act(m, op->output), scratch);
}
static void softmax_eval(tsptq_model *m, const tsptq_op *op) {
    softmax_eval_part(m, op, 0, tq_rows(&m->tensors[op->inputs[0]]), tq_scratch(m, op));
}
static int64_t softmax_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    return tq_row_units(&m->tensors[op->inputs[0]], grain);
}

const tq_op_def TQ_OP_DEF(tq_softmax_2s, _op) = {
    .name = "TSPTQ_SOFTMAX_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 2, .max_inputs = 2, .n_outputs = 1,
    .const_from = 1, .n_option_keys = TQ_COUNT_OF(softmax_keys), .option_keys = softmax_keys,
    .prepare = softmax_prepare, .scratch = tq_row_scratch, .eval = softmax_eval, .units = softmax_units,
    .eval_part = softmax_eval_part};
