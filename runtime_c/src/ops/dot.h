/* tsptq runtime: the integer dot products shared by the matmul-like kernels (internal to src/ops).
 *
 * Every function has a portable reference body; the SIMD bodies are compiled only when asked for and give the same
 * int32 sums (integer addition is exact: every partial sum is bounded by the sum of absolute products, which the
 * exporter keeps below 2^31, see docs/integer-semantics.md "Bounds at a glance").
 *
 *   -DTSPTQ_REFERENCE_ONLY   portable C only (wins over everything else)
 *   -DTSPTQ_USE_AVX2 -mavx2  x86 AVX2 (vpmaddwd on sign-extended int16 operands)
 *   -DTSPTQ_USE_AVX512VNNI -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni
 *                            x86 AVX-512 VNNI: the blocked vpdpbusd products of vnni.h (TQ_SIMD_VNNI), with the AVX2
 *                            bodies below for the cases they do not take
 *   -DTSPTQ_USE_AMX -mamx-tile -mamx-int8 (with the AVX-512 VNNI flags above)
 *                            x86 Intel AMX-INT8: the same blocked products on tiles (TDPBSUD, amx.h: TQ_SIMD_AMX),
 *                            taken at run time when the CPU has AMX and Linux grants the process the tile state;
 *                            otherwise (and for the cases it does not take) the AVX-512 VNNI path
 *   __ARM_NEON               AArch64/ARMv7 NEON (vmlal_s16), automatic when the compiler targets NEON
 *   __ARM_FEATURE_DSP        Arm 32-bit SIMD of the DSP extension (SXTAB16 + SMLAD: two 16-bit products per
 *                            instruction), automatic on Cortex-M4/M7/M33 and ARMv7-A without NEON (TQ_SIMD_DSP);
 *                            (tq_axpy_s8, whose multiplier may exceed 16 bits, keeps its reference body)
 *   __ARM_FEATURE_MVE        Armv8.1-M Helium (integer MVE: VMLADAVA, 16 int8 or 8 int16 products per instruction),
 *                            automatic on Cortex-M55/M85 (TQ_SIMD_MVE, on top of TQ_SIMD_DSP: MVE implies the DSP
 *                            extension, and the ops without an MVE branch keep their DSP one); -DTSPTQ_NO_MVE turns
 *                            it off (the DSP kernels then run on those cores too)
 *
 * The SIMD paths that form code - zp as an int16 need zero points in [-128, 127]; they check tq_zp_ok() and use
 * the reference path otherwise. The Helium int8 paths never form it (the zero point is removed through weight sums,
 * in wrapping int32 arithmetic that is exact under prepare's accumulator bounds), so they take any zero point.
 */
#ifndef TSPTQ_DOT_H
#define TSPTQ_DOT_H

#include <stddef.h>
#include <stdint.h>

#if !defined(TSPTQ_REFERENCE_ONLY) && defined(TSPTQ_USE_AVX512VNNI)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512DQ__) ||             \
    !defined(__AVX512VNNI__)
#error "TSPTQ_USE_AVX512VNNI needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni (or a -march with them)"
#endif
#define TQ_SIMD_VNNI 1
#if defined(TSPTQ_USE_AMX)
#if !(defined(__AMX_TILE__) || defined(__AMXTILE__)) || !(defined(__AMX_INT8__) || defined(__AMXINT8__)) /* GCC, clang */
#error "TSPTQ_USE_AMX needs -mamx-tile -mamx-int8 (or a -march with them)"
#endif
#define TQ_SIMD_AMX 1
#endif
#elif !defined(TSPTQ_REFERENCE_ONLY) && defined(TSPTQ_USE_AMX)
#error "TSPTQ_USE_AMX needs TSPTQ_USE_AVX512VNNI too (the AVX-512 VNNI path is its fallback)"
#endif

#if !defined(TSPTQ_REFERENCE_ONLY) && (defined(TSPTQ_USE_AVX2) || defined(TQ_SIMD_VNNI))
#if !defined(__AVX2__)
#error "TSPTQ_USE_AVX2 needs -mavx2 (or a -march with AVX2)"
#endif
#include <immintrin.h>
#define TQ_SIMD_AVX2 1
#define TQ_SIMD 1
#elif !defined(TSPTQ_REFERENCE_ONLY) && defined(__ARM_NEON)
#include <arm_neon.h>
#define TQ_SIMD_NEON 1
#define TQ_SIMD 1
#elif !defined(TSPTQ_REFERENCE_ONLY) && defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>
#include <string.h>

#include "../fixedpoint.h"
#define TQ_SIMD_DSP 1
#define TQ_SIMD 1
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && !defined(TSPTQ_NO_MVE)
#include <arm_mve.h>
#define TQ_SIMD_MVE 1
#endif
/* The 2x2 kernel's inline assembly needs 14 free registers: Thumb-2, optimized (at -O0 GCC keeps r7 as the frame
 * pointer; so does -fno-omit-frame-pointer: build such code with -DTSPTQ_NO_INLINE_ASM), else its C body runs. */
#if defined(__thumb2__) && defined(__OPTIMIZE__) && !defined(TSPTQ_NO_INLINE_ASM)
#define TQ_DSP_ASM 1
#else
#define TQ_DSP_ASM 0
#endif
#else
#define TQ_SIMD 0
#endif

/* The thread pool's row grain for the FC kernels (FULLY_CONNECTED, TSPTQ_FC_2S): the SIMD kernels' row blocks (an AMX
 * pass takes 32 rows, the VNNI kernel two tiles of 8; the Arm kernels two). */
#if defined(TQ_SIMD_AMX)
#define TQ_FC_ROW_GRAIN 32
#elif defined(TQ_SIMD_VNNI)
#define TQ_FC_ROW_GRAIN 16
#else
#define TQ_FC_ROW_GRAIN 2
#endif

static inline int tq_zp_ok(int32_t zp) { return zp >= -128 && zp <= 127; }

/* --- reference bodies ------------------------------------------------------------------------------------------ */

/* sum_i (x_i - xz) * (w_i - wz) */
static inline int32_t tq_dot_s8_ref(const int8_t *x, int32_t xz, const int8_t *w, int32_t wz, int32_t n) {
    int32_t acc = 0, i;
    for (i = 0; i < n; i++) acc += ((int32_t)x[i] - xz) * ((int32_t)w[i] - wz);
    return acc;
}

/* sum_i d_i * w_i, d int32 */
static inline int32_t tq_dot_s32s8_ref(const int32_t *d, const int8_t *w, int32_t n) {
    int32_t acc = 0, i;
    for (i = 0; i < n; i++) acc += d[i] * (int32_t)w[i];
    return acc;
}

/* acc[j] += a * (b[j] - bz) */
static inline void tq_axpy_s8_ref(int32_t *acc, int32_t a, const int8_t *b, int32_t bz, int32_t n) {
    int32_t j;
    for (j = 0; j < n; j++) acc[j] += a * ((int32_t)b[j] - bz);
}

/* --- SIMD bodies ----------------------------------------------------------------------------------------------- */
#if defined(TQ_SIMD_AVX2)

static inline int32_t tq_hsum256(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

static inline __m256i tq_ld16(const int8_t *p, __m256i z) {
    return _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)p)), z);
}

/* out[r][k] = sum_i (x_r[i] - xz) * (w_k[i] - wz), two x rows against four w rows (x1 may equal x0). */
static inline void tq_dot_2x4(const int8_t *x0, const int8_t *x1, int32_t xz, const int8_t *w, int32_t ldw,
                              int32_t wz, int32_t n, int32_t out[2][4]) {
    const __m256i vxz = _mm256_set1_epi16((int16_t)xz), vwz = _mm256_set1_epi16((int16_t)wz);
    const int8_t *w0 = w, *w1 = w + ldw, *w2 = w + 2 * (ptrdiff_t)ldw, *w3 = w + 3 * (ptrdiff_t)ldw;
    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
            a13 = a00;
    int32_t i = 0, k;
    for (; i + 16 <= n; i += 16) {
        __m256i xa = tq_ld16(x0 + i, vxz), xb = tq_ld16(x1 + i, vxz), wv;
        wv = tq_ld16(w0 + i, vwz);
        a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(xa, wv));
        a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(xb, wv));
        wv = tq_ld16(w1 + i, vwz);
        a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(xa, wv));
        a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(xb, wv));
        wv = tq_ld16(w2 + i, vwz);
        a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(xa, wv));
        a12 = _mm256_add_epi32(a12, _mm256_madd_epi16(xb, wv));
        wv = tq_ld16(w3 + i, vwz);
        a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(xa, wv));
        a13 = _mm256_add_epi32(a13, _mm256_madd_epi16(xb, wv));
    }
    out[0][0] = tq_hsum256(a00); out[0][1] = tq_hsum256(a01); out[0][2] = tq_hsum256(a02); out[0][3] = tq_hsum256(a03);
    out[1][0] = tq_hsum256(a10); out[1][1] = tq_hsum256(a11); out[1][2] = tq_hsum256(a12); out[1][3] = tq_hsum256(a13);
    for (k = 0; k < 4; k++) {
        const int8_t *wk = w + k * (ptrdiff_t)ldw;
        out[0][k] += tq_dot_s8_ref(x0 + i, xz, wk + i, wz, n - i);
        out[1][k] += tq_dot_s8_ref(x1 + i, xz, wk + i, wz, n - i);
    }
}

