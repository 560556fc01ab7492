/* TSPTQ_FC_2S (docs/integer-semantics.md; tsptq.intmodel.kernels.fc_2s): a fully connected layer over a decoded input code,
 * single-rounding per-channel requantization. Each row is decoded once into scratch (4 * I bytes): int32 values on
 * the reference path, int16 values (and, for sign-split, the positive and negative fields as two int16 halves) on the
 * SIMD paths, which fall back to the reference for a row whose decoded values do not fit an int16. With AVX-512
 * VNNI, the blocked products of vnni.h take the whole layer (fc2s_vnni; on AMX tiles in an AMX build, amx.h) and the
 * scratch is not used. On Arm, the DSP path (fc2s_dsp) and the Helium one (fc2s_mve, int8 codes read in place where
 * the code is affine) take it two rows at a time. */
#include <string.h>

#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"
#include "op_util.h"

/* Decoded operand d of code byte q (not sign-split): real = unit_in * d. */
static inline int32_t decode_in(uint8_t q, int32_t kind, int32_t in_zp, int32_t sh, int32_t bits, int32_t m,
                                int32_t signed_fine) {
    if (kind == TQ_UNIFORM) return (int32_t)(int8_t)q - in_zp;
    if (kind == TQ_CHANNEL_POW2) return (int32_t)tq_shl64((int64_t)(int8_t)q - in_zp, sh);
    return tq_decode_two_scale(q, bits, m, signed_fine);
}

static inline int8_t fc2s_out(int64_t acc, int32_t o, const int32_t *bias, const int32_t *out_mult,
                              const int32_t *out_shift, int32_t out_zp) {
    return tq_sat8(tq_requant1(acc + bias[o], out_mult[o], out_shift[o]) + out_zp);
}

static inline int64_t split_acc(int32_t pos, int32_t neg, int32_t neg_mult, int32_t neg_shift) {
    return (int64_t)pos - tq_requant1(neg, neg_mult, neg_shift);
}

static void fc_2s_row_ref(const uint8_t *xr, int32_t I, int32_t in_kind, int32_t in_zp, const int8_t *in_shift,
                          int32_t bits, int32_t m, int32_t signed_fine, int32_t neg_mult, int32_t neg_shift,
                          const int8_t *w, int32_t O, const int32_t *bias, const int32_t *out_mult,
                          const int32_t *out_shift, int32_t out_zp, int8_t *yr, int32_t *d) {
    int32_t i, o;
    if (in_kind == TQ_SIGN_SPLIT) {
        const int32_t fmask = (1 << (bits - 1)) - 1;
        for (o = 0; o < O; o++) {
            const int8_t *wo = w + (ptrdiff_t)o * I;
            int32_t pos = 0, neg = 0;
            for (i = 0; i < I; i++) {
                const int32_t field = xr[i] & fmask;
                if ((xr[i] >> (bits - 1)) & 1)
                    neg += field * wo[i];
                else
                    pos += field * wo[i];
            }
            yr[o] = fc2s_out(split_acc(pos, neg, neg_mult, neg_shift), o, bias, out_mult, out_shift, out_zp);
        }
        return;
    }
    for (i = 0; i < I; i++) d[i] = decode_in(xr[i], in_kind, in_zp, in_shift ? in_shift[i] : 0, bits, m, signed_fine);
    for (o = 0; o < O; o++)
        yr[o] = fc2s_out(tq_dot_s32s8_ref(d, w + (ptrdiff_t)o * I, I), o, bias, out_mult, out_shift, out_zp);
}

#if defined(TQ_SIMD_VNNI)
/* The AVX-512 VNNI (and AMX) path: x's rows are A (as they are for a uniform code; for channel_pow2, with each
 * shifted channel repeated 2^shift times, or as two planes of q << shift; as two planes, fine and coarse or positive
 * and negative, for two_scale and sign_split), w's rows are B. */
#define FC2S_MAX_EXT 1024
#define FC2S_MAX_POW2_O 4096 /* channel_pow2 as planes: the weighted column sums on the stack */

enum { FC2S_RAW, FC2S_EXT, FC2S_PLANES, FC2S_POW2, FC2S_SPARSE };

/* FC2S_SPARSE: two_scale with few coarse codes (the outputs of a GELU, about 5% coarse), vnni.h's tqv_sparse: the
 * fine plane is A, one kernel row per output row, and emit adds the coarse plane's products. */

typedef struct {
    tqv_gemm g;
    const uint8_t *x;
    int mode;
    int32_t in_kind, in_zp, bits, m, signed_fine, neg_mult, neg_shift;
    const int8_t *in_shift;
    const int32_t *w2; /* FC2S_POW2: sum_i 2^shift_i w[o][i] per output channel */
    tqv_sparse *sp;    /* FC2S_SPARSE: the tile's coarse groups (rows writes, emit reads) */
    tqv_requant q;
    int8_t *y;
} fc2s_vnni_op;

/* FC2S_SPARSE outputs. */
static void fc2s_sparse_emit(const fc2s_vnni_op *f, tqv_tile *t, int32_t n0, int32_t nc, int8_t *y) {
    int32_t acc[TQV_MR][TQV_NR], sum[TQV_MR], colterm[TQV_NR];
    memset(colterm, 0, sizeof colterm);
    tqv_sparse_combine(f->sp, t, f->m, acc, sum);
    tqv_emit(acc, sum, t->nr, 0, colterm, n0, nc, &f->q, y, f->g.N, t->rqc);
}

/* channel_pow2 as two planes (FC2S_POW2): d_i = (q_i - zp) << s_i = v_i - (zp << s_i) with v_i = q_i << s_i, and
 * |v_i| <= 128 << 7 splits into int8 planes v_i = lo_i + (hi_i << 7), lo_i = v_i & 127 (0..127), hi_i = v_i >> 7
 * (-128..127). So sum_i d_i w_i = (planes' sums, combined with m = 7) - zp * sum_i 2^s_i w_i, the last a constant of
 * the output channel (w2, computed once per call). Taken instead of the repeated channels when an AMX product runs
 * (it reads w in place, so it cannot append columns to it) or when the repeated channels do not fit. */
