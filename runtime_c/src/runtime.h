/* tsptq runtime: what the loader, the planner, the interpreter and the op files share (internal). The ops
 * themselves are described by op_table.h. */
#ifndef TSPTQ_RUNTIME_H
#define TSPTQ_RUNTIME_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../include/tsptq.h"
#include "le.h"

#define TQ_MAX_ARENA 0x7FFFFFF0u /* bytes (persistent + prepacked + activations) */
#define TQ_PACK_ALIGNMENT 64     /* each op's prepacked bytes (AVX-512 aligned loads) */
#define TQ_MAX_DIM (1 << 24)              /* every tensor dimension */
#define TQ_MAX_TENSOR_BYTES 0x7FFFFFF0u   /* one tensor, the file, the persistent part, an op's scratch */
#define TQ_ACC_LIMIT 2147483647LL         /* int32 accumulators: bounds the checks keep sums under */
/* A tensor's name for a message: %.*s (at most 64 bytes) */
#define TNAME(t) (int)((t)->name_len > 64 ? 64 : (t)->name_len), (const char *)(t)->name
/* Round x up to a multiple of a, in 64 bits whatever the type of x (a uint32_t near 2^32 must not wrap to 0). */
#define TQ_ALIGN_UP(x, a) (((uint64_t)(x) + ((a) - 1)) / (a) * (a))

/* Fill `st` (if not NULL) with `code` and a message; returns `code`. A small formatter (no libc):
 * %s (const char *), %.*s (int, const char *), %d (int), %u (unsigned), %L (int64_t), %Z (size_t), %% . */
int tq_fail(tsptq_status *st, int code, const char *fmt, ...);
void tq_ok(tsptq_status *st);
int tq_vformat(char *out, size_t cap, const char *fmt, va_list ap);

/* Size in bytes of one element of a TFLite type the runtime supports (0 otherwise). */
static inline uint32_t tq_type_size(int type) {
    switch (type) {
    case TSPTQ_INT8: case TSPTQ_UINT8: return 1;
    case TSPTQ_INT32: return 4;
    case TSPTQ_INT64: return 8;
    default: return 0;
    }
}
/* Read the i-th float32 scale of a tensor (its first when i is out of range; 0 if unquantized). */
static inline float tq_scale(const tsptq_tensor *t, uint32_t i) {
    uint32_t bits;
    float f;
    if (!t->scales || !t->n_scales) return 0.0f;
    if (i >= t->n_scales) i = 0;
    bits = tq_le32(t->scales + 4 * (size_t)i);
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The i-th zero point of a tensor (its first when i is out of range; 0 when the file gives none). The loader
 * checked each against the range of the tensor's dtype. */
static inline int32_t tq_zero_point(const tsptq_tensor *t, uint32_t i) {
    if (!t->zero_points || !t->n_scales) return 0;
    if (i >= t->n_scales) i = 0;
    return (int32_t)tq_le_s(t->zero_points + 8 * (size_t)i, 8);
}

/* planner.c: lifetimes, aliases, scratch and persistent sizes are set by the loader; this assigns offsets. */
int tq_plan(tsptq_model *m); /* 0: the arena would exceed TQ_MAX_ARENA */
/* Scratch bytes an op needs in the arena during its run (its op definition's `scratch`). 64-bit: the loader checks
 * the value against its limits before it stores it in the op's uint32_t fields. */
uint64_t tq_op_scratch(const tsptq_model *m, const tsptq_op *op);
/* Persistent bytes (per-channel mult/shift int32 pairs) an op needs (64-bit, as tq_op_scratch). */
uint64_t tq_op_persistent(const tsptq_model *m, const tsptq_op *op);
/* Prepacked bytes an op's kernel reads in this build (64-bit, as tq_op_scratch; 0: none). */
uint64_t tq_op_prepacked(const tsptq_model *m, const tsptq_op *op);

/* interpreter.c: run op k alone (the LiteRT delegate); the bytes of tensor i after prepare. */
int tq_run_one(tsptq_model *m, uint32_t k);
uint8_t *tq_tensor_data(tsptq_model *m, int32_t i);

#endif
