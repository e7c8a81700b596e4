/* Gradients with respect to the network input and to layer outputs, for explanations and attacks
 * (include/cnn/explain.h).
 *
 * The forward pass is an inference one (batchnorm on its running statistics, dropout the identity), except that
 * max pooling runs its training variant, which keeps the argmax its backward needs and computes the same output.
 * The backward pass runs every layer's backward with cnn_layer.infer_grad set: no parameter gradients, batchnorm
 * through its running statistics, dropout as the identity. The gradients live in buffers of their own (one per
 * layer output, the input's, and scratch for outputs with several consumers), so the trainer's pooled gradient
 * buffers, the weights' gradients and the optimizer are never written. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/explain.h"
#include "core/checked.h"
#include "core/error.h"
#include "core/nn/net.h"
#include "core/ops.h"

struct cnn_grad {
    cnn_net *net;
    int capacity;        /* images the buffers hold */
    int n;               /* images of the last forward; 0: none yet */
    cnn_tensor **g;      /* per layer: the gradient of its output (N, out...); a view of its root's for view layers */
    cnn_tensor *dinput;  /* (N, H, W, C): the gradient of the normalized input */
    cnn_tensor *scratch[CNN_LAYER_MAX_INPUTS]; /* flat (N x largest): a later consumer's gradient before it is added */
    int nscratch;        /* how many of them a backward step needs at most */
    int64_t largest;     /* elements per image of the largest non-view output or the input */
    float *host;         /* n x max(outputs, H x W x C) staging */
};

/* ---- layers by name ------------------------------------------------------------------------------------- */

int cnn_net_num_layers(const cnn_net *net) { return net->nlayers; }

const char *cnn_net_layer_name(const cnn_net *net, int i)
{
    return i >= 0 && i < net->nlayers ? net->layers[i]->name : NULL;
}

const char *cnn_net_layer_kind(const cnn_net *net, int i)
{
    return i >= 0 && i < net->nlayers ? net->layers[i]->ops->kind : NULL;
}

int cnn_net_layer_find(const cnn_net *net, const char *name)
{
    for (int i = 0; name && i < net->nlayers; i++)
        if (!strcmp(net->layers[i]->name, name)) return i;
    return -1;
}

int64_t cnn_net_layer_shape(const cnn_net *net, int i, int *h, int *w, int *c, int *ndim)
{
    if (i < 0 || i >= net->nlayers) return -1;
    const cnn_shape *s = &net->layers[i]->out;
    int img = s->ndim == 3;
    if (h) *h = img ? (int)s->d[0] : 1;
    if (w) *w = img ? (int)s->d[1] : 1;
    if (c) *c = (int)s->d[s->ndim - 1];
    if (ndim) *ndim = s->ndim;
    return cnn_shape_elements(s);
}

int cnn_net_last_conv(const cnn_net *net)
{
    for (int i = net->nlayers - 1; i >= 0; i--)
        if (net->layers[i]->ops == &cnn_conv_layer_ops && net->layers[i]->out.ndim == 3) return i;
    return -1;
}

/* ---- buffers --------------------------------------------------------------------------------------------- */

static void free_tensor(cnn_tensor *t)
{
    if (t && !t->owns_data) free(t);
    else cnn_tensor_destroy(t);
}

void cnn_grad_destroy(cnn_grad *g)
{
    if (!g) return;
    /* views first: they point into their roots' memory */
    for (int pass = 0; g->g && pass < 2; pass++)
        for (int i = 0; i < g->net->nlayers; i++)
            if (g->g[i] && (pass == 0) == !g->g[i]->owns_data) {
                free_tensor(g->g[i]);
                g->g[i] = NULL;
            }
    free(g->g);
    cnn_tensor_destroy(g->dinput);
    for (int k = 0; k < g->nscratch; k++) cnn_tensor_destroy(g->scratch[k]);
    free(g->host);
    free(g);
}

