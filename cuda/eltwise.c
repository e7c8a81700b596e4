/* Elementwise ops on the GPU: activations, softmax cross-entropy, the optimizers (per tensor, and over a list of
 * tensors in one kernel), fill and casts, dropout, add, scale, sums of squares (likewise), finiteness, channel
 * concatenation.
 *
 * The math lives in core/ew_math.h (shared with the CPU backend) and runs in our kernels (kernels.cu); this file
 * checks the arguments, as the CPU backend does, and queues the kernels on the compute stream. Activation-like
 * tensors may be F32, F16 or BF16 (the tensors of one op agree); see cuda_util.h for which tensors are F32 always. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/op_check.h"
#include "cuda/cuda_util.h"
#include "cuda/ops.h"

static cnn_status cnn_cuda_check_same_count(const cnn_tensor *t, const cnn_tensor *ref, const char *op,
                                            const char *name, const char *ref_name)
{
    if (cnn_tensor_numel(t) == cnn_tensor_numel(ref)) return CNN_OK;
    char s1[CNN_CUDA_SHAPE_BUF], s2[CNN_CUDA_SHAPE_BUF];
    return cnn_error(CNN_ERR_SHAPE, "cuda %s: %s %s must have as many elements as %s %s", op, name,
                     cnn_cuda_shape_str(t, s1, sizeof s1), ref_name, cnn_cuda_shape_str(ref, s2, sizeof s2));
}

/* t is a float tensor with ref's dtype and element count */
static cnn_status cnn_cuda_check_like(const cnn_tensor *t, const cnn_tensor *ref, const char *op, const char *name,
                                      const char *ref_name)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_cuda_check_float(t, op, name));
    CNN_TRY(cnn_cuda_check_dtype(t, ref->dtype, op, name, ref_name));
    CNN_TRY(cnn_cuda_check_same_count(t, ref, op, name, ref_name));
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// activations

