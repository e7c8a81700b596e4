/* Asynchronous uploads for the data loader: page-locked host memory (the loader's ring of batches lives in it),
 * and host -> device copies on the copy stream that the compute stream waits for through an event, so that the
 * upload of batch k+1 runs while the kernels of batch k do. */
#include <stdio.h>

#include "cuda/cuda_util.h"
#include "cuda/ops.h"

cnn_status cnn_cuda_host_alloc(cnn_backend *b, size_t bytes, void **ptr)
{
    static const char *op = "host_alloc";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    *ptr = NULL;
    if (bytes == 0) bytes = 1;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    /* portable: the memory is page-locked for every context, whichever thread or device uses it */
    cudaError_t e = cudaHostAlloc(ptr, bytes, cudaHostAllocPortable);
    if (e != cudaSuccess) {
        *ptr = NULL;
        (void)cudaGetLastError();
        return cnn_error(e == cudaErrorMemoryAllocation ? CNN_ERR_NO_MEMORY : CNN_ERR_BACKEND,
                         "cuda host_alloc: cudaHostAlloc of %.1f MiB of page-locked memory failed: %s",
                         (double)bytes / 1048576.0, cudaGetErrorString(e));
    }
fail:
    return st;
}

void cnn_cuda_host_free(cnn_backend *b, void *ptr)
{
    cnn_cuda_ctx *ctx = NULL;
    if (!ptr) return;
    if (cnn_cuda_enter(b, &ctx, "host_free") != CNN_OK) return;
    /* cudaFreeHost waits for copies that still read ptr; a failure here has nowhere to go */
    if (cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError();
}

cnn_status cnn_cuda_write_async(cnn_backend *b, cnn_tensor *dst, const void *host, size_t bytes)
{
    static const char *op = "write_async";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    /* core/ops.c checked the tensor, the size (not 0) and the buffers */
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cudaMemcpyAsync, dst->data, host, bytes, cudaMemcpyHostToDevice, ctx->copy);
    /* the event marks the copy's end; compute work queued from now on starts after it. Re-recording the one event
     * is safe: the wait below captures this recording. */
    CNN_CUDA_RT(op, cudaEventRecord, ctx->copy_done, ctx->copy);
    CNN_CUDA_RT(op, cudaStreamWaitEvent, ctx->compute, ctx->copy_done, 0);
fail:
    return st;
}
