/* Tensors: shape bookkeeping, allocation through the owning backend, host transfers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/checked.h"
#include "core/error.h"
#include "core/ops.h"

static const struct {
    const char *name;
    size_t size;
} cnn_dtype_info[] = {
    {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I32", 4}, {"U8", 1}, {"I8", 1},
};
_Static_assert(sizeof(cnn_dtype_info) / sizeof(cnn_dtype_info[0]) == CNN_DTYPE_COUNT,
               "cnn_dtype_info must describe every cnn_dtype");

size_t cnn_dtype_size(cnn_dtype dtype)
{
    return (unsigned)dtype < CNN_DTYPE_COUNT ? cnn_dtype_info[dtype].size : 0;
}

const char *cnn_dtype_name(cnn_dtype dtype)
{
    return (unsigned)dtype < CNN_DTYPE_COUNT ? cnn_dtype_info[dtype].name : "?";
}

int64_t cnn_tensor_numel(const cnn_tensor *t)
{
    if (!t || t->ndim <= 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t cnn_tensor_bytes(const cnn_tensor *t)
{
    return t ? (size_t)cnn_tensor_numel(t) * cnn_dtype_size(t->dtype) : 0;
}

/* "(16384, 65536)" */
static void shape_text(int ndim, const int64_t *shape, char *buf, size_t size)
{
    size_t len = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (len < size) snprintf(buf + len, size - len, ")");
}

/* A tensor of this backend, dtype and shape that owns its memory, none allocated yet; NULL when out of host memory. */
static cnn_tensor *tensor_header(cnn_backend *backend, cnn_dtype dtype, int ndim, const int64_t *shape)
{
    cnn_tensor *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->backend = backend;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->owns_data = 1;
    return t;
}

cnn_status cnn_tensor_describe(cnn_backend *backend, cnn_dtype dtype, int ndim, const int64_t *shape,
                               cnn_tensor **out)
{
    *out = NULL;
    if ((unsigned)dtype >= CNN_DTYPE_COUNT || ndim < 1 || ndim > CNN_MAX_DIMS || !shape)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_tensor_describe: bad dtype or rank %d", ndim);
    int64_t n = 1, bytes;
    char text[128];
    int ok = 1;
    for (int i = 0; i < ndim && ok; i++) ok = cnn_mul_i64(n, shape[i], &n);
    if (!ok || !cnn_mul_i64(n, (int64_t)cnn_dtype_size(dtype), &bytes)) {
        shape_text(ndim, shape, text, sizeof text);
        return cnn_error(CNN_ERR_SHAPE, "a tensor of shape %s: its size in bytes overflows 64-bit arithmetic", text);
    }
    cnn_tensor *t = tensor_header(backend, dtype, ndim, shape);
    if (!t) return cnn_error(CNN_ERR_NO_MEMORY, "cnn_tensor_describe: out of host memory");
    *out = t;
    return CNN_OK;
}

cnn_status cnn_tensor_materialize(cnn_tensor *t)
{
    if (!t || !t->backend || !t->owns_data || t->data)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_tensor_materialize: not a described tensor without memory");
    size_t bytes = cnn_tensor_bytes(t);
    return bytes > 0 ? cnn_op_alloc(t->backend, bytes, &t->data) : CNN_OK;
}

cnn_status cnn_tensor_create(cnn_backend *backend, cnn_dtype dtype, int ndim, const int64_t *shape,
                             cnn_tensor **out)
{
    *out = NULL;
    if (!backend || (unsigned)dtype >= CNN_DTYPE_COUNT || ndim < 1 || ndim > CNN_MAX_DIMS || !shape)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_tensor_create: bad backend, dtype or rank %d", ndim);
    cnn_tensor *t = tensor_header(backend, dtype, ndim, shape);
    if (!t) return cnn_error(CNN_ERR_NO_MEMORY, "cnn_tensor_create: out of host memory");
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / 4 / shape[i])) {
            free(t);
            return cnn_error(CNN_ERR_INVALID_ARG, "cnn_tensor_create: dimension %d (%lld) is negative or too large",
                             i, (long long)shape[i]);
        }
        n *= shape[i];
    }
    cnn_status st = cnn_tensor_materialize(t);
    if (st == CNN_OK) *out = t;
    else free(t);
    return st;
}

void cnn_tensor_destroy(cnn_tensor *t)
{
    if (!t) return;
    if (t->owns_data && t->data) cnn_op_free(t->backend, t->data);
    free(t);
}

/* Versions of tracked tensors: one counter for the process, so that (data, version) never repeats even when a
 * freed tensor's memory is reused. */
static uint64_t cnn_tensor_versions;

static uint64_t cnn_tensor_next_version(void)
{
    return __atomic_add_fetch(&cnn_tensor_versions, 1, __ATOMIC_RELAXED);
}

void cnn_tensor_track(cnn_tensor *t)
{
    if (t) t->version = cnn_tensor_next_version();
}

void cnn_tensor_touch(cnn_tensor *t)
{
    if (t && t->version) t->version = cnn_tensor_next_version();
}

cnn_status cnn_tensor_write(cnn_tensor *t, const void *host, size_t bytes)
{
    if (!t || (!host && bytes) || bytes != cnn_tensor_bytes(t))
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_tensor_write: %zu bytes given for a tensor of %zu", bytes,
                         cnn_tensor_bytes(t));
    cnn_tensor_touch(t); /* before: a failed write may have changed part of the data */
    return cnn_op_write(t->backend, t, host, bytes);
}

cnn_status cnn_tensor_read(const cnn_tensor *t, void *host, size_t bytes)
{
    if (!t || (!host && bytes) || bytes != cnn_tensor_bytes(t))
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_tensor_read: %zu bytes asked of a tensor of %zu", bytes,
                         cnn_tensor_bytes(t));
    return cnn_op_read(t->backend, t, host, bytes);
}

int64_t cnn_window_out(int64_t in, int kernel, int stride, int pad_before, int pad_after, int dilation)
{
    if (kernel < 1 || stride < 1 || dilation < 1 || pad_before < 0 || pad_after < 0) return -1;
    int64_t span = (int64_t)(kernel - 1) * dilation + 1;
    int64_t padded = in + pad_before + pad_after;
    if (padded < span) return -1;
    return (padded - span) / stride + 1;
}