cnn_status cnn_cuda_act_forward(cnn_backend *b, const cnn_act_args *a)
{
    static const char *op = "act_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_op_check_act(a->act, a->alpha, 0, "cuda ", op));
    CNN_TRY(cnn_cuda_check_float(a->x, op, "x"));
    CNN_TRY(cnn_cuda_check_like(a->y, a->x, op, "y", "x"));
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
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_op_check_act(a->act, a->alpha, 0, "cuda ", op));
    CNN_TRY(cnn_cuda_check_float(a->dy, op, "dy"));
    CNN_TRY(cnn_cuda_check_like(a->dx, a->dy, op, "dx", "dy"));
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
    CNN_TRY(cnn_cuda_check_like(xy, a->dy, op, from_x ? "x" : "y", "dy"));
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
    char s1[CNN_CUDA_SHAPE_BUF], s2[CNN_CUDA_SHAPE_BUF];
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_check_float(a->logits, op, "logits"));
    if (a->logits->ndim != 2)
        return cnn_error(CNN_ERR_SHAPE, "cuda %s: logits %s must be (N, K)", op,
                         cnn_cuda_shape_str(a->logits, s1, sizeof s1));
    const int64_t n = a->logits->shape[0], k = a->logits->shape[1];
    if (k < 1)
        return cnn_error(CNN_ERR_SHAPE, "cuda %s: logits %s have no classes", op,
                         cnn_cuda_shape_str(a->logits, s1, sizeof s1));
    if (!a->labels && (a->losses || a->dlogits))
        return cnn_error(CNN_ERR_INVALID_ARG,
                         "cuda %s: labels are missing (only probabilities can be computed without)", op);
    if (a->labels) {
        CNN_TRY(cnn_cuda_check_tensor(a->labels, op, "labels"));
        if (a->labels->dtype != CNN_I32)
            return cnn_error(CNN_ERR_UNSUPPORTED, "cuda %s: labels have dtype %s; they must be I32", op,
                             cnn_dtype_name(a->labels->dtype));
        if (a->labels->ndim != 1 || a->labels->shape[0] != n)
            return cnn_error(CNN_ERR_SHAPE, "cuda %s: labels %s must be (N) = (%lld) to match logits %s", op,
                             cnn_cuda_shape_str(a->labels, s1, sizeof s1), (long long)n,
                             cnn_cuda_shape_str(a->logits, s2, sizeof s2));
    }
    if (!(a->label_smoothing >= 0.0f && a->label_smoothing < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: label smoothing %g must be in [0, 1)", op,
                         (double)a->label_smoothing);
    int64_t nk[2] = {n, k}, n1[1] = {n}, k1[1] = {k};
    if (a->probs) {
        CNN_TRY(cnn_cuda_check_f32(a->probs, op, "probs"));
        CNN_TRY(cnn_cuda_check_shape(a->probs, 2, nk, op, "probs"));
    }
    if (a->dlogits) {
        CNN_TRY(cnn_cuda_check_float(a->dlogits, op, "dlogits"));
        CNN_TRY(cnn_cuda_check_dtype(a->dlogits, a->logits->dtype, op, "dlogits", "logits"));
        CNN_TRY(cnn_cuda_check_shape(a->dlogits, 2, nk, op, "dlogits"));
    }
    if (a->losses) {
        CNN_TRY(cnn_cuda_check_f32(a->losses, op, "losses"));
        CNN_TRY(cnn_cuda_check_shape(a->losses, 1, n1, op, "losses"));
    }
    if (a->class_weights) {
        CNN_TRY(cnn_cuda_check_f32(a->class_weights, op, "class_weights"));
        CNN_TRY(cnn_cuda_check_shape(a->class_weights, 1, k1, op, "class_weights"));
    }
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

static cnn_status cnn_cuda_opt_io_get(const cnn_tensor *param, const cnn_tensor *grad, const cnn_tensor *param_lp,
                                      float grad_scale, cnn_cuda_opt_io *io, const char *op)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_cuda_check_f32(param, op, "param"));
    CNN_TRY(cnn_cuda_check_float(grad, op, "grad"));
    CNN_TRY(cnn_cuda_check_same_count(grad, param, op, "grad", "param"));
    if (param_lp) {
        CNN_TRY(cnn_cuda_check_float(param_lp, op, "param_lp"));
        CNN_TRY(cnn_cuda_check_same_count(param_lp, param, op, "param_lp", "param"));
    }
    *io = (cnn_cuda_opt_io){.param = param->data,
                            .grad = grad->data,
                            .grad_dt = grad->dtype,
                            .param_lp = param_lp ? param_lp->data : NULL,
                            .lp_dt = param_lp ? param_lp->dtype : CNN_F32,
                            .n = cnn_tensor_numel(param),
                            .grad_scale = grad_scale};
fail:
    return st;
}

/* an optimizer's state buffer: F32 on the device, one value per element of param */
static cnn_status cnn_cuda_check_state(const cnn_tensor *t, const cnn_tensor *param, const char *op, const char *name)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_cuda_check_f32(t, op, name));
    CNN_TRY(cnn_cuda_check_same_count(t, param, op, name, "param"));
fail:
    return st;
}

/* a momentum buffer, which must be there when momentum is not 0 */
static cnn_status cnn_cuda_check_momentum_state(const cnn_tensor *t, float momentum, const cnn_tensor *param,
                                                const char *op, const char *name)
{
    if (momentum == 0.0f) return CNN_OK;
    if (!t)
        return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: momentum %g needs a %s tensor", op, (double)momentum, name);
    return cnn_cuda_check_state(t, param, op, name);
}

/* The checks of one update, shared by the per-tensor and the multi entries; *io: the tensor as the kernels see it. */
static cnn_status cnn_cuda_sgd_check(const cnn_sgd_args *a, cnn_cuda_opt_io *io, const char *op)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_cuda_opt_io_get(a->param, a->grad, a->param_lp, a->grad_scale, io, op));
    CNN_TRY(cnn_cuda_check_momentum_state(a->velocity, a->momentum, a->param, op, "velocity"));
fail:
    return st;
}

