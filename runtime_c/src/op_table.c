/* tsptq runtime: the op table, the one list of the ops the C runtime runs (op_table.h). Adding an op: its file in
 * src/ops/ (the kernel and its tq_op_def), and one line in TQ_OP_LIST below. The order is the order of the Python
 * toolchain's op table (tsptq.intmodel.ops.OPS; tests/test_op_table.py checks that both are equal): the loader names
 * the supported ops in this order in its "unsupported op" messages. tsptq_op.kind is the index of an op's definition
 * here. */
#include "op_table.h"

/* One line per op: the name of its tq_op_def (an op file's TQ_OP_DEF(kernel, suffix)), and the op's name. */
#define TQ_OP_LIST(X)                                                                                               \
    /* builtins */                                                                                                  \
    X(tq_conv2d_patches_op)  /* CONV_2D */                                                                          \
    X(tq_fully_connected_op) /* FULLY_CONNECTED */                                                                  \
    X(tq_batch_matmul_op)    /* BATCH_MATMUL */                                                                     \
    X(tq_add_op)             /* ADD */                                                                              \
    X(tq_reshape_op)         /* RESHAPE (src/op_reshape.c) */                                                       \
    X(tq_transpose_op)       /* TRANSPOSE */                                                                        \
    X(tq_concatenation_op)   /* CONCATENATION */                                                                    \
    X(tq_strided_slice_op)   /* STRIDED_SLICE */                                                                    \
    X(tq_relu_op)            /* RELU */                                                                             \
    /* custom ops */                                                                                                \
    X(tq_layernorm_2s_op)    /* TSPTQ_LAYERNORM_2S */                                                               \
    X(tq_softmax_2s_op)      /* TSPTQ_SOFTMAX_2S */                                                                 \
    X(tq_lookup_gelu_2s_op)  /* TSPTQ_GELU_2S (ops/lookup.c) */                                                     \
    X(tq_fc_2s_op)           /* TSPTQ_FC_2S */                                                                      \
    X(tq_bmm_2s_op)          /* TSPTQ_BMM_2S */                                                                     \
    X(tq_add_2s_op)          /* TSPTQ_ADD_2S (ops/add.c) */                                                         \
    X(tq_token_mean_op)      /* TSPTQ_TOKEN_MEAN */                                                                 \
    X(tq_bmm_bias_op)        /* TSPTQ_BMM_BIAS (Swin's scores) */                                                   \
    X(tq_softmax_mask_2s_op) /* TSPTQ_SOFTMAX_MASK_2S (Swin's shifted windows) */                                   \
    X(tq_bmm_heads_op)       /* TSPTQ_BMM_HEADS (scores with one code per head) */

#define TQ_DECLARE(def) extern const tq_op_def def;
#define TQ_ENTRY(def) &def,
TQ_OP_LIST(TQ_DECLARE)

const tq_op_def *const tq_op_table[] = {TQ_OP_LIST(TQ_ENTRY)};

const uint32_t tq_op_count = sizeof tq_op_table / sizeof tq_op_table[0];

/* tsptq_op.kind is a uint8_t */
typedef char tq_op_table_fits_kind[sizeof tq_op_table / sizeof tq_op_table[0] <= 255 ? 1 : -1];

uint32_t tsptq_op_table_size(void) { return tq_op_count; }

int tsptq_op_info(uint32_t i, tsptq_op_info_t *out) {
    const tq_op_def *d;
    if (!out || i >= tq_op_count) return TSPTQ_ERR_ARGUMENT;
    d = tq_op_table[i];
    out->name = d->name;
    out->builtin_code = d->builtin_code;
    out->min_inputs = d->min_inputs;
    out->max_inputs = d->max_inputs;
    out->n_outputs = d->n_outputs;
    out->n_option_keys = d->n_option_keys;
    out->option_keys = d->option_keys;
    out->elementwise = (d->flags & TQ_OPF_ELEMENTWISE) ? 1u : 0u;
    return TSPTQ_OK;
}

const char *tsptq_op_name(const tsptq_model *m, size_t k) {
    return m && m->loaded && k < m->n_ops && m->ops[k].kind < tq_op_count ? tq_op_table[m->ops[k].kind]->name : NULL;
}