static void fc2s_pow2_rows(const fc2s_vnni_op *f, tqv_tile *t) {
    const int32_t half = TQV_MR / 2, I = f->g.K, n = tqv_kspan(I);
    int32_t r, k;
    for (r = 0; r < half; r++) {
        const int8_t *xr = (const int8_t *)f->x + (ptrdiff_t)(t->r0 + r) * I;
        __m512i s_lo = _mm512_setzero_si512(), s_hi = s_lo;
        if (r >= t->nr) {
            t->a[r] = t->a[0];
            t->a[half + r] = t->a[half];
            t->rowsum[r] = t->rowsum[half + r] = 0;
            continue;
        }
        for (k = 0; k < n; k += 32) { /* past I the masked loads give 0: both planes zero up to the read span */
            const __mmask32 m = I - k >= 32 ? ~(__mmask32)0 : I > k ? (((__mmask32)1 << (I - k)) - 1) : 0;
            const __m512i sh = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, f->in_shift + k));
            const __m512i v = _mm512_sllv_epi16(_mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, xr + k)), sh);
            const __m512i lo = _mm512_and_si512(v, _mm512_set1_epi16(127)), hi = _mm512_srai_epi16(v, 7);
            _mm256_storeu_si256((__m256i *)(void *)(t->buf[r] + k), _mm512_cvtepi16_epi8(lo));
            _mm256_storeu_si256((__m256i *)(void *)(t->buf[half + r] + k), _mm512_cvtepi16_epi8(hi));
            s_lo = _mm512_add_epi32(s_lo, _mm512_madd_epi16(lo, _mm512_set1_epi16(1)));
            s_hi = _mm512_add_epi32(s_hi, _mm512_madd_epi16(hi, _mm512_set1_epi16(1)));
        }
        t->a[r] = t->buf[r];
        t->a[half + r] = t->buf[half + r];
        t->rowsum[r] = _mm512_reduce_add_epi32(s_lo);
        t->rowsum[half + r] = _mm512_reduce_add_epi32(s_hi);
    }
}

/* w2[o] = sum_i 2^s_i w[o][i]: vpdpbusd of the powers (unsigned bytes, 1..128) by the weights; exact in int32, as
 * prepare's accumulator bound (sum_i |w[o][i]| * 255 << s_i < 2^31) bounds it. */
static void fc2s_pow2_w2(const int8_t *w, int32_t I, int32_t O, const int8_t *in_shift, int32_t *w2) {
    uint8_t pw[TQV_MAX_K + 64];
    int32_t i, o;
    for (i = 0; i < I; i++) pw[i] = (uint8_t)(1u << in_shift[i]);
    for (o = 0; o < O; o++) {
        const int8_t *wo = w + (ptrdiff_t)o * I;
        __m512i sum = _mm512_setzero_si512();
        for (i = 0; i < I; i += 64) {
            const __mmask64 m = I - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (I - i)) - 1);
            sum = _mm512_dpbusd_epi32(sum, _mm512_maskz_loadu_epi8(m, pw + i), _mm512_maskz_loadu_epi8(m, wo + i));
        }
        w2[o] = _mm512_reduce_add_epi32(sum);
    }
}

/* channel_pow2: channel i, shifted by s, becomes 2^s copies of itself (the first in place, the others appended). */
static int32_t fc2s_ext_columns(const int8_t *in_shift, int32_t I, int32_t *ext) {
    int32_t i, n = 0, j;
    for (i = 0; i < I; i++) {
        const int32_t s = in_shift ? in_shift[i] : 0;
        if (s < 0 || s > 10 || n + (1 << s) - 1 > FC2S_MAX_EXT) return -1;
        for (j = 1; j < (1 << s); j++) ext[n++] = i;
    }
    return n;
}

static void fc2s_ext_rows(const fc2s_vnni_op *f, tqv_tile *t) {
    const int32_t I = f->g.K, kpad = (I + 3) & ~3, n = tqv_kspan(kpad + ((f->g.n_ext + 3) & ~3));
    int32_t r, e;
    for (r = 0; r < TQV_MR; r++) {
        const int8_t *xr = (const int8_t *)f->x + (ptrdiff_t)(t->r0 + r) * I;
        int8_t *ar = t->buf[r];
        __m512i sum = _mm512_setzero_si512();
        int32_t k, ext_sum = 0;
        if (r >= t->nr) {
            t->a[r] = t->a[0];
            t->rowsum[r] = 0;
            continue;
        }
        /* the row, zero to a whole vector past n (ar has room: TQV_ROW_BYTES), then the extension columns */
        for (k = 0; k < n; k += 64) {
            const __mmask64 m = I - k >= 64 ? ~(__mmask64)0 : I > k ? (((__mmask64)1 << (I - k)) - 1) : 0;
            const __m512i v = _mm512_maskz_loadu_epi8(m, xr + k);
            _mm512_storeu_si512((void *)(ar + k), v);
            sum = _mm512_dpbusd_epi32(sum, _mm512_set1_epi8(1), v);
        }
        for (e = 0; e < f->g.n_ext; e++) {
            ar[kpad + e] = xr[f->g.ext[e]];
            ext_sum += xr[f->g.ext[e]];
        }
        t->a[r] = ar;
        t->rowsum[r] = _mm512_reduce_add_epi32(sum) + ext_sum;
    }
}

static void fc2s_vnni_rows(const tqv_gemm *g, tqv_tile *t) {
    const fc2s_vnni_op *f = (const fc2s_vnni_op *)(const void *)g;
    if (f->mode == FC2S_RAW)
        tqv_matrix_rows((const int8_t *)f->x, g->K, g->M, g->K, t);
    else if (f->mode == FC2S_EXT)
        fc2s_ext_rows(f, t);
    else if (f->mode == FC2S_POW2)
        fc2s_pow2_rows(f, t);
    else if (f->mode == FC2S_SPARSE)
        tqv_sparse_rows(f->x, g->K, g->K, f->bits, f->signed_fine, f->sp, t);
    else
        tqv_plane_rows(f->x, g->K, g->K, f->bits, f->in_kind == TQ_TWO_SCALE && f->signed_fine, t);
}

/* sign_split: acc = pos - requant1(neg, neg_mult, neg_shift), both exact int32 sums (the two planes), then the
 * usual requant1. */
