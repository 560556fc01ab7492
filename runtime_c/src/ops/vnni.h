/* tsptq runtime: int8 matrix products on AVX-512 VNNI (vpdpbusd) for the matmul-like kernels (internal to src/ops;
 * compiled only with -DTSPTQ_USE_AVX512VNNI, see dot.h).
 *
 * vpdpbusd multiplies unsigned bytes by signed bytes, four at a time, into int32 lanes. One operand, "B" (weights,
 * K rows, V), is packed with 128 added (b + 128 fits a uint8); the other, "A" (activation rows), is used as int8:
 *     raw[r][n] = sum_k (b[n][k] + 128) * a[r][k] = sum_k a[r][k] * b[n][k] + 128 * rowsum(a_r),
 * and each kernel turns raw into its accumulator with the row sums of A and the column sums of B (zero points,
 * decoded operands). All of it is int32 arithmetic modulo 2^32: it gives the exact accumulator whenever the exact
 * value fits an int32, which the exporter guarantees (docs/integer-semantics.md, "Bounds at a glance") and the
 * reference path assumes.
 *
 * A packed block holds TQV_NR = 32 channels of B as [K/4 groups][32 channels][4 bytes], zero past K: a 64-byte vector
 * is 4 consecutive k of 16 channels, and one broadcast of 4 bytes of an A row multiplies all 16. The kernel computes
 * an 8 x 32 tile (8 A rows, 32 channels) in 16 zmm accumulators, so each B load serves 8 rows and each A broadcast
 * serves 32 channels, and no horizontal sums are needed. tqv_gemm_run packs as many blocks as fit in a 64 KB panel
 * once, then runs every tile of A rows against them: each op supplies its A rows (`rows`) and its outputs (`emit`).
 * With -DTSPTQ_USE_AMX, tqv_gemm_run hands the product to amx.h first, which runs the same packed blocks and the
 * same rows and emit functions on AMX tiles (and declines when the CPU or the OS does not offer them).
 */
#ifndef TSPTQ_VNNI_H
#define TSPTQ_VNNI_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <immintrin.h>

#include "avx512.h"

#define TQV_NR 32              /* channels of B per packed block */
#define TQV_MR 8               /* A rows per kernel call */
#define TQV_MAX_K 2048         /* longest K (extension columns included) the stack buffers hold */
#define TQV_PANEL_BYTES 65536  /* packed B per panel */
#define TQV_PANEL_BLOCKS 16    /* at most this many blocks per panel (their column sums live on the stack) */
#define TQV_ROW_BYTES (TQV_MAX_K + 64) /* a kernel row an op decodes: room for whole-vector stores past K */

/* A kernel row of n values is read in steps of TQV_KSTEP bytes: 4 (one vpdpbusd broadcast), or 64 (one AMX tile row)
 * in an AMX build, so it must be readable up to tqv_kspan(n) bytes (<= TQV_MAX_K for n <= TQV_MAX_K). The packed
 * blocks are zero past the values: whatever the kernel reads there adds nothing. */
#if defined(TQ_SIMD_AMX)
#define TQV_KSTEP 64
#else
#define TQV_KSTEP 4
#endif
static inline int32_t tqv_kspan(int32_t n) { return (n + TQV_KSTEP - 1) & ~(TQV_KSTEP - 1); }

/* ---- packing B ------------------------------------------------------------------------------------------------ */

/* Loops over a register array unrolled whole, so that the array stays in registers (GCC's -O2 keeps such loops,
 * and the array in memory). */
#if defined(__GNUC__) && !defined(__clang__)
#define TQV_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define TQV_UNROLL _Pragma("unroll")
#else
#define TQV_UNROLL
#endif

/* Transpose a 16 x 16 matrix of int32 held in 16 registers: r[i] lane j -> r[j] lane i. Always inlined: called, its
 * registers would go through memory. */
static inline __attribute__((always_inline)) void tqv_transpose16(__m512i r[16]) {
    __m512i t[16];
    int i, s;
    TQV_UNROLL
    for (i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    /* r[4q + s], 128-bit lane L: rows 4q..4q+3 of column 4L + s */
    TQV_UNROLL
    for (i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* a 4 x 4 transpose of 128-bit lanes across r[s], r[4 + s], r[8 + s], r[12 + s] */
    TQV_UNROLL
    for (s = 0; s < 4; s++) {
        const __m512i v0 = _mm512_shuffle_i32x4(r[s], r[4 + s], 0x44), v1 = _mm512_shuffle_i32x4(r[s], r[4 + s], 0xEE);
        const __m512i v2 = _mm512_shuffle_i32x4(r[8 + s], r[12 + s], 0x44),
                      v3 = _mm512_shuffle_i32x4(r[8 + s], r[12 + s], 0xEE);
        t[s] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        t[4 + s] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
        t[8 + s] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        t[12 + s] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
    }
    TQV_UNROLL
    for (i = 0; i < 16; i++) r[i] = t[i];
}

/* B stored as rows (element (n, k) at b[n * ldb + k]): pack channels 0..nc-1 (nc <= 32), k < K, into bp. */
static inline void tqv_pack_rows(const int8_t *b, ptrdiff_t ldb, int32_t nc, int32_t K, uint8_t *bp) {
    const int32_t ng = (K + 3) / 4;
    int32_t k0, h, c, t;
    for (h = 0; h < 2; h++)
        for (k0 = 0; k0 < K; k0 += 64) {
            const int32_t n = K - k0 < 64 ? K - k0 : 64, g0 = k0 / 4;
            const __mmask64 valid = n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
            const __m512i bias = _mm512_set1_epi8((char)0x80);
            __m512i r[16];
            TQV_UNROLL
            for (c = 0; c < 16; c++) {
                /* b + 128 on the bytes loaded; padding past K and past nc packs as 0 */
                const int32_t ch = 16 * h + c;
                r[c] = ch < nc ? _mm512_maskz_mov_epi8(
                                     valid, _mm512_xor_si512(_mm512_maskz_loadu_epi8(valid, b + ch * ldb + k0), bias))
                               : _mm512_setzero_si512();
            }
            tqv_transpose16(r);
            for (t = 0; t < 16 && g0 + t < ng; t++)
                _mm512_store_si512((void *)(bp + (size_t)(g0 + t) * 128 + 64 * h), r[t]);
        }
}

/* B stored as columns (element (n, k) at b[k * ldb + n]): the same packing from 4 rows of 32 bytes per group. */
static inline void tqv_pack_cols(const int8_t *b, ptrdiff_t ldb, int32_t nc, int32_t K, uint8_t *bp) {
    const __mmask32 m = nc >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << nc) - 1);
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    int32_t g, j;
    for (g = 0; g < (K + 3) / 4; g++) {
        __m256i r[4], t0, t1, t2, t3, q0, q1, q2, q3;
        for (j = 0; j < 4; j++) /* b + 128 on the bytes loaded; padding past K and past nc packs as 0 */
            r[j] = 4 * g + j < K ? _mm256_maskz_mov_epi8(
                                       m, _mm256_xor_si256(_mm256_maskz_loadu_epi8(m, b + (4 * g + j) * ldb), bias))
                                 : _mm256_setzero_si256();
        /* bytes (k, n) -> n-major groups of 4 k, within each 128-bit lane, then the lanes in channel order */
        t0 = _mm256_unpacklo_epi8(r[0], r[1]);
        t1 = _mm256_unpackhi_epi8(r[0], r[1]);
        t2 = _mm256_unpacklo_epi8(r[2], r[3]);
        t3 = _mm256_unpackhi_epi8(r[2], r[3]);
        q0 = _mm256_unpacklo_epi16(t0, t2); /* channels 0-3 | 16-19 */
        q1 = _mm256_unpackhi_epi16(t0, t2); /* 4-7 | 20-23 */
        q2 = _mm256_unpacklo_epi16(t1, t3); /* 8-11 | 24-27 */
        q3 = _mm256_unpackhi_epi16(t1, t3); /* 12-15 | 28-31 */
        _mm256_store_si256((__m256i *)(void *)(bp + (size_t)g * 128), _mm256_permute2x128_si256(q0, q1, 0x20));
        _mm256_store_si256((__m256i *)(void *)(bp + (size_t)g * 128 + 32), _mm256_permute2x128_si256(q2, q3, 0x20));
        _mm256_store_si256((__m256i *)(void *)(bp + (size_t)g * 128 + 64), _mm256_permute2x128_si256(q0, q1, 0x31));
        _mm256_store_si256((__m256i *)(void *)(bp + (size_t)g * 128 + 96), _mm256_permute2x128_si256(q2, q3, 0x31));
    }
}

