/* libtsptq_delegate.so: an external TFLite/LiteRT delegate that runs the TSPTQ_* custom ops of a tsptq .tflite file
 * with the tsptq kernels, while LiteRT runs the builtins.
 *
 *   load_delegate("libtsptq_delegate.so", options={"model": "/path/model.tflite"})
 *
 * The delegate loads the same file with the C runtime (tsptq_load + tsptq_prepare, its own arena): the custom ops'
 * parameters come from the runtime's loader, exactly as in `tsptq_invoke`. In the delegate's Prepare it claims every
 * node whose registration is CUSTOM with a name starting "TSPTQ_" (node index = op index: the interpreter keeps the
 * file's operator order), after checking that the node's inputs and output are the tensors the runtime's op k has.
 * At Invoke, for each claimed op in order, the op's inputs that LiteRT produced are copied from LiteRT's tensors into
 * the runtime's arena, the op runs there (tq_run_one), and an output LiteRT reads is copied back.
 *
 * Options: "model" (required) the .tflite path; "runtime_version" (optional, "<distribution> <version>", e.g.
 * "ai-edge-litert 2.3.0", passed by tsptq.runtime.litert.make_interpreter and the LiteRT board agent) refused unless it is a
 * runtime the struct declarations are pinned to.
 * Runtime check (always, in the delegate's Prepare; context->GetTensor is NULL in TFLite, so the tensor array is
 * indexed with the declared sizeof(TfLiteTensor)): every one of the model's tensors, read at the declared layout, must
 * have the file's type and byte size (integers only, checked first), then the file's name; the claimed nodes' input
 * and output tensor indices must be the runtime op's. Any mismatch refuses the runtime (kTfLiteError with a message
 * naming the first difference) instead of running on a struct the delegate does not know. */
#define _POSIX_C_SOURCE 200112L /* posix_memalign under -std=c99 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime.h"
#include "tflite_c_api.h"

/* compile-time checks of the declared layout: offsets of the pinned 64-bit runtimes, identical in both (ai-edge-litert
 * 2.3.0 = TFLite 2.22.0-dev0 and tflite-runtime 2.14.0; measured in each binary, see delegate/README.md) */
#define TQ_CHECK(name, cond) typedef char tq_check_##name[(cond) ? 1 : -1]
TQ_CHECK(tensor_size, sizeof(void *) != 8 || sizeof(TfLiteTensor) == TSPTQ_TFLITE_TENSOR_SIZE);
TQ_CHECK(tensor_bytes, sizeof(void *) != 8 || offsetof(TfLiteTensor, bytes) == 40);
TQ_CHECK(tensor_name, sizeof(void *) != 8 || offsetof(TfLiteTensor, name) == 56);
TQ_CHECK(tensor_quant, sizeof(void *) != 8 || offsetof(TfLiteTensor, quantization) == 80);
TQ_CHECK(node_size, sizeof(void *) != 8 || sizeof(TfLiteNode) == 80);
TQ_CHECK(reg_size, sizeof(void *) != 8 || sizeof(TfLiteRegistration) == 88);
TQ_CHECK(reg_custom_name, sizeof(void *) != 8 || offsetof(TfLiteRegistration, custom_name) == 48);
TQ_CHECK(reg_inplace, sizeof(void *) != 8 || offsetof(TfLiteRegistration, inplace_operator) == 80);
TQ_CHECK(ctx_get_node, sizeof(void *) != 8 || offsetof(TfLiteContext, GetNodeAndRegistration) == 56);
TQ_CHECK(ctx_get_tensor, sizeof(void *) != 8 || offsetof(TfLiteContext, GetTensor) == 160);
TQ_CHECK(ctx_replace, sizeof(void *) != 8 || offsetof(TfLiteContext, ReplaceNodeSubsetsWithDelegateKernels) == 64);
TQ_CHECK(delegate_flags, sizeof(void *) != 8 || offsetof(TfLiteDelegate, flags) == 40);
TQ_CHECK(delegate_size, sizeof(void *) != 8 || sizeof(TfLiteDelegate) == 56);