static inline int32_t tq_dot_s8(const int8_t *x, int32_t xz, const int8_t *w, int32_t wz, int32_t n) {
    const __m256i vxz = _mm256_set1_epi16((int16_t)xz), vwz = _mm256_set1_epi16((int16_t)wz);
    __m256i a = _mm256_setzero_si256();
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) a = _mm256_add_epi32(a, _mm256_madd_epi16(tq_ld16(x + i, vxz), tq_ld16(w + i, vwz)));
    return tq_hsum256(a) + tq_dot_s8_ref(x + i, xz, w + i, wz, n - i);
}

/* out[k] = sum_i d[i] * w_k[i], d int16 (decoded two-scale / per-channel operands, |d| <= 2^15 - 1). */
static inline void tq_dot_s16s8_x4(const int16_t *d, const int8_t *w, int32_t ldw, int32_t n, int32_t out[4]) {
    const __m256i z = _mm256_setzero_si256();
    __m256i a0 = z, a1 = z, a2 = z, a3 = z;
    int32_t i = 0, k;
    for (; i + 16 <= n; i += 16) {
        __m256i dv = _mm256_loadu_si256((const __m256i *)(const void *)(d + i));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(dv, tq_ld16(w + i, z)));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(dv, tq_ld16(w + ldw + i, z)));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(dv, tq_ld16(w + 2 * (ptrdiff_t)ldw + i, z)));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(dv, tq_ld16(w + 3 * (ptrdiff_t)ldw + i, z)));
    }
    out[0] = tq_hsum256(a0); out[1] = tq_hsum256(a1); out[2] = tq_hsum256(a2); out[3] = tq_hsum256(a3);
    for (k = 0; k < 4; k++) {
        const int8_t *wk = w + k * (ptrdiff_t)ldw;
        int32_t j;
        for (j = i; j < n; j++) out[k] += (int32_t)d[j] * wk[j];
    }
}

static inline int32_t tq_dot_s16s8(const int16_t *d, const int8_t *w, int32_t n) {
    const __m256i z = _mm256_setzero_si256();
    __m256i a = z;
    int32_t i = 0, acc;
    for (; i + 16 <= n; i += 16)
        a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(d + i)),
                                                  tq_ld16(w + i, z)));
    acc = tq_hsum256(a);
    for (; i < n; i++) acc += (int32_t)d[i] * w[i];
    return acc;
}

/* acc[j] += a0 * (b0[j] - bz) + a1 * (b1[j] - bz), |a0|, |a1| <= 2^15 - 1. */
static inline void tq_axpy2_s8(int32_t *acc, int32_t a0, int32_t a1, const int8_t *b0, const int8_t *b1, int32_t bz,
                               int32_t n) {
    const __m128i vbz = _mm_set1_epi16((int16_t)bz);
    const __m256i pair = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)(int16_t)a1 << 16) | (uint16_t)(int16_t)a0));
    int32_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m128i u = _mm_sub_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)(b0 + j))), vbz);
        __m128i v = _mm_sub_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)(b1 + j))), vbz);
        __m256i uv = _mm256_set_m128i(_mm_unpackhi_epi16(u, v), _mm_unpacklo_epi16(u, v));
        __m256i *pa = (__m256i *)(void *)(acc + j);
        _mm256_storeu_si256(pa, _mm256_add_epi32(_mm256_loadu_si256(pa), _mm256_madd_epi16(uv, pair)));
    }
    for (; j < n; j++) acc[j] += a0 * ((int32_t)b0[j] - bz) + a1 * ((int32_t)b1[j] - bz);
}

/* acc[j] += a * (b[j] - bz), any int32 a. */
static inline void tq_axpy_s8(int32_t *acc, int32_t a, const int8_t *b, int32_t bz, int32_t n) {
    const __m256i va = _mm256_set1_epi32(a), vbz = _mm256_set1_epi32(bz);
    int32_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256i bv = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b + j))), vbz);
        __m256i *pa = (__m256i *)(void *)(acc + j);
        _mm256_storeu_si256(pa, _mm256_add_epi32(_mm256_loadu_si256(pa), _mm256_mullo_epi32(bv, va)));
    }
    for (; j < n; j++) acc[j] += a * ((int32_t)b[j] - bz);
}

#elif defined(TQ_SIMD_NEON)

static inline int32_t tq_hsum_s32x4(int32x4_t v) {
#if defined(__aarch64__)
    return vaddvq_s32(v);
#else
    int32x2_t s = vadd_s32(vget_low_s32(v), vget_high_s32(v));
    return vget_lane_s32(vpadd_s32(s, s), 0);
#endif
}

/* 8 codes minus zero point, as int16 */
static inline int16x8_t tq_ld8(const int8_t *p, int16x8_t z) { return vsubq_s16(vmovl_s8(vld1_s8(p)), z); }

static inline void tq_dot_2x4(const int8_t *x0, const int8_t *x1, int32_t xz, const int8_t *w, int32_t ldw,
                              int32_t wz, int32_t n, int32_t out[2][4]) {
    const int16x8_t vxz = vdupq_n_s16((int16_t)xz), vwz = vdupq_n_s16((int16_t)wz);
    int32x4_t acc[2][4];
    int32_t i = 0, r, k;
    for (r = 0; r < 2; r++)
        for (k = 0; k < 4; k++) acc[r][k] = vdupq_n_s32(0);
    for (; i + 8 <= n; i += 8) {
        int16x8_t xa = tq_ld8(x0 + i, vxz), xb = tq_ld8(x1 + i, vxz);
        for (k = 0; k < 4; k++) {
            int16x8_t wv = tq_ld8(w + k * (ptrdiff_t)ldw + i, vwz);
            acc[0][k] = vmlal_s16(vmlal_s16(acc[0][k], vget_low_s16(xa), vget_low_s16(wv)), vget_high_s16(xa),
                                  vget_high_s16(wv));
            acc[1][k] = vmlal_s16(vmlal_s16(acc[1][k], vget_low_s16(xb), vget_low_s16(wv)), vget_high_s16(xb),
                                  vget_high_s16(wv));
        }
    }
    for (k = 0; k < 4; k++) {
        const int8_t *wk = w + k * (ptrdiff_t)ldw;
        out[0][k] = tq_hsum_s32x4(acc[0][k]) + tq_dot_s8_ref(x0 + i, xz, wk + i, wz, n - i);
        out[1][k] = tq_hsum_s32x4(acc[1][k]) + tq_dot_s8_ref(x1 + i, xz, wk + i, wz, n - i);
    }
}

static inline int32_t tq_dot_s8(const int8_t *x, int32_t xz, const int8_t *w, int32_t wz, int32_t n) {
    const int16x8_t vxz = vdupq_n_s16((int16_t)xz), vwz = vdupq_n_s16((int16_t)wz);
    int32x4_t a = vdupq_n_s32(0);
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        int16x8_t xv = tq_ld8(x + i, vxz), wv = tq_ld8(w + i, vwz);
        a = vmlal_s16(vmlal_s16(a, vget_low_s16(xv), vget_low_s16(wv)), vget_high_s16(xv), vget_high_s16(wv));
    }
    return tq_hsum_s32x4(a) + tq_dot_s8_ref(x + i, xz, w + i, wz, n - i);
}

