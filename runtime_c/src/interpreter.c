/* tsptq runtime: prepare (bind the arena, precompute the builtin ops' multipliers) and invoke (run the schedule,
 * one kernel of kernels.h per op, batch 1), plus the model accessors. No allocation, no float math per invoke. */
#include <string.h>

#include "fixedpoint.h"
#include "kernels.h"
#include "runtime.h"

size_t tsptq_arena_size(const tsptq_model *m) {
    return m && m->loaded ? (size_t)m->persistent_size + m->activation_size : 0;
}
size_t tsptq_persistent_size(const tsptq_model *m) { return m && m->loaded ? m->persistent_size : 0; }
size_t tsptq_activation_size(const tsptq_model *m) { return m && m->loaded ? m->activation_size : 0; }
size_t tsptq_activation_lower_bound(const tsptq_model *m) { return m && m->loaded ? m->lower_bound : 0; }
size_t tsptq_num_tensors(const tsptq_model *m) { return m && m->loaded ? m->n_tensors : 0; }
size_t tsptq_model_size(void) { return sizeof(tsptq_model); }
size_t tsptq_num_ops(const tsptq_model *m) { return m && m->loaded ? m->n_ops : 0; }

static int shape_of(const tsptq_model *m, int32_t i, int32_t *shape) {
    const tsptq_tensor *t;
    if (!m || !m->loaded) return 0;
    t = &m->tensors[i];
    if (shape) memcpy(shape, t->shape, sizeof(int32_t) * t->rank);
    return t->rank;
}
int tsptq_input_shape(const tsptq_model *m, int32_t *shape) { return m ? shape_of(m, m->input, shape) : 0; }
int tsptq_output_shape(const tsptq_model *m, int32_t *shape) { return m ? shape_of(m, m->output, shape) : 0; }
size_t tsptq_input_bytes(const tsptq_model *m) { return m && m->loaded ? m->tensors[m->input].nbytes : 0; }
size_t tsptq_output_bytes(const tsptq_model *m) { return m && m->loaded ? m->tensors[m->output].nbytes : 0; }
int tsptq_input_type(const tsptq_model *m) { return m && m->loaded ? m->tensors[m->input].type : 0; }
int tsptq_output_type(const tsptq_model *m) { return m && m->loaded ? m->tensors[m->output].type : 0; }

static int quant_of(const tsptq_model *m, int32_t i, float *scale, int32_t *zp) {
    const tsptq_tensor *t;
    if (!m || !m->loaded) return 0;
    t = &m->tensors[i];
    if (!t->has_quant) return 0;
    if (scale) *scale = tq_scale(t, 0);
    if (zp) *zp = t->zero_point;
    return 1;
}
int tsptq_input_quantization(const tsptq_model *m, float *scale, int32_t *zero_point) {
    return m ? quant_of(m, m->input, scale, zero_point) : 0;
}
int tsptq_output_quantization(const tsptq_model *m, float *scale, int32_t *zero_point) {
    return m ? quant_of(m, m->output, scale, zero_point) : 0;
}

static int bind(tsptq_model *m, void *arena, size_t arena_len, size_t need, tsptq_status *st) {
    if (!arena) return tq_fail(st, TSPTQ_ERR_ARGUMENT, "tsptq_prepare: arena is NULL (%Z bytes needed)", need);
    if (((uintptr_t)arena) % TSPTQ_ARENA_ALIGNMENT)
        return tq_fail(st, TSPTQ_ERR_ALIGNMENT, "the arena must be %d-byte aligned", TSPTQ_ARENA_ALIGNMENT);
    if (arena_len < need)
        return tq_fail(st, TSPTQ_ERR_ARENA_TOO_SMALL, "arena too small: %Z bytes given, %Z bytes needed", arena_len,
                       need);
    m->arena = (uint8_t *)arena;
    m->arena_len = arena_len;
    return TSPTQ_OK;
}

int tsptq_prepare(tsptq_model *m, void *arena, size_t arena_len, tsptq_status *st) {
    uint32_t k, c;
    int rc;
    tq_ok(st);
    if (!m || !m->loaded) return tq_fail(st, TSPTQ_ERR_ARGUMENT, "tsptq_prepare: the model is not loaded");
    m->prepared = 0;
    rc = bind(m, arena, arena_len, tsptq_arena_size(m), st);
    if (rc != TSPTQ_OK) return rc;
    for (k = 0; k < m->n_ops; k++) {
        const tsptq_op *op = &m->ops[k];
        uint32_t n = op->params_len / 8;
        int32_t *mult = (int32_t *)(void *)(m->arena + op->params_offset), *shift = mult + n;
        for (c = 0; c < n; c++) tq_builtin_multiplier(m, op, c, &mult[c], &shift[c]);
    }
    m->params = m->arena;
    m->activations = m->arena + m->persistent_size;
    m->prepared = 1;
    return TSPTQ_OK;
}