/* Extension columns (B stored as rows): column ext[t] of B appended as k = K4 + t, where bp already holds K4 / 4
 * groups. Used for channel_pow2 inputs (a channel with shift s counts 2^s times). */
static inline void tqv_pack_ext(const int8_t *b, ptrdiff_t ldb, int32_t nc, const int32_t *ext, int32_t n_ext,
                                uint8_t *bp_ext) {
    int32_t t, c;
    memset(bp_ext, 0, (size_t)((n_ext + 3) / 4) * 128);
    for (c = 0; c < nc; c++)
        for (t = 0; t < n_ext; t++)
            bp_ext[(t / 4) * 128 + c * 4 + t % 4] = (uint8_t)(b[c * ldb + ext[t]] ^ 0x80);
}

/* Column sums of a packed block: sum over the kvalid real k of b (the packed bytes are b + 128, padding 0). */
static inline void tqv_colsum(const uint8_t *bp, int32_t ng, int32_t kvalid, int32_t colsum[TQV_NR]) {
    const __m512i ones = _mm512_set1_epi8(1), off = _mm512_set1_epi32(128 * kvalid);
    __m512i s0 = _mm512_setzero_si512(), s1 = s0;
    int32_t g;
    for (g = 0; g < ng; g++) {
        s0 = _mm512_dpbusd_epi32(s0, _mm512_load_si512((const void *)(bp + (size_t)g * 128)), ones);
        s1 = _mm512_dpbusd_epi32(s1, _mm512_load_si512((const void *)(bp + (size_t)g * 128 + 64)), ones);
    }
    _mm512_storeu_si512((void *)colsum, _mm512_sub_epi32(s0, off));
    _mm512_storeu_si512((void *)(colsum + 16), _mm512_sub_epi32(s1, off));
}

/* The requantization parameters tqv_emit prepares (tqv_rqs_prepare), kept for one product's run: every tile's emit
 * of a block uses the same ones. Entry i holds channels c with c / 16 = i modulo TQV_RQC, keyed by the tqv_requant,
 * c and the lanes in use (an op's parameters do not change during a run: tqv_rqc_reset at its start). */
#define TQV_RQC 16
typedef struct {
    const void *key[TQV_RQC];
    int32_t c[TQV_RQC];
    __mmask16 m[TQV_RQC];
    int ok[TQV_RQC]; /* the shortest form applies (tqv_rqs_prepare), kept in rq */
    tqv_rqs rq[TQV_RQC];
} tqv_rqc;

static inline void tqv_rqc_reset(tqv_rqc *cache) {
    int i;
    for (i = 0; i < TQV_RQC; i++) cache->key[i] = NULL;
}

/* The VNNI driver's panel of packed blocks, its last bytes also the cache where the blocks leave them free. */
typedef union {
    uint8_t b[TQV_PANEL_BYTES];
    struct {
        uint8_t head[TQV_PANEL_BYTES - (sizeof(tqv_rqc) + 63) / 64 * 64];
        tqv_rqc tail;
    } s;
} tqv_panel;

/* One tile of output rows r0..r0+nr-1 as TQV_MR kernel rows: one kernel row per output row (planes = 1), or two
 * (planes = 2: output row r's planes are kernel rows r and TQV_MR / 2 + r); their sums, the kernel's raw sums for one
 * block (TQV_MR rows), and room for TQV_MR rows the op decodes. raw and buf point at the driver's stack: the AMX
 * driver lays several tiles' rows out one after the other. */
typedef struct {
    int32_t r0, nr;
    const int8_t *a[TQV_MR];
    int32_t rowsum[TQV_MR];
    int32_t (*raw)[TQV_NR];
    int8_t (*buf)[TQV_ROW_BYTES];
    tqv_rqc *rqc; /* the driver's cache of prepared parameters, or NULL */
    const uint8_t *bp; /* for emit: the VNNI driver's packed block of the channels emitted (NULL on AMX tiles) */
} tqv_tile;