static inline void tq_dot_s16s8_x4(const int16_t *d, const int8_t *w, int32_t ldw, int32_t n, int32_t out[4]) {
    int32x4_t acc[4];
    int32_t i = 0, k, j;
    for (k = 0; k < 4; k++) acc[k] = vdupq_n_s32(0);
    for (; i + 8 <= n; i += 8) {
        int16x8_t dv = vld1q_s16(d + i);
        for (k = 0; k < 4; k++) {
            int16x8_t wv = vmovl_s8(vld1_s8(w + k * (ptrdiff_t)ldw + i));
            acc[k] = vmlal_s16(vmlal_s16(acc[k], vget_low_s16(dv), vget_low_s16(wv)), vget_high_s16(dv),
                               vget_high_s16(wv));
        }
    }
    for (k = 0; k < 4; k++) {
        const int8_t *wk = w + k * (ptrdiff_t)ldw;
        out[k] = tq_hsum_s32x4(acc[k]);
        for (j = i; j < n; j++) out[k] += (int32_t)d[j] * wk[j];
    }
}

static inline int32_t tq_dot_s16s8(const int16_t *d, const int8_t *w, int32_t n) {
    int32x4_t a = vdupq_n_s32(0);
    int32_t i = 0, acc;
    for (; i + 8 <= n; i += 8) {
        int16x8_t dv = vld1q_s16(d + i), wv = vmovl_s8(vld1_s8(w + i));
        a = vmlal_s16(vmlal_s16(a, vget_low_s16(dv), vget_low_s16(wv)), vget_high_s16(dv), vget_high_s16(wv));
    }
    acc = tq_hsum_s32x4(a);
    for (; i < n; i++) acc += (int32_t)d[i] * w[i];
    return acc;
}

static inline void tq_axpy2_s8(int32_t *acc, int32_t a0, int32_t a1, const int8_t *b0, const int8_t *b1, int32_t bz,
                               int32_t n) {
    const int16x8_t vbz = vdupq_n_s16((int16_t)bz);
    const int16x4_t va0 = vdup_n_s16((int16_t)a0), va1 = vdup_n_s16((int16_t)a1);
    int32_t j = 0;
    for (; j + 8 <= n; j += 8) {
        int16x8_t u = tq_ld8(b0 + j, vbz), v = tq_ld8(b1 + j, vbz);
        int32x4_t lo = vld1q_s32(acc + j), hi = vld1q_s32(acc + j + 4);
        lo = vmlal_s16(vmlal_s16(lo, vget_low_s16(u), va0), vget_low_s16(v), va1);
        hi = vmlal_s16(vmlal_s16(hi, vget_high_s16(u), va0), vget_high_s16(v), va1);
        vst1q_s32(acc + j, lo);
        vst1q_s32(acc + j + 4, hi);
    }
    for (; j < n; j++) acc[j] += a0 * ((int32_t)b0[j] - bz) + a1 * ((int32_t)b1[j] - bz);
}

static inline void tq_axpy_s8(int32_t *acc, int32_t a, const int8_t *b, int32_t bz, int32_t n) {
    const int16x8_t vbz = vdupq_n_s16((int16_t)bz);
    const int32x4_t va = vdupq_n_s32(a);
    int32_t j = 0;
    for (; j + 8 <= n; j += 8) {
        int16x8_t u = tq_ld8(b + j, vbz);
        vst1q_s32(acc + j, vmlaq_s32(vld1q_s32(acc + j), vmovl_s16(vget_low_s16(u)), va));
        vst1q_s32(acc + j + 4, vmlaq_s32(vld1q_s32(acc + j + 4), vmovl_s16(vget_high_s16(u)), va));
    }
    for (; j < n; j++) acc[j] += a * ((int32_t)b[j] - bz);
}

#elif defined(TQ_SIMD_DSP)

/* Four int8 codes as two int16 pairs minus a zero point: lo = (p[0], p[2]) - z, hi = (p[1], p[3]) - z, where mz holds
 * -z in both halves (SXTAB16 adds sign-extended bytes 0 and 2 to the halves; rotating by 8 picks bytes 1 and 3). The
 * pairing is the same for both operands, so SMLAD sums the same products as the reference. Exact: codes and zero
 * points are in [-128, 127], so every half is in [-255, 255]. */
static inline uint32_t tq_ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4); /* one LDR: Cortex-M3+ and ARMv7-A load unaligned words */
    return v;
}
static inline int16x2_t tq_pair_lo(uint32_t v, int16x2_t mz) { return __sxtab16(mz, (int8x4_t)v); }
static inline int16x2_t tq_pair_hi(uint32_t v, int16x2_t mz) {
    return __sxtab16(mz, (int8x4_t)((v >> 8) | (v << 24)));
}
static inline int16x2_t tq_minus_zp(int32_t z) {
    const uint32_t h = (uint16_t)(int16_t)-z;
    return (int16x2_t)((h << 16) | h);
}

static inline void tq_dot_2x4(const int8_t *x0, const int8_t *x1, int32_t xz, const int8_t *w, int32_t ldw,
                              int32_t wz, int32_t n, int32_t out[2][4]) {
    const int16x2_t mxz = tq_minus_zp(xz), mwz = tq_minus_zp(wz);
    int32_t k;
    for (k = 0; k < 4; k += 2) { /* 2 x rows by 2 w rows: what fits the registers of a Cortex-M */
        const int8_t *wa = w + k * (ptrdiff_t)ldw, *wb = wa + ldw;
        int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, i = 0;
        for (; i + 4 <= n; i += 4) {
            const uint32_t u = tq_ld32(x0 + i), v = tq_ld32(x1 + i), p = tq_ld32(wa + i), q = tq_ld32(wb + i);
            const int16x2_t u0 = tq_pair_lo(u, mxz), u1 = tq_pair_hi(u, mxz), v0 = tq_pair_lo(v, mxz),
                            v1 = tq_pair_hi(v, mxz);
            int16x2_t c0 = tq_pair_lo(p, mwz), c1 = tq_pair_hi(p, mwz);
            a00 = __smlad(u1, c1, __smlad(u0, c0, a00));
            a10 = __smlad(v1, c1, __smlad(v0, c0, a10));
            c0 = tq_pair_lo(q, mwz), c1 = tq_pair_hi(q, mwz);
            a01 = __smlad(u1, c1, __smlad(u0, c0, a01));
            a11 = __smlad(v1, c1, __smlad(v0, c0, a11));
        }
        out[0][k] = a00 + tq_dot_s8_ref(x0 + i, xz, wa + i, wz, n - i);
        out[0][k + 1] = a01 + tq_dot_s8_ref(x0 + i, xz, wb + i, wz, n - i);
        out[1][k] = a10 + tq_dot_s8_ref(x1 + i, xz, wa + i, wz, n - i);
        out[1][k + 1] = a11 + tq_dot_s8_ref(x1 + i, xz, wb + i, wz, n - i);
    }
}

static inline int32_t tq_dot_s8(const int8_t *x, int32_t xz, const int8_t *w, int32_t wz, int32_t n) {
    const int16x2_t mxz = tq_minus_zp(xz), mwz = tq_minus_zp(wz);
    int32_t a = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint32_t u = tq_ld32(x + i), p = tq_ld32(w + i);
        a = __smlad(tq_pair_hi(u, mxz), tq_pair_hi(p, mwz), __smlad(tq_pair_lo(u, mxz), tq_pair_lo(p, mwz), a));
    }
    return a + tq_dot_s8_ref(x + i, xz, w + i, wz, n - i);
}

/* d[i..i+4) as the pairs (d0, d2) and (d1, d3) that match tq_pair_lo / tq_pair_hi of four weights (PKHBT, PKHTB) */
static inline void tq_d16_pairs(const int16_t *d, int16x2_t *lo, int16x2_t *hi) {
    const uint32_t d01 = tq_ld32(d), d23 = tq_ld32(d + 2);
    *lo = (int16x2_t)((d01 & 0xFFFFu) | (d23 << 16));
    *hi = (int16x2_t)((d23 & 0xFFFF0000u) | (d01 >> 16));
}

