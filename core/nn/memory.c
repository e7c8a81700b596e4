#define _POSIX_C_SOURCE 200809L
/* Memory budgets: the bytes a network takes at a batch size, in training and in inference, computed from its
 * shapes alone (a definition is described without allocating, cnn_net_describe), and the limit every network is
 * checked against before it allocates (include/cnn/net.h, "memory budget", says what is exact and what is
 * approximated). Every sum and product here saturates at INT64_MAX: a total that large is refused, never wrapped. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/checked.h"
#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/nn/net.h"
#include "core/op_check.h"
#include "core/ops.h"

/* the default limit: this share of the memory available when it is first asked for, leaving room for the
 * process itself and for what the estimate does not count */
#define DEFAULT_LIMIT_SHARE 0.8
/* when the machine does not say what is available */
#define FALLBACK_AVAILABLE ((int64_t)4 << 30)

// ---------------------------------------------------------------------------------------------------------------
// the limit

static int64_t memory_limit_set;     /* 0: the default */
static int64_t memory_limit_default; /* 0: not computed yet */

void cnn_set_memory_limit(int64_t bytes) { __atomic_store_n(&memory_limit_set, bytes > 0 ? bytes : 0, __ATOMIC_RELAXED); }

/* A number of bytes from a cgroup file ("max" or missing: -1). */
static int64_t read_cgroup_bytes(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long v = -1;
    if (fscanf(f, "%lld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

int64_t cnn_memory_available(void)
{
    int64_t avail = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) {
                avail = cnn_mul_sat(kb, 1024);
                break;
            }
        fclose(f);
    }
    if (avail < 0) {
        long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0) avail = cnn_mul_sat(pages, page);
    }
    if (avail < 0) avail = FALLBACK_AVAILABLE;
    /* a container's cgroup (v2) limit may leave less than the machine has */
    int64_t max = read_cgroup_bytes("/sys/fs/cgroup/memory.max"), cur = read_cgroup_bytes("/sys/fs/cgroup/memory.current");
    if (max > 0 && cur >= 0) {
        int64_t left = max > cur ? max - cur : 0;
        if (left < avail) avail = left;
    }
    return avail;
}

int64_t cnn_memory_limit(void)
{
    int64_t set = __atomic_load_n(&memory_limit_set, __ATOMIC_RELAXED);
    if (set > 0) return set;
    int64_t d = __atomic_load_n(&memory_limit_default, __ATOMIC_RELAXED);
    if (d > 0) return d;
    /* computed once: what is available later has the process's own networks taken out already */
    d = (int64_t)((double)cnn_memory_available() * DEFAULT_LIMIT_SHARE);
    if (d < 1) d = 1;
    int64_t expected = 0;
    if (!__atomic_compare_exchange_n(&memory_limit_default, &expected, d, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        d = expected; /* another thread was first: the same for everyone */
    return d;
}

const char *cnn_memory_format(int64_t bytes, char *buf, size_t size)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes == INT64_MAX) {
        snprintf(buf, size, "more than 8 EiB");
        return buf;
    }
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 6) {
        v /= 1024.0;
        u++;
    }
    if (u == 0) snprintf(buf, size, "%lld B", (long long)bytes);
    else snprintf(buf, size, "%.*f %s", v < 10.0 ? 2 : v < 100.0 ? 1 : 0, v, units[u]);
    return buf;
}

// ---------------------------------------------------------------------------------------------------------------
// the estimate

/* A layer's figures as the fixed part and the part per image (times the batch: the rows and totals). */
typedef struct layer_parts {
    int64_t params, trainable, param, grad, optimizer;  /* elements and bytes, fixed */
    int64_t act, scratch, backward;                       /* bytes per image */
    int64_t scratch_fixed;                                /* bytes */
    int64_t conv_weight;                                  /* bytes of a convolution's weight (workspace model) */
    int winograd;                                         /* a convolution of Winograd's shapes */
} layer_parts;

/* approximated: oneDNN's scratchpad of a Winograd convolution (transformed tiles, in blocks it sizes to the caches),
 * queried on the development machine: 6.7 to 7.9 MB forward and 9 to 10 MB for the weights' gradient, at 1 and 2
 * threads, whatever the batch (19 MB for the weights' gradient at 8 threads). The CPU backend's one scratch holds
 * the largest, so it counts once: 6 MiB for inference, 10 MiB for training. */
