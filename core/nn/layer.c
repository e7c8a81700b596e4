/* What every layer shares: parameters, their initialization, padding and shape helpers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/nn/layer.h"
#include "core/op_check.h"
#include "core/ops.h"

/* Names p "<layer>.<suffix>" and describes its value (and its gradient when `grad`) with the given shape. */
static cnn_status describe_param(cnn_layer *l, cnn_param *p, const char *suffix, int ndim, const int64_t *shape,
                                 cnn_init init, int grad)
{
    memset(p, 0, sizeof *p);
    if (snprintf(p->name, sizeof p->name, "%s.%s", l->name, suffix) >= (int)sizeof p->name)
        return cnn_error(CNN_ERR_INVALID_ARG, "layer %s: name too long", l->name);
    p->init = init;
    cnn_status st = cnn_tensor_describe(l->backend, CNN_F32, ndim, shape, &p->value);
    if (st == CNN_OK && grad) st = cnn_tensor_describe(l->backend, CNN_F32, ndim, shape, &p->grad);
    if (st != CNN_OK) {
        cnn_tensor_destroy(p->value);
        p->value = NULL;
        return cnn_error_prefix(st, "layer %s (line %d): %s: ", l->name, l->line, suffix);
    }
    return CNN_OK;
}

cnn_status cnn_layer_add_param(cnn_layer *l, const char *suffix, int ndim, const int64_t *shape, cnn_init init,
                               int64_t fan_in, int64_t fan_out)
{
    if (l->nparams >= CNN_LAYER_MAX_PARAMS)
        return cnn_error(CNN_ERR_INVALID_ARG, "layer %s: too many parameters", l->name);
    cnn_param *p = &l->params[l->nparams];
    cnn_status st = describe_param(l, p, suffix, ndim, shape, init, 1);
    if (st != CNN_OK) return st;
    p->fan_in = fan_in;
    p->fan_out = fan_out;
    l->nparams++;
    return CNN_OK;
}

cnn_status cnn_layer_add_state(cnn_layer *l, const char *suffix, int ndim, const int64_t *shape, cnn_init init)
{
    if (l->nstate >= CNN_LAYER_MAX_STATE)
        return cnn_error(CNN_ERR_INVALID_ARG, "layer %s: too many state tensors", l->name);
    cnn_status st = describe_param(l, &l->state[l->nstate], suffix, ndim, shape, init, 0);
    if (st != CNN_OK) return st;
    l->nstate++;
    return CNN_OK;
}

cnn_status cnn_layer_materialize(cnn_layer *l)
{
    cnn_status st = CNN_OK;
    for (int i = 0; i < l->nparams; i++) {
        cnn_param *p = &l->params[i];
        CNN_TRY(cnn_tensor_materialize(p->value));
        CNN_TRY(cnn_tensor_materialize(p->grad));
        cnn_tensor_track(p->value); /* backends may cache its reordered forms */
    }
    for (int i = 0; i < l->nstate; i++) CNN_TRY(cnn_tensor_materialize(l->state[i].value));
fail:
    if (st != CNN_OK) st = cnn_error_prefix(st, "layer %s (line %d): ", l->name, l->line);
    return st;
}

cnn_status cnn_layer_buffer(cnn_layer *l, int slot, const cnn_tensor *like, cnn_tensor *view)
{
    int64_t need = cnn_tensor_numel(like);
    cnn_tensor *b = l->bufs[slot];
    if (!b || cnn_tensor_numel(b) < need || b->dtype != like->dtype) {
        cnn_tensor_destroy(b);
        l->bufs[slot] = NULL;
        int64_t shape[1] = {need > 0 ? need : 1};
        cnn_status st = cnn_tensor_create(l->backend, like->dtype, 1, shape, &l->bufs[slot]);
        if (st != CNN_OK) return cnn_error_prefix(st, "layer %s: ", l->name);
        b = l->bufs[slot];
    }
    *view = *b;
    view->owns_data = 0;
    view->ndim = like->ndim;
    for (int d = 0; d < like->ndim; d++) view->shape[d] = like->shape[d];
    return CNN_OK;
}

