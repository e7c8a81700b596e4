/* Elementwise ops on the GPU: activations, softmax cross-entropy, optimizer updates, fill.
 *
 * The math lives in core/ew_math.h (shared with the CPU backend) and runs in our kernels (kernels.cu); this file
 * checks the arguments, as the CPU backend does, and queues the kernels on the compute stream. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cuda/cuda_util.h"

static cnn_status cnn_cuda_check_same_count(const cnn_tensor *t, const cnn_tensor *ref, const char *op,
                                            const char *name, const char *ref_name)
{
    if (cnn_tensor_numel(t) == cnn_tensor_numel(ref)) return CNN_OK;
    char s1[CNN_CUDA_SHAPE_BUF], s2[CNN_CUDA_SHAPE_BUF];
    return cnn_error(CNN_ERR_SHAPE, "cuda %s: %s %s must have as many elements as %s %s", op, name,
                     cnn_cuda_shape_str(t, s1, sizeof s1), ref_name, cnn_cuda_shape_str(ref, s2, sizeof s2));
}

// ---------------------------------------------------------------------------------------------------------------
// activations

cnn_status cnn_cuda_act_forward(cnn_backend *b, const cnn_act_args *a)
{
    static const char *op = "act_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    if ((unsigned)a->act >= CNN_ACT_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: unknown activation %d", op, (int)a->act);
    CNN_TRY(cnn_cuda_check_f32(a->x, op, "x"));
    CNN_TRY(cnn_cuda_check_f32(a->y, op, "y"));
    CNN_TRY(cnn_cuda_check_same_count(a->y, a->x, op, "y", "x"));
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_act_forward, ctx->compute, a->act, a->alpha, a->x->data, a->y->data,
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
    if ((unsigned)a->act >= CNN_ACT_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: unknown activation %d", op, (int)a->act);
    CNN_TRY(cnn_cuda_check_f32(a->dy, op, "dy"));
    CNN_TRY(cnn_cuda_check_f32(a->dx, op, "dx"));
    CNN_TRY(cnn_cuda_check_same_count(a->dx, a->dy, op, "dx", "dy"));
    const int64_t n = cnn_tensor_numel(a->dy);
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    if (a->act == CNN_ACT_NONE) {
        if (a->dx->data != a->dy->data && n > 0)
            CNN_CUDA_RT(op, cudaMemcpyAsync, a->dx->data, a->dy->data, (size_t)n * sizeof(float),
                        cudaMemcpyDeviceToDevice, ctx->compute);
        return CNN_OK;
    }
    int from_x = cnn_act_grad_needs_input(a->act);
    const cnn_tensor *xy = from_x ? a->x : a->y;
    CNN_TRY(cnn_cuda_check_f32(xy, op, from_x ? "x" : "y"));
    CNN_TRY(cnn_cuda_check_same_count(xy, a->dy, op, from_x ? "x" : "y", "dy"));
    CNN_CUDA_RT(op, cnn_cuda_launch_act_backward, ctx->compute, a->act, a->alpha, from_x, xy->data, a->dy->data,
                a->dx->data, n);
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
    CNN_TRY(cnn_cuda_check_f32(a->logits, op, "logits"));
    if (a->logits->ndim != 2)
        return cnn_error(CNN_ERR_SHAPE, "cuda %s: logits %s must be (N, K)", op,
                         cnn_cuda_shape_str(a->logits, s1, sizeof s1));
    const int64_t n = a->logits->shape[0], k = a->logits->shape[1];
    if (k < 1)
        return cnn_error(CNN_ERR_SHAPE, "cuda %s: logits %s have no classes", op,
                         cnn_cuda_shape_str(a->logits, s1, sizeof s1));
    CNN_TRY(cnn_cuda_check_tensor(a->labels, op, "labels"));
    if (a->labels->dtype != CNN_I32)
        return cnn_error(CNN_ERR_UNSUPPORTED, "cuda %s: labels have dtype %s; they must be I32", op,
                         cnn_dtype_name(a->labels->dtype));
    if (a->labels->ndim != 1 || a->labels->shape[0] != n)
        return cnn_error(CNN_ERR_SHAPE, "cuda %s: labels %s must be (N) = (%lld) to match logits %s", op,
                         cnn_cuda_shape_str(a->labels, s1, sizeof s1), (long long)n,
                         cnn_cuda_shape_str(a->logits, s2, sizeof s2));
    int64_t nk[2] = {n, k}, n1[1] = {n};
    if (a->probs) {
        CNN_TRY(cnn_cuda_check_f32(a->probs, op, "probs"));
        CNN_TRY(cnn_cuda_check_shape(a->probs, 2, nk, op, "probs"));
    }
    if (a->dlogits) {
        CNN_TRY(cnn_cuda_check_f32(a->dlogits, op, "dlogits"));
        CNN_TRY(cnn_cuda_check_shape(a->dlogits, 2, nk, op, "dlogits"));
    }
    if (a->losses) {
        CNN_TRY(cnn_cuda_check_f32(a->losses, op, "losses"));
        CNN_TRY(cnn_cuda_check_shape(a->losses, 1, n1, op, "losses"));
    }
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    /* the labels live on the device: the kernel checks them and a bad one is reported at the next sync or read */
    CNN_CUDA_RT(op, cnn_cuda_launch_softmax_xent, ctx->compute, a->logits->data, a->labels->data, n, k,
                a->probs ? a->probs->data : NULL, a->losses ? a->losses->data : NULL,
                a->dlogits ? a->dlogits->data : NULL, a->grad_scale, ctx->deferred_dev);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// optimizer updates

