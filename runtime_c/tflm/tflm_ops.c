/* tsptq TFLite Micro ops: the custom ops of tsptq's NPU variant (`tsptq export --npu ethos-u`) as TFLite Micro
 * kernels, for the tflite-micro wheel whose interface tflm_abi.h declares.
 *
 * Ops (docs/integer-semantics.md "The NPU variant" and the TSPTQ custom ops; toolchain/tsptq/intmodel/kernels.py):
 * TSPTQ_LAYERNORM_2S_I16, TSPTQ_GELU_2S (int16 or 8-bit table), TSPTQ_ADD_2S_I16, TSPTQ_ADD_2S, TSPTQ_PLANE_2S,
 * TSPTQ_PV_SUM_2S, TSPTQ_SOFTMAX_2S, TSPTQ_BMM_2S (the `--pv-on-cpu` file), TSPTQ_TOKEN_MEAN_I16, and
 * TSPTQ_LN_NEG_MEAN and TSPTQ_LN_RSTD (the row statistics of the LayerNorm on the NPU). The arithmetic is the C
 * runtime's kernels (runtime_c/src/ops, compiled into this library: tq_layernorm_2s and, for an int16 input (the int16
 * residual stream), tq_layernorm_2s_x16, tq_add, tq_softmax_2s_heads, tq_lookup, tq_bmm_2s); the variant-only steps
 * (the int16 LayerNorm output, the int16 table, the branch saturation, the planes, the plane sum, the int16 token mean
 * and the NPU LayerNorm's row statistics) are variant_kernels.h's, which benchmarks/npu_cpu_steps.c times too.
 *
 * Registration: the Python interpreter of the wheel calls each name of `custom_op_registerers` as
 * `bool fn(tflite::PythonOpsResolver *)`; tsptq_tflm_register is that function. It finds the wheel's _runtime.so from
 * the resolver's vtable pointer (dladdr), looks up the accessors by their mangled names, checks the layout it relies
 * on (tflm_abi.h), appends one registration per op and checks each with the wheel's own FindOp. Any mismatch: it
 * registers nothing, returns false and leaves one line in tsptq_tflm_last_error().
 *
 * Options are the ops' flexbuffer maps (integers; runtime_c/src/flexbuffer.c), read once in init into a persistent
 * buffer. Quantization parameters are not read: every value a kernel needs is in its options or constant inputs.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fixedpoint.h"
#include "flexbuffer.h"
#include "kernels.h"
#include "tflm_abi.h"
#include "variant_kernels.h"

/* ---- the wheel's accessors ----------------------------------------------------------------------------------- */

static tflm_eval_tensor *(*get_eval_tensor)(const tflm_context *, int);
static void *(*alloc_persistent)(tflm_context *, size_t);
static tflm_status (*request_scratch)(tflm_context *, size_t, int *);
static void *(*get_scratch)(tflm_context *, int);
static void (*report_error)(tflm_context *, const char *, ...);

static char last_error[512];

/* The last registration or op error (one line), "" when none: tsptq.npu.tflm reads it after a failure. */
__attribute__((visibility("default"))) const char *tsptq_tflm_last_error(void) { return last_error; }

/* Fail an op: remember the line and give it to TFLM's error reporter too. */
static tflm_status op_fail(tflm_context *c, const char *name, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(last_error, sizeof last_error, "%s: %s", name, msg);
    if (report_error) report_error(c, "%s", last_error);
    return TFLM_ERROR;
}

/* ---- op data and tensors ------------------------------------------------------------------------------------- */

#define MAX_KEYS 9

typedef struct {
    int64_t opt[MAX_KEYS]; /* the options, in the op's key order */
    int missing;           /* index of the first key not found as an integer, -1 when all are there */
    int scratch;           /* TFLM scratch buffer index, -1 when none */
} op_data;

typedef struct op_def op_def;
struct op_def {
    const char *name;
    const char *const *keys;
    int n_keys;
    int min_inputs, max_inputs;
    tflm_status (*prepare)(tflm_context *, tflm_node *, op_data *, const op_def *);
    tflm_status (*eval)(tflm_context *, tflm_node *, op_data *, const op_def *);
};

static tflm_eval_tensor *input(tflm_context *c, tflm_node *n, int i) { return get_eval_tensor(c, n->inputs->data[i]); }
static tflm_eval_tensor *output(tflm_context *c, tflm_node *n) { return get_eval_tensor(c, n->outputs->data[0]); }

static int64_t numel(const tflm_eval_tensor *t) {
    int64_t k = 1;
    int i;
    for (i = 0; i < t->dims->size; i++) k *= t->dims->data[i];
    return k;
}

static int32_t last_dim(const tflm_eval_tensor *t) { return t->dims->size ? t->dims->data[t->dims->size - 1] : 1; }

static const char *type_str(int t) {
    switch (t) {
    case TFLM_INT8: return "int8";
    case TFLM_UINT8: return "uint8";
    case TFLM_INT16: return "int16";
    case TFLM_INT32: return "int32";
    case TFLM_INT64: return "int64";
    default: return "another type";
    }
}

/* Check tensor `what`'s type; `want2` a second accepted type (-1: none). */
#define NEED_TYPE(c, d, t, what, want, want2)                                                                       \
    do {                                                                                                            \
        if ((t)->type != (want) && (t)->type != (want2))                                                           \
            return op_fail(c, (d)->name, "%s must be %s%s%s, not %s", what, type_str(want), (want2) < 0 ? "" : " or ", \
                           (want2) < 0 ? "" : type_str(want2), type_str((t)->type));                                \
    } while (0)

#define NEED(c, d, cond, ...)                                                                                       \
    do {                                                                                                            \
        if (!(cond)) return op_fail(c, (d)->name, __VA_ARGS__);                                                     \
    } while (0)

