/* What every layer shares: parameters, their initialization, padding and shape helpers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/layer.h"

cnn_status cnn_layer_add_param(cnn_layer *l, const char *suffix, int ndim, const int64_t *shape, cnn_init init,
                               int64_t fan_in, int64_t fan_out)
{
    if (l->nparams >= CNN_LAYER_MAX_PARAMS)
        return cnn_error(CNN_ERR_INVALID_ARG, "layer %s: too many parameters", l->name);
    cnn_param *p = &l->params[l->nparams];
    memset(p, 0, sizeof *p);
    if (snprintf(p->name, sizeof p->name, "%s.%s", l->name, suffix) >= (int)sizeof p->name)
        return cnn_error(CNN_ERR_INVALID_ARG, "layer %s: name too long", l->name);
    p->init = init;
    p->fan_in = fan_in;
    p->fan_out = fan_out;
    cnn_status st = cnn_tensor_create(l->backend, CNN_F32, ndim, shape, &p->value);
    if (st == CNN_OK) st = cnn_tensor_create(l->backend, CNN_F32, ndim, shape, &p->grad);
    if (st != CNN_OK) {
        cnn_tensor_destroy(p->value);
        p->value = NULL;
        return cnn_error_prefix(st, "layer %s (line %d): ", l->name, l->line);
    }
    l->nparams++;
    return CNN_OK;
}

void cnn_layer_destroy(cnn_layer *l)
{
    if (!l) return;
    if (l->ops && l->ops->destroy) l->ops->destroy(l);
    for (int i = 0; i < l->nparams; i++) {
        cnn_tensor_destroy(l->params[i].value);
        cnn_tensor_destroy(l->params[i].grad);
    }
    if (l->plan && l->backend) l->backend->ops->plan_destroy(l->backend, l->plan);
    free(l);
}

cnn_init cnn_layer_weight_init(const cnn_layer *l)
{
    if (l->weight_init != CNN_INIT_AUTO) return l->weight_init;
    return l->act == CNN_ACT_RELU ? CNN_INIT_HE_NORMAL : CNN_INIT_GLOROT_UNIFORM;
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

void cnn_shape_format(const cnn_shape *s, char *buf, size_t size)
{
    if (s->ndim == 3)
        snprintf(buf, size, "(None, %lld, %lld, %lld)", (long long)s->d[0], (long long)s->d[1], (long long)s->d[2]);
    else
        snprintf(buf, size, "(None, %lld)", (long long)s->d[0]);
}
