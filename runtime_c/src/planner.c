/* tsptq runtime: the static arena planner (mirrored in toolchain/tsptq/intmodel/planner.py; the two must give the same offsets).
 *
 * The arena is [persistent | prepacked | activations]. The persistent part holds the builtin ops' per-channel
 * multipliers (computed once by tsptq_prepare); the prepacked part, the constants that the kernels of this build read
 * in another layout (the FC weights of the AVX-512 VNNI / AMX builds: op_table.h `prepacked`), each op's at a multiple
 * of TQ_PACK_ALIGNMENT, plus TQ_PACK_ALIGNMENT bytes to align the part itself (the arena is 8-byte aligned); none in
 * other builds, whose arena is what the Python planner computes. The activation part is planned over the op
 * schedule:
 * - buffers: every activation tensor that is not an alias (a RESHAPE of an activation shares its input's bytes),
 *   live from the op that writes it (op 0 for the graph input) to the last op that reads it or any of its aliases
 *   (the last op for the graph output); plus each op's kernel scratch, live during that op only;
 * - sizes rounded up to TSPTQ_TENSOR_ALIGNMENT; each buffer in turn goes to the lowest offset where it overlaps no
 *   placed buffer whose lifetime overlaps its own (TFLM's greedy-by-size planner), in two orders: largest first,
 *   and larger power-of-two size class first then longer lifetime first (which keeps a long-lived buffer from
 *   being wedged between slightly larger short-lived ones); ties by index (tensors, then scratch). The smaller of
 *   the two plans wins (the first on a tie);
 * - the lower bound is the largest total (unaligned) size of the buffers live at one op.
 * Everything here runs once, at load; O(n * live) with n buffers.
 */
#include "op_table.h"
#include "runtime.h"

/* An op's scratch and persistent bytes, from its definition (64-bit sizes; the loader checks them). The persistent
 * bytes are the (mult, shift) pairs of its multiplier: none without one. */
uint64_t tq_op_scratch(const tsptq_model *m, const tsptq_op *op) {
    const tq_op_def *d = tq_op_table[op->kind];
    return d->scratch ? d->scratch(m, op) : 0;
}

uint64_t tq_op_persistent(const tsptq_model *m, const tsptq_op *op) {
    const tq_op_def *d = tq_op_table[op->kind];
    return d->persistent && d->multiplier ? d->persistent(m, op) : 0;
}

/* The prepacked bytes: none without a prepack function. */
uint64_t tq_op_prepacked(const tsptq_model *m, const tsptq_op *op) {
    const tq_op_def *d = tq_op_table[op->kind];
    return d->prepacked && d->prepack ? d->prepacked(m, op) : 0;
}

/* Item i: tensors 0..n_tensors-1 (only activation roots take part), then op scratch n_tensors + k. `size` (raw
 * rounded up to the alignment) and every offset + size sum are 64-bit: no rounding or addition can wrap, and a plan
 * past TQ_MAX_ARENA is refused, not truncated. */
typedef struct {
    uint64_t size;
    uint32_t raw;
    int32_t first, last;
} item;

static int get_item(const tsptq_model *m, int32_t i, item *it) {
    if (i < (int32_t)m->n_tensors) {
        const tsptq_tensor *t = &m->tensors[i];
        if (t->is_const || !t->written || t->root != i) return 0;
        it->raw = t->nbytes;
        it->first = t->first;
        it->last = t->last;
    } else {
        const tsptq_op *op = &m->ops[i - (int32_t)m->n_tensors];
        if (!op->scratch_len) return 0;
        it->raw = op->scratch_len;
        it->first = it->last = i - (int32_t)m->n_tensors;
    }
    it->size = TQ_ALIGN_UP(it->raw, TSPTQ_TENSOR_ALIGNMENT);
    return 1;
}

static uint32_t get_offset(const tsptq_model *m, int32_t i) {
    return i < (int32_t)m->n_tensors ? m->tensors[i].arena_offset : m->ops[i - (int32_t)m->n_tensors].scratch_offset;
}

static void set_offset(tsptq_model *m, int32_t i, uint32_t off) {
    if (i < (int32_t)m->n_tensors) m->tensors[i].arena_offset = off;
    else m->ops[i - (int32_t)m->n_tensors].scratch_offset = off;
}

static int bit_length(uint64_t v) {
    int n = 0;
    while (v) {
        v >>= 1;
        n++;
    }
    return n;
}

