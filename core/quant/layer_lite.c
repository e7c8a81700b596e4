/* A quantized model (a cnn-lite file, `cnn quantize`) as one layer of a network: the network's input,
 * normalization, class names and loss stay libcnn's, and this layer's forward runs the file's ops into the class
 * scores. It runs on the CPU, for inference: backward is refused, and the network has no trainable weights.
 *
 * Two paths. The compiled one (the backend's qprog ops, cpu/qprog.c): the whole graph as oneDNN primitives built
 * once per batch size, int8 requantization fused into the convolutions (in float: within one step of cnn-lite's),
 * float models through oneDNN's float kernels. The exact one, where the backend cannot compile a model (no VNNI, a
 * shape oneDNN refuses) or when asked (cnn_net_quant_set_compiled): cnn-lite itself (core/lite/lite.c), the same
 * code and integer arithmetic as libcnn-lite, with its int8 sums from the backend's qconv_s32.
 *
 * cnn_net_load builds such a network when a file's format is "cnn.c lite" (cnn_net_from_lite). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/lite.h"
#include "cnn/quant.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/lite/lite_internal.h"
#include "core/nn/layer.h"
#include "core/nn/model_file.h"
#include "core/nn/net.h"
#include "core/ops.h"

typedef struct lite_layer {
    cnn_layer base;
    unsigned char *model; /* the file's bytes, for reopening at a larger batch */
    size_t len;
    void *arena;
    cnn_lite *m;
    int batch;            /* what m was opened for */
    cnn_plan **plans;     /* the backend's, per op, for its int8 sums (qconv_s32) */
    int nplans;
    uint64_t version;     /* names this opening's weights to the backend's cache */
    int accel_failed;     /* the backend could not: the C kernels from then on */
    cnn_qprog *prog[2];   /* the compiled graph at up to two batch sizes (the last batch of an epoch is smaller) */
    int prog_batch[2];
    uint64_t prog_used[2], clock;
    int exact;            /* 1: cnn-lite's path (asked for, or the backend cannot compile this model) */
    int exact_requant;    /* the compiled graph with cnn-lite's requantization (bit for bit; the default), else
                           * oneDNN's fused float requantization (within one step per op) */
    int ran_compiled;     /* the last forward ran the compiled graph */
} lite_layer;

static uint64_t next_version = 1u << 20; /* distinct from the tensors' (which count from 1) in practice */

/* cnn-lite's accelerator: the backend's int8 convolutions (oneDNN's VNNI kernels on the CPU). */
static int backend_qconv(void *ctx, int i, const cnn_lite_qop *q, const int8_t *x, int n, int8_t *y)
{
    lite_layer *ll = ctx;
    cnn_backend *b = ll->base.backend;
    if (ll->accel_failed || !b || !cnn_op_has(b, "qconv_s32") || i >= ll->nplans) return 0;
    cnn_qconv_args a;
    memset(&a, 0, sizeof a);
    a.plan = &ll->plans[i], a.dense = q->dense, a.n = n, a.h = q->h, a.w = q->w, a.c = q->c, a.oh = q->oh;
    a.ow = q->ow, a.oc = q->oc, a.kh = q->kh, a.kw = q->kw, a.sh = q->sh, a.sw = q->sw, a.dh = q->dh, a.dw = q->dw;
    a.groups = q->groups, a.pt = q->pt, a.pl = q->pl, a.pb = q->pb, a.pr = q->pr, a.x = x, a.x_zp = q->x_zp;
    a.wt = q->wt, a.w_version = ll->version, a.bias = q->bias, a.mult = q->mult, a.shift = q->shift;
    a.y_zp = q->y_zp, a.y_min = q->y_min, a.y_max = q->y_max, a.y = y;
    if (cnn_op_qconv_s32(b, &a) != CNN_OK) {
        ll->accel_failed = 1; /* no VNNI, or a shape oneDNN has no kernel for: the C kernels, exact either way */
        return 0;
    }
    return 1;
}

static void free_plans(lite_layer *ll)
{
    for (int i = 0; i < ll->nplans; i++)
        if (ll->plans[i] && ll->base.backend) cnn_op_plan_destroy(ll->base.backend, ll->plans[i]);
    free(ll->plans);
    ll->plans = NULL;
    ll->nplans = 0;
}

static void free_progs(lite_layer *ll)
{
    for (int i = 0; i < 2; i++) {
        if (ll->prog[i]) cnn_op_qprog_destroy(ll->base.backend, ll->prog[i]);
        ll->prog[i] = NULL;
        ll->prog_batch[i] = 0;
    }
}

