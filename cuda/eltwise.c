/* Elementwise ops on the GPU: activations, softmax cross-entropy, the optimizers (per tensor, and over a list of
 * tensors in one kernel), fill and casts, dropout, add, scale, sums of squares (likewise), finiteness, channel
 * concatenation.
 *
 * The math lives in core/ew_math.h (shared with the CPU backend) and runs in our kernels (kernels.cu); this file
 * queues the kernels on the compute stream, with the arguments core/ops.c has checked. Activation-like
 * tensors may be F32, F16 or BF16 (the tensors of one op agree); see cuda_util.h for which tensors are F32 always. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/op_check.h"
#include "cuda/cuda_util.h"
#include "cuda/ops.h"

// ---------------------------------------------------------------------------------------------------------------
// activations

cnn_status cnn_cuda_act_forward(cnn_backend *b, const cnn_act_args *a)
{
    static const char *op = "act_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_act_forward, ctx->compute, a->act, a->alpha, a->x->data, a->y->data, a->x->dtype,
                cnn_tensor_numel(a->x));
fail:
    return st;
}

cnn_status cnn_cuda_act_backward(cnn_backend *b, const cnn_act_args *a)
{
    static const char *op = "act_backward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const int64_t n = cnn_tensor_numel(a->dy);
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    if (a->act == CNN_ACT_NONE) {
        if (a->dx->data != a->dy->data && n > 0)
            CNN_CUDA_RT(op, cudaMemcpyAsync, a->dx->data, a->dy->data, cnn_tensor_bytes(a->dy),
                        cudaMemcpyDeviceToDevice, ctx->compute);
        return CNN_OK;
    }
    int from_x = cnn_act_grad_needs_input(a->act);
    const cnn_tensor *xy = from_x ? a->x : a->y;
    CNN_CUDA_RT(op, cnn_cuda_launch_act_backward, ctx->compute, a->act, a->alpha, from_x, xy->data, a->dy->data,
                a->dx->data, a->dy->dtype, n);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// softmax cross-entropy

cnn_status cnn_cuda_softmax_xent(cnn_backend *b, const cnn_softmax_xent_args *a)
{
    static const char *op = "softmax_xent";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const int64_t n = a->logits->shape[0], k = a->logits->shape[1];
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    /* labels and class weights live on the device: the kernel checks them, and a bad one is reported at the next
     * sync or read */
    CNN_CUDA_RT(op, cnn_cuda_launch_softmax_xent, ctx->compute, a->logits->data, a->logits->dtype,
                a->labels ? a->labels->data : NULL, n, k, a->probs ? a->probs->data : NULL,
                a->losses ? a->losses->data : NULL, a->dlogits ? a->dlogits->data : NULL, a->grad_scale,
                a->class_weights ? a->class_weights->data : NULL, a->label_smoothing, ctx->deferred_dev);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// optimizer updates: f32 master weights, a grad in any float dtype, optionally the 16-bit copy to rewrite

/* the tensors of one update as the kernels see them */
static cnn_cuda_opt_io cnn_cuda_opt_io_of(const cnn_tensor *param, const cnn_tensor *grad, const cnn_tensor *param_lp,
                                          float grad_scale)
{
    return (cnn_cuda_opt_io){.param = param->data,
                             .grad = grad->data,
                             .grad_dt = grad->dtype,
                             .param_lp = param_lp ? param_lp->data : NULL,
                             .lp_dt = param_lp ? param_lp->dtype : CNN_F32,
                             .n = cnn_tensor_numel(param),
                             .grad_scale = grad_scale};
}

cnn_status cnn_cuda_sgd_update(cnn_backend *b, const cnn_sgd_args *a)
{
    static const char *op = "sgd_update";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const cnn_cuda_opt_io io = cnn_cuda_opt_io_of(a->param, a->grad, a->param_lp, a->grad_scale);
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_sgd, ctx->compute, &io, a->momentum != 0.0f ? a->velocity->data : NULL, a->lr,
                a->momentum, a->weight_decay, a->nesterov);
fail:
    return st;
}

cnn_status cnn_cuda_adam_update(cnn_backend *b, const cnn_adam_args *a)
{
    static const char *op = "adam_update";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const cnn_cuda_opt_io io = cnn_cuda_opt_io_of(a->param, a->grad, a->param_lp, a->grad_scale);
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_adam, ctx->compute, &io, a->m->data, a->v->data, a->lr, a->beta1, a->beta2, a->eps,
                a->weight_decay, a->decoupled, a->bias_correction1, a->bias_correction2);