static inline void tq_dot_s16s8_x4(const int16_t *d, const int8_t *w, int32_t ldw, int32_t n, int32_t out[4]) {
    const int16x2_t zero = 0;
    const int8_t *w0 = w, *w1 = w + ldw, *w2 = w + 2 * (ptrdiff_t)ldw, *w3 = w + 3 * (ptrdiff_t)ldw;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, i = 0, k, j;
    for (; i + 4 <= n; i += 4) {
        int16x2_t lo, hi;
        uint32_t p;
        tq_d16_pairs(d + i, &lo, &hi);
        p = tq_ld32(w0 + i), a0 = __smlad(hi, tq_pair_hi(p, zero), __smlad(lo, tq_pair_lo(p, zero), a0));
        p = tq_ld32(w1 + i), a1 = __smlad(hi, tq_pair_hi(p, zero), __smlad(lo, tq_pair_lo(p, zero), a1));
        p = tq_ld32(w2 + i), a2 = __smlad(hi, tq_pair_hi(p, zero), __smlad(lo, tq_pair_lo(p, zero), a2));
        p = tq_ld32(w3 + i), a3 = __smlad(hi, tq_pair_hi(p, zero), __smlad(lo, tq_pair_lo(p, zero), a3));
    }
    out[0] = a0, out[1] = a1, out[2] = a2, out[3] = a3;
    for (k = 0; k < 4; k++) {
        const int8_t *wk = w + k * (ptrdiff_t)ldw;
        for (j = i; j < n; j++) out[k] += (int32_t)d[j] * wk[j];
    }
}

static inline int32_t tq_dot_s16s8(const int16_t *d, const int8_t *w, int32_t n) {
    int32_t a = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        int16x2_t lo, hi;
        const uint32_t p = tq_ld32(w + i);
        tq_d16_pairs(d + i, &lo, &hi);
        a = __smlad(hi, tq_pair_hi(p, 0), __smlad(lo, tq_pair_lo(p, 0), a));
    }
    for (; i < n; i++) a += (int32_t)d[i] * w[i];
    return a;
}

/* acc[j] += a0 * (b0[j] - bz) + a1 * (b1[j] - bz): the pairs (b0[j] - bz, b1[j] - bz) against (a0, a1), one SMLAD
 * per j (|a0|, |a1| <= 2^15 - 1, as the caller guarantees). */
static inline void tq_axpy2_s8(int32_t *acc, int32_t a0, int32_t a1, const int8_t *b0, const int8_t *b1, int32_t bz,
                               int32_t n) {
    const int16x2_t mbz = tq_minus_zp(bz), a = (int16x2_t)(((uint32_t)(uint16_t)(int16_t)a1 << 16) |
                                                             (uint16_t)(int16_t)a0);
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const uint32_t u = tq_ld32(b0 + j), v = tq_ld32(b1 + j);
        const uint32_t u02 = (uint32_t)tq_pair_lo(u, mbz), u13 = (uint32_t)tq_pair_hi(u, mbz);
        const uint32_t v02 = (uint32_t)tq_pair_lo(v, mbz), v13 = (uint32_t)tq_pair_hi(v, mbz);
        acc[j] = __smlad((int16x2_t)((u02 & 0xFFFFu) | (v02 << 16)), a, acc[j]);
        acc[j + 1] = __smlad((int16x2_t)((u13 & 0xFFFFu) | (v13 << 16)), a, acc[j + 1]);
        acc[j + 2] = __smlad((int16x2_t)((u02 >> 16) | (v02 & 0xFFFF0000u)), a, acc[j + 2]);
        acc[j + 3] = __smlad((int16x2_t)((u13 >> 16) | (v13 & 0xFFFF0000u)), a, acc[j + 3]);
    }
    for (; j < n; j++) acc[j] += a0 * ((int32_t)b0[j] - bz) + a1 * ((int32_t)b1[j] - bz);
}

static inline void tq_axpy_s8(int32_t *acc, int32_t a, const int8_t *b, int32_t bz, int32_t n) {
    tq_axpy_s8_ref(acc, a, b, bz, n); /* any int32 a: no 16-bit pairs */
}

/* --- the 2x2 register-blocked product (two operand rows x two weight rows), used by the DSP paths of fc_2s.c,
 * bmm_2s.c and batch_matmul.c ---
 *
 * The two int16 operand rows x, y (length n) are laid out once, when they are decoded, so that the inner loop needs
 * no packing: for each group of four k below n4 = n & ~3 the 16 bytes x[k], x[k+2], x[k+1], x[k+3], y[k], y[k+2],
 * y[k+1], y[k+3], i.e. the words (x0,x2) (x1,x3) (y0,y2) (y1,y3), which meet SXTB16 of four weight bytes (w0,w2) and
 * SXTB16 of the same word rotated by 8 (w1,w3); then the n - n4 tail values of x, then those of y, in order (2n
 * entries in all). The buffer must be 4-byte aligned (LDM). Every word loaded feeds two SMLADs, every weight word
 * four. */
static inline int16x2_t tq_sxtb16_ror8(uint32_t v) {
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v)); /* GCC does not fold the rotate into SXTB16 */
    return r;
}

static inline int16x2_t tq_sxtab16_ror8(int16x2_t a, uint32_t v) {
    int16x2_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
    return r;
}

/* where operand k of row r (0: x, 1: y) goes */
static inline int32_t tq_pair_pos(int32_t n, int32_t r, int32_t k) {
    const int32_t n4 = n & ~3;
    if (k >= n4) return 2 * n4 + r * (n - n4) + (k - n4);
    return 2 * (k & ~3) + 4 * r + ((k & 1) << 1) + ((k >> 1) & 1);
}

/* Row r of the layout from n int8 codes q minus zp (zp in [-128, 127], tq_zp_ok: every value fits an int16), four at
 * a time with SXTAB16 (two words per four codes, already in the pair order); returns sum_k (q_k - zp). */
static inline int32_t tq_pair_codes(const int8_t *q, int32_t n, int32_t zp, int16_t *xy, int32_t r) {
    const int32_t n4 = n & ~3;
    const int16x2_t mz = tq_minus_zp(zp), ones = 0x00010001;
    uint32_t *g = (uint32_t *)(void *)xy + 2 * r;
    int16_t *tail = xy + 2 * n4 + r * (n - n4);
    int32_t k, sum = 0;
    for (k = 0; k < n4; k += 4, g += 4) {
        const uint32_t v = tq_ld32(q + k);
        const int16x2_t lo = __sxtab16(mz, (int8x4_t)v), hi = tq_sxtab16_ror8(mz, v);
        g[0] = (uint32_t)lo, g[1] = (uint32_t)hi;
        sum = __smlad(hi, ones, __smlad(lo, ones, sum));
    }
    for (; k < n; k++) sum += *tail++ = (int16_t)(q[k] - zp);
    return sum;
}

/* out[r][c] = sum_k row_r[k] * w_c[k], w_0 = w, w_1 = w + ldw (ldw = 0 repeats w), rows laid out as above. Exact:
 * the sums are those of the reference, in another order (see the bounds in the file comment). */
