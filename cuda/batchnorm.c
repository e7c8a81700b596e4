/* Batch normalization on the GPU with PyTorch's semantics, as our own kernels (kernels.cu), with the CPU
 * backend's expressions (cpu/batchnorm.c): per-channel sums in double over fixed row chunks (deterministic, no
 * atomics), the unbiased variance for the running statistics, and a residual (the add that ends a residual block)
 * and an activation whose gradient needs no input applied in the same pass.
 *
 * Training forward reads x twice: once for the statistics, once to normalize. The statistics pass sums d = x - k
 * and d^2 together in double, k being the channel's value in x's first row; then mean = k + sum d / m and
 * var = sum d^2 / m - (sum d / m)^2, clamped at 0. The subtraction cancels about log2(1 + (mean - k)^2 / var) of
 * the 53 bits of a double: even at |mean - k| = 10^4 std some 26 bits remain, more than the f32 result keeps.
 * Unshifted (k = 0) the same bound holds with |mean| / std, so double accumulation alone is safe unless that ratio
 * is astronomically large; the shift (Chan, Golub & LeVeque 1983, as the CPU backend does) ties the bound to how
 * far the first row lies from the mean instead, for one extra load per column and chunk.
 *
 * Why our own kernels rather than cuDNN's batch normalization: they run exactly the CPU backend's expressions
 * with reductions in a fixed order (deterministic), fuse every activation whose gradient needs no input (cuDNN's
 * fuses ReLU only), and these passes are memory bound either way.
 *
 * Scratch lives in the backend's workspace: the partial sums, then per-channel doubles and floats. */
#include <stdint.h>
#include <string.h>

#include "core/op_check.h"
#include "cuda/cuda_util.h"
#include "cuda/ops.h"

/* Per-channel scratch after the partial sums: 3 arrays of doubles (forward: the shifted sum and sum of squares;
 * backward: center, sum of dy, sum of dy (x - center)), then 5 of floats (forward: scale, shift, center;
 * backward: invstd and the 4 x c dx coefficients). */
#define CNN_CUDA_BN_DOUBLES 3
#define CNN_CUDA_BN_FLOATS 5
typedef struct cnn_cuda_bn_scratch_layout {
    double *partial;
    double *d0, *d1, *d2;
    float *f; /* CNN_CUDA_BN_FLOATS x c */
} cnn_cuda_bn_scratch_layout;

static cnn_status cnn_cuda_bn_scratch_get(cnn_cuda_ctx *ctx, int64_t m, int64_t c, cnn_cuda_bn_scratch_layout *s,
                                          const char *op)
{
    cnn_status st = CNN_OK;
    const size_t partial = (size_t)cnn_cuda_bn_scratch(m, c) * sizeof(double);
    const size_t per_channel = CNN_CUDA_BN_DOUBLES * sizeof(double) + CNN_CUDA_BN_FLOATS * sizeof(float);
    const size_t bytes = partial + (size_t)c * per_channel;
    CNN_TRY(cnn_cuda_workspace(ctx, bytes, op));
    char *p = ctx->workspace;
    s->partial = (double *)p;
    s->d0 = (double *)(p + partial);
    s->d1 = s->d0 + c;
    s->d2 = s->d1 + c;
    s->f = (float *)(s->d2 + c);
fail:
    return st;
}

/* The prologue of both directions: the sizes, then the context and the scratch. *ctx stays NULL when there is
 * nothing to compute (x is empty). */
static cnn_status cnn_cuda_bn_begin(cnn_backend *b, const cnn_batchnorm_args *a, cnn_cuda_ctx **ctx,
                                    int64_t *m, int64_t *c, cnn_cuda_bn_scratch_layout *s, const char *op)
{
    cnn_status st = CNN_OK;
    *ctx = NULL;
    cnn_batchnorm_dims(a, m, c); /* checked by core/ops.c */
    if (*m * *c == 0) return CNN_OK;
    CNN_TRY(cnn_cuda_enter(b, ctx, op));
    CNN_TRY(cnn_cuda_bn_scratch_get(*ctx, *m, *c, s, op));
fail:
    return st;
}

static float *cnn_cuda_bn_data(const cnn_tensor *t) { return t ? (float *)t->data : NULL; }