static tflm_status want_scratch(tflm_context *c, op_data *o, const op_def *d, int64_t bytes) {
    if (request_scratch(c, (size_t)bytes, &o->scratch) != TFLM_OK)
        return op_fail(c, d->name, "no arena for its %lld-byte scratch buffer", (long long)bytes);
    return TFLM_OK;
}

/* ---- TSPTQ_LAYERNORM_2S_I16 ----------------------------------------------------------------------------------- */
/* inputs x int8, in_shift int8 (D), gamma_mul int32 (D), beta_bias int64 (D), out_ch_shift int8 (D); int16 out:
 * (y_c - out_zp) << out_ch_shift_c with y_c TSPTQ_LAYERNORM_2S's code. Scratch: one row of codes (D bytes).
 * x int16 (the int16 residual stream): zero point 0 and every in_shift 0 (x_c = q_c), tq_layernorm_2s_x16. */
enum { LN_IN_ZP, LN_EPS, LN_OUT_ZP, LN_OUT_SHIFT };
static const char *const LN_KEYS[] = {"in_zp", "eps", "out_zp", "out_shift"};

static tflm_status ln_prepare(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0), *y = output(c, n);
    int32_t D = last_dim(x);
    int i;
    static const int types[5] = {TFLM_INT8, TFLM_INT8, TFLM_INT32, TFLM_INT64, TFLM_INT8};
    static const char *const names[5] = {"x", "in_shift", "gamma_mul", "beta_bias", "out_shift"};
    for (i = 0; i < 5; i++) {
        tflm_eval_tensor *t = input(c, n, i);
        NEED_TYPE(c, d, t, names[i], types[i], i ? -1 : TFLM_INT16);
        if (i) NEED(c, d, numel(t) == D, "%s has %lld entries, not D = %d", names[i], (long long)numel(t), (int)D);
    }
    NEED_TYPE(c, d, y, "the output", TFLM_INT16, -1);
    NEED(c, d, D >= 1 && D <= 4096, "D = %d is outside 1..4096", (int)D);
    NEED(c, d, numel(y) == numel(x), "the output has %lld values, the input %lld", (long long)numel(y),
         (long long)numel(x));
    NEED(c, d, o->opt[LN_OUT_SHIFT] >= 0 && o->opt[LN_OUT_SHIFT] <= 62, "out_shift %lld outside 0..62",
         (long long)o->opt[LN_OUT_SHIFT]);
    /* the C runtime's own limits (layernorm_2s.c's prepare): the kernel shifts by these, and the file is untrusted */
    NEED(c, d, o->opt[LN_IN_ZP] >= -128 && o->opt[LN_IN_ZP] <= 127 && o->opt[LN_OUT_ZP] >= -128 &&
                   o->opt[LN_OUT_ZP] <= 127 && o->opt[LN_EPS] >= 0 && o->opt[LN_EPS] <= ((int64_t)1 << 62),
         "options out of range");
    for (i = 1; i < 5; i++) NEED(c, d, input(c, n, i)->data != NULL, "%s must be a constant tensor", names[i]);
    {
        const int8_t *in_sh = (const int8_t *)input(c, n, 1)->data, *out_sh = (const int8_t *)input(c, n, 4)->data;
        const int64_t *bb = (const int64_t *)input(c, n, 3)->data;
        int32_t j;
        /* an int16 x is the values themselves: no zero point, no channel shifts */
        NEED(c, d, x->type != TFLM_INT16 || o->opt[LN_IN_ZP] == 0, "an int16 x takes in_zp 0, not %lld",
             (long long)o->opt[LN_IN_ZP]);
        for (j = 0; j < D; j++) {
            NEED(c, d, x->type != TFLM_INT16 || in_sh[j] == 0, "channel %d: an int16 x takes in_shift 0, not %d",
                 (int)j, (int)in_sh[j]);
            NEED(c, d, in_sh[j] >= 0 && in_sh[j] <= 7 && bb[j] >= -((int64_t)1 << 62) && bb[j] <= ((int64_t)1 << 62),
                 "channel %d: shift or beta out of range", (int)j);
            /* (q - zp) << k must fit int16: |q - zp| <= 255, so k <= 7 */
            NEED(c, d, out_sh[j] >= 0 && out_sh[j] <= 7, "channel %d: output shift %d outside 0..7", (int)j,
                 (int)out_sh[j]);
        }
    }
    return want_scratch(c, o, d, D);
}

static tflm_status ln_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0), *y = output(c, n);
    const int8_t *ksh = (const int8_t *)input(c, n, 4)->data;
    int32_t D = last_dim(x);
    int64_t rows = numel(x) / D, r;
    int8_t *row = (int8_t *)get_scratch(c, o->scratch);
    int16_t *out = (int16_t *)y->data;
    (void)d;
    for (r = 0; r < rows; r++) {
        if (x->type == TFLM_INT16)
            tq_layernorm_2s_x16((const int16_t *)x->data + r * D, 1, D, (const int32_t *)input(c, n, 2)->data,
                                (const int64_t *)input(c, n, 3)->data, o->opt[LN_EPS], (int32_t)o->opt[LN_OUT_ZP],
                                (int32_t)o->opt[LN_OUT_SHIFT], row);
        else
            tq_layernorm_2s((const int8_t *)x->data + r * D, 1, D, (int32_t)o->opt[LN_IN_ZP],
                            (const int8_t *)input(c, n, 1)->data, (const int32_t *)input(c, n, 2)->data,
                            (const int64_t *)input(c, n, 3)->data, o->opt[LN_EPS], (int32_t)o->opt[LN_OUT_ZP],
                            (int32_t)o->opt[LN_OUT_SHIFT], row);
        tq_layernorm_2s_i16_tail(row, 1, D, (int32_t)o->opt[LN_OUT_ZP], ksh, out + r * D);
    }
    return TFLM_OK;
}

