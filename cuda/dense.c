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
 * Bias and activation: our epilogue kernel over y; the bias gradient: our column-sum kernel over dy. The products
 * go through cublasGemmEx: x, w, y (and dx, dw, dy) share one dtype, F32, F16 or BF16, and accumulate in f32
 * (CUBLAS_COMPUTE_32F; with precision TF32, f32 operands may be rounded to TF32: CUBLAS_COMPUTE_32F_FAST_TF32).
 * No plan is needed. */
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
    CNN_TRY(cnn_cuda_check_float(xt, op, xn));
    CNN_TRY(cnn_cuda_check_float(wt, op, wn));
    CNN_TRY(cnn_cuda_check_float(yt, op, yn));
    CNN_TRY(cnn_cuda_check_dtype(wt, xt->dtype, op, wn, xn));
    CNN_TRY(cnn_cuda_check_dtype(yt, xt->dtype, op, yn, xn));
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

/* C (m, n) = op(A) (m, k) . op(B) (k, n), column-major, every matrix of dtype dt, accumulated in f32 */
static cnn_status cnn_cuda_gemm(cnn_cuda_ctx *ctx, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                const void *A, int lda, const void *B, int ldb, void *C, int ldc, int dt,
                                const char *op)
{
    cnn_status st = CNN_OK;
    const cudaDataType_t t = dt == CNN_F16 ? CUDA_R_16F : dt == CNN_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute =
        dt == CNN_F32 && ctx->precision == CNN_PRECISION_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CNN_CUDA_BLAS(op, cublasGemmEx, ctx->cublas, ta, tb, m, n, k, &cnn_cuda_one, A, t, lda, B, t, ldb, &cnn_cuda_zero,
                  C, t, ldc, compute, CUBLAS_GEMM_DEFAULT);
fail:
    return st;
}

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
    CNN_TRY(cnn_cuda_gemm(ctx, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, a->w->data, in, a->x->data, in, a->y->data, out,
                          a->x->dtype, op));
    if (a->b || a->act != CNN_ACT_NONE)
        CNN_CUDA_RT(op, cnn_cuda_launch_bias_act, ctx->compute, a->y->data, a->y->dtype, a->b ? a->b->data : NULL, k.n,
                    k.out, a->act, a->act_alpha);
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
    CNN_TRY(cnn_cuda_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, a->w->data, in, a->dy->data, out, a->dx->data, in,
                          a->dy->dtype, op));
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
    CNN_TRY(cnn_cuda_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, a->x->data, in, a->dy->data, out, a->dw->data, in,
                          a->dy->dtype, op));
    if (a->db) CNN_TRY(cnn_cuda_col_sum(ctx, a->dy->data, a->dy->dtype, k.n, k.out, a->db->data, op));
fail:
    return st;
}
