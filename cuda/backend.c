/* The CUDA backend object: one device, a compute stream and a copy stream (with an event between them), cuDNN and
 * cuBLAS handles bound to the compute stream, a cuBLASLt handle, a growing workspace, device memory, transfers,
 * and the ops table. The ops themselves live in conv.c (cuDNN), pool.c (cuDNN, our kernels for asymmetric
 * padding), dense.c (cuBLASLt and cuBLAS), batchnorm.c and eltwise.c (our kernels, kernels.cu). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/conv_graph.h"
#include "cuda/cuda_util.h"
#include "cuda/ops.h"

/* 2^30: GiB, for messages */
#define CNN_CUDA_GIB 1073741824.0
#define CNN_CUDA_MIB 1048576.0

// ---------------------------------------------------------------------------------------------------------------
// memory

static cnn_status cnn_cuda_alloc(cnn_backend *b, size_t bytes, void **ptr)
{
    static const char *op = "alloc";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    *ptr = NULL;
    if (bytes == 0) return CNN_OK;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    cudaError_t e = cudaMalloc(ptr, bytes);
    if (e == cudaErrorMemoryAllocation) {
        size_t free_b = 0, total_b = 0;
        (void)cudaGetLastError();
        *ptr = NULL;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
        return cnn_error(CNN_ERR_NO_MEMORY,
                         "cuda alloc: out of device memory on %s asking for %.1f MiB (%.1f MiB free of %.1f MiB): "
                         "try a smaller batch size",
                         b->name, (double)bytes / CNN_CUDA_MIB, (double)free_b / CNN_CUDA_MIB,
                         (double)total_b / CNN_CUDA_MIB);
    }
    if (e != cudaSuccess) *ptr = NULL;
    CNN_TRY(cnn_cuda_rt_status(e, op, "cudaMalloc"));
fail:
    return st;
}

static void cnn_cuda_free(cnn_backend *b, void *ptr)
{
    cnn_cuda_ctx *ctx = NULL;
    if (!ptr) return;
    if (cnn_cuda_enter(b, &ctx, "free") != CNN_OK) return;
    /* cudaFree waits for the work that may still use ptr; a failure here (a broken context) has nowhere to go */
    if (cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// transfers

/* Waits for the compute stream and reports what kernels recorded meanwhile. */
static cnn_status cnn_cuda_wait(cnn_cuda_ctx *ctx, const char *op)
{
    cnn_status st = CNN_OK;
    CNN_CUDA_RT(op, cudaStreamSynchronize, ctx->compute);
    CNN_TRY(cnn_cuda_check_deferred(ctx));
fail:
    return st;
}

static cnn_status cnn_cuda_write(cnn_backend *b, cnn_tensor *dst, const void *host, size_t bytes)
{
    static const char *op = "write";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    /* core/ops.c checked the tensor, the size (not 0) and the buffers */
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cudaMemcpyAsync, dst->data, host, bytes, cudaMemcpyHostToDevice, ctx->compute);
    /* the caller may reuse `host` when we return, and it may be pinned (then the copy above is truly async) */
    CNN_CUDA_RT(op, cudaStreamSynchronize, ctx->compute);
fail:
    return st;
}

static cnn_status cnn_cuda_read(cnn_backend *b, const cnn_tensor *src, void *host, size_t bytes)
{
    static const char *op = "read";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    if (bytes) CNN_CUDA_RT(op, cudaMemcpyAsync, host, src->data, bytes, cudaMemcpyDeviceToHost, ctx->compute);
    CNN_TRY(cnn_cuda_wait(ctx, op));
fail:
    return st;
}

static cnn_status cnn_cuda_copy(cnn_backend *b, cnn_tensor *dst, const cnn_tensor *src)
{
    static const char *op = "copy";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    size_t bytes = cnn_tensor_bytes(src);
    if (!bytes || dst->data == src->data) return CNN_OK;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cudaMemcpyAsync, dst->data, src->data, bytes, cudaMemcpyDeviceToDevice, ctx->compute);
fail:
    return st;
}