/* ---- TSPTQ_GELU_2S -------------------------------------------------------------------------------------------- */
/* x int8 or uint8 codes; lut: 256 int16 (the variant's decoded values) or 8-bit entries, 256 * L with in_shift. */
static tflm_status gelu_prepare(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0), *lut = input(c, n, 1), *y = output(c, n);
    (void)o;
    NEED_TYPE(c, d, x, "x", TFLM_INT8, TFLM_UINT8);
    NEED(c, d, y->type == lut->type, "the output's type (%s) is not the table's (%s)", type_str(y->type),
         type_str(lut->type));
    NEED(c, d, numel(y) == numel(x), "the output has %lld values, the input %lld", (long long)numel(y),
         (long long)numel(x));
    if (lut->type == TFLM_INT16) {
        NEED(c, d, n->inputs->size == 2, "an int16 table takes no in_shift");
        NEED(c, d, numel(lut) == 256, "the int16 table has %lld entries, not 256", (long long)numel(lut));
        return TFLM_OK;
    }
    NEED_TYPE(c, d, lut, "the table", TFLM_INT8, TFLM_UINT8);
    if (n->inputs->size == 2) {
        NEED(c, d, numel(lut) == 256, "the table has %lld entries, not 256", (long long)numel(lut));
    } else {
        tflm_eval_tensor *sh = input(c, n, 2);
        const int8_t *s = (const int8_t *)sh->data;
        int64_t i, levels = numel(lut) / 256;
        NEED_TYPE(c, d, sh, "in_shift", TFLM_INT8, -1);
        NEED(c, d, s != NULL, "in_shift must be a constant tensor");
        NEED(c, d, numel(sh) == last_dim(x), "in_shift has %lld entries, not one per channel", (long long)numel(sh));
        NEED(c, d, numel(lut) % 256 == 0 && levels >= 1, "the table's length is not a multiple of 256");
        for (i = 0; i < numel(sh); i++)
            NEED(c, d, s[i] >= 0 && s[i] < levels, "in_shift %d of channel %lld has no table row", s[i], (long long)i);
    }
    return TFLM_OK;
}

static tflm_status gelu_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0), *lut = input(c, n, 1), *y = output(c, n);
    int64_t k = numel(x);
    int sgn = x->type == TFLM_INT8;
    (void)o;
    (void)d;
    if (lut->type == TFLM_INT16) {
        tq_lookup_i16((const uint8_t *)x->data, k, sgn, (const int16_t *)lut->data, (int16_t *)y->data);
    } else if (n->inputs->size == 2) {
        tq_lookup((const uint8_t *)x->data, (size_t)k, sgn, (const uint8_t *)lut->data, (uint8_t *)y->data);
    } else {
        size_t C = (size_t)last_dim(x);
        tq_lookup_channels((const uint8_t *)x->data, (size_t)k / C, C, sgn, (const uint8_t *)lut->data,
                           (const int8_t *)input(c, n, 2)->data, (uint8_t *)y->data);
    }
    return TFLM_OK;
}

/* ---- TSPTQ_ADD_2S and TSPTQ_ADD_2S_I16 ---------------------------------------------------------------------------- */
/* a int8, b int8 (ADD_2S) or int16 (ADD_2S_I16: saturated into its int8 code first), params int32 (6, C) or (6, 1).
 * Scratch (ADD_2S_I16): one row of b's codes (C bytes). */
enum { ADD_A_ZP, ADD_B_ZP, ADD_OUT_ZP };
static const char *const ADD_KEYS[] = {"a_zp", "b_zp", "out_zp"};

static tflm_status add_prepare(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *a = input(c, n, 0), *b = input(c, n, 1), *p = input(c, n, 2), *y = output(c, n);
    int32_t C = last_dim(a);
    int i16 = d->name[strlen(d->name) - 1] == '6'; /* TSPTQ_ADD_2S_I16 */
    int i;
    NEED_TYPE(c, d, a, "a", TFLM_INT8, -1);
    NEED_TYPE(c, d, b, "b", i16 ? TFLM_INT16 : TFLM_INT8, -1);
    NEED_TYPE(c, d, p, "params", TFLM_INT32, -1);
    NEED_TYPE(c, d, y, "the output", TFLM_INT8, -1);
    NEED(c, d, a->dims->size == b->dims->size && a->dims->size == y->dims->size, "a, b and the output differ in rank");
    for (i = 0; i < a->dims->size; i++)
        NEED(c, d, a->dims->data[i] == b->dims->data[i] && a->dims->data[i] == y->dims->data[i],
             "a, b and the output differ in shape (no broadcasting)");
    NEED(c, d, numel(p) == 6 * (int64_t)C || numel(p) == 6, "params has %lld entries, not 6 x %d or 6",
         (long long)numel(p), (int)C);
    for (i = 0; i < 3; i++)
        NEED(c, d, o->opt[i] >= -128 && o->opt[i] <= 127, "%s %lld outside int8", ADD_KEYS[i], (long long)o->opt[i]);
    NEED(c, d, p->data != NULL, "params must be a constant tensor");
    { /* the C runtime's limits (add.c's TSPTQ_ADD_2S prepare): the kernel shifts by these */
        const int32_t *pp = (const int32_t *)p->data;
        int64_t k, np = numel(p) / 6;
        for (k = 0; k < np; k++)
            NEED(c, d, pp[k] >= 0 && pp[2 * np + k] >= 0 && pp[4 * np + k] >= 0 && pp[np + k] >= -31 && pp[np + k] <= 0 &&
                           pp[3 * np + k] >= -31 && pp[3 * np + k] <= 0 && pp[5 * np + k] >= -31 && pp[5 * np + k] <= 31,
                 "rescaling parameters of channel %lld out of range", (long long)k);
    }
    return i16 ? want_scratch(c, o, d, C) : TFLM_OK;
}

