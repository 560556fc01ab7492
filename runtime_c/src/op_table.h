/* tsptq runtime: the op interface (internal). Every op the runtime runs is one `tq_op_def`, defined by its op file
 * (src/ops/<op>.c: the kernel and the definition together) and listed once in op_table.c, the only list of ops in
 * the C runtime. A model's op k holds the index of its definition in that table (tsptq_op.kind); the loader, the
 * planner and the interpreter reach the op only through the definition.
 *
 * Loading op k: the loader resolves the operator code to a definition (builtin_code, or name for a custom op), reads
 * the options into tsptq_op.opt[] (custom: the flexbuffer keys option_keys[] in that order, each an integer;
 * builtin: load_options, which reads the options table), checks what every op shares (input count, an output that
 * is not constant, quantized unless TQ_OPF_ANY_OUTPUT, constant parameter inputs from const_from on, the output
 * of input 0's shape if TQ_OPF_ELEMENTWISE), then calls prepare. After the whole graph: scratch, persistent and
 * prepacked give the op's arena bytes. tsptq_prepare fills the persistent bytes with multiplier (per channel c: an
 * int32 multiplier and shift) and the prepacked ones with prepack; tsptq_invoke calls eval.
 *
 * The op files reach the rest of the runtime only through tq_op_ctx and header-only helpers (ops/op_util.h): the
 * kernel library (the .c files of src/ops and quantize_multiplier.c, tests/test_c_kernels.py) links without the
 * loader.
 */
#ifndef TSPTQ_OP_TABLE_H
#define TSPTQ_OP_TABLE_H

#include <stdint.h>

#include "runtime.h"

#define TQ_CUSTOM (-1) /* tq_op_def.builtin_code of a custom op */

/* tq_op_def.flags */
enum {
    TQ_OPF_ANY_OUTPUT = 1, /* the output may be unquantized (byte moves) */
    TQ_OPF_ALIAS = 2,      /* the output of an activation input shares its bytes (RESHAPE): the planner aliases it */
    TQ_OPF_ELEMENTWISE = 4 /* the output has the shape of input 0 (checked by the loader before prepare): an
                            * elementwise kernel reads and writes as many elements as the output has */
};

typedef struct tq_op_ctx tq_op_ctx;

typedef struct tq_op_def {
    const char *name;           /* TFLite builtin name ("FULLY_CONNECTED") or custom code ("TSPTQ_FC_2S") */
    int32_t builtin_code;       /* TFLite BuiltinOperator, or TQ_CUSTOM */
    int32_t options_type;       /* builtins: the BuiltinOptions type of their options table (0: none) */
    uint8_t min_inputs, max_inputs, n_outputs;
    uint8_t const_from;         /* inputs from this index on must be constant (0: no such rule) */
    uint8_t flags;              /* TQ_OPF_* */
    uint8_t n_option_keys;      /* <= TSPTQ_MAX_OPTIONS */
    const char *const *option_keys; /* tsptq_op.opt[] in slot order: custom ops' flexbuffer keys (all integers,
                                     * all required); builtins: the names of the slots load_options/prepare fill */
    /* builtins: read the options table into opt[] (c->has_options, c->options_type, c->option), its type check
     * included (tq_expect_options); NULL: only the type check. 1: fine; 0: refused (status filled). */
    int (*load_options)(tq_op_ctx *c);
    /* The op's own checks (shapes, dtypes, parameters in range, accumulators that cannot overflow) and its derived
     * options (opt[], vec[]). 1: fine; 0: refused (status filled). */
    int (*prepare)(tq_op_ctx *c);
    /* Arena bytes (64-bit; NULL: none): scratch, live during the op only; persistent, the multipliers below. */
    uint64_t (*scratch)(const tsptq_model *m, const tsptq_op *op);
    uint64_t (*persistent)(const tsptq_model *m, const tsptq_op *op);
    /* Optional: prepacked bytes (64-bit; NULL or 0: none), a form of the op's constant inputs that its kernel reads
     * instead of making it on every call (the host SIMD builds' packed FC weights: only builds whose kernels read
     * them ask), and the function that writes them (dst: 64-byte aligned, in the arena's prepacked region) once, at
     * tsptq_prepare. Read-only afterwards (the thread pool's parts share them). */
    uint64_t (*prepacked)(const tsptq_model *m, const tsptq_op *op);
    void (*prepack)(const tsptq_model *m, const tsptq_op *op, uint8_t *dst);
    /* The persistent (mult, shift) pair of channel c (NULL when persistent is). */
    void (*multiplier)(const tsptq_model *m, const tsptq_op *op, uint32_t c, int32_t *mult, int32_t *shift);
    /* Run the op on the prepared arena. */
    void (*eval)(tsptq_model *m, const tsptq_op *op);
    /* Optional, for the thread pool (TSPTQ_THREADS, tsptq_set_threads): the op's work as `units` independent parts
     * (output rows, or rows of heads), split in whole grains (*grain units: a SIMD kernel's row block); eval_part
     * runs units [u0, u1) with `scratch` (op->scratch_len bytes, its own). Every split writes the bytes eval does. */
    int64_t (*units)(const tsptq_model *m, const tsptq_op *op, int64_t *grain);
    void (*eval_part)(tsptq_model *m, const tsptq_op *op, int64_t u0, int64_t u1, int32_t *scratch);
} tq_op_def;

/* What load_options and prepare see of op k being loaded. */
struct tq_op_ctx {
    tsptq_model *m;
    tsptq_op *op;
    const tq_op_def *def;
    uint32_t k;                                /* the op's index (for messages) */
    tsptq_tensor *in[TSPTQ_MAX_OP_INPUTS], *out;
    tsptq_status *st;
    /* Fill st with code and a message (tq_fail: %s %.*s %d %u %L %Z); returns code. */
    int (*fail)(tsptq_status *st, int code, const char *fmt, ...);
    /* builtins, load_options only: whether the operator has an options table, its type (0 if none), and field
     * `field` of it (`size` bytes, signed; `def` when absent or after a read error). */
    int has_options;
    int64_t options_type;
    int64_t (*option)(tq_op_ctx *c, uint32_t field, uint32_t size, int64_t def, const char *what);
    /* whether a read of the file failed (the file is corrupted; st holds the message) */
    int (*read_failed)(const tq_op_ctx *c);
    void *reader; /* the loader's */
};

/* op_table.c: the table. tsptq_op.kind indexes it. */
extern const tq_op_def *const tq_op_table[];
extern const uint32_t tq_op_count;

#endif