static void fc2s_emit_sign_split(const fc2s_vnni_op *f, const tqv_tile *t, int32_t n0, int32_t nc) {
    const int32_t half = TQV_MR / 2;
    const __m512i nm = _mm512_set1_epi64(f->neg_mult), ns = _mm512_set1_epi64(f->neg_shift);
    int32_t r, h, part;
    for (r = 0; r < t->nr; r++) {
        const __m512i k_pos = _mm512_set1_epi32((int32_t)((uint32_t)t->rowsum[r] << 7)),
                      k_neg = _mm512_set1_epi32((int32_t)((uint32_t)t->rowsum[half + r] << 7));
        for (h = 0; h < 2; h++) {
            const int32_t c = n0 + 16 * h;
            const __mmask16 m = tqv_lanes(nc - 16 * h);
            __m512i pos, neg, bias, mult, shift;
            __m128i out[2];
            if (!m) continue;
            pos = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(t->raw[r] + 16 * h)), k_pos);
            neg = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(t->raw[half + r] + 16 * h)), k_neg);
            bias = tqv_param(f->q.bias ? f->q.bias + c : NULL, m, 0);
            mult = _mm512_maskz_loadu_epi32(m, f->q.mult + c);
            shift = _mm512_maskz_loadu_epi32(m, f->q.shift + c);
            for (part = 0; part < 2; part++) {
                __m512i (*const half64)(__m512i) = part ? tqv_hi64 : tqv_lo64;
                const __m512i acc = _mm512_sub_epi64(half64(pos), tqv_requant1(half64(neg), nm, ns));
                out[part] = tqv_out8(_mm512_add_epi64(acc, half64(bias)), half64(mult), half64(shift), TQV_REQUANT1,
                                     f->q.zp);
            }
            _mm_mask_storeu_epi8(f->y + (ptrdiff_t)(t->r0 + r) * f->g.N + c, m, _mm_unpacklo_epi64(out[0], out[1]));
        }
    }
}

static void fc2s_vnni_emit(const tqv_gemm *g, tqv_tile *t, int32_t n0, int32_t nc, const int32_t colsum[TQV_NR]) {
    const fc2s_vnni_op *f = (const fc2s_vnni_op *)(const void *)g;
    int8_t *y = f->y + (ptrdiff_t)t->r0 * g->N + n0;
    int32_t colterm[TQV_NR];
    if (f->mode == FC2S_SPARSE) {
        fc2s_sparse_emit(f, t, n0, nc, y);
    } else if (f->mode == FC2S_POW2) {
        int32_t acc[TQV_MR / 2][TQV_NR], sum[TQV_MR / 2], w2[TQV_NR] = {0}, c;
        for (c = 0; c < nc; c++) w2[c] = f->w2[n0 + c];
        tqv_colterm(w2, (int32_t)(0u - (uint32_t)f->in_zp), 0, colterm);
        tqv_combine_planes(t, 7, acc, sum);
        tqv_emit(acc, sum, t->nr, 0, colterm, n0, nc, &f->q, y, g->N, t->rqc);
    } else if (f->mode != FC2S_PLANES) {
        tqv_colterm(colsum, (int32_t)(0u - (uint32_t)f->in_zp), 0, colterm);
        tqv_emit(t->raw, t->rowsum, t->nr, 128, colterm, n0, nc, &f->q, y, g->N, t->rqc);
    } else if (f->in_kind == TQ_TWO_SCALE) {
        int32_t acc[TQV_MR / 2][TQV_NR], sum[TQV_MR / 2];
        memset(colterm, 0, sizeof colterm);
        tqv_combine_planes(t, f->m, acc, sum);
        tqv_emit(acc, sum, t->nr, 0, colterm, n0, nc, &f->q, y, g->N, t->rqc);
    } else {
        fc2s_emit_sign_split(f, t, n0, nc);
    }
}

/* How many of a channel_pow2 code's n shifted-channel columns (fc2s_ext_columns) the prepacked weights hold: all,
 * where the VNNI product appends them (FC2S_EXT; the AMX tiles, which take such a product as two planes, never read
 * prepacked weights: where they run, none are made, vnni.h tqv_prepack_size); else 0. */
static int32_t fc2s_pre_ext_count(int32_t n, int32_t I) { return n > 0 && tqv_fits(I, n) ? n : 0; }

/* The extension columns (ext, their count) that the prepacked weights hold. */
static int32_t fc2s_pre_ext(int32_t in_kind, const int8_t *in_shift, int32_t I, int32_t *ext) {
    return in_kind == TQ_CHANNEL_POW2 && in_shift ? fc2s_pre_ext_count(fc2s_ext_columns(in_shift, I, ext), I) : 0;
}

static int fc2s_vnni(const uint8_t *x, int32_t rows, int32_t I, int32_t in_kind, int32_t in_zp,
                     const int8_t *in_shift, int32_t bits, int32_t m, int32_t signed_fine, int32_t neg_mult,
                     int32_t neg_shift, const int8_t *w, int32_t O, const int32_t *bias, const int32_t *out_mult,
                     const int32_t *out_shift, int32_t out_zp, int8_t *y, const void *pre) {
    int32_t ext[FC2S_MAX_EXT], w2[FC2S_MAX_POW2_O], n_ext = 0, pre_n_ext = 0;
    fc2s_vnni_op f;
    tqv_sparse sp;
    memset(&f, 0, sizeof f);
    if (!tqv_shifts_ok(out_shift, O)) return 0;
    if (in_kind == TQ_UNIFORM) {
        f.mode = FC2S_RAW;
    } else if (in_kind == TQ_CHANNEL_POW2) {
        int pow2_ok = in_shift != NULL && O <= FC2S_MAX_POW2_O && tqv_fits(I, 0), planes;
        int32_t i;
        for (i = 0; pow2_ok && i < I; i++) pow2_ok = in_shift[i] >= 0 && in_shift[i] <= 7;
        n_ext = fc2s_ext_columns(in_shift, I, ext);
        pre_n_ext = fc2s_pre_ext_count(n_ext, I);
        planes = n_ext != 0 && pow2_ok && (n_ext < 0 || !tqv_fits(I, n_ext) || tqv_amx_takes(rows, 2));
        if (planes) {
            n_ext = 0;
            fc2s_pow2_w2(w, I, O, in_shift, w2);
            f.w2 = w2;
            f.in_shift = in_shift;
            f.mode = FC2S_POW2;
        } else {
            if (n_ext < 0) return 0;
            f.mode = n_ext ? FC2S_EXT : FC2S_RAW;
        }
    } else if (in_kind == TQ_TWO_SCALE || in_kind == TQ_SIGN_SPLIT) {
        if (bits < 2 || bits > 8 || m < 0 || m > 31) return 0;
        if (in_kind == TQ_SIGN_SPLIT && !tqv_shifts_ok(&neg_shift, 1)) return 0;
        f.mode = FC2S_PLANES;
        if (in_kind == TQ_TWO_SCALE && !tqv_amx_takes(rows, 2) && tqv_sparse_fits(x, I, rows, I, bits)) {
            f.mode = FC2S_SPARSE;
            f.sp = &sp;
        }
    } else {
        return 0;
    }
    if (!tqv_fits(I, n_ext)) return 0;
    f.g.b = w;
    f.g.ldb = I;
    f.g.N = O;
    f.g.K = I;
    f.g.ext = ext;
    f.g.n_ext = n_ext;
    f.g.M = rows;
    f.g.planes = f.mode == FC2S_PLANES || f.mode == FC2S_POW2 ? 2 : 1;
    f.g.pre = (const uint8_t *)pre; /* read where its extension columns are the product's (tqv_pre_ok) */
    f.g.pre_n_ext = pre_n_ext;
    f.g.rows = fc2s_vnni_rows;
    f.g.emit = fc2s_vnni_emit;
    f.x = x;
    f.in_kind = in_kind;
    f.in_zp = in_zp;
    f.bits = bits;
    f.m = m;
    f.signed_fine = signed_fine;
    f.neg_mult = neg_mult;
    f.neg_shift = neg_shift;
    f.q.bias = bias;
    f.q.mult = out_mult;
    f.q.shift = out_shift;
    f.q.how = TQV_REQUANT1;
    f.q.zp = out_zp;
    f.y = y;
    if (f.mode == FC2S_SPARSE)
        tqv_gemm_vnni(&f.g); /* emit reads the packed blocks: never on AMX tiles */
    else
        tqv_gemm_run(&f.g);
    return 1;
}
#endif