static tflm_status add_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *a = input(c, n, 0), *b = input(c, n, 1), *p = input(c, n, 2), *y = output(c, n);
    int32_t C = last_dim(a), n_params = (int32_t)(numel(p) / 6);
    int64_t rows = numel(a) / C, r;
    int32_t a_zp = (int32_t)o->opt[ADD_A_ZP], b_zp = (int32_t)o->opt[ADD_B_ZP], out_zp = (int32_t)o->opt[ADD_OUT_ZP];
    if (b->type == TFLM_INT8) {
        tq_add((const int8_t *)a->data, (const int8_t *)b->data, (int32_t)rows, C, a_zp, b_zp,
               (const int32_t *)p->data, n_params, out_zp, (int8_t *)y->data);
        return TFLM_OK;
    }
    (void)d;
    {
        int8_t *code = (int8_t *)get_scratch(c, o->scratch);
        const int16_t *v = (const int16_t *)b->data;
        for (r = 0; r < rows; r++) {
            tq_add_2s_i16_code(v + r * C, C, b_zp, code);
            tq_add((const int8_t *)a->data + r * C, code, 1, C, a_zp, b_zp, (const int32_t *)p->data, n_params, out_zp,
                   (int8_t *)y->data + r * C);
        }
    }
    return TFLM_OK;
}

/* ---- TSPTQ_PLANE_2S ----------------------------------------------------------------------------------------------- */
enum { PL_PLANE, PL_BITS, PL_SIGNED };
static const char *const PLANE_KEYS[] = {"plane", "bits", "signed_fine"};

static tflm_status plane_prepare(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0), *y = output(c, n);
    NEED_TYPE(c, d, x, "the code", TFLM_UINT8, TFLM_INT8);
    NEED_TYPE(c, d, y, "the plane", TFLM_INT8, -1);
    NEED(c, d, numel(y) == numel(x), "the output has %lld values, the input %lld", (long long)numel(y),
         (long long)numel(x));
    NEED(c, d, o->opt[PL_PLANE] == 0 || o->opt[PL_PLANE] == 1, "plane %lld is neither 0 nor 1",
         (long long)o->opt[PL_PLANE]);
    NEED(c, d, o->opt[PL_BITS] >= 3 && o->opt[PL_BITS] <= 8, "bits %lld outside 3..8", (long long)o->opt[PL_BITS]);
    return TFLM_OK;
}

static tflm_status plane_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0);
    (void)d;
    tq_plane_2s((const uint8_t *)x->data, numel(x), (int32_t)o->opt[PL_PLANE], (int32_t)o->opt[PL_BITS],
                (int32_t)o->opt[PL_SIGNED], (int8_t *)output(c, n)->data);
    return TFLM_OK;
}

/* ---- TSPTQ_PV_SUM_2S ---------------------------------------------------------------------------------------------- */
enum { PV_BITS, PV_M, PV_SIGNED, PV_B_ZP, PV_MULT, PV_SHIFT, PV_OUT_ZP };
static const char *const PV_KEYS[] = {"bits", "ratio_log2", "signed_fine", "b_zp", "mult", "shift", "out_zp"};

static tflm_status pv_prepare(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *f = input(c, n, 0), *g = input(c, n, 1), *p = input(c, n, 2), *y = output(c, n);
    int32_t N = last_dim(p), M = last_dim(f);
    NEED_TYPE(c, d, f, "acc_fine", TFLM_INT32, -1);
    NEED_TYPE(c, d, g, "acc_coarse", TFLM_INT32, -1);
    NEED_TYPE(c, d, p, "the code of P", TFLM_UINT8, -1);
    NEED_TYPE(c, d, y, "the output", TFLM_INT8, -1);
    NEED(c, d, numel(g) == numel(f) && numel(y) == numel(f), "acc_fine, acc_coarse and the output differ in size");
    NEED(c, d, N >= 1 && M >= 1, "P or the products have an empty last axis");
    NEED(c, d, numel(f) / M == numel(p) / N, "P has %lld rows, the products %lld", (long long)(numel(p) / N),
         (long long)(numel(f) / M));
    NEED(c, d, o->opt[PV_BITS] >= 3 && o->opt[PV_BITS] <= 8, "bits %lld outside 3..8", (long long)o->opt[PV_BITS]);
    NEED(c, d, o->opt[PV_M] >= 0 && o->opt[PV_M] <= 8, "ratio_log2 %lld outside 0..8", (long long)o->opt[PV_M]);
    NEED(c, d, o->opt[PV_B_ZP] >= -128 && o->opt[PV_B_ZP] <= 127 && o->opt[PV_OUT_ZP] >= -128 &&
                   o->opt[PV_OUT_ZP] <= 127 && o->opt[PV_SIGNED] >= 0 && o->opt[PV_SIGNED] <= 1,
         "zero points or signed_fine out of range");
    NEED(c, d, o->opt[PV_MULT] >= 0 && o->opt[PV_MULT] < ((int64_t)1 << 31) && o->opt[PV_SHIFT] >= -31 &&
                   o->opt[PV_SHIFT] <= 30, "multiplier out of range");
    return TFLM_OK;
}

static tflm_status pv_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *f = input(c, n, 0), *p = input(c, n, 2);
    int32_t N = last_dim(p), M = last_dim(f);
    (void)d;
    tq_pv_sum_2s((const int32_t *)f->data, (const int32_t *)input(c, n, 1)->data, (const uint8_t *)p->data,
                 numel(p) / N, N, M, (int32_t)o->opt[PV_BITS], (int32_t)o->opt[PV_M], (int32_t)o->opt[PV_SIGNED],
                 (int32_t)o->opt[PV_B_ZP], (int32_t)o->opt[PV_MULT], (int32_t)o->opt[PV_SHIFT],
                 (int32_t)o->opt[PV_OUT_ZP], (int8_t *)output(c, n)->data);
    return TFLM_OK;
}