cnn_status cnn_cuda_sgd_update(cnn_backend *b, const cnn_sgd_args *a)
{
    static const char *op = "sgd_update";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_check_f32(a->param, op, "param"));
    CNN_TRY(cnn_cuda_check_f32(a->grad, op, "grad"));
    CNN_TRY(cnn_cuda_check_same_count(a->grad, a->param, op, "grad", "param"));
    if (a->momentum != 0.0f) {
        if (!a->velocity)
            return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: momentum %g needs a velocity tensor", op,
                             (double)a->momentum);
        CNN_TRY(cnn_cuda_check_f32(a->velocity, op, "velocity"));
        CNN_TRY(cnn_cuda_check_same_count(a->velocity, a->param, op, "velocity", "param"));
    }
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_sgd, ctx->compute, a->param->data, a->grad->data,
                a->momentum != 0.0f ? a->velocity->data : NULL, cnn_tensor_numel(a->param), a->lr, a->momentum,
                a->weight_decay, a->nesterov, a->grad_scale);
fail:
    return st;
}

cnn_status cnn_cuda_adam_update(cnn_backend *b, const cnn_adam_args *a)
{
    static const char *op = "adam_update";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_check_f32(a->param, op, "param"));
    CNN_TRY(cnn_cuda_check_f32(a->grad, op, "grad"));
    CNN_TRY(cnn_cuda_check_f32(a->m, op, "m"));
    CNN_TRY(cnn_cuda_check_f32(a->v, op, "v"));
    CNN_TRY(cnn_cuda_check_same_count(a->grad, a->param, op, "grad", "param"));
    CNN_TRY(cnn_cuda_check_same_count(a->m, a->param, op, "m", "param"));
    CNN_TRY(cnn_cuda_check_same_count(a->v, a->param, op, "v", "param"));
    if (!(a->bias_correction1 > 0.0f) || !(a->bias_correction2 > 0.0f))
        return cnn_error(CNN_ERR_INVALID_ARG,
                         "cuda %s: bias corrections %g and %g must be > 0 (1 - beta^t with t >= 1)", op,
                         (double)a->bias_correction1, (double)a->bias_correction2);
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_adam, ctx->compute, a->param->data, a->grad->data, a->m->data, a->v->data,
                cnn_tensor_numel(a->param), a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, a->decoupled,
                a->bias_correction1, a->bias_correction2, a->grad_scale);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// fill

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
    if (t->dtype != CNN_F32)
        return cnn_error(CNN_ERR_UNSUPPORTED, "cuda %s: filling a %s tensor with %g is not supported (only zero)", op,
                         cnn_dtype_name(t->dtype), (double)value);
    CNN_CUDA_RT(op, cnn_cuda_launch_fill, ctx->compute, t->data, n, value);
fail:
    return st;
}