fail:
    return st;
}

cnn_status cnn_cuda_rmsprop_update(cnn_backend *b, const cnn_rmsprop_args *a)
{
    static const char *op = "rmsprop_update";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const cnn_cuda_opt_io io = cnn_cuda_opt_io_of(a->param, a->grad, a->param_lp, a->grad_scale);
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_rmsprop, ctx->compute, &io, a->sq->data,
                a->momentum != 0.0f ? a->mom->data : NULL, a->lr, a->rho, a->eps, a->momentum, a->weight_decay);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// optimizer updates over a list of tensors: every element checked as the per-tensor entries check it, then one
// kernel over a table of descriptors (kernels.h), kept on the device while the list stays the same

/* Tables are compared bytewise with the one on the device (cnn_cuda_table_put): no padding, whose bytes are
 * unspecified after a struct assignment. */
_Static_assert(sizeof(cnn_cuda_opt_desc) == 5 * sizeof(void *) + 2 * sizeof(int64_t) + 2 * sizeof(int),
               "cnn_cuda_opt_desc has padding");
_Static_assert(sizeof(cnn_cuda_sumsq_desc) == sizeof(void *) + 2 * sizeof(int64_t) + 2 * sizeof(int),
               "cnn_cuda_sumsq_desc has padding");

/* Describes one element (`args`) for the kernels. */
typedef cnn_cuda_opt_desc (*cnn_cuda_desc_fn)(const void *args);

static cnn_cuda_opt_desc cnn_cuda_desc_of(const cnn_cuda_opt_io *io, void *s1, void *s2)
{
    return (cnn_cuda_opt_desc){.param = io->param, .grad = io->grad, .param_lp = io->param_lp, .s1 = s1, .s2 = s2,
                               .n = io->n, .first = 0, .grad_dt = io->grad_dt, .lp_dt = io->lp_dt};
}

static cnn_cuda_opt_desc cnn_cuda_sgd_desc(const void *args)
{
    const cnn_sgd_args *a = args;
    const cnn_cuda_opt_io io = cnn_cuda_opt_io_of(a->param, a->grad, a->param_lp, a->grad_scale);
    return cnn_cuda_desc_of(&io, a->momentum != 0.0f ? a->velocity->data : NULL, NULL);
}

static cnn_cuda_opt_desc cnn_cuda_adam_desc(const void *args)
{
    const cnn_adam_args *a = args;
    const cnn_cuda_opt_io io = cnn_cuda_opt_io_of(a->param, a->grad, a->param_lp, a->grad_scale);
    return cnn_cuda_desc_of(&io, a->m->data, a->v->data);
}

static cnn_cuda_opt_desc cnn_cuda_rmsprop_desc(const void *args)
{
    const cnn_rmsprop_args *a = args;
    const cnn_cuda_opt_io io = cnn_cuda_opt_io_of(a->param, a->grad, a->param_lp, a->grad_scale);
    return cnn_cuda_desc_of(&io, a->sq->data, a->momentum != 0.0f ? a->mom->data : NULL);
}

/* The list (n elements `size` bytes apart, checked by core/ops.c) described: on success the device table `*dev`
 * holds `*count` descriptors (the elements with data) covering `*blocks` blocks; *count == 0 leaves nothing to do. */
static cnn_status cnn_cuda_opt_table_put(cnn_backend *b, const void *list, size_t size, int n, cnn_cuda_desc_fn desc,
                                         const char *op, cnn_cuda_ctx **ctx, const void **dev, int *count,
                                         int64_t *blocks)
{
    cnn_status st = CNN_OK;
    *count = 0;
    *blocks = 0;
    cnn_cuda_opt_desc *table = malloc((size_t)n * sizeof *table);
    if (!table) return cnn_error(CNN_ERR_NO_MEMORY, "cuda %s: out of host memory for %d tensors", op, n);
    const unsigned char *base = list;
    for (int i = 0; i < n; i++) {
        cnn_cuda_opt_desc d = desc(base + (size_t)i * size);
        if (d.n == 0) continue;
        d.first = *blocks;
        *blocks += (d.n + CNN_CUDA_MULTI_CHUNK - 1) / CNN_CUDA_MULTI_CHUNK;
        table[(*count)++] = d;
    }
    if (*count > 0) {
        CNN_TRY(cnn_cuda_enter(b, ctx, op));
        CNN_TRY(cnn_cuda_table_put(*ctx, &(*ctx)->opt_table, table, (size_t)*count * sizeof *table, dev, op));
    }
fail:
    if (st != CNN_OK) *count = 0;
    free(table);
    return st;
}