int tsptq_prepare_with_params(tsptq_model *m, const void *params, size_t params_len, void *arena, size_t arena_len,
                              tsptq_status *st) {
    uint32_t k, c;
    int rc;
    tq_ok(st);
    if (!m || !m->loaded) return tq_fail(st, TSPTQ_ERR_ARGUMENT, "tsptq_prepare: the model is not loaded");
    m->prepared = 0;
    if (params_len != m->persistent_size || (m->persistent_size && !params))
        return tq_fail(st, TSPTQ_ERR_ARGUMENT, "the precomputed multipliers are %Z bytes; the model needs %u",
                       params_len, m->persistent_size);
    if (((uintptr_t)params) % 4) return tq_fail(st, TSPTQ_ERR_ALIGNMENT, "the multipliers must be 4-byte aligned");
    rc = bind(m, arena, arena_len, m->activation_size, st);
    if (rc != TSPTQ_OK) return rc;
    for (k = 0; k < m->n_ops; k++) {
        const tsptq_op *op = &m->ops[k];
        uint32_t n = op->params_len / 8;
        const int32_t *mult = (const int32_t *)(const void *)((const uint8_t *)params + op->params_offset),
                      *shift = mult + n;
        for (c = 0; c < n; c++) {
            int32_t mu, sh;
            tq_builtin_multiplier(m, op, c, &mu, &sh);
            if (mu != mult[c] || sh != shift[c])
                return tq_fail(st, TSPTQ_ERR_BAD_QUANTIZATION, "the precomputed multipliers do not belong to this "
                                                               "model (op %u, channel %u)", k, c);
        }
    }
    m->params = (const uint8_t *)params;
    m->activations = m->arena;
    m->prepared = 1;
    return TSPTQ_OK;
}

/* ---- invoke --------------------------------------------------------------------------------------------------- */

static uint8_t *act(const tsptq_model *m, int32_t i) {
    return m->activations + m->tensors[m->tensors[i].root].arena_offset;
}
static const uint8_t *ptr(const tsptq_model *m, int32_t i) {
    return m->tensors[i].is_const ? m->tensors[i].data : act(m, i);
}
static int32_t last_dim(const tsptq_tensor *t) { return t->shape[t->rank - 1]; }
static int32_t rows_of(const tsptq_tensor *t) { return (int32_t)(t->nbytes / tq_type_size(t->type) / last_dim(t)); }
static int32_t lead(const tsptq_tensor *t, int drop) { /* product of all dims but the last `drop` */
    int32_t n = 1, i;
    for (i = 0; i < (int32_t)t->rank - drop; i++) n *= t->shape[i];
    return n;
}

#define I32(p) ((const int32_t *)(const void *)(p))
#define O32(v) ((int32_t)(v))

