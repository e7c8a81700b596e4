/* The CUDA backend's private toolkit: its context, checked CUDA / cuDNN / cuBLAS / cuBLASLt calls, the device
 * workspace and the per-call-site plan cache (the ops' arguments are checked by core/ops.c).
 *
 * Rules:
 * - Every CUDA runtime, cuDNN, cuBLAS and cuBLASLt call goes through CNN_CUDA_RT / CNN_CUDA_DNN / CNN_CUDA_BLAS
 *   (cuBLASLt returns cuBLAS's status type), which turn the library's status into a cnn_status with a message
 *   naming the op and the call ("cuda conv2d_forward: cudnnConvolutionForward failed: CUDNN_STATUS_BAD_PARAM").
 *   Our kernels are started by the launchers of cuda/kernels.h, which return the launch's cudaError_t to check
 *   the same way.
 * - All work goes to the compute stream, in order; the cuDNN and cuBLAS handles are bound to it, and cuBLASLt is
 *   given it at every call. The copy stream and its event are there for an asynchronous loader (host -> device
 *   uploads overlapping compute).
 * - Our tensors keep their plain layouts: NHWC activations, OHWI conv weights (= cuDNN's NHWC filter layout,
 *   KRSC), (OUT, IN) dense weights. Activations, gradients and the weights the layers compute with are F32, F16
 *   or BF16 (mixed precision); parameters other than weights, master weights and optimizer state are F32. The
 *   16-bit types compute in f32 (cuDNN's and cuBLAS's compute type, our kernels' float arithmetic).
 * - Host-side C (C11): cuDNN, cuBLAS and cuBLASLt are C libraries; only the kernels are CUDA C++ (kernels.cu). */
#ifndef CNN_CUDA_UTIL_H
#define CNN_CUDA_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/plan.h"
#include "cuda/kernels.h"

/* ---- the backend context ---- */

/* A table of per-tensor descriptors that a multi-tensor kernel reads (kernels.h), kept in device memory between
 * calls: training passes the same tensors every step, so the table is uploaded only when its bytes change. */
typedef struct cnn_cuda_table {
    void *host;      /* page-locked: the bytes of the latest upload, and its source */
    void *dev;
    size_t bytes;    /* of the valid contents; 0: none */
    size_t capacity; /* of each buffer */
} cnn_cuda_table;

typedef struct cnn_cuda_ctx {
    int device;
    cudaStream_t compute;    /* every op, transfer and library call runs here, in order */
    cudaStream_t copy;       /* for asynchronous uploads; `copy_done` orders them before compute */
    cudaEvent_t copy_done;
    cudnnHandle_t cudnn;     /* bound to `compute` */
    cublasHandle_t cublas;   /* bound to `compute` */
    cublasLtHandle_t cublaslt; /* dense products with bias and ReLU in the epilogue (dense.c) */
    void *workspace;         /* scratch for cuDNN and cuBLASLt algorithms and our reductions; grows, never shrinks */
    size_t workspace_size;
    cnn_cuda_deferred *deferred;     /* host-mapped: errors that kernels report, checked at the next sync/read */
    cnn_cuda_deferred *deferred_dev; /* the same memory as the device sees it */
    size_t total_mem;
    cnn_precision precision; /* FP32: no tensor cores for f32 data; TF32: cuDNN and cuBLAS may round f32 to TF32 */
    int *nonfinite;          /* host-mapped flag for the finiteness check (mixed precision's loss scaling) */
    int *nonfinite_dev;
    int deterministic;       /* 1: convolution algorithms from cuDNN's heuristics, deterministic ones only */
    int conv_api;            /* how convolutions reach cuDNN: a cnn_cuda_conv_api (conv_graph.h) */
    int log;                 /* $CNN_CUDA_LOG set (not "0"): a line on stderr for every convolution plan made */
    cnn_cuda_table opt_table;   /* the multi-tensor optimizer updates' descriptors */
    cnn_cuda_table sumsq_table; /* sum_squares_multi's */
} cnn_cuda_ctx;

extern const cnn_backend_ops cnn_cuda_ops;

/* The context of `b`, with b's device made current for this thread (ops may be called from any thread). */
cnn_status cnn_cuda_enter(cnn_backend *b, cnn_cuda_ctx **ctx, const char *op);

/* ---- checked library calls ---- */

/* Map a library status to ours and record "cuda <what>: <call> failed: <reason>"; CNN_OK on success. */
cnn_status cnn_cuda_rt_status(cudaError_t e, const char *what, const char *call);
cnn_status cnn_cuda_dnn_status(cudnnStatus_t s, const char *what, const char *call);
cnn_status cnn_cuda_blas_status(cublasStatus_t s, const char *what, const char *call);

/* Call a library function (or one of our launchers); on failure set `st` and jump to `fail`. */
#define CNN_CUDA_RT(what, call, ...) CNN_TRY(cnn_cuda_rt_status(call(__VA_ARGS__), (what), #call))
#define CNN_CUDA_DNN(what, call, ...) CNN_TRY(cnn_cuda_dnn_status(call(__VA_ARGS__), (what), #call))
#define CNN_CUDA_BLAS(what, call, ...) CNN_TRY(cnn_cuda_blas_status(call(__VA_ARGS__), (what), #call))

/* The largest power of two up to `max` (a power of two) that divides `address`: the alignment a library may
 * assume of a pointer (OR several addresses together for the alignment they share). */
uint32_t cnn_cuda_address_align(uintptr_t address, uint32_t max);

/* Makes the workspace hold at least `bytes` (waiting for queued work before it frees the old one). */
cnn_status cnn_cuda_workspace(cnn_cuda_ctx *ctx, size_t bytes, const char *what);

/* *dev = a device copy of src[0..bytes) (bytes > 0) that the work queued on the compute stream after this call
 * sees: t's copy when it holds these bytes already, else a new upload into it (which first waits for the compute
 * stream, since the previous upload may still be reading t->host). */
cnn_status cnn_cuda_table_put(cnn_cuda_ctx *ctx, cnn_cuda_table *t, const void *src, size_t bytes, const void **dev,
                              const char *what);
/* Teardown: frees both buffers, ignoring errors (the backend's destroy). */
void cnn_cuda_table_free(cnn_cuda_table *t);

/* Errors that kernels recorded since the last check (a label out of range): CNN_OK or the error, once.
 * Call only after the compute stream was synchronized. */
cnn_status cnn_cuda_check_deferred(cnn_cuda_ctx *ctx);

/* Column sums of a row-major (rows, cols) matrix of dtype dt into out[cols] (f32; bias gradients): our two-pass
 * kernel, with its partial sums in the workspace. */
cnn_status cnn_cuda_col_sum(cnn_cuda_ctx *ctx, const void *x, int dt, int64_t rows, int64_t cols, float *out,
                            const char *what);

/* ---- plans (core/plan.h) ---- */

/* Four shape keys: the full and the smaller last batch of an epoch, and the same two of evaluation (batch 256),
 * which alternate every epoch; each new key costs an algorithm search (milliseconds per convolution), so they
 * should stay cached. */
#define CNN_CUDA_PLAN_SLOTS 4

/* ---- what only this backend checks (core/ops.c checks the rest) ---- */

/* cuDNN's name for a floating-point dtype. */
cudnnDataType_t cnn_cuda_dnn_type(cnn_dtype dt);

/* cuDNN and cuBLAS take 32-bit sizes: CNN_ERR_UNSUPPORTED naming `what` when n does not fit. */
cnn_status cnn_cuda_check_int(int64_t n, const char *op, const char *what);

#endif