static cnn_status cnn_cuda_set_precision(cnn_backend *b, cnn_precision precision)
{
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    if ((unsigned)precision >= CNN_PRECISION_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "cuda set_precision: unknown precision %d", (int)precision);
    CNN_TRY(cnn_cuda_enter(b, &ctx, "set_precision"));
    /* convolution and dense plans key on it (conv.c, dense.c) */
    ctx->precision = precision;
fail:
    return st;
}

static cnn_status cnn_cuda_set_deterministic(cnn_backend *b, int on)
{
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    CNN_TRY(cnn_cuda_enter(b, &ctx, "set_deterministic"));
    ctx->deterministic = on != 0; /* convolution plans key on it (conv.c) */
fail:
    return st;
}

static cnn_status cnn_cuda_sync(cnn_backend *b)
{
    static const char *op = "sync";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    CNN_TRY(cnn_cuda_enter(b, &ctx, op));
    CNN_CUDA_RT(op, cudaStreamSynchronize, ctx->copy);
    CNN_TRY(cnn_cuda_wait(ctx, op));
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the backend object

static void cnn_cuda_destroy(cnn_backend *b)
{
    if (!b) return;
    cnn_cuda_ctx *ctx = b->ctx;
    if (ctx) {
        /* teardown: errors cannot be reported any more, only kept from leaking into the next runtime call */
        if (cudaSetDevice(ctx->device) != cudaSuccess) (void)cudaGetLastError();
        if (ctx->compute && cudaStreamSynchronize(ctx->compute) != cudaSuccess) (void)cudaGetLastError();
        if (ctx->cublaslt) cublasLtDestroy(ctx->cublaslt);
        if (ctx->cublas) cublasDestroy(ctx->cublas);
        if (ctx->cudnn) cudnnDestroy(ctx->cudnn);
        if (ctx->workspace) cudaFree(ctx->workspace);
        cnn_cuda_table_free(&ctx->opt_table);
        cnn_cuda_table_free(&ctx->sumsq_table);
        if (ctx->deferred) cudaFreeHost(ctx->deferred);
        if (ctx->nonfinite) cudaFreeHost(ctx->nonfinite);
        if (ctx->copy_done) cudaEventDestroy(ctx->copy_done);
        if (ctx->copy) cudaStreamDestroy(ctx->copy);
        if (ctx->compute) cudaStreamDestroy(ctx->compute);
        (void)cudaGetLastError();
        free(ctx);
    }
    free(b);
}

const cnn_backend_ops cnn_cuda_ops = {
    .name = "cuda",
    .float_dtypes = 1u << CNN_F32 | 1u << CNN_F16 | 1u << CNN_BF16,
    .destroy = cnn_cuda_destroy,
    .alloc = cnn_cuda_alloc,
    .free = cnn_cuda_free,
    .write = cnn_cuda_write,
    .read = cnn_cuda_read,
    .copy = cnn_cuda_copy,
    .fill = cnn_cuda_fill,
    .sync = cnn_cuda_sync,
    .plan_destroy = cnn_plan_destroy,
    .conv2d_forward = cnn_cuda_conv2d_forward,
    .conv2d_backward_data = cnn_cuda_conv2d_backward_data,
    .conv2d_backward_filter = cnn_cuda_conv2d_backward_filter,
    .pool2d_forward = cnn_cuda_pool2d_forward,
    .pool2d_backward = cnn_cuda_pool2d_backward,
    .dense_forward = cnn_cuda_dense_forward,
    .dense_backward_data = cnn_cuda_dense_backward_data,
    .dense_backward_weights = cnn_cuda_dense_backward_weights,
    .act_forward = cnn_cuda_act_forward,
    .act_backward = cnn_cuda_act_backward,
    .softmax_xent = cnn_cuda_softmax_xent,
    .sgd_update = cnn_cuda_sgd_update,
    .adam_update = cnn_cuda_adam_update,
    .batchnorm_forward = cnn_cuda_batchnorm_forward,
    .batchnorm_backward = cnn_cuda_batchnorm_backward,
    .dropout_forward = cnn_cuda_dropout_forward,
    .dropout_backward = cnn_cuda_dropout_backward,
    .add = cnn_cuda_add,
    .concat_forward = cnn_cuda_concat_forward,
    .concat_backward = cnn_cuda_concat_backward,
    .rmsprop_update = cnn_cuda_rmsprop_update,
    .sum_squares = cnn_cuda_sum_squares,
    .scale = cnn_cuda_scale,
    .set_precision = cnn_cuda_set_precision,
    .cast = cnn_cuda_cast,
    .nonfinite = cnn_cuda_nonfinite,
    .set_deterministic = cnn_cuda_set_deterministic,
    .host_alloc = cnn_cuda_host_alloc,
    .host_free = cnn_cuda_host_free,
    .write_async = cnn_cuda_write_async,
    .sgd_update_multi = cnn_cuda_sgd_update_multi,
    .adam_update_multi = cnn_cuda_adam_update_multi,
    .rmsprop_update_multi = cnn_cuda_rmsprop_update_multi,
    .sum_squares_multi = cnn_cuda_sum_squares_multi,
};

int cnn_cuda_backend_available(void)
{
    int n = 0;
    /* no driver, no device, or a stub driver: all mean "not here" */
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n >= 1;
}

/* Why there is no device, in a user's words: the runtime says "driver version is insufficient" both on a machine
 * without an NVIDIA driver (its stub) and under a driver older than the runtime; cudaDriverGetVersion tells them
 * apart (0: no driver installed). */
static cnn_status no_device_error(cudaError_t e)
{
    int driver = 0, runtime = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
    if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
    (void)cudaGetLastError();
    if (driver == 0 || e == cudaErrorNoDevice)
        return cnn_error(CNN_ERR_NOT_FOUND, "no CUDA device: no NVIDIA GPU or driver was found on this machine (%s); "
                         "use --device cpu", cudaGetErrorName(e));
    if (e == cudaErrorInsufficientDriver)
        return cnn_error(CNN_ERR_NOT_FOUND, "no CUDA device: the NVIDIA driver supports CUDA %d.%d, older than the "
                         "CUDA %d.%d runtime this build uses: update the driver, or use --device cpu",
                         driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
    return cnn_error(CNN_ERR_NOT_FOUND, "no CUDA device: cudaGetDeviceCount failed: %s (%s)", cudaGetErrorString(e),
                     cudaGetErrorName(e));
}

/* "cuda" is device 0, "cuda:N" device N. */
static cnn_status cnn_cuda_parse_spec(const char *spec, int *device)
{
    *device = 0;
    if (!spec || !strcmp(spec, "cuda")) return CNN_OK;
    if (strncmp(spec, "cuda:", 5) != 0 || !spec[5])
        return cnn_error(CNN_ERR_INVALID_ARG, "cuda backend: unknown device '%s' (use cuda or cuda:N)", spec);
    long v = 0;
    for (const char *p = spec + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v > 100000)
            return cnn_error(CNN_ERR_INVALID_ARG, "cuda backend: '%s': N in cuda:N must be a device number", spec);
        v = v * 10 + (*p - '0');
    }
    *device = (int)v;
    return CNN_OK;
}

cnn_status cnn_cuda_backend_create(const char *spec, cnn_backend **out)
{
    static const char *op = "backend create";
    cnn_status st = CNN_OK;
    cnn_backend *b = NULL;
    cnn_cuda_ctx *ctx = NULL;
    int device = 0, count = 0;
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_cuda_backend_create: out is NULL");
    *out = NULL;
    CNN_TRY(cnn_cuda_parse_spec(spec, &device));
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return no_device_error(e);
    }
    if (count < 1) return cnn_error(CNN_ERR_NOT_FOUND, "no CUDA device: the driver reports none");
    if (device >= count)
        return cnn_error(CNN_ERR_NOT_FOUND, "no CUDA device cuda:%d: this machine has %d (cuda:0 to cuda:%d)", device,
                         count, count - 1);

    if ((st = cnn_backend_alloc(&cnn_cuda_ops, sizeof *ctx, "cuda", &b)) != CNN_OK) return st;
    ctx = b->ctx;
    ctx->device = device;
    /* device < count, a handful; the modulo shows the compiler that the name fits its 16 bytes */
    snprintf(b->name, sizeof b->name, "cuda:%d", device % 1000000);

    struct cudaDeviceProp prop;
    CNN_CUDA_RT(op, cudaSetDevice, device);
    CNN_CUDA_RT(op, cudaGetDeviceProperties, &prop, device);
    ctx->total_mem = prop.totalGlobalMem;
    /* non-blocking: neither stream waits on the legacy default stream that other libraries may use */
    CNN_CUDA_RT(op, cudaStreamCreateWithFlags, &ctx->compute, cudaStreamNonBlocking);
    CNN_CUDA_RT(op, cudaStreamCreateWithFlags, &ctx->copy, cudaStreamNonBlocking);
    CNN_CUDA_RT(op, cudaEventCreateWithFlags, &ctx->copy_done, cudaEventDisableTiming);
    CNN_CUDA_RT(op, cudaHostAlloc, (void **)&ctx->deferred, sizeof *ctx->deferred, cudaHostAllocMapped);
    memset(ctx->deferred, 0, sizeof *ctx->deferred);
    CNN_CUDA_RT(op, cudaHostGetDevicePointer, (void **)&ctx->deferred_dev, ctx->deferred, 0);
    CNN_CUDA_RT(op, cudaHostAlloc, (void **)&ctx->nonfinite, sizeof *ctx->nonfinite, cudaHostAllocMapped);
    *ctx->nonfinite = 0;
    CNN_CUDA_RT(op, cudaHostGetDevicePointer, (void **)&ctx->nonfinite_dev, ctx->nonfinite, 0);
    ctx->precision = CNN_PRECISION_FP32;
    cnn_cuda_conv_api api = CNN_CUDA_CONV_API_AUTO;
    CNN_TRY(cnn_cuda_conv_api_parse(getenv("CNN_CUDNN_CONV"), &api));
    ctx->conv_api = (int)api;
    const char *log = getenv("CNN_CUDA_LOG");
    ctx->log = log && *log && strcmp(log, "0") != 0;
    CNN_CUDA_DNN(op, cudnnCreate, &ctx->cudnn);
    CNN_CUDA_DNN(op, cudnnSetStream, ctx->cudnn, ctx->compute);
    CNN_CUDA_BLAS(op, cublasCreate, &ctx->cublas);
    CNN_CUDA_BLAS(op, cublasSetStream, ctx->cublas, ctx->compute);
    /* f32 stays f32: no TF32 tensor-op rounding in sgemm (a precision switch will allow it later) */
    CNN_CUDA_BLAS(op, cublasSetMathMode, ctx->cublas, CUBLAS_DEFAULT_MATH);
    CNN_CUDA_BLAS(op, cublasLtCreate, &ctx->cublaslt);

    int blas_major = 0, blas_minor = 0, blas_patch = 0;
    CNN_CUDA_BLAS(op, cublasGetProperty, MAJOR_VERSION, &blas_major);
    CNN_CUDA_BLAS(op, cublasGetProperty, MINOR_VERSION, &blas_minor);
    CNN_CUDA_BLAS(op, cublasGetProperty, PATCH_LEVEL, &blas_patch);
    size_t dnn = cudnnGetVersion(); /* major * 10000 + minor * 100 + patch since cuDNN 9 */
    snprintf(b->description, sizeof b->description, "CUDA device %d: %.64s, %.1f GiB, cuDNN %zu.%zu.%zu, cuBLAS %d.%d.%d",
             device, prop.name, (double)prop.totalGlobalMem / CNN_CUDA_GIB, dnn / 10000, dnn / 100 % 100, dnn % 100,
             blas_major, blas_minor, blas_patch);
    *out = b;
    return CNN_OK;
fail:
    cnn_cuda_destroy(b); /* frees ctx and whatever was made */
    return st;
}