/* The compiled graph for n images: *out NULL when the backend cannot compile this model (ll->exact set then). */
static cnn_status compiled(lite_layer *ll, int n, cnn_qprog **out)
{
    cnn_backend *b = ll->base.backend;
    *out = NULL;
    if (ll->exact || !b || !cnn_op_has(b, "qprog_create")) {
        ll->exact = 1;
        return CNN_OK;
    }
    ll->clock++;
    int victim = 0;
    for (int i = 0; i < 2; i++) {
        if (ll->prog[i] && ll->prog_batch[i] == n) {
            ll->prog_used[i] = ll->clock;
            *out = ll->prog[i];
            return CNN_OK;
        }
        if (!ll->prog[i] || (ll->prog[victim] && ll->prog_used[i] < ll->prog_used[victim])) victim = i;
    }
    if (ll->prog[victim]) cnn_op_qprog_destroy(b, ll->prog[victim]);
    ll->prog[victim] = NULL;
    cnn_status st = cnn_op_qprog_create(b, ll->m, n, ll->exact_requant, &ll->prog[victim]);
    if (st == CNN_ERR_UNSUPPORTED) { /* cnn-lite's path from now on */
        ll->exact = 1;
        return CNN_OK;
    }
    if (st != CNN_OK) return st;
    ll->prog_batch[victim] = n;
    ll->prog_used[victim] = ll->clock;
    *out = ll->prog[victim];
    return CNN_OK;
}

static cnn_status reopen(lite_layer *ll, int batch)
{
    char err[256];
    size_t need = 0;
    if (cnn_lite_arena_size(ll->model, ll->len, batch, &need, err, sizeof err) != CNN_LITE_OK)
        return cnn_error(CNN_ERR_FORMAT, "%s", err);
    void *arena = malloc(need);
    if (!arena) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a quantized model at batch %d", batch);
    cnn_lite *m = NULL;
    if (cnn_lite_open(ll->model, ll->len, batch, arena, need, &m, err, sizeof err) != CNN_LITE_OK) {
        free(arena);
        return cnn_error(CNN_ERR_FORMAT, "%s", err);
    }
    if (ll->base.backend) free_progs(ll); /* they point into the arena */
    free(ll->arena);
    ll->arena = arena;
    ll->m = m;
    ll->batch = batch;
    free_plans(ll); /* the weights moved with the arena */
    ll->plans = calloc((size_t)cnn_lite_num_ops(m), sizeof *ll->plans);
    if (!ll->plans) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    ll->nplans = cnn_lite_num_ops(m);
    ll->version = __atomic_add_fetch(&next_version, 1, __ATOMIC_RELAXED);
    cnn_lite_set_accel(m, backend_qconv, ll);
    return CNN_OK;
}

static cnn_status lite_init(cnn_layer *l)
{
    lite_layer *ll = (lite_layer *)l;
    int h, w, c;
    cnn_lite_input_shape(ll->m, &h, &w, &c);
    if (l->in.ndim != 3 || l->in.d[0] != h || l->in.d[1] != w || l->in.d[2] != c)
        return cnn_error(CNN_ERR_SHAPE, "a quantized model for %dx%dx%d images", h, w, c);
    l->out = (cnn_shape){1, {cnn_lite_num_classes(ll->m), 0, 0}};
    return CNN_OK;
}

static cnn_status lite_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    lite_layer *ll = (lite_layer *)l;
    (void)training;
    if (strcmp(l->backend->name, "cpu"))
        return cnn_error(CNN_ERR_UNSUPPORTED, "quantized models run on the CPU (this network is on %s): load it with "
                         "--device cpu", l->backend->name);
    int n = (int)x[0]->shape[0];
    cnn_qprog *prog = NULL;
    cnn_status cst = compiled(ll, n, &prog);
    if (cst != CNN_OK) return cst;
    ll->ran_compiled = prog != NULL;
    if (prog) return cnn_op_qprog_run(l->backend, prog, x[0]->data, y->data);
    if (n > ll->batch) {
        cnn_status st = reopen(ll, n);
        if (st != CNN_OK) return st;
    }
    char err[256];
    if (cnn_lite_logits(ll->m, x[0]->data, n, y->data, err, sizeof err) != CNN_LITE_OK)
        return cnn_error(CNN_ERR_BACKEND, "quantized model: %s", err);
    return CNN_OK;
}