static inline void tq_mm2x2_s16s8(const int16_t *xy, const int8_t *w, int32_t ldw, int32_t n, int32_t out[2][2]) {
    const int32_t n4 = n & ~3, nt = n - n4;
    const uint32_t *pd = (const uint32_t *)(const void *)xy;
    const int8_t *wp = w;
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, k = 0;
#if TQ_DSP_ASM
    if (n4) {
        /* two groups of four k per iteration (an odd count enters at the second): LDM + 2 LDR + 4 SXTB16 +
         * 8 SMLAD per group, in all 14 registers (4 sums, 4 pointers / bounds, 6 operands) */
        const uint32_t *end = pd + n4;
        /* LDM fills its registers in ascending order: the four operand words get fixed ones */
        register uint32_t x02 __asm__("r8"), x13 __asm__("r9"), y02 __asm__("r10"), y13 __asm__("r11");
        uint32_t p, lo;
#define TQ_MM2X2_GROUP                                                                                                 \
    "ldmia  %[pd]!, {%[x02], %[x13], %[y02], %[y13]}\n\t"                                                           \
    "ldr    %[p], [%[w], %[ldw]]\n\t"                                                                                  \
    "sxtb16 %[lo], %[p]\n\t"                                                                                           \
    "sxtb16 %[p], %[p], ror #8\n\t"                                                                                    \
    "smlad  %[a01], %[x02], %[lo], %[a01]\n\t"                                                                         \
    "smlad  %[a11], %[y02], %[lo], %[a11]\n\t"                                                                         \
    "smlad  %[a01], %[x13], %[p], %[a01]\n\t"                                                                          \
    "smlad  %[a11], %[y13], %[p], %[a11]\n\t"                                                                          \
    "ldr    %[p], [%[w]], #4\n\t"                                                                                      \
    "sxtb16 %[lo], %[p]\n\t"                                                                                           \
    "sxtb16 %[p], %[p], ror #8\n\t"                                                                                    \
    "smlad  %[a00], %[x02], %[lo], %[a00]\n\t"                                                                         \
    "smlad  %[a10], %[y02], %[lo], %[a10]\n\t"                                                                         \
    "smlad  %[a00], %[x13], %[p], %[a00]\n\t"                                                                          \
    "smlad  %[a10], %[y13], %[p], %[a10]\n\t"
        __asm__ volatile("subs   %[lo], %[end], %[pd]\n\t"
                         "tst    %[lo], #16\n\t" /* an odd number of 16-byte groups */
                         "bne    2f\n\t"
                         "1:\n\t" TQ_MM2X2_GROUP "2:\n\t" TQ_MM2X2_GROUP "cmp    %[pd], %[end]\n\t"
                         "bne    1b\n\t"
                         : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [pd] "+r"(pd),
                           [w] "+r"(wp), [x02] "=&r"(x02), [x13] "=&r"(x13), [y02] "=&r"(y02), [y13] "=&r"(y13),
                           [p] "=&r"(p), [lo] "=&r"(lo)
                         : [ldw] "r"(ldw), [end] "r"(end)
                         : "cc", "memory");
#undef TQ_MM2X2_GROUP
        k = n4;
    }
#endif
    for (; k < n4; k += 4, pd += 4, wp += 4) {
        uint32_t p = tq_ld32(wp + ldw);
        int16x2_t lo = __sxtb16((int8x4_t)p), hi = tq_sxtb16_ror8(p);
        a01 = __smlad((int16x2_t)tq_ld32(pd + 1), hi, __smlad((int16x2_t)tq_ld32(pd), lo, a01));
        a11 = __smlad((int16x2_t)tq_ld32(pd + 3), hi, __smlad((int16x2_t)tq_ld32(pd + 2), lo, a11));
        p = tq_ld32(wp);
        lo = __sxtb16((int8x4_t)p), hi = tq_sxtb16_ror8(p);
        a00 = __smlad((int16x2_t)tq_ld32(pd + 1), hi, __smlad((int16x2_t)tq_ld32(pd), lo, a00));
        a10 = __smlad((int16x2_t)tq_ld32(pd + 3), hi, __smlad((int16x2_t)tq_ld32(pd + 2), lo, a10));
    }
    for (k = 0; k < nt; k++) {
        const int32_t x = xy[2 * n4 + k], y = xy[2 * n4 + nt + k], u = w[n4 + k], v = w[ldw + n4 + k];
        a00 += x * u, a01 += x * v, a10 += y * u, a11 += y * v;
    }
    out[0][0] = a00, out[0][1] = a01, out[1][0] = a10, out[1][1] = a11;
}

/* acc0[c], acc1[c] (c < nc): the sums of the two laid-out rows with w_c = w + c * ldw, two columns at a time. On
 * Thumb-2 the loop over column pairs is in the assembly too (the per-pair bookkeeping on 16 bytes of stack it pushes
 * and pops itself, as all 14 registers are taken): the four operand words go to r8-r11, which first carry the two
 * output pointers, the pair count and the group bytes onto that stack. The n - n4 tail and an odd last column are
 * added in C. */
static inline void tq_mm2xn_s16s8(const int16_t *xy, const int8_t *w, int32_t ldw, int32_t n, int32_t nc,
                                  int32_t *acc0, int32_t *acc1) {
    int32_t c = 0, out[2][2];
#if TQ_DSP_ASM
    const int32_t n4 = n & ~3, nt = n - n4;
    if (n4 && nc >= 2) {
        register int32_t *o0 __asm__("r8") = acc0, *o1 __asm__("r9") = acc1;
        register int32_t np __asm__("r10") = nc >> 1, nb __asm__("r11") = 4 * n4;
        const uint32_t *pd = (const uint32_t *)(const void *)xy;
        const int8_t *wp = w;
        const uint32_t *end;
        int32_t a00, a01, a10, a11;
        uint32_t p, lo;
#define TQ_MM2X2_GROUP                                                                                                 \
    "ldmia  %[pd]!, {%[o0], %[o1], %[np], %[nb]}\n\t"                                                                  \
    "ldr    %[p], [%[w], %[ldw]]\n\t"                                                                                  \
    "sxtb16 %[lo], %[p]\n\t"                                                                                           \
    "sxtb16 %[p], %[p], ror #8\n\t"                                                                                    \
    "smlad  %[a01], %[o0], %[lo], %[a01]\n\t"                                                                          \
    "smlad  %[a11], %[np], %[lo], %[a11]\n\t"                                                                          \
    "smlad  %[a01], %[o1], %[p], %[a01]\n\t"                                                                           \
    "smlad  %[a11], %[nb], %[p], %[a11]\n\t"                                                                           \
    "ldr    %[p], [%[w]], #4\n\t"                                                                                      \
    "sxtb16 %[lo], %[p]\n\t"                                                                                           \
    "sxtb16 %[p], %[p], ror #8\n\t"                                                                                    \
    "smlad  %[a00], %[o0], %[lo], %[a00]\n\t"                                                                          \
    "smlad  %[a10], %[np], %[lo], %[a10]\n\t"                                                                          \
    "smlad  %[a00], %[o1], %[p], %[a00]\n\t"                                                                           \
    "smlad  %[a10], %[nb], %[p], %[a10]\n\t"
        __asm__ volatile("push   {%[o0], %[o1], %[np], %[nb]}\n\t" /* [sp]: out0, out1, pairs left, 4 n4 */
                         "add    %[end], %[pd], %[nb]\n\t"
                         "3:\n\t"
                         "movs   %[a00], #0\n\t"
                         "movs   %[a01], #0\n\t"
                         "movs   %[a10], #0\n\t"
                         "movs   %[a11], #0\n\t"
                         "ldr    %[lo], [sp, #12]\n\t"
                         "sub    %[pd], %[end], %[lo]\n\t"
                         "tst    %[lo], #16\n\t" /* an odd number of 16-byte groups */
                         "bne    2f\n\t"
                         "1:\n\t" TQ_MM2X2_GROUP "2:\n\t" TQ_MM2X2_GROUP
                         "cmp    %[pd], %[end]\n\t"
                         "bne    1b\n\t"
                         "ldr    %[p], [sp]\n\t"
                         "strd   %[a00], %[a01], [%[p]], #8\n\t"
                         "str    %[p], [sp]\n\t"
                         "ldr    %[p], [sp, #4]\n\t"
                         "strd   %[a10], %[a11], [%[p]], #8\n\t"
                         "str    %[p], [sp, #4]\n\t"
                         "ldr    %[lo], [sp, #12]\n\t"
                         "sub    %[w], %[w], %[lo], lsr #2\n\t" /* back n4, on two rows */
                         "add    %[w], %[w], %[ldw], lsl #1\n\t"
                         "ldr    %[p], [sp, #8]\n\t"
                         "subs   %[p], %[p], #1\n\t"
                         "str    %[p], [sp, #8]\n\t"
                         "bne    3b\n\t"
                         "add    sp, sp, #16\n\t"
                         : [o0] "+r"(o0), [o1] "+r"(o1), [np] "+r"(np), [nb] "+r"(nb), [pd] "+r"(pd), [w] "+r"(wp),
                           [end] "=&r"(end), [a00] "=&r"(a00), [a01] "=&r"(a01), [a10] "=&r"(a10),
                           [a11] "=&r"(a11), [p] "=&r"(p), [lo] "=&r"(lo)
                         : [ldw] "r"(ldw)
                         : "cc", "memory");
#undef TQ_MM2X2_GROUP
        c = nc & ~1;
        if (nt) {
            const int16_t *xt = xy + 2 * n4, *yt = xt + nt;
            int32_t j, k;
            for (j = 0; j < c; j++) {
                const int8_t *wt = w + (ptrdiff_t)j * ldw + n4;
                for (k = 0; k < nt; k++) acc0[j] += xt[k] * wt[k], acc1[j] += yt[k] * wt[k];
            }
        }
    }
#endif
    for (; c + 2 <= nc; c += 2) {
        tq_mm2x2_s16s8(xy, w + (ptrdiff_t)c * ldw, ldw, n, out);
        acc0[c] = out[0][0], acc0[c + 1] = out[0][1], acc1[c] = out[1][0], acc1[c + 1] = out[1][1];
    }
    if (c < nc) {
        tq_mm2x2_s16s8(xy, w + (ptrdiff_t)c * ldw, 0, n, out);
        acc0[c] = out[0][0], acc1[c] = out[1][0];
    }
}