/* ---- A rows --------------------------------------------------------------------------------------------------- */

static inline int32_t tqv_rowsum(const int8_t *a, int32_t n) {
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i s = _mm512_setzero_si512();
    int32_t k;
    for (k = 0; k < n; k += 64) {
        const __mmask64 m = n - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - k)) - 1);
        s = _mm512_dpbusd_epi32(s, ones, _mm512_maskz_loadu_epi8(m, a + k));
    }
    return _mm512_reduce_add_epi32(s);
}

/* The tile's rows of an int8 matrix (row stride ld, `rows` rows, K columns) as kernel rows: in place,
 * except that a row whose padded read (tqv_kspan(K) bytes) would pass the matrix's end is copied, zero-padded, into
 * the tile. Unused slots repeat the tile's first row. */
static inline void tqv_matrix_rows(const int8_t *base, ptrdiff_t ld, int32_t rows, int32_t K, tqv_tile *t) {
    const int8_t *end = base + (ptrdiff_t)(rows - 1) * ld + K;
    const int32_t kpad = tqv_kspan(K);
    int32_t r;
    for (r = 0; r < TQV_MR; r++) {
        const int8_t *p = base + (ptrdiff_t)(t->r0 + (r < t->nr ? r : 0)) * ld;
        if (p + kpad > end) {
            memcpy(t->buf[r], p, (size_t)K);
            memset(t->buf[r] + K, 0, (size_t)(kpad - K));
            p = t->buf[r];
        }
        t->a[r] = p;
        t->rowsum[r] = r < t->nr ? tqv_rowsum(p, K) : 0;
    }
}

/* Two-scale (or sign-split) codes -> two int8 planes, zero-padded to kpad (a multiple of 4, >= n) and on to the next
 * multiple of 64, which covers tqv_kspan (lo and hi have room for it): lo = the fine value (flag 0; a (bits-1)-bit
 * two's complement field when signed_fine), hi = the field of flag-1 codes (the coarse value before its << m, or the
 * negative field of a sign-split code). Returns the two planes' sums. */
static inline void tqv_split_planes(const uint8_t *q, int32_t n, int32_t kpad, int32_t bits, int32_t signed_fine,
                                    int8_t *lo, int8_t *hi, int32_t *sum_lo, int32_t *sum_hi) {
    const __m512i cmask = _mm512_set1_epi8((char)((1 << bits) - 1)), flag = _mm512_set1_epi8((char)(1 << (bits - 1))),
                  fmask = _mm512_set1_epi8((char)((1 << (bits - 1)) - 1)),
                  half = _mm512_set1_epi8((char)(bits >= 2 ? 1 << (bits - 2) : 0)), ones = _mm512_set1_epi8(1);
    __m512i s0 = _mm512_setzero_si512(), s1 = s0;
    int32_t k;
    for (k = 0; k < kpad; k += 64) { /* whole vectors: lo and hi have room past kpad, and past n the planes are 0 */
        const __mmask64 ld = n - k >= 64 ? ~(__mmask64)0 : (n > k ? (((__mmask64)1 << (n - k)) - 1) : 0);
        const __m512i code = _mm512_and_si512(_mm512_maskz_loadu_epi8(ld, q + k), cmask);
        const __mmask64 coarse = _mm512_test_epi8_mask(code, flag);
        __m512i field = _mm512_and_si512(code, fmask), f, c;
        if (signed_fine) field = _mm512_sub_epi8(_mm512_xor_si512(field, half), half);
        f = _mm512_maskz_mov_epi8(~coarse, field);
        c = _mm512_maskz_mov_epi8(coarse, _mm512_and_si512(code, fmask));
        _mm512_storeu_si512((void *)(lo + k), f);
        _mm512_storeu_si512((void *)(hi + k), c);
        s0 = _mm512_dpbusd_epi32(s0, ones, f);
        s1 = _mm512_dpbusd_epi32(s1, ones, c);
    }
    *sum_lo = _mm512_reduce_add_epi32(s0);
    *sum_hi = _mm512_reduce_add_epi32(s1);
}

/* ---- the kernel ----------------------------------------------------------------------------------------------- */

static inline int32_t tqv_ld4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* raw[r][n] = sum over ng groups g of sum_j bp[g][n][j] * a_r[4g + j]: 8 A rows x 32 channels. Never inlined: on its
 * own, the 16 accumulators get registers to themselves (inlined into the driver, gcc spills them). */