static cnn_status lite_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                                cnn_tensor *const *dx)
{
    (void)x, (void)y, (void)dy, (void)dx;
    return cnn_error(CNN_ERR_UNSUPPORTED, "layer %s: a quantized model is for inference: train the float model",
                     l->name);
}

static void lite_destroy(cnn_layer *l)
{
    lite_layer *ll = (lite_layer *)l;
    free_plans(ll);
    if (l->backend) free_progs(ll);
    free(ll->arena);
    free(ll->model);
}

const cnn_layer_ops cnn_lite_layer_ops = {
    .kind = "quantized",
    .type_name = "Quantized",
    .name_prefix = "quantized",
    .init = lite_init,
    .forward = lite_forward,
    .backward = lite_backward,
    .destroy = lite_destroy,
};

int cnn_net_is_quantized(const cnn_net *net)
{
    return net && net->nlayers == 1 && net->layers[0]->ops == &cnn_lite_layer_ops;
}

const char *cnn_net_quant_mode(const cnn_net *net)
{
    return cnn_net_is_quantized(net) ? cnn_lite_mode(((const lite_layer *)net->layers[0])->m) : NULL;
}

void cnn_net_quant_set_compiled(cnn_net *net, int on)
{
    if (!cnn_net_is_quantized(net)) return;
    lite_layer *ll = (lite_layer *)net->layers[0];
    if (ll->base.backend) free_progs(ll);
    ll->exact = !on;
}

void cnn_net_quant_set_exact_requant(cnn_net *net, int on)
{
    if (!cnn_net_is_quantized(net)) return;
    lite_layer *ll = (lite_layer *)net->layers[0];
    if (ll->base.backend) free_progs(ll);
    ll->exact_requant = on != 0;
}

int cnn_net_quant_ran_compiled(const cnn_net *net)
{
    return cnn_net_is_quantized(net) && ((const lite_layer *)net->layers[0])->ran_compiled;
}

/* A network of one quantized layer from a cnn-lite file's bytes (taken over: freed with the network). */
cnn_status cnn_net_from_lite(unsigned char *bytes, size_t len, const char *path, cnn_backend *backend, cnn_net **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    lite_layer *ll = calloc(1, sizeof *ll);
    cnn_net *net = calloc(1, sizeof *net);
    if (!ll || !net) {
        free(ll);
        free(net);
        free(bytes);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
    ll->model = bytes;
    ll->len = len;
    ll->exact_requant = 1;
    ll->base.ops = &cnn_lite_layer_ops;
    snprintf(ll->base.name, sizeof ll->base.name, "quantized");
    ll->base.inputs[0] = -1;
    ll->base.ninputs = 1;
    net->backend = backend;
    net->spare_ready = -1;
    net->loss_scale = 1.0f;
    net->source = malloc(strlen(path) + 1);
    net->layers = malloc(sizeof *net->layers);
    if (!net->source || !net->layers) {
        free(ll->model);
        free(ll);
        free(net->source);
        free(net->layers);
        free(net);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
    strcpy(net->source, path);
    net->layers[0] = &ll->base;
    net->nlayers = 1;
    if ((st = reopen(ll, 1)) != CNN_OK) {
        st = cnn_error_prefix(st, "%s: ", path);
        goto fail;
    }
    int h, w, c;
    cnn_lite_input_shape(ll->m, &h, &w, &c);
    net->input = (cnn_shape){3, {h, w, c}};
    CNN_TRY(cnn_net_build(net));
    int k = cnn_lite_num_classes(ll->m);
    const char **names = calloc((size_t)k, sizeof *names);
    if (!names) CNN_TRY(cnn_error(CNN_ERR_NO_MEMORY, "out of host memory"));
    int any = 0;
    for (int j = 0; j < k; j++) any |= (names[j] = cnn_lite_class_name(ll->m, j)) != NULL;
    st = any ? cnn_net_set_class_names(net, k, names) : CNN_OK;
    free(names);
    if (st != CNN_OK) goto fail;
    float mean[16], sd[16];
    if (c <= 16 && cnn_lite_normalization(ll->m, mean, sd)) CNN_TRY(cnn_net_set_normalization(net, c, mean, sd));
    int rh, rw;
    if (cnn_lite_resize(ll->m, &rh, &rw)) CNN_TRY(cnn_net_set_resize(net, rh, rw));
    *out = net;
    return CNN_OK;
fail:
    cnn_net_destroy(net);
    return st;
}
