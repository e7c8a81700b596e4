/* cnn.c — tensors.
 *
 * A tensor is a typed, shaped view of memory that lives on one backend. Images are NHWC: shape
 * {N, H, W, C}. Convolution weights are OHWI: {out_channels, kernel_h, kernel_w, in_channels / groups}.
 * Dense weights are {out_features, in_features}. Moving data between backends is an explicit copy. */
#ifndef CNN_TENSOR_H
#define CNN_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_backend cnn_backend;

typedef enum cnn_dtype {
    CNN_F32 = 0,
    CNN_F16,
    CNN_BF16,
    CNN_I32,
    CNN_U8,
    CNN_I8,
    CNN_DTYPE_COUNT
} cnn_dtype;

#define CNN_MAX_DIMS 4

typedef struct cnn_tensor {
    cnn_backend *backend; /* where data lives */
    cnn_dtype dtype;
    int ndim;
    int64_t shape[CNN_MAX_DIMS];
    void *data;
    int owns_data; /* 1: cnn_tensor_destroy frees data through the backend; 0: a view */
    uint64_t version; /* 0, or for tracked tensors (a network's parameters) a process-wide unique number that every
                       * write through cnn_tensor_write and every optimizer update renews: backends may cache what
                       * they derive from the contents (the CPU backend's reordered weights) under (data, version).
                       * Write tracked tensors through this API only; a view does not follow its tensor's version. */
} cnn_tensor;

CNN_API size_t cnn_dtype_size(cnn_dtype dtype);
CNN_API const char *cnn_dtype_name(cnn_dtype dtype);

/* Allocates an uninitialized tensor on `backend`. */
CNN_API cnn_status cnn_tensor_create(cnn_backend *backend, cnn_dtype dtype, int ndim, const int64_t *shape,
                                     cnn_tensor **out);
/* Frees the tensor, and its data when it owns it. NULL is a no-op. */
CNN_API void cnn_tensor_destroy(cnn_tensor *tensor);

/* Number of elements and bytes (0 for an empty shape). */
CNN_API int64_t cnn_tensor_numel(const cnn_tensor *tensor);
CNN_API size_t cnn_tensor_bytes(const cnn_tensor *tensor);

/* Copies between host memory and a tensor on any backend; `bytes` must equal cnn_tensor_bytes(tensor). */
CNN_API cnn_status cnn_tensor_write(cnn_tensor *tensor, const void *host, size_t bytes);
CNN_API cnn_status cnn_tensor_read(const cnn_tensor *tensor, void *host, size_t bytes);

#ifdef __cplusplus
}
#endif
#endif