#define CNN_MEM_WINOGRAD_INFER ((int64_t)6 << 20)
#define CNN_MEM_WINOGRAD_TRAIN ((int64_t)10 << 20)

/* oneDNN has Winograd kernels only for AVX-512: elsewhere those convolutions run direct and take none of it */
static int processor_has_winograd(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

static int64_t per_image_elems(const cnn_shape *s)
{
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++) n = cnn_mul_sat(n, s->d[d]);
    return n;
}

static int64_t tensor_bytes(const cnn_tensor *t)
{
    int64_t n = 1;
    if (!t) return 0;
    for (int d = 0; d < t->ndim; d++) n = cnn_mul_sat(n, t->shape[d]);
    return cnn_mul_sat(n, (int64_t)cnn_dtype_size(t->dtype));
}

static int64_t tensor_elems(const cnn_tensor *t)
{
    int64_t n = 1;
    if (!t) return 0;
    for (int d = 0; d < t->ndim; d++) n = cnn_mul_sat(n, t->shape[d]);
    return n;
}

static void parts_of(const cnn_layer *l, int slots, int64_t csize, int batch, layer_parts *p)
{
    memset(p, 0, sizeof *p);
    for (int k = 0; k < l->nparams; k++) {
        const cnn_param *q = &l->params[k];
        p->params = cnn_add_sat(p->params, tensor_elems(q->value));
        p->param = cnn_add_sat(p->param, cnn_add_sat(tensor_bytes(q->value), tensor_bytes(q->value_lp)));
        if (l->frozen) continue;
        p->trainable = cnn_add_sat(p->trainable, tensor_elems(q->value));
        p->grad = cnn_add_sat(p->grad, tensor_bytes(q->grad));
        /* the optimizer's state is shaped like the f32 master weight (core/nn/optim.c, zeros_like) */
        p->optimizer = cnn_add_sat(p->optimizer, cnn_mul_sat(slots, tensor_bytes(q->value)));
    }
    for (int k = 0; k < l->nstate; k++) {
        p->params = cnn_add_sat(p->params, tensor_elems(l->state[k].value));
        p->param = cnn_add_sat(p->param, tensor_bytes(l->state[k].value));
    }
    if (cnn_layer_is_view(l)) return;
    const int64_t out = cnn_mul_sat(per_image_elems(&l->out), csize);
    p->act = out;
    /* the buffers layers keep (core/layer_*.c, cnn_layer_buffer): a pre-activation where the activation's gradient
     * needs its input, batchnorm's batch mean and inverse deviation */
    const int pre = l->ops == &cnn_conv_layer_ops || l->ops == &cnn_dense_layer_ops ||
                    l->ops == &cnn_batchnorm_layer_ops || l->ops == &cnn_add_layer_ops;
    if (pre && cnn_act_grad_needs_input(l->act)) p->scratch = out;
    if (l->ops == &cnn_batchnorm_layer_ops) p->scratch_fixed = cnn_mul_sat(2, tensor_bytes(l->params[0].value));
    /* approximated: the CPU backend's max-pool keeps a byte of argmax per output for backward */
    if (l->ops == &cnn_maxpool_layer_ops || l->ops == &cnn_globalmaxpool_layer_ops)
        p->backward = per_image_elems(&l->out);
    if (l->ops == &cnn_conv_layer_ops && l->nparams) p->conv_weight = tensor_bytes(l->params[0].value);
    if (l->ops == &cnn_conv_layer_ops) { /* the CPU backend's rule for Winograd, on this layer at the batch */
        const cnn_conv_layer *c = (const cnn_conv_layer *)l;
        const cnn_conv2d_sizes k = {
            .n = batch, .h = l->in.d[0], .w = l->in.d[1], .c = l->in.d[2], .o = c->filters,
            .kh = c->kernel_h, .kw = c->kernel_w, .oh = l->out.d[0], .ow = l->out.d[1],
            .stride_h = c->stride_h, .stride_w = c->stride_w,
            .pad_top = c->pad_top, .pad_left = c->pad_left, .pad_bottom = c->pad_bottom, .pad_right = c->pad_right,
            .dilation_h = c->dilation_h, .dilation_w = c->dilation_w, .groups = c->groups,
        };
        p->winograd = cnn_conv2d_winograd_shape(&k, CNN_OP_FWD);
    }
}