cnn_status cnn_layer_act_forward(cnn_layer *l, const cnn_tensor *pre, cnn_tensor *y)
{
    cnn_backend *b = l->backend;
    cnn_act_args a = {.act = l->act, .alpha = l->act_alpha, .x = pre, .y = y};
    return cnn_op_act_forward(b, &a);
}

cnn_status cnn_layer_act_backward(cnn_layer *l, const cnn_tensor *pre, const cnn_tensor *y, cnn_tensor *dy)
{
    cnn_backend *b = l->backend;
    if (l->act == CNN_ACT_NONE) return CNN_OK;
    cnn_act_args a = {.act = l->act, .alpha = l->act_alpha, .x = pre, .y = (cnn_tensor *)y, .dy = dy, .dx = dy};
    return cnn_op_act_backward(b, &a);
}

cnn_status cnn_layer_pre_act(cnn_layer *l, int slot, const cnn_tensor *y, cnn_tensor *buf, cnn_tensor **pre)
{
    *pre = NULL;
    if (!cnn_act_grad_needs_input(l->act)) return CNN_OK;
    cnn_status st = cnn_layer_buffer(l, slot, y, buf);
    if (st == CNN_OK) *pre = buf;
    return st;
}

enum { WEIGHTED_BUF_PRE = 0 };

cnn_status cnn_layer_weighted_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    (void)training;
    cnn_status st = CNN_OK;
    cnn_tensor buf, *pre; /* like y: before the activation, kept for backward */
    CNN_TRY(cnn_layer_pre_act(l, WEIGHTED_BUF_PRE, y, &buf, &pre));
    const cnn_layer_io io = {.x = x[0], .y = pre ? pre : y, .act = pre ? CNN_ACT_NONE : l->act};
    CNN_TRY(l->ops->op(l, CNN_OP_FWD, &io));
    if (pre) CNN_TRY(cnn_layer_act_forward(l, pre, y));
fail:
    return st;
}

cnn_status cnn_layer_weighted_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                                       cnn_tensor *const *dx)
{
    cnn_status st = CNN_OK;
    cnn_tensor buf, *pre;
    CNN_TRY(cnn_layer_pre_act(l, WEIGHTED_BUF_PRE, y, &buf, &pre));
    CNN_TRY(cnn_layer_act_backward(l, pre, y, dy));
    cnn_layer_io io = {.x = x[0], .dy = dy, .dw = l->params[0].grad, .db = l->nparams > 1 ? l->params[1].grad : NULL,
                       .act = pre ? CNN_ACT_NONE : l->act};
    if (!l->infer_grad) CNN_TRY(l->ops->op(l, CNN_OP_BWD_WEIGHTS, &io));
    if (dx[0]) {
        io.dx = dx[0];
        CNN_TRY(l->ops->op(l, CNN_OP_BWD_DATA, &io));
    }
fail:
    return st;
}

