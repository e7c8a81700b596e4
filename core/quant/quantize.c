/* Post-training quantization (include/cnn/quant.h): a network lowered to cnn-lite's ops, calibrated on images run
 * through that lowered float model (core/lite/lite.c), and written as a cnn-lite file.
 *
 * Lowering follows the definition's layers and their inputs as written, undoing the net's own rewrites (a
 * batchnorm fused with the add after it computes the add's activation: here the add gets it back; a ReLU moved
 * behind a max-pool goes back onto the convolution, where int8 clamps it for free and calibration sees the
 * narrower range). A batchnorm whose input is a convolution read by nothing else is folded into it:
 * w' = w * gamma / sqrt(var + eps) per output channel, b' = (b - mean) * gamma / sqrt(var + eps) + beta.
 *
 * Calibration records, per op, the range of its float outputs over the calibration images: min-max, a percentile
 * pair from a 16384-bin histogram, or the entropy threshold (TensorRT's: the clipping of a histogram of |x| whose
 * requantized version has the least KL divergence from it). int8 weights are symmetric per output channel,
 * scale = max |w| / 127; biases int32 at scale input_scale * weight_scale. */
#define _POSIX_C_SOURCE 200809L
#include "cnn/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn.h"
#include "cnn/lite.h"
#include "core/error.h"
#include "core/free_list.h"
#include "core/grow.h"
#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "core/lite/lite_internal.h"
#include "core/lite/lite_quant.h"
#include "core/nn/layer.h"
#include "core/nn/net.h"
#include "core/nn/qat.h"
#include "core/quant/quant_internal.h"

#define HIST_BINS 16384
#define MAX_QOPS 512

static const char *const MODE_NAMES[] = {"int8", "dynamic", "fp16", "float"};
static const char *const METHOD_NAMES[] = {"minmax", "percentile", "entropy"};

/* The index of `name` among n names, or an error naming `what` and listing them. */
static cnn_status name_index(const char *const *names, int n, const char *name, const char *what, int *out)
{
    for (int i = 0; name && i < n; i++)
        if (!strcmp(name, names[i])) {
            *out = i;
            return CNN_OK;
        }
    char list[128] = "";
    for (int i = 0, len = 0; i < n && len < (int)sizeof list; i++)
        len += snprintf(list + len, sizeof list - (size_t)len, "%s%s", i ? ", " : "", names[i]);
    return cnn_error(CNN_ERR_INVALID_ARG, "%s '%s': the %ss are %s", what, name ? name : "", what, list);
}

const char *cnn_quant_mode_name(cnn_quant_mode mode) { return (unsigned)mode < 4 ? MODE_NAMES[mode] : "?"; }

cnn_status cnn_quant_mode_parse(const char *name, cnn_quant_mode *out)
{
    int i = 0;
    cnn_status st = name_index(MODE_NAMES, 4, name, "quantization mode", &i);
    if (st == CNN_OK) *out = (cnn_quant_mode)i;
    return st;
}

const char *cnn_calib_method_name(cnn_calib_method method)
{
    return (unsigned)method < 3 ? METHOD_NAMES[method] : "?";
}

cnn_status cnn_calib_method_parse(const char *name, cnn_calib_method *out)
{
    int i = 0;
    cnn_status st = name_index(METHOD_NAMES, 3, name, "calibration method", &i);
    if (st == CNN_OK) *out = (cnn_calib_method)i;
    return st;
}

void cnn_quant_config_defaults(cnn_quant_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->mode = CNN_QUANT_INT8;
    cfg->method = CNN_CALIB_MINMAX;
    cfg->percentile = 99.99;
}

// ---------------------------------------------------------------------------------------------------------------
// the lowered graph

typedef struct qop {
    const char *kind; /* cnn-lite's op name */
    int in[CNN_LAYER_MAX_INPUTS], nin;
    int h, w, c, flat;
    int kh, kw, sh, sw, dh, dw, g, pt, pl, pb, pr, n;
    cnn_act act;
    float alpha;
    float *wt, *bias;      /* owned: weights, biases */
    int64_t wshape[4];
    int wndim;
    char name[CNN_NAME_MAX + 8]; /* its tensors' base name */
    const cnn_layer *layer;      /* where it came from, for messages */
    /* calibration */
    double lo, hi;
    int seen;
    double *hist; /* HIST_BINS */
    float scale;
    int32_t zp;
} qop;

typedef struct qgraph {
    qop ops[MAX_QOPS];
    int n;
} qgraph;

static void qgraph_free(qgraph *g)
{
    for (int i = 0; i < g->n; i++) {
        free(g->ops[i].wt);
        free(g->ops[i].bias);
        free(g->ops[i].hist);
    }
    g->n = 0;
}