/* The totals of one mode from its fixed and per-image parts, each category at the batch size. */
typedef struct mode_parts {
    int64_t fixed[8], per[8]; /* in the order of cnn_memory_totals' first eight fields */
} mode_parts;

static void finish_totals(const mode_parts *m, int batch, cnn_memory_totals *t)
{
    int64_t *field[8] = {&t->param_bytes, &t->grad_bytes, &t->optimizer_bytes, &t->activation_bytes,
                         &t->scratch_bytes, &t->activation_grad_bytes, &t->batch_bytes, &t->workspace_bytes};
    memset(t, 0, sizeof *t);
    for (int c = 0; c < 8; c++) {
        *field[c] = cnn_add_sat(m->fixed[c], cnn_mul_sat(batch, m->per[c]));
        t->fixed_bytes = cnn_add_sat(t->fixed_bytes, m->fixed[c]);
        t->per_image_bytes = cnn_add_sat(t->per_image_bytes, m->per[c]);
    }
    t->total_bytes = cnn_add_sat(t->fixed_bytes, cnn_mul_sat(batch, t->per_image_bytes));
}

enum { PARAM = 0, GRAD, OPTIM, ACT, SCRATCH, ACT_GRAD, BATCH, WORKSPACE };

/* "a, b" when layer i's inputs are not just the previous line (Keras' "Connected to"), else NULL */
static char *connected_to(const cnn_net *net, int i, cnn_status *st)
{
    const cnn_layer *l = net->layers[i];
    *st = CNN_OK;
    if (l->ninputs == 1 && l->inputs[0] == i - 1) return NULL;
    size_t size = 1;
    for (int k = 0; k < l->ninputs; k++) size += 2 + strlen(l->inputs[k] < 0 ? "input" : net->layers[l->inputs[k]]->name);
    char *buf = malloc(size);
    if (!buf) {
        *st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        return NULL;
    }
    size_t len = 0;
    for (int k = 0; k < l->ninputs; k++) {
        int src = l->inputs[k];
        len += (size_t)snprintf(buf + len, size - len, "%s%s", k ? ", " : "", src < 0 ? "input" : net->layers[src]->name);
    }
    return buf;
}

void cnn_memory_estimate_destroy(cnn_memory_estimate *e)
{
    if (!e) return;
    for (int i = 0; e->layers && i < e->nlayers; i++) free(e->layers[i].connected);
    free(e->layers);
    free(e->source);
    free(e);
}