#define TQ_BUILTIN_DELEGATE 51 /* kTfLiteBuiltinDelegate */
/* runtime_version values, "<distribution> <version>" (tsptq.runtime.litert and the LiteRT board agent pass the installed
 * package's): the version alone would not say which runtime it is. The structs the delegate touches have the same
 * layout in both. */
static const char *const known_versions[] = {"ai-edge-litert 2.3.0", "tflite-runtime 2.14.0"};

typedef struct {
    tsptq_model *model;
    uint8_t *bytes;   /* the file, 16-byte aligned, alive as long as the model */
    void *arena;
    uint64_t *op_ns;  /* per op: nanoseconds of its last run here (0: a LiteRT builtin), for the profile */
    char path[512];
} tq_state;

typedef struct {
    tq_state *s;
    int n_ops;
    int *ops;          /* node indices = runtime op indices, ascending */
    uint8_t *from_rt;  /* per tensor: 1 if the kernel's input comes from LiteRT */
    uint8_t *to_rt;    /* per tensor: 1 if LiteRT reads this output of the kernel */
} tq_kernel;

static void *aligned_alloc16(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) return NULL;
    return p;
}

static void free_state(tq_state *s) {
    if (!s) return;
    free(s->model);
    free(s->bytes);
    free(s->arena);
    free(s->op_ns);
    free(s);
}

static tq_state *load_state(const char *path, char *err, size_t errlen) {
    tsptq_status st;
    FILE *f;
    long len;
    size_t need;
    tq_state *s = (tq_state *)calloc(1, sizeof *s);
    if (!s) return snprintf(err, errlen, "tsptq delegate: out of memory"), NULL;
    snprintf(s->path, sizeof s->path, "%s", path);
    f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "tsptq delegate: cannot open the model file '%s'", path);
        free_state(s);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    s->bytes = (uint8_t *)aligned_alloc16(len > 0 ? (size_t)len : 1);
    s->model = (tsptq_model *)calloc(1, sizeof(tsptq_model));
    if (len <= 0 || !s->bytes || !s->model || fread(s->bytes, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        snprintf(err, errlen, "tsptq delegate: cannot read the model file '%s'", path);
        free_state(s);
        return NULL;
    }
    fclose(f);
    if (tsptq_load(s->model, s->bytes, (size_t)len, &st) != TSPTQ_OK) {
        snprintf(err, errlen, "tsptq delegate: %s: %s (%s)", path, st.message, tsptq_error_name(st.code));
        free_state(s);
        return NULL;
    }
    s->op_ns = (uint64_t *)calloc(s->model->n_ops ? s->model->n_ops : 1, sizeof(uint64_t));
    need = tsptq_arena_size(s->model);
    s->arena = s->op_ns ? aligned_alloc16(need) : NULL;
    if (!s->arena || tsptq_prepare(s->model, s->arena, need, &st) != TSPTQ_OK) {
        snprintf(err, errlen, "tsptq delegate: %s: %s", path, s->arena ? st.message : "out of memory");
        free_state(s);
        return NULL;
    }
    return s;
}

/* ---- the delegate kernel (one per node subset LiteRT forms from the claimed nodes) ----------------------------- */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static void *kernel_init(TfLiteContext *ctx, const char *buffer, size_t length) {
    const TfLiteDelegateParams *p = (const TfLiteDelegateParams *)(const void *)buffer;
    tq_state *s = (tq_state *)p->delegate->data_;
    uint32_t nt = s->model->n_tensors;
    int i;
    tq_kernel *k = (tq_kernel *)calloc(1, sizeof *k);
    (void)length;
    if (!k) return NULL;
    k->s = s;
    k->n_ops = p->nodes_to_replace->size;
    k->ops = (int *)malloc(sizeof(int) * (size_t)(k->n_ops ? k->n_ops : 1));
    k->from_rt = (uint8_t *)calloc(nt, 1);
    k->to_rt = (uint8_t *)calloc(nt, 1);
    if (!k->ops || !k->from_rt || !k->to_rt) {
        ctx->ReportError(ctx, "tsptq delegate: out of memory");
        return NULL;
    }
    for (i = 0; i < k->n_ops; i++) k->ops[i] = p->nodes_to_replace->data[i];
    qsort(k->ops, (size_t)k->n_ops, sizeof(int), cmp_int);
    for (i = 0; i < p->input_tensors->size; i++) {
        int t = p->input_tensors->data[i];
        if (t >= 0 && (uint32_t)t < nt && !s->model->tensors[t].is_const) k->from_rt[t] = 1;
    }
    for (i = 0; i < p->output_tensors->size; i++) {
        int t = p->output_tensors->data[i];
        if (t >= 0 && (uint32_t)t < nt) k->to_rt[t] = 1;
    }
    return k;
}