/* ---- TSPTQ_SOFTMAX_2S --------------------------------------------------------------------------------------------- */
/* x int8 (..., N); exp_lut int32, 256 or 256 L (one table per head, L = x.shape[-3]). Scratch: 4 N bytes. */
enum { SM_KIND, SM_MULT, SM_SHIFT, SM_OUT_ZP, SM_BITS, SM_M, SM_SIGNED };
static const char *const SM_KEYS[] = {"out_kind", "mult", "shift", "out_zp", "bits", "ratio_log2", "signed_fine"};

static tflm_status sm_prepare(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0), *lut = input(c, n, 1), *y = output(c, n);
    int32_t N = last_dim(x), L = x->dims->size >= 3 ? x->dims->data[x->dims->size - 3] : 1;
    const int32_t *t = (const int32_t *)lut->data;
    int64_t i;
    int kind = (int)o->opt[SM_KIND];
    NEED_TYPE(c, d, x, "x", TFLM_INT8, -1);
    NEED_TYPE(c, d, lut, "exp_lut", TFLM_INT32, -1);
    NEED(c, d, t != NULL, "exp_lut must be a constant tensor"); /* activations have no data before invoke */
    NEED(c, d, kind == TQ_UNIFORM || kind == TQ_TWO_SCALE || kind == TQ_LOG2, "out_kind %d is not 0, 2 or 4", kind);
    NEED_TYPE(c, d, y, "the output", kind == TQ_UNIFORM ? TFLM_INT8 : TFLM_UINT8, -1);
    NEED(c, d, numel(y) == numel(x), "the output has %lld values, the input %lld", (long long)numel(y),
         (long long)numel(x));
    NEED(c, d, N >= 1 && N <= 2047, "N = %d is outside 1..2047", (int)N);
    NEED(c, d, numel(lut) == 256 || numel(lut) == 256 * (int64_t)L, "the lookup table must have 256%s int32 entries",
         L > 1 ? " or 256 L" : "");
    for (i = 0; i < numel(lut); i++) {
        NEED(c, d, t[i] >= 0 && t[i] <= (1 << 20), "exp table entry %lld out of range", (long long)i);
        NEED(c, d, i % 256 || t[i] == (1 << 20), "exp table must start at 2^20");
    }
    NEED(c, d, o->opt[SM_MULT] >= 0 && o->opt[SM_MULT] < ((int64_t)1 << 31) && o->opt[SM_SHIFT] >= 0 &&
                   o->opt[SM_SHIFT] <= 62, "multiplier out of range");
    /* the C runtime's limits (softmax_2s.c's prepare): the kernel shifts by bits and ratio_log2 */
    NEED(c, d, o->opt[SM_OUT_ZP] >= -128 && o->opt[SM_OUT_ZP] <= 127 && o->opt[SM_BITS] >= 2 && o->opt[SM_BITS] <= 8 &&
                   o->opt[SM_M] >= 0 && o->opt[SM_M] <= 8 && o->opt[SM_SIGNED] >= 0 && o->opt[SM_SIGNED] <= 1,
         "options out of range");
    return want_scratch(c, o, d, 4 * (int64_t)N);
}

static tflm_status sm_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0), *lut = input(c, n, 1);
    int32_t N = last_dim(x), L = numel(lut) == 256 ? 1 : x->dims->data[x->dims->size - 3];
    int64_t rows = numel(x) / N, R = L > 1 ? x->dims->data[x->dims->size - 2] : 1;
    (void)d;
    tq_softmax_2s_heads((const int8_t *)x->data, 0, rows, N, R, L, (const int32_t *)lut->data,
                        (int32_t)o->opt[SM_KIND], (int32_t)o->opt[SM_MULT], (int32_t)o->opt[SM_SHIFT],
                        (int32_t)o->opt[SM_OUT_ZP], (int32_t)o->opt[SM_BITS], (int32_t)o->opt[SM_M],
                        (int32_t)o->opt[SM_SIGNED], (uint8_t *)output(c, n)->data,
                        (int32_t *)get_scratch(c, o->scratch));
    return TFLM_OK;
}

/* ---- TSPTQ_BMM_2S (the --pv-on-cpu file) ------------------------------------------------------------------------- */
enum { BM_KIND, BM_BITS, BM_M, BM_SIGNED, BM_LOG2F, BM_B_ZP, BM_MULT, BM_SHIFT, BM_OUT_ZP };
static const char *const BM_KEYS[] = {"a_kind", "bits", "ratio_log2", "signed_fine", "log2_frac",
                                      "b_zp", "mult", "shift", "out_zp"};

static tflm_status bmm_prepare(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *a = input(c, n, 0), *b = input(c, n, 1), *y = output(c, n);
    int32_t N = last_dim(a), M = last_dim(b);
    int kind = (int)o->opt[BM_KIND];
    NEED_TYPE(c, d, a, "a", TFLM_UINT8, -1);
    NEED_TYPE(c, d, b, "b", TFLM_INT8, -1);
    NEED_TYPE(c, d, y, "the output", TFLM_INT8, -1);
    NEED(c, d, N >= 1 && M >= 1, "a or b has an empty last axis");
    NEED(c, d, kind == TQ_TWO_SCALE || kind == TQ_LOG2, "a_kind %d is not 2 or 4", kind);
    NEED(c, d, a->dims->size >= 2 && a->dims->data[a->dims->size - 2] == N, "a is not square in its last two axes");
    NEED(c, d, numel(b) / ((int64_t)N * M) == numel(a) / ((int64_t)N * N) && numel(b) % ((int64_t)N * M) == 0,
         "a and b differ in their batch");
    NEED(c, d, numel(y) == numel(b), "the output has %lld values, not %lld", (long long)numel(y), (long long)numel(b));
    NEED(c, d, o->opt[BM_MULT] >= 0 && o->opt[BM_MULT] < ((int64_t)1 << 31) && o->opt[BM_SHIFT] >= -31 &&
                   o->opt[BM_SHIFT] <= 30, "multiplier out of range");
    /* the C runtime's limits (bmm_2s.c's prepare) */
    NEED(c, d, o->opt[BM_BITS] >= 2 && o->opt[BM_BITS] <= 8 && o->opt[BM_M] >= 0 && o->opt[BM_M] <= 8 &&
                   o->opt[BM_SIGNED] >= 0 && o->opt[BM_SIGNED] <= 1 && o->opt[BM_LOG2F] >= 0 && o->opt[BM_LOG2F] <= 30 &&
                   o->opt[BM_B_ZP] >= -128 && o->opt[BM_B_ZP] <= 127 && o->opt[BM_OUT_ZP] >= -128 &&
                   o->opt[BM_OUT_ZP] <= 127,
         "options out of range");
    NEED(c, d, (int64_t)N * (kind == TQ_LOG2 ? (int64_t)1 << o->opt[BM_LOG2F] : (int64_t)127 << o->opt[BM_M]) * 255 <=
                   2147483647LL, "the int32 accumulator could overflow");
    return want_scratch(c, o, d, 4 * (int64_t)N);
}