static void run_op(tsptq_model *m, const tsptq_op *op) {
    const tsptq_tensor *x = &m->tensors[op->inputs[0]], *y = &m->tensors[op->output];
    const uint8_t *in0 = ptr(m, op->inputs[0]), *in1 = op->n_inputs > 1 ? ptr(m, op->inputs[1]) : 0;
    uint8_t *out = act(m, op->output);
    int32_t *scratch = (int32_t *)(void *)(m->activations + op->scratch_offset);
    const int64_t *o = op->opt;
    switch (op->kind) {
    case TQ_OP_CONV_2D: {
        const tsptq_tensor *w = &m->tensors[op->inputs[1]];
        const int32_t *mult = (const int32_t *)(const void *)(m->params + op->params_offset);
        tq_conv2d_patches((const int8_t *)in0, x->shape[0], x->shape[1], x->shape[2], x->shape[3], x->zero_point,
                          (const int8_t *)in1, w->shape[0], O32(o[TQ_CONV_STRIDE]), I32(ptr(m, op->inputs[2])), mult,
                          mult + w->shape[0], y->zero_point, (int8_t *)out);
        break;
    }
    case TQ_OP_FULLY_CONNECTED: {
        const tsptq_tensor *w = &m->tensors[op->inputs[1]];
        const int32_t *mult = (const int32_t *)(const void *)(m->params + op->params_offset);
        int32_t n = O32(o[TQ_FCB_N_PARAMS]);
        tq_fully_connected((const int8_t *)in0, rows_of(x), last_dim(x), x->zero_point, (const int8_t *)in1,
                           w->shape[0], I32(ptr(m, op->inputs[2])), mult, mult + n, n, (int)o[TQ_FCB_PER_CHANNEL],
                           y->zero_point, (int8_t *)out);
        break;
    }
    case TQ_OP_BATCH_MATMUL:
        tq_batch_matmul((const int8_t *)in0, (const int8_t *)in1, lead(x, 2), x->shape[x->rank - 2], last_dim(x),
                        last_dim(y), (int)o[TQ_BMMB_ADJ_Y], x->zero_point, m->tensors[op->inputs[1]].zero_point,
                        O32(o[TQ_BMMB_MULT]), O32(o[TQ_BMMB_SHIFT]), y->zero_point, (int8_t *)out);
        break;
    case TQ_OP_ADD: {
        int32_t params[6], i;
        for (i = 0; i < 6; i++) params[i] = O32(o[i]);
        tq_add((const int8_t *)in0, (const int8_t *)in1, rows_of(y), last_dim(y), x->zero_point,
               m->tensors[op->inputs[1]].zero_point, params, 1, y->zero_point, (int8_t *)out);
        break;
    }
    case TQ_OP_RESHAPE:
        if (m->tensors[op->output].root == op->output && out != in0) memcpy(out, in0, y->nbytes);
        break;
    case TQ_OP_TRANSPOSE:
        tq_transpose(in0, x->shape, x->rank, op->vec[0], out);
        break;
    case TQ_OP_CONCATENATION: {
        const uint8_t *xs[TSPTQ_MAX_OP_INPUTS];
        const int32_t *shapes[TSPTQ_MAX_OP_INPUTS];
        int i;
        for (i = 0; i < op->n_inputs; i++) {
            xs[i] = ptr(m, op->inputs[i]);
            shapes[i] = m->tensors[op->inputs[i]].shape;
        }
        tq_concatenation(xs, shapes, op->n_inputs, y->rank, O32(o[TQ_CAT_AXIS]), out);
        break;
    }
    case TQ_OP_STRIDED_SLICE:
        tq_strided_slice(in0, x->shape, x->rank, op->vec[0], op->vec[1], op->vec[2], out);
        break;
    case TQ_OP_LAYERNORM_2S:
        tq_layernorm_2s((const int8_t *)in0, rows_of(x), last_dim(x), O32(o[TQ_LN_IN_ZP]), (const int8_t *)in1,
                        I32(ptr(m, op->inputs[2])), (const int64_t *)(const void *)ptr(m, op->inputs[3]),
                        o[TQ_LN_EPS], O32(o[TQ_LN_OUT_ZP]), O32(o[TQ_LN_OUT_SHIFT]), (int8_t *)out);
        break;
    case TQ_OP_SOFTMAX_2S:
        tq_softmax_2s((const int8_t *)in0, rows_of(x), last_dim(x), I32(in1), O32(o[TQ_SM_OUT_KIND]),
                      O32(o[TQ_SM_MULT]), O32(o[TQ_SM_SHIFT]), O32(o[TQ_SM_OUT_ZP]), O32(o[TQ_SM_BITS]),
                      O32(o[TQ_SM_M]), O32(o[TQ_SM_SIGNED_FINE]), out, scratch);
        break;
    case TQ_OP_GELU_2S:
        tq_lookup(in0, x->nbytes, x->type == TSPTQ_INT8, in1, out);
        break;
    case TQ_OP_FC_2S: {
        const tsptq_tensor *w = &m->tensors[op->inputs[1]];
        tq_fc_2s(in0, rows_of(x), last_dim(x), O32(o[TQ_FC_IN_KIND]), O32(o[TQ_FC_IN_ZP]),
                 (const int8_t *)ptr(m, op->inputs[5]), O32(o[TQ_FC_BITS]), O32(o[TQ_FC_M]),
                 O32(o[TQ_FC_SIGNED_FINE]), O32(o[TQ_FC_NEG_MULT]), O32(o[TQ_FC_NEG_SHIFT]), (const int8_t *)in1,
                 w->shape[0], I32(ptr(m, op->inputs[2])), I32(ptr(m, op->inputs[3])), I32(ptr(m, op->inputs[4])),
                 O32(o[TQ_FC_OUT_ZP]), (int8_t *)out, scratch);
        break;
    }
    case TQ_OP_BMM_2S:
        tq_bmm_2s(in0, (const int8_t *)in1, lead(x, 2), last_dim(x), last_dim(y), O32(o[TQ_BMM_A_KIND]),
                  O32(o[TQ_BMM_BITS]), O32(o[TQ_BMM_M]), O32(o[TQ_BMM_SIGNED_FINE]), O32(o[TQ_BMM_LOG2_FRAC]),
                  O32(o[TQ_BMM_B_ZP]), O32(o[TQ_BMM_MULT]), O32(o[TQ_BMM_SHIFT]), O32(o[TQ_BMM_OUT_ZP]),
                  (int8_t *)out, scratch);
        break;
    case TQ_OP_ADD_2S: {
        const tsptq_tensor *p = &m->tensors[op->inputs[2]];
        tq_add((const int8_t *)in0, (const int8_t *)in1, rows_of(y), last_dim(y), O32(o[TQ_ADD2S_A_ZP]),
               O32(o[TQ_ADD2S_B_ZP]), I32(p->data), p->shape[1], O32(o[TQ_ADD2S_OUT_ZP]), (int8_t *)out);
        break;
    }
    default:
        break;
    }
}