#if defined(TQ_SIMD_DSP)
/* The Arm DSP path: two rows at a time are decoded into scratch as the int16 pairs of tq_mm2x2_s16s8 (2 * I int16,
 * the 4 * I bytes of scratch), then the 2x2 kernel runs over all output channels (an odd last row or channel is
 * repeated, and its copy not stored) into int32 sums on the stack, which are then requantized. Decoding is hoisted
 * out of the channel loop: a 256-entry table for two_scale codes; q - zp four at a time (SXTAB16) for the affine
 * ones, then the few channel_pow2 channels with a nonzero shift. Every value fits an int16: |q - zp| <= 255 and
 * shift <= 7 give |d| <= 32640 (shifts checked once below), and the table is checked entry by entry. */
#define TQ_FC2S_DSP_CHUNK 128 /* output channels per pass: two rows of int32 sums on the stack */
#define TQ_FC2S_FIX 32        /* channel_pow2: shifted channels listed for a fix-up after the plain decode */

/* dst0[c] (and dst1[c] when two) for the sums acc0[c] (acc1[c]) of channels o0 + c; fast: every channel has
 * -31 <= out_shift < 0 and out_mult >= 0. Both rows in one loop: the channel's parameters are loaded once. */
__attribute__((noinline)) /* its own registers: inlined, its pointers spill */
static void fc2s_dsp_requant(const int32_t *acc0, const int32_t *acc1, int two, int32_t o0, int32_t oc,
                             const int32_t *bias, const int32_t *out_mult, const int32_t *out_shift, int32_t out_zp,
                             int fast, int8_t *dst0, int8_t *dst1) {
    int32_t c = 0, s0, s1;
    if (fast && two) {
        const int32_t *b = bias + o0, *mu = out_mult + o0, *sh = out_shift + o0;
        for (; c < oc; c++) {
            /* acc + bias is an int64 in the reference: the 32-bit form only when it does not overflow */
            if (__builtin_add_overflow(acc0[c], b[c], &s0) || __builtin_add_overflow(acc1[c], b[c], &s1)) break;
            {
                const int32_t m = mu[c], e = sh[c]; /* loaded once: the int8 stores may alias them */
                const int32_t v0 = tq_requant1_dsp(s0, m, e), v1 = tq_requant1_dsp(s1, m, e);
                dst0[c] = (int8_t)__ssat(v0 + out_zp, 8);
                dst1[c] = (int8_t)__ssat(v1 + out_zp, 8);
            }
        }
    } else if (fast) {
        const int32_t *b = bias + o0, *mu = out_mult + o0, *sh = out_shift + o0;
        for (; c < oc; c++) {
            if (__builtin_add_overflow(acc0[c], b[c], &s0)) break;
            dst0[c] = (int8_t)__ssat(tq_requant1_dsp(s0, mu[c], sh[c]) + out_zp, 8);
        }
    }
    for (; c < oc; c++) {
        dst0[c] = fc2s_out(acc0[c], o0 + c, bias, out_mult, out_shift, out_zp);
        if (two) dst1[c] = fc2s_out(acc1[c], o0 + c, bias, out_mult, out_shift, out_zp);
    }
}

/* row xr into slot r (0 or 1) of the pair layout xy; fix: the nfix channels with a nonzero shift (nfix < 0: too many
 * to list, decoded one by one) */
static void fc2s_dsp_decode(const uint8_t *xr, int32_t I, int32_t in_kind, int32_t in_zp, const int8_t *in_shift,
                            const int16_t *lut, const int16_t *fix, int32_t nfix, int16_t *xy, int32_t r) {
    const int32_t n4 = I & ~3;
    int16_t *g = xy + 4 * r, *tail = xy + 2 * n4 + r * (I - n4);
    int32_t i;
    if (in_kind == TQ_TWO_SCALE) {
        for (i = 0; i < n4; i += 4, g += 8)
            g[0] = lut[xr[i]], g[1] = lut[xr[i + 2]], g[2] = lut[xr[i + 1]], g[3] = lut[xr[i + 3]];
        for (; i < I; i++) *tail++ = lut[xr[i]];
    } else if (nfix < 0) {
#define TQ_DEC(j) (int16_t)tq_shl32((int32_t)(int8_t)xr[j] - in_zp, in_shift[j])
        for (i = 0; i < n4; i += 4, g += 8)
            g[0] = TQ_DEC(i), g[1] = TQ_DEC(i + 2), g[2] = TQ_DEC(i + 1), g[3] = TQ_DEC(i + 3);
        for (; i < I; i++) *tail++ = TQ_DEC(i);
#undef TQ_DEC
    } else {
        /* uniform, or channel_pow2 with few shifted channels: q - zp four at a time, then the shifted ones */
        (void)tq_pair_codes((const int8_t *)xr, I, in_zp, xy, r);
        for (i = 0; i < nfix; i++)
            xy[tq_pair_pos(I, r, fix[i])] = (int16_t)tq_shl32((int32_t)(int8_t)xr[fix[i]] - in_zp, in_shift[fix[i]]);
    }
}

/* The DSP and Helium paths' decode table of a two-scale input code (each code's int16 value); 0 when the
 * parameters don't fit it (the scalar kernel then runs). */