cnn_status cnn_net_memory_estimate(const cnn_net *net, const cnn_memory_config *cfg, cnn_memory_estimate **out)
{
    cnn_status st = CNN_OK;
    cnn_buffer_plan plan = {0};
    *out = NULL;
    if (!net || !cfg) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_net_memory_estimate: NULL network or config");
    if (cfg->batch < 1 || cfg->optimizer_slots < 0 || cfg->optimizer_slots > 2)
        return cnn_error(CNN_ERR_INVALID_ARG, "memory estimate: the batch size (%d) must be at least 1 and the "
                         "optimizer slots (%d) 0, 1 or 2", cfg->batch, cfg->optimizer_slots);
    const int n = cfg->batch, nl = net->nlayers;
    const int64_t csize = (int64_t)cnn_dtype_size(net->compute);
    cnn_memory_estimate *e = calloc(1, sizeof *e);
    if (!e) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    e->layers = calloc((size_t)(nl ? nl : 1), sizeof *e->layers);
    e->source = malloc(strlen(net->source) + 1);
    if (!e->layers || !e->source) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the memory estimate of %d layers", nl);
        goto fail;
    }
    strcpy(e->source, net->source);
    e->batch = n;
    e->optimizer_slots = cfg->optimizer_slots;
    e->nlayers = nl;
    cnn_shape_format(&net->input, e->input_shape, sizeof e->input_shape);
    CNN_TRY(cnn_net_plan_buffers(net, &plan));

    mode_parts tr, in;
    memset(&tr, 0, sizeof tr);
    memset(&in, 0, sizeof in);
    int64_t conv_weights = 0, largest_conv = 0, largest_param = 0;
    int winograd = 0;
    for (int i = 0; i < nl; i++) {
        const cnn_layer *l = net->layers[i];
        cnn_memory_row *r = &e->layers[i];
        layer_parts p;
        parts_of(l, cfg->optimizer_slots, csize, n, &p);
        snprintf(r->name, sizeof r->name, "%s", l->name);
        r->type = l->ops->type_name;
        r->line = l->line;
        cnn_shape_format(&l->out, r->shape, sizeof r->shape);
        r->connected = connected_to(net, i, &st);
        if (st != CNN_OK) goto fail;
        r->params = p.params;
        r->trainable = p.trainable;
        r->param_bytes = p.param;
        r->grad_bytes = p.grad;
        r->optimizer_bytes = p.optimizer;
        r->activation_bytes = cnn_mul_sat(n, p.act);
        r->scratch_bytes = cnn_add_sat(cnn_mul_sat(n, p.scratch), p.scratch_fixed);
        r->backward_bytes = cnn_mul_sat(n, p.backward);
        r->infer_bytes = cnn_add_sat(cnn_add_sat(r->param_bytes, r->activation_bytes), r->scratch_bytes);
        r->train_bytes = cnn_add_sat(cnn_add_sat(r->infer_bytes, r->backward_bytes),
                                     cnn_add_sat(r->grad_bytes, r->optimizer_bytes));
        e->trainable = cnn_add_sat(e->trainable, p.trainable);
        e->non_trainable = cnn_add_sat(e->non_trainable, p.params - p.trainable);

        for (mode_parts *m = &tr; m; m = m == &tr ? &in : NULL) {
            m->fixed[PARAM] = cnn_add_sat(m->fixed[PARAM], p.param);
            m->per[ACT] = cnn_add_sat(m->per[ACT], p.act);
            m->per[SCRATCH] = cnn_add_sat(m->per[SCRATCH], p.scratch);
            m->fixed[SCRATCH] = cnn_add_sat(m->fixed[SCRATCH], p.scratch_fixed);
        }
        tr.fixed[GRAD] = cnn_add_sat(tr.fixed[GRAD], p.grad);
        tr.fixed[OPTIM] = cnn_add_sat(tr.fixed[OPTIM], p.optimizer);
        tr.per[SCRATCH] = cnn_add_sat(tr.per[SCRATCH], p.backward);
        conv_weights = cnn_add_sat(conv_weights, p.conv_weight);
        if (p.conv_weight > largest_conv) largest_conv = p.conv_weight;
        winograd |= p.winograd;
        for (int k = 0; k < l->nparams; k++)
            if (tensor_bytes(l->params[k].value) > largest_param) largest_param = tensor_bytes(l->params[k].value);
    }
    /* the activations' gradients: the pooled buffers and the scratch ones (core/nn/net.c, alloc_buffers) */
    int64_t grads = 0;
    for (int q = 0; q < plan.npool; q++) grads = cnn_add_sat(grads, plan.pool[q]);
    grads = cnn_add_sat(grads, cnn_mul_sat(plan.nscratch, plan.largest));
    tr.per[ACT_GRAD] = cnn_mul_sat(grads, csize);
    /* the staged batch: the images on the device (and their 16-bit cast) and on the host, labels (device and host),
     * losses, probabilities; two spare uploads on backends that copy asynchronously */
    const int64_t pixels = per_image_elems(&net->input), k = nl ? per_image_elems(&net->layers[nl - 1]->out) : 0;
    int64_t batch = cnn_add_sat(cnn_mul_sat(2 * 4, pixels), 3 * 4);
    batch = cnn_add_sat(batch, cnn_mul_sat(4, k));
    if (net->compute != CNN_F32) batch = cnn_add_sat(batch, cnn_mul_sat(csize, pixels));
    if (net->backend && cnn_op_has(net->backend, "write_async"))
        batch = cnn_add_sat(batch, cnn_mul_sat(2, cnn_add_sat(cnn_mul_sat(4, pixels), 4)));
    tr.per[BATCH] = in.per[BATCH] = batch;
    /* approximated: oneDNN keeps each convolution's weights reordered to its layout for the forward pass and, in
     * training, for backward data, and reorders the weight gradient through a scratch buffer; a parameter is
     * initialized (or loaded) through a host copy of it */
    in.fixed[WORKSPACE] = cnn_add_sat(conv_weights, largest_param);
    tr.fixed[WORKSPACE] = cnn_add_sat(cnn_add_sat(cnn_mul_sat(2, conv_weights), largest_conv), largest_param);
    if (winograd && processor_has_winograd()) {
        in.fixed[WORKSPACE] = cnn_add_sat(in.fixed[WORKSPACE], CNN_MEM_WINOGRAD_INFER);
        tr.fixed[WORKSPACE] = cnn_add_sat(tr.fixed[WORKSPACE], CNN_MEM_WINOGRAD_TRAIN);
    }
    finish_totals(&tr, n, &e->train);
    finish_totals(&in, n, &e->infer);
    cnn_buffer_plan_free(&plan);
    *out = e;
    return CNN_OK;