static cnn_status cnn_cuda_adam_check(const cnn_adam_args *a, cnn_cuda_opt_io *io, const char *op)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_cuda_opt_io_get(a->param, a->grad, a->param_lp, a->grad_scale, io, op));
    CNN_TRY(cnn_cuda_check_state(a->m, a->param, op, "m"));
    CNN_TRY(cnn_cuda_check_state(a->v, a->param, op, "v"));
    if (!(a->bias_correction1 > 0.0f) || !(a->bias_correction2 > 0.0f))
        return cnn_error(CNN_ERR_INVALID_ARG,
                         "cuda %s: bias corrections %g and %g must be > 0 (1 - beta^t with t >= 1)", op,
                         (double)a->bias_correction1, (double)a->bias_correction2);
fail:
    return st;
}

static cnn_status cnn_cuda_rmsprop_check(const cnn_rmsprop_args *a, cnn_cuda_opt_io *io, const char *op)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_cuda_opt_io_get(a->param, a->grad, a->param_lp, a->grad_scale, io, op));
    CNN_TRY(cnn_cuda_check_state(a->sq, a->param, op, "sq"));
    CNN_TRY(cnn_cuda_check_momentum_state(a->mom, a->momentum, a->param, op, "momentum buffer (mom)"));
    if (!(a->rho >= 0.0f && a->rho < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: rho %g must be in [0, 1)", op, (double)a->rho);
    if (!(a->eps > 0.0f)) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: eps %g must be positive", op, (double)a->eps);
fail:
    return st;
}

cnn_status cnn_cuda_sgd_update(cnn_backend *b, const cnn_sgd_args *a)
{
    static const char *op = "sgd_update";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_cuda_opt_io io;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_sgd_check(a, &io, op));
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
    cnn_cuda_opt_io io;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_adam_check(a, &io, op));
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
    cnn_cuda_opt_io io;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_rmsprop_check(a, &io, op));
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_rmsprop, ctx->compute, &io, a->sq->data,
                a->momentum != 0.0f ? a->mom->data : NULL, a->lr, a->rho, a->eps, a->momentum, a->weight_decay);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// optimizer updates over a list of tensors: every element checked as the per-tensor entries check it, then one
// kernel over a table of descriptors (kernels.h), kept on the device while the list stays the same

/* "sgd_update_multi list[12]": the op in the messages about one element */
#define CNN_CUDA_ELEMENT_OP_BUF 64

/* Tables are compared bytewise with the one on the device (cnn_cuda_table_put): no padding, whose bytes are
 * unspecified after a struct assignment. */
_Static_assert(sizeof(cnn_cuda_opt_desc) == 5 * sizeof(void *) + 2 * sizeof(int64_t) + 2 * sizeof(int),
               "cnn_cuda_opt_desc has padding");
_Static_assert(sizeof(cnn_cuda_sumsq_desc) == sizeof(void *) + 2 * sizeof(int64_t) + 2 * sizeof(int),
               "cnn_cuda_sumsq_desc has padding");

/* Checks one element (`args`, named `op`) and describes it for the kernels. */
typedef cnn_status (*cnn_cuda_desc_fn)(const void *args, const char *op, cnn_cuda_opt_desc *d);

static cnn_cuda_opt_desc cnn_cuda_desc_of(const cnn_cuda_opt_io *io, void *s1, void *s2)
{
    return (cnn_cuda_opt_desc){.param = io->param, .grad = io->grad, .param_lp = io->param_lp, .s1 = s1, .s2 = s2,
                               .n = io->n, .first = 0, .grad_dt = io->grad_dt, .lp_dt = io->lp_dt};
}

static cnn_status cnn_cuda_sgd_desc(const void *args, const char *op, cnn_cuda_opt_desc *d)
{
    const cnn_sgd_args *a = args;
    cnn_cuda_opt_io io;
    cnn_status st = cnn_cuda_sgd_check(a, &io, op);
    if (st == CNN_OK) *d = cnn_cuda_desc_of(&io, a->momentum != 0.0f ? a->velocity->data : NULL, NULL);
    return st;
}