static __attribute__((noinline, unused)) void tqv_kernel(const int8_t *const a[TQV_MR], const uint8_t *bp, int32_t ng,
                                                        int32_t raw[TQV_MR][TQV_NR]) {
    const int8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5], *a6 = a[6], *a7 = a[7];
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
            c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    int32_t k;
    for (k = 0; k < 4 * ng; k += 4, bp += 128) {
        const __m512i b0 = _mm512_load_si512((const void *)bp), b1 = _mm512_load_si512((const void *)(bp + 64));
        __m512i x;
#define TQV_ROW(r)                                                                                                     \
    x = _mm512_set1_epi32(tqv_ld4(a##r + k));                                                                          \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, b0, x);                                                                     \
    c##r##1 = _mm512_dpbusd_epi32(c##r##1, b1, x)
        TQV_ROW(0); TQV_ROW(1); TQV_ROW(2); TQV_ROW(3); TQV_ROW(4); TQV_ROW(5); TQV_ROW(6); TQV_ROW(7);
#undef TQV_ROW
    }
#define TQV_STORE(r)                                                                                                   \
    _mm512_storeu_si512((void *)raw[r], c##r##0);                                                                      \
    _mm512_storeu_si512((void *)(raw[r] + 16), c##r##1)
    TQV_STORE(0); TQV_STORE(1); TQV_STORE(2); TQV_STORE(3); TQV_STORE(4); TQV_STORE(5); TQV_STORE(6); TQV_STORE(7);
#undef TQV_STORE
}

/* The same sums for a tile edge: R kernel rows (their pointers a[0..R), sums to o[0..R)) by 16 C channels (C = 1:
 * channels 0..15 only, o[r][16..31] left as they were). The driver takes these where a tile has fewer used rows
 * (65 rows are 8 tiles of 8 and one of 1) or a block 16 channels or fewer: the 8 x 32 kernel would spend most of its
 * vpdpbusd on rows and channels nobody reads. With R <= 2 the k loop keeps two sets of accumulators (even and odd
 * groups) so that the dependency chains do not bound it; sums modulo 2^32 do not depend on the order. */
static inline __attribute__((always_inline)) void tqv_kernel_rc(const int8_t *const *a, const uint8_t *bp, int32_t ng,
                                                                int32_t *const *o, const int R, const int C) {
    __m512i c[2][8][2];
    const int S = R <= 2 ? 2 : 1;
    int32_t k = 0;
    int r, h, s;
    TQV_UNROLL
    for (s = 0; s < 2; s++)
        TQV_UNROLL
        for (r = 0; r < 8; r++) c[s][r][0] = c[s][r][1] = _mm512_setzero_si512();
    for (; k + 4 * S <= 4 * ng; k += 4 * S) {
        TQV_UNROLL
        for (s = 0; s < S; s++) {
            const uint8_t *bs = bp + (size_t)(k / 4 + s) * 128;
            const __m512i b0 = _mm512_load_si512((const void *)bs);
            const __m512i b1 = C == 2 ? _mm512_load_si512((const void *)(bs + 64)) : b0;
            TQV_UNROLL
            for (r = 0; r < R; r++) {
                const __m512i x = _mm512_set1_epi32(tqv_ld4(a[r] + k + 4 * s));
                c[s][r][0] = _mm512_dpbusd_epi32(c[s][r][0], b0, x);
                if (C == 2) c[s][r][1] = _mm512_dpbusd_epi32(c[s][r][1], b1, x);
            }
        }
    }
    if (S == 2 && k < 4 * ng) { /* an odd group count: the last group */
        const uint8_t *bs = bp + (size_t)(k / 4) * 128;
        const __m512i b0 = _mm512_load_si512((const void *)bs);
        const __m512i b1 = C == 2 ? _mm512_load_si512((const void *)(bs + 64)) : b0;
        TQV_UNROLL
        for (r = 0; r < R; r++) {
            const __m512i x = _mm512_set1_epi32(tqv_ld4(a[r] + k));
            c[0][r][0] = _mm512_dpbusd_epi32(c[0][r][0], b0, x);
            if (C == 2) c[0][r][1] = _mm512_dpbusd_epi32(c[0][r][1], b1, x);
        }
    }
    TQV_UNROLL
    for (r = 0; r < R; r++)
        TQV_UNROLL
        for (h = 0; h < C; h++)
            _mm512_storeu_si512((void *)(o[r] + 16 * h),
                                S == 2 ? _mm512_add_epi32(c[0][r][h], c[1][r][h]) : c[0][r][h]);
}

#define TQV_KERNEL_RC(R, C)                                                                                            \
    static __attribute__((noinline, unused)) void tqv_kernel_##R##x##C(const int8_t *const *a, const uint8_t *bp,     \
                                                                       int32_t ng, int32_t *const *o) {               \
        tqv_kernel_rc(a, bp, ng, o, R, C);                                                                             \
    }
TQV_KERNEL_RC(1, 1)
TQV_KERNEL_RC(1, 2)
TQV_KERNEL_RC(2, 1)
TQV_KERNEL_RC(2, 2)
TQV_KERNEL_RC(4, 1)
TQV_KERNEL_RC(4, 2)
TQV_KERNEL_RC(8, 1)
#undef TQV_KERNEL_RC

/* ---- the driver ----------------------------------------------------------------------------------------------- */

typedef struct tqv_gemm tqv_gemm;

/* Fill the tile's kernel rows (unused slots repeat a used one) and their sums over the K (+ extension) values. */
typedef void (*tqv_rows_fn)(const tqv_gemm *g, tqv_tile *t);
/* Write the outputs of the tile's rows for channels n0..n0+nc-1 (nc <= 32) from t->raw. */
typedef void (*tqv_emit_fn)(const tqv_gemm *g, tqv_tile *t, int32_t n0, int32_t nc, const int32_t colsum[TQV_NR]);

struct tqv_gemm {
    const int8_t *b;     /* B, N channels of K values: b[n * ldb + k] (rows) or b[k * ldb + n] (b_cols) */
    ptrdiff_t ldb;
    int b_cols;
    int32_t N, K;
    const int32_t *ext;  /* extension columns of B (rows layout only), appended after K rounded up to 4 */
    int32_t n_ext;
    int32_t M;           /* output rows */
    int planes;          /* kernel rows per output row, 1 or 2 (see tqv_tile) */
    const uint8_t *pre;  /* B prepacked once by tqv_prepack (rows layout), or NULL: packed here */
    int32_t pre_n_ext;   /* how many extension columns (ext's) pre was packed with: pre is read only if n_ext */
    tqv_rows_fn rows;
    tqv_emit_fn emit;
};

/* Kernel groups of 4 k per packed block. */
static inline int32_t tqv_groups(int32_t K, int32_t n_ext) { return (K + 3) / 4 + (n_ext + 3) / 4; }

/* Whether tqv_gemm_run takes a product of this K (extension columns included). */
static inline int tqv_fits(int32_t K, int32_t n_ext) { return K > 0 && 4 * tqv_groups(K, n_ext) <= TQV_MAX_K; }

/* a panel holds at least one block of the longest K */
typedef char tqv_panel_check[TQV_PANEL_BYTES >= TQV_NR * TQV_MAX_K ? 1 : -1];

static inline void tqv_pack_block(const tqv_gemm *g, int32_t n0, int32_t nc, uint8_t *bp, int32_t colsum[TQV_NR]) {
    const int32_t ng_main = (g->K + 3) / 4;
    if (g->b_cols)
        tqv_pack_cols(g->b + n0, g->ldb, nc, g->K, bp);
    else
        tqv_pack_rows(g->b + n0 * g->ldb, g->ldb, nc, g->K, bp);
    if (g->n_ext) tqv_pack_ext(g->b + n0 * g->ldb, g->ldb, nc, g->ext, g->n_ext, bp + (size_t)ng_main * 128);
    tqv_colsum(bp, tqv_groups(g->K, g->n_ext), g->K + g->n_ext, colsum);
}

/* ---- B prepacked once (at prepare time: tsptq_prepare's prepacked region, op_table.h `prepack`) ------------------ */

/* Bytes of one prepacked block of K values and n_ext extension columns: the packed groups (only the VNNI kernel reads
 * prepacked blocks, in every build). */
static inline int64_t tqv_pre_block(int32_t K, int32_t n_ext) { return (int64_t)tqv_groups(K, n_ext) * 128; }

/* Bytes tqv_prepack writes for B of N rows of K int8 values, with n_ext extension columns (0 for a product the
 * drivers do not take): the column sums of every block (32 int32 each), then the blocks, each tqv_pre_block bytes.
 * A multiple of 128. */
#if defined(TQ_SIMD_AMX)
int tq_amx_ready(void); /* amx.c */
#endif
static inline uint64_t tqv_prepack_size(int32_t K, int32_t n_ext, int32_t N) {
    if (!tqv_fits(K, n_ext) || n_ext < 0 || N <= 0) return 0;
#if defined(TQ_SIMD_AMX)
    /* Where the tiles run, the AMX drivers pack B per call as before: a driver reading prepacked blocks on tiles has
     * not been run on an AMX machine yet, so none is taken (only the VNNI fallback of an AMX build reads them). */
    if (tq_amx_ready()) return 0;
#endif
    return (uint64_t)((N + TQV_NR - 1) / TQV_NR) * (uint64_t)(4 * TQV_NR + tqv_pre_block(K, n_ext));
}

/* Pack B (N rows of K int8 values, row stride K; columns ext[0..n_ext) appended) into pre (tqv_prepack_size bytes,
 * 64-byte aligned): for each block the bytes and the column sums tqv_pack_block makes, zero to the block's end. */
static inline void tqv_prepack(const int8_t *b, int32_t K, const int32_t *ext, int32_t n_ext, int32_t N,
                               uint8_t *pre) {
    const int32_t nblocks = (N + TQV_NR - 1) / TQV_NR, ng = tqv_groups(K, n_ext);
    const int64_t block = tqv_pre_block(K, n_ext);
    int32_t *colsum = (int32_t *)(void *)pre;
    uint8_t *bp = pre + (size_t)nblocks * TQV_NR * 4;
    tqv_gemm g;
    int32_t i;
    memset(&g, 0, sizeof g);
    g.b = b;
    g.ldb = K;
    g.N = N;
    g.K = K;
    g.ext = ext;
    g.n_ext = n_ext;
    for (i = 0; i < nblocks; i++) {
        const int32_t c0 = i * TQV_NR;
        uint8_t *bi = bp + (size_t)i * (size_t)block;
        /* (a channel past N packs as 0: its sum, -128 K, is never stored) */
        tqv_pack_block(&g, c0, N - c0 < TQV_NR ? N - c0 : TQV_NR, bi, colsum + c0);
        memset(bi + (size_t)ng * 128, 0, (size_t)(block - (int64_t)ng * 128));
    }
}

/* Whether the product may read B from g->pre: B as rows, with the extension columns pre holds. */
static inline int tqv_pre_ok(const tqv_gemm *g) {
    return g->pre != NULL && !g->b_cols && g->n_ext == g->pre_n_ext;
}

#if defined(TQ_SIMD_AMX)
#include "amx.h"
#endif

/* Stack: the packed panel (64 KB), the tile's rows (about 17 KB) and small arrays. Not inlined, as the AMX driver
 * is not: the two frames are never on the stack together. */
static __attribute__((noinline, unused)) void tqv_gemm_vnni(const tqv_gemm *g) {
    tqv_panel panel;
    uint8_t *const bp = panel.b;
    int32_t colsum[TQV_PANEL_BLOCKS][TQV_NR];
    int32_t raw[TQV_MR][TQV_NR];
    int8_t buf[TQV_MR][TQV_ROW_BYTES] __attribute__((aligned(64)));
    tqv_tile t;
    const int32_t ng = tqv_groups(g->K, g->n_ext), block = ng * 128, tile_rows = TQV_MR / g->planes;
    const int32_t per_panel = TQV_PANEL_BYTES / block < TQV_PANEL_BLOCKS ? TQV_PANEL_BYTES / block : TQV_PANEL_BLOCKS;
    const int pre = tqv_pre_ok(g);
    /* prepacked: the blocks in place (stride tqv_pre_block), their column sums before them */
    const int32_t *pre_sum = pre ? (const int32_t *)(const void *)g->pre : NULL;
    const uint8_t *pre_bp = pre ? g->pre + (size_t)((g->N + TQV_NR - 1) / TQV_NR) * TQV_NR * 4 : NULL;
    const size_t stride = pre ? (size_t)tqv_pre_block(g->K, g->n_ext) : (size_t)block;
    int32_t n0, i;
    memset(raw, 0, sizeof raw); /* the edge kernels leave rows and channels nobody reads: never indeterminate */
    t.raw = raw;
    t.buf = buf;
    /* the requantization cache in the panel's last bytes where no block takes them (none does where B is prepacked):
     * no stack of its own */
    t.rqc = pre || (size_t)per_panel * (size_t)block <= sizeof panel.s.head ? &panel.s.tail : NULL;
    t.bp = NULL;
    if (t.rqc) tqv_rqc_reset(t.rqc);
    for (n0 = 0; n0 < g->N; n0 += per_panel * TQV_NR) {
        const int32_t left = (g->N - n0 + TQV_NR - 1) / TQV_NR, nb = left < per_panel ? left : per_panel;
        const uint8_t *panel = pre ? pre_bp + (size_t)(n0 / TQV_NR) * stride : bp;
        if (!pre)
            for (i = 0; i < nb; i++) {
                const int32_t c0 = n0 + i * TQV_NR;
                tqv_pack_block(g, c0, g->N - c0 < TQV_NR ? g->N - c0 : TQV_NR, bp + (size_t)i * block, colsum[i]);
            }
        for (t.r0 = 0; t.r0 < g->M; t.r0 += tile_rows) {
            const int8_t *ap[TQV_MR];
            int32_t *op[TQV_MR], R, j;
            t.nr = g->M - t.r0 < tile_rows ? g->M - t.r0 : tile_rows;
            g->rows(g, &t);
            /* the kernel rows in use: r < nr (and TQV_MR / 2 + r with two planes), R of them rounded up to 1, 2, 4, 8 */
            R = g->planes * t.nr;
            R = R <= 1 ? 1 : R <= 2 ? 2 : R <= 4 ? 4 : TQV_MR;
            for (j = 0; j < R; j++) {
                const int32_t slot = R == TQV_MR || g->planes == 1 ? j : j < R / 2 ? j : TQV_MR / 2 + j - R / 2;
                ap[j] = t.a[slot];
                op[j] = t.raw[slot];
            }
            for (i = 0; i < nb; i++) {
                const int32_t c0 = n0 + i * TQV_NR, nc = g->N - c0 < TQV_NR ? g->N - c0 : TQV_NR;
                const uint8_t *bpi = panel + (size_t)i * stride;
                if (nc > 16) {
                    if (R == TQV_MR) tqv_kernel(t.a, bpi, ng, t.raw);
                    else if (R == 4) tqv_kernel_4x2(ap, bpi, ng, op);
                    else if (R == 2) tqv_kernel_2x2(ap, bpi, ng, op);
                    else tqv_kernel_1x2(ap, bpi, ng, op);
                } else {
                    if (R == TQV_MR) tqv_kernel_8x1(ap, bpi, ng, op);
                    else if (R == 4) tqv_kernel_4x1(ap, bpi, ng, op);
                    else if (R == 2) tqv_kernel_2x1(ap, bpi, ng, op);
                    else tqv_kernel_1x1(ap, bpi, ng, op);
                }
                t.bp = bpi;
                g->emit(g, &t, c0, nc, pre ? pre_sum + c0 : colsum[i]);
            }
        }
    }
}

/* Whether tqv_gemm_run would run a product of M output rows (planes kernel rows each) on AMX tiles. */
static inline int tqv_amx_takes(int32_t M, int planes) {
#if defined(TQ_SIMD_AMX)
    return tqa_takes(M, planes);
#else
    (void)M, (void)planes;
    return 0;
#endif
}

/* The product: on AMX tiles where the build and the machine have them, else with vpdpbusd. */
static inline void tqv_gemm_run(const tqv_gemm *g) {
#if defined(TQ_SIMD_AMX)
    if (tqa_gemm_run(g)) return;
#endif
    tqv_gemm_vnni(g);
}

/* ---- epilogues ------------------------------------------------------------------------------------------------ */

/* How a kernel requantizes: per-channel parameters (indexed by output channel) or one value for all channels. */
typedef struct {
    const int32_t *bias;         /* per channel, or NULL */
    const int32_t *mult, *shift; /* per channel, or NULL: mult0, shift0 for every channel */
    int32_t mult0, shift0;
    int how;                     /* TQV_REQUANT1, TQV_MBQM, TQV_MBQM1 */
    int32_t zp;
} tqv_requant;

/* colterm[n] = c0 + coef * colsum[n] (modulo 2^32): the zero-point terms that depend on the channel only. */
static inline void tqv_colterm(const int32_t colsum[TQV_NR], int32_t coef, int32_t c0, int32_t colterm[TQV_NR]) {
    int h;
    for (h = 0; h < 2; h++)
        _mm512_storeu_si512((void *)(colterm + 16 * h),
                            _mm512_add_epi32(_mm512_set1_epi32(c0),
                                             _mm512_mullo_epi32(_mm512_loadu_si512((const void *)(colsum + 16 * h)),
                                                                _mm512_set1_epi32(coef))));
}

/* y[r][n0 + n] = sat8(requantize(acc + bias) + zp) with acc = raw[r][n] - rowk * rowsum[r] + colterm[n] (int32,
 * modulo 2^32), for r < nr, n < nc; y points at row 0, channel 0 of the tile, ldy is its row stride. */
static inline void tqv_emit(int32_t raw[][TQV_NR], const int32_t *rowsum, int32_t nr, int32_t rowk,
                            const int32_t colterm[TQV_NR], int32_t n0, int32_t nc, const tqv_requant *q, int8_t *y,
                            ptrdiff_t ldy, tqv_rqc *cache) {
    int32_t h, r, rkv[TQV_MR];
    /* rowk * rowsum[r] of each row (nr <= TQV_MR: a tile's), read as a broadcast from memory by the loops below */
    for (r = 0; r < nr; r++) rkv[r] = (int32_t)((uint32_t)rowsum[r] * (uint32_t)rowk);
    for (h = 0; h < 2; h++) {
        const int32_t c = n0 + 16 * h;
        const __mmask16 m = tqv_lanes(nc - 16 * h);
        __m512i ct;
        tqv_rqs local, *sp = &local;
        tqv_rq16 rq;
        int fresh = 1, ok = 0;
        if (!m) continue;
        ct = _mm512_loadu_si512((const void *)(colterm + 16 * h));
        if (cache) {
            const int32_t i = (c / 16) % TQV_RQC;
            sp = &cache->rq[i];
            fresh = cache->key[i] != (const void *)q || cache->c[i] != c || cache->m[i] != m;
            if (!fresh) ok = cache->ok[i];
        }
        if (fresh) {
            ok = tqv_rqs_prepare(sp, q->how, tqv_param(q->bias ? q->bias + c : NULL, m, 0),
                                 tqv_param(q->mult ? q->mult + c : NULL, m, q->mult0),
                                 tqv_param(q->shift ? q->shift + c : NULL, m, q->shift0), q->zp, m);
            if (cache) {
                const int32_t i = (c / 16) % TQV_RQC;
                cache->key[i] = (const void *)q;
                cache->c[i] = c;
                cache->m[i] = m;
                cache->ok[i] = ok;
            }
        }
/* STORE: a whole 16 bytes where every lane is in use (a masked byte store costs more on some cores) */
#define TQV_EMIT_ROWS(apply, q, STORE)                                                                                 \
    for (r = 0; r < nr; r++) {                                                                                         \
        const __m512i rk = _mm512_set1_epi32((int32_t)((uint32_t)rowsum[r] * (uint32_t)rowk));                        \
        const __m512i raw16 = _mm512_loadu_si512((const void *)(raw[r] + 16 * h));                                     \
        STORE(y + r * ldy + 16 * h, apply(q, _mm512_add_epi32(_mm512_sub_epi32(raw16, rk), ct)));                     \
    }
#define TQV_STORE_ALL(p, v) _mm_storeu_si128((__m128i *)(void *)(p), v)
#define TQV_STORE_SOME(p, v) _mm_mask_storeu_epi8(p, m, v)
/* the shortest form, one loop per narrowing (wide or not) and store */
#define TQV_EMIT_SHORT(WIDE, STORE)                                                                                    \
    for (r = 0; r < nr; r++) {                                                                                         \
        const __m512i raw16 = _mm512_loadu_si512((const void *)(raw[r] + 16 * h));                                     \
        STORE(y + r * ldy + 16 * h,                                                                                    \
              tqv_rqs_apply_k(&s, _mm512_add_epi32(_mm512_sub_epi32(raw16, _mm512_set1_epi32(rkv[r])), ct), WIDE));   \
    }
        if (ok) {
            const tqv_rqs s = *sp;
            if (m == (__mmask16)0xFFFF && !s.wide) {
                TQV_EMIT_SHORT(0, TQV_STORE_ALL)
            } else if (m == (__mmask16)0xFFFF) {
                TQV_EMIT_SHORT(1, TQV_STORE_ALL)
            } else if (!s.wide) {
                TQV_EMIT_SHORT(0, TQV_STORE_SOME)
            } else {
                TQV_EMIT_SHORT(1, TQV_STORE_SOME)
            }
            continue;
        }
#undef TQV_EMIT_SHORT
        tqv_rq_prepare(&rq, q->how, tqv_param(q->bias ? q->bias + c : NULL, m, 0),
                       tqv_param(q->mult ? q->mult + c : NULL, m, q->mult0),
                       tqv_param(q->shift ? q->shift + c : NULL, m, q->shift0), q->zp, m);
        if (rq.fast && m == (__mmask16)0xFFFF) { /* one loop per form: the branches stay out of the loop */
            TQV_EMIT_ROWS(tqv_rq_apply_fast, &rq, TQV_STORE_ALL)
        } else if (rq.fast) {
            TQV_EMIT_ROWS(tqv_rq_apply_fast, &rq, TQV_STORE_SOME)
        } else {
            TQV_EMIT_ROWS(tqv_rq_apply, &rq, TQV_STORE_SOME)
        }
#undef TQV_EMIT_ROWS
#undef TQV_STORE_ALL
#undef TQV_STORE_SOME
    }
}

/* The exact dot products of two-plane rows, acc[r] = (raw_lo - 128 sum_lo) + ((raw_hi - 128 sum_hi) << m), and the
 * decoded rows' sums sum_lo + (sum_hi << m). */
static inline void tqv_combine_planes(const tqv_tile *t, int32_t m, int32_t acc[TQV_MR / 2][TQV_NR],
                                      int32_t sum[TQV_MR / 2]) {
    const int32_t half = TQV_MR / 2;
    const __m128i sh = _mm_cvtsi32_si128(m);
    int32_t r, h;
    for (r = 0; r < t->nr; r++) {
        const __m512i k_lo = _mm512_set1_epi32((int32_t)((uint32_t)t->rowsum[r] << 7)),
                      k_hi = _mm512_set1_epi32((int32_t)((uint32_t)t->rowsum[half + r] << 7));
        for (h = 0; h < 2; h++) {
            const __m512i lo = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(t->raw[r] + 16 * h)), k_lo),
                          hi = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(t->raw[half + r] + 16 * h)), k_hi);
            _mm512_storeu_si512((void *)(acc[r] + 16 * h), _mm512_add_epi32(lo, _mm512_sll_epi32(hi, sh)));
        }
        sum[r] = (int32_t)((uint32_t)t->rowsum[r] + ((uint32_t)t->rowsum[half + r] << m));
    }
}