fail:
    cnn_buffer_plan_free(&plan);
    cnn_memory_estimate_destroy(e);
    return st;
}

/* The estimate of a definition whose first `frozen` layers are frozen (a fine-tuned model file says how many). */
static cnn_status estimate_text(const char *text, const char *source, int frozen, const cnn_memory_config *cfg,
                                cnn_memory_estimate **out)
{
    cnn_net *net = NULL;
    *out = NULL;
    if (!text || !cfg) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_memory_estimate_text: NULL text or config");
    cnn_status st = cnn_net_describe(text, source, NULL, 0, &net);
    if (st == CNN_OK && frozen && (st = cnn_net_freeze_count(net, frozen)) != CNN_OK)
        st = cnn_error_prefix(st, "%s: metadata 'frozen_layers': ", source);
    if (st == CNN_OK) st = cnn_net_memory_estimate(net, cfg, out);
    cnn_net_destroy(net);
    return st;
}

cnn_status cnn_memory_estimate_text(const char *text, const char *source, const cnn_memory_config *cfg,
                                    cnn_memory_estimate **out)
{
    return estimate_text(text, source, 0, cfg, out);
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

cnn_status cnn_memory_estimate_file(const char *path, const cnn_memory_config *cfg, cnn_memory_estimate **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    if (!path || !cfg) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_memory_estimate_file: NULL path or config");
    if (!ends_with(path, ".safetensors")) {
        char *text = NULL;
        st = cnn_read_definition(path, &text);
        if (st == CNN_OK) st = cnn_memory_estimate_text(text, path, cfg, out);
        free(text);
        return st;
    }
    cnn_st_file *f = NULL;
    CNN_TRY(cnn_st_read(path, &f));
    const char *definition = cnn_st_meta(f, "definition");
    if (!definition) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: not a cnn.c model or checkpoint file (its __metadata__ has no "
                                       "definition)", path);
        goto fail;
    }
    const char *frozen_s = cnn_st_meta(f, "frozen_layers");
    char *end = NULL;
    long frozen = frozen_s ? strtol(frozen_s, &end, 10) : 0;
    if (frozen_s && (!*frozen_s || *end || frozen < 0 || frozen > INT_MAX)) {
        st = cnn_error(CNN_ERR_FORMAT, "%s: metadata 'frozen_layers' must be a count of layers, got '%s'", path,
                       frozen_s);
        goto fail;
    }
    {
        char source[512];
        snprintf(source, sizeof source, "%s (definition)", path); /* as cnn_net_load names it */
        st = estimate_text(definition, source, (int)frozen, cfg, out);
    }
fail:
    cnn_st_free(f);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the limit check

int64_t cnn_memory_max_batch(const cnn_memory_estimate *e, int training, int64_t limit)
{
    const cnn_memory_totals *t = training ? &e->train : &e->infer;
    if (limit < t->fixed_bytes || t->per_image_bytes <= 0) return 0;
    return (limit - t->fixed_bytes) / t->per_image_bytes; /* fixed + b * per <= limit < fixed + (b + 1) * per */
}

typedef struct consumer {
    char what[128];
    int64_t bytes;
} consumer;

/* Keeps top[0..3) the largest, in decreasing order. */
static void offer(consumer top[3], const char *what, int64_t bytes)
{
    if (bytes <= 0 || bytes <= top[2].bytes) return;
    int at = 2;
    while (at > 0 && bytes > top[at - 1].bytes) {
        top[at] = top[at - 1];
        at--;
    }
    snprintf(top[at].what, sizeof top[at].what, "%s", what);
    top[at].bytes = bytes;
}

cnn_status cnn_memory_check(const cnn_memory_estimate *e, int training, int64_t limit)
{
    if (!e) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_memory_check: NULL estimate");
    if (limit <= 0) limit = cnn_memory_limit();
    const cnn_memory_totals *t = training ? &e->train : &e->infer;
    if (t->total_bytes <= limit) return CNN_OK;
    consumer top[3];
    memset(top, 0, sizeof top);
    char what[128], a[32], b[32], c[32];
    for (int i = 0; i < e->nlayers; i++) {
        const cnn_memory_row *r = &e->layers[i];
        snprintf(what, sizeof what, "layer '%s' (line %d)", r->name, r->line);
        offer(top, what, training ? r->train_bytes : r->infer_bytes);
    }
    offer(top, "the activations' gradients", t->activation_grad_bytes);
    offer(top, "the staged batch", t->batch_bytes);
    offer(top, "backend workspaces (approximated)", t->workspace_bytes);
    char list[512];
    size_t len = 0;
    list[0] = '\0';
    for (int i = 0; i < 3 && top[i].bytes > 0 && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s %s", i ? ", " : "", top[i].what,
                                cnn_memory_format(top[i].bytes, a, sizeof a));
    char fits[160];
    int64_t most = cnn_memory_max_batch(e, training, limit);
    if (most > 0)
        snprintf(fits, sizeof fits, "the largest batch size that fits is %lld", (long long)most);
    else if (t->fixed_bytes > limit)
        snprintf(fits, sizeof fits, "no batch size fits: the weights%s alone need %s",
                 training ? ", their gradients, the optimizer's state and the workspaces" : " and the workspaces",
                 cnn_memory_format(t->fixed_bytes, a, sizeof a));
    else
        snprintf(fits, sizeof fits, "no batch size fits: one image needs %s",
                 cnn_memory_format(cnn_add_sat(t->fixed_bytes, t->per_image_bytes), a, sizeof a));
    return cnn_error(CNN_ERR_NO_MEMORY, "%s: %s at batch %d needs %s, more than the memory limit of %s; the largest "
                     "consumers: %s; %s", e->source, training ? "a training step" : "inference", e->batch,
                     cnn_memory_format(t->total_bytes, b, sizeof b), cnn_memory_format(limit, c, sizeof c), list, fits);
}

cnn_status cnn_net_check_memory(const cnn_net *net, int batch, int training, int optimizer_slots)
{
    cnn_memory_estimate *e = NULL;
    cnn_memory_config cfg = {.batch = batch, .optimizer_slots = training ? optimizer_slots : 0};
    cnn_status st = cnn_net_memory_estimate(net, &cfg, &e);
    if (st == CNN_OK) st = cnn_memory_check(e, training, 0);
    cnn_memory_estimate_destroy(e);
    return st;
}

void cnn_net_set_memory_use(cnn_net *net, int training, int optimizer_slots)
{
    net->memory_training = training != 0;
    net->memory_slots = training ? optimizer_slots : 0;
}

// ---------------------------------------------------------------------------------------------------------------
// printing

#define RULE "________________________________________________________________________________________________________"
#define THICK "========================================================================================================"

/* The Keras-style table (cnn_net_summary's). */
static void print_layers(const cnn_memory_estimate *e, FILE *out)
{
    char title[160];
    fprintf(out, "Model: \"%s\"\n%s\n", e->source, RULE);
    fprintf(out, " %-50s %-22s %-10s %s\n%s\n", "Layer (type)", "Output Shape", "Param #", "Connected to", THICK);
    fprintf(out, " %-50s %-22s %-10d\n\n", "input (InputLayer)", e->input_shape, 0);
    for (int i = 0; i < e->nlayers; i++) {
        const cnn_memory_row *r = &e->layers[i];
        snprintf(title, sizeof title, "%s (%s)", r->name, r->type);
        fprintf(out, " %-50s %-22s %-10lld %s\n", title, r->shape, (long long)r->params,
                r->connected ? r->connected : "");
        if (i + 1 < e->nlayers) fputc('\n', out);
    }
    /* Keras: the total counts the non-trainable state (batchnorm moving statistics) too */
    int64_t total = cnn_add_sat(e->trainable, e->non_trainable);
    fprintf(out, "%s\nTotal params: %lld (%.2f KB)\nTrainable params: %lld\nNon-trainable params: %lld\n%s\n", THICK,
            (long long)total, (double)total * 4.0 / 1024.0, (long long)e->trainable, (long long)e->non_trainable, RULE);
}

void cnn_net_summary(const cnn_net *net, FILE *out)
{
    cnn_memory_estimate *e = NULL;
    cnn_memory_config cfg = {.batch = 1};
    if (cnn_net_memory_estimate(net, &cfg, &e) != CNN_OK) {
        fprintf(out, "Model: \"%s\": no summary: %s\n", net->source, cnn_last_error());
        return;
    }
    print_layers(e, out);
    cnn_memory_estimate_destroy(e);
}

static void print_totals(const char *title, const cnn_memory_totals *t, int training, FILE *out)
{
    char s[8][32], total[32];
    fprintf(out, " %s: %s\n   parameters %s", title, cnn_memory_format(t->total_bytes, total, sizeof total),
            cnn_memory_format(t->param_bytes, s[0], sizeof s[0]));
    if (training)
        fprintf(out, ", gradients %s, optimizer state %s", cnn_memory_format(t->grad_bytes, s[1], sizeof s[1]),
                cnn_memory_format(t->optimizer_bytes, s[2], sizeof s[2]));
    fprintf(out, ",\n   activations %s, layer buffers %s", cnn_memory_format(t->activation_bytes, s[3], sizeof s[3]),
            cnn_memory_format(t->scratch_bytes, s[4], sizeof s[4]));
    if (training)
        fprintf(out, ", activation gradients %s", cnn_memory_format(t->activation_grad_bytes, s[5], sizeof s[5]));
    fprintf(out, ",\n   batch %s, workspaces (approximated) %s\n", cnn_memory_format(t->batch_bytes, s[6], sizeof s[6]),
            cnn_memory_format(t->workspace_bytes, s[7], sizeof s[7]));
}

void cnn_memory_print(const cnn_memory_estimate *e, int64_t limit, FILE *out)
{
    char a[32], b[32], c[32], d[32], title[160];
    if (limit <= 0) limit = cnn_memory_limit();
    print_layers(e, out);
    fprintf(out, "Memory at batch %d (training with %d optimizer tensor%s per weight)\n%s\n", e->batch,
            e->optimizer_slots, e->optimizer_slots == 1 ? "" : "s", RULE);
    fprintf(out, " %-50s %12s %12s %12s %12s\n%s\n", "Layer (type)", "Param bytes", "Act (train)", "Act (infer)",
            "Train total", THICK);
    for (int i = 0; i < e->nlayers; i++) {
        const cnn_memory_row *r = &e->layers[i];
        int64_t infer = cnn_add_sat(r->activation_bytes, r->scratch_bytes);
        snprintf(title, sizeof title, "%s (%s)", r->name, r->type);
        fprintf(out, " %-50s %12s %12s %12s %12s\n", title, cnn_memory_format(r->param_bytes, a, sizeof a),
                cnn_memory_format(cnn_add_sat(infer, r->backward_bytes), b, sizeof b),
                cnn_memory_format(infer, c, sizeof c), cnn_memory_format(r->train_bytes, d, sizeof d));
    }
    fprintf(out, "%s\n", THICK);
    snprintf(title, sizeof title, "Training step at batch %d", e->batch);
    print_totals(title, &e->train, 1, out);
    snprintf(title, sizeof title, "Inference at batch %d", e->batch);
    print_totals(title, &e->infer, 0, out);
    int64_t most_train = cnn_memory_max_batch(e, 1, limit), most_infer = cnn_memory_max_batch(e, 0, limit);
    char origin[64] = "";
    if (!__atomic_load_n(&memory_limit_set, __ATOMIC_RELAXED) && limit == cnn_memory_limit())
        snprintf(origin, sizeof origin, " (%.0f%% of the memory available)", 100.0 * DEFAULT_LIMIT_SHARE);
    fprintf(out, " Memory limit %s%s: training fits up to batch %lld, inference up to batch %lld\n%s\n",
            cnn_memory_format(limit, a, sizeof a), origin, (long long)most_train, (long long)most_infer, RULE);
}
