/* Dense (fully connected) layers on the GPU with cuBLAS: y = act(x w^T + b).
 *
 * x is any rank-2..4 tensor with N first, read as (N, IN) with IN the product of the other dims (a flattened NHWC
 * activation); w is (OUT, IN); y is (N, OUT); all row-major. cuBLAS is column-major, and a row-major (R, C)
 * matrix is the column-major (C, R) one with leading dimension C, so every product below is computed transposed:
 *
 *   forward          y^T (OUT, N) = w (OUT, IN) . x^T (IN, N)       -> sgemm(T, N, OUT, N, IN, w, IN, x, IN, y, OUT)
 *   backward data    dx^T (IN, N) = w^T (IN, OUT) . dy^T (OUT, N)   -> sgemm(N, N, IN, N, OUT, w, IN, dy, OUT, dx, IN)
 *   backward weights dw^T (IN, OUT) = x^T (IN, N) . dy (N, OUT)     -> sgemm(N, T, IN, OUT, N, x, IN, dy, OUT, dw, IN)
 *
 * Bias and activation: our epilogue kernel over y; the bias gradient: our column-sum kernel over dy. cuBLAS runs
 * in its default math mode: full f32, no TF32 (set in backend.c). No plan is needed. */
#include <string.h>

#include "core/op_check.h"
#include "cuda/cuda_util.h"

typedef struct cnn_cuda_dense_dims {
    int64_t n, in, out;
} cnn_cuda_dense_dims;

/* the values of core/op_check.h's directions, which cnn_dense_check takes */
enum {
    CNN_CUDA_DENSE_FWD = CNN_OP_FWD,
    CNN_CUDA_DENSE_BWD_DATA = CNN_OP_BWD_DATA,
    CNN_CUDA_DENSE_BWD_WEIGHTS = CNN_OP_BWD_WEIGHTS,
};

static cnn_status cnn_cuda_dense_check(const cnn_dense_args *a, int dir, cnn_cuda_dense_dims *k, const char *op)
{
    cnn_status st = CNN_OK;
    const cnn_tensor *xt = dir == CNN_CUDA_DENSE_BWD_DATA ? a->dx : a->x;
    const cnn_tensor *wt = dir == CNN_CUDA_DENSE_BWD_WEIGHTS ? a->dw : a->w;
    const cnn_tensor *yt = dir == CNN_CUDA_DENSE_FWD ? a->y : a->dy;
    const char *xn = dir == CNN_CUDA_DENSE_BWD_DATA ? "dx" : "x";
    const char *wn = dir == CNN_CUDA_DENSE_BWD_WEIGHTS ? "dw" : "w";
    const char *yn = dir == CNN_CUDA_DENSE_FWD ? "y" : "dy";
    cnn_dense_sizes s;

    memset(k, 0, sizeof *k);
    CNN_TRY(cnn_cuda_check_f32(xt, op, xn));
    CNN_TRY(cnn_cuda_check_f32(wt, op, wn));
    CNN_TRY(cnn_cuda_check_f32(yt, op, yn));
    if (dir == CNN_CUDA_DENSE_FWD && a->b) CNN_TRY(cnn_cuda_check_f32(a->b, op, "b"));
    if (dir == CNN_CUDA_DENSE_BWD_WEIGHTS && a->db) CNN_TRY(cnn_cuda_check_f32(a->db, op, "db"));
    CNN_TRY(cnn_dense_check(a, dir, "cuda ", op, &s));
    k->n = s.n;
    k->in = s.in;
    k->out = s.out;
    int64_t yshape[2] = {k->n, k->out};
    CNN_TRY(cnn_cuda_check_shape(yt, 2, yshape, op, yn));
    int64_t bshape[1] = {k->out};
    if (dir == CNN_CUDA_DENSE_FWD && a->b) CNN_TRY(cnn_cuda_check_shape(a->b, 1, bshape, op, "b"));
    if (dir == CNN_CUDA_DENSE_BWD_WEIGHTS && a->db) CNN_TRY(cnn_cuda_check_shape(a->db, 1, bshape, op, "db"));
    if (dir == CNN_CUDA_DENSE_BWD_DATA && a->x) CNN_TRY(cnn_cuda_check_shape(a->dx, a->x->ndim, a->x->shape, op, "dx"));
    CNN_TRY(cnn_cuda_check_int(k->n, op, "the batch N"));
    CNN_TRY(cnn_cuda_check_int(k->in, op, "the input features IN"));
    CNN_TRY(cnn_cuda_check_int(k->out, op, "the output features OUT"));
fail:
    return st;
}

/* 1 and 0 for the alpha and beta of every gemm: outputs are overwritten, never accumulated into */
static const float cnn_cuda_one = 1.0f, cnn_cuda_zero = 0.0f;

cnn_status cnn_cuda_dense_forward(cnn_backend *b, const cnn_dense_args *a)
{
    static const char *op = "dense_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_cuda_dense_dims k;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_dense_check(a, CNN_CUDA_DENSE_FWD, &k, op));
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    const int n = (int)k.n, in = (int)k.in, out = (int)k.out;
    CNN_CUDA_BLAS(op, cublasSgemm, ctx->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &cnn_cuda_one, a->w->data, in,
                  a->x->data, in, &cnn_cuda_zero, a->y->data, out);
    if (a->b || a->act != CNN_ACT_NONE)
        CNN_CUDA_RT(op, cnn_cuda_launch_bias_act, ctx->compute, a->y->data, a->b ? a->b->data : NULL, k.n, k.out,
                    a->act, a->act_alpha);
fail:
    return st;
}

cnn_status cnn_cuda_dense_backward_data(cnn_backend *b, const cnn_dense_args *a)
{
    static const char *op = "dense_backward_data";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_cuda_dense_dims k;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_dense_check(a, CNN_CUDA_DENSE_BWD_DATA, &k, op));
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    const int n = (int)k.n, in = (int)k.in, out = (int)k.out;
    CNN_CUDA_BLAS(op, cublasSgemm, ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &cnn_cuda_one, a->w->data, in,
                  a->dy->data, out, &cnn_cuda_zero, a->dx->data, in);
fail:
    return st;
}

cnn_status cnn_cuda_dense_backward_weights(cnn_backend *b, const cnn_dense_args *a)
{
    static const char *op = "dense_backward_weights";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_cuda_dense_dims k;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: args is NULL", op);
    CNN_TRY(cnn_cuda_dense_check(a, CNN_CUDA_DENSE_BWD_WEIGHTS, &k, op));
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    const int n = (int)k.n, in = (int)k.in, out = (int)k.out;
    CNN_CUDA_BLAS(op, cublasSgemm, ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &cnn_cuda_one, a->x->data, in,
                  a->dy->data, out, &cnn_cuda_zero, a->dw->data, in);
    if (a->db) CNN_TRY(cnn_cuda_col_sum(ctx, a->dy->data, k.n, k.out, a->db->data, op));
fail:
    return st;
}