/* Two-scale codes with few coarse ones (a GELU's or a softmax's outputs, a few percent coarse) without the coarse
 * plane's kernel rows: the fine plane is A (one kernel row per output row: planes = 1, twice the rows of a two-plane
 * tile), and emit sums the coarse plane's products itself from the packed block (t->bp, the VNNI driver's) over the
 * 4-byte groups that hold a coarse code. The groups it skips are 0 in the coarse plane and add 0 to the dense sums,
 * so the sums are the two-plane kernel's (int32, modulo 2^32). Taken when every row has at most TQV_SPARSE_CAP such
 * groups (tqv_sparse_fits), with tqv_gemm_vnni (AMX tiles have no packed block for emit). */
#define TQV_SPARSE_CAP 64
typedef struct {
    int32_t n[TQV_MR];                 /* the row's groups with a coarse code */
    int32_t g[TQV_MR][TQV_SPARSE_CAP]; /* their index (k / 4) */
    int32_t v[TQV_MR][TQV_SPARSE_CAP]; /* their 4 coarse plane bytes (the fields of the coarse codes, else 0) */
    int32_t sum[TQV_MR];               /* the row's coarse plane sum */
} tqv_sparse;

/* Whether every row of the code matrix q (rows rows of n codes, stride ld) has at most TQV_SPARSE_CAP groups of 4
 * codes with a coarse one (flag bit 1 << (bits - 1)). */