/* Does item a (index ia) go before item b in placement order `strategy`?
 * 0: larger first; 1: larger power-of-two size class first, then the longer lifetime, then larger. Ties: lower
 * index first. */
static int before(int strategy, const item *a, int32_t ia, const item *b, int32_t ib) {
    if (strategy == 1) {
        int ca = bit_length(a->size), cb = bit_length(b->size);
        if (ca != cb) return ca > cb;
        if (a->last - a->first != b->last - b->first) return a->last - a->first > b->last - b->first;
    }
    return a->size != b->size ? a->size > b->size : ia < ib;
}

static void sift(const tsptq_model *m, int32_t *v, int32_t root, int32_t n) {
    for (;;) {
        int32_t child = 2 * root + 1, t;
        if (child >= n) return;
        if (child + 1 < n && get_offset(m, v[child + 1]) > get_offset(m, v[child])) child++;
        if (get_offset(m, v[root]) >= get_offset(m, v[child])) return;
        t = v[root];
        v[root] = v[child];
        v[child] = t;
        root = child;
    }
}

/* Heapsort of item ids by offset: O(n log n) whatever the graph. */
static void sort_by_offset(const tsptq_model *m, int32_t *v, int32_t n) {
    int32_t i, t;
    for (i = n / 2 - 1; i >= 0; i--) sift(m, v, i, n);
    for (i = n - 1; i > 0; i--) {
        t = v[0];
        v[0] = v[i];
        v[i] = t;
        sift(m, v, 0, i);
    }
}

/* Place every item in the order of `strategy`; returns the end of the plan (0 if it exceeds TQ_MAX_ARENA). */
static uint64_t place(tsptq_model *m, int strategy) {
    int32_t n_items = (int32_t)(m->n_tensors + m->n_ops), n = 0, i, j, k;
    uint64_t end = 0;
    item a, b;
    /* order: insertion sort of the participating items (n is a few hundred) */
    for (i = 0; i < n_items; i++) {
        if (!get_item(m, i, &a)) continue;
        for (j = n; j > 0; j--) {
            get_item(m, m->plan_order[j - 1], &b);
            if (before(strategy, &b, m->plan_order[j - 1], &a, i)) break;
            m->plan_order[j] = m->plan_order[j - 1];
        }
        m->plan_order[j] = i;
        n++;
    }
    for (k = 0; k < n; k++) {
        int32_t id = m->plan_order[k], n_live = 0;
        uint64_t off = 0;
        get_item(m, id, &a);
        /* placed items whose lifetime overlaps, sorted by offset (no two share one: sizes are > 0) */
        for (j = 0; j < k; j++) {
            get_item(m, m->plan_order[j], &b);
            if (b.last < a.first || b.first > a.last) continue;
            m->plan_live[n_live++] = m->plan_order[j];
        }
        sort_by_offset(m, m->plan_live, n_live);
        /* lowest gap that fits */
        for (j = 0; j < n_live; j++) {
            uint64_t o_off = get_offset(m, m->plan_live[j]);
            get_item(m, m->plan_live[j], &b);
            if (o_off >= off + a.size) break;
            if (o_off + b.size > off) off = o_off + b.size;
        }
        if (off + a.size > TQ_MAX_ARENA) return 0;
        set_offset(m, id, (uint32_t)off);
        if (off + a.size > end) end = off + a.size;
    }
    return end;
}

int tq_plan(tsptq_model *m) {
    int32_t n_items = (int32_t)(m->n_tensors + m->n_ops), i, k;
    uint64_t end0, end1, end, bound = 0;
    item a;
    /* both orders, keep the smaller plan (the first on a tie) */
    end0 = place(m, 0);
    end1 = place(m, 1);
    if (!end0 && !end1) return 0;
    if (end1 && (!end0 || end1 < end0)) {
        end = end1;
    } else {
        end = place(m, 0);
    }
    /* lower bound */
    for (k = 0; k < (int32_t)m->n_ops; k++) {
        uint64_t live = 0;
        for (i = 0; i < n_items; i++)
            if (get_item(m, i, &a) && a.first <= k && k <= a.last) live += a.raw;
        if (live > bound) bound = live;
    }
    m->activation_size = (uint32_t)end;
    m->lower_bound = (uint32_t)(bound > TQ_MAX_ARENA ? TQ_MAX_ARENA : bound);
    return 1;
}
