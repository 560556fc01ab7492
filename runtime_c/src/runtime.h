/* tsptq runtime: what loader.c, planner.c and interpreter.c share (internal). */
#ifndef TSPTQ_RUNTIME_H
#define TSPTQ_RUNTIME_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "../include/tsptq.h"

/* Op kinds (tsptq_op.kind). The order of the names is tq_op_names[]. */
enum {
    TQ_OP_CONV_2D = 0, TQ_OP_RESHAPE, TQ_OP_CONCATENATION, TQ_OP_ADD, TQ_OP_FULLY_CONNECTED, TQ_OP_TRANSPOSE,
    TQ_OP_BATCH_MATMUL, TQ_OP_STRIDED_SLICE,
    TQ_OP_LAYERNORM_2S, TQ_OP_SOFTMAX_2S, TQ_OP_GELU_2S, TQ_OP_FC_2S, TQ_OP_BMM_2S, TQ_OP_ADD_2S,
    TQ_OP_COUNT
};
extern const char *const tq_op_names[TQ_OP_COUNT];

/* Option slots (tsptq_op.opt[]) of each op; custom ops hold their flexbuffer fields in this order. */
enum { /* TSPTQ_LAYERNORM_2S */ TQ_LN_IN_ZP = 0, TQ_LN_EPS, TQ_LN_OUT_ZP, TQ_LN_OUT_SHIFT };
enum { /* TSPTQ_SOFTMAX_2S */ TQ_SM_OUT_KIND = 0, TQ_SM_MULT, TQ_SM_SHIFT, TQ_SM_OUT_ZP, TQ_SM_BITS, TQ_SM_M,
       TQ_SM_SIGNED_FINE };
enum { /* TSPTQ_FC_2S */ TQ_FC_IN_KIND = 0, TQ_FC_IN_ZP, TQ_FC_BITS, TQ_FC_M, TQ_FC_SIGNED_FINE, TQ_FC_NEG_MULT,
       TQ_FC_NEG_SHIFT, TQ_FC_OUT_ZP };
enum { /* TSPTQ_BMM_2S */ TQ_BMM_A_KIND = 0, TQ_BMM_BITS, TQ_BMM_M, TQ_BMM_SIGNED_FINE, TQ_BMM_LOG2_FRAC, TQ_BMM_B_ZP,
       TQ_BMM_MULT, TQ_BMM_SHIFT, TQ_BMM_OUT_ZP };
enum { /* TSPTQ_ADD_2S */ TQ_ADD2S_A_ZP = 0, TQ_ADD2S_B_ZP, TQ_ADD2S_OUT_ZP };
/* builtins: CONV_2D stride in opt[0]; BATCH_MATMUL adj_y, mult, shift in opt[0..2]; CONCATENATION axis (>= 0) in
 * opt[0]; ADD's six parameters (a_mult, a_shift, b_mult, b_shift, out_mult, out_shift) in opt[0..5];
 * FULLY_CONNECTED: opt[0] = number of (mult, shift) pairs, opt[1] = per_channel. */
enum { TQ_CONV_STRIDE = 0 };
enum { TQ_BMMB_ADJ_Y = 0, TQ_BMMB_MULT, TQ_BMMB_SHIFT };
enum { TQ_CAT_AXIS = 0 };
enum { TQ_FCB_N_PARAMS = 0, TQ_FCB_PER_CHANNEL };

#define TQ_MAX_ARENA 0x7FFFFFF0u /* bytes (persistent + activations) */
/* Round x up to a multiple of a, in 64 bits whatever the type of x (a uint32_t near 2^32 must not wrap to 0). */
#define TQ_ALIGN_UP(x, a) (((uint64_t)(x) + ((a) - 1)) / (a) * (a))

/* Fill `st` (if not NULL) with `code` and a message; returns `code`. A small formatter (no libc):
 * %s (const char *), %.*s (int, const char *), %d (int), %u (unsigned), %L (int64_t), %Z (size_t), %% . */
int tq_fail(tsptq_status *st, int code, const char *fmt, ...);
void tq_ok(tsptq_status *st);
int tq_vformat(char *out, size_t cap, const char *fmt, va_list ap);

/* Size in bytes of one element of a TFLite type the runtime supports (0 otherwise). */
uint32_t tq_type_size(int type);
/* Read the i-th float32 scale of a tensor (its first when i is out of range; 0 if unquantized). */
float tq_scale(const tsptq_tensor *t, uint32_t i);

/* planner.c: lifetimes, aliases, scratch and persistent sizes are set by the loader; this assigns offsets. */
int tq_plan(tsptq_model *m); /* 0: the arena would exceed TQ_MAX_ARENA */
/* Scratch bytes an op needs in the arena during its run (kernels.h). 64-bit: the loader checks the value against
 * its limits before it stores it in the op's uint32_t fields. */
uint64_t tq_op_scratch(const tsptq_model *m, const tsptq_op *op);
/* Persistent bytes (per-channel mult/shift int32 pairs) an op needs (64-bit, as tq_op_scratch). */
uint64_t tq_op_persistent(const tsptq_model *m, const tsptq_op *op);

/* loader.c: the builtin multipliers of CONV_2D / FULLY_CONNECTED channel c (TFLite's Prepare); 0 if out of range. */
int tq_builtin_multiplier(const tsptq_model *m, const tsptq_op *op, uint32_t c, int32_t *mult, int32_t *shift);

/* interpreter.c: run op k alone (the LiteRT delegate); the bytes of tensor i after prepare. */
int tq_run_one(tsptq_model *m, uint32_t k);
uint8_t *tq_tensor_data(tsptq_model *m, int32_t i);

#endif