cnn_status cnn_cuda_sgd_update_multi(cnn_backend *b, const cnn_sgd_args *list, int n, int *failed)
{
    static const char *op = "sgd_update_multi";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const void *dev = NULL;
    int bad = -1, count = 0;
    int64_t blocks = 0;
    CNN_TRY(cnn_cuda_opt_table_put(b, list, sizeof *list, n, cnn_cuda_sgd_desc, op, &ctx, &dev, &count, &blocks));
    const cnn_sgd_args *a = &list[0]; /* the hyperparameters of every element */
    if (count > 0)
        CNN_CUDA_RT(op, cnn_cuda_launch_sgd_multi, ctx->compute, dev, count, blocks, a->grad_scale, a->lr, a->momentum,
                    a->weight_decay, a->nesterov);
fail:
    if (failed) *failed = bad;
    return st;
}

cnn_status cnn_cuda_adam_update_multi(cnn_backend *b, const cnn_adam_args *list, int n, int *failed)
{
    static const char *op = "adam_update_multi";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const void *dev = NULL;
    int bad = -1, count = 0;
    int64_t blocks = 0;
    CNN_TRY(cnn_cuda_opt_table_put(b, list, sizeof *list, n, cnn_cuda_adam_desc, op, &ctx, &dev, &count, &blocks));
    const cnn_adam_args *a = &list[0];
    if (count > 0)
        CNN_CUDA_RT(op, cnn_cuda_launch_adam_multi, ctx->compute, dev, count, blocks, a->grad_scale, a->lr, a->beta1,
                    a->beta2, a->eps, a->weight_decay, a->decoupled, a->bias_correction1, a->bias_correction2);
fail:
    if (failed) *failed = bad;
    return st;
}

cnn_status cnn_cuda_rmsprop_update_multi(cnn_backend *b, const cnn_rmsprop_args *list, int n, int *failed)
{
    static const char *op = "rmsprop_update_multi";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const void *dev = NULL;
    int bad = -1, count = 0;
    int64_t blocks = 0;
    CNN_TRY(cnn_cuda_opt_table_put(b, list, sizeof *list, n, cnn_cuda_rmsprop_desc, op, &ctx, &dev, &count, &blocks));
    const cnn_rmsprop_args *a = &list[0];
    if (count > 0)
        CNN_CUDA_RT(op, cnn_cuda_launch_rmsprop_multi, ctx->compute, dev, count, blocks, a->grad_scale, a->lr, a->rho,
                    a->eps, a->momentum, a->weight_decay);
fail:
    if (failed) *failed = bad;
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// fill, cast

cnn_status cnn_cuda_fill(cnn_backend *b, cnn_tensor *t, float value)
{
    static const char *op = "fill";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const int64_t n = cnn_tensor_numel(t);
    if (n == 0) return CNN_OK;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    if (value == 0.0f && !signbit(value)) {
        /* all-zero bytes are 0 in every dtype */
        CNN_CUDA_RT(op, cudaMemsetAsync, t->data, 0, cnn_tensor_bytes(t), ctx->compute);
        return CNN_OK;
    }
    CNN_CUDA_RT(op, cnn_cuda_launch_fill, ctx->compute, t->data, t->dtype, n, value);
fail:
    return st;
}

cnn_status cnn_cuda_cast(cnn_backend *b, cnn_tensor *dst, const cnn_tensor *src)
{
    static const char *op = "cast";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    if (dst->dtype == src->dtype) {
        if (dst->data != src->data && cnn_tensor_numel(src) > 0)
            CNN_CUDA_RT(op, cudaMemcpyAsync, dst->data, src->data, cnn_tensor_bytes(src), cudaMemcpyDeviceToDevice,
                        ctx->compute);
        return CNN_OK;
    }
    CNN_CUDA_RT(op, cnn_cuda_launch_cast, ctx->compute, src->data, src->dtype, dst->data, dst->dtype,
                cnn_tensor_numel(src));
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// dropout, add, scale, sum of squares, finiteness

static cnn_status cnn_cuda_dropout_run(cnn_backend *b, const cnn_dropout_args *a, int backward)
{
    const char *op = backward ? "dropout_backward" : "dropout_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const cnn_tensor *in = backward ? a->dy : a->x, *out = backward ? a->dx : a->y;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    /* the mask is recomputed from (seed, offset): backward is the same map as forward */
    CNN_CUDA_RT(op, cnn_cuda_launch_dropout, ctx->compute, in->data, out->data, in->dtype, cnn_tensor_numel(in),
                a->rate, a->seed, a->offset);
fail:
    return st;
}

cnn_status cnn_cuda_dropout_forward(cnn_backend *b, const cnn_dropout_args *a) { return cnn_cuda_dropout_run(b, a, 0); }
cnn_status cnn_cuda_dropout_backward(cnn_backend *b, const cnn_dropout_args *a) { return cnn_cuda_dropout_run(b, a, 1); }

/* a, b and y may each be F32, F16 or BF16 (L2 penalties add f32 weights into 16-bit gradients) */
cnn_status cnn_cuda_add(cnn_backend *b, const cnn_add_args *a)
{
    static const char *op = "add";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_add, ctx->compute, a->a->data, a->a->dtype, a->b->data, a->b->dtype, a->y->data,
                a->y->dtype, cnn_tensor_numel(a->y), a->alpha, a->beta);
fail:
    return st;
}

cnn_status cnn_cuda_scale(cnn_backend *b, cnn_tensor *t, float alpha)
{
    static const char *op = "scale";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_scale, ctx->compute, t->data, t->dtype, cnn_tensor_numel(t), alpha);
fail:
    return st;
}