/* Run op k alone on the arena as it stands (the LiteRT delegate copies the op's inputs in, then its output out). */
int tq_run_one(tsptq_model *m, uint32_t k) {
    if (!m || !m->prepared || k >= m->n_ops) return TSPTQ_ERR_ARGUMENT;
    run_op(m, &m->ops[k]);
    return TSPTQ_OK;
}
/* The bytes of tensor i: in the model buffer (constants) or in the arena (activations; after prepare). */
uint8_t *tq_tensor_data(tsptq_model *m, int32_t i) { return (uint8_t *)(uintptr_t)ptr(m, i); }

const void *tsptq_tensor_data(const tsptq_model *m, size_t i, size_t *nbytes) {
    if (nbytes) *nbytes = 0;
    if (!m || !m->loaded || !m->prepared || i >= m->n_tensors) return NULL;
    if (nbytes) *nbytes = m->tensors[i].nbytes;
    return ptr(m, (int32_t)i);
}

int tsptq_invoke(tsptq_model *m, const void *input, size_t input_len, void *output, size_t output_len,
                 tsptq_status *st) {
    uint32_t k;
    tq_ok(st);
    if (!m || !m->loaded || !m->prepared)
        return tq_fail(st, TSPTQ_ERR_ARGUMENT, "tsptq_invoke: load and prepare the model first");
    if (!input || !output) return tq_fail(st, TSPTQ_ERR_ARGUMENT, "tsptq_invoke: input and output must not be NULL");
    if (input_len != m->tensors[m->input].nbytes)
        return tq_fail(st, TSPTQ_ERR_INPUT_SIZE, "input is %Z bytes; the model takes %u (int8 NHWC %dx%dx%dx%d)",
                       input_len, m->tensors[m->input].nbytes, m->tensors[m->input].shape[0],
                       m->tensors[m->input].shape[1], m->tensors[m->input].shape[2], m->tensors[m->input].shape[3]);
    if (output_len != m->tensors[m->output].nbytes)
        return tq_fail(st, TSPTQ_ERR_OUTPUT_SIZE, "output buffer is %Z bytes; the model writes %u", output_len,
                       m->tensors[m->output].nbytes);
    memcpy(act(m, m->input), input, input_len);
    if (m->clock && m->op_ticks) {
        for (k = 0; k < m->n_ops; k++) {
            uint32_t t0 = m->clock();
            run_op(m, &m->ops[k]);
            m->op_ticks[k] += m->clock() - t0; /* unsigned: a counter wrap is still the right difference */
        }
    } else {
        for (k = 0; k < m->n_ops; k++) run_op(m, &m->ops[k]);
    }
    memcpy(output, act(m, m->output), output_len);
    return TSPTQ_OK;
}

void tsptq_set_profiler(tsptq_model *m, tsptq_clock_fn clock, uint32_t *ticks) {
    if (!m) return;
    m->clock = ticks ? clock : NULL;
    m->op_ticks = ticks;
}

const char *tsptq_op_name(const tsptq_model *m, size_t k) {
    return m && m->loaded && k < m->n_ops ? tq_op_names[m->ops[k].kind] : NULL;
}
