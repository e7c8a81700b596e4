/* Dense (fully connected) layers on the GPU with cuBLASLt: y = act(x w^T + b), bias and ReLU in the epilogue.
 *
 * x is any rank-2..4 tensor with N first, read as (N, IN) with IN the product of the other dims (a flattened NHWC
 * activation); w is (OUT, IN); y is (N, OUT); all row-major. cuBLAS is column-major, and a row-major (R, C)
 * matrix is the column-major (C, R) one with leading dimension C, so every product below is computed transposed
 * (A, B and D as stored, column-major, before op; k is the summed dimension):
 *
 *   forward          y^T (OUT, N) = w (OUT, IN) . x^T (IN, N)     A = w (IN, OUT) ld IN, op T; B = x (IN, N) ld IN,
 *                                                                  op N; D = y (OUT, N) ld OUT; k = IN
 *   backward data    dx^T (IN, N) = w^T (IN, OUT) . dy^T (OUT, N) cublasGemmEx(N, N, IN, N, OUT, w, IN, dy, OUT,
 *                                                                  dx, IN): no epilogue, no plan
 *   backward weights dw^T (IN, OUT) = x^T (IN, N) . dy (N, OUT)   A = x (IN, N) ld IN, op N; B = dy (OUT, N) ld OUT,
 *                                                                  op T; D = dw (IN, OUT) ld IN; k = N
 *
 * Epilogues. Forward: the bias is a vector over D's rows (OUT), broadcast over its columns (the batch):
 * CUBLASLT_EPILOGUE_BIAS, RELU_BIAS, or RELU without a bias. Backward weights: CUBLASLT_EPILOGUE_BGRADB sums
 * op(B) = dy over k = N into a vector over D's columns (OUT): the bias gradient, in the same pass as dw.
 * cuBLASLt's bias and bias gradient have the output's dtype (cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE) and
 * our b and db are f32, so with F32 data the epilogue reads b and writes db directly; with F16/BF16 data b is cast
 * to their dtype at the start of the workspace first, and db comes from our column-sum kernel (f32 sums of the
 * 16-bit dy; a 16-bit bias gradient would round away bits that the f32 optimizer keeps). The other activations
 * (leaky ReLU, ELU, sigmoid, tanh; GELU and SiLU are never fused, and cuBLASLt's GELU is the tanh approximation,
 * not our erf) leave the product plain, and our bias+activation kernel runs over y in one pass with the f32 bias.
 *
 * Precision: x, w, y (dx, dw, dy) share one dtype, F32, F16 or BF16, and accumulate in f32 (CUBLAS_COMPUTE_32F;
 * with precision TF32, f32 operands may be rounded to TF32: CUBLAS_COMPUTE_32F_FAST_TF32).
 *
 * Plans: an entry per direction, shape, dtype, TF32, activation, bias and the alignment of each pointer (cuBLASLt
 * chooses algorithms for an alignment) keeps the matmul descriptor, the layouts of A, B and D (C is D, beta 0) and
 * the algorithm that cublasLtMatmulAlgoGetHeuristic ranks first within CNN_CUDA_LT_WORKSPACE of workspace. Where
 * it has none, that entry runs cublasGemmEx and our kernels for the bias, activation and bias gradient instead.
 * Deterministic mode needs nothing more: the heuristic's choice depends on the key alone, and cuBLAS(Lt) results
 * are bit-identical from run to run for one algorithm on one GPU model (cuBLAS's "results reproducibility"). */
#include <stdlib.h>
#include <string.h>

#include "core/op_check.h"
#include "cuda/cuda_util.h"
#include "cuda/ops.h"

/* cuBLASLt's workspace: at most 32 MiB, what the cuBLAS documentation recommends for Hopper (cublasSetWorkspace) */
#define CNN_CUDA_LT_WORKSPACE ((size_t)32 << 20)
/* cuBLASLt's default and largest alignment for its matrices, in bytes; also our offsets within the workspace */
#define CNN_CUDA_LT_ALIGN 256u

/* the values of core/op_check.h's directions, which cnn_dense_check takes */
enum {
    CNN_CUDA_DENSE_FWD = CNN_OP_FWD,
    CNN_CUDA_DENSE_BWD_DATA = CNN_OP_BWD_DATA,
    CNN_CUDA_DENSE_BWD_WEIGHTS = CNN_OP_BWD_WEIGHTS,
};

/* the matrices of one product, as cuBLASLt names them */
enum { CNN_CUDA_LT_A, CNN_CUDA_LT_B, CNN_CUDA_LT_D, CNN_CUDA_LT_BIAS, CNN_CUDA_LT_COUNT };

