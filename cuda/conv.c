/* 2-D convolution on the GPU with cuDNN: forward (then our bias + activation kernel), backward data, backward
 * filter (and our column-sum kernel for the bias gradient).
 *
 * Each direction runs through cuDNN's graph API when it has an engine for the shape (conv_graph.c: the fastest of
 * the heuristics' best configurations, timed once per shape), else through the legacy API described below;
 * $CNN_CUDNN_CONV=graph|legacy forces one of them (conv_graph.h).
 *
 * Layouts: x, y (N, H, W, C) = cuDNN NHWC tensors; weights (O, KH, KW, C/G) = cuDNN's NHWC filter layout (KRSC),
 * with groups through cudnnSetConvolutionGroupCount. cuDNN pads symmetrically only: a convolution with
 * asymmetric padding (SAME with an even kernel or a stride) runs on an explicitly zero-padded copy of x that the
 * plan entry owns, with cuDNN padding 0; backward data writes that padded shape and our kernel crops it.
 *
 * Algorithms are chosen by measuring (cudnnFind*AlgorithmEx) the first time a shape is seen, and kept with the
 * descriptors in the plan entry. x, w and y share one dtype and accumulate in f32 (cuDNN's compute type FLOAT):
 * - f32 at precision FP32 runs with CUDNN_FMA_MATH and only algorithms without tensor-op math: plain f32
 *   arithmetic, no TF32 rounding, so results match the CPU to f32 rounding;
 * - f32 at precision TF32 runs with CUDNN_DEFAULT_MATH, which lets cuDNN round the operands to TF32 on tensor
 *   cores (Ampere and later);
 * - F16 and BF16 run with CUDNN_TENSOR_OP_MATH (tensor cores).
 * In deterministic mode (cnn_train's --deterministic) the algorithm is the first of cuDNN's heuristic ranking
 * (cudnnGet*Algorithm_v7, no timing) that is deterministic, so two runs choose the same one and sum in the same
 * order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/op_check.h"
#include "cuda/conv_graph.h"
#include "cuda/cuda_util.h"
#include "cuda/ops.h"

/* the most algorithms any direction has in cuDNN 9 is under 10; room to spare */
#define CNN_CUDA_MAX_ALGOS 16
/* Algorithms needing more workspace than this are not tried: 1 GiB, PyTorch's order of magnitude for the same
 * search, and a small part of a datacenter GPU's memory. */
#define CNN_CUDA_CONV_WORKSPACE_MAX ((size_t)1 << 30)

typedef struct cnn_cuda_conv_key {
    cnn_conv2d_sizes s;  /* the sizes and parameters that cnn_conv2d_check fills in */
    int32_t dtype, tf32; /* the data's cnn_dtype; 1: f32 may round to TF32 */
    int32_t deterministic;
} cnn_cuda_conv_key;

typedef struct cnn_cuda_conv_entry {
    cnn_cuda_conv_key key;
    int ready;
    cudnnTensorDescriptor_t xd, yd; /* xd describes the padded copy when explicit_pad */
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    int explicit_pad;
    cnn_cuda_window pad; /* geometry of the padded copy */
    void *xpad;          /* (N, H + top + bottom, W + left + right, C), owned; made when the legacy API needs it */
    int have_fwd, have_bwd_data, have_bwd_filter;
    cudnnConvolutionFwdAlgo_t fwd_algo;
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo;
    size_t fwd_ws, bwd_data_ws, bwd_filter_ws;
    cnn_cuda_conv_graph graph[3]; /* by direction (CNN_OP_*): the graph API's plans */
} cnn_cuda_conv_entry;

/* the values of core/op_check.h's directions, which cnn_conv2d_check takes */
enum {
    CNN_CUDA_CONV_FWD = CNN_OP_FWD,
    CNN_CUDA_CONV_BWD_DATA = CNN_OP_BWD_DATA,
    CNN_CUDA_CONV_BWD_FILTER = CNN_OP_BWD_WEIGHTS,
};

static const float cnn_cuda_one = 1.0f, cnn_cuda_zero = 0.0f;