static cnn_status add_op(qgraph *g, const char *kind, const cnn_layer *l, qop **out)
{
    if (g->n == MAX_QOPS)
        return cnn_error(CNN_ERR_UNSUPPORTED, "the network has more than %d ops after lowering", MAX_QOPS);
    qop *op = &g->ops[g->n++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->layer = l;
    op->g = 1;
    op->sh = op->sw = op->dh = op->dw = 1;
    if (l) snprintf(op->name, sizeof op->name, "%s", l->name);
    *out = op;
    return CNN_OK;
}

static void set_shape(qop *op, const cnn_shape *s)
{
    if (s->ndim == 3) {
        op->h = (int)s->d[0], op->w = (int)s->d[1], op->c = (int)s->d[2], op->flat = 0;
    } else {
        op->h = op->w = 1, op->c = (int)s->d[0], op->flat = 1;
    }
}

static cnn_status read_param(const cnn_tensor *t, float **out)
{
    size_t bytes = cnn_tensor_bytes(t);
    *out = malloc(bytes ? bytes : 1);
    if (!*out) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    return cnn_tensor_read(t, *out, bytes);
}

/* A conv's or dense layer's weights (params[0], its shape) and biases (params[1], or zeros without one). */
static cnn_status read_weights(qop *op, const cnn_layer *l, int use_bias)
{
    cnn_status st = CNN_OK;
    const cnn_tensor *w = l->params[0].value;
    op->wndim = w->ndim;
    for (int d = 0; d < w->ndim; d++) op->wshape[d] = w->shape[d];
    CNN_TRY(read_param(w, &op->wt));
    if (use_bias && l->nparams > 1) {
        CNN_TRY(read_param(l->params[1].value, &op->bias));
    } else if (!(op->bias = calloc((size_t)op->n, sizeof *op->bias))) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
fail:
    return st;
}

/* An act op after the last one, for layer l's activation (one the op before cannot apply itself). */
static cnn_status add_act_after(qgraph *g, const cnn_layer *l, cnn_act act, float alpha)
{
    int at = g->n - 1;
    qop *op = NULL;
    cnn_status st = add_op(g, "act", l, &op);
    if (st != CNN_OK) return st;
    op->in[0] = at, op->nin = 1, op->act = act, op->alpha = alpha;
    snprintf(op->name, sizeof op->name, "%s.act", l->name);
    set_shape(op, &l->out);
    return CNN_OK;
}

/* How many layers read layer i's output (the definition's inputs). */
static int readers(const cnn_net *net, int i)
{
    int n = 0;
    for (int j = 0; j < net->nlayers; j++)
        for (int k = 0; k < net->layers[j]->ninputs; k++) n += net->layers[j]->inputs[k] == i;
    return n;
}

/* The activation a layer computes as defined (the net's fusion of a batchnorm with its add moved the add's onto
 * the batchnorm). */
static void defined_act(const cnn_net *net, const cnn_layer *l, cnn_act *act, float *alpha)
{
    *act = l->act;
    *alpha = l->act_alpha;
    if (l->fused && l->ops == &cnn_batchnorm_layer_ops) {
        *act = CNN_ACT_NONE;
        *alpha = 0.0f;
    } else if (l->fused && l->ops == &cnn_add_layer_ops) {
        const cnn_layer *bn = net->layers[l->fused_src];
        *act = bn->act;
        *alpha = bn->act_alpha;
    }
}

static cnn_status lower(const cnn_net *net, qgraph *g)
{
    cnn_status st = CNN_OK;
    int *map = malloc((size_t)(net->nlayers + 1) * sizeof *map);
    if (!map) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    qop *op = NULL;
    CNN_TRY(add_op(g, "input", NULL, &op));
    cnn_shape in_shape = net->input;
    set_shape(op, &in_shape);
    snprintf(op->name, sizeof op->name, "input");
    for (int i = 0; i < net->nlayers; i++) {
        const cnn_layer *l = net->layers[i];
        int src = l->ninputs ? (l->inputs[0] < 0 ? 0 : map[l->inputs[0]]) : 0;
        cnn_act act;
        float alpha;
        defined_act(net, l, &act, &alpha);
        if (l->ops == &cnn_conv_layer_ops) {
            const cnn_conv_layer *c = (const cnn_conv_layer *)l;
            CNN_TRY(add_op(g, "conv", l, &op));
            op->in[0] = src, op->nin = 1;
            op->kh = c->kernel_h, op->kw = c->kernel_w, op->sh = c->stride_h, op->sw = c->stride_w;
            op->dh = c->dilation_h, op->dw = c->dilation_w, op->g = c->groups, op->n = c->filters;
            op->pt = c->pad_top, op->pl = c->pad_left, op->pb = c->pad_bottom, op->pr = c->pad_right;
            op->act = act, op->alpha = alpha;
            CNN_TRY(read_weights(op, l, c->use_bias));
            set_shape(op, &l->out);
        } else if (l->ops == &cnn_batchnorm_layer_ops) {
            const cnn_batchnorm_layer *bn = (const cnn_batchnorm_layer *)l;
            float *gamma = NULL, *beta = NULL, *mean = NULL, *var = NULL;
            int c = (int)l->out.d[l->out.ndim - 1];
            st = read_param(l->params[0].value, &gamma);
            if (st == CNN_OK) st = read_param(l->params[1].value, &beta);
            if (st == CNN_OK) st = read_param(l->state[0].value, &mean);
            if (st == CNN_OK) st = read_param(l->state[1].value, &var);
            qop *conv = src > 0 ? &g->ops[src] : NULL;
            int fold = st == CNN_OK && conv && !strcmp(conv->kind, "conv") && conv->act == CNN_ACT_NONE &&
                       l->inputs[0] >= 0 && readers(net, l->inputs[0]) == 1;
            for (int ch = 0; st == CNN_OK && ch < c; ch++) {
                double a = gamma[ch] / sqrt((double)var[ch] + bn->eps);
                double b = beta[ch] - mean[ch] * a;
                if (fold) {
                    size_t per = (size_t)(conv->kh * conv->kw) * (size_t)(conv->wshape[3]);
                    for (size_t k = 0; k < per; k++) conv->wt[(size_t)ch * per + k] = (float)(conv->wt[(size_t)ch * per + k] * a);
                    conv->bias[ch] = (float)(conv->bias[ch] * a + b);
                } else {
                    gamma[ch] = (float)a; /* reused: the multiplier and the offset of a scale op */
                    beta[ch] = (float)b;
                }
            }
            free(mean);
            free(var);
            if (st != CNN_OK) {
                free(gamma);
                free(beta);
                goto fail;
            }
            if (fold) {
                free(gamma);
                free(beta);
                conv->act = act, conv->alpha = alpha;
                map[i] = src;
                continue;
            }
            if ((st = add_op(g, "scale", l, &op)) != CNN_OK) {
                free(gamma);
                free(beta);
                goto fail;
            }
            op->in[0] = src, op->nin = 1;
            op->wt = gamma, op->bias = beta, op->wndim = 1, op->wshape[0] = c;
            set_shape(op, &l->out);
            if (act != CNN_ACT_NONE) CNN_TRY(add_act_after(g, l, act, alpha));
        } else if (l->ops == &cnn_dense_layer_ops) {
            const cnn_dense_layer *d = (const cnn_dense_layer *)l;
            CNN_TRY(add_op(g, "dense", l, &op));
            op->in[0] = src, op->nin = 1, op->n = d->units, op->act = act, op->alpha = alpha;
            CNN_TRY(read_weights(op, l, d->use_bias));
            set_shape(op, &l->out);
        } else if (l->ops == &cnn_maxpool_layer_ops || l->ops == &cnn_avgpool_layer_ops ||
                   l->ops == &cnn_globalavgpool_layer_ops || l->ops == &cnn_globalmaxpool_layer_ops) {
            const cnn_pool_layer *p = (const cnn_pool_layer *)l;
            int is_max = l->ops == &cnn_maxpool_layer_ops || l->ops == &cnn_globalmaxpool_layer_ops;
            int global = (l->ops == &cnn_globalavgpool_layer_ops || p->global) && !is_max;
            int global_max = is_max && (l->ops == &cnn_globalmaxpool_layer_ops || p->global);
            /* a ReLU the net moved behind this max-pool goes back onto the op before it */
            qop *prev = src > 0 ? &g->ops[src] : NULL;
            if (is_max && act == CNN_ACT_RELU && prev && prev->act == CNN_ACT_NONE && l->inputs[0] >= 0 &&
                readers(net, l->inputs[0]) == 1 &&
                (!strcmp(prev->kind, "conv") || !strcmp(prev->kind, "dense") || !strcmp(prev->kind, "add"))) {
                prev->act = CNN_ACT_RELU;
                act = CNN_ACT_NONE;
            }
            CNN_TRY(add_op(g, global ? "gap" : is_max ? "maxpool" : "avgpool", l, &op));
            op->in[0] = src, op->nin = 1;
            if (global_max) { /* a max-pool whose window is the whole input, then flattened */
                op->kh = (int)l->in.d[0], op->kw = (int)l->in.d[1];
                op->h = op->w = 1, op->c = (int)l->in.d[2];
                int at = g->n - 1;
                CNN_TRY(add_op(g, "flatten", l, &op));
                op->in[0] = at, op->nin = 1;
                snprintf(op->name, sizeof op->name, "%s.flat", l->name);
                set_shape(op, &l->out);
            } else {
                if (!global) {
                    op->kh = p->kernel_h, op->kw = p->kernel_w, op->sh = p->stride_h, op->sw = p->stride_w;
                    op->pt = p->pad_top, op->pl = p->pad_left, op->pb = p->pad_bottom, op->pr = p->pad_right;
                }
                set_shape(op, &l->out);
            }
            if (act != CNN_ACT_NONE) CNN_TRY(add_act_after(g, l, act, alpha));
        } else if (l->ops == &cnn_flatten_layer_ops || l->ops == &cnn_act_layer_ops ||
                   l->ops == &cnn_softmax_layer_ops) {
            const char *kind = l->ops == &cnn_flatten_layer_ops ? "flatten" : l->ops == &cnn_act_layer_ops ? "act"
                                                                                                            : "softmax";
            if (l->ops == &cnn_softmax_layer_ops && i != net->nlayers - 1)
                CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "layer %s: a softmax before the last layer", l->name));
            if (l->ops == &cnn_act_layer_ops && act == CNN_ACT_NONE) { /* linear: the identity */
                map[i] = src;
                continue;
            }
            CNN_TRY(add_op(g, kind, l, &op));
            op->in[0] = src, op->nin = 1, op->act = act, op->alpha = alpha;
            set_shape(op, &l->out);
        } else if (l->ops == &cnn_dropout_layer_ops) {
            map[i] = src; /* inference: the identity */
            continue;
        } else if (l->ops == &cnn_add_layer_ops || l->ops == &cnn_concat_layer_ops) {
            int is_add = l->ops == &cnn_add_layer_ops;
            int ins[CNN_LAYER_MAX_INPUTS];
            for (int k = 0; k < l->ninputs; k++) ins[k] = l->inputs[k] < 0 ? 0 : map[l->inputs[k]];
            if (is_add) { /* two at a time; the activation on the last */
                int acc = ins[0];
                for (int k = 1; k < l->ninputs; k++) {
                    CNN_TRY(add_op(g, "add", l, &op));
                    op->in[0] = acc, op->in[1] = ins[k], op->nin = 2;
                    if (k + 1 == l->ninputs) op->act = act, op->alpha = alpha;
                    set_shape(op, &l->out);
                    acc = g->n - 1;
                }
            } else {
                CNN_TRY(add_op(g, "concat", l, &op));
                for (int k = 0; k < l->ninputs; k++) op->in[k] = ins[k];
                op->nin = l->ninputs;
                set_shape(op, &l->out);
                if (act != CNN_ACT_NONE) CNN_TRY(add_act_after(g, l, act, alpha));
            }
        } else {
            CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "layer %s (%s): cnn quantize does not lower this layer type",
                              l->name, l->ops->kind));
        }
        map[i] = g->n - 1;
    }