/* tq_requant1(x, mult, shift) (fixedpoint.h) for an int32 x, mult >= 0 and -31 <= shift <= -1 (the callers check
 * and use tq_requant1 otherwise), in 32-bit steps: with e = 31 - shift >= 32 and k = e - 32,
 *   rdbpot64(p, e) = floor((p + 2^(e-1) - [p < 0]) / 2^e), p = x * mult
 * (rem > 2^(e-1) - 1 + [p < 0] exactly when the floored sum carries into bit e). mult >= 0 makes [p < 0] = [x < 0]
 * but for mult = 0, where both constants give floor(c / 2^e) = 0. |p| < 2^62 and c < 2^61: the SMLAL sum does not
 * overflow, and flooring by 2^e is flooring the high word by 2^k. */
static inline int32_t tq_requant1_dsp(int32_t x, int32_t mult, int32_t shift) {
    const int32_t k = -1 - shift;
    const uint32_t t = (uint32_t)1 << k; /* c = 2^(31 + k) - [x < 0] as the words (t >> 1, t << 31) plus x >> 31 */
    const int64_t c = (int64_t)((((uint64_t)(t >> 1) << 32) | (uint32_t)(t << 31)) + (uint64_t)(int64_t)(x >> 31));
    return (int32_t)(((int64_t)x * mult + c) >> 32) >> k;
}

/* tq_mbqm(x, mult, shift) (fixedpoint.h) for an int32 x, mult >= 0 and -31 <= shift <= 0 (callers check): no left
 * shift, so SRDHM(x, mult) = trunc((p + nudge) / 2^31), p = x * mult, nudge = 2^30 for p >= 0 and 1 - 2^30 for
 * p < 0. The sum p + nudge has the sign of x (for mult = 0 too), and truncating a negative value is flooring it
 * after adding 2^31 - 1: both cases are floor((p + 2^30) / 2^31), one SMLAL (|p| < 2^62, and mult >= 0 rules out the
 * INT32_MIN * INT32_MIN saturation). The int32 RDBPOT of an int32-range value is the int64 one. */
static inline int32_t tq_mbqm_dsp(int32_t x, int32_t mult, int32_t shift) {
    return tq_rdbpot((int32_t)(((int64_t)x * mult + ((int64_t)1 << 30)) >> 31), -shift);
}

#else /* reference only: the same entry points, portable */

static inline void tq_dot_2x4(const int8_t *x0, const int8_t *x1, int32_t xz, const int8_t *w, int32_t ldw,
                              int32_t wz, int32_t n, int32_t out[2][4]) {
    int32_t k;
    for (k = 0; k < 4; k++) {
        out[0][k] = tq_dot_s8_ref(x0, xz, w + k * (ptrdiff_t)ldw, wz, n);
        out[1][k] = tq_dot_s8_ref(x1, xz, w + k * (ptrdiff_t)ldw, wz, n);
    }
}

static inline int32_t tq_dot_s8(const int8_t *x, int32_t xz, const int8_t *w, int32_t wz, int32_t n) {
    return tq_dot_s8_ref(x, xz, w, wz, n);
}

static inline void tq_axpy2_s8(int32_t *acc, int32_t a0, int32_t a1, const int8_t *b0, const int8_t *b1, int32_t bz,
                               int32_t n) {
    tq_axpy_s8_ref(acc, a0, b0, bz, n);
    tq_axpy_s8_ref(acc, a1, b1, bz, n);
}

static inline void tq_axpy_s8(int32_t *acc, int32_t a, const int8_t *b, int32_t bz, int32_t n) {
    tq_axpy_s8_ref(acc, a, b, bz, n);
}

#endif

#if defined(TQ_SIMD_DSP)
/* floor(u / dn) for a divisor dn >= 2^31 fixed over many dividends u < dn 2^32 (the high word below dn), without a
 * 64-bit division (a library call on M-profile): Moller and Granlund, "Improved division by invariant integers"
 * (2011), algorithm 4. tq_div32_init computes the reciprocal v = floor((2^64 - 1) / dn) - 2^32 (one 64-bit division);
 * tq_div32_q the quotient from one 32x32 product and at most two corrections, all modulo 2^32 as the paper's. */
typedef struct {
    uint32_t dn, v;
} tq_div32;

static inline tq_div32 tq_div32_init(uint32_t dn) {
    tq_div32 d;
    d.dn = dn;
    d.v = (uint32_t)(~(uint64_t)0 / dn - ((uint64_t)1 << 32));
    return d;
}

static inline uint32_t tq_div32_q2(uint32_t u1, uint32_t u0, const tq_div32 *d) { /* u = u1 2^32 + u0 */
    const uint64_t p = (uint64_t)d->v * u1 + (((uint64_t)u1 << 32) | u0); /* (q1, q0) = v u1 + u, carry out dropped */
    uint32_t q1 = (uint32_t)(p >> 32) + 1u, q0 = (uint32_t)p, r = u0 - q1 * d->dn;
    if (r > q0) q1--, r += d->dn;
    if (r >= d->dn) q1++;
    return q1;
}

static inline uint32_t tq_div32_q(uint64_t u, const tq_div32 *d) {
    return tq_div32_q2((uint32_t)(u >> 32), (uint32_t)u, d);
}

#if defined(TQ_SIMD_MVE)
/* The carry of a + b (uint32 lanes): bit 31 of VHADD's (a + b) >> 1, taken at 33 bits. A 0/1 vector, not a
 * predicate (no VCMP): GCC 12 moves each predicate through a core register (VMRS, SXTH, VMSR). */
static inline uint32x4_t tq_mve_carry(uint32x4_t a, uint32x4_t b) { return vshrq_n_u32(vhaddq_u32(a, b), 31); }

/* -1 where a > b (unsigned), else 0: VHSUB's (b - a) >> 1, taken at 33 bits, is negative exactly there. */
static inline uint32x4_t tq_mve_gt(uint32x4_t a, uint32x4_t b) {
    return vreinterpretq_u32_s32(vshrq_n_s32(vreinterpretq_s32_u32(vhsubq_u32(b, a)), 31));
}

/* tq_div32_q2 in 4 lanes (one divisor; rv: v in every lane), all modulo 2^32 as there: (p1, p0) = v u1 + u from
 * VMULH / VMUL (the high and low words of v u1) and p0's carry; with q = p1 (tq_div32_q2's q1 - 1) and
 * r = u0 - (q + 1) dn, q1's two corrections become the masks m1 = -(r > p0) (r -= m1 dn) and m2 = -(r < dn): the
 * quotient is q + 2 + m1 + m2. dn as a scalar operand (VMLA, VHSUB): no vector register for it. */
static inline uint32x4_t tq_div32_q2_mve(uint32x4_t u1, uint32x4_t u0, uint32x4_t rv, uint32_t dn) {
    const uint32x4_t lo = vmulq_u32(u1, rv), p0 = vaddq_u32(lo, u0);
    const uint32x4_t q = vaddq_u32(vaddq_u32(vmulhq_u32(u1, rv), u1), tq_mve_carry(lo, u0));
    uint32x4_t r = vmlaq_n_u32(vsubq_n_u32(u0, dn), q, 0u - dn); /* u0 - (q + 1) dn */
    const uint32x4_t m = tq_mve_gt(r, p0);
    r = vmlaq_n_u32(r, m, 0u - dn); /* + dn where m = -1 */
    return vaddq_n_u32(vaddq_u32(vaddq_u32(q, m),
                                 vreinterpretq_u32_s32(vshrq_n_s32(vreinterpretq_s32_u32(vhsubq_n_u32(r, dn)), 31))),
                       2u); /* -(r < dn): VHSUB's (r - dn) >> 1 at 33 bits is negative exactly there */
}
#endif
#endif