static int fc2s_two_scale_table(int32_t in_zp, int32_t bits, int32_t m, int32_t signed_fine, int16_t lut[256]) {
    int32_t i;
    if (bits < 2 || bits > 8 || m < 0 || m > 31) return 0;
    for (i = 0; i < 256; i++) {
        const int32_t v = decode_in((uint8_t)i, TQ_TWO_SCALE, in_zp, 0, bits, m, signed_fine);
        if (v < -32768 || v > 32767) return 0;
        lut[i] = (int16_t)v;
    }
    return 1;
}

static int fc2s_dsp(const uint8_t *x, int32_t rows, int32_t I, int32_t in_kind, int32_t in_zp, const int8_t *in_shift,
                    int32_t bits, int32_t m, int32_t signed_fine, const int8_t *w, int32_t O, const int32_t *bias,
                    const int32_t *out_mult, const int32_t *out_shift, int32_t out_zp, int8_t *y, int32_t *scratch) {
    int16_t lut[256], fix[TQ_FC2S_FIX], *xy = (int16_t *)(void *)scratch;
    int32_t acc[2][TQ_FC2S_DSP_CHUNK], r, o, i, nfix = 0;
    int fast = 1;
    if (in_kind == TQ_TWO_SCALE) {
        if (!fc2s_two_scale_table(in_zp, bits, m, signed_fine, lut)) return 0;
    } else if (in_kind == TQ_UNIFORM || in_kind == TQ_CHANNEL_POW2) {
        if (!tq_zp_ok(in_zp)) return 0;
        if (in_kind == TQ_CHANNEL_POW2 && in_shift)
            for (i = 0; i < I; i++) {
                if (in_shift[i] < 0 || in_shift[i] > 7) return 0;
                if (in_shift[i] && nfix >= 0) {
                    if (nfix < TQ_FC2S_FIX && i <= 32767) fix[nfix++] = (int16_t)i;
                    else nfix = -1;
                }
            }
    } else {
        return 0;
    }
    for (o = 0; o < O; o++)
        if (out_shift[o] >= 0 || out_shift[o] < -31 || out_mult[o] < 0) fast = 0;
    for (r = 0; r < rows; r += 2) {
        const int32_t two = r + 1 < rows;
        const uint8_t *xr = x + (ptrdiff_t)r * I;
        int8_t *yr = y + (ptrdiff_t)r * O;
        fc2s_dsp_decode(xr, I, in_kind, in_zp, in_shift, lut, fix, nfix, xy, 0);
        fc2s_dsp_decode(two ? xr + I : xr, I, in_kind, in_zp, in_shift, lut, fix, nfix, xy, 1);
        for (o = 0; o < O; o += TQ_FC2S_DSP_CHUNK) {
            const int32_t oc = O - o < TQ_FC2S_DSP_CHUNK ? O - o : TQ_FC2S_DSP_CHUNK;
            tq_mm2xn_s16s8(xy, w + (ptrdiff_t)o * I, I, I, oc, acc[0], acc[1]);
            fc2s_dsp_requant(acc[0], acc[1], two, o, oc, bias, out_mult, out_shift, out_zp, fast, yr + o, two ? yr + O + o : NULL);
        }
    }
    return 1;
}
#endif

#if defined(TQ_SIMD_MVE)
/* The Helium path: two rows against a chunk of up to TQ_MVE_NC output channels per pass, two channels at a
 * time (tq_mve_mm2xn_*), into int32 sums on the stack, requantized four channels at a time (fc2s_mve_requant, with
 * the zero point's term). Two forms:
 *  - int8 (uniform; channel_pow2 with at most TQ_FC2S_MVE_FIX shifted channels): the codes are read in place,
 *    16 products per VMLADAVA, and sum_i (q_i - zp) 2^s_i w_i = sum_i q_i w_i - zp sum_i w_i
 *    + sum_{s_i > 0} (q_i - zp)(2^s_i - 1) w_i, the weight sums taken once per chunk, the last term per shifted
 *    channel (exact in wrapping 32-bit arithmetic: the true value fits an int32, prepare's accumulator bound);
 *  - int16 (two_scale, through a 256-entry table; channel_pow2 with more shifted channels): two rows decoded into
 *    scratch (2 * I int16, the 4 * I bytes of scratch), 8 products per VMLADAVA. */
#define TQ_FC2S_MVE_FIX 8

/* dst[c] for the sums acc[c] - zsum[c] (zsum NULL: 0) of channels o0 + c, four at a time; every channel has
 * -31 <= out_shift < 0 and out_mult >= 0 (the caller checks; else fc2s_dsp_requant). acc + bias is an int64 in the
 * reference: four channels whose int32 sum overflows take fc2s_out. One row per call (fewer live vectors), whole
 * groups of four with plain loads and stores, the last group predicated. */
#define TQ_FC2S_MVE_RQ(LD, ST)                                                                                         \
    do {                                                                                                               \
        int32x4_t a = LD(acc + c), b = LD(bias + o0 + c), x;                                                           \
        if (zsum) a = vsubq_s32(a, LD(zsum + c));                                                                      \
        x = vaddq_s32(a, b);                                                                                           \
        if (vmaxavq_s32(0, vsubq_s32(x, vqaddq_s32(a, b)))) { /* a lane's int32 sum overflowed */                     \
            for (j = c; j < c + 4 && j < oc; j++)                                                                      \
                dst[j] = fc2s_out((int32_t)((uint32_t)acc[j] - (zsum ? (uint32_t)zsum[j] : 0u)), o0 + j, bias,    \
                                  out_mult, out_shift, out_zp);                                                        \
        } else {                                                                                                       \
            x = tq_mve_requant1(x, LD(out_mult + o0 + c), vaddq_n_s32(LD(out_shift + o0 + c), 1));                   \
            x = vminq_s32(vmaxq_s32(vaddq_n_s32(x, out_zp), vdupq_n_s32(-128)), vdupq_n_s32(127));                    \
            ST(dst + c, x);                                                                                            \
        }                                                                                                              \
    } while (0)

__attribute__((noinline)) static void fc2s_mve_requant(const int32_t *acc, const int32_t *zsum, int32_t o0,
                                                       int32_t oc, const int32_t *bias, const int32_t *out_mult,
                                                       const int32_t *out_shift, int32_t out_zp, int8_t *dst) {
    int32_t c, j;
    for (c = 0; c + 4 <= oc; c += 4) TQ_FC2S_MVE_RQ(vldrwq_s32, vstrbq_s32);
    if (c < oc) {
        const mve_pred16_t p = vctp32q((uint32_t)(oc - c));
#define TQ_LDZ(ptr) vldrwq_z_s32(ptr, p)
#define TQ_STP(ptr, v) vstrbq_p_s32(ptr, v, p)
        TQ_FC2S_MVE_RQ(TQ_LDZ, TQ_STP);
#undef TQ_LDZ
#undef TQ_STP
    }
}
#undef TQ_FC2S_MVE_RQ