fail:
    free(map);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// writing a lowered graph

static const char *act_text(cnn_act act, float alpha, char *buf, size_t n)
{
    const char *name = cnn_act_name(act);
    if (!name) return "none";
    if (act == CNN_ACT_LEAKY_RELU || act == CNN_ACT_ELU)
        snprintf(buf, n, "%s:%.9g", name, (double)alpha);
    else
        snprintf(buf, n, "%s", name);
    return buf;
}

/* 1 for the ops whose int8 output has its own scale (the others keep their input's). */
static int has_own_scale(const qop *op)
{
    return !strcmp(op->kind, "input") || !strcmp(op->kind, "conv") || !strcmp(op->kind, "dense") ||
           !strcmp(op->kind, "add") || !strcmp(op->kind, "concat");
}

static void write_line(cnn_strbuf *b, const qgraph *g, int i, int q)
{
    const qop *op = &g->ops[i];
    char act[48];
    if (!strcmp(op->kind, "input")) {
        cnn_strbuf_appendf(b, "input h=%d w=%d c=%d", op->h, op->w, op->c);
    } else {
        cnn_strbuf_appendf(b, "%s in=", op->kind);
        for (int k = 0; k < op->nin; k++) cnn_strbuf_appendf(b, "%s%d", k ? "," : "", op->in[k]);
        if (!strcmp(op->kind, "conv") || !strcmp(op->kind, "maxpool") || !strcmp(op->kind, "avgpool"))
            cnn_strbuf_appendf(b, " k=%d,%d s=%d,%d pad=%d,%d,%d,%d", op->kh, op->kw, op->sh, op->sw, op->pt, op->pl,
                               op->pb, op->pr);
        if (!strcmp(op->kind, "conv")) cnn_strbuf_appendf(b, " d=%d,%d g=%d n=%d", op->dh, op->dw, op->g, op->n);
        if (!strcmp(op->kind, "dense")) cnn_strbuf_appendf(b, " n=%d", op->n);
        if (op->wt) cnn_strbuf_appendf(b, " w=%s.weight", op->name);
        if (op->bias) cnn_strbuf_appendf(b, " b=%s.bias", op->name);
        if (!strcmp(op->kind, "act"))
            cnn_strbuf_appendf(b, " f=%s", act_text(op->act, op->alpha, act, sizeof act));
        else if (op->act != CNN_ACT_NONE)
            cnn_strbuf_appendf(b, " act=%s", act_text(op->act, op->alpha, act, sizeof act));
        if (op->flat)
            cnn_strbuf_appendf(b, " out=%d", op->c);
        else
            cnn_strbuf_appendf(b, " out=%d,%d,%d", op->h, op->w, op->c);
    }
    if (q && has_own_scale(op)) cnn_strbuf_appendf(b, " q=%.9g,%d", (double)op->scale, (int)op->zp);
    cnn_strbuf_append(b, "\n", 1);
}

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, e = (x >> 23) & 0xff, m = x & 0x7fffffu;
    if (e == 0xff) return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0));
    int ex = (int)e - 127 + 15;
    if (ex >= 31) return (uint16_t)(sign | 0x7c00u); /* overflow: infinity */
    if (ex <= 0) {                                  /* subnormal or zero, rounded to nearest even */
        if (ex < -10) return (uint16_t)sign;
        m |= 0x800000u;
        int shift = 14 - ex;
        uint32_t half = m >> shift, rest = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | (uint32_t)ex << 10 | m >> 13, rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1))) half++; /* a carry into the exponent is right */
    return (uint16_t)half;
}

