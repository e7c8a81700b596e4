/* The CPU backend object: one oneDNN engine and stream, 64-byte aligned host memory, transfers (memcpy), and the
 * ops table. The ops themselves live in conv.c, pool.c, dense.c, batchnorm.c,
 * concat.c and eltwise.c. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/dnnl_util.h"
#include "cpu/ops.h"

/* 64 bytes: one cache line and one AVX-512 register, what oneDNN's own allocations use. */
#define CNN_CPU_ALIGNMENT 64

static cnn_status cnn_cpu_alloc(cnn_backend *b, size_t bytes, void **ptr)
{
    (void)b;
    *ptr = NULL;
    if (bytes == 0) return CNN_OK;
    /* aligned_alloc wants a multiple of the alignment */
    size_t rounded = (bytes + CNN_CPU_ALIGNMENT - 1) / CNN_CPU_ALIGNMENT * CNN_CPU_ALIGNMENT;
    if (rounded < bytes) return cnn_error(CNN_ERR_NO_MEMORY, "cpu: cannot allocate %zu bytes", bytes);
    void *p = aligned_alloc(CNN_CPU_ALIGNMENT, rounded);
    if (!p) return cnn_error(CNN_ERR_NO_MEMORY, "cpu: out of host memory allocating %zu bytes", bytes);
    *ptr = p;
    return CNN_OK;
}

static void cnn_cpu_free(cnn_backend *b, void *ptr)
{
    (void)b;
    free(ptr);
}

/* transfers: core/ops.c checked the tensor, the size and the buffers */
static cnn_status cnn_cpu_write(cnn_backend *b, cnn_tensor *dst, const void *host, size_t bytes)
{
    (void)b;
    memmove(dst->data, host, bytes); /* bytes > 0: core/ops.c does not call with 0 */
    return CNN_OK;
}

static cnn_status cnn_cpu_read(cnn_backend *b, const cnn_tensor *src, void *host, size_t bytes)
{
    (void)b;
    if (bytes) memmove(host, src->data, bytes);
    return CNN_OK;
}

static cnn_status cnn_cpu_copy(cnn_backend *b, cnn_tensor *dst, const cnn_tensor *src)
{
    (void)b;
    size_t bytes = cnn_tensor_bytes(src);
    if (bytes && dst->data != src->data) memmove(dst->data, src->data, bytes);
    return CNN_OK;
}

static cnn_status cnn_cpu_sync(cnn_backend *b)
{
    (void)b; /* every op waits on its stream before returning */
    return CNN_OK;
}

static void cnn_cpu_destroy(cnn_backend *b)
{
    if (!b) return;
    cnn_cpu_ctx *ctx = b->ctx;
    if (ctx) {
        if (ctx->stream) dnnl_stream_destroy(ctx->stream);
        if (ctx->engine) dnnl_engine_destroy(ctx->engine);
        free(ctx->scratch);
        free(ctx);
    }
    free(b);
}

const cnn_backend_ops cnn_cpu_ops = {
    .name = "cpu",
    .float_dtypes = 1u << CNN_F32,
    .host_memory = 1,
    .destroy = cnn_cpu_destroy,
    .alloc = cnn_cpu_alloc,
    .free = cnn_cpu_free,
    .write = cnn_cpu_write,
    .read = cnn_cpu_read,
    .copy = cnn_cpu_copy,
    .fill = cnn_cpu_fill,
    .sync = cnn_cpu_sync,
    .plan_destroy = cnn_plan_destroy,
    .conv2d_forward = cnn_cpu_conv2d_forward,
    .conv2d_backward_data = cnn_cpu_conv2d_backward_data,
    .conv2d_backward_filter = cnn_cpu_conv2d_backward_filter,
    .pool2d_forward = cnn_cpu_pool2d_forward,
    .pool2d_backward = cnn_cpu_pool2d_backward,
    .dense_forward = cnn_cpu_dense_forward,
    .dense_backward_data = cnn_cpu_dense_backward_data,
    .dense_backward_weights = cnn_cpu_dense_backward_weights,
    .act_forward = cnn_cpu_act_forward,
    .act_backward = cnn_cpu_act_backward,
    .softmax_xent = cnn_cpu_softmax_xent,
    .sgd_update = cnn_cpu_sgd_update,
    .adam_update = cnn_cpu_adam_update,
    .batchnorm_forward = cnn_cpu_batchnorm_forward,
    .batchnorm_backward = cnn_cpu_batchnorm_backward,
    .dropout_forward = cnn_cpu_dropout_forward,
    .dropout_backward = cnn_cpu_dropout_backward,
    .add = cnn_cpu_add,
    .concat_forward = cnn_cpu_concat_forward,
    .concat_backward = cnn_cpu_concat_backward,
    .rmsprop_update = cnn_cpu_rmsprop_update,
    .sum_squares = cnn_cpu_sum_squares,
    .scale = cnn_cpu_scale,
    .sgd_update_multi = cnn_cpu_sgd_update_multi,
    .adam_update_multi = cnn_cpu_adam_update_multi,
    .rmsprop_update_multi = cnn_cpu_rmsprop_update_multi,
    .sum_squares_multi = cnn_cpu_sum_squares_multi,
    .qconv_s32 = cnn_cpu_qconv_s32,
    .qprog_create = cnn_cpu_qprog_create,
    .qprog_run = cnn_cpu_qprog_run,
    .qprog_destroy = cnn_cpu_qprog_destroy,
};

int cnn_cpu_backend_available(void) { return 1; }

cnn_status cnn_cpu_backend_create(const char *spec, cnn_backend **out)
{
    cnn_status st = CNN_OK;
    cnn_backend *b = NULL;
    cnn_cpu_ctx *ctx = NULL;
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_cpu_backend_create: out is NULL");
    *out = NULL;
    if (spec && strcmp(spec, "cpu") != 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "cpu backend: unknown device '%s' (the CPU backend is just \"cpu\")",
                         spec);
    if ((st = cnn_backend_alloc(&cnn_cpu_ops, sizeof *ctx, "cpu", &b)) != CNN_OK) return st;
    ctx = b->ctx;
    CNN_CPU_DNNL("engine", dnnl_engine_create, &ctx->engine, dnnl_cpu, 0);
    CNN_CPU_DNNL("stream", dnnl_stream_create, &ctx->stream, ctx->engine, dnnl_stream_default_flags);
    ctx->threads = omp_get_max_threads();
    const char *wino = getenv("CNN_CPU_WINOGRAD");
    ctx->winograd = 1;
    if (wino && (!strcmp(wino, "0") || !strcmp(wino, "off")))
        ctx->winograd = 0;
    else if (wino && *wino && strcmp(wino, "1") && strcmp(wino, "on")) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "cpu backend: CNN_CPU_WINOGRAD is '%.40s'; it takes 1, on, 0 or off", wino);
        goto fail;
    }
    snprintf(b->name, sizeof b->name, "cpu");
    const dnnl_version_t *v = dnnl_version();
    snprintf(b->description, sizeof b->description, "CPU, %d thread%s (OpenMP), oneDNN %d.%d.%d (%s)%s", ctx->threads,
             ctx->threads == 1 ? "" : "s", v->major, v->minor, v->patch,
             cnn_cpu_isa_name(dnnl_get_effective_cpu_isa()), ctx->winograd ? "" : ", Winograd off");
    *out = b;
    return CNN_OK;
fail:
    cnn_cpu_destroy(b); /* frees ctx, the engine and the stream that were made */
    return st;
}