cnn_status cnn_grad_create(cnn_net *net, int max_batch, cnn_grad **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    if (max_batch < 1) return cnn_error(CNN_ERR_INVALID_ARG, "gradients: the batch must hold at least 1 image, got %d",
                                        max_batch);
    if (net->compute != CNN_F32)
        return cnn_error(CNN_ERR_UNSUPPORTED, "gradients: %s computes in %s; input gradients need fp32 or tf32 "
                         "(cnn_net_set_precision)", net->source, cnn_dtype_name(net->compute));
    cnn_grad *g = calloc(1, sizeof *g);
    if (!g) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    g->net = net;
    g->g = calloc((size_t)net->nlayers, sizeof *g->g);
    if (!g->g) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for %d layers", net->nlayers);
        goto fail;
    }
    cnn_backend *b = net->backend;
    /* the plan: elements per image of every buffer, and how many scratch gradients one backward step needs at most
     * (the same walk as backward(): a source's first consumer in reverse order writes its gradient directly) */
    const int nl = net->nlayers;
    char *written = calloc((size_t)nl + 1, 1);
    if (!written) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    int64_t per_image = cnn_shape_elements(&net->input);
    g->largest = cnn_shape_elements(&net->input);
    for (int i = 0; i < nl; i++)
        if (!cnn_layer_is_view(net->layers[i])) {
            int64_t e = cnn_shape_elements(&net->layers[i]->out);
            per_image += e;
            if (e > g->largest) g->largest = e;
        }
    int last = cnn_net_view_root(net, nl - 1);
    if (last >= 0) written[last] = 1;
    for (int i = nl - 1; i >= 0; i--) {
        if (cnn_layer_is_view(net->layers[i])) continue;
        int srcs[CNN_LAYER_MAX_INPUTS], used = 0;
        for (int k = 0, ns = cnn_net_layer_sources(net->layers[i], srcs); k < ns; k++) {
            int r = cnn_net_view_root(net, srcs[k]), slot = r < 0 ? nl : r;
            if (written[slot]) used++;
            written[slot] = 1;
        }
        if (used > g->nscratch) g->nscratch = used;
    }
    free(written);
    per_image += (int64_t)g->nscratch * g->largest;
    /* what the buffers take, against the memory limit before anything is allocated */
    int64_t bytes;
    if (!cnn_mul_i64(per_image, (int64_t)max_batch * (int64_t)sizeof(float), &bytes)) bytes = INT64_MAX;
    if (bytes > cnn_memory_limit()) {
        char need[32], limit[32];
        st = cnn_error(CNN_ERR_NO_MEMORY, "gradients: %d images need %s of gradient buffers, above the memory limit "
                       "of %s (cnn_set_memory_limit); ask for fewer images per pass", max_batch,
                       cnn_memory_format(bytes, need, sizeof need),
                       cnn_memory_format(cnn_memory_limit(), limit, sizeof limit));
        goto fail;
    }
    for (int i = 0; i < nl; i++) {
        cnn_layer *l = net->layers[i];
        if (!cnn_layer_is_view(l)) CNN_TRY(cnn_batch_tensor_create(b, CNN_F32, &l->out, max_batch, &g->g[i]));
    }
    for (int i = 0; i < nl; i++) { /* views in order: a view's source comes before it */
        cnn_layer *l = net->layers[i];
        if (!cnn_layer_is_view(l)) continue;
        int r = cnn_net_view_root(net, i);
        if (r >= 0) CNN_TRY(cnn_batch_view_create(g->g[r], &l->out, max_batch, &g->g[i]));
    }
    CNN_TRY(cnn_batch_tensor_create(b, CNN_F32, &net->input, max_batch, &g->dinput));
    int64_t flat[1] = {g->largest * max_batch}; /* within `bytes`, so no overflow */
    for (int k = 0; k < g->nscratch; k++) CNN_TRY(cnn_tensor_create(b, CNN_F32, 1, flat, &g->scratch[k]));
    int64_t k_out = cnn_net_num_outputs(net), per = cnn_shape_elements(&net->input);
    g->host = malloc((size_t)max_batch * (size_t)(k_out > per ? k_out : per) * sizeof *g->host);
    if (!g->host) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a batch of %d", max_batch);
        goto fail;
    }
    g->capacity = max_batch;
    *out = g;
    return CNN_OK;
fail:
    cnn_grad_destroy(g);
    return st;
}

int cnn_grad_capacity(const cnn_grad *g) { return g->capacity; }

cnn_net *cnn_grad_net(const cnn_grad *g) { return g->net; }

/* ---- passes ---------------------------------------------------------------------------------------------- */

static void set_batch(cnn_grad *g, int n)
{
    for (int i = 0; i < g->net->nlayers; i++)
        if (g->g[i]) g->g[i]->shape[0] = n;
    g->dinput->shape[0] = n;
}

