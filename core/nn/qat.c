/* Quantization-aware training: fake quantization to cnn_quantize's int8 scheme (core/lite/lite_quant.h), so that
 * training sees the rounding and clipping the int8 model will have (Jacob et al. 2018; PyTorch's eager-mode QAT and
 * TF-MOT's quantize_model do the same).
 *
 * Where: the tensors cnn-lite requantizes, found on the network as trained (after its rewrites, which the lowering
 * of core/quant/quantize.c undoes): the network input; each convolution's output, or the batchnorm's after it when the
 * lowering folds the two; dense layers, adds and concats. A ReLU the network moved behind a max-pool counts where
 * the lowering puts it back (on the layer before): that layer's range is the one of relu(y), and since that range
 * starts at 0 (zero point -128) fake quantization of y sends every negative value to 0, as relu would. Max and
 * average pooling, flatten and dropout keep their input's grid (the rounding of an int8 average pool to that grid is
 * not simulated).
 *
 * Weights: per output channel, symmetric, scale = max |w| / 127, as cnn_quantize stores them. A convolution that
 * the lowering folds with its batchnorm (w' = w * gamma / sqrt(var + eps)) is trained as PyTorch's ConvBn modules
 * train: the folded weights are fake-quantized with the running variance, then unfolded, w_eff = fq(w * a) / a, so
 * that the batchnorm (batch statistics in training, running ones in inference) sees the convolution of fq(w') / a:
 * in inference that is exactly the folded int8 convolution's float version. The factor a is a constant for the
 * gradient (gamma learns through the batchnorm itself).
 *
 * Gradients: straight through (Bengio et al. 2013) for the weights (their grid spans their range: nothing is
 * clipped) and for the activations where the unclamped code lies in [-128, 127]; zero where it was clipped.
 *
 * Ranges: exponential moving averages of each batch's minimum and maximum (PyTorch's
 * MovingAverageMinMaxObserver, averaging constant 0.01; the first batch sets them), updated by training forwards
 * only, kept as the layer's `qat_range` state tensor (lo, hi; (0, 0) until a batch was seen, and then not applied),
 * so model files and checkpoints carry them and resume is exact. Scale and zero point come from them with
 * lq_choose_params, as cnn_quantize computes them from a calibrated range.
 *
 * Mechanics: the weights are swapped for their fake-quantized versions around a forward (and the backward that
 * follows it in training), the float (master) weights kept on the host, and put back before the optimizer step
 * (cnn_qat_restore); activations are read to the host, quantized and written back. Every backend runs it through
 * tensor reads and writes; in fp32 only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/free_list.h"
#include "core/lite/lite_quant.h"
#include "core/nn/qat.h"

/* PyTorch's MovingAverageMinMaxObserver default */
#define QAT_EMA 0.01f
#define RANGE_STATE "qat_range"
#define INPUT_STATE "qat_input_range"

typedef struct cnn_qat {
    int n;                 /* layers */
    signed char *point;    /* per layer: its output is quantized */
    signed char *relu;     /* per layer: its range is relu(y)'s (a ReLU a max-pool took over) */
    int *fold;             /* per convolution: the batchnorm folded into it (-1: none) */
    float **master;        /* per layer with weights: the float weights (kept while swapped) */
    int swapped;
    unsigned char **mask;  /* per quantized layer: 1 where the last training forward's value was in range */
    size_t *mask_len;
    float *buf;            /* host scratch */
    size_t cap;
} cnn_qat;

// ---------------------------------------------------------------------------------------------------------------
// the arithmetic

float cnn_fake_quant(float v, float scale, int32_t zp, int *in_range)
{
    if (in_range) {
        float q = roundf(v / scale) + (float)zp;
        *in_range = q >= -128.0f && q <= 127.0f;
    }
    return scale * (float)((int32_t)lq_quantize(v, scale, zp) - zp);
}

/* the per-channel scale cnn_quantize's store_weights uses */
static float weight_scale(const float *w, int64_t per)
{
    float mx = 0.0f;
    for (int64_t k = 0; k < per; k++) mx = fmaxf(mx, fabsf(w[k]));
    return mx > 0.0f ? mx / 127.0f : 1.0f;
}