typedef struct cnn_cuda_dense_key {
    int32_t dir; /* CNN_CUDA_DENSE_FWD or CNN_CUDA_DENSE_BWD_WEIGHTS */
    int32_t n, in, out;
    int32_t dtype, tf32;               /* the data's cnn_dtype; 1: f32 may round to TF32 */
    int32_t act;                       /* forward: the fused activation */
    int32_t bias;                      /* 1: with b (forward) or db (backward weights) */
    uint32_t align[CNN_CUDA_LT_COUNT]; /* bytes, up to CNN_CUDA_LT_ALIGN; the bias's when there is one */
} cnn_cuda_dense_key;

typedef struct cnn_cuda_dense_entry {
    cnn_cuda_dense_key key;
    int ready; /* the descriptors are made and the heuristic was asked */
    int lt;    /* 1: cublasLtMatmul with `algo`; 0: cuBLASLt has no algorithm: cublasGemmEx and our kernels */
    cublasLtEpilogue_t epilogue;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
    size_t ws; /* the workspace `algo` needs */
} cnn_cuda_dense_entry;

/* 1 and 0 for the alpha and beta of every product: outputs are overwritten, never accumulated into */
static const float cnn_cuda_one = 1.0f, cnn_cuda_zero = 0.0f;

static void cnn_cuda_dense_entry_release(cnn_cuda_dense_entry *e)
{
    if (e->desc) cublasLtMatmulDescDestroy(e->desc);
    if (e->la) cublasLtMatrixLayoutDestroy(e->la);
    if (e->lb) cublasLtMatrixLayoutDestroy(e->lb);
    if (e->ld) cublasLtMatrixLayoutDestroy(e->ld);
    e->desc = NULL;
    e->la = e->lb = e->ld = NULL;
}

static void cnn_cuda_dense_entry_destroy(void *p)
{
    cnn_cuda_dense_entry_release(p); /* host-side descriptors: queued products do not need them */
    free(p);
}