static inline int tqv_sparse_fits(const uint8_t *q, ptrdiff_t ld, int64_t rows, int32_t n, int32_t bits) {
    const __m512i flag = _mm512_set1_epi8((char)(1 << (bits - 1)));
    int64_t r;
    int32_t k;
    for (r = 0; r < rows; r++) {
        const uint8_t *qr = q + r * ld;
        int32_t cnt = 0;
        for (k = 0; k < n; k += 64) { /* bytes past n load as 0 */
            const __mmask64 m = n - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - k)) - 1);
            cnt += __builtin_popcount((unsigned)_mm512_test_epi32_mask(_mm512_maskz_loadu_epi8(m, qr + k), flag));
        }
        if (cnt > TQV_SPARSE_CAP) return 0;
    }
    return 1;
}

/* The tile's kernel rows (the fine planes, as tqv_split_planes makes them) and, into sp, the coarse planes' nonzero
 * groups: the coarse plane is formed only for the 64 codes that hold a coarse one. */
static inline void tqv_sparse_rows(const uint8_t *q, ptrdiff_t ld, int32_t n, int32_t bits, int32_t signed_fine,
                                   tqv_sparse *sp, tqv_tile *t) {
    const __m512i cmask = _mm512_set1_epi8((char)((1 << bits) - 1)), flag = _mm512_set1_epi8((char)(1 << (bits - 1))),
                  fmask = _mm512_set1_epi8((char)((1 << (bits - 1)) - 1)),
                  half = _mm512_set1_epi8((char)(bits >= 2 ? 1 << (bits - 2) : 0)), ones = _mm512_set1_epi8(1);
    const int32_t kpad = (n + 3) & ~3;
    int32_t r, k;
    for (r = 0; r < TQV_MR; r++) {
        const uint8_t *qr = q + (ptrdiff_t)(t->r0 + r) * ld;
        int8_t *lo = t->buf[r];
        __m512i s_lo = _mm512_setzero_si512(), s_hi = s_lo;
        int32_t cnt = 0;
        if (r >= t->nr) {
            t->a[r] = t->a[0];
            t->rowsum[r] = 0;
            sp->n[r] = 0;
            continue;
        }
        for (k = 0; k < kpad; k += 64) { /* whole vectors: lo has room, and past n the planes are 0 */
            const __mmask64 m = n - k >= 64 ? ~(__mmask64)0 : (n > k ? (((__mmask64)1 << (n - k)) - 1) : 0);
            const __m512i code = _mm512_and_si512(_mm512_maskz_loadu_epi8(m, qr + k), cmask);
            const __mmask64 coarse = _mm512_test_epi8_mask(code, flag);
            __m512i field = _mm512_and_si512(code, fmask), f;
            if (signed_fine) field = _mm512_sub_epi8(_mm512_xor_si512(field, half), half);
            f = _mm512_maskz_mov_epi8(~coarse, field);
            _mm512_storeu_si512((void *)(lo + k), f);
            s_lo = _mm512_dpbusd_epi32(s_lo, ones, f);
            if (coarse) {
                int32_t v[16];
                const __m512i c = _mm512_maskz_mov_epi8(coarse, _mm512_and_si512(code, fmask));
                unsigned gm = (unsigned)_mm512_test_epi32_mask(c, c);
                s_hi = _mm512_dpbusd_epi32(s_hi, ones, c);
                _mm512_storeu_si512((void *)v, c);
                while (gm) { /* at most TQV_SPARSE_CAP in all (tqv_sparse_fits) */
                    const int32_t j = __builtin_ctz(gm);
                    sp->g[r][cnt] = k / 4 + j;
                    sp->v[r][cnt] = v[j];
                    cnt++;
                    gm &= gm - 1;
                }
            }
        }
        t->a[r] = lo;
        t->rowsum[r] = _mm512_reduce_add_epi32(s_lo);
        sp->sum[r] = _mm512_reduce_add_epi32(s_hi);
        sp->n[r] = cnt;
    }
}

