/* Checked CUDA / cuDNN / cuBLAS calls, the workspace, deferred kernel errors, the plan cache and shared argument
 * checks for the CUDA backend (see cuda_util.h for the rules). */
#include "cuda/cuda_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------------------------
// status mapping

cnn_status cnn_cuda_rt_status(cudaError_t e, const char *what, const char *call)
{
    if (e == cudaSuccess) return CNN_OK;
    /* clear the runtime's last error so that a later launch check does not report this one again (sticky errors,
     * the ones that break the context, stay whatever we do) */
    (void)cudaGetLastError();
    cnn_status st = CNN_ERR_BACKEND;
    if (e == cudaErrorMemoryAllocation) st = CNN_ERR_NO_MEMORY;
    else if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) st = CNN_ERR_NOT_FOUND;
    return cnn_error(st, "cuda %s: %s failed: %s (%s)", what, call, cudaGetErrorString(e), cudaGetErrorName(e));
}

cnn_status cnn_cuda_dnn_status(cudnnStatus_t s, const char *what, const char *call)
{
    if (s == CUDNN_STATUS_SUCCESS) return CNN_OK;
    char detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    cnn_status st = CNN_ERR_BACKEND;
    int code = (int)s;
    if (code / 1000 == CUDNN_STATUS_NOT_SUPPORTED / 1000) st = CNN_ERR_UNSUPPORTED;
    else if (s == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
             s == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
        st = CNN_ERR_NO_MEMORY;
    else if (code / 1000 == CUDNN_STATUS_BAD_PARAM / 1000) st = CNN_ERR_INVALID_ARG;
    return cnn_error(st, "cuda %s: %s failed: %s%s%s", what, call, cudnnGetErrorString(s), detail[0] ? ": " : "",
                     detail);
}

cnn_status cnn_cuda_blas_status(cublasStatus_t s, const char *what, const char *call)
{
    if (s == CUBLAS_STATUS_SUCCESS) return CNN_OK;
    cnn_status st = CNN_ERR_BACKEND;
    if (s == CUBLAS_STATUS_ALLOC_FAILED) st = CNN_ERR_NO_MEMORY;
    else if (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_ARCH_MISMATCH) st = CNN_ERR_UNSUPPORTED;
    else if (s == CUBLAS_STATUS_INVALID_VALUE) st = CNN_ERR_INVALID_ARG;
    return cnn_error(st, "cuda %s: %s failed: %s", what, call, cublasGetStatusString(s));
}

// ---------------------------------------------------------------------------------------------------------------
// context, workspace, deferred errors

cnn_status cnn_cuda_enter(cnn_backend *b, cnn_cuda_ctx **out, const char *op)
{
    cnn_status st = CNN_OK;
    int current = -1;
    *out = NULL;
    if (!b || b->ops != &cnn_cuda_ops || !b->ctx)
        return cnn_error(CNN_ERR_INVALID_ARG, "cuda %s: not a CUDA backend", op);
    cnn_cuda_ctx *ctx = b->ctx;
    CNN_CUDA_RT(op, cudaGetDevice, &current);
    if (current != ctx->device) CNN_CUDA_RT(op, cudaSetDevice, ctx->device);
    *out = ctx;
fail:
    return st;
}

uint32_t cnn_cuda_address_align(uintptr_t address, uint32_t max)
{
    uint32_t align = 1;
    while (align < max && !(address & align)) align <<= 1;
    return align;
}

cnn_status cnn_cuda_workspace(cnn_cuda_ctx *ctx, size_t bytes, const char *what)
{
    cnn_status st = CNN_OK;
    if (bytes <= ctx->workspace_size) return CNN_OK;
    /* queued work may still use the old workspace */
    CNN_CUDA_RT(what, cudaStreamSynchronize, ctx->compute);
    if (ctx->workspace && cudaFree(ctx->workspace) != cudaSuccess) (void)cudaGetLastError(); /* freed or lost */
    ctx->workspace = NULL;
    ctx->workspace_size = 0;
    cudaError_t e = cudaMalloc(&ctx->workspace, bytes);
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        (void)cudaGetLastError();
        ctx->workspace = NULL;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError(); /* then 0 free of 0 */
        return cnn_error(CNN_ERR_NO_MEMORY,
                         "cuda %s: out of device memory for a %.1f MiB workspace (%.1f MiB free of %.1f MiB): try a "
                         "smaller batch",
                         what, (double)bytes / 1048576.0, (double)free_b / 1048576.0, (double)total_b / 1048576.0);
    }
    ctx->workspace_size = bytes;
fail:
    return st;
}

