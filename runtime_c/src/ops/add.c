/* ADD (builtin, n_params = 1) and TSPTQ_ADD_2S (n_params = C): TFLite's int8 ADD with left_shift 20, per channel
 * parameters (rows a_mult, a_shift, b_mult, b_shift, out_mult, out_shift of a (6, n_params) table):
 * intkernels.add. */
#include "../fixedpoint.h"
#include "../kernels.h"

#define TQ_ADD_LEFT_SHIFT 20

void tq_add(const int8_t *a, const int8_t *b, int32_t rows, int32_t C, int32_t a_zp, int32_t b_zp,
            const int32_t *params, int32_t n_params, int32_t out_zp, int8_t *y) {
    const int32_t *am = params, *ash = params + n_params, *bm = params + 2 * (ptrdiff_t)n_params,
                  *bsh = params + 3 * (ptrdiff_t)n_params, *om = params + 4 * (ptrdiff_t)n_params,
                  *osh = params + 5 * (ptrdiff_t)n_params;
    int32_t r, c;
    for (r = 0; r < rows; r++) {
        const int8_t *ar = a + (ptrdiff_t)r * C, *br = b + (ptrdiff_t)r * C;
        int8_t *yr = y + (ptrdiff_t)r * C;
        for (c = 0; c < C; c++) {
            const int32_t p = n_params == 1 ? 0 : c;
            int64_t sa = tq_rdbpot64(tq_srdhm64(tq_shl64((int64_t)ar[c] - a_zp, TQ_ADD_LEFT_SHIFT), am[p]), -ash[p]);
            int64_t sb = tq_rdbpot64(tq_srdhm64(tq_shl64((int64_t)br[c] - b_zp, TQ_ADD_LEFT_SHIFT), bm[p]), -bsh[p]);
            yr[c] = tq_sat8(tq_mbqm(sa + sb, om[p], osh[p]) + out_zp);
        }
    }
}