static cnn_status cnn_cuda_adam_desc(const void *args, const char *op, cnn_cuda_opt_desc *d)
{
    const cnn_adam_args *a = args;
    cnn_cuda_opt_io io;
    cnn_status st = cnn_cuda_adam_check(a, &io, op);
    if (st == CNN_OK) *d = cnn_cuda_desc_of(&io, a->m->data, a->v->data);
    return st;
}

static cnn_status cnn_cuda_rmsprop_desc(const void *args, const char *op, cnn_cuda_opt_desc *d)
{
    const cnn_rmsprop_args *a = args;
    cnn_cuda_opt_io io;
    cnn_status st = cnn_cuda_rmsprop_check(a, &io, op);
    if (st == CNN_OK) *d = cnn_cuda_desc_of(&io, a->sq->data, a->momentum != 0.0f ? a->mom->data : NULL);
    return st;
}

/* The list (n elements `size` bytes apart) checked and described: on success the device table `*dev` holds
 * `*count` descriptors (the elements with data) covering `*blocks` blocks; *count == 0 leaves nothing to do.
 * *failed: the element that failed its check. */
static cnn_status cnn_cuda_opt_table_put(cnn_backend *b, const void *list, size_t size, int n, cnn_cuda_desc_fn desc,
                                         const char *op, cnn_cuda_ctx **ctx, const void **dev, int *count,
                                         int64_t *blocks, int *failed)
{
    cnn_status st = CNN_OK;
    char name[CNN_CUDA_ELEMENT_OP_BUF];
    *count = 0;
    *blocks = 0;
    cnn_cuda_opt_desc *table = malloc((size_t)n * sizeof *table);
    if (!table) return cnn_error(CNN_ERR_NO_MEMORY, "cuda %s: out of host memory for %d tensors", op, n);
    const unsigned char *base = list;
    for (int i = 0; i < n; i++) {
        cnn_cuda_opt_desc d;
        snprintf(name, sizeof name, "%s list[%d]", op, i);
        st = desc(base + (size_t)i * size, name, &d);
        if (st != CNN_OK) {
            *failed = i;
            goto fail;
        }
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
    CNN_TRY(cnn_sgd_multi_check(list, n, "cuda ", op, &bad));
    CNN_TRY(cnn_cuda_opt_table_put(b, list, sizeof *list, n, cnn_cuda_sgd_desc, op, &ctx, &dev, &count, &blocks, &bad));
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
    CNN_TRY(cnn_adam_multi_check(list, n, "cuda ", op, &bad));
    CNN_TRY(cnn_cuda_opt_table_put(b, list, sizeof *list, n, cnn_cuda_adam_desc, op, &ctx, &dev, &count, &blocks, &bad));
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
    CNN_TRY(cnn_rmsprop_multi_check(list, n, "cuda ", op, &bad));
    CNN_TRY(cnn_cuda_opt_table_put(b, list, sizeof *list, n, cnn_cuda_rmsprop_desc, op, &ctx, &dev, &count, &blocks,
                                   &bad));
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
    CNN_TRY(cnn_cuda_check_tensor(t, op, "tensor"));
    const int64_t n = cnn_tensor_numel(t);
    if (n == 0) return CNN_OK;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    if (value == 0.0f && !signbit(value)) {
        /* all-zero bytes are 0 in every dtype */
        CNN_CUDA_RT(op, cudaMemsetAsync, t->data, 0, cnn_tensor_bytes(t), ctx->compute);
        return CNN_OK;
    }
    if (t->dtype != CNN_F32 && t->dtype != CNN_F16 && t->dtype != CNN_BF16)
        return cnn_error(CNN_ERR_UNSUPPORTED, "cuda %s: filling a %s tensor with %g is not supported (only zero)", op,
                         cnn_dtype_name(t->dtype), (double)value);
    CNN_CUDA_RT(op, cnn_cuda_launch_fill, ctx->compute, t->data, t->dtype, n, value);
fail:
    return st;
}

cnn_status cnn_cuda_cast(cnn_backend *b, cnn_tensor *dst, const cnn_tensor *src)
{
    static const char *op = "cast";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    CNN_TRY(cnn_cuda_check_float(src, op, "src"));
    CNN_TRY(cnn_cuda_check_float(dst, op, "dst"));
    CNN_TRY(cnn_cuda_check_same_count(dst, src, op, "dst", "src"));
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
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    if (!(a->rate >= 0.0f && a->rate < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: rate %g must be in [0, 1)", op, (double)a->rate);
    const cnn_tensor *in = backward ? a->dy : a->x, *out = backward ? a->dx : a->y;
    CNN_TRY(cnn_cuda_check_float(in, op, backward ? "dy" : "x"));
    CNN_TRY(cnn_cuda_check_like(out, in, op, backward ? "dx" : "y", backward ? "dy" : "x"));
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
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_check_float(a->a, op, "a"));
    CNN_TRY(cnn_cuda_check_float(a->b, op, "b"));
    CNN_TRY(cnn_cuda_check_float(a->y, op, "y"));
    CNN_TRY(cnn_cuda_check_shape(a->b, a->a->ndim, a->a->shape, op, "b"));
    CNN_TRY(cnn_cuda_check_shape(a->y, a->a->ndim, a->a->shape, op, "y"));
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
    CNN_TRY(cnn_cuda_check_float(t, op, "x"));
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
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: out is NULL", op);
    *out = 0.0;
    CNN_TRY(cnn_cuda_check_float(t, op, "x"));
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
    char name[32];
    if (failed) *failed = -1;
    if (!ts || !out) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: %s is NULL", op, ts ? "out" : "ts");
    if (n < 1) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: n is %d; a list has at least 1 element", op, n);
    /* zeroed, padding included: the table is compared bytewise with the one on the device (cnn_cuda_table_put) */
    cnn_cuda_sumsq_desc *table = calloc((size_t)n, sizeof *table);
    if (!table) return cnn_error(CNN_ERR_NO_MEMORY, "cuda %s: out of host memory for %d tensors", op, n);
    int count = 0;
    int64_t chunks = 0;
    for (int i = 0; i < n; i++) {
        out[i] = 0.0; /* what an empty tensor keeps */
        snprintf(name, sizeof name, "ts[%d]", i);
        st = cnn_cuda_check_float(ts[i], op, name);
        if (st != CNN_OK) {
            if (failed) *failed = i;
            goto fail;
        }
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
    char name[32];
    if (!any || (n > 0 && !ts)) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: NULL argument", op);
    *any = 0;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "ts[%d]", i);
        CNN_TRY(cnn_cuda_check_float(ts[i], op, name));
    }
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

/* The whole, the shapes (core/op_check.c), then the dtype of every part that is touched. */
static cnn_status cnn_cuda_concat_check(const cnn_concat_args *a, int backward, int64_t *channels, int64_t *rows,
                                        const char *op)
{
    cnn_status st = CNN_OK;
    char name[32];
    const cnn_tensor *whole = backward ? a->dy : a->y;
    const char *whole_name = backward ? "dy" : "y";
    CNN_TRY(cnn_cuda_check_float(whole, op, whole_name));
    CNN_TRY(cnn_concat_check(a, backward, "cuda ", op, channels, rows));
    for (int i = 0; i < a->n; i++) {
        if (backward && !a->dxs[i]) continue;
        const cnn_tensor *part = backward ? a->dxs[i] : a->xs[i];
        snprintf(name, sizeof name, "%s[%d]", backward ? "dxs" : "xs", i);
        CNN_TRY(cnn_cuda_check_float(part, op, name));
        CNN_TRY(cnn_cuda_check_dtype(part, whole->dtype, op, name, whole_name));
    }
fail:
    return st;
}

static cnn_status cnn_cuda_concat_run(cnn_backend *b, const cnn_concat_args *a, int backward)
{
    const char *op = backward ? "concat_backward" : "concat_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    int64_t channels[CNN_CONCAT_MAX], rows = 0;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_concat_check(a, backward, channels, &rows, op));
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
