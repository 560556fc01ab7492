/* TSPTQ_FC_2S (docs/integer-semantics.md; intkernels.fc_2s): a fully connected layer over a decoded input code,
 * single-rounding per-channel requantization. Each row is decoded once into scratch (4 * I bytes): int32 values on
 * the reference path, int16 values (and, for sign-split, the positive and negative fields as two int16 halves) on the
 * SIMD paths, which fall back to the reference for a row whose decoded values do not fit an int16. */
#include "../fixedpoint.h"
#include "../kernels.h"
#include "dot.h"

/* Decoded operand d of code byte q (not sign-split): real = unit_in * d. */
static inline int32_t decode_in(uint8_t q, int32_t kind, int32_t in_zp, int32_t sh, int32_t bits, int32_t m,
                                int32_t signed_fine) {
    if (kind == TQ_UNIFORM) return (int32_t)(int8_t)q - in_zp;
    if (kind == TQ_CHANNEL_POW2) return (int32_t)tq_shl64((int64_t)(int8_t)q - in_zp, sh);
    {
        /* two_scale: flag | field; the fine field is 7-bit two's complement when signed_fine */
        const int32_t code = q & ((1 << bits) - 1), flag = code >> (bits - 1), field = code & ((1 << (bits - 1)) - 1);
        if (flag) return tq_shl32(field, m);
        if (signed_fine && field >= (1 << (bits - 2))) return field - (1 << (bits - 1));
        return field;
    }
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

void tq_fc_2s(const uint8_t *x, int32_t rows, int32_t I, int32_t in_kind, int32_t in_zp, const int8_t *in_shift,
              int32_t bits, int32_t m, int32_t signed_fine, int32_t neg_mult, int32_t neg_shift, const int8_t *w,
              int32_t O, const int32_t *bias, const int32_t *out_mult, const int32_t *out_shift, int32_t out_zp,
              int8_t *y, int32_t *scratch) {
    int32_t r;
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