cnn_status cnn_grad_forward(cnn_grad *g, const float *images, int n, float *logits, float *probs)
{
    cnn_net *net = g->net;
    cnn_status st = CNN_OK;
    if (n < 1 || n > g->capacity)
        return cnn_error(CNN_ERR_INVALID_ARG, "gradients: %d images for buffers of %d", n, g->capacity);
    g->n = 0;
    int h = (int)net->input.d[0], w = (int)net->input.d[1], c = (int)net->input.d[2], k = cnn_net_num_outputs(net);
    cnn_dataset view = {.n = n, .h = h, .w = w, .c = c, .images = (float *)images, .num_classes = k};
    CNN_TRY(cnn_net_stage_batch(net, &view, NULL, 0, n));
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        if (cnn_layer_is_view(l)) continue;
        const cnn_tensor *x[CNN_LAYER_MAX_INPUTS];
        int srcs[CNN_LAYER_MAX_INPUTS];
        for (int j = 0, ns = cnn_net_layer_sources(l, srcs); j < ns; j++)
            x[j] = srcs[j] < 0 ? net->input_t : net->acts[srcs[j]];
        l->step = net->step;
        /* max pooling's training variant keeps the argmax for backward; nothing else runs as in training */
        st = l->ops->forward(l, x, net->acts[i],
                             l->ops == &cnn_maxpool_layer_ops || l->ops == &cnn_globalmaxpool_layer_ops);
        if (st != CNN_OK)
            return cnn_error_prefix(st, "layer %s (%s line %d) forward: ", l->name, net->source, l->line);
    }
    set_batch(g, n);
    g->n = n;
    const cnn_tensor *y = net->acts[net->nlayers - 1];
    if (!logits && !probs) return CNN_OK;
    float *out = logits ? logits : g->host;
    CNN_TRY(cnn_tensor_read(y, out, (size_t)n * (size_t)k * sizeof(float)));
    for (int i = 0; probs && i < n; i++) { /* softmax in double, max-subtracted */
        const float *z = out + (size_t)i * k;
        double m = z[0], s = 0.0;
        for (int j = 1; j < k; j++) m = z[j] > m ? z[j] : m;
        for (int j = 0; j < k; j++) s += exp((double)z[j] - m);
        for (int j = 0; j < k; j++) probs[(size_t)i * k + j] = (float)(exp((double)z[j] - m) / s);
    }
fail:
    return st;
}

cnn_status cnn_grad_layer_output(cnn_grad *g, int layer, float *out)
{
    cnn_net *net = g->net;
    if (!g->n) return cnn_error(CNN_ERR_INVALID_ARG, "gradients: no forward pass yet");
    if (layer < 0 || layer >= net->nlayers)
        return cnn_error(CNN_ERR_NOT_FOUND, "gradients: no layer %d (the model has %d)", layer, net->nlayers);
    int64_t per = cnn_shape_elements(&net->layers[layer]->out);
    return cnn_tensor_read(net->acts[layer], out, (size_t)g->n * (size_t)per * sizeof(float));
}

/* Reads the gradient of layer `capture`'s output before its own backward overwrites it in place (the layers apply
 * their activation's gradient to dy). */
static cnn_status capture_grad(cnn_grad *g, int capture, float *dst)
{
    int r = cnn_net_view_root(g->net, capture);
    int64_t per = cnn_shape_elements(&g->net->layers[capture]->out);
    if (r < 0) return cnn_error(CNN_ERR_INVALID_ARG, "gradients: layer %s has no output of its own",
                                g->net->layers[capture]->name);
    return cnn_tensor_read(g->g[r], dst, (size_t)g->n * (size_t)per * sizeof(float));
}