static void cnn_cuda_conv_entry_destroy(void *p)
{
    cnn_cuda_conv_entry *e = p;
    if (e->xd) cudnnDestroyTensorDescriptor(e->xd);
    if (e->yd) cudnnDestroyTensorDescriptor(e->yd);
    if (e->wd) cudnnDestroyFilterDescriptor(e->wd);
    if (e->cd) cudnnDestroyConvolutionDescriptor(e->cd);
    for (int i = 0; i < 3; i++) cnn_cuda_conv_graph_destroy(&e->graph[i]);
    /* cudaFree waits for queued work that may still read the padded copy */
    if (e->xpad && cudaFree(e->xpad) != cudaSuccess) (void)cudaGetLastError();
    free(e);
}

// ---------------------------------------------------------------------------------------------------------------
// argument checks

/* The key of a call core/ops.c has checked, and what only cuDNN limits: its legacy descriptors' 32-bit sizes. */
static cnn_status cnn_cuda_conv_key_of(const cnn_conv2d_args *a, int dir, const cnn_cuda_ctx *ctx,
                                       cnn_cuda_conv_key *k, const char *op)
{
    cnn_status st = CNN_OK;
    const cnn_tensor *x = dir == CNN_OP_BWD_DATA ? a->dx : a->x;

    memset(k, 0, sizeof *k);
    k->dtype = x->dtype;
    k->tf32 = x->dtype == CNN_F32 && ctx->precision == CNN_PRECISION_TF32;
    k->deterministic = ctx->deterministic;
    cnn_conv2d_sizes_of(a, dir, &k->s);
    /* cuDNN's legacy descriptors count in int */
    const int64_t hp = k->s.h + k->s.pad_top + k->s.pad_bottom, wp = k->s.w + k->s.pad_left + k->s.pad_right;
    CNN_TRY(cnn_cuda_check_int(k->s.n * hp * wp * k->s.c, op, "the padded input's element count"));
    CNN_TRY(cnn_cuda_check_int(k->s.n * k->s.oh * k->s.ow * k->s.o, op, "the output's element count"));
    CNN_TRY(cnn_cuda_check_int(k->s.o * k->s.kh * k->s.kw * (k->s.c / k->s.groups), op,
                               "the weights' element count"));
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// plan entries: descriptors, the padded copy, algorithm search

static cnn_status cnn_cuda_conv_prepare(cnn_cuda_conv_entry *e, const char *op)
{
    cnn_status st = CNN_OK;
    const cnn_cuda_conv_key *k = &e->key;
    if (e->ready) return CNN_OK;
    e->explicit_pad = k->s.pad_top != k->s.pad_bottom || k->s.pad_left != k->s.pad_right;
    e->pad = (cnn_cuda_window){.n = k->s.n, .h = k->s.h, .w = k->s.w, .c = k->s.c,
                               .pad_top = k->s.pad_top, .pad_left = k->s.pad_left,
                               .pad_bottom = k->s.pad_bottom, .pad_right = k->s.pad_right};
    const int64_t hx = e->explicit_pad ? k->s.h + k->s.pad_top + k->s.pad_bottom : k->s.h;
    const int64_t wx = e->explicit_pad ? k->s.w + k->s.pad_left + k->s.pad_right : k->s.w;
    const int pad_h = e->explicit_pad ? 0 : k->s.pad_top, pad_w = e->explicit_pad ? 0 : k->s.pad_left;
    const cudnnDataType_t dt = cnn_cuda_dnn_type((cnn_dtype)k->dtype);
    const cudnnMathType_t math = k->dtype != CNN_F32 ? CUDNN_TENSOR_OP_MATH : k->tf32 ? CUDNN_DEFAULT_MATH
                                                                                      : CUDNN_FMA_MATH;

    /* an entry whose preparation failed half-way is prepared again: keep what was made */
    if (!e->xd) CNN_CUDA_DNN(op, cudnnCreateTensorDescriptor, &e->xd);
    if (!e->yd) CNN_CUDA_DNN(op, cudnnCreateTensorDescriptor, &e->yd);
    if (!e->wd) CNN_CUDA_DNN(op, cudnnCreateFilterDescriptor, &e->wd);
    if (!e->cd) CNN_CUDA_DNN(op, cudnnCreateConvolutionDescriptor, &e->cd);
    CNN_CUDA_DNN(op, cudnnSetTensor4dDescriptor, e->xd, CUDNN_TENSOR_NHWC, dt, (int)k->s.n, (int)k->s.c, (int)hx,
                 (int)wx);
    CNN_CUDA_DNN(op, cudnnSetTensor4dDescriptor, e->yd, CUDNN_TENSOR_NHWC, dt, (int)k->s.n, (int)k->s.o,
                 (int)k->s.oh, (int)k->s.ow);
    CNN_CUDA_DNN(op, cudnnSetFilter4dDescriptor, e->wd, dt, CUDNN_TENSOR_NHWC, (int)k->s.o,
                 (int)(k->s.c / k->s.groups), (int)k->s.kh, (int)k->s.kw);
    /* CROSS_CORRELATION: no kernel flip, what every framework calls convolution */
    CNN_CUDA_DNN(op, cudnnSetConvolution2dDescriptor, e->cd, pad_h, pad_w, k->s.stride_h, k->s.stride_w,
                 k->s.dilation_h, k->s.dilation_w, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
    CNN_CUDA_DNN(op, cudnnSetConvolutionGroupCount, e->cd, k->s.groups);
    CNN_CUDA_DNN(op, cudnnSetConvolutionMathType, e->cd, math);

    /* cuDNN must see the output we computed: a disagreement is a bug in the descriptors above */
    int dn = 0, dc = 0, dh = 0, dw = 0;
    CNN_CUDA_DNN(op, cudnnGetConvolution2dForwardOutputDim, e->cd, e->xd, e->wd, &dn, &dc, &dh, &dw);
    if (dn != k->s.n || dc != k->s.o || dh != k->s.oh || dw != k->s.ow)
        return cnn_error(CNN_ERR_BACKEND, "cuda %s: cuDNN computes an output of (%d, %d, %d, %d) (N, H, W, C) where "
                         "(%lld, %lld, %lld, %lld) was expected", op, dn, dh, dw, dc, (long long)k->s.n,
                         (long long)k->s.oh, (long long)k->s.ow, (long long)k->s.o);
    e->ready = 1;
fail:
    return st;
}

/* The legacy API's zero-padded copy of x for an asymmetrically padded convolution, made on first use. */
static cnn_status cnn_cuda_conv_xpad(cnn_cuda_conv_entry *e, const char *op)
{
    const cnn_cuda_conv_key *k = &e->key;
    if (!e->explicit_pad || e->xpad) return CNN_OK;
    const int64_t hx = k->s.h + k->s.pad_top + k->s.pad_bottom, wx = k->s.w + k->s.pad_left + k->s.pad_right;
    size_t bytes = (size_t)(k->s.n * hx * wx * k->s.c) * cnn_dtype_size((cnn_dtype)k->dtype);
    cudaError_t err = cudaMalloc((void **)&e->xpad, bytes);
    if (err != cudaSuccess) {
        e->xpad = NULL;
        size_t free_b = 0, total_b = 0;
        (void)cudaGetLastError();
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
        return cnn_error(err == cudaErrorMemoryAllocation ? CNN_ERR_NO_MEMORY : CNN_ERR_BACKEND,
                         "cuda %s: no device memory for the %.1f MiB padded input of an asymmetrically padded "
                         "convolution (%.1f MiB free): %s; try a smaller batch size",
                         op, (double)bytes / 1048576.0, (double)free_b / 1048576.0, cudaGetErrorString(err));
    }
    return CNN_OK;
}

/* The input the legacy API reads: x itself, or its zero-padded copy for asymmetric padding (made here). */
static cnn_status cnn_cuda_conv_legacy_x(cnn_cuda_ctx *ctx, cnn_cuda_conv_entry *e, const cnn_tensor *x,
                                         const void **out, const char *op)
{
    cnn_status st = CNN_OK;
    *out = x->data;
    if (!e->explicit_pad) return CNN_OK;
    CNN_TRY(cnn_cuda_conv_xpad(e, op));
    CNN_CUDA_RT(op, cnn_cuda_launch_pad, ctx->compute, x->data, e->xpad, x->dtype, &e->pad);
    *out = e->xpad;
fail:
    return st;
}

/* $CNN_CUDA_LOG: which API and engine a direction's new plan uses, and what planning saw. */
static void cnn_cuda_conv_log(const cnn_cuda_conv_entry *e, const cnn_cuda_conv_graph *g, const char *op)
{
    char how[160], sizes[CNN_CONV2D_SIZES_BUF];
    if (g->state > 0 && g->ms >= 0.0f)
        snprintf(how, sizeof how, "graph API, engine %lld, %.3f ms, the fastest of the plans built (%lld of %lld ranked)",
                 (long long)g->engine, (double)g->ms, (long long)g->built, (long long)g->ranked);
    else if (g->state > 0)
        snprintf(how, sizeof how, "graph API, engine %lld, untimed (deterministic; %lld plans built of %lld ranked)",
                 (long long)g->engine, (long long)g->built, (long long)g->ranked);
    else
        snprintf(how, sizeof how, "legacy API (the graph API built %lld plans of %lld ranked, none ran)",
                 (long long)g->built, (long long)g->ranked);
    fprintf(stderr, "cnn cuda: %s %s %s: %s\n", op, cnn_dtype_name((cnn_dtype)e->key.dtype),
            cnn_conv2d_sizes_str(&e->key.s, sizes, sizeof sizes), how);
}

/* Runs direction dir through the graph API on these tensors when it can (*ran), planning it first when needed;
 * *ran stays 0 for the legacy API. With the graph API forced, a shape without an engine, or tensors less aligned
 * than its plan assumes, is an error. */
static cnn_status cnn_cuda_conv_graph_try(cnn_cuda_ctx *ctx, cnn_cuda_conv_entry *e, int dir,
                                          void *const ptrs[CNN_CUDA_GRAPH_TENSORS], int *ran, const char *op)
{
    cnn_status st = CNN_OK;
    cnn_cuda_conv_graph *g = &e->graph[dir];
    *ran = 0;
    if (ctx->conv_api == CNN_CUDA_CONV_API_LEGACY) return CNN_OK;
    if (cnn_cuda_conv_graph_needs_plan(g, ptrs)) {
        const cnn_cuda_conv_graph_spec spec = {.s = &e->key.s, .dtype = (cnn_dtype)e->key.dtype,
                                               .tf32 = e->key.tf32, .deterministic = e->key.deterministic,
                                               .dir = dir};
        CNN_TRY(cnn_cuda_conv_graph_plan(ctx, (cnn_cuda_conv_api)ctx->conv_api, &spec, g, ptrs, op));
        if (ctx->log) cnn_cuda_conv_log(e, g, op);
    }
    if (cnn_cuda_conv_graph_usable(g, ptrs)) {
        CNN_TRY(cnn_cuda_conv_graph_run(ctx, g, ptrs, op));
        *ran = 1;
    } else if (ctx->conv_api == CNN_CUDA_CONV_API_GRAPH) {
        return cnn_error(CNN_ERR_UNSUPPORTED, "cuda %s: %s (CNN_CUDNN_CONV=graph)", op,
                         g->state < 0 ? "cuDNN's graph API has no engine for this shape"
                                      : "the tensors are less aligned than the graph API's plan for this shape");
    }
fail:
    return st;
}

static cnn_status cnn_cuda_conv_entry_get(cnn_backend *b, const cnn_conv2d_args *a, int dir, cnn_plan **tmp,
                                          cnn_cuda_ctx **ctx, cnn_cuda_conv_entry **out, const char *op)
{
    cnn_status st = CNN_OK;
    cnn_cuda_conv_key key;
    void *e = NULL;
    CNN_TRY(cnn_cuda_conv_key_of(a, dir, b->ctx, &key, op));
    CNN_TRY(cnn_cuda_enter(b, ctx, op));
    CNN_TRY(cnn_plan_entry(a->plan ? a->plan : tmp, CNN_PLAN_CONV, CNN_CUDA_PLAN_SLOTS, &key, sizeof key,
                           sizeof(cnn_cuda_conv_entry), cnn_cuda_conv_entry_destroy, &e, op));
    CNN_TRY(cnn_cuda_conv_prepare(e, op));
    *out = e;
fail:
    return st;
}

/* Grows the workspace for an algorithm search to what the largest candidate wants (up to the cap). Without the
 * memory, the search goes on with what there is: algorithms that need more are then skipped by cuDNN. */
static cnn_status cnn_cuda_conv_search_workspace(cnn_cuda_ctx *ctx, size_t want, const char *op)
{
    if (want > CNN_CUDA_CONV_WORKSPACE_MAX) want = CNN_CUDA_CONV_WORKSPACE_MAX;
    cnn_status st = cnn_cuda_workspace(ctx, want, op);
    if (st == CNN_ERR_NO_MEMORY) {
        cnn_clear_error();
        st = CNN_OK;
    }
    return st;
}

static cnn_status cnn_cuda_conv_no_algo(const cnn_cuda_conv_entry *e, int tried, const char *op, const char *what)
{
    const cnn_cuda_conv_key *k = &e->key;
    char sizes[CNN_CONV2D_SIZES_BUF];
    return cnn_error(CNN_ERR_UNSUPPORTED, "cuda %s: cuDNN has no %s%s %s algorithm that runs for %s (%d tried)", op,
                     cnn_dtype_name((cnn_dtype)k->dtype), k->dtype == CNN_F32 && !k->tf32 ? " (FMA math)" : "", what,
                     cnn_conv2d_sizes_str(&k->s, sizes, sizeof sizes), tried);
}

/* An algorithm result we accept: it ran, and for f32 at precision FP32 in plain f32 (no tensor-op math, which
 * means TF32 for f32 data). */
#define CNN_CUDA_ALGO_OK(e, perf)                                                                              \
    ((perf).status == CUDNN_STATUS_SUCCESS &&                                                                  \
     ((e)->key.dtype != CNN_F32 || (e)->key.tf32 ||                                                            \
      ((perf).mathType != CUDNN_TENSOR_OP_MATH && (perf).mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)) && \
     (!(e)->key.deterministic || (perf).determinism == CUDNN_DETERMINISTIC))

static cnn_status cnn_cuda_conv_find_fwd(cnn_cuda_ctx *ctx, cnn_cuda_conv_entry *e, const void *x, const void *w,
                                         void *y, const char *op)
{
    cnn_status st = CNN_OK;
    cudnnConvolutionFwdAlgoPerf_t perf[CNN_CUDA_MAX_ALGOS];
    int max = 0, got = 0;
    size_t want = 0;
    CNN_CUDA_DNN(op, cudnnGetConvolutionForwardAlgorithmMaxCount, ctx->cudnn, &max);
    if (max > CNN_CUDA_MAX_ALGOS) max = CNN_CUDA_MAX_ALGOS;
    CNN_CUDA_DNN(op, cudnnGetConvolutionForwardAlgorithm_v7, ctx->cudnn, e->xd, e->wd, e->cd, e->yd, max, &got, perf);
    if (e->key.deterministic) { /* cuDNN's heuristic order, no timing: the same choice every run */
        for (int i = 0; i < got; i++)
            if (CNN_CUDA_ALGO_OK(e, perf[i]) && perf[i].memory <= CNN_CUDA_CONV_WORKSPACE_MAX) {
                e->fwd_algo = perf[i].algo;
                e->fwd_ws = perf[i].memory;
                e->have_fwd = 1;
                return CNN_OK;
            }
        return cnn_cuda_conv_no_algo(e, got, op, "deterministic forward");
    }
    for (int i = 0; i < got; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory > want) want = perf[i].memory;
    CNN_TRY(cnn_cuda_conv_search_workspace(ctx, want, op));
    CNN_CUDA_DNN(op, cudnnFindConvolutionForwardAlgorithmEx, ctx->cudnn, e->xd, x, e->wd, w, e->cd, e->yd, y, max,
                 &got, perf, ctx->workspace, ctx->workspace_size);
    for (int i = 0; i < got; i++) /* fastest first */
        if (CNN_CUDA_ALGO_OK(e, perf[i])) {
            e->fwd_algo = perf[i].algo;
            e->fwd_ws = perf[i].memory;
            e->have_fwd = 1;
            return CNN_OK;
        }
    return cnn_cuda_conv_no_algo(e, got, op, "forward");
fail:
    return st;
}

static cnn_status cnn_cuda_conv_find_bwd_data(cnn_cuda_ctx *ctx, cnn_cuda_conv_entry *e, const void *w,
                                              const void *dy, void *dx, const char *op)
{
    cnn_status st = CNN_OK;
    cudnnConvolutionBwdDataAlgoPerf_t perf[CNN_CUDA_MAX_ALGOS];
    int max = 0, got = 0;
    size_t want = 0;
    CNN_CUDA_DNN(op, cudnnGetConvolutionBackwardDataAlgorithmMaxCount, ctx->cudnn, &max);
    if (max > CNN_CUDA_MAX_ALGOS) max = CNN_CUDA_MAX_ALGOS;
    CNN_CUDA_DNN(op, cudnnGetConvolutionBackwardDataAlgorithm_v7, ctx->cudnn, e->wd, e->yd, e->cd, e->xd, max, &got,
                 perf);
    if (e->key.deterministic) { /* cuDNN's heuristic order, no timing: the same choice every run */
        for (int i = 0; i < got; i++)
            if (CNN_CUDA_ALGO_OK(e, perf[i]) && perf[i].memory <= CNN_CUDA_CONV_WORKSPACE_MAX) {
                e->bwd_data_algo = perf[i].algo;
                e->bwd_data_ws = perf[i].memory;
                e->have_bwd_data = 1;
                return CNN_OK;
            }
        return cnn_cuda_conv_no_algo(e, got, op, "deterministic backward data");
    }
    for (int i = 0; i < got; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory > want) want = perf[i].memory;
    CNN_TRY(cnn_cuda_conv_search_workspace(ctx, want, op));
    CNN_CUDA_DNN(op, cudnnFindConvolutionBackwardDataAlgorithmEx, ctx->cudnn, e->wd, w, e->yd, dy, e->cd, e->xd, dx,
                 max, &got, perf, ctx->workspace, ctx->workspace_size);
    for (int i = 0; i < got; i++)
        if (CNN_CUDA_ALGO_OK(e, perf[i])) {
            e->bwd_data_algo = perf[i].algo;
            e->bwd_data_ws = perf[i].memory;
            e->have_bwd_data = 1;
            return CNN_OK;
        }
    return cnn_cuda_conv_no_algo(e, got, op, "backward data");
fail:
    return st;
}

static cnn_status cnn_cuda_conv_find_bwd_filter(cnn_cuda_ctx *ctx, cnn_cuda_conv_entry *e, const void *x,
                                                const void *dy, void *dw, const char *op)
{
    cnn_status st = CNN_OK;
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CNN_CUDA_MAX_ALGOS];
    int max = 0, got = 0;
    size_t want = 0;
    CNN_CUDA_DNN(op, cudnnGetConvolutionBackwardFilterAlgorithmMaxCount, ctx->cudnn, &max);
    if (max > CNN_CUDA_MAX_ALGOS) max = CNN_CUDA_MAX_ALGOS;
    CNN_CUDA_DNN(op, cudnnGetConvolutionBackwardFilterAlgorithm_v7, ctx->cudnn, e->xd, e->yd, e->cd, e->wd, max,
                 &got, perf);
    if (e->key.deterministic) { /* cuDNN's heuristic order, no timing: the same choice every run */
        for (int i = 0; i < got; i++)
            if (CNN_CUDA_ALGO_OK(e, perf[i]) && perf[i].memory <= CNN_CUDA_CONV_WORKSPACE_MAX) {
                e->bwd_filter_algo = perf[i].algo;
                e->bwd_filter_ws = perf[i].memory;
                e->have_bwd_filter = 1;
                return CNN_OK;
            }
        return cnn_cuda_conv_no_algo(e, got, op, "deterministic backward filter");
    }
    for (int i = 0; i < got; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory > want) want = perf[i].memory;
    CNN_TRY(cnn_cuda_conv_search_workspace(ctx, want, op));
    CNN_CUDA_DNN(op, cudnnFindConvolutionBackwardFilterAlgorithmEx, ctx->cudnn, e->xd, x, e->yd, dy, e->cd, e->wd,
                 dw, max, &got, perf, ctx->workspace, ctx->workspace_size);
    for (int i = 0; i < got; i++)
        if (CNN_CUDA_ALGO_OK(e, perf[i])) {
            e->bwd_filter_algo = perf[i].algo;
            e->bwd_filter_ws = perf[i].memory;
            e->have_bwd_filter = 1;
            return CNN_OK;
        }
    return cnn_cuda_conv_no_algo(e, got, op, "backward filter");
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the ops

cnn_status cnn_cuda_conv2d_forward(cnn_backend *b, const cnn_conv2d_args *a)
{
    static const char *op = "conv2d_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_plan *tmp = NULL;
    cnn_cuda_conv_entry *e = NULL;
    CNN_TRY(cnn_cuda_conv_entry_get(b, a, CNN_CUDA_CONV_FWD, &tmp, &ctx, &e, op));

    void *const ptrs[CNN_CUDA_GRAPH_TENSORS] = {a->x->data, a->w->data, a->y->data};
    int graph = 0;
    CNN_TRY(cnn_cuda_conv_graph_try(ctx, e, CNN_OP_FWD, ptrs, &graph, op));
    if (!graph) {
        const void *x = NULL;
        CNN_TRY(cnn_cuda_conv_legacy_x(ctx, e, a->x, &x, op));
        if (!e->have_fwd) CNN_TRY(cnn_cuda_conv_find_fwd(ctx, e, x, a->w->data, a->y->data, op));
        CNN_TRY(cnn_cuda_workspace(ctx, e->fwd_ws, op));
        CNN_CUDA_DNN(op, cudnnConvolutionForward, ctx->cudnn, &cnn_cuda_one, e->xd, x, e->wd, a->w->data, e->cd,
                     e->fwd_algo, ctx->workspace, ctx->workspace_size, &cnn_cuda_zero, e->yd, a->y->data);
    }
    if (a->b || a->act != CNN_ACT_NONE)
        CNN_CUDA_RT(op, cnn_cuda_launch_bias_act, ctx->compute, a->y->data, a->y->dtype, a->b ? a->b->data : NULL,
                    e->key.s.n * e->key.s.oh * e->key.s.ow, e->key.s.o, a->act, a->act_alpha);
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}

cnn_status cnn_cuda_conv2d_backward_data(cnn_backend *b, const cnn_conv2d_args *a)
{
    static const char *op = "conv2d_backward_data";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_plan *tmp = NULL;
    cnn_cuda_conv_entry *e = NULL;
    CNN_TRY(cnn_cuda_conv_entry_get(b, a, CNN_CUDA_CONV_BWD_DATA, &tmp, &ctx, &e, op));

    void *const ptrs[CNN_CUDA_GRAPH_TENSORS] = {a->dx->data, a->w->data, a->dy->data};
    int graph = 0;
    CNN_TRY(cnn_cuda_conv_graph_try(ctx, e, CNN_OP_BWD_DATA, ptrs, &graph, op));
    if (!graph) {
        CNN_TRY(cnn_cuda_conv_xpad(e, op));
        void *dx = e->explicit_pad ? (void *)e->xpad : a->dx->data;
        if (!e->have_bwd_data) CNN_TRY(cnn_cuda_conv_find_bwd_data(ctx, e, a->w->data, a->dy->data, dx, op));
        CNN_TRY(cnn_cuda_workspace(ctx, e->bwd_data_ws, op));
        CNN_CUDA_DNN(op, cudnnConvolutionBackwardData, ctx->cudnn, &cnn_cuda_one, e->wd, a->w->data, e->yd,
                     a->dy->data, e->cd, e->bwd_data_algo, ctx->workspace, ctx->workspace_size, &cnn_cuda_zero, e->xd,
                     dx);
        if (e->explicit_pad)
            CNN_CUDA_RT(op, cnn_cuda_launch_crop, ctx->compute, e->xpad, a->dx->data, a->dx->dtype, &e->pad);
    }
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}

cnn_status cnn_cuda_conv2d_backward_filter(cnn_backend *b, const cnn_conv2d_args *a)
{
    static const char *op = "conv2d_backward_filter";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_plan *tmp = NULL;
    cnn_cuda_conv_entry *e = NULL;
    CNN_TRY(cnn_cuda_conv_entry_get(b, a, CNN_CUDA_CONV_BWD_FILTER, &tmp, &ctx, &e, op));

    void *const ptrs[CNN_CUDA_GRAPH_TENSORS] = {a->x->data, a->dw->data, a->dy->data};
    int graph = 0;
    CNN_TRY(cnn_cuda_conv_graph_try(ctx, e, CNN_OP_BWD_WEIGHTS, ptrs, &graph, op));
    if (!graph) {
        const void *x = NULL;
        CNN_TRY(cnn_cuda_conv_legacy_x(ctx, e, a->x, &x, op));
        if (!e->have_bwd_filter) CNN_TRY(cnn_cuda_conv_find_bwd_filter(ctx, e, x, a->dy->data, a->dw->data, op));
        CNN_TRY(cnn_cuda_workspace(ctx, e->bwd_filter_ws, op));
        CNN_CUDA_DNN(op, cudnnConvolutionBackwardFilter, ctx->cudnn, &cnn_cuda_one, e->xd, x, e->yd, a->dy->data,
                     e->cd, e->bwd_filter_algo, ctx->workspace, ctx->workspace_size, &cnn_cuda_zero, e->wd,
                     a->dw->data);
    }
    if (a->db)
        CNN_TRY(cnn_cuda_col_sum(ctx, a->dy->data, a->dy->dtype, e->key.s.n * e->key.s.oh * e->key.s.ow, e->key.s.o,
                                 a->db->data, op));
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}
