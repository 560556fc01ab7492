/* tsptq runtime: prepare (bind the arena, precompute the builtin ops' multipliers, prepack the weights the kernels of
 * the build read prepacked) and invoke (run the schedule, each op through its definition's eval, batch 1), plus the
 * model accessors. No allocation, no float math per invoke. */
#include <string.h>

#include "op_table.h"
#include "ops/op_util.h"
#include "runtime.h"
#include "threads.h"

size_t tsptq_arena_size(const tsptq_model *m) {
    return m && m->loaded ? (size_t)m->persistent_size + m->prepacked_size + m->activation_size : 0;
}
size_t tsptq_persistent_size(const tsptq_model *m) { return m && m->loaded ? m->persistent_size : 0; }
size_t tsptq_prepacked_size(const tsptq_model *m) { return m && m->loaded ? m->prepacked_size : 0; }
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

/* The prepacked region at `region` (prepacked_size bytes, its start aligned up to TQ_PACK_ALIGNMENT inside them), each
 * op's bytes made by its prepack; NULL: none (the kernels pack per call). */
static void prepack(tsptq_model *m, uint8_t *region) {
    uint32_t k;
    m->packed = NULL;
    if (!region || !m->prepacked_size) return;
    m->packed = region + (TQ_PACK_ALIGNMENT - (uintptr_t)region % TQ_PACK_ALIGNMENT) % TQ_PACK_ALIGNMENT;
    for (k = 0; k < m->n_ops; k++) {
        const tsptq_op *op = &m->ops[k];
        if (op->packed_len) tq_op_table[op->kind]->prepack(m, op, m->packed + op->packed_offset);
    }
}

/* From `base` on, `room` bytes (bind checked room >= activation_size): [prepacked | activations] where they hold
 * both, else the activations alone (the kernels then pack per call: the same bytes). */
static void place_activations(tsptq_model *m, uint8_t *base, size_t room) {
    if (m->prepacked_size && room - m->activation_size >= m->prepacked_size) {
        prepack(m, base);
        m->activations = base + m->prepacked_size;
    } else {
        prepack(m, NULL);
        m->activations = base;
    }
}

int tsptq_prepare(tsptq_model *m, void *arena, size_t arena_len, tsptq_status *st) {
    uint32_t k, c;
    int rc;
    tq_ok(st);
    if (!m || !m->loaded) return tq_fail(st, TSPTQ_ERR_ARGUMENT, "tsptq_prepare: the model is not loaded");
    m->prepared = 0;
    /* the prepacked constants only speed the products up: an arena without room for them runs without them */
    rc = bind(m, arena, arena_len, (size_t)m->persistent_size + m->activation_size, st);
    if (rc != TSPTQ_OK) return rc;
    for (k = 0; k < m->n_ops; k++) {
        const tsptq_op *op = &m->ops[k];
        uint32_t n = op->params_len / 8;
        int32_t *mult = (int32_t *)(void *)(m->arena + op->params_offset), *shift = mult + n;
        for (c = 0; c < n; c++) tq_op_table[op->kind]->multiplier(m, op, c, &mult[c], &shift[c]);
    }
    m->params = m->arena;
    place_activations(m, m->arena + m->persistent_size, arena_len - m->persistent_size);
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
            tq_op_table[op->kind]->multiplier(m, op, c, &mu, &sh);
            if (mu != mult[c] || sh != shift[c])
                return tq_fail(st, TSPTQ_ERR_BAD_QUANTIZATION, "the precomputed multipliers do not belong to this "
                                                               "model (op %u, channel %u)", k, c);
        }
    }
    m->params = (const uint8_t *)params;
    place_activations(m, m->arena, arena_len);
    m->prepared = 1;
    return TSPTQ_OK;
}

/* ---- invoke --------------------------------------------------------------------------------------------------- */

#if TSPTQ_THREADS
#ifndef TQ_PARTS_PER_THREAD
#define TQ_PARTS_PER_THREAD 4
#endif
#if TSPTQ_MAX_THREADS * TQ_PARTS_PER_THREAD > 255
#error "TSPTQ_MAX_THREADS * TQ_PARTS_PER_THREAD: a job has at most 255 parts (the pool's job word)"
#endif
/* One op split over the pool: part p runs grains [p * grains / parts, (p + 1) * grains / parts). */
typedef struct {
    tsptq_model *m;
    const tsptq_op *op;
    int64_t units, grain, grains;
    uint32_t parts;
} tq_split;