static tflm_status bmm_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *a = input(c, n, 0), *b = input(c, n, 1);
    int32_t N = last_dim(a), M = last_dim(b);
    (void)d;
    tq_bmm_2s((const uint8_t *)a->data, (const int8_t *)b->data, (int32_t)(numel(a) / ((int64_t)N * N)), N, M,
              (int32_t)o->opt[BM_KIND], (int32_t)o->opt[BM_BITS], (int32_t)o->opt[BM_M], (int32_t)o->opt[BM_SIGNED],
              (int32_t)o->opt[BM_LOG2F], (int32_t)o->opt[BM_B_ZP], (int32_t)o->opt[BM_MULT],
              (int32_t)o->opt[BM_SHIFT], (int32_t)o->opt[BM_OUT_ZP], (int8_t *)output(c, n)->data,
              (int32_t *)get_scratch(c, o->scratch));
    return TFLM_OK;
}

/* ---- TSPTQ_TOKEN_MEAN_I16 ---------------------------------------------------------------------------------------- */
/* x int16 (B, T, D) (TSPTQ_LAYERNORM_2S_I16's output), shift int8 (D) constant; int16 (B, 1, D) out: the mean of
 * tokens first.. per channel, rounded half away from zero onto the channel's step 2^shift_c, saturated to int16. */
enum { TM_FIRST };
static const char *const TM_KEYS[] = {"first"};

static tflm_status tm_prepare(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0), *sh = input(c, n, 1), *y = output(c, n);
    const int8_t *k = (const int8_t *)sh->data;
    int32_t D = last_dim(x), T = x->dims->size == 3 ? x->dims->data[1] : 0, j;
    NEED_TYPE(c, d, x, "x", TFLM_INT16, -1);
    NEED_TYPE(c, d, sh, "shift", TFLM_INT8, -1);
    NEED_TYPE(c, d, y, "the output", TFLM_INT16, -1);
    NEED(c, d, x->dims->size == 3 && D >= 1 && T >= 1, "x must be (batch, tokens, channels)");
    NEED(c, d, o->opt[TM_FIRST] >= 0 && o->opt[TM_FIRST] < T, "first %lld is not a token of %d",
         (long long)o->opt[TM_FIRST], (int)T);
    NEED(c, d, numel(y) == numel(x) / T, "the output has %lld values, not one row of %d per image",
         (long long)numel(y), (int)D);
    NEED(c, d, k != NULL && numel(sh) == D, "shift must be a constant with one entry per channel");
    for (j = 0; j < D; j++) NEED(c, d, k[j] >= 0 && k[j] <= 7, "channel %d: shift %d outside 0..7", (int)j, (int)k[j]);
    return TFLM_OK;
}

static tflm_status tm_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0);
    const int8_t *k = (const int8_t *)input(c, n, 1)->data;
    int32_t T = x->dims->data[1], D = x->dims->data[2];
    (void)d;
    tq_token_mean_i16((const int16_t *)x->data, numel(x) / ((int64_t)T * D), T, D, (int32_t)o->opt[TM_FIRST], k,
                      (int16_t *)output(c, n)->data);
    return TFLM_OK;
}

/* ---- TSPTQ_LN_NEG_MEAN and TSPTQ_LN_RSTD (the LayerNorm on the NPU) ---------------------------------------------- */
/* x int16 (..., D), the int16 residual stream (zero point 0; quantization is not read); int16 (..., 1) out, one value
 * per row: -round(S / D) (TSPTQ_LN_NEG_MEAN, no options) or min(32767, round(2^(c + e) / sigma)) (TSPTQ_LN_RSTD,
 * options eps, c). D <= 4096 and the option ranges keep every sum and V in int64 (variant_kernels.h). */
enum { LR_EPS, LR_C };
static const char *const LR_KEYS[] = {"eps", "c"};

static tflm_status ln_stats_prepare(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0), *y = output(c, n);
    int32_t D = last_dim(x);
    int i;
    NEED_TYPE(c, d, x, "x", TFLM_INT16, -1);
    NEED_TYPE(c, d, y, "the output", TFLM_INT16, -1);
    NEED(c, d, x->dims->size >= 1 && D >= 1 && D <= 4096, "x's last axis (D = %d) is outside 1..4096", (int)D);
    NEED(c, d, y->dims->size == x->dims->size && last_dim(y) == 1,
         "the output must have x's shape with a last axis of 1 (x's rank %d, the output's rank %d, last axis %d)",
         x->dims->size, y->dims->size, (int)last_dim(y));
    for (i = 0; i + 1 < x->dims->size; i++)
        NEED(c, d, y->dims->data[i] == x->dims->data[i], "the output's axis %d is %d, x's %d", i, (int)y->dims->data[i],
             (int)x->dims->data[i]);
    if (d->n_keys) /* TSPTQ_LN_RSTD: 2^(c + e) <= 2^62 (e <= 20) and V < 2^63 need these */
        NEED(c, d, o->opt[LR_EPS] >= 0 && o->opt[LR_EPS] <= ((int64_t)1 << 62) && o->opt[LR_C] >= 0 &&
                       o->opt[LR_C] <= 42,
             "options out of range: eps %lld (0..2^62), c %lld (0..42)", (long long)o->opt[LR_EPS],
             (long long)o->opt[LR_C]);
    return TFLM_OK;
}