static cudaDataType_t cnn_cuda_blas_type(int dt)
{
    return dt == CNN_F16 ? CUDA_R_16F : dt == CNN_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* The largest power of two up to CNN_CUDA_LT_ALIGN that divides the address. */
static uint32_t cnn_cuda_lt_align(const void *p) { return cnn_cuda_address_align((uintptr_t)p, CNN_CUDA_LT_ALIGN); }

// ---------------------------------------------------------------------------------------------------------------
// sizes

/* The sizes of a call core/ops.c has checked, and what only cuBLAS limits: 32-bit sizes. */
static cnn_status cnn_cuda_dense_sizes(const cnn_dense_args *a, int dir, cnn_dense_sizes *k, const char *op)
{
    cnn_status st = CNN_OK;
    cnn_dense_sizes_of(a, dir, k);
    CNN_TRY(cnn_cuda_check_int(k->n, op, "the batch N"));
    CNN_TRY(cnn_cuda_check_int(k->in, op, "the input features IN"));
    CNN_TRY(cnn_cuda_check_int(k->out, op, "the output features OUT"));
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// plans: cuBLASLt descriptors and algorithm

/* What the epilogue does for a key: the bias and ReLU forward, the bias gradient backward, where cuBLASLt can. */
static cublasLtEpilogue_t cnn_cuda_dense_epilogue(const cnn_cuda_dense_key *k)
{
    /* cuBLASLt's alignment preferences cover A, B, C and D but not the bias, and its kernels may read the bias 16
     * bytes at a time (PyTorch met misaligned-address faults there): a bias aligned to less goes to our kernels */
    const int bias = k->bias && k->align[CNN_CUDA_LT_BIAS] >= 16;
    if (k->dir == CNN_CUDA_DENSE_BWD_WEIGHTS)
        return bias && k->dtype == CNN_F32 ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_DEFAULT;
    if (k->act == CNN_ACT_RELU && !k->bias) return CUBLASLT_EPILOGUE_RELU;
    if (k->act == CNN_ACT_RELU && bias) return CUBLASLT_EPILOGUE_RELU_BIAS;
    if (k->act == CNN_ACT_NONE && bias) return CUBLASLT_EPILOGUE_BIAS;
    return CUBLASLT_EPILOGUE_DEFAULT; /* nothing to do, or an activation for our kernel, which adds the bias too */
}

/* The bytes at the start of the workspace that hold a forward's bias in the data's dtype: a whole number of
 * CNN_CUDA_LT_ALIGN, so that cuBLASLt's workspace after it keeps the alignment. */
static size_t cnn_cuda_dense_bias_bytes(int64_t out, int dt)
{
    const size_t bytes = (size_t)out * cnn_dtype_size((cnn_dtype)dt);
    return (bytes + CNN_CUDA_LT_ALIGN - 1) / CNN_CUDA_LT_ALIGN * CNN_CUDA_LT_ALIGN;
}

/* Makes the descriptors of e and asks the heuristic for an algorithm; `bias` is the pointer the epilogue will
 * read or write (the heuristic reads its alignment), NULL when it uses none. */
static cnn_status cnn_cuda_dense_prepare(cnn_cuda_ctx *ctx, cnn_cuda_dense_entry *e, const void *bias,
                                         const char *op)
{
    cnn_status st = CNN_OK;
    const cnn_cuda_dense_key *k = &e->key;
    const int fwd = k->dir == CNN_CUDA_DENSE_FWD;
    const cudaDataType_t t = cnn_cuda_blas_type(k->dtype);
    const cublasComputeType_t compute = k->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const cublasOperation_t ta = fwd ? CUBLAS_OP_T : CUBLAS_OP_N, tb = fwd ? CUBLAS_OP_N : CUBLAS_OP_T;
    /* rows and columns as stored (see the table at the top) */
    const uint64_t a_rows = (uint64_t)k->in, a_cols = (uint64_t)(fwd ? k->out : k->n);
    const uint64_t b_rows = (uint64_t)(fwd ? k->in : k->out), b_cols = (uint64_t)k->n;
    const uint64_t d_rows = (uint64_t)(fwd ? k->out : k->in), d_cols = (uint64_t)(fwd ? k->n : k->out);
    const uint64_t max_ws = CNN_CUDA_LT_WORKSPACE;
    const cublasLtMatmulPreferenceAttributes_t align_attr[3] = {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;

    cnn_cuda_dense_entry_release(e); /* a failed earlier attempt may have made some */
    memset(&result, 0, sizeof result);
    e->epilogue = cnn_cuda_dense_epilogue(k);
    CNN_CUDA_BLAS(op, cublasLtMatmulDescCreate, &e->desc, compute, CUDA_R_32F);
    CNN_CUDA_BLAS(op, cublasLtMatmulDescSetAttribute, e->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    CNN_CUDA_BLAS(op, cublasLtMatmulDescSetAttribute, e->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    CNN_CUDA_BLAS(op, cublasLtMatmulDescSetAttribute, e->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e->epilogue,
                  sizeof e->epilogue);
    if (bias)
        CNN_CUDA_BLAS(op, cublasLtMatmulDescSetAttribute, e->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                      sizeof bias);
    CNN_CUDA_BLAS(op, cublasLtMatrixLayoutCreate, &e->la, t, a_rows, a_cols, (int64_t)a_rows);
    CNN_CUDA_BLAS(op, cublasLtMatrixLayoutCreate, &e->lb, t, b_rows, b_cols, (int64_t)b_rows);
    CNN_CUDA_BLAS(op, cublasLtMatrixLayoutCreate, &e->ld, t, d_rows, d_cols, (int64_t)d_rows);
    CNN_CUDA_BLAS(op, cublasLtMatmulPreferenceCreate, &pref);
    CNN_CUDA_BLAS(op, cublasLtMatmulPreferenceSetAttribute, pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws,
                  sizeof max_ws);
    for (int i = 0; i < 3; i++) /* A, B, D; C is D */
        CNN_CUDA_BLAS(op, cublasLtMatmulPreferenceSetAttribute, pref, align_attr[i], &k->align[i],
                      sizeof k->align[i]);
    CNN_CUDA_BLAS(op, cublasLtMatmulPreferenceSetAttribute, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                  &k->align[CNN_CUDA_LT_D], sizeof k->align[CNN_CUDA_LT_D]);
    cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(ctx->cublaslt, e->desc, e->la, e->lb, e->ld, e->ld, pref, 1,
                                                       &result, &found);
    /* NOT_SUPPORTED: no heuristic for this configuration, which is an answer like finding no algorithm */
    if (hs != CUBLAS_STATUS_NOT_SUPPORTED) CNN_TRY(cnn_cuda_blas_status(hs, op, "cublasLtMatmulAlgoGetHeuristic"));
    e->lt = hs == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (e->lt) {
        e->algo = result.algo;
        e->ws = result.workspaceSize;
    }
    e->ready = 1;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    return st;
}

/* The entry for one product: A, B and D are the data pointers of the table at the top, `bias` the f32 b or db
 * (NULL without one), `bias_lp` where a 16-bit copy of a forward's bias goes (the workspace). */
static cnn_status cnn_cuda_dense_entry_get(cnn_cuda_ctx *ctx, cnn_plan **slot, int dir, const cnn_dense_sizes *d,
                                           int dt, cnn_act act, const void *A, const void *B, const void *D,
                                           const void *bias, const void *bias_lp, cnn_cuda_dense_entry **out,
                                           const char *op)
{
    cnn_status st = CNN_OK;
    cnn_cuda_dense_key key;
    void *e = NULL;
    memset(&key, 0, sizeof key); /* memcmp-compared */
    key.dir = dir;
    key.n = (int32_t)d->n;
    key.in = (int32_t)d->in;
    key.out = (int32_t)d->out;
    key.dtype = dt;
    key.tf32 = dt == CNN_F32 && ctx->precision == CNN_PRECISION_TF32;
    key.act = dir == CNN_CUDA_DENSE_FWD ? (int32_t)act : CNN_ACT_NONE;
    key.bias = bias != NULL;
    key.align[CNN_CUDA_LT_A] = cnn_cuda_lt_align(A);
    key.align[CNN_CUDA_LT_B] = cnn_cuda_lt_align(B);
    key.align[CNN_CUDA_LT_D] = cnn_cuda_lt_align(D);
    /* the bias an epilogue would read or write: b (or db), or the 16-bit copy of a forward's b */
    const void *cand = dir == CNN_CUDA_DENSE_FWD && dt != CNN_F32 ? bias_lp : bias;
    key.align[CNN_CUDA_LT_BIAS] = bias ? cnn_cuda_lt_align(cand) : CNN_CUDA_LT_ALIGN;
    const cublasLtEpilogue_t epi = cnn_cuda_dense_epilogue(&key);
    const int uses_bias = epi == CUBLASLT_EPILOGUE_BIAS || epi == CUBLASLT_EPILOGUE_RELU_BIAS ||
                          epi == CUBLASLT_EPILOGUE_BGRADB;
    const void *epi_bias = uses_bias ? cand : NULL;
    CNN_TRY(cnn_plan_entry(slot, CNN_PLAN_DENSE, CNN_CUDA_PLAN_SLOTS, &key, sizeof key,
                           sizeof(cnn_cuda_dense_entry), cnn_cuda_dense_entry_destroy, &e, op));
    cnn_cuda_dense_entry *de = e;
    if (!de->ready) CNN_TRY(cnn_cuda_dense_prepare(ctx, de, epi_bias, op));
    *out = de;
fail:
    return st;
}

/* D = op(A) . op(B) with e's algorithm and epilogue; `bias` is what the epilogue reads or writes (NULL when it
 * uses none). The workspace must already hold `ws_offset` + e->ws bytes; cuBLASLt's part starts at ws_offset. */
static cnn_status cnn_cuda_dense_lt(cnn_cuda_ctx *ctx, const cnn_cuda_dense_entry *e, const void *A, const void *B,
                                    void *D, const void *bias, size_t ws_offset, const char *op)
{
    cnn_status st = CNN_OK;
    /* the pointer may differ from the one the heuristic saw (a moved workspace, another layer's tensors of the
     * same shape), never its alignment: that is in the key */
    if (bias)
        CNN_CUDA_BLAS(op, cublasLtMatmulDescSetAttribute, e->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                      sizeof bias);
    CNN_CUDA_BLAS(op, cublasLtMatmul, ctx->cublaslt, e->desc, &cnn_cuda_one, A, e->la, B, e->lb, &cnn_cuda_zero, D,
                  e->ld, D, e->ld, &e->algo, (char *)ctx->workspace + ws_offset, e->ws, ctx->compute);
fail:
    return st;
}

/* C (m, n) = op(A) (m, k) . op(B) (k, n), column-major, every matrix of dtype dt, accumulated in f32: the product
 * without cuBLASLt */
static cnn_status cnn_cuda_gemm(cnn_cuda_ctx *ctx, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                const void *A, int lda, const void *B, int ldb, void *C, int ldc, int dt,
                                const char *op)
{
    cnn_status st = CNN_OK;
    const cudaDataType_t t = cnn_cuda_blas_type(dt);
    const cublasComputeType_t compute =
        dt == CNN_F32 && ctx->precision == CNN_PRECISION_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CNN_CUDA_BLAS(op, cublasGemmEx, ctx->cublas, ta, tb, m, n, k, &cnn_cuda_one, A, t, lda, B, t, ldb, &cnn_cuda_zero,
                  C, t, ldc, compute, CUBLAS_GEMM_DEFAULT);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// ops

cnn_status cnn_cuda_dense_forward(cnn_backend *b, const cnn_dense_args *a)
{
    static const char *op = "dense_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_cuda_dense_entry *e = NULL;
    cnn_plan *tmp = NULL;
    cnn_dense_sizes k;
    CNN_TRY(cnn_cuda_dense_sizes(a, CNN_CUDA_DENSE_FWD, &k, op));
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    const int n = (int)k.n, in = (int)k.in, out = (int)k.out, dt = a->x->dtype;
    const void *bias = a->b ? a->b->data : NULL;
    /* 16-bit data: the epilogue's copy of the bias in their dtype, at the start of the workspace */
    const size_t lp_bytes = bias && dt != CNN_F32 ? cnn_cuda_dense_bias_bytes(k.out, dt) : 0;
    if (lp_bytes) CNN_TRY(cnn_cuda_workspace(ctx, lp_bytes, op));
    CNN_TRY(cnn_cuda_dense_entry_get(ctx, a->plan ? a->plan : &tmp, CNN_CUDA_DENSE_FWD, &k, dt, a->act, a->w->data,
                                     a->x->data, a->y->data, bias, ctx->workspace, &e, op));
    int kernel = a->b || a->act != CNN_ACT_NONE; /* our bias+activation kernel over y after the product */
    if (e->lt) {
        const int lp_bias = lp_bytes && e->epilogue != CUBLASLT_EPILOGUE_DEFAULT;
        const size_t offset = lp_bias ? lp_bytes : 0;
        CNN_TRY(cnn_cuda_workspace(ctx, offset + e->ws, op));
        const void *epi_bias = NULL; /* what the epilogue adds: b, its 16-bit copy, or nothing */
        if (lp_bias) {
            CNN_CUDA_RT(op, cnn_cuda_launch_cast, ctx->compute, bias, CNN_F32, ctx->workspace, dt, k.out);
            epi_bias = ctx->workspace;
        } else if (e->epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
            epi_bias = bias;
        }
        CNN_TRY(cnn_cuda_dense_lt(ctx, e, a->w->data, a->x->data, a->y->data, epi_bias, offset, op));
        if (e->epilogue != CUBLASLT_EPILOGUE_DEFAULT) kernel = 0; /* bias and ReLU are done */
    } else {
        CNN_TRY(cnn_cuda_gemm(ctx, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, a->w->data, in, a->x->data, in, a->y->data,
                              out, dt, op));
    }
    if (kernel)
        CNN_CUDA_RT(op, cnn_cuda_launch_bias_act, ctx->compute, a->y->data, dt, bias, k.n, k.out, a->act,
                    a->act_alpha);
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}

cnn_status cnn_cuda_dense_backward_data(cnn_backend *b, const cnn_dense_args *a)
{
    static const char *op = "dense_backward_data";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_dense_sizes k;
    CNN_TRY(cnn_cuda_dense_sizes(a, CNN_CUDA_DENSE_BWD_DATA, &k, op));
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
    cnn_cuda_dense_entry *e = NULL;
    cnn_plan *tmp = NULL;
    cnn_dense_sizes k;
    CNN_TRY(cnn_cuda_dense_sizes(a, CNN_CUDA_DENSE_BWD_WEIGHTS, &k, op));
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    const int n = (int)k.n, in = (int)k.in, out = (int)k.out, dt = a->dy->dtype;
    float *db = a->db ? a->db->data : NULL;
    CNN_TRY(cnn_cuda_dense_entry_get(ctx, a->plan ? a->plan : &tmp, CNN_CUDA_DENSE_BWD_WEIGHTS, &k, dt, CNN_ACT_NONE,
                                     a->x->data, a->dy->data, a->dw->data, db, NULL, &e, op));
    int col_sum = db != NULL; /* our column-sum kernel over dy for db */
    if (e->lt) {
        const int bgrad = e->epilogue == CUBLASLT_EPILOGUE_BGRADB;
        CNN_TRY(cnn_cuda_workspace(ctx, e->ws, op));
        CNN_TRY(cnn_cuda_dense_lt(ctx, e, a->x->data, a->dy->data, a->dw->data, bgrad ? db : NULL, 0, op));
        if (bgrad) col_sum = 0;
    } else {
        CNN_TRY(cnn_cuda_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, a->x->data, in, a->dy->data, out,
                              a->dw->data, in, dt, op));
    }
    if (col_sum) CNN_TRY(cnn_cuda_col_sum(ctx, a->dy->data, dt, k.n, k.out, db, op));
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}