static void kernel_free(TfLiteContext *ctx, void *buffer) {
    tq_kernel *k = (tq_kernel *)buffer;
    (void)ctx;
    if (!k) return;
    free(k->ops);
    free(k->from_rt);
    free(k->to_rt);
    free(k);
}

static TfLiteStatus kernel_prepare(TfLiteContext *ctx, TfLiteNode *node) {
    if (!node->user_data) {
        ctx->ReportError(ctx, "tsptq delegate: kernel initialization failed");
        return kTfLiteError;
    }
    return kTfLiteOk;
}

static TfLiteStatus kernel_invoke(TfLiteContext *ctx, TfLiteNode *node) {
    tq_kernel *k = (tq_kernel *)node->user_data;
    tsptq_model *m = k->s->model;
    uint64_t t0;
    int j, i;
    for (j = 0; j < k->n_ops; j++) {
        const tsptq_op *op = &m->ops[k->ops[j]];
        for (i = 0; i < op->n_inputs; i++) {
            int32_t t = op->inputs[i];
            if (k->from_rt[t]) {
                const TfLiteTensor *lt = &ctx->tensors[t];
                if (!lt->data.raw || lt->bytes != m->tensors[t].nbytes) {
                    ctx->ReportError(ctx, "tsptq delegate: tensor %d has %d bytes in LiteRT, %d in the model", t,
                                     (int)lt->bytes, (int)m->tensors[t].nbytes);
                    return kTfLiteError;
                }
                memcpy(tq_tensor_data(m, t), lt->data.raw, lt->bytes);
            }
        }
        t0 = now_ns();
        if (tq_run_one(m, (uint32_t)k->ops[j]) != TSPTQ_OK) {
            ctx->ReportError(ctx, "tsptq delegate: op %d failed", k->ops[j]);
            return kTfLiteError;
        }
        k->s->op_ns[k->ops[j]] = now_ns() - t0;
        if (k->to_rt[op->output]) {
            TfLiteTensor *lt = &ctx->tensors[op->output];
            if (!lt->data.raw || lt->bytes != m->tensors[op->output].nbytes) {
                ctx->ReportError(ctx, "tsptq delegate: output tensor %d is not allocated as the model says",
                                 op->output);
                return kTfLiteError;
            }
            memcpy(lt->data.raw, tq_tensor_data(m, op->output), lt->bytes);
        }
    }
    return kTfLiteOk;
}

/* ---- the delegate ---------------------------------------------------------------------------------------------- */

static int name_is(const tsptq_tensor *t, const char *name) {
    return name && strlen(name) == t->name_len && memcmp(name, t->name, t->name_len) == 0;
}

/* The layout check: refuse a runtime whose structs are not the ones declared in tflite_c_api.h. Returns NULL when
 * the runtime matches, else what differs (written into `why`). */