static int fc2s_mve(const uint8_t *x, int32_t rows, int32_t I, int32_t in_kind, int32_t in_zp, const int8_t *in_shift,
                    int32_t bits, int32_t m, int32_t signed_fine, const int8_t *w, int32_t O, const int32_t *bias,
                    const int32_t *out_mult, const int32_t *out_shift, int32_t out_zp, int8_t *y, int32_t *scratch) {
    int16_t lut[256], *d0 = (int16_t *)(void *)scratch, *d1 = d0 + I;
    int8_t wfix[TQ_FC2S_MVE_FIX][TQ_MVE_NC]; /* the shifted channels' weights, per output channel of the chunk */
    int32_t fix[TQ_FC2S_MVE_FIX], fmul[TQ_FC2S_MVE_FIX], zsum[TQ_MVE_NC], acc[2][TQ_MVE_NC];
    int32_t r, o0, c, i, f, nfix = 0, wide = 0;
    int fast = 1;
    if (in_kind == TQ_TWO_SCALE) {
        if (!fc2s_two_scale_table(in_zp, bits, m, signed_fine, lut)) return 0;
        wide = 1;
    } else if (in_kind == TQ_UNIFORM || in_kind == TQ_CHANNEL_POW2) {
        if (!tq_zp_ok(in_zp)) return 0;
        if (in_kind == TQ_CHANNEL_POW2 && in_shift)
            for (i = 0; i < I; i++) {
                if (in_shift[i] < 0 || in_shift[i] > 7) return 0;
                if (!in_shift[i]) continue;
                if (nfix < TQ_FC2S_MVE_FIX) fix[nfix] = i, fmul[nfix++] = (1 << in_shift[i]) - 1;
                else wide = 1;
            }
        if (wide) nfix = 0; /* too many shifted channels: all of them decoded into the int16 rows */
    } else {
        return 0;
    }
    for (o0 = 0; o0 < O; o0++)
        if (out_shift[o0] >= 0 || out_shift[o0] < -31 || out_mult[o0] < 0) fast = 0;
    for (o0 = 0; o0 < O; o0 += TQ_MVE_NC) {
        const int32_t oc = O - o0 < TQ_MVE_NC ? O - o0 : TQ_MVE_NC;
        const int8_t *wc = w + (ptrdiff_t)o0 * I;
        if (!wide)
            for (c = 0; c < oc; c++) {
                zsum[c] = (int32_t)((uint32_t)in_zp * (uint32_t)tq_mve_sum_s8(wc + (ptrdiff_t)c * I, I));
                for (f = 0; f < nfix; f++) wfix[f][c] = wc[(ptrdiff_t)c * I + fix[f]];
            }
        for (r = 0; r < rows; r += 2) {
            const int32_t two = r + 1 < rows;
            const int8_t *x0 = (const int8_t *)x + (ptrdiff_t)r * I, *x1 = two ? x0 + I : x0;
            int8_t *yr = y + (ptrdiff_t)r * O + o0;
            if (wide) {
                if (in_kind == TQ_TWO_SCALE) {
                    (void)tq_mve_lut_s16((const uint8_t *)x0, I, lut, d0);
                    (void)tq_mve_lut_s16((const uint8_t *)x1, I, lut, d1);
                } else {
                    tq_mve_shift_s16(x0, I, in_zp, in_shift, d0);
                    tq_mve_shift_s16(x1, I, in_zp, in_shift, d1);
                }
                tq_mve_mm2xn_s16s8(d0, d1, wc, I, I, oc, acc);
            } else {
                tq_mve_mm2xn_s8(x0, x1, wc, I, I, oc, acc);
                for (f = 0; f < nfix; f++) { /* plus (q_i - zp)(2^s_i - 1) w_i of each shifted channel */
                    const int32_t f0 = (int32_t)(((uint32_t)(int32_t)x0[fix[f]] - (uint32_t)in_zp) * (uint32_t)fmul[f]),
                                  f1 = (int32_t)(((uint32_t)(int32_t)x1[fix[f]] - (uint32_t)in_zp) * (uint32_t)fmul[f]);
                    for (c = 0; c < oc; c += 4) { /* wrapping lane arithmetic, exact as above */
                        const mve_pred16_t p = vctp32q((uint32_t)(oc - c));
                        const int32x4_t wv = vldrbq_z_s32(wfix[f] + c, p);
                        vstrwq_p_s32(acc[0] + c, vmlaq_n_s32(vldrwq_z_s32(acc[0] + c, p), wv, f0), p);
                        vstrwq_p_s32(acc[1] + c, vmlaq_n_s32(vldrwq_z_s32(acc[1] + c, p), wv, f1), p);
                    }
                }
            }
            if (!fast) { /* the general form: minus zp sum_i w_i first */
                for (c = 0; !wide && c < oc; c++) {
                    acc[0][c] = (int32_t)((uint32_t)acc[0][c] - (uint32_t)zsum[c]);
                    acc[1][c] = (int32_t)((uint32_t)acc[1][c] - (uint32_t)zsum[c]);
                }
                fc2s_dsp_requant(acc[0], acc[1], two, o0, oc, bias, out_mult, out_shift, out_zp, 0, yr,
                                 two ? yr + O : NULL);
                continue;
            }
            fc2s_mve_requant(acc[0], wide ? NULL : zsum, o0, oc, bias, out_mult, out_shift, out_zp, yr);
            if (two) fc2s_mve_requant(acc[1], wide ? NULL : zsum, o0, oc, bias, out_mult, out_shift, out_zp, yr + O);
        }
    }
    return 1;
}
#endif

uint64_t tq_fc_2s_prepack_size(int32_t I, int32_t O, int32_t in_kind, const int8_t *in_shift) {
#if defined(TQ_SIMD_VNNI)
    int32_t ext[FC2S_MAX_EXT];
    return tqv_prepack_size(I, fc2s_pre_ext(in_kind, in_shift, I, ext), O);
#else
    (void)I, (void)O, (void)in_kind, (void)in_shift;
    return 0;
#endif
}