const char *cnn_act_name(cnn_act act)
{
    static const char *names[] = {NULL, "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "silu"};
    _Static_assert(sizeof names / sizeof names[0] == CNN_ACT_COUNT, "a name for every cnn_act");
    return (unsigned)act < CNN_ACT_COUNT ? names[act] : NULL;
}

void cnn_layer_destroy(cnn_layer *l)
{
    if (!l) return;
    if (l->ops && l->ops->destroy) l->ops->destroy(l);
    for (int i = 0; i < l->nparams; i++) {
        cnn_tensor_destroy(l->params[i].value);
        cnn_tensor_destroy(l->params[i].grad);
        cnn_tensor_destroy(l->params[i].value_lp);
    }
    for (int i = 0; i < l->nstate; i++) cnn_tensor_destroy(l->state[i].value);
    for (int i = 0; i < CNN_LAYER_MAX_BUFS; i++) cnn_tensor_destroy(l->bufs[i]);
    if (l->plan && l->backend) cnn_op_plan_destroy(l->backend, l->plan);
    free(l);
}

cnn_init cnn_layer_weight_init(const cnn_layer *l)
{
    if (l->weight_init != CNN_INIT_AUTO) return l->weight_init;
    switch (l->act) { /* the ReLU family: He et al. 2015's derivation holds approximately */
    case CNN_ACT_RELU: case CNN_ACT_LEAKY_RELU: case CNN_ACT_ELU: case CNN_ACT_GELU: case CNN_ACT_SILU:
        return CNN_INIT_HE_NORMAL;
    default:
        return CNN_INIT_GLOROT_UNIFORM;
    }
}

cnn_status cnn_param_initialize(cnn_param *p, cnn_rng *rng)
{
    int64_t n = cnn_tensor_numel(p->value);
    float *host = malloc((size_t)(n > 0 ? n : 1) * sizeof *host);
    if (!host) return cnn_error(CNN_ERR_NO_MEMORY, "%s: no memory for initialization", p->name);
    switch (p->init) {
    case CNN_INIT_HE_NORMAL: {
        float std = sqrtf(2.0f / (float)p->fan_in);
        for (int64_t i = 0; i < n; i++) host[i] = std * cnn_rng_normal(rng);
        break;
    }
    case CNN_INIT_GLOROT_UNIFORM: {
        float limit = sqrtf(6.0f / (float)(p->fan_in + p->fan_out));
        for (int64_t i = 0; i < n; i++) host[i] = limit * (2.0f * cnn_rng_uniform(rng) - 1.0f);
        break;
    }
    case CNN_INIT_ONES:
        for (int64_t i = 0; i < n; i++) host[i] = 1.0f;
        break;
    default:
        memset(host, 0, (size_t)n * sizeof *host);
    }
    cnn_status st = cnn_tensor_write(p->value, host, (size_t)n * sizeof *host);
    free(host);
    return st;
}

void cnn_same_padding(int64_t in, int kernel, int stride, int *before, int *after)
{
    int64_t out = (in + stride - 1) / stride;
    int64_t total = (out - 1) * stride + kernel - in;
    if (total < 0) total = 0;
    *before = (int)(total / 2);
    *after = (int)(total - total / 2);
}

int64_t cnn_shape_elements(const cnn_shape *s)
{
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= s->d[d];
    return n;
}

cnn_status cnn_batch_tensor_create(cnn_backend *b, cnn_dtype dtype, const cnn_shape *s, int n, cnn_tensor **out)
{
    int64_t shape[CNN_MAX_DIMS] = {n};
    for (int d = 0; d < s->ndim; d++) shape[d + 1] = s->d[d];
    return cnn_tensor_create(b, dtype, s->ndim + 1, shape, out);
}

cnn_status cnn_batch_view_create(const cnn_tensor *of, const cnn_shape *s, int n, cnn_tensor **out)
{
    cnn_tensor *t = calloc(1, sizeof *t);
    if (!t) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    *t = *of;
    t->owns_data = 0;
    t->ndim = s->ndim + 1;
    t->shape[0] = n;
    for (int d = 0; d < s->ndim; d++) t->shape[d + 1] = s->d[d];
    *out = t;
    return CNN_OK;
}

cnn_tensor cnn_view_like(const cnn_tensor *t, const cnn_tensor *like)
{
    cnn_tensor v = *like;
    v.data = t->data;
    v.owns_data = 0;
    v.backend = t->backend;
    return v;
}

void cnn_shape_format(const cnn_shape *s, char *buf, size_t size)
{
    if (s->ndim == 3)
        snprintf(buf, size, "(None, %lld, %lld, %lld)", (long long)s->d[0], (long long)s->d[1], (long long)s->d[2]);
    else
        snprintf(buf, size, "(None, %lld)", (long long)s->d[0]);
}