static const char *check_runtime(TfLiteContext *ctx, const tsptq_model *m, char *why, size_t n) {
    uint32_t i;
    if (!ctx->tensors || !ctx->GetExecutionPlan || !ctx->GetNodeAndRegistration ||
        !ctx->ReplaceNodeSubsetsWithDelegateKernels)
        return "a TfLiteContext member the delegate uses is NULL";
    if (ctx->tensors_size < m->n_tensors) {
        snprintf(why, n, "the interpreter has %zu tensors, the model %u", ctx->tensors_size, m->n_tensors);
        return why;
    }
    /* integers first (no pointer is followed until every tensor's type and size agree at the declared stride) */
    for (i = 0; i < m->n_tensors; i++) {
        const TfLiteTensor *lt = &ctx->tensors[i];
        const tsptq_tensor *t = &m->tensors[i];
        if (lt->type != t->type || (lt->bytes != t->nbytes && !(t->is_const && lt->bytes == 0))) {
            snprintf(why, n, "tensor %u: type %d, %zu bytes in the interpreter at the declared TfLiteTensor layout "
                             "(%d bytes); type %d, %u bytes in the model", i, lt->type, lt->bytes,
                     TSPTQ_TFLITE_TENSOR_SIZE, t->type, t->nbytes);
            return why;
        }
    }
    for (i = 0; i < m->n_tensors; i++) {
        const TfLiteTensor *lt = &ctx->tensors[i];
        const tsptq_tensor *t = &m->tensors[i];
        if (!name_is(t, lt->name)) {
            snprintf(why, n, "tensor %u is named '%.60s' in the interpreter, '%.*s' in the model", i,
                     lt->name ? lt->name : "(null)", (int)(t->name_len > 60 ? 60 : t->name_len),
                     (const char *)t->name);
            return why;
        }
    }
    return NULL;
}

static TfLiteStatus delegate_prepare(TfLiteContext *ctx, TfLiteDelegate *d) {
    tq_state *s = (tq_state *)d->data_;
    tsptq_model *m = s->model;
    TfLiteIntArray *plan, *claim;
    TfLiteRegistration reg;
    int i, j, n = 0;
    TfLiteStatus rc;
    char why[300];
    const char *bad = check_runtime(ctx, m, why, sizeof why);
    if (bad) {
        ctx->ReportError(ctx, "tsptq delegate: this TFLite runtime's structs do not match the ones the delegate was "
                              "built for (%s), or it runs another model than '%s' (%s): refusing to run",
                         TSPTQ_TFLITE_PINNED, s->path, bad);
        return kTfLiteError;
    }
    if (ctx->GetExecutionPlan(ctx, &plan) != kTfLiteOk) return kTfLiteError;
    claim = (TfLiteIntArray *)malloc(sizeof(TfLiteIntArray) + sizeof(int) * (size_t)(plan->size + 1));
    if (!claim) return kTfLiteError;
    for (i = 0; i < plan->size; i++) {
        int idx = plan->data[i];
        TfLiteNode *node;
        TfLiteRegistration *r;
        const tsptq_op *op;
        if (ctx->GetNodeAndRegistration(ctx, idx, &node, &r) != kTfLiteOk) {
            free(claim);
            return kTfLiteError;
        }
        if (r->builtin_code != kTfLiteBuiltinCustom || !r->custom_name || strncmp(r->custom_name, "TSPTQ_", 6) != 0)
            continue;
        op = idx >= 0 && (uint32_t)idx < m->n_ops ? &m->ops[idx] : NULL;
        if (!op || strcmp(tsptq_op_name(m, (size_t)idx), r->custom_name) != 0 || node->inputs->size != op->n_inputs ||
            node->outputs->size != 1 || node->outputs->data[0] != op->output) {
            ctx->ReportError(ctx, "tsptq delegate: node %d (%s) is not op %d of '%s'", idx, r->custom_name, idx,
                             s->path);
            free(claim);
            return kTfLiteError;
        }
        for (j = 0; j < op->n_inputs; j++)
            if (node->inputs->data[j] != op->inputs[j]) {
                ctx->ReportError(ctx, "tsptq delegate: node %d (%s) input %d is tensor %d, the model says %d", idx,
                                 r->custom_name, j, node->inputs->data[j], op->inputs[j]);
                free(claim);
                return kTfLiteError;
            }
        claim->data[n++] = idx;
    }
    claim->size = n;
    memset(&reg, 0, sizeof reg);
    reg.init = kernel_init;
    reg.free = kernel_free;
    reg.prepare = kernel_prepare;
    reg.invoke = kernel_invoke;
    reg.builtin_code = TQ_BUILTIN_DELEGATE;
    reg.custom_name = "TsptqDelegate";
    reg.version = 1;
    rc = n ? ctx->ReplaceNodeSubsetsWithDelegateKernels(ctx, reg, claim, d) : kTfLiteOk;
    free(claim);
    return rc;
}