/* The tensors of the file, as the mode stores them (owned buffers in `owned`). */
typedef struct qfile {
    cnn_st_entry *entries;
    int64_t (*shapes)[4];
    char (*names)[CNN_NAME_MAX + 24];
    void **owned;
    int n, cap;
} qfile;

static cnn_status qfile_add(qfile *f, const char *name, const char *suffix, cnn_dtype dtype, int ndim,
                            const int64_t *shape, void *data)
{
    if (f->n == f->cap) {
        free(data);
        return cnn_error(CNN_ERR_NO_MEMORY, "too many tensors");
    }
    int i = f->n++;
    snprintf(f->names[i], sizeof f->names[i], "%s%s", name, suffix);
    for (int d = 0; d < ndim; d++) f->shapes[i][d] = shape[d];
    f->owned[i] = data;
    f->entries[i] = (cnn_st_entry){f->names[i], dtype, ndim, f->shapes[i], data};
    return CNN_OK;
}

static void qfile_free(qfile *f)
{
    for (int i = 0; i < f->n; i++) free(f->owned[i]);
    CNN_FREE_ALL(f->entries, f->shapes, f->names, f->owned);
}

/* One op's weights for a mode. For int8 the op's input scale is in_scale. */
static cnn_status store_weights(qfile *f, const qop *op, cnn_quant_mode mode, float in_scale)
{
    size_t numel = 1;
    for (int d = 0; d < op->wndim; d++) numel *= (size_t)op->wshape[d];
    int64_t nb[1] = {op->wshape[0]};
    int scale_op = !strcmp(op->kind, "scale");
    if (mode == CNN_QUANT_FLOAT || scale_op) {
        float *w = malloc(numel * sizeof *w), *b = malloc((size_t)nb[0] * sizeof *b);
        if (!w || !b) {
            free(w);
            free(b);
            return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        }
        memcpy(w, op->wt, numel * sizeof *w);
        memcpy(b, op->bias, (size_t)nb[0] * sizeof *b);
        cnn_status st = qfile_add(f, op->name, ".weight", CNN_F32, op->wndim, op->wshape, w);
        if (st != CNN_OK) {
            free(b);
            return st;
        }
        return qfile_add(f, op->name, ".bias", CNN_F32, 1, nb, b);
    }
    if (mode == CNN_QUANT_FP16) {
        uint16_t *w = malloc(numel * sizeof *w), *b = malloc((size_t)nb[0] * sizeof *b);
        if (!w || !b) {
            free(w);
            free(b);
            return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        }
        for (size_t i = 0; i < numel; i++) w[i] = f32_to_f16(op->wt[i]);
        for (int64_t i = 0; i < nb[0]; i++) b[i] = f32_to_f16(op->bias[i]);
        cnn_status st = qfile_add(f, op->name, ".weight", CNN_F16, op->wndim, op->wshape, w);
        if (st != CNN_OK) {
            free(b);
            return st;
        }
        return qfile_add(f, op->name, ".bias", CNN_F16, 1, nb, b);
    }
    /* int8 and dynamic: per output channel, symmetric */
    size_t per = numel / (size_t)nb[0];
    int8_t *w = malloc(numel);
    float *scale = malloc((size_t)nb[0] * sizeof *scale);
    void *b = malloc((size_t)nb[0] * 4);
    if (!w || !scale || !b) {
        free(w);
        free(scale);
        free(b);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
    for (int64_t c = 0; c < nb[0]; c++) {
        float mx = 0.0f;
        for (size_t k = 0; k < per; k++) mx = fmaxf(mx, fabsf(op->wt[(size_t)c * per + k]));
        scale[c] = mx > 0.0f ? mx / 127.0f : 1.0f;
        for (size_t k = 0; k < per; k++) {
            float q = roundf(op->wt[(size_t)c * per + k] / scale[c]);
            w[(size_t)c * per + k] = (int8_t)(q > 127.0f ? 127 : q < -127.0f ? -127 : q);
        }
        if (mode == CNN_QUANT_INT8) {
            double q = round((double)op->bias[c] / ((double)in_scale * scale[c]));
            ((int32_t *)b)[c] = (int32_t)(q > 2147483647.0 ? 2147483647.0 : q < -2147483647.0 ? -2147483647.0 : q);
        } else {
            ((float *)b)[c] = op->bias[c];
        }
    }
    cnn_status st = qfile_add(f, op->name, ".weight", CNN_I8, op->wndim, op->wshape, w);
    if (st == CNN_OK) st = qfile_add(f, op->name, ".weight.scale", CNN_F32, 1, nb, scale);
    else free(scale);
    if (st == CNN_OK) st = qfile_add(f, op->name, ".bias", mode == CNN_QUANT_INT8 ? CNN_I32 : CNN_F32, 1, nb, b);
    else free(b);
    return st;
}

/* The lowered graph as a cnn-lite file, in memory (out_path NULL) or written. */
static cnn_status write_graph(const cnn_net *net, const qgraph *g, cnn_quant_mode mode, const cnn_quant_config *cfg,
                              const char *out_path, unsigned char **buf, size_t *len)
{
    cnn_status st = CNN_OK;
    qfile f = {0};
    f.cap = 3 * g->n + 4;
    f.entries = calloc((size_t)f.cap, sizeof *f.entries);
    f.shapes = calloc((size_t)f.cap, sizeof *f.shapes);
    f.names = calloc((size_t)f.cap, sizeof *f.names);
    f.owned = calloc((size_t)f.cap, sizeof *f.owned);
    cnn_strbuf graph, names, mean, sd, calib;
    cnn_strbuf_init(&graph);
    cnn_strbuf_init(&names);
    cnn_strbuf_init(&mean);
    cnn_strbuf_init(&sd);
    cnn_strbuf_init(&calib);
    if (!f.entries || !f.shapes || !f.names || !f.owned) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    int q = mode == CNN_QUANT_INT8;
    for (int i = 0; i < g->n; i++) {
        const qop *op = &g->ops[i];
        write_line(&graph, g, i, q);
        if (op->wt) CNN_TRY(store_weights(&f, op, mode, q ? g->ops[op->in[0]].scale : 1.0f));
    }
    int k = cnn_net_num_outputs(net), c = (int)net->input.d[2];
    for (int j = 0; net->class_names && j < k; j++)
        cnn_strbuf_appendf(&names, "%s%s", j ? "\n" : "", net->class_names[j]);
    for (int ch = 0; net->has_norm && ch < c; ch++) {
        cnn_strbuf_appendf(&mean, "%s%.9g", ch ? "," : "", (double)net->norm_mean[ch]);
        cnn_strbuf_appendf(&sd, "%s%.9g", ch ? "," : "", (double)net->norm_std[ch]);
    }
    char resize[32] = "";
    if (net->resize_h) snprintf(resize, sizeof resize, "%dx%d", net->resize_h, net->resize_w);
    if (q)
        cnn_strbuf_appendf(&calib, "%s%s%.6g over %lld images of %s", cnn_calib_method_name(cfg->method),
                           cfg->method == CNN_CALIB_PERCENTILE ? " " : "",
                           cfg->method == CNN_CALIB_PERCENTILE ? cfg->percentile : 0.0, (long long)cfg->calib_n,
                           cfg->calib_source ? cfg->calib_source : "the calibration set");
    if (q && cnn_net_is_qat(net)) {
        cnn_strbuf_free(&calib);
        cnn_strbuf_init(&calib);
        cnn_strbuf_appends(&calib, "ranges learned in quantization-aware training (moving averages of min and max)");
    } else if (q && cfg->method != CNN_CALIB_PERCENTILE) {
        cnn_strbuf_free(&calib);
        cnn_strbuf_init(&calib);
        cnn_strbuf_appendf(&calib, "%s over %lld images of %s", cnn_calib_method_name(cfg->method),
                           (long long)cfg->calib_n, cfg->calib_source ? cfg->calib_source : "the calibration set");
    }
    if (graph.status || names.status || mean.status || sd.status || calib.status) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    const char *keys[10], *values[10];
    int nm = 0;
    keys[nm] = "format", values[nm++] = "cnn.c lite";
    keys[nm] = "mode", values[nm++] = cnn_quant_mode_name(mode);
    keys[nm] = "graph", values[nm++] = graph.data;
    keys[nm] = "cnn_version", values[nm++] = cnn_version();
    keys[nm] = "definition", values[nm++] = net->definition ? net->definition : "";
    if (names.data) keys[nm] = "class_names", values[nm++] = names.data;
    if (mean.data) keys[nm] = "norm_mean", values[nm++] = mean.data, keys[nm] = "norm_std", values[nm++] = sd.data;
    if (resize[0]) keys[nm] = "resize", values[nm++] = resize;
    if (calib.data) keys[nm] = "calibration", values[nm++] = calib.data;
    if (out_path)
        st = cnn_st_write(out_path, f.entries, f.n, keys, values, nm);
    else
        st = cnn_st_serialize(f.entries, f.n, keys, values, nm, buf, len);
fail:
    qfile_free(&f);
    cnn_strbuf_free(&graph);
    cnn_strbuf_free(&names);
    cnn_strbuf_free(&mean);
    cnn_strbuf_free(&sd);
    cnn_strbuf_free(&calib);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// calibration

typedef struct calib_ctx {
    qgraph *g;
    int pass; /* 0: min and max; 1: histograms */
} calib_ctx;

static void observe(void *ctx, int i, const float *y, size_t count)
{
    calib_ctx *c = ctx;
    qop *op = &c->g->ops[i];
    if (c->pass == 0) {
        for (size_t j = 0; j < count; j++) {
            double v = y[j];
            if (!op->seen || v < op->lo) op->lo = v;
            if (!op->seen || v > op->hi) op->hi = v;
            op->seen = 1;
        }
        return;
    }
    if (!op->hist) return;
    /* percentile: over [lo, hi]; entropy: |x| over [0, max |x|] */
    double lo = op->lo, hi = op->hi;
    int absolute = c->pass == 2;
    if (absolute) {
        hi = fmax(fabs(lo), fabs(hi));
        lo = 0.0;
    }
    double width = (hi - lo) / HIST_BINS;
    if (!(width > 0.0)) return;
    for (size_t j = 0; j < count; j++) {
        double v = absolute ? fabs(y[j]) : y[j];
        if (absolute && v == 0.0) continue; /* ReLU's zeros would outweigh the rest (TensorRT's skip_zeros) */
        long b = (long)((v - lo) / width);
        op->hist[b < 0 ? 0 : b >= HIST_BINS ? HIST_BINS - 1 : b] += 1.0;
    }
}

/* TensorRT's entropy threshold over a histogram of |x| (HIST_BINS bins of `width`), for `levels` quantized bins. */
static double entropy_threshold(const double *hist, double width, int levels)
{
    double best_kl = INFINITY;
    int best = HIST_BINS;
    double *p = malloc(HIST_BINS * sizeof *p), *qv = malloc(HIST_BINS * sizeof *qv);
    if (!p || !qv) {
        free(p);
        free(qv);
        return HIST_BINS * width;
    }
    for (int i = levels; i <= HIST_BINS; i = i + 1 + i / 64) { /* thresholds 1.5% apart */
        double outliers = 0.0;
        for (int j = i; j < HIST_BINS; j++) outliers += hist[j];
        for (int j = 0; j < i; j++) p[j] = hist[j];
        p[i - 1] += outliers;
        /* Q: the first i bins merged into `levels` groups, each group's mass spread over its nonzero bins */
        for (int lvl = 0; lvl < levels; lvl++) {
            int a = (int)((long)lvl * i / levels), b = (int)((long)(lvl + 1) * i / levels);
            double mass = 0.0;
            int nonzero = 0;
            for (int j = a; j < b; j++) {
                mass += hist[j];
                nonzero += hist[j] > 0.0;
            }
            for (int j = a; j < b; j++) qv[j] = hist[j] > 0.0 && nonzero ? mass / nonzero : 0.0;
        }
        double ps = 0.0, qs = 0.0;
        for (int j = 0; j < i; j++) ps += p[j], qs += qv[j];
        if (!(ps > 0.0) || !(qs > 0.0)) continue;
        double kl = 0.0;
        for (int j = 0; j < i; j++) {
            if (p[j] <= 0.0) continue;
            double pj = p[j] / ps, qj = qv[j] / qs;
            kl += pj * log(pj / (qj > 0.0 ? qj : 1e-12));
        }
        if (kl < best_kl) {
            best_kl = kl;
            best = i;
        }
    }
    free(p);
    free(qv);
    return (best + 0.5) * width;
}

/* The value below which `frac` of the histogram's mass lies (bins over [lo, lo + HIST_BINS * width]). */
static double hist_quantile(const double *hist, double lo, double width, double frac)
{
    double total = 0.0;
    for (int j = 0; j < HIST_BINS; j++) total += hist[j];
    double want = frac * total, acc = 0.0;
    for (int j = 0; j < HIST_BINS; j++) {
        if (acc + hist[j] >= want && hist[j] > 0.0) return lo + (j + (want - acc) / hist[j]) * width;
        acc += hist[j];
    }
    return lo + HIST_BINS * width;
}

/* An op's range from its statistics, as the method says. */
static void finish_range(qop *op, cnn_calib_method method, double percentile)
{
    if (!op->seen) return;
    double lo = op->lo, hi = op->hi;
    if (op->hist && method == CNN_CALIB_PERCENTILE) {
        double width = (hi - lo) / HIST_BINS;
        if (width > 0.0) {
            double a = hist_quantile(op->hist, lo, width, 1.0 - percentile / 100.0);
            double b = hist_quantile(op->hist, lo, width, percentile / 100.0);
            lo = a, hi = b;
        }
    } else if (op->hist && method == CNN_CALIB_ENTROPY) {
        double m_abs = fmax(fabs(lo), fabs(hi)), width = m_abs / HIST_BINS;
        if (width > 0.0) {
            double t = entropy_threshold(op->hist, width, lo >= 0.0 ? 255 : 128);
            hi = fmin(hi, t);
            lo = lo >= 0.0 ? 0.0 : fmax(lo, -t);
        }
    }
    op->lo = lo, op->hi = hi;
}

cnn_status cnn_calib_range(const float *v, size_t n, cnn_calib_method method, double percentile, double *lo,
                           double *hi)
{
    qgraph *g = calloc(1, sizeof *g);
    if (!g) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    g->n = 1;
    qop *op = &g->ops[0];
    calib_ctx ctx = {g, 0};
    observe(&ctx, 0, v, n);
    if (method != CNN_CALIB_MINMAX) {
        if (!(op->hist = calloc(HIST_BINS, sizeof(double)))) {
            free(g);
            return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        }
        ctx.pass = method == CNN_CALIB_ENTROPY ? 2 : 1;
        observe(&ctx, 0, v, n);
    }
    finish_range(op, method, percentile);
    *lo = op->lo;
    *hi = op->hi;
    free(op->hist);
    free(g);
    return CNN_OK;
}

/* Runs the calibration images through the float lowering in batches, with `pass` of observe. */
static cnn_status calib_pass(const cnn_net *net, cnn_lite *m, const cnn_quant_config *cfg, qgraph *g, int pass,
                             float *batch, float *logits, int bsize)
{
    int h = (int)net->input.d[0], w = (int)net->input.d[1], c = (int)net->input.d[2];
    size_t per = (size_t)h * w * c;
    calib_ctx ctx = {g, pass};
    char err[256];
    for (int64_t first = 0; first < cfg->calib_n; first += bsize) {
        int n = (int)(cfg->calib_n - first < bsize ? cfg->calib_n - first : bsize);
        for (size_t j = 0; j < (size_t)n * per; j++) { /* normalized as the model's input wants */
            float v = cfg->calib_images[(size_t)first * per + j];
            int ch = (int)(j % (size_t)c);
            batch[j] = net->has_norm ? (v - net->norm_mean[ch]) / net->norm_std[ch] : v;
        }
        if (cnn_lite_run_observed(m, batch, n, logits, observe, &ctx, err, sizeof err) != CNN_LITE_OK)
            return cnn_error(CNN_ERR_BACKEND, "calibration: %s", err);
    }
    return CNN_OK;
}

static cnn_status calibrate(const cnn_net *net, qgraph *g, const cnn_quant_config *cfg)
{
    enum { BATCH = 32 };
    unsigned char *buf = NULL;
    size_t len = 0, need = 0;
    void *arena = NULL;
    float *batch = NULL, *logits = NULL;
    char err[256];
    cnn_lite *m = NULL;
    cnn_status st = write_graph(net, g, CNN_QUANT_FLOAT, cfg, NULL, &buf, &len);
    if (st != CNN_OK) return st;
    if (cnn_lite_arena_size(buf, len, BATCH, &need, err, sizeof err) != CNN_LITE_OK) {
        st = cnn_error(CNN_ERR_FORMAT, "the lowered model: %s", err);
        goto done;
    }
    arena = malloc(need);
    size_t per = (size_t)net->input.d[0] * net->input.d[1] * net->input.d[2];
    batch = malloc((size_t)BATCH * per * sizeof *batch);
    logits = malloc((size_t)BATCH * (size_t)cnn_net_num_outputs(net) * sizeof *logits);
    if (!arena || !batch || !logits) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for calibration");
        goto done;
    }
    if (cnn_lite_open(buf, len, BATCH, arena, need, &m, err, sizeof err) != CNN_LITE_OK) {
        st = cnn_error(CNN_ERR_FORMAT, "the lowered model: %s", err);
        goto done;
    }
    CNN_TRY(calib_pass(net, m, cfg, g, 0, batch, logits, BATCH));
    if (cfg->method != CNN_CALIB_MINMAX) {
        for (int i = 0; i < g->n; i++)
            if (has_own_scale(&g->ops[i]) && !(g->ops[i].hist = calloc(HIST_BINS, sizeof(double))))
                CNN_TRY(cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for calibration"));
        CNN_TRY(calib_pass(net, m, cfg, g, cfg->method == CNN_CALIB_ENTROPY ? 2 : 1, batch, logits, BATCH));
    }
    /* the clipping methods are for the activations inside: the input's pixels and the class scores keep their
     * whole range (a clipped score changes the prediction) */
    int last = g->n - 1;
    if (!strcmp(g->ops[last].kind, "softmax")) last = g->ops[last].in[0];
    for (int i = 0; i < g->n; i++)
        finish_range(&g->ops[i], i == 0 || i == last ? CNN_CALIB_MINMAX : cfg->method, cfg->percentile);
done:
fail:
    free(buf);
    free(arena);
    free(batch);
    free(logits);
    return st;
}

/* A QAT model's ranges (core/nn/qat.c) in place of calibration: each quantized op's from the layer whose output it is
 * (a folded convolution's from its batchnorm). */
static cnn_status learned_ranges(const cnn_net *net, qgraph *g)
{
    for (int i = 0; i < g->n; i++) {
        qop *op = &g->ops[i];
        float lo, hi;
        if (!has_own_scale(op)) continue;
        if (!cnn_qat_layer_range(net, op->layer, &lo, &hi))
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: %s has no learned range: the quantization-aware model was "
                             "never trained (cnn train --qat)", net->source, op->layer ? op->layer->name : "the input");
        op->lo = lo, op->hi = hi, op->seen = 1;
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------

cnn_status cnn_quantize(const cnn_net *net, const cnn_quant_config *cfg, const char *out_path)
{
    if (!net || !cfg || !out_path) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_quantize: bad arguments");
    if (cnn_net_is_quantized(net))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s is already quantized: quantize the float model", net->source);
    if ((unsigned)cfg->mode > CNN_QUANT_FLOAT || (unsigned)cfg->method > CNN_CALIB_ENTROPY ||
        (cfg->method == CNN_CALIB_PERCENTILE && !(cfg->percentile > 50.0 && cfg->percentile <= 100.0)))
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_quantize: a mode, a calibration method and a percentile in (50, "
                         "100] are needed");
    if (cfg->mode == CNN_QUANT_INT8 && !cnn_net_is_qat(net) && (!cfg->calib_images || cfg->calib_n < 1))
        return cnn_error(CNN_ERR_INVALID_ARG, "int8 quantization needs calibration images (--calib-data)");
    qgraph *g = calloc(1, sizeof *g);
    if (!g) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    cnn_status st = lower(net, g);
    if (st == CNN_OK && cfg->mode == CNN_QUANT_INT8) {
        for (int i = 0; i < g->n && st == CNN_OK; i++) {
            const qop *op = &g->ops[i];
            int relu_only = op->act == CNN_ACT_NONE || op->act == CNN_ACT_RELU;
            if (!strcmp(op->kind, "scale") || !relu_only)
                st = cnn_error(CNN_ERR_UNSUPPORTED, "layer %s: int8 covers convolutions (with their batchnorm), dense "
                               "layers, pooling, adds and concats with ReLU or no activation; this layer has %s%s: "
                               "quantize with --mode dynamic", op->layer ? op->layer->name : op->name,
                               !strcmp(op->kind, "scale") ? "a batchnorm after no convolution" : "the activation ",
                               !strcmp(op->kind, "scale") ? "" : cnn_act_name(op->act));
        }
        if (st == CNN_OK) st = cnn_net_is_qat(net) ? learned_ranges(net, g) : calibrate(net, g, cfg);
        for (int i = 0; st == CNN_OK && i < g->n; i++) {
            qop *op = &g->ops[i];
            if (has_own_scale(op)) lq_choose_params((float)op->lo, (float)op->hi, &op->scale, &op->zp);
            else op->scale = g->ops[op->in[0]].scale, op->zp = g->ops[op->in[0]].zp;
        }
    }
    if (st == CNN_OK) st = write_graph(net, g, cfg->mode, cfg, out_path, NULL, NULL);
    qgraph_free(g);
    free(g);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// cnn summary of a quantized file

/* The value of key=... in a graph line, copied into buf (empty when absent). */
static void line_get(const char *line, const char *key, char *buf, size_t n)
{
    buf[0] = '\0';
    size_t klen = strlen(key);
    for (const char *p = line; *p;) {
        while (*p == ' ') p++;
        const char *tok = p;
        while (*p && *p != ' ') p++;
        if ((size_t)(p - tok) > klen && !strncmp(tok, key, klen) && tok[klen] == '=') {
            size_t len = (size_t)(p - tok) - klen - 1;
            snprintf(buf, n, "%.*s", (int)(len < n ? len : n - 1), tok + klen + 1);
            return;
        }
    }
}

static size_t tensor_bytes(const cnn_st_file *f, const char *name, char *desc, size_t n)
{
    const cnn_st_tensor *t = name[0] ? cnn_st_find(f, name) : NULL;
    if (!t) return 0;
    size_t len = strlen(desc);
    len += (size_t)snprintf(desc + len, n - len, "%s%s ", len ? " + " : "", cnn_st_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim && len < n; d++)
        len += (size_t)snprintf(desc + len, n - len, "%s%lld", d ? "x" : "", (long long)t->shape[d]);
    return t->nbytes;
}

cnn_status cnn_quant_summary(const char *path, FILE *out, int *printed)
{
    *printed = 0;
    cnn_st_file *f = NULL;
    cnn_status st = cnn_st_read(path, &f);
    if (st != CNN_OK) return st;
    const char *format = cnn_st_meta(f, "format"), *graph = cnn_st_meta(f, "graph"), *mode = cnn_st_meta(f, "mode");
    if (!format || strcmp(format, "cnn.c lite") || !graph || !mode) {
        cnn_st_free(f);
        return CNN_OK;
    }
    const char *calib = cnn_st_meta(f, "calibration");
    fprintf(out, "Quantized model: \"%s\" (%s%s%s)\n", path, mode, calib ? "; calibration: " : "", calib ? calib : "");
    fprintf(out, "%-4s %-9s %-16s %-42s %10s %13s %6s\n", "#", "op", "output", "weights", "bytes", "scale", "zp");
    size_t total = 0;
    int index = 0;
    for (const char *p = graph; *p; index++) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char line[1024], kind[32], outs[64], w[160], b[160], q[64], desc[256] = "";
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
        p = end ? end + 1 : p + len;
        if (!line[0]) continue;
        sscanf(line, "%31s", kind);
        line_get(line, "out", outs, sizeof outs);
        if (!strcmp(kind, "input")) {
            char h[16], ww[16], c[16];
            line_get(line, "h", h, sizeof h), line_get(line, "w", ww, sizeof ww), line_get(line, "c", c, sizeof c);
            snprintf(outs, sizeof outs, "%s,%s,%s", h, ww, c);
        }
        for (char *c = outs; *c; c++)
            if (*c == ',') *c = 'x';
        line_get(line, "w", w, sizeof w);
        line_get(line, "b", b, sizeof b);
        line_get(line, "q", q, sizeof q);
        size_t bytes = tensor_bytes(f, w, desc, sizeof desc);
        if (w[0]) {
            char sname[200];
            snprintf(sname, sizeof sname, "%s.scale", w);
            bytes += tensor_bytes(f, sname, desc, sizeof desc);
        }
        bytes += tensor_bytes(f, b, desc, sizeof desc);
        total += bytes;
        char *comma = strchr(q, ',');
        if (comma) *comma = '\0';
        fprintf(out, "%-4d %-9s %-16s %-42.42s %10zu %13s %6s\n", index, kind, outs, desc[0] ? desc : "-", bytes,
                q[0] ? q : "-", comma ? comma + 1 : "-");
    }
    fprintf(out, "weights: %zu bytes in %d ops (%s)\n", total, index,
            !strcmp(mode, "int8") ? "int8 weights, int32 biases, int8 activations with a scale and a zero point; "
                                    "the ops without a scale keep their input's"
            : !strcmp(mode, "dynamic") ? "int8 weights dequantized when loaded; float activations"
            : !strcmp(mode, "fp16") ? "half weights, computed in float32" : "float32");
    cnn_st_free(f);
    *printed = 1;
    return CNN_OK;
}