#if defined(TQ_SIMD_MVE)
/* --- Helium (MVE) bodies, used by the MVE branches of fc_2s.c, fully_connected.c, bmm_2s.c and batch_matmul.c ---
 *
 * Two operand rows x two weight rows per pass (2x2): every vector loaded feeds two VMLADAVAs. VMLADAVA accumulates
 * into an even general-purpose register, so a 2x3 or 3x2 block (six sums) leaves GCC 12 shuffling registers inside
 * the loop; 2x2 keeps the loop at 4 loads + 4 VMLADAVA + LE. A length that is not a multiple of the lane count ends
 * with one pass of zeroing tail-predicated loads (VCTP): no byte past the rows is read. The sums wrap modulo 2^32
 * like the hardware's, which is exact wherever the true value fits an int32 (the callers' accumulator bounds). */

#define TQ_MVE_NC 128 /* columns per call of tq_mve_mm2xn_*: the callers' sums are int32 acc[2][TQ_MVE_NC] */

/* On Thumb-2 with optimization (TQ_DSP_ASM, as for the DSP kernel) the loop over column pairs is inline assembly:
 * a tail-predicated loop (DLSTP/LETP: the last pass loads only the n % 16 (n % 8) remaining elements, zeroing the
 * others) per pair, 9 instructions per 16 (8) k, and 15 of bookkeeping per pair, where GCC 12's code for the same
 * loops in C spends about 35 (the four sums in even registers, as VMLADAVA needs, take it most of its registers).
 * It needs all 14 free registers: the two operand row pointers go onto the stack (PUSH), reloaded with one LDRD per
 * pair, and acc[1] is addressed as acc[0] + TQ_MVE_NC (STRD with an offset). Odd last column: the C loop. */
#define TQ_MVE_PAIRS(DLSTP, LDX, LDW, WINC, MLA)                                                                       \
    "push   {%[p0], %[p1]}\n\t"                                                                                        \
    "1:\n\t"                                                                                                           \
    "movs   %[a00], #0\n\t"                                                                                            \
    "movs   %[a01], #0\n\t"                                                                                            \
    "movs   %[a10], #0\n\t"                                                                                            \
    "movs   %[a11], #0\n\t"                                                                                            \
    "ldrd   %[p0], %[p1], [sp]\n\t"                                                                                    \
    "mov    %[q0], %[w]\n\t"                                                                                           \
    "add    %[q1], %[w], %[ldw]\n\t" DLSTP " lr, %[n]\n\t"                                                            \
    "2:\n\t" LDX " q0, [%[p0]], #16\n\t" LDX " q1, [%[p1]], #16\n\t" LDW " q2, [%[q0]], #" WINC "\n\t" LDW      \
    " q3, [%[q1]], #" WINC "\n\t"                                                                                      \
    MLA " %[a00], q0, q2\n\t" MLA " %[a10], q1, q2\n\t" MLA " %[a01], q0, q3\n\t" MLA " %[a11], q1, q3\n\t"         \
    "letp   lr, 2b\n\t"                                                                                                \
    "strd   %[a10], %[a11], [%[o], #" TQ_MVE_NC_BYTES "]\n\t"                                                       \
    "strd   %[a00], %[a01], [%[o]], #8\n\t"                                                                            \
    "add    %[w], %[w], %[ldw], lsl #1\n\t"                                                                            \
    "subs   %[cnt], %[cnt], #1\n\t"                                                                                    \
    "bne    1b\n\t"                                                                                                    \
    "add    sp, sp, #8\n\t"
#define TQ_MVE_NC_BYTES "512" /* 4 * TQ_MVE_NC */

#if TQ_DSP_ASM
/* the register pinning of TQ_MVE_PAIRS (VMLADAVA's accumulators are even registers; p0 below p1 for PUSH/LDRD) */
#define TQ_MVE_PAIRS_ASM(DLSTP, LDX, LDW, WINC, MLA, X0, X1, W, LDW_BYTES, N, NP, ACC)                                 \
    do {                                                                                                               \
        register int32_t a00 __asm__("r0"), a01 __asm__("r2"), a10 __asm__("r4"), a11 __asm__("r6");                  \
        register const void *p0 __asm__("r1") = (X0), *p1 __asm__("r3") = (X1), *q0 __asm__("r5"), *q1 __asm__("r7");  \
        register const void *wp __asm__("r8") = (W);                                                                   \
        register int32_t ldw_ __asm__("r9") = (LDW_BYTES), n_ __asm__("r10") = (N), cnt __asm__("r11") = (NP);       \
        register int32_t *o __asm__("r12") = (ACC);                                                                    \
        __asm__ volatile(TQ_MVE_PAIRS(DLSTP, LDX, LDW, WINC, MLA)                                                      \
                         : [a00] "=&r"(a00), [a01] "=&r"(a01), [a10] "=&r"(a10), [a11] "=&r"(a11), [p0] "+r"(p0),      \
                           [p1] "+r"(p1), [q0] "=&r"(q0), [q1] "=&r"(q1), [w] "+r"(wp), [cnt] "+r"(cnt), [o] "+r"(o)  \
                         : [ldw] "r"(ldw_), [n] "r"(n_)                                                                \
                         : "q0", "q1", "q2", "q3", "lr", "cc", "memory");                                              \
    } while (0)
#endif

/* acc[0][c] = sum_k x0[k] w_c[k] and acc[1][c] = sum_k x1[k] w_c[k], w_c = w + c * ldw, for c < nc <= TQ_MVE_NC
 * (x1 may equal x0): int8 x int8, two columns per pass. Not inlined: the loop nest gets the registers to itself. */
__attribute__((noinline, unused)) static void tq_mve_mm2xn_s8(const int8_t *x0, const int8_t *x1, const int8_t *w,
                                                             int32_t ldw, int32_t n, int32_t nc,
                                                             int32_t (*acc)[TQ_MVE_NC]) {
    const int32_t nb = n >> 4;
    const mve_pred16_t tp = vctp8q((uint32_t)(n & 15));
    int32_t c = 0;
#if TQ_DSP_ASM
    if (n > 0 && nc >= 2) {
        TQ_MVE_PAIRS_ASM("dlstp.8", "vldrb.8", "vldrb.8", "16", "vmladava.s8", x0, x1, w, ldw, n, nc >> 1, acc[0]);
        c = nc & ~1;
        w += (ptrdiff_t)c * ldw;
    }
#endif
    for (; c < nc; c += 2, w += 2 * (ptrdiff_t)ldw) {
        const int8_t *p0 = x0, *p1 = x1, *q0 = w, *q1 = c + 1 < nc ? w + ldw : w; /* an odd last column: repeated */
        int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, i;
        for (i = nb; i > 0; i--, p0 += 16, p1 += 16, q0 += 16, q1 += 16) {
            const int8x16_t u = vldrbq_s8(p0), v = vldrbq_s8(p1), p = vldrbq_s8(q0), q = vldrbq_s8(q1);
            a00 = vmladavaq_s8(a00, u, p), a10 = vmladavaq_s8(a10, v, p);
            a01 = vmladavaq_s8(a01, u, q), a11 = vmladavaq_s8(a11, v, q);
        }
        if (n & 15) {
            const int8x16_t u = vldrbq_z_s8(p0, tp), v = vldrbq_z_s8(p1, tp), p = vldrbq_z_s8(q0, tp),
                            q = vldrbq_z_s8(q1, tp);
            a00 = vmladavaq_s8(a00, u, p), a10 = vmladavaq_s8(a10, v, p);
            a01 = vmladavaq_s8(a01, u, q), a11 = vmladavaq_s8(a11, v, q);
        }
        acc[0][c] = a00, acc[1][c] = a10;
        if (c + 1 < nc) acc[0][c + 1] = a01, acc[1][c + 1] = a11;
    }
}