#if defined(__GNUC__)
#define TQ_EXPORT __attribute__((visibility("default")))
#else
#define TQ_EXPORT
#endif

TQ_EXPORT TfLiteDelegate *tflite_plugin_create_delegate(char **keys, char **values, size_t n,
                                                        void (*report_error)(const char *));
TQ_EXPORT void tflite_plugin_destroy_delegate(TfLiteDelegate *d);
TQ_EXPORT int tsptq_delegate_profile(const TfLiteDelegate *d, uint64_t *ns, const char **names, int cap);
TQ_EXPORT size_t tsptq_delegate_arena_bytes(const TfLiteDelegate *d);

TfLiteDelegate *tflite_plugin_create_delegate(char **keys, char **values, size_t n,
                                              void (*report_error)(const char *)) {
    const char *model = NULL, *version = NULL;
    char err[TSPTQ_MESSAGE_SIZE + 700];
    size_t i;
    tq_state *s;
    TfLiteDelegate *d;
    for (i = 0; i < n; i++) {
        if (strcmp(keys[i], "model") == 0) model = values[i];
        else if (strcmp(keys[i], "runtime_version") == 0) version = values[i];
        else {
            snprintf(err, sizeof err, "tsptq delegate: unknown option '%s' (known: model, runtime_version)", keys[i]);
            if (report_error) report_error(err);
            return NULL;
        }
    }
    if (version) {
        int ok = 0;
        for (i = 0; i < sizeof known_versions / sizeof known_versions[0]; i++) ok |= !strcmp(version, known_versions[i]);
        if (!ok) {
            snprintf(err, sizeof err, "tsptq delegate: runtime version '%s' is not supported: its TFLite structs are "
                                      "declared for %s only", version, TSPTQ_TFLITE_PINNED);
            if (report_error) report_error(err);
            return NULL;
        }
    }
    if (!model || !*model) {
        if (report_error)
            report_error("tsptq delegate: the option 'model' (path of the tsptq .tflite file the interpreter runs) is "
                         "required, e.g. load_delegate(lib, options={'model': 'model.tflite'})");
        return NULL;
    }
    s = load_state(model, err, sizeof err);
    if (!s) {
        if (report_error) report_error(err);
        return NULL;
    }
    /* room past the declared struct, zeroed: a runtime with a longer TfLiteDelegate reads zeros (defaults) */
    d = (TfLiteDelegate *)calloc(1, sizeof(TfLiteDelegate) + 256);
    if (!d) {
        free_state(s);
        if (report_error) report_error("tsptq delegate: out of memory");
        return NULL;
    }
    d->data_ = s;
    d->Prepare = delegate_prepare;
    d->flags = kTfLiteDelegateFlagsAllowDynamicTensors;
    return d;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate *d) {
    if (!d) return;
    free_state((tq_state *)d->data_);
    free(d);
}

/* The per-op profile of the last invocation, for tools that load the library (the LiteRT board agent): for op k
 * (k < cap) of the model, ns[k] = nanoseconds it ran in the delegate (0 for an op LiteRT ran) and names[k] its name.
 * Returns the number of ops. */
int tsptq_delegate_profile(const TfLiteDelegate *d, uint64_t *ns, const char **names, int cap) {
    const tq_state *s = d ? (const tq_state *)d->data_ : NULL;
    int k, n;
    if (!s) return 0;
    n = (int)s->model->n_ops;
    for (k = 0; k < n && k < cap; k++) {
        if (ns) ns[k] = s->op_ns[k];
        if (names) names[k] = tsptq_op_name(s->model, (size_t)k) ? tsptq_op_name(s->model, (size_t)k) : "?";
    }
    return n;
}

/* Bytes of the arena the delegate holds (the tsptq runtime's plan for the whole model; LiteRT has its own). */
size_t tsptq_delegate_arena_bytes(const TfLiteDelegate *d) {
    const tq_state *s = d ? (const tq_state *)d->data_ : NULL;
    return s ? tsptq_arena_size(s->model) : 0;
}