cnn_status cnn_cuda_table_put(cnn_cuda_ctx *ctx, cnn_cuda_table *t, const void *src, size_t bytes, const void **dev,
                              const char *what)
{
    cnn_status st = CNN_OK;
    *dev = NULL;
    if (t->bytes == bytes && memcmp(t->host, src, bytes) == 0) {
        *dev = t->dev;
        return CNN_OK;
    }
    /* the previous upload may not have read t->host yet; the kernels that read t->dev are ordered after it anyway */
    CNN_CUDA_RT(what, cudaStreamSynchronize, ctx->compute);
    t->bytes = 0;
    if (bytes > t->capacity) {
        void *host = t->host, *old_dev = t->dev;
        t->host = t->dev = NULL;
        t->capacity = 0;
        /* both freed before either error is reported: nothing leaks on the error path */
        const cudaError_t host_err = host ? cudaFreeHost(host) : cudaSuccess;
        const cudaError_t dev_err = old_dev ? cudaFree(old_dev) : cudaSuccess;
        CNN_TRY(cnn_cuda_rt_status(host_err != cudaSuccess ? host_err : dev_err, what,
                                   host_err != cudaSuccess ? "cudaFreeHost" : "cudaFree"));
        CNN_CUDA_RT(what, cudaHostAlloc, &t->host, bytes, cudaHostAllocDefault);
        CNN_CUDA_RT(what, cudaMalloc, &t->dev, bytes);
        t->capacity = bytes;
    }
    memcpy(t->host, src, bytes);
    CNN_CUDA_RT(what, cudaMemcpyAsync, t->dev, t->host, bytes, cudaMemcpyHostToDevice, ctx->compute);
    t->bytes = bytes;
    *dev = t->dev;
fail:
    return st;
}

void cnn_cuda_table_free(cnn_cuda_table *t)
{
    if (t->host && cudaFreeHost(t->host) != cudaSuccess) (void)cudaGetLastError();
    if (t->dev && cudaFree(t->dev) != cudaSuccess) (void)cudaGetLastError();
    *t = (cnn_cuda_table){0};
}

cnn_status cnn_cuda_check_deferred(cnn_cuda_ctx *ctx)
{
    volatile cnn_cuda_deferred *d = ctx->deferred;
    if (!d || d->code == CNN_CUDA_DEFERRED_NONE) return CNN_OK;
    int code = d->code, label = d->label;
    long long sample = (long long)d->sample, limit = (long long)d->limit;
    d->code = CNN_CUDA_DEFERRED_NONE;
    if (code == CNN_CUDA_DEFERRED_BAD_LABEL)
        return cnn_error(CNN_ERR_INVALID_ARG,
                         "cuda softmax_xent: label %d of sample %lld is outside [0, %lld) (found on the device; its "
                         "loss and gradient are NaN)",
                         label, sample, limit);
    if (code == CNN_CUDA_DEFERRED_BAD_WEIGHT)
        return cnn_error(CNN_ERR_INVALID_ARG,
                         "cuda softmax_xent: class weight %d is %g; weights must be positive and finite (found on the "
                         "device at sample %lld; its loss and gradient are NaN)",
                         label, (double)d->value, sample);
    return cnn_error(CNN_ERR_BACKEND, "cuda: a kernel reported error %d", code);
}

cnn_status cnn_cuda_col_sum(cnn_cuda_ctx *ctx, const void *x, int dt, int64_t rows, int64_t cols, float *out,
                            const char *what)
{
    cnn_status st = CNN_OK;
    int64_t scratch = cnn_cuda_col_sum_scratch(rows, cols);
    if (scratch > 0) CNN_TRY(cnn_cuda_workspace(ctx, (size_t)scratch * sizeof(float), what));
    CNN_CUDA_RT(what, cnn_cuda_launch_col_sum, ctx->compute, x, dt, rows, cols, out, (float *)ctx->workspace);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// plans



cudnnDataType_t cnn_cuda_dnn_type(cnn_dtype dt)
{
    return dt == CNN_F16 ? CUDNN_DATA_HALF : dt == CNN_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}


cnn_status cnn_cuda_check_int(int64_t n, const char *op, const char *what)
{
    if (n >= 0 && n <= INT32_MAX) return CNN_OK;
    return cnn_error(CNN_ERR_UNSUPPORTED, "cuda %s: %s = %lld does not fit the 32-bit sizes cuDNN and cuBLAS take",
                     op, what, (long long)n);
}