void cnn_fake_quant_weights(float *w, int64_t rows, int64_t per)
{
    for (int64_t c = 0; c < rows; c++) {
        float *r = w + c * per;
        float s = weight_scale(r, per);
        for (int64_t k = 0; k < per; k++) {
            float q = roundf(r[k] / s);
            r[k] = s * (q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// where the quantizers go

int cnn_net_is_qat(const cnn_net *net) { return net && net->qat; }

/* the layers reading layer i's output, as defined (the first one found in *first) */
static int readers(const cnn_net *net, int i, int *first)
{
    int n = 0;
    for (int j = 0; j < net->nlayers; j++)
        for (int k = 0; k < net->layers[j]->ninputs; k++)
            if (net->layers[j]->inputs[k] == i) {
                if (!n) *first = j;
                n++;
            }
    return n;
}

static cnn_status unsupported(const cnn_net *net, const cnn_layer *l, const char *why)
{
    return cnn_error(CNN_ERR_UNSUPPORTED, "%s: layer %s (line %d): quantization-aware training %s", net->source,
                     l->name, l->line, why);
}

/* Finds the quantized layers (point), their ReLU ranges and the folds; an error names a layer it cannot cover. */
static cnn_status analyze(const cnn_net *net, signed char *point, signed char *relu, int *fold)
{
    for (int i = 0; i < net->nlayers; i++) point[i] = relu[i] = 0, fold[i] = -1;
    for (int i = 0; i < net->nlayers; i++) {
        const cnn_layer *l = net->layers[i];
        const cnn_layer_ops *ops = l->ops;
        if (l->act != CNN_ACT_NONE && l->act != CNN_ACT_RELU)
            return unsupported(net, l, "covers ReLU or no activation, as int8 does (cnn quantize --mode dynamic "
                                       "takes the others)");
        if (ops == &cnn_lite_layer_ops) return unsupported(net, l, "trains float models, not quantized ones");
        int r = -1, nr = readers(net, i, &r);
        if (ops == &cnn_conv_layer_ops) {
            const cnn_layer *b = nr == 1 ? net->layers[r] : NULL;
            if (b && b->ops == &cnn_batchnorm_layer_ops && b->inputs[0] == i && l->act == CNN_ACT_NONE) fold[i] = r;
            else point[i] = 1;
        } else if (ops == &cnn_batchnorm_layer_ops) {
            if (l->fused)
                return unsupported(net, l, "does not cover a batchnorm fused with the add after it (a residual "
                                           "block's end): its output before the add, which int8 quantizes, is "
                                           "never computed");
            if (l->inputs[0] < 0 || fold[l->inputs[0]] != i)
                return unsupported(net, l, "covers batchnorms that follow a convolution read by nothing else (int8 "
                                           "folds them into it)");
            point[i] = 1;
        } else if (ops == &cnn_dense_layer_ops) {
            point[i] = 1;
        } else if (ops == &cnn_add_layer_ops) {
            if (l->ninputs != 2) return unsupported(net, l, "covers adds of two inputs");
            point[i] = 1;
        } else if (ops == &cnn_concat_layer_ops) {
            if (l->act != CNN_ACT_NONE)
                return unsupported(net, l, "covers concats without an activation (put it on a line of its own)");
            point[i] = 1;
        }
        /* a ReLU moved behind the only max-pool reading this output: the lowering puts it back here */
        if (point[i] && l->act == CNN_ACT_NONE && nr == 1 && net->layers[r]->ops == &cnn_maxpool_layer_ops &&
            net->layers[r]->act == CNN_ACT_RELU)
            relu[i] = 1;
    }
    return CNN_OK;
}

/* the state tensor of layer l named "<layer>.<suffix>", or NULL */
static cnn_param *find_state(const cnn_layer *l, const char *suffix)
{
    size_t n = strlen(l->name), m = strlen(suffix);
    for (int s = 0; s < l->nstate; s++) {
        const char *name = l->state[s].name;
        if (strlen(name) == n + 1 + m && !strcmp(name + n + 1, suffix)) return (cnn_param *)&l->state[s];
    }
    return NULL;
}

cnn_status cnn_qat_declare(cnn_net *net)
{
    cnn_status st = CNN_OK;
    signed char *point = malloc((size_t)net->nlayers), *relu = malloc((size_t)net->nlayers);
    int *fold = malloc((size_t)net->nlayers * sizeof *fold);
    const int64_t two[1] = {2};
    if (!point || !relu || !fold) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    CNN_TRY(analyze(net, point, relu, fold));
    CNN_TRY(cnn_layer_add_state(net->layers[0], INPUT_STATE, 1, two, CNN_INIT_ZEROS));
    for (int i = 0; i < net->nlayers; i++)
        if (point[i]) CNN_TRY(cnn_layer_add_state(net->layers[i], RANGE_STATE, 1, two, CNN_INIT_ZEROS));
fail:
    free(point);
    free(relu);
    free(fold);
    return st;
}

static cnn_param *range_of(const cnn_net *net, int layer)
{
    if (net->nlayers < 1) return NULL;
    return layer < 0 ? find_state(net->layers[0], INPUT_STATE) : find_state(net->layers[layer], RANGE_STATE);
}

int cnn_qat_range(const cnn_net *net, int layer, float *lo, float *hi)
{
    if (!net || !net->qat || layer >= net->nlayers) return 0;
    const cnn_param *p = range_of(net, layer);
    float r[2];
    if (!p || cnn_tensor_read(p->value, r, sizeof r) != CNN_OK || (r[0] == 0.0f && r[1] == 0.0f)) return 0;
    *lo = r[0];
    *hi = r[1];
    return 1;
}

int cnn_qat_layer_range(const cnn_net *net, const cnn_layer *l, float *lo, float *hi)
{
    if (!net || !net->qat) return 0;
    if (!l) return cnn_qat_range(net, -1, lo, hi);
    int i = 0;
    while (i < net->nlayers && net->layers[i] != l) i++;
    if (i == net->nlayers) return 0;
    int r = -1;
    if (l->ops == &cnn_conv_layer_ops && !find_state(l, RANGE_STATE) && readers(net, i, &r) == 1) i = r;
    return cnn_qat_range(net, i, lo, hi);
}

void cnn_qat_free(cnn_net *net)
{
    cnn_qat *q = net->qat_state;
    if (!q) return;
    for (int i = 0; i < q->n; i++) {
        free(q->master[i]);
        free(q->mask[i]);
    }
    CNN_FREE_ALL(q->point, q->relu, q->fold, q->master, q->mask, q->mask_len, q->buf, q);
    net->qat_state = NULL;
}

static cnn_status state_of(cnn_net *net, cnn_qat **out)
{
    cnn_status st = CNN_OK;
    if (net->qat_state) {
        *out = net->qat_state;
        return CNN_OK;
    }
    if (net->compute != CNN_F32)
        return cnn_error(CNN_ERR_UNSUPPORTED, "quantization-aware training computes in fp32 or tf32, not %s",
                         cnn_precision_name(net->precision));
    cnn_qat *q = calloc(1, sizeof *q);
    if (!q) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    net->qat_state = q;
    q->n = net->nlayers;
    q->point = malloc((size_t)q->n);
    q->relu = malloc((size_t)q->n);
    q->fold = malloc((size_t)q->n * sizeof *q->fold);
    q->master = calloc((size_t)q->n, sizeof *q->master);
    q->mask = calloc((size_t)q->n, sizeof *q->mask);
    q->mask_len = calloc((size_t)q->n, sizeof *q->mask_len);
    if (!q->point || !q->relu || !q->fold || !q->master || !q->mask || !q->mask_len) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    CNN_TRY(analyze(net, q->point, q->relu, q->fold));
    *out = q;
    return CNN_OK;
fail:
    cnn_qat_free(net);
    return st;
}

static cnn_status scratch(cnn_qat *q, size_t count)
{
    if (count <= q->cap) return CNN_OK;
    float *b = realloc(q->buf, count * sizeof *b);
    if (!b) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for fake quantization");
    q->buf = b;
    q->cap = count;
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// weights

/* w_eff of layer i from its master weights (held in q->master[i]) into the layer's value */
static cnn_status quantize_weights(cnn_net *net, cnn_qat *q, int i)
{
    cnn_status st = CNN_OK;
    cnn_layer *l = net->layers[i];
    cnn_tensor *w = l->params[0].value;
    const int64_t numel = cnn_tensor_numel(w), rows = w->shape[0], per = numel / rows;
    float *gamma = NULL, *var = NULL;
    CNN_TRY(scratch(q, (size_t)numel));
    memcpy(q->buf, q->master[i], (size_t)numel * sizeof *q->buf);
    if (q->fold[i] < 0) {
        cnn_fake_quant_weights(q->buf, rows, per);
    } else { /* w_eff = fq(w * a) / a, a = gamma / sqrt(var + eps), computed as core/quant/quantize.c folds */
        const cnn_layer *b = net->layers[q->fold[i]];
        const float eps = ((const cnn_batchnorm_layer *)b)->eps;
        gamma = malloc((size_t)rows * sizeof *gamma);
        var = malloc((size_t)rows * sizeof *var);
        if (!gamma || !var) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
            goto fail;
        }
        CNN_TRY(cnn_tensor_read(b->params[0].value, gamma, (size_t)rows * sizeof *gamma));
        CNN_TRY(cnn_tensor_read(b->state[1].value, var, (size_t)rows * sizeof *var));
        for (int64_t c = 0; c < rows; c++) {
            double a = gamma[c] / sqrt((double)var[c] + eps);
            float *r = q->buf + c * per;
            if (!(a != 0.0) || !isfinite(a)) continue; /* the batchnorm zeroes the channel: nothing to quantize */
            for (int64_t k = 0; k < per; k++) r[k] = (float)(r[k] * a);
            cnn_fake_quant_weights(r, 1, per);
            for (int64_t k = 0; k < per; k++) r[k] = (float)(r[k] / a);
        }
    }
    CNN_TRY(cnn_tensor_write(w, q->buf, (size_t)numel * sizeof *q->buf));
fail:
    free(gamma);
    free(var);
    return st;
}

static int has_weights(const cnn_layer *l)
{
    return (l->ops == &cnn_conv_layer_ops || l->ops == &cnn_dense_layer_ops) && l->nparams > 0;
}

cnn_status cnn_qat_restore(cnn_net *net)
{
    cnn_qat *q = net ? net->qat_state : NULL;
    if (!q || !q->swapped) return CNN_OK;
    for (int i = 0; i < q->n; i++) {
        if (!q->master[i]) continue;
        cnn_tensor *w = net->layers[i]->params[0].value;
        cnn_status st = cnn_tensor_write(w, q->master[i], cnn_tensor_bytes(w));
        if (st != CNN_OK) return st;
    }
    q->swapped = 0;
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// activations

/* Fake-quantizes t (count floats) with the range kept in p, updating it first in training; the clip mask goes
 * to *mask (grown to count) when mask is not NULL. */
static cnn_status quantize_tensor(cnn_qat *q, cnn_tensor *t, cnn_param *p, int relu, int training,
                                  unsigned char **mask, size_t *mask_len)
{
    cnn_status st = CNN_OK;
    const size_t count = (size_t)cnn_tensor_numel(t);
    float r[2];
    if (!count) return CNN_OK;
    CNN_TRY(scratch(q, count));
    CNN_TRY(cnn_tensor_read(t, q->buf, count * sizeof *q->buf));
    CNN_TRY(cnn_tensor_read(p->value, r, sizeof r));
    float *v = q->buf;
    if (training) {
        float lo = v[0], hi = v[0];
        for (size_t j = 1; j < count; j++) lo = fminf(lo, v[j]), hi = fmaxf(hi, v[j]);
        if (relu) lo = fmaxf(lo, 0.0f), hi = fmaxf(hi, 0.0f);
        if (!isfinite(lo) || !isfinite(hi))
            return cnn_error(CNN_ERR_NUMERIC, "fake quantization: %s saw a value that is not finite", p->name);
        if (r[0] == 0.0f && r[1] == 0.0f) {
            r[0] = lo, r[1] = hi;
        } else {
            r[0] += QAT_EMA * (lo - r[0]);
            r[1] += QAT_EMA * (hi - r[1]);
        }
        CNN_TRY(cnn_tensor_write(p->value, r, sizeof r));
    }
    if (r[0] == 0.0f && r[1] == 0.0f) return CNN_OK; /* no batch seen yet: nothing to quantize to */
    float scale;
    int32_t zp;
    lq_choose_params(r[0], r[1], &scale, &zp);
    if (mask && *mask_len < count) {
        unsigned char *m = realloc(*mask, count);
        if (!m) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for fake quantization");
        *mask = m;
        *mask_len = count;
    }
    for (size_t j = 0; j < count; j++) {
        int in = 1;
        v[j] = cnn_fake_quant(v[j], scale, zp, mask ? &in : NULL);
        if (mask) (*mask)[j] = (unsigned char)in;
    }
    CNN_TRY(cnn_tensor_write(t, v, count * sizeof *v));
fail:
    return st;
}

cnn_status cnn_qat_forward_begin(cnn_net *net, int training)
{
    cnn_status st = CNN_OK;
    cnn_qat *q = NULL;
    CNN_TRY(state_of(net, &q));
    const int keep = !q->swapped; /* else the masters are kept already (a second forward before the restore) */
    for (int i = 0; i < q->n; i++) {
        cnn_layer *l = net->layers[i];
        if (!has_weights(l)) continue;
        if (keep) {
            size_t bytes = cnn_tensor_bytes(l->params[0].value);
            if (!q->master[i] && !(q->master[i] = malloc(bytes ? bytes : 1))) {
                st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the float weights of %s", l->name);
                goto fail;
            }
            CNN_TRY(cnn_tensor_read(l->params[0].value, q->master[i], bytes));
        }
        CNN_TRY(quantize_weights(net, q, i));
        q->swapped = 1;
    }
    cnn_param *p = range_of(net, -1);
    if (p) CNN_TRY(quantize_tensor(q, net->input_t, p, 0, training, NULL, NULL));
fail:
    if (st != CNN_OK) {
        cnn_qat_restore(net);
        st = cnn_error_prefix(st, "fake quantization: ");
    }
    return st;
}

cnn_status cnn_qat_forward_layer(cnn_net *net, int i, int training)
{
    cnn_qat *q = net->qat_state;
    if (!q || i >= q->n || !q->point[i]) return CNN_OK;
    cnn_param *p = range_of(net, i);
    if (!p) return CNN_OK;
    cnn_status st = quantize_tensor(q, net->acts[i], p, q->relu[i], training, training ? &q->mask[i] : NULL,
                                    &q->mask_len[i]);
    if (st == CNN_OK && !training && q->mask_len[i]) q->mask_len[i] = 0, free(q->mask[i]), q->mask[i] = NULL;
    return st == CNN_OK ? CNN_OK : cnn_error_prefix(st, "fake quantization of %s: ", net->layers[i]->name);
}

cnn_status cnn_qat_forward_end(cnn_net *net, int training)
{
    return training ? CNN_OK : cnn_qat_restore(net);
}

cnn_status cnn_qat_backward_layer(cnn_net *net, int i)
{
    cnn_qat *q = net->qat_state;
    if (!q || i >= q->n || !q->point[i] || !q->mask[i] || !net->grads[i]) return CNN_OK;
    cnn_tensor *g = net->grads[i];
    const size_t count = (size_t)cnn_tensor_numel(g);
    if (count > q->mask_len[i]) return CNN_OK; /* no training forward of this batch: nothing clipped to undo */
    cnn_status st = scratch(q, count);
    if (st == CNN_OK) st = cnn_tensor_read(g, q->buf, count * sizeof *q->buf);
    if (st != CNN_OK) return st;
    for (size_t j = 0; j < count; j++)
        if (!q->mask[i][j]) q->buf[j] = 0.0f;
    return cnn_tensor_write(g, q->buf, count * sizeof *q->buf);
}

// ---------------------------------------------------------------------------------------------------------------
// converting a float network

cnn_status cnn_net_qat_convert(const cnn_net *net, uint64_t seed, cnn_net **out)
{
    cnn_status st = CNN_OK;
    cnn_net *fresh = NULL;
    *out = NULL;
    if (net->qat) return cnn_error(CNN_ERR_INVALID_ARG, "%s trains with fake quantization already", net->source);
    size_t len = strlen(net->definition);
    char *text = malloc(len + 64);
    if (!text) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    snprintf(text, len + 64, "%s%sqat  # quantization-aware training (cnn train --qat)\n", net->definition,
             len && net->definition[len - 1] != '\n' ? "\n" : "");
    CNN_TRY(cnn_net_from_text(text, net->source, net->backend, seed, &fresh));
    int copied = 0, kept = 0;
    CNN_TRY(cnn_net_copy_weights(fresh, net, &copied, &kept));
    if (net->has_norm) CNN_TRY(cnn_net_set_normalization(fresh, (int)net->input.d[2], net->norm_mean, net->norm_std));
    if (net->resize_h) CNN_TRY(cnn_net_set_resize(fresh, net->resize_h, net->resize_w));
    if (net->class_names)
        CNN_TRY(cnn_net_set_class_names(fresh, cnn_net_num_outputs(net), (const char *const *)net->class_names));
    *out = fresh;
    fresh = NULL;
fail:
    free(text);
    cnn_net_destroy(fresh);
    return st;
}