static tflm_status ln_neg_mean_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0);
    int32_t D = last_dim(x);
    (void)o;
    (void)d;
    tq_ln_neg_mean_i16((const int16_t *)x->data, numel(x) / D, D, (int16_t *)output(c, n)->data);
    return TFLM_OK;
}

static tflm_status ln_rstd_eval(tflm_context *c, tflm_node *n, op_data *o, const op_def *d) {
    tflm_eval_tensor *x = input(c, n, 0);
    int32_t D = last_dim(x);
    (void)d;
    tq_ln_rstd_i16((const int16_t *)x->data, numel(x) / D, D, o->opt[LR_EPS], (int32_t)o->opt[LR_C],
                   (int16_t *)output(c, n)->data);
    return TFLM_OK;
}

/* ---- the op table and the TFLM entry points ------------------------------------------------------------------- */

#define N_KEYS(k) ((int)(sizeof(k) / sizeof((k)[0])))
enum { OP_LN, OP_GELU, OP_ADD_I16, OP_ADD, OP_PLANE, OP_PV, OP_SOFTMAX, OP_BMM, OP_TM, OP_LN_NM, OP_LN_RS, N_OPS };
static const op_def DEFS[N_OPS] = {
    {"TSPTQ_LAYERNORM_2S_I16", LN_KEYS, N_KEYS(LN_KEYS), 5, 5, ln_prepare, ln_eval},
    {"TSPTQ_GELU_2S", NULL, 0, 2, 3, gelu_prepare, gelu_eval},
    {"TSPTQ_ADD_2S_I16", ADD_KEYS, N_KEYS(ADD_KEYS), 3, 3, add_prepare, add_eval},
    {"TSPTQ_ADD_2S", ADD_KEYS, N_KEYS(ADD_KEYS), 3, 3, add_prepare, add_eval},
    {"TSPTQ_PLANE_2S", PLANE_KEYS, N_KEYS(PLANE_KEYS), 1, 1, plane_prepare, plane_eval},
    {"TSPTQ_PV_SUM_2S", PV_KEYS, N_KEYS(PV_KEYS), 3, 3, pv_prepare, pv_eval},
    {"TSPTQ_SOFTMAX_2S", SM_KEYS, N_KEYS(SM_KEYS), 2, 2, sm_prepare, sm_eval},
    {"TSPTQ_BMM_2S", BM_KEYS, N_KEYS(BM_KEYS), 2, 2, bmm_prepare, bmm_eval},
    {"TSPTQ_TOKEN_MEAN_I16", TM_KEYS, N_KEYS(TM_KEYS), 2, 2, tm_prepare, tm_eval},
    {"TSPTQ_LN_NEG_MEAN", NULL, 0, 1, 1, ln_stats_prepare, ln_neg_mean_eval},
    {"TSPTQ_LN_RSTD", LR_KEYS, N_KEYS(LR_KEYS), 1, 1, ln_stats_prepare, ln_rstd_eval},
};

static void *op_init(tflm_context *c, const char *buf, size_t len, const op_def *d) {
    op_data *o = (op_data *)alloc_persistent(c, sizeof(op_data));
    tq_fxmap map;
    int i, have_map;
    if (!o) return NULL;
    memset(o, 0, sizeof *o);
    o->missing = -1;
    o->scratch = -1;
    have_map = buf && len && len < UINT32_MAX && tq_fx_map((const uint8_t *)buf, (uint32_t)len, &map);
    for (i = 0; i < d->n_keys; i++) {
        int k = have_map ? tq_fx_find(&map, d->keys[i]) : -1;
        if (k < 0 || !tq_fx_int(&map, k, &o->opt[i])) {
            o->missing = i;
            break;
        }
    }
    return o;
}

static tflm_status op_prepare(tflm_context *c, tflm_node *n, const op_def *d) {
    op_data *o = (op_data *)n->user_data;
    int i;
    if (!o) return op_fail(c, d->name, "no arena for its options");
    if (o->missing >= 0) return op_fail(c, d->name, "option '%s' is missing or not an integer", d->keys[o->missing]);
    NEED(c, d, n->inputs->size >= d->min_inputs && n->inputs->size <= d->max_inputs && n->outputs->size == 1,
         "%d inputs and %d outputs, expected %d to %d inputs and 1 output", n->inputs->size, n->outputs->size,
         d->min_inputs, d->max_inputs);
    for (i = 0; i < n->inputs->size; i++)
        NEED(c, d, n->inputs->data[i] >= 0, "input %d is missing", i);
    return d->prepare(c, n, o, d);
}

static tflm_status op_eval(tflm_context *c, tflm_node *n, const op_def *d) {
    return d->eval(c, n, (op_data *)n->user_data, d);
}

#define OP_ENTRY(ID)                                                                                                \
    static void *ID##_init(tflm_context *c, const char *b, size_t n) { return op_init(c, b, n, &DEFS[ID]); }       \
    static tflm_status ID##_prepare(tflm_context *c, tflm_node *n) { return op_prepare(c, n, &DEFS[ID]); }          \
    static tflm_status ID##_invoke(tflm_context *c, tflm_node *n) { return op_eval(c, n, &DEFS[ID]); }