void tq_fc_2s_prepack(const int8_t *w, int32_t I, int32_t O, int32_t in_kind, const int8_t *in_shift, void *dst) {
#if defined(TQ_SIMD_VNNI)
    int32_t ext[FC2S_MAX_EXT], n_ext = fc2s_pre_ext(in_kind, in_shift, I, ext);
    if (tqv_prepack_size(I, n_ext, O)) tqv_prepack(w, I, ext, n_ext, O, (uint8_t *)dst);
#else
    (void)w, (void)I, (void)O, (void)in_kind, (void)in_shift, (void)dst;
#endif
}

void tq_fc_2s(const uint8_t *x, int32_t rows, int32_t I, int32_t in_kind, int32_t in_zp, const int8_t *in_shift,
              int32_t bits, int32_t m, int32_t signed_fine, int32_t neg_mult, int32_t neg_shift, const int8_t *w,
              int32_t O, const int32_t *bias, const int32_t *out_mult, const int32_t *out_shift, int32_t out_zp,
              int8_t *y, int32_t *scratch) {
    tq_fc_2s_pre(x, rows, I, in_kind, in_zp, in_shift, bits, m, signed_fine, neg_mult, neg_shift, w, O, bias, out_mult,
                 out_shift, out_zp, y, scratch, NULL);
}

void tq_fc_2s_pre(const uint8_t *x, int32_t rows, int32_t I, int32_t in_kind, int32_t in_zp, const int8_t *in_shift,
                  int32_t bits, int32_t m, int32_t signed_fine, int32_t neg_mult, int32_t neg_shift, const int8_t *w,
                  int32_t O, const int32_t *bias, const int32_t *out_mult, const int32_t *out_shift, int32_t out_zp,
                  int8_t *y, int32_t *scratch, const void *pre) {
    int32_t r;
#if defined(TQ_SIMD_VNNI)
    if (fc2s_vnni(x, rows, I, in_kind, in_zp, in_shift, bits, m, signed_fine, neg_mult, neg_shift, w, O, bias,
                  out_mult, out_shift, out_zp, y, pre))
        return;
#else
    (void)pre;
#endif
#if defined(TQ_SIMD_MVE)
    if (fc2s_mve(x, rows, I, in_kind, in_zp, in_shift, bits, m, signed_fine, w, O, bias, out_mult, out_shift, out_zp, y,
                 scratch))
        return;
#endif
#if defined(TQ_SIMD_DSP)
    if (fc2s_dsp(x, rows, I, in_kind, in_zp, in_shift, bits, m, signed_fine, w, O, bias, out_mult, out_shift, out_zp, y,
                 scratch))
        return;
#endif
    for (r = 0; r < rows; r++) {
        const uint8_t *xr = x + (ptrdiff_t)r * I;
        int8_t *yr = y + (ptrdiff_t)r * O;
#if TQ_SIMD
        {
            int16_t *d16 = (int16_t *)(void *)scratch;
            int32_t i, o = 0, fits = 1;
            if (in_kind == TQ_SIGN_SPLIT) {
                /* d16[0..I) positive fields, d16[I..2I) negative fields */
                const int32_t fmask = (1 << (bits - 1)) - 1;
                for (i = 0; i < I; i++) {
                    const int32_t field = xr[i] & fmask, neg = (xr[i] >> (bits - 1)) & 1;
                    d16[i] = (int16_t)(neg ? 0 : field);
                    d16[I + i] = (int16_t)(neg ? field : 0);
                }
                for (; o + 4 <= O; o += 4) {
                    int32_t pos[4], negs[4], k;
                    tq_dot_s16s8_x4(d16, w + (ptrdiff_t)o * I, I, I, pos);
                    tq_dot_s16s8_x4(d16 + I, w + (ptrdiff_t)o * I, I, I, negs);
                    for (k = 0; k < 4; k++)
                        yr[o + k] = fc2s_out(split_acc(pos[k], negs[k], neg_mult, neg_shift), o + k, bias, out_mult,
                                             out_shift, out_zp);
                }
                for (; o < O; o++)
                    yr[o] = fc2s_out(split_acc(tq_dot_s16s8(d16, w + (ptrdiff_t)o * I, I),
                                               tq_dot_s16s8(d16 + I, w + (ptrdiff_t)o * I, I), neg_mult, neg_shift),
                                     o, bias, out_mult, out_shift, out_zp);
                continue;
            }
            for (i = 0; i < I; i++) {
                const int32_t v = decode_in(xr[i], in_kind, in_zp, in_shift ? in_shift[i] : 0, bits, m, signed_fine);
                if (v < -32768 || v > 32767) {
                    fits = 0;
                    break;
                }
                d16[i] = (int16_t)v;
            }
            if (fits) {
                for (; o + 4 <= O; o += 4) {
                    int32_t acc[4], k;
                    tq_dot_s16s8_x4(d16, w + (ptrdiff_t)o * I, I, I, acc);
                    for (k = 0; k < 4; k++) yr[o + k] = fc2s_out(acc[k], o + k, bias, out_mult, out_shift, out_zp);
                }
                for (; o < O; o++)
                    yr[o] = fc2s_out(tq_dot_s16s8(d16, w + (ptrdiff_t)o * I, I), o, bias, out_mult, out_shift, out_zp);
                continue;
            }
        }
#endif
        fc_2s_row_ref(xr, I, in_kind, in_zp, in_shift, bits, m, signed_fine, neg_mult, neg_shift, w, O, bias, out_mult,
                      out_shift, out_zp, yr, scratch);
    }
}

/* ---- the op: TSPTQ_FC_2S (op_table.h) ---------------------------------------------------------------------------- */

enum { TQ_FC_IN_KIND = 0, TQ_FC_IN_ZP, TQ_FC_BITS, TQ_FC_M, TQ_FC_SIGNED_FINE, TQ_FC_NEG_MULT, TQ_FC_NEG_SHIFT,
       TQ_FC_OUT_ZP };
static const char *const fc2s_keys[] = {"in_kind", "in_zp", "bits", "ratio_log2", "signed_fine", "neg_mult",
                                        "neg_shift", "out_zp"};