cnn_status cnn_cuda_sum_squares(cnn_backend *b, const cnn_tensor *t, double *out)
{
    static const char *op = "sum_squares";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    double *host = NULL;
    *out = 0.0;
    const int64_t n = cnn_tensor_numel(t);
    if (n == 0) return CNN_OK;
    const int64_t chunks = (n + CNN_CUDA_SUMSQ_CHUNK - 1) / CNN_CUDA_SUMSQ_CHUNK;
    const size_t bytes = (size_t)chunks * sizeof(double);
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_TRY(cnn_cuda_workspace(ctx, bytes, op));
    host = malloc(bytes);
    if (!host)
        return cnn_error(CNN_ERR_NO_MEMORY, "cuda %s: out of host memory for %lld partial sums", op,
                         (long long)chunks);
    CNN_CUDA_RT(op, cnn_cuda_launch_sum_squares, ctx->compute, t->data, t->dtype, n, ctx->workspace);
    CNN_CUDA_RT(op, cudaMemcpyAsync, host, ctx->workspace, bytes, cudaMemcpyDeviceToHost, ctx->compute);
    CNN_CUDA_RT(op, cudaStreamSynchronize, ctx->compute);
    CNN_TRY(cnn_cuda_check_deferred(ctx));
    /* the partials are fixed by the data, and added in order: the result is reproducible */
    double s = 0.0;
    for (int64_t k = 0; k < chunks; k++) s += host[k];
    *out = s;
fail:
    free(host);
    return st;
}

/* out[i] for the tensors of `table` (count >= 1 of them, `chunks` chunks in all), which are those of ts[0..n) with
 * elements, in order: one kernel over every chunk, one copy of the partials, one wait; each tensor's partials are
 * then added in order, as cnn_cuda_sum_squares adds them. */