OP_ENTRY(OP_LN)
OP_ENTRY(OP_GELU)
OP_ENTRY(OP_ADD_I16)
OP_ENTRY(OP_ADD)
OP_ENTRY(OP_PLANE)
OP_ENTRY(OP_PV)
OP_ENTRY(OP_SOFTMAX)
OP_ENTRY(OP_BMM)
OP_ENTRY(OP_TM)
OP_ENTRY(OP_LN_NM)
OP_ENTRY(OP_LN_RS)

typedef struct {
    void *(*init)(tflm_context *, const char *, size_t);
    tflm_status (*prepare)(tflm_context *, tflm_node *);
    tflm_status (*invoke)(tflm_context *, tflm_node *);
} entry;
static const entry ENTRIES[N_OPS] = {
    {OP_LN_init, OP_LN_prepare, OP_LN_invoke},
    {OP_GELU_init, OP_GELU_prepare, OP_GELU_invoke},
    {OP_ADD_I16_init, OP_ADD_I16_prepare, OP_ADD_I16_invoke},
    {OP_ADD_init, OP_ADD_prepare, OP_ADD_invoke},
    {OP_PLANE_init, OP_PLANE_prepare, OP_PLANE_invoke},
    {OP_PV_init, OP_PV_prepare, OP_PV_invoke},
    {OP_SOFTMAX_init, OP_SOFTMAX_prepare, OP_SOFTMAX_invoke},
    {OP_BMM_init, OP_BMM_prepare, OP_BMM_invoke},
    {OP_TM_init, OP_TM_prepare, OP_TM_invoke},
    {OP_LN_NM_init, OP_LN_NM_prepare, OP_LN_NM_invoke},
    {OP_LN_RS_init, OP_LN_RS_prepare, OP_LN_RS_invoke},
};

/* The names this library registers, for tsptq.npu.tflm (a NULL-terminated list). */
__attribute__((visibility("default"))) const char *tsptq_tflm_op_name(int i) { return i >= 0 && i < N_OPS ? DEFS[i].name : NULL; }

static bool reg_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return false;
}

/* A data pointer returned by dlsym as a function pointer (POSIX guarantees the conversion; C99 does not). */
#define SYM(h, name, fp) memcpy(&(fp), &(void *){dlsym((h), (name))}, sizeof(void *))

/* The registerer: bool fn(tflite::PythonOpsResolver *). See the top of this file. */
__attribute__((visibility("default"))) bool tsptq_tflm_register(void *resolver_ptr) {
    tflm_resolver *r = (tflm_resolver *)resolver_ptr;
    const tflm_registration *(*find_op)(const void *, const char *) = NULL;
    const char *(*type_name)(int) = NULL;
    static const int types[5] = {TFLM_INT32, TFLM_UINT8, TFLM_INT64, TFLM_INT16, TFLM_INT8};
    static const char *const type_names[5] = {"INT32", "UINT8", "INT64", "INT16", "INT8"};
    const char *vtable;
    Dl_info info;
    void *h;
    unsigned int base, i;
    last_error[0] = 0;
    if (!r || !dladdr(r->vptr, &info) || !info.dli_fname)
        return reg_fail("the resolver's vtable lies in no loaded library");
    h = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    if (!h) return reg_fail("%s is not loaded", info.dli_fname);
    vtable = (const char *)dlsym(h, TFLM_SYM_RESOLVER_VTABLE);
    SYM(h, TFLM_SYM_GET_EVAL_TENSOR, get_eval_tensor);
    SYM(h, TFLM_SYM_ALLOC_PERSISTENT, alloc_persistent);
    SYM(h, TFLM_SYM_REQUEST_SCRATCH, request_scratch);
    SYM(h, TFLM_SYM_GET_SCRATCH, get_scratch);
    SYM(h, TFLM_SYM_REPORT_ERROR, report_error);
    SYM(h, TFLM_SYM_TYPE_NAME, type_name);
    SYM(h, TFLM_SYM_FIND_OP, find_op);
    dlclose(h); /* RTLD_NOLOAD took a reference; the interpreter holds its own */
    if (!vtable || !get_eval_tensor || !alloc_persistent || !request_scratch || !get_scratch || !report_error ||
        !type_name || !find_op)
        return reg_fail("%s lacks a TFLM symbol tsptq needs (another tflite-micro build?)", info.dli_fname);
    if (r->vptr != (const void *)(vtable + 16))
        return reg_fail("the resolver is not a tflite::PythonOpsResolver of %s", info.dli_fname);
    for (i = 0; i < 5; i++)
        if (strcmp(type_name(types[i]), type_names[i]) != 0)
            return reg_fail("TfLiteType %d is %s in this build, not %s", types[i], type_name(types[i]), type_names[i]);
    base = r->registrations_len;
    if (base > TFLM_RESOLVER_CAPACITY - N_OPS)
        return reg_fail("the op resolver holds %u registrations: no room for %d more", base, N_OPS);
    for (i = 0; i < N_OPS; i++) {
        if (find_op(r, DEFS[i].name)) return reg_fail("%s is registered already", DEFS[i].name);
    }
    for (i = 0; i < N_OPS; i++) {
        tflm_registration *g = &r->registrations[base + i];
        memset(g, 0, sizeof *g);
        g->init = ENTRIES[i].init;
        g->prepare = ENTRIES[i].prepare;
        g->invoke = ENTRIES[i].invoke;
        g->builtin_code = TFLM_BUILTIN_CUSTOM;
        g->custom_name = DEFS[i].name;
    }
    r->registrations_len = base + N_OPS;
    for (i = 0; i < N_OPS; i++) {
        if (find_op(r, DEFS[i].name) != &r->registrations[base + i]) {
            r->registrations_len = base; /* undo: the layout is not what tflm_abi.h says */
            return reg_fail("the wheel's FindOp does not find %s where it was registered", DEFS[i].name);
        }
    }
    return true;
}