static cnn_status backward(cnn_grad *g, int capture, float *layer_grad, char *written)
{
    cnn_net *net = g->net;
    cnn_backend *b = net->backend;
    cnn_status st = CNN_OK;
    const int nl = net->nlayers;
    if (capture >= 0 && cnn_net_view_root(net, capture) == cnn_net_view_root(net, nl - 1))
        CNN_TRY(capture_grad(g, capture, layer_grad));
    for (int i = nl - 1; i >= 0; i--) {
        cnn_layer *l = net->layers[i];
        if (cnn_layer_is_view(l) || !written[i]) continue; /* not written: no path to the logits, a zero gradient */
        if (capture >= 0 && i != cnn_net_view_root(net, nl - 1) && cnn_net_view_root(net, capture) == i)
            CNN_TRY(capture_grad(g, capture, layer_grad));
        const cnn_tensor *x[CNN_LAYER_MAX_INPUTS];
        cnn_tensor *dx[CNN_LAYER_MAX_INPUTS], part[CNN_LAYER_MAX_INPUTS];
        int srcs[CNN_LAYER_MAX_INPUTS], scratch_of[CNN_LAYER_MAX_INPUTS], used = 0;
        const int ns = cnn_net_layer_sources(l, srcs);
        for (int k = 0; k < ns; k++) {
            int r = cnn_net_view_root(net, srcs[k]);
            int slot = r < 0 ? nl : r; /* written[nl]: the input's gradient */
            x[k] = srcs[k] < 0 ? net->input_t : net->acts[srcs[k]];
            /* the source's gradient in its shape; the input's (or a view of it: flatten) in the input's memory */
            cnn_tensor *target = r < 0 ? &part[k] : g->g[srcs[k]];
            if (r < 0) part[k] = cnn_view_like(g->dinput, x[k]);
            scratch_of[k] = -1;
            if (!written[slot]) {
                written[slot] = 1;
                dx[k] = target;
            } else {
                scratch_of[k] = used;
                part[k] = cnn_view_like(g->scratch[used++], target);
                dx[k] = &part[k];
            }
        }
        l->infer_grad = 1;
        st = l->ops->backward(l, x, net->acts[i], g->g[i], dx);
        l->infer_grad = 0;
        for (int k = 0; st == CNN_OK && k < ns; k++) {
            if (scratch_of[k] < 0) continue;
            int r = cnn_net_view_root(net, srcs[k]);
            cnn_tensor *sum = r < 0 ? g->dinput : g->g[r];
            cnn_tensor p = cnn_view_like(&part[k], sum);
            cnn_add_args a = {.a = sum, .b = &p, .y = sum, .alpha = 1.0f, .beta = 1.0f};
            st = cnn_op_add(b, &a);
        }
        if (st != CNN_OK)
            return cnn_error_prefix(st, "layer %s (%s line %d) input gradient: ", l->name, net->source, l->line);
    }
fail:
    return st;
}

cnn_status cnn_grad_backward(cnn_grad *g, const float *dlogits, float *input_grad, int layer, float *layer_grad)
{
    cnn_net *net = g->net;
    cnn_status st = CNN_OK;
    const int nl = net->nlayers, k = cnn_net_num_outputs(net);
    char *written = NULL;
    if (!g->n) return cnn_error(CNN_ERR_INVALID_ARG, "gradients: backward needs a forward pass first");
    if (layer >= nl || (layer >= 0 && !layer_grad))
        return cnn_error(CNN_ERR_NOT_FOUND, "gradients: no layer %d (the model has %d)", layer, nl);
    if (layer >= 0 && cnn_net_view_root(net, layer) < 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "gradients: layer %s shows the network input", net->layers[layer]->name);
    const int n = g->n, last = cnn_net_view_root(net, nl - 1);
    if (last < 0) return cnn_error(CNN_ERR_INVALID_ARG, "gradients: %s has no layer to differentiate", net->source);
    written = calloc((size_t)nl + 1, 1);
    if (!written) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    written[last] = 1;
    if (layer >= 0) /* stays zero when the layer has no path to the logits */
        memset(layer_grad, 0, (size_t)n * (size_t)cnn_shape_elements(&net->layers[layer]->out) * sizeof *layer_grad);
    CNN_TRY(cnn_tensor_write(g->g[last], dlogits, (size_t)n * (size_t)k * sizeof(float)));
    CNN_TRY(backward(g, layer, layer_grad, written));
    if (input_grad) {
        const int c = (int)net->input.d[2];
        const size_t total = (size_t)n * (size_t)cnn_shape_elements(&net->input);
        if (!written[nl]) { /* nothing reaches the input (a network of views only) */
            memset(input_grad, 0, total * sizeof *input_grad);
        } else {
            CNN_TRY(cnn_tensor_read(g->dinput, input_grad, total * sizeof *input_grad));
            if (net->has_norm) /* x' = (x - mean) / std: dL/dx = dL/dx' / std */
                for (size_t j = 0; j < total; j++) input_grad[j] /= net->norm_std[j % (size_t)c];
        }
    }
fail:
    free(written);
    return st;
}