static cnn_status cnn_cuda_sum_squares_table(cnn_backend *b, const cnn_cuda_sumsq_desc *table, int count,
                                             int64_t chunks, const cnn_tensor *const *ts, int n, double *out,
                                             const char *op)
{
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    const void *dev = NULL;
    const size_t bytes = (size_t)chunks * sizeof(double);
    double *host = malloc(bytes);
    if (!host)
        return cnn_error(CNN_ERR_NO_MEMORY, "cuda %s: out of host memory for %lld partial sums", op, (long long)chunks);
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_TRY(cnn_cuda_workspace(ctx, bytes, op));
    CNN_TRY(cnn_cuda_table_put(ctx, &ctx->sumsq_table, table, (size_t)count * sizeof *table, &dev, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_sum_squares_multi, ctx->compute, dev, count, chunks, ctx->workspace);
    CNN_CUDA_RT(op, cudaMemcpyAsync, host, ctx->workspace, bytes, cudaMemcpyDeviceToHost, ctx->compute);
    CNN_CUDA_RT(op, cudaStreamSynchronize, ctx->compute);
    CNN_TRY(cnn_cuda_check_deferred(ctx));
    for (int i = 0, d = 0; i < n; i++) {
        if (cnn_tensor_numel(ts[i]) == 0) continue;
        const int64_t end = d + 1 < count ? table[d + 1].first : chunks;
        double s = 0.0;
        for (int64_t k = table[d].first; k < end; k++) s += host[k];
        out[i] = s;
        d++;
    }
fail:
    free(host);
    return st;
}

cnn_status cnn_cuda_sum_squares_multi(cnn_backend *b, const cnn_tensor *const *ts, int n, double *out, int *failed)
{
    static const char *op = "sum_squares_multi";
    cnn_status st = CNN_OK;
    if (failed) *failed = -1;
    /* zeroed, padding included: the table is compared bytewise with the one on the device (cnn_cuda_table_put) */
    cnn_cuda_sumsq_desc *table = calloc((size_t)n, sizeof *table);
    if (!table) return cnn_error(CNN_ERR_NO_MEMORY, "cuda %s: out of host memory for %d tensors", op, n);
    int count = 0;
    int64_t chunks = 0;
    for (int i = 0; i < n; i++) {
        out[i] = 0.0; /* what an empty tensor keeps */
        const int64_t k = cnn_tensor_numel(ts[i]);
        if (k == 0) continue;
        cnn_cuda_sumsq_desc *d = &table[count++];
        d->x = ts[i]->data;
        d->n = k;
        d->first = chunks;
        d->dt = ts[i]->dtype;
        chunks += (k + CNN_CUDA_SUMSQ_CHUNK - 1) / CNN_CUDA_SUMSQ_CHUNK;
    }
    if (count > 0) CNN_TRY(cnn_cuda_sum_squares_table(b, table, count, chunks, ts, n, out, op));
fail:
    free(table);
    return st;
}

/* One kernel per tensor into one host-mapped flag, then one wait. */
cnn_status cnn_cuda_nonfinite(cnn_backend *b, const cnn_tensor *const *ts, int n, int *any)
{
    static const char *op = "nonfinite";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    *any = 0;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    *(volatile int *)ctx->nonfinite = 0;
    for (int i = 0; i < n; i++)
        CNN_CUDA_RT(op, cnn_cuda_launch_nonfinite, ctx->compute, ts[i]->data, ts[i]->dtype, cnn_tensor_numel(ts[i]),
                    ctx->nonfinite_dev);
    CNN_CUDA_RT(op, cudaStreamSynchronize, ctx->compute);
    CNN_TRY(cnn_cuda_check_deferred(ctx));
    *any = *(volatile int *)ctx->nonfinite != 0;
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// channel concatenation

static cnn_status cnn_cuda_concat_run(cnn_backend *b, const cnn_concat_args *a, int backward)
{
    const char *op = backward ? "concat_backward" : "concat_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    int64_t channels[CNN_CONCAT_MAX], rows = 0;
    cnn_concat_parts(a, backward, channels, &rows); /* checked by core/ops.c */
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    const cnn_tensor *whole = backward ? a->dy : a->y;
    const int64_t width = whole->shape[whole->ndim - 1];
    int64_t start = 0;
    for (int i = 0; i < a->n; i++) {
        const int64_t at = start;
        start += channels[i];
        if (backward && !a->dxs[i]) continue;
        void *part = backward ? a->dxs[i]->data : a->xs[i]->data;
        CNN_CUDA_RT(op, cnn_cuda_launch_concat_part, ctx->compute, whole->data, part, whole->dtype, rows, width,
                    channels[i], at, !backward);
    }
fail:
    return st;
}

cnn_status cnn_cuda_concat_forward(cnn_backend *b, const cnn_concat_args *a) { return cnn_cuda_concat_run(b, a, 0); }
cnn_status cnn_cuda_concat_backward(cnn_backend *b, const cnn_concat_args *a) { return cnn_cuda_concat_run(b, a, 1); }