cnn_status cnn_cuda_batchnorm_forward(cnn_backend *b, const cnn_batchnorm_args *a)
{
    static const char *op = "batchnorm_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_cuda_bn_scratch_layout s = {0};
    int64_t m = 0, c = 0;
    CNN_TRY(cnn_cuda_bn_begin(b, a, &ctx, &m, &c, &s, op));
    if (!ctx) return CNN_OK; /* x is empty */
    double *sum = s.d0, *sq = s.d1; /* of x shifted by its first row */
    float *scale = s.f, *shift = s.f + c, *center = s.f + 2 * c;
    const void *x = a->x->data;
    const int dt = a->x->dtype;
    if (a->training)
        CNN_CUDA_RT(op, cnn_cuda_launch_bn_reduce, ctx->compute, CNN_CUDA_BN_SHIFTED_MOMENTS, x, NULL, NULL,
                    CNN_ACT_NONE, 0.0f, NULL, dt, NULL, m, c, sum, sq, s.partial);
    float *rm = cnn_cuda_bn_data(a->running_mean), *rv = cnn_cuda_bn_data(a->running_var);
    CNN_CUDA_RT(op, cnn_cuda_launch_bn_forward_coef, ctx->compute, a->training, x, dt, sum, sq, m, c, rm, rv,
                cnn_cuda_bn_data(a->gamma), cnn_cuda_bn_data(a->beta), a->eps, a->momentum, a->training ? rm : NULL,
                a->training ? rv : NULL, cnn_cuda_bn_data(a->save_mean), cnn_cuda_bn_data(a->save_invstd), scale,
                shift, center);
    CNN_CUDA_RT(op, cnn_cuda_launch_bn_apply, ctx->compute, x, a->residual ? a->residual->data : NULL, a->y->data,
                dt, m, c, center, scale, shift, a->act, a->act_alpha);
fail:
    return st;
}

cnn_status cnn_cuda_batchnorm_backward(cnn_backend *b, const cnn_batchnorm_args *a)
{
    static const char *op = "batchnorm_backward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_cuda_bn_scratch_layout s = {0};
    int64_t m = 0, c = 0;
    CNN_TRY(cnn_cuda_bn_begin(b, a, &ctx, &m, &c, &s, op));
    if (!ctx) return CNN_OK; /* x is empty */
    double *center = s.d0, *sum_dy = s.d1, *sum_dy_xc = s.d2;
    float *invstd = s.f, *coef = s.f + c; /* coef: 4 x c */
    const void *x = a->x->data, *dy = a->dy->data, *y = a->act == CNN_ACT_NONE ? NULL : a->y->data;
    void *dres = a->dresidual ? a->dresidual->data : NULL;
    const int dt = a->x->dtype;
    CNN_CUDA_RT(op, cnn_cuda_launch_bn_backward_stats, ctx->compute, a->training, cnn_cuda_bn_data(a->save_mean),
                cnn_cuda_bn_data(a->save_invstd), cnn_cuda_bn_data(a->running_mean),
                cnn_cuda_bn_data(a->running_var), a->eps, c, center, invstd);
    /* the activation's gradient g = act'(y) dy inside the sums (stored into dresidual when asked) and the dx pass,
     * with no pass of its own */
    CNN_CUDA_RT(op, cnn_cuda_launch_bn_reduce, ctx->compute, CNN_CUDA_BN_GRAD, x, dy, y, a->act, a->act_alpha, dres,
                dt, center, m, c, sum_dy, sum_dy_xc, s.partial);
    CNN_CUDA_RT(op, cnn_cuda_launch_bn_backward_coef, ctx->compute, a->training, sum_dy, sum_dy_xc, center, invstd,
                cnn_cuda_bn_data(a->gamma), m, c, cnn_cuda_bn_data(a->dgamma), cnn_cuda_bn_data(a->dbeta), coef);
    /* g once more, or as the sums stored it in dresidual; every input of dx went into the sums above, so dx may
     * alias dy */
    if (a->dx && dres)
        CNN_CUDA_RT(op, cnn_cuda_launch_bn_dx, ctx->compute, x, dres, NULL, CNN_ACT_NONE, 0.0f, a->dx->data, dt, m,
                    c, coef);
    else if (a->dx)
        CNN_CUDA_RT(op, cnn_cuda_launch_bn_dx, ctx->compute, x, dy, y, a->act, a->act_alpha, a->dx->data, dt, m, c,
                    coef);
fail:
    return st;
}