/* As tqv_combine_planes, for the tile's nr rows: acc[r] = (raw - 128 sum_fine) + ((coarse - 128 sum_coarse) << m) with
 * the coarse plane's raw sums for the block's 32 channels (vpdpbusd of its nonzero groups against t->bp, two chains
 * a half), and the decoded rows' sums. */
static inline void tqv_sparse_combine(const tqv_sparse *sp, const tqv_tile *t, int32_t m, int32_t acc[][TQV_NR],
                                      int32_t *sum) {
    const __m128i sh = _mm_cvtsi32_si128(m);
    int32_t r, j, h;
    for (r = 0; r < t->nr; r++) {
        __m512i c0 = _mm512_setzero_si512(), c1 = c0, d0 = c0, d1 = c0;
        const __m512i k_lo = _mm512_set1_epi32((int32_t)((uint32_t)t->rowsum[r] << 7)),
                      k_hi = _mm512_set1_epi32((int32_t)((uint32_t)sp->sum[r] << 7));
        for (j = 0; j + 2 <= sp->n[r]; j += 2) {
            const uint8_t *b0 = t->bp + (size_t)sp->g[r][j] * 128, *b1 = t->bp + (size_t)sp->g[r][j + 1] * 128;
            const __m512i x0 = _mm512_set1_epi32(sp->v[r][j]), x1 = _mm512_set1_epi32(sp->v[r][j + 1]);
            c0 = _mm512_dpbusd_epi32(c0, _mm512_load_si512((const void *)b0), x0);
            c1 = _mm512_dpbusd_epi32(c1, _mm512_load_si512((const void *)(b0 + 64)), x0);
            d0 = _mm512_dpbusd_epi32(d0, _mm512_load_si512((const void *)b1), x1);
            d1 = _mm512_dpbusd_epi32(d1, _mm512_load_si512((const void *)(b1 + 64)), x1);
        }
        if (j < sp->n[r]) {
            const uint8_t *b0 = t->bp + (size_t)sp->g[r][j] * 128;
            const __m512i x0 = _mm512_set1_epi32(sp->v[r][j]);
            c0 = _mm512_dpbusd_epi32(c0, _mm512_load_si512((const void *)b0), x0);
            c1 = _mm512_dpbusd_epi32(c1, _mm512_load_si512((const void *)(b0 + 64)), x0);
        }
        c0 = _mm512_add_epi32(c0, d0);
        c1 = _mm512_add_epi32(c1, d1);
        for (h = 0; h < 2; h++) {
            const __m512i lo = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(t->raw[r] + 16 * h)), k_lo),
                          hi = _mm512_sub_epi32(h ? c1 : c0, k_hi);
            _mm512_storeu_si512((void *)(acc[r] + 16 * h), _mm512_add_epi32(lo, _mm512_sll_epi32(hi, sh)));
        }
        sum[r] = (int32_t)((uint32_t)t->rowsum[r] + ((uint32_t)sp->sum[r] << m));
    }
}

/* Two-plane kernel rows from a code matrix q (row stride ld, n codes a row): tqv_split_planes of each row. */
static inline void tqv_plane_rows(const uint8_t *q, ptrdiff_t ld, int32_t n, int32_t bits, int32_t signed_fine,
                                  tqv_tile *t) {
    const int32_t half = TQV_MR / 2, kpad = (n + 3) & ~3;
    int32_t r;
    for (r = 0; r < half; r++) {
        if (r < t->nr) {
            tqv_split_planes(q + (ptrdiff_t)(t->r0 + r) * ld, n, kpad, bits, signed_fine, t->buf[r], t->buf[half + r],
                             &t->rowsum[r], &t->rowsum[half + r]);
            t->a[r] = t->buf[r];
            t->a[half + r] = t->buf[half + r];
        } else {
            t->a[r] = t->a[0];
            t->a[half + r] = t->a[half];
            t->rowsum[r] = t->rowsum[half + r] = 0;
        }
    }
}
#endif