static void run_part(void *ctx, uint32_t p, uint32_t t) {
    const tq_split *s = (const tq_split *)ctx;
    int64_t u0 = s->grains * p / s->parts * s->grain, u1 = s->grains * (p + 1) / s->parts * s->grain;
    if (u1 > s->units) u1 = s->units;
    if (u0 < u1) /* scratch: the thread's own (the caller's is the op's arena scratch) */
        tq_op_table[s->op->kind]->eval_part(s->m, s->op, u0, u1, t ? tq_pool_scratch(t) : tq_scratch(s->m, s->op));
}

/* 1: the op ran split over m->threads threads; 0: it did not run (no split, too little work, the pool busy). */
static int run_split(tsptq_model *m, const tsptq_op *op, const tq_op_def *d) {
    tq_split s;
    int64_t grain = 1;
    if (!d->units || !d->eval_part || op->scratch_len > TSPTQ_THREAD_SCRATCH) return 0;
    s.units = d->units(m, op, &grain);
    if (grain < 1) grain = 1;
    s.grain = grain;
    s.grains = (s.units + grain - 1) / grain;
    /* up to TQ_PARTS_PER_THREAD parts a thread: a thread that loses its core (more threads than free cores) then
     * holds back a smaller part, and the others claim the rest */
    s.parts = s.grains < (int64_t)m->threads * TQ_PARTS_PER_THREAD ? (uint32_t)s.grains
                                                                    : m->threads * TQ_PARTS_PER_THREAD;
    if (s.parts < 2) return 0;
    s.m = m;
    s.op = op;
    return tq_pool_run(m->threads, s.parts, run_part, &s);
}
#endif

static void run_op(tsptq_model *m, const tsptq_op *op) {
    const tq_op_def *d = tq_op_table[op->kind];
#if TSPTQ_THREADS
    if (m->threads > 1 && run_split(m, op, d)) return;
#endif
    d->eval(m, op);
}

int tsptq_max_threads(void) { return TSPTQ_THREADS ? TSPTQ_MAX_THREADS : 1; }
int tsptq_threads(const tsptq_model *m) { return m && m->loaded && m->threads > 1 ? (int)m->threads : 1; }

int tsptq_set_threads(tsptq_model *m, int n, tsptq_status *st) {
    tq_ok(st);
    if (!m || !m->loaded) return tq_fail(st, TSPTQ_ERR_ARGUMENT, "tsptq_set_threads: load the model first");
    if (n < 1 || n > tsptq_max_threads())
        return tq_fail(st, TSPTQ_ERR_ARGUMENT, "%d threads: this build runs 1 to %d%s", n, tsptq_max_threads(),
                       TSPTQ_THREADS ? " (TSPTQ_MAX_THREADS)" : " (built without TSPTQ_THREADS)");
#if TSPTQ_THREADS
    if (!tq_pool_reserve((uint32_t)n))
        return tq_fail(st, TSPTQ_ERR_ARGUMENT, "%d threads: starting a worker thread failed", n);
#endif
    m->threads = (uint32_t)n;
    return TSPTQ_OK;
}

/* Run op k alone on the arena as it stands (the LiteRT delegate copies the op's inputs in, then its output out). */
int tq_run_one(tsptq_model *m, uint32_t k) {
    if (!m || !m->prepared || k >= m->n_ops) return TSPTQ_ERR_ARGUMENT;
    run_op(m, &m->ops[k]);
    return TSPTQ_OK;
}
/* The bytes of tensor i: in the model buffer (constants) or in the arena (activations; after prepare). */
uint8_t *tq_tensor_data(tsptq_model *m, int32_t i) { return (uint8_t *)(uintptr_t)tq_ptr(m, i); }

const void *tsptq_tensor_data(const tsptq_model *m, size_t i, size_t *nbytes) {
    if (nbytes) *nbytes = 0;
    if (!m || !m->loaded || !m->prepared || i >= m->n_tensors) return NULL;
    if (nbytes) *nbytes = m->tensors[i].nbytes;
    return tq_ptr(m, (int32_t)i);
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
    memcpy(tq_act(m, m->input), input, input_len);
    if (m->clock && m->op_ticks) {
        for (k = 0; k < m->n_ops; k++) {
            uint32_t t0 = m->clock();
            run_op(m, &m->ops[k]);
            m->op_ticks[k] += m->clock() - t0; /* unsigned: a counter wrap is still the right difference */
        }
    } else {
        for (k = 0; k < m->n_ops; k++) run_op(m, &m->ops[k]);
    }
    memcpy(output, tq_act(m, m->output), output_len);
    return TSPTQ_OK;
}

void tsptq_set_profiler(tsptq_model *m, tsptq_clock_fn clock, uint32_t *ticks) {
    if (!m) return;
    m->clock = ticks ? clock : NULL;
    m->op_ticks = ticks;
}