static int fc2s_prepare(tq_op_ctx *ctx) {
    tsptq_tensor *const *in = ctx->in, *out = ctx->out;
    const uint32_t k = ctx->k;
    int64_t *o = ctx->op->opt;
    tsptq_tensor *x = in[0], *w = in[1], *b = in[2], *mu = in[3], *sh = in[4], *ish = in[5];
    int64_t I = x->rank ? x->shape[x->rank - 1] : 0, O = w->shape[0], kind = o[TQ_FC_IN_KIND], c;
    if (!tq_is_byte(x) || w->type != TSPTQ_INT8 || w->rank != 2 || w->shape[1] != I || out->type != TSPTQ_INT8 ||
        out->rank < 1 || out->shape[out->rank - 1] != O || tq_numel(x) / (I ? I : 1) != tq_numel(out) / O)
        TQ_BAD(ctx, "op %u (TSPTQ_FC_2S): shapes do not fit", k);
    if (b->type != TSPTQ_INT32 || mu->type != TSPTQ_INT32 || sh->type != TSPTQ_INT32 || ish->type != TSPTQ_INT8 ||
        b->rank != 1 || mu->rank != 1 || sh->rank != 1 || ish->rank != 1 || b->shape[0] != O ||
        mu->shape[0] != O || sh->shape[0] != O || ish->shape[0] != I)
        TQ_BAD(ctx, "op %u (TSPTQ_FC_2S): parameter tensors do not fit", k);
    if (kind < TQ_UNIFORM || kind > TQ_SIGN_SPLIT)
        TQ_REFUSE(ctx, TSPTQ_ERR_UNSUPPORTED_OP, "op %u (TSPTQ_FC_2S): input code kind %L", k, kind);
    if (kind <= TQ_CHANNEL_POW2 && x->type != TSPTQ_INT8)
        TQ_BAD(ctx, "op %u (TSPTQ_FC_2S): an affine input code must be int8", k);
    if (!tq_in_range(o[TQ_FC_IN_ZP], -128, 127) || !tq_in_range(o[TQ_FC_BITS], 2, 8) ||
        !tq_in_range(o[TQ_FC_M], 0, 8) ||
        !tq_in_range(o[TQ_FC_SIGNED_FINE], 0, 1) || !tq_in_range(o[TQ_FC_NEG_MULT], 0, TQ_ACC_LIMIT) ||
        !tq_in_range(o[TQ_FC_NEG_SHIFT], -31, 31) || !tq_in_range(o[TQ_FC_OUT_ZP], -128, 127))
        TQ_BADQ(ctx, "op %u (TSPTQ_FC_2S): options out of range", k);
    for (c = 0; c < O; c++)
        if (((const int32_t *)mu->data)[c] < 0 || !tq_in_range(((const int32_t *)sh->data)[c], -31, 31))
            TQ_BADQ(ctx, "op %u (TSPTQ_FC_2S): output multiplier of channel %L out of range", k, c);
    for (c = 0; c < I; c++)
        if (!tq_in_range(((const int8_t *)ish->data)[c], 0, 7))
            TQ_BADQ(ctx, "op %u (TSPTQ_FC_2S): input channel shift out of range", k);
    if (kind != TQ_CHANNEL_POW2 && x->n_scales > 1)
        TQ_BADQ(ctx, "op %u (TSPTQ_FC_2S): input '%.*s' has per-channel scales, but in_kind %L is not channel_pow2",
                k, TNAME(x), kind);
    if (!tq_in_shift_agrees(ctx, x, ish, I)) return 0;
    if (!tq_acc_fits(w, O, I, tq_max_operand(kind, o[TQ_FC_M], 0), kind,
                     kind == TQ_CHANNEL_POW2 ? (const int8_t *)ish->data : 0))
        TQ_BAD(ctx, "op %u (TSPTQ_FC_2S): the int32 accumulator could overflow", k);
    return 1;
}

/* The thread pool's split (op_table.h): by rows, in TQ_FC_ROW_GRAIN blocks. Each part decodes into its own
 * scratch. */

static void fc2s_eval_part(tsptq_model *m, const tsptq_op *op, int64_t r0, int64_t r1, int32_t *scratch) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]];
    const int64_t *o = op->opt;
    const int32_t I = tq_last_dim(x), O = m->tensors[op->inputs[1]].shape[0];
    tq_fc_2s_pre(tq_ptr(m, op->inputs[0]) + r0 * I, (int32_t)(r1 - r0), I, TQ_O32(o[TQ_FC_IN_KIND]),
                 TQ_O32(o[TQ_FC_IN_ZP]), (const int8_t *)tq_ptr(m, op->inputs[5]), TQ_O32(o[TQ_FC_BITS]),
                 TQ_O32(o[TQ_FC_M]), TQ_O32(o[TQ_FC_SIGNED_FINE]), TQ_O32(o[TQ_FC_NEG_MULT]),
                 TQ_O32(o[TQ_FC_NEG_SHIFT]), (const int8_t *)tq_ptr(m, op->inputs[1]), O, tq_in32(m, op, 2),
                 tq_in32(m, op, 3), tq_in32(m, op, 4), TQ_O32(o[TQ_FC_OUT_ZP]), (int8_t *)tq_act(m, op->output) + r0 * O,
                 scratch, tq_prepacked(m, op));
}

/* The weights prepacked (tq_fc_2s_prepack) where this build's product reads them. */
static uint64_t fc2s_prepacked(const tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *w = &m->tensors[op->inputs[1]];
    return tq_fc_2s_prepack_size(w->shape[1], w->shape[0], TQ_O32(op->opt[TQ_FC_IN_KIND]),
                                 (const int8_t *)m->tensors[op->inputs[5]].data);
}

static void fc2s_prepack(const tsptq_model *m, const tsptq_op *op, uint8_t *dst) {
    const tsptq_tensor *w = &m->tensors[op->inputs[1]];
    tq_fc_2s_prepack((const int8_t *)w->data, w->shape[1], w->shape[0], TQ_O32(op->opt[TQ_FC_IN_KIND]),
                     (const int8_t *)m->tensors[op->inputs[5]].data, dst);
}

static void fc2s_eval(tsptq_model *m, const tsptq_op *op) {
    fc2s_eval_part(m, op, 0, tq_rows(&m->tensors[op->inputs[0]]), tq_scratch(m, op));
}

static int64_t fc2s_units(const tsptq_model *m, const tsptq_op *op, int64_t *grain) {
    *grain = TQ_FC_ROW_GRAIN;
    return tq_rows(&m->tensors[op->inputs[0]]);
}

const tq_op_def TQ_OP_DEF(tq_fc_2s, _op) = {
    .name = "TSPTQ_FC_2S", .builtin_code = TQ_CUSTOM, .min_inputs = 6, .max_inputs = 6, .n_outputs = 1,
    .const_from = 1, .n_option_keys = TQ_COUNT_OF(fc2s_keys), .option_keys = fc2s_keys, .prepare = fc2s_prepare,
    .scratch = tq_row_scratch, .prepacked = fc2s_prepacked, .prepack = fc2s_prepack, .eval = fc2s_eval,
    .units = fc2s_units, .eval_part = fc2s_eval_part};