/* The same for int16 rows d0, d1 (2-byte aligned) against int8 columns (sign-extended by the load). */
__attribute__((noinline, unused)) static void tq_mve_mm2xn_s16s8(const int16_t *d0, const int16_t *d1,
                                                                const int8_t *w, int32_t ldw, int32_t n, int32_t nc,
                                                                int32_t (*acc)[TQ_MVE_NC]) {
    const int32_t nb = n >> 3;
    const mve_pred16_t tp = vctp16q((uint32_t)(n & 7));
    int32_t c = 0;
#if TQ_DSP_ASM
    if (n > 0 && nc >= 2) {
        TQ_MVE_PAIRS_ASM("dlstp.16", "vldrh.16", "vldrb.s16", "8", "vmladava.s16", d0, d1, w, ldw, n, nc >> 1, acc[0]);
        c = nc & ~1;
        w += (ptrdiff_t)c * ldw;
    }
#endif
    for (; c < nc; c += 2, w += 2 * (ptrdiff_t)ldw) {
        const int16_t *p0 = d0, *p1 = d1;
        const int8_t *q0 = w, *q1 = c + 1 < nc ? w + ldw : w;
        int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, i;
        for (i = nb; i > 0; i--, p0 += 8, p1 += 8, q0 += 8, q1 += 8) {
            const int16x8_t u = vldrhq_s16(p0), v = vldrhq_s16(p1), p = vldrbq_s16(q0), q = vldrbq_s16(q1);
            a00 = vmladavaq_s16(a00, u, p), a10 = vmladavaq_s16(a10, v, p);
            a01 = vmladavaq_s16(a01, u, q), a11 = vmladavaq_s16(a11, v, q);
        }
        if (n & 7) {
            const int16x8_t u = vldrhq_z_s16(p0, tp), v = vldrhq_z_s16(p1, tp), p = vldrbq_z_s16(q0, tp),
                            q = vldrbq_z_s16(q1, tp);
            a00 = vmladavaq_s16(a00, u, p), a10 = vmladavaq_s16(a10, v, p);
            a01 = vmladavaq_s16(a01, u, q), a11 = vmladavaq_s16(a11, v, q);
        }
        acc[0][c] = a00, acc[1][c] = a10;
        if (c + 1 < nc) acc[0][c + 1] = a01, acc[1][c + 1] = a11;
    }
}

/* Four lanes of tq_requant1(x, m, sh) (fixedpoint.h) for an int32 x, m >= 0 and -31 <= sh <= -1 (the callers check):
 * x m / 2^(32 + k), k = -1 - sh (negk = -k = sh + 1), rounded half away from zero. VQDMULH gives
 * g = floor(x m / 2^31) exactly (m >= 0 rules out its one saturating case), so f = g >> k = floor(x m / 2^(31 + k))
 * and VRSHR #1 of f, (f + 1) >> 1, rounds half up; half away from zero differs only at a negative tie, x m < 0 with
 * x m = 0 modulo 2^(31 + k) (the low 31 bits of x m, VMUL's low word, and the low k bits of g, g << (32 - k), all
 * zero; VSHL by 32 gives 0), where it is f >> 1 = (f - 1 + 1) >> 1. The tie is found with lane arithmetic, not
 * predicates: GCC 12 fails (an internal error at -Os) on the predicate form. */
static inline int32x4_t tq_mve_requant1(int32x4_t x, int32x4_t m, int32x4_t negk) {
    const int32x4_t g = vqdmulhq_s32(x, m);
    const int32x4_t low = vorrq_s32(vshlq_n_s32(vmulq_s32(x, m), 1), vshlq_s32(g, vaddq_n_s32(negk, 32)));
    /* -1 where x < 0 and low == 0 ((low | -low) < 0 unless low is 0), else 0 */
    const int32x4_t tie = vbicq_s32(vshrq_n_s32(x, 31), vshrq_n_s32(vorrq_s32(low, vnegq_s32(low)), 31));
    return vrshrq_n_s32(vaddq_s32(vshlq_s32(g, negk), tie), 1);
}

/* Four lanes of tq_mbqm(x, m, sh) (fixedpoint.h) for an int32 x, m >= 0 and -31 <= sh <= 0 (callers check): the
 * SRDHM is VQRDMULH (floor((x m + 2^30) / 2^31) both, see tq_mbqm_dsp), the rounding divide by 2^-sh is VRSHL
 * (half up) after taking one off the negative values when sh < 0 (half away from zero; saturating, and INT32_MIN
 * is a multiple of 2^-sh, so it is its own result). */
static inline int32x4_t tq_mve_mbqm(int32x4_t x, int32_t m, int32_t sh) {
    int32x4_t v = vqrdmulhq_n_s32(x, m);
    if (sh < 0) v = vqaddq_s32(v, vshrq_n_s32(v, 31));
    return vrshlq_n_s32(v, sh);
}

/* dst[j] = sat8(v_j + zp) for the lanes of p */
static inline void tq_mve_store8(int8_t *dst, int32x4_t v, int32_t zp, mve_pred16_t p) {
    v = vminq_s32(vmaxq_s32(vaddq_n_s32(v, zp), vdupq_n_s32(-128)), vdupq_n_s32(127));
    vstrbq_p_s32(dst, v, p);
}

/* dst[c] = sat8(tq_requant1(acc[c] - corr, mult, shift) + zp) for c < n (one scale: BMM_2S's rows), with the
 * conditions of tq_mve_requant1 */
__attribute__((noinline, unused)) static void tq_mve_requant1_row(const int32_t *acc, int32_t n, int32_t corr,
                                                                  int32_t mult, int32_t shift, int32_t zp,
                                                                  int8_t *dst) {
    const int32x4_t mu = vdupq_n_s32(mult), negk = vdupq_n_s32(shift + 1);
    int32_t c;
    for (c = 0; c < n; c += 4) {
        const mve_pred16_t p = vctp32q((uint32_t)(n - c));
        tq_mve_store8(dst + c, tq_mve_requant1(vsubq_n_s32(vldrwq_z_s32(acc + c, p), corr), mu, negk), zp, p);
    }
}

/* sum_k q[k], int8 */
static inline int32_t tq_mve_sum_s8(const int8_t *q, int32_t n) {
    int32_t s = 0, i;
    for (i = n >> 4; i > 0; i--, q += 16) s = vaddvaq_s8(s, vldrbq_s8(q));
    if (n & 15) s = vaddvaq_s8(s, vldrbq_z_s8(q, vctp8q((uint32_t)(n & 15))));
    return s;
}

/* d[k] = lut[q[k]] (eight halfword lookups per gather); returns sum_k d[k] */
static inline int32_t tq_mve_lut_s16(const uint8_t *q, int32_t n, const int16_t *lut, int16_t *d) {
    int32_t s = 0, i;
    for (i = 0; i < n; i += 8) {
        const mve_pred16_t t = vctp16q((uint32_t)(n - i));
        const int16x8_t v = vldrhq_gather_shifted_offset_z_s16(lut, vldrbq_z_u16(q + i, t), t);
        vstrhq_p_s16(d + i, v, t);
        s = vaddvaq_s16(s, v); /* inactive lanes are zero */
    }
    return s;
}

/* d[k] = (q[k] - zp) << sh[k] (sh NULL: no shift), |q - zp| <= 255 and 0 <= sh <= 7: every value fits an int16,
 * so the lane-wise int16 arithmetic is exact */
static inline void tq_mve_shift_s16(const int8_t *q, int32_t n, int32_t zp, const int8_t *sh, int16_t *d) {
    int32_t i;
    for (i = 0; i < n; i += 8) {
        const mve_pred16_t t = vctp16q((uint32_t)(n - i));
        int16x8_t v = vsubq_n_s16(vldrbq_z_s16(q + i, t), (int16_t)zp);
        if (sh) v = vshlq_s16(v, vldrbq_z_s16(sh + i, t));
        vstrhq_p_s16(d + i, v, t);
    }
}

/* dst[c * ld + k] = src[k * lds + c] for k < K, c < nc: nc columns of a K-row int8 matrix as rows of length K
 * (eight columns per load, scattered with halfword offsets c * ld: ld * 7 < 2^16, checked by the callers) */
static inline void tq_mve_transpose_s8(const int8_t *src, int32_t lds, int32_t K, int32_t nc, int8_t *dst, int32_t ld) {
    const uint16x8_t off = vmulq_n_u16(vidupq_n_u16(0, 1), (uint16_t)ld);
    int32_t k, c;
    for (k = 0; k < K; k++) {
        const int8_t *s = src + (ptrdiff_t)k * lds;
        for (c = 0; c < nc; c += 8) {
            const mve_pred16_t t = vctp16q((uint32_t)(nc - c));
            vstrbq_scatter_offset_p_s16(dst + (ptrdiff_t)c * ld + k, off, vldrbq_z_s16(s + c, t), t);
        }
    }
}
#endif

#if defined(TQ_SIMD_VNNI)
#include "vnni.h"
#endif

#endif
